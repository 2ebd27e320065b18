# -*- Python -*-
# lit configuration for moe-compiler: dialect round trips, verifier errors,
# importers, passes and end-to-end runs of the fixtures.
import os
import lit.formats
from lit.llvm import llvm_config

config.name = "MOE"
config.test_format = lit.formats.ShTest(not llvm_config.use_lit_shell if llvm_config else True)
config.suffixes = [".mlir", ".test", ".json"]
config.excludes = ["Inputs", "CMakeLists.txt", "lit.cfg.py", "lit.site.cfg.py", "unit", "lib"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.moe_obj_root, "test")

llvm_config.with_system_environment(["HOME", "TMPDIR", "OMPI_ALLOW_RUN_AS_ROOT",
                                      "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM",
                                      "OMPI_MCA_rmaps_base_oversubscribe"])
llvm_config.with_environment("PATH", config.moe_tools_dir, append_path=True)
llvm_config.with_environment("PATH", config.llvm_tools_dir, append_path=True)
# numpy lives in Debian's python, not in a pyenv one that may come first on PATH.
config.substitutions.append(("%python", "/usr/bin/python3"))
config.substitutions.append(("%shared", config.moe_shared_dir))
config.substitutions.append(("%fixtures", os.path.join(config.moe_shared_dir, "fixtures")))
config.substitutions.append(("%examples", os.path.join(config.moe_src_root, "examples")))
config.substitutions.append(("%moe_src", config.moe_src_root))
config.substitutions.append(("%moe_lib", config.moe_lib_dir))
config.substitutions.append(("%moe_obj", config.moe_obj_root))
# cmake configured like the build (generator, compiler, ccache).
config.substitutions.append(("%cmake_configure", " ".join(
    ['"%s"' % config.cmake_command, "-G", '"%s"' % config.cmake_generator,
     '-DCMAKE_CXX_COMPILER="%s"' % config.cmake_cxx_compiler,
     '-DCMAKE_CXX_COMPILER_LAUNCHER="%s"' % config.cmake_cxx_launcher,
     "-DCMAKE_BUILD_TYPE=Release"])))
config.substitutions.append(("%cmake", '"%s"' % config.cmake_command))
config.substitutions.append(("%lit", '"%s"' % config.lit_path))
config.substitutions.append(("%llvm_tools", config.llvm_tools_dir))

if config.moe_enable_compiler:
    config.available_features.add("compiler")
if config.moe_enable_mpi:
    config.available_features.add("mpi")
if config.moe_enable_cuda:
    config.available_features.add("cuda")
    # A GPU this process can use (tests of the no-device path skip there).
    import subprocess
    try:
        if "GPU" in subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True,
                                   timeout=20).stdout:
            config.available_features.add("gpu")
    except (OSError, subprocess.SubprocessError):
        pass
if getattr(config, "moe_have_serve", False):
    config.available_features.add("moe-serve")
    # The official openai npm client, pinned by test/Serve/openai-client's
    # package-lock.json and installed there by scripts/install-deps.sh.
    import shutil
    if shutil.which("node") and os.path.isdir(os.path.join(
            config.moe_src_root, "test", "Serve", "openai-client", "node_modules", "openai")):
        config.available_features.add("openai-node")
if config.moe_sanitizers:
    config.available_features.add("sanitizers")
if os.path.isdir(os.path.join(config.moe_shared_dir, "fixtures", "hf")):
    config.available_features.add("fixtures")
# Fixtures of the architectures of issue 18, before they join fixtures/hf.
if os.path.isdir(os.path.join(config.moe_shared_dir, "fixtures", "hf-archs", "gptoss-tiny")):
    config.available_features.add("gptoss-fixture")
if os.path.isdir(os.path.join(config.moe_shared_dir, "fixtures", "hf-archs", "deepseekv3-tiny")):
    config.available_features.add("deepseekv3-fixture")
if os.path.isdir(os.path.join(config.moe_shared_dir, "fixtures", "tokenizers")):
    config.available_features.add("tokenizer-fixtures")
