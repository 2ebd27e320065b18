#!/usr/bin/env bash
# Configures (once) the instrumented build shared by scripts/sanitize.sh and
# scripts/fuzz.sh: clang-22, ASan + UBSan (-fno-sanitize-recover), assertions
# on, libFuzzer coverage everywhere and the fuzz targets, tests and MPI on.
# usage: scripts/configure-san.sh BUILD_DIR [extra cmake args]
set -euo pipefail
cd "$(dirname "$0")/.."
B=$1
shift
if [ ! -f "$B/build.ninja" ]; then
  LLVM_BIN=/usr/lib/llvm-22/bin
  cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_C_COMPILER=$LLVM_BIN/clang -DCMAKE_CXX_COMPILER=$LLVM_BIN/clang++ \
    -DMOE_ENABLE_SANITIZERS=ON -DMOE_ENABLE_ASSERTIONS=ON -DMOE_BUILD_FUZZERS=ON \
    -DMOE_ENABLE_CUDA=OFF "$@"
fi
