#!/usr/bin/env bash
# Builds the whole project with ASan + UBSan and assertions (clang-22, see
# scripts/configure-san.sh) in ${SAN_BUILD_DIR:-build-san} and runs the whole
# test suite there: unit tests, lit (dialect, importers, passes, runtime,
# bad inputs, multi-rank under mpirun). Any sanitizer report fails the test
# that triggered it (UBSan does not recover; ASan aborts).
#   scripts/sanitize.sh [ctest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
B=${SAN_BUILD_DIR:-build-san}
start=$(date +%s)
bash scripts/configure-san.sh "$B"
cmake --build "$B"
built=$(date +%s)
echo "sanitize: build took $(( built - start )) s"
# Leak checking stays on (tools free what they allocate); the MPI tests turn
# it off for OpenMPI's own leaks.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
ctest --test-dir "$B" --output-on-failure "$@"
echo "sanitize: tests took $(( $(date +%s) - built )) s"
