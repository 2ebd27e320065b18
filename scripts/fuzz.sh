#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/) in ${FUZZ_BUILD_DIR:-build-san} (the
# instrumented build of scripts/configure-san.sh: clang-22, ASan, UBSan,
# assertions), writes their seed corpora, and runs each target for SECONDS
# (default 60), one after the other (the machine is shared).
#
#   scripts/fuzz.sh [-t SECONDS | --ci] [TARGET...]
#   TARGET: safetensors plan tokenizer prompts import mlir compiler-inputs (default: all)
#   MOE_FUZZ_SEED=N fixes libFuzzer's random seed.
#   --ci: a fixed number of inputs per target (about a minute each on the
#   2-core CI machine) from seed 1 and an empty corpus, so that a commit gets
#   the same inputs on every run instead of as many as the machine manages.
#
# New inputs accumulate in BUILD/corpus/TARGET (kept between runs); crashes,
# timeouts and leaks are written to BUILD/artifacts/ and make
# the script exit 1. Summary lines: "fuzz: TARGET: N runs in S s (R/s), cov C, ok".
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=60
CI_MODE=0
if [ "${1:-}" = "-t" ]; then
  SECONDS_EACH=$2
  shift 2
elif [ "${1:-}" = "--ci" ]; then
  CI_MODE=1
  shift
fi
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(safetensors plan tokenizer prompts import mlir compiler-inputs)

B=${FUZZ_BUILD_DIR:-build-san}
SHARED=${MOE_SHARED_DIR:-$(cd .. && pwd)/shared}
bash scripts/configure-san.sh "$B"
start=$(date +%s)
cmake --build "$B" --target moe-fuzzers moe-compile
echo "fuzz: build took $(( $(date +%s) - start )) s"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
rm -rf "$B/seeds"
ASAN_OPTIONS=detect_leaks=0 /usr/bin/python3 fuzz/make_seeds.py "$B/seeds" "$PWD" "$SHARED" \
  "$B/bin/moe-compile"
mkdir -p "$B/artifacts" "$B/logs"

# Per target: the longest input worth trying (plans and tokenizers are the
# biggest seeds) and the per-input time limit.
maxLen() {
  case $1 in
    plan|tokenizer) echo 65536 ;;
    mlir) echo 16384 ;;
    *) echo 8192 ;;
  esac
}

# --ci: inputs per target, about 60 s each here (measured runs/s: safetensors
# ~3.5k, plan ~12k, tokenizer ~1.7k, prompts ~1.3k (a clang -O1 ASan/UBSan
# build of the reader alone), import ~170, mlir ~1.4k, compiler-inputs ~33k).
ciRuns() {
  case $1 in
    safetensors) echo 200000 ;;
    plan) echo 700000 ;;
    tokenizer) echo 100000 ;;
    prompts) echo 80000 ;;
    import) echo 10000 ;;
    mlir) echo 80000 ;;
    *) echo 2000000 ;;
  esac
}

failed=0
for t in "${TARGETS[@]}"; do
  bin="$B/bin/moe-fuzz-$t"
  if [ ! -x "$bin" ]; then
    echo "fuzz: $t: no $bin (unknown target or compiler disabled)" >&2
    failed=1
    continue
  fi
  mkdir -p "$B/corpus/$t"
  log="$B/logs/$t.log"
  if [ $CI_MODE = 1 ]; then
    rm -rf "$B/corpus/$t" && mkdir -p "$B/corpus/$t"
    limit=(-runs="$(ciRuns "$t")" -seed=1)
  else
    limit=(-max_total_time="$SECONDS_EACH" ${MOE_FUZZ_SEED:+-seed="$MOE_FUZZ_SEED"})
  fi
  t0=$(date +%s)
  set +e
  "$bin" "${limit[@]}" -timeout=25 -rss_limit_mb=4096 \
    -max_len="$(maxLen "$t")" -dict="fuzz/dicts/$t.dict" -print_final_stats=1 \
    -artifact_prefix="$B/artifacts/$t-" "$B/corpus/$t" "$B/seeds/$t" > "$log" 2>&1
  rc=$?
  set -e
  took=$(( $(date +%s) - t0 ))
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1 || true)
  secs=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1 || true)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2 || true)
  if [ $rc -eq 0 ]; then
    echo "fuzz: $t: ${runs:-?} runs in $took s (${secs:-?}/s), cov ${cov:-?}, ok"
  else
    echo "fuzz: $t: FAILED (exit $rc) after ${runs:-?} runs; see $log and $B/artifacts/$t-*" >&2
    grep -m3 -E 'ERROR: |runtime error|==ERROR|Assertion|SUMMARY' "$log" >&2 || true
    failed=1
  fi
done
exit $failed
