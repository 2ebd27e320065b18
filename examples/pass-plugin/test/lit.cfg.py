# -*- Python -*-
# Tests of the example plugin, run against a built plugin and the moe tools:
#
#   lit -v test --param plugin=build-plugin/MoECapExperts.so \
#       [--param moe_bin=<prefix>/bin] [--param llvm_bin=/usr/lib/llvm-22/bin]
#
# moe_bin holds moe-opt (default: PATH); llvm_bin holds FileCheck and not.
import os

import lit.formats

config.name = "moe-cap-experts"
config.test_format = lit.formats.ShTest(execute_external=True)
config.suffixes = [".mlir"]
config.test_source_root = os.path.dirname(__file__)

plugin = lit_config.params.get("plugin")
if not plugin:
    lit_config.fatal("--param plugin=PATH/TO/MoECapExperts.so is required")
config.substitutions.append(("%plugin", os.path.abspath(plugin)))
# Test outputs go next to the plugin, not into the sources.
config.test_exec_root = os.path.join(os.path.dirname(os.path.abspath(plugin)),
                                     "test-output")

path = [lit_config.params.get("moe_bin", ""),
        lit_config.params.get("llvm_bin", "/usr/lib/llvm-22/bin"),
        os.environ.get("PATH", "")]
config.environment["PATH"] = os.pathsep.join(p for p in path if p)
