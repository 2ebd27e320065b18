#!/usr/bin/env bash
# Prepares the one GPU run of issue 14 on a CPU machine (same nvcc 13.0):
# a runtime-only build (no LLVM/MLIR, MPI off) with CUDA on in
# ${GPU_BUILD_DIR:-build-gpu}, then stages what travels into .gpu/ (ignored):
# bin/ (the CUDA tests, moe-run) and lib/ (shared libraries the binaries need
# that a bare GPU machine lacks: OpenBLAS, libgfortran, fmt, ...; glibc and
# CUDA's own libraries are the GPU machine's). OpenBLAS is carried once as a
# shared library (about 36 MB): linked statically it adds about 25 MB to every
# binary and three binaries exceed the 64 MiB a run may carry
# (GPU_STATIC_OPENBLAS=1 links it statically anyway). Then, with the device tool:
#   run(command="bash scripts/gpu-check.sh $OUT", carry=[".gpu"])
# usage: scripts/gpu-build.sh [extra cmake args]
set -euo pipefail
cd "$(dirname "$0")/.."
B=${GPU_BUILD_DIR:-build-gpu}
OPENBLAS_A=/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.a
if [ ! -f "$B/build.ninja" ]; then
  args=(-DCMAKE_BUILD_TYPE=Release -DMOE_ENABLE_COMPILER=OFF -DMOE_ENABLE_MPI=OFF
        -DMOE_ENABLE_CUDA=ON "-DCMAKE_EXE_LINKER_FLAGS=-Wl,--as-needed")
  if [ "${GPU_STATIC_OPENBLAS:-0}" = 1 ] && [ -f "$OPENBLAS_A" ]; then
    args+=("-DMOE_OPENBLAS_LIB=$OPENBLAS_A")
  fi
  cmake -S . -B "$B" -G Ninja "${args[@]}" "$@"
fi
cmake --build "$B" --target cuda-kernels-tests cuda-math-tests moe-cuda-bench moe-run moert-tests
rm -rf .gpu
mkdir -p .gpu/bin .gpu/lib
cp "$B/bin/cuda-kernels-tests" "$B/bin/cuda-math-tests" "$B/bin/moe-cuda-bench" "$B/bin/moe-run" \
  "$B/bin/moert-tests" .gpu/bin/
# Shared libraries outside glibc (libmvec is glibc's), libstdc++ and CUDA: carried.
for f in .gpu/bin/*; do
  ldd "$f" | awk '$3 ~ /^\// {print $3}'
done | sort -u | while read -r lib; do
  case "$(basename "$lib")" in
    libc.so*|libm.so*|libmvec.so*|libstdc++.so*|libgcc_s.so*|libpthread.so*|libdl.so*|librt.so*|\
    ld-linux*|\
    libcuda.so*|libcudart.so*|libcublas*.so*|libnccl.so*) ;;
    *) cp -L "$lib" .gpu/lib/ ;;
  esac
done
strip --strip-unneeded .gpu/bin/* 2>/dev/null || true
# The fixtures (small HF checkpoints with expected outputs) and their plans,
# compiled here for --target=cuda: the GPU machine has no MLIR. The
# conformance suite reads them through MOE_FIXTURES_DIR.
SHARED=${MOE_SHARED_DIR:-$(cd .. && pwd)/shared}
COMPILE=${MOE_COMPILE:-build/bin/moe-compile}
if [ -d "$SHARED/fixtures/hf" ]; then
  mkdir -p .gpu/fixtures .gpu/plans .gpu/tools
  cp -r "$SHARED/fixtures/hf" .gpu/fixtures/
  # gpt-oss's pieces (sinks, gate bias, clamped SwiGLU) and DeepSeek-V3's
  # (routing, latent MLA) have CUDA kernels: their fixtures run too.
  for n in gptoss-tiny deepseekv3-tiny; do
    [ -d "$SHARED/fixtures/hf-archs/$n" ] && cp -r "$SHARED/fixtures/hf-archs/$n" .gpu/fixtures/hf/
  done
  cp "$SHARED/tools/compare_outputs.py" .gpu/tools/
  if [ -x "$COMPILE" ]; then
    for d in .gpu/fixtures/hf/*/; do
      n=$(basename "$d")
      "$COMPILE" "$d" -o ".gpu/plans/$n.f32.plan" --target=cuda --dtype=f32
      "$COMPILE" "$d" -o ".gpu/plans/$n.bf16.plan" --target=cuda --dtype=bf16
    done
    # Published quantized formats (tiny models made here, as test/e2e does):
    # DeepSeek-V3 with FP8 blocks, gpt-oss with MXFP4 experts. Their
    # expected outputs are the CPU backend's run of the same plan (the CUDA
    # backend holds them as bf16: gpu-check reports the error, no bar).
    E2E=test/e2e/Inputs
    Q=.gpu/quant-src
    if /usr/bin/python3 -c "import numpy" 2>/dev/null; then
      rm -rf "$Q" && mkdir -p "$Q"
      /usr/bin/python3 test/Import/Inputs/make_checkpoint.py deepseek_v3 "$Q/ds" --dtype F32
      /usr/bin/python3 $E2E/quantize_fp8.py "$Q/ds" .gpu/fixtures/hf/deepseekv3-fp8-tiny "$Q/ds-deq" \
        --block 4 6
      /usr/bin/python3 test/Import/Inputs/make_checkpoint.py gpt_oss "$Q/oss" --realistic \
        --set '{"hidden_size": 64, "intermediate_size": 32, "sliding_window": 4}'
      /usr/bin/python3 $E2E/quantize_mxfp4.py "$Q/oss" .gpu/fixtures/hf/gptoss-mxfp4-tiny
      ids=1,5,7,9,11,13,2
      for n in deepseekv3-fp8-tiny gptoss-mxfp4-tiny; do
        d=.gpu/fixtures/hf/$n
        "$COMPILE" "$d" -o ".gpu/plans/$n.bf16.plan" --target=cuda --dtype=bf16
        "${MOE_RUN:-build/bin/moe-run}" ".gpu/plans/$n.bf16.plan" --backend=cpu --weights="$d" \
          --prompt-ids=$ids --max-new-tokens=8 --dump="$Q/$n.out" > /dev/null
        /usr/bin/python3 scripts/gpu/with_input_ids.py "$Q/$n.out" "$d/expected.safetensors" "$ids"
      done
      rm -rf "$Q"
    fi
    # Batched generation on real weights: mixtral-tiny as a batched plan and
    # as 2 data-parallel ranks (one per "node", so both take GPU 0), four
    # requests, greedy; the expected lines are the CPU backend's run here.
    m=.gpu/fixtures/hf/mixtral-tiny
    if [ -d "$m" ]; then
      printf '%s\n' '{"id": "a", "prompt_ids": [1, 5, 9, 13]}' '{"id": "b", "prompt_ids": [2, 4]}' \
        '{"id": "c", "prompt_ids": [7, 7, 8, 30, 31, 2]}' '{"id": "d", "prompt_ids": [11]}' \
        > .gpu/plans/batch-prompts.jsonl
      "$COMPILE" "$m" -o .gpu/plans/batch-mixtral-tiny.plan --target=cuda --dtype=f32 --max-batch=4
      "$COMPILE" "$m" -o .gpu/plans/dp-mixtral-tiny.plan --target=cuda --dtype=f32 --max-batch=4 \
        --devices=2 --gpus-per-node=1
      for n in batch-mixtral-tiny dp-mixtral-tiny; do
        "${MOE_RUN:-build/bin/moe-run}" ".gpu/plans/$n.plan" --backend=cpu --weights="$m" \
          --prompts=.gpu/plans/batch-prompts.jsonl --max-new-tokens=12 \
          --output=".gpu/plans/$n.expected.jsonl"
      done
    fi
    # The benchmark's model (random weights on the GPU machine), also as a
    # batched plan (up to 32 sequences per step) for the throughput stage.
    if [ -f "$SHARED/bench/mixtral-bench/config.json" ]; then
      "$COMPILE" "$SHARED/bench/mixtral-bench/config.json" -o .gpu/plans/bench-mixtral-bf16.plan \
        --target=cuda --dtype=bf16 --max-seq-len=256
      "$COMPILE" "$SHARED/bench/mixtral-bench/config.json" -o .gpu/plans/batch-mixtral-bf16.plan \
        --target=cuda --dtype=bf16 --max-seq-len=256 --max-batch=32
    fi
    # Seed 000's configurations that fit one GPU in bf16 (issue 14's
    # roofline table): 148 positions (20 prompt + 128 new tokens).
    for n in gpt-1.3B gpt-2.7B gpt-0.35B-moe-64 gpt-1.3B-moe-32 gpt-1.3B-moe-64; do
      "$COMPILE" "examples/gpt-moe/$n.json" -o ".gpu/plans/seed-$n.plan" --target=cuda \
        --dtype=bf16 --max-seq-len=160
    done
  else
    echo "gpu-build: no $COMPILE: the fixtures and benchmarks stages will have no plans" >&2
  fi
fi
git rev-parse HEAD > .gpu/COMMIT
du -sh .gpu
ls -la .gpu/bin .gpu/lib
size=$(du -sm .gpu | cut -f1)
if [ "$size" -gt 60 ]; then
  echo "gpu-build: .gpu is $size MiB: too close to the 64 MiB a run may carry" >&2
  exit 1
fi
