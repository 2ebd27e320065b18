#!/usr/bin/env bash
# The one prepared GPU run of issue 14 (docs/cuda.md). Runs in stages and
# rewrites OUTDIR/gpu-check.json after each one, so a run cut off by its time
# limit still reports what it finished. Never needs the network; exits 0
# unless called wrongly (failures are in the JSON). Without a GPU it writes a
# JSON saying so and exits 0.
#   scripts/gpu-check.sh OUTDIR
# Binaries: $MOE_GPU_BIN, else the first of .gpu/bin (scripts/gpu-build.sh),
# build-gpu/bin, build/bin, build-rt/bin that holds cuda-kernels-tests.
# Stages: env, gpu-facts, nccl, math-tests, gpu-unit, compute-sanitizer,
# kernel-benchmarks (moe-cuda-bench), then conformance (the backend suite with
# --backend=cuda), fixtures (plans compiled beforehand, run with
# --backend=cuda), batched-fixtures (batched and data-parallel generation
# against the CPU's tokens), trace, benchmarks (moe-run --bench --json),
# seed-benchmarks (seed 000's configurations against the same run's
# roofline) and batch-benchmarks (batched throughput).
set -uo pipefail
if [ $# -ne 1 ]; then
  echo "usage: $0 OUTDIR" >&2
  exit 2
fi
mkdir -p "$1" || exit 2
OUT=$(cd "$1" && pwd)
cd "$(dirname "$0")/.." || exit 2
JSON=$OUT/gpu-check.json
STAGES=()
T0=$(date +%s)

json_str() {
  local s
  s=$(printf '%s' "$1" | tr -d '\000-\010\013\014\016-\037')
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\n'/\\n}
  s=${s//$'\t'/\\t}
  s=${s//$'\r'/}
  printf '"%s"' "$s"
}

# write FINISHED: the JSON with every stage so far.
write_json() {
  local finished=$1 body="" sep="" one
  for one in "${STAGES[@]}"; do
    body+="$sep$one"
    sep=$',\n    '
  done
  {
    printf '{\n  "tool": "gpu-check", "version": 1,\n'
    printf '  "commit": %s,\n' "$(json_str "$COMMIT")"
    printf '  "started_utc": %s,\n' "$(json_str "$STARTED")"
    printf '  "gpu": %s,\n' "$HAVE_GPU"
    printf '  "elapsed_s": %d,\n' "$(( $(date +%s) - T0 ))"
    printf '  "finished": %s,\n' "$finished"
    printf '  "stages": [\n    %s\n  ]\n}\n' "$body"
  } > "$JSON.tmp" && mv "$JSON.tmp" "$JSON"
}

# stage NAME STATUS SECONDS DETAIL [EXTRA_JSON_FIELDS]
stage() {
  local extra=${5:-}
  STAGES+=("{\"name\": $(json_str "$1"), \"status\": $(json_str "$2"), \"seconds\": $3, \"detail\": $(json_str "$4")${extra:+, $extra}}")
  write_json false
  echo "gpu-check: $1: $2${4:+ ($(printf '%s' "$4" | head -c 200 | tr '\n' ' '))}"
}

# The benchmark stages start only while the run is inside its budget
# (GPU_CHECK_BUDGET_S, default 480 s: a device call may last 600 s), so a
# slow machine reports what it finished instead of being cut off mid-stage.
BUDGET=${GPU_CHECK_BUDGET_S:-480}
over_budget() { [ $(( $(date +%s) - T0 )) -gt "$BUDGET" ]; }

STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
COMMIT=$(cat .gpu/COMMIT 2>/dev/null || git rev-parse HEAD 2>/dev/null || echo unknown)
HAVE_GPU=false

# --- env ---------------------------------------------------------------------
BIN=${MOE_GPU_BIN:-}
if [ -z "$BIN" ]; then
  for d in .gpu/bin build-gpu/bin build/bin build-rt/bin; do
    if [ -x "$d/cuda-kernels-tests" ]; then
      BIN=$d
      break
    fi
  done
fi
[ -d .gpu/lib ] && export LD_LIBRARY_PATH=$PWD/.gpu/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
# CUDA's libraries (cuBLAS, NCCL) where the GPU machine keeps them: the
# toolkit (lib64 or lib) or the Python environment's nvidia-* packages.
for d in /usr/local/cuda/lib64 /usr/local/cuda/lib; do
  [ -d "$d" ] && export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}${LD_LIBRARY_PATH:+:}$d
done
pylibs=$(timeout 30 python3 - 2>/dev/null <<'PY'
import importlib.util, os
for name in ("nvidia.cublas", "nvidia.nccl", "nvidia.cuda_runtime"):
    try:
        spec = importlib.util.find_spec(name)
    except Exception:
        spec = None
    for root in (spec.submodule_search_locations or []) if spec else []:
        lib = os.path.join(root, "lib")
        if os.path.isdir(lib):
            print(lib)
PY
)
for d in $pylibs; do
  export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}${LD_LIBRARY_PATH:+:}$d
done
missing=""
if [ -n "$BIN" ]; then
  missing=$(for f in "$BIN"/*; do ldd "$f" 2>/dev/null | grep 'not found'; done | sort -u | tr -s ' \t\n' ' ')
fi
KERNEL=$(uname -r)
RUNTIME=native
case "$KERNEL" in 4.4.0*) RUNTIME=gvisor ;; *-fc-*) RUNTIME=firecracker ;; esac
stage env "$([ -z "$missing" ] && echo ok || echo missing-libraries)" 0 \
  "bin=${BIN:-none} kernel=$KERNEL${missing:+ missing: $missing}" \
  "\"bin\": $(json_str "${BIN:-}"), \"runtime\": $(json_str "$RUNTIME"), \"ld_library_path\": $(json_str "${LD_LIBRARY_PATH:-}"), \"nvcc\": $(json_str "$( (nvcc --version 2>/dev/null || /usr/local/cuda/bin/nvcc --version 2>/dev/null) | tail -1)")"

# --- gpu-facts -----------------------------------------------------------------
s=$(date +%s)
facts=$(timeout 30 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,compute_cap --format=csv,noheader 2>&1)
rc=$?
if [ $rc -ne 0 ] || [ -z "$facts" ]; then
  stage gpu-facts no-gpu $(( $(date +%s) - s )) "nvidia-smi failed or absent (rc=$rc): ${facts:-no output}"
  for n in gpu-unit compute-sanitizer kernel-benchmarks; do
    stage "$n" skipped 0 "no GPU"
  done
  for n in conformance fixtures batched-fixtures trace benchmarks seed-benchmarks batch-benchmarks; do
    stage "$n" skipped 0 "no GPU"
  done
  # The device math runs anywhere: still report it.
  if [ -n "$BIN" ] && [ -x "$BIN/cuda-math-tests" ]; then
    s=$(date +%s)
    out=$(timeout 120 "$BIN/cuda-math-tests" 2>&1)
    rc=$?
    stage math-tests "$([ $rc -eq 0 ] && echo ok || echo failed)" $(( $(date +%s) - s )) \
      "$(printf '%s\n' "$out" | grep -E '^\[  (PASSED|FAILED) ' | head -5)"
  fi
  write_json true
  echo "gpu-check: no GPU; wrote $JSON"
  exit 0
fi
HAVE_GPU=true
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
props=""
if [ -n "$BIN" ]; then
  props=$(timeout 60 "$BIN/cuda-kernels-tests" --gtest_filter='CudaKernels.DeviceProperties' 2>&1 |
          grep '^device:' | head -3)
fi
stage gpu-facts ok $(( $(date +%s) - s )) "$facts" "\"properties\": $(json_str "$props")"

# --- nccl ----------------------------------------------------------------------
s=$(date +%s)
nccl=""
for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/lib/x86_64-linux-gnu; do
  if ls "$d"/libnccl.so* >/dev/null 2>&1; then
    nccl=$d
    break
  fi
done
if [ -z "$nccl" ]; then
  nccl=$(timeout 30 python3 - 2>/dev/null <<'PY'
import importlib.util, os
spec = importlib.util.find_spec("nvidia.nccl")
if spec and spec.submodule_search_locations:
    for root in spec.submodule_search_locations:
        lib = os.path.join(root, "lib")
        if os.path.isdir(lib):
            print(lib)
            break
PY
)
fi
if [ -n "$nccl" ]; then
  export LD_LIBRARY_PATH=$nccl${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  stage nccl ok $(( $(date +%s) - s )) "libnccl in $nccl (one GPU: moert_nccl's one-rank tests, the raw communicator and the moert::Comm adapter, run in gpu-unit; several ranks need several GPUs)"
else
  stage nccl absent $(( $(date +%s) - s )) "no libnccl in /usr/local/cuda or python's nvidia-nccl-cu13"
fi

# --- math-tests (CPU) --------------------------------------------------------------
s=$(date +%s)
if [ -n "$BIN" ] && [ -x "$BIN/cuda-math-tests" ]; then
  out=$(timeout 120 "$BIN/cuda-math-tests" 2>&1)
  rc=$?
  stage math-tests "$([ $rc -eq 0 ] && echo ok || echo failed)" $(( $(date +%s) - s )) \
    "$(printf '%s\n' "$out" | grep -E '^\[  (PASSED|FAILED) |FAILED  \]' | head -20)"
else
  stage math-tests failed 0 "cuda-math-tests not found (run scripts/gpu-build.sh, carry .gpu)"
fi

# --- gpu-unit --------------------------------------------------------------------
s=$(date +%s)
if [ -n "$BIN" ]; then
  timeout 180 "$BIN/cuda-kernels-tests" --gtest_output="json:$OUT/cuda-kernels-tests.json" \
    > "$OUT/cuda-kernels-tests.log" 2>&1
  rc=$?
  summary=$(grep -E '^\[  (PASSED|FAILED|SKIPPED) |FAILED  \]|Failure|Expected|Which is|at [0-9]+$' \
            "$OUT/cuda-kernels-tests.log" | head -40)
  status=ok
  [ $rc -ne 0 ] && status=failed
  [ $rc -eq 124 ] && status=timeout
  grep -q '^\[  SKIPPED \]' "$OUT/cuda-kernels-tests.log" && [ $rc -eq 0 ] && status=skipped-some
  stage gpu-unit "$status" $(( $(date +%s) - s )) "$summary" "\"rc\": $rc"
else
  stage gpu-unit failed 0 "cuda-kernels-tests not found (run scripts/gpu-build.sh, carry .gpu)"
fi

# --- compute-sanitizer ---------------------------------------------------------------
s=$(date +%s)
CS=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
if [ -z "$CS" ]; then
  stage compute-sanitizer absent 0 "compute-sanitizer not found"
elif [ -z "$BIN" ]; then
  stage compute-sanitizer skipped 0 "no test binary"
else
  # memcheck over the kernels on small cases; refused devices (gVisor) are
  # reported, not fatal.
  timeout 150 "$CS" --tool memcheck --error-exitcode 3 --print-limit 20 \
    "$BIN/cuda-kernels-tests" \
    --gtest_filter='CudaKernels.*-CudaKernels.Sampling:CudaKernels.GateMatchesCpu' \
    > "$OUT/compute-sanitizer.log" 2>&1
  rc=$?
  detail=$(grep -E 'ERROR SUMMARY|Device not supported|error|Invalid|PASSED|FAILED' \
           "$OUT/compute-sanitizer.log" | head -20)
  case $rc in
    0) status=ok ;;
    3) status=errors ;;
    124) status=timeout ;;
    *) if grep -q 'Device not supported\|not supported' "$OUT/compute-sanitizer.log"; then
         status=unavailable
       else
         status=failed
       fi ;;
  esac
  stage compute-sanitizer "$status" $(( $(date +%s) - s )) "$detail" "\"rc\": $rc"
fi

# --- kernel-benchmarks ----------------------------------------------------------------
# HBM read bandwidth (same run), decode GEMV and attention vs it, the fused
# gate, the grouped expert FFN vs dense cuBLAS (bench/cuda/moe-cuda-bench.cpp).
s=$(date +%s)
if [ -n "$BIN" ] && [ -x "$BIN/moe-cuda-bench" ]; then
  timeout 180 "$BIN/moe-cuda-bench" --json "$OUT/cuda-bench.json" > "$OUT/cuda-bench.log" 2>&1
  rc=$?
  if [ $rc -eq 0 ] && [ -s "$OUT/cuda-bench.json" ]; then
    stage kernel-benchmarks ok $(( $(date +%s) - s )) "see kernels" \
      "\"kernels\": $(tr -d '\n' < "$OUT/cuda-bench.json")"
  else
    stage kernel-benchmarks "$([ $rc -eq 124 ] && echo timeout || echo failed)" \
      $(( $(date +%s) - s )) "$(tail -5 "$OUT/cuda-bench.log")" "\"rc\": $rc"
  fi
else
  stage kernel-benchmarks failed 0 "moe-cuda-bench not found (run scripts/gpu-build.sh, carry .gpu)"
fi

# --- conformance ------------------------------------------------------------------
# The backend conformance suite (every op against the reference kernels,
# streams and events, streamed weights, the fixtures on 1 and 2-3 ranks) with
# the cuda parameter.
s=$(date +%s)
if [ -n "$BIN" ] && [ -x "$BIN/moert-tests" ]; then
  MOE_FIXTURES_DIR=$PWD/.gpu/fixtures timeout 180 "$BIN/moert-tests" \
    --gtest_filter='BackendConformance/*/cuda*' \
    --gtest_output="json:$OUT/conformance.json" > "$OUT/conformance.log" 2>&1
  rc=$?
  summary=$(grep -E '^\[  (PASSED|FAILED|SKIPPED) |FAILED  \]|Failure|error:' \
            "$OUT/conformance.log" | head -40)
  status=ok
  [ $rc -ne 0 ] && status=failed
  [ $rc -eq 124 ] && status=timeout
  grep -q '^\[  SKIPPED \]' "$OUT/conformance.log" && [ $rc -eq 0 ] && status=skipped-some
  stage conformance "$status" $(( $(date +%s) - s )) "$summary" "\"rc\": $rc"
else
  stage conformance failed 0 "moert-tests not found (run scripts/gpu-build.sh, carry .gpu)"
fi

# --- fixtures --------------------------------------------------------------------
# Plans compiled on the CPU machine (.gpu/plans, f32 and bf16) run with
# --backend=cuda on the carried checkpoints: f32 logits within 1e-3 of the
# reference and the same tokens; bf16 plans report their error (no bar).
s=$(date +%s)
results=""
fails=0
runs=0
if [ -n "$BIN" ] && ls .gpu/plans/*-tiny.*.plan > /dev/null 2>&1; then
  for plan in .gpu/plans/*-tiny.*.plan; do
    base=$(basename "$plan" .plan)
    n=${base%.*}
    d=.gpu/fixtures/hf/$n
    [ -f "$d/expected.safetensors" ] || continue
    ids=$(python3 -c "
import sys; sys.path.insert(0, '.gpu/tools'); from compare_outputs import load
print(','.join(str(int(x)) for x in load('$d/expected.safetensors')['input_ids'].reshape(-1)))" 2>&1)
    runs=$((runs + 1))
    if timeout 60 "$BIN/moe-run" "$plan" --backend=cuda --weights="$d" --prompt-ids="$ids" \
         --max-new-tokens=16 --dump="$OUT/$base.out.safetensors" > "$OUT/$base.log" 2>&1; then
      if [ "${base##*.}" = f32 ]; then
        r=$(python3 .gpu/tools/compare_outputs.py "$d/expected.safetensors" \
            "$OUT/$base.out.safetensors" 2>&1) || fails=$((fails + 1))
      else
        r=$(python3 .gpu/tools/compare_outputs.py "$d/expected.safetensors" \
            "$OUT/$base.out.safetensors" --atol 1e9 2>&1)
      fi
    else
      r="moe-run failed: $(tail -3 "$OUT/$base.log" | tr '\n' ' ')"
      fails=$((fails + 1))
    fi
    results+="$base: $r"$'\n'
  done
  stage fixtures "$([ $fails -eq 0 ] && [ $runs -gt 0 ] && echo ok || echo failed)" \
    $(( $(date +%s) - s )) "$results" "\"runs\": $runs, \"failed\": $fails"
else
  stage fixtures failed 0 "no plans in .gpu/plans (scripts/gpu-build.sh compiles them with build/bin/moe-compile)"
fi

# --- batched-fixtures ------------------------------------------------------------
# Batched generation (paged KV, several sequences per step) on mixtral-tiny's
# weights: a batched plan, and 2 data-parallel ranks sharing the GPU (their
# collectives and AllToAllV staged through the host): the same tokens as the
# CPU backend's run of the same plan.
s=$(date +%s)
results=""
fails=0
runs=0
if [ -n "$BIN" ] && [ -f .gpu/plans/batch-prompts.jsonl ]; then
  for n in batch-mixtral-tiny dp-mixtral-tiny; do
    [ -f ".gpu/plans/$n.expected.jsonl" ] || continue
    runs=$((runs + 1))
    if timeout 60 "$BIN/moe-run" ".gpu/plans/$n.plan" --backend=cuda \
         --weights=.gpu/fixtures/hf/mixtral-tiny --prompts=.gpu/plans/batch-prompts.jsonl \
         --max-new-tokens=12 --output="$OUT/$n.jsonl" > "$OUT/$n.log" 2>&1; then
      if cmp -s "$OUT/$n.jsonl" ".gpu/plans/$n.expected.jsonl"; then
        r="same tokens as the CPU"
      else
        r="tokens differ: $(diff "$OUT/$n.jsonl" ".gpu/plans/$n.expected.jsonl" | head -4)"
        fails=$((fails + 1))
      fi
    else
      r="moe-run failed: $(tail -3 "$OUT/$n.log" | tr '\n' ' ')"
      fails=$((fails + 1))
    fi
    results+="$n: $r"$'\n'
  done
  stage batched-fixtures "$([ $fails -eq 0 ] && [ $runs -gt 0 ] && echo ok || echo failed)" \
    $(( $(date +%s) - s )) "$results" "\"runs\": $runs, \"failed\": $fails"
else
  stage batched-fixtures skipped 0 "no .gpu/plans/batch-prompts.jsonl (scripts/gpu-build.sh)"
fi

# --- trace ---------------------------------------------------------------------
# --trace on the GPU: one event per launched step from CUDA timing events.
s=$(date +%s)
plan=.gpu/plans/mixtral-tiny.f32.plan
if [ -n "$BIN" ] && [ -f "$plan" ]; then
  if timeout 60 "$BIN/moe-run" "$plan" --backend=cuda --weights=.gpu/fixtures/hf/mixtral-tiny \
       --prompt-ids=1,2,3 --max-new-tokens=4 --trace="$OUT/trace.json" > "$OUT/trace.log" 2>&1; then
    r=$(python3 - "$OUT/trace.json" 2>&1 <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
ev = [e for e in (d["traceEvents"] if isinstance(d, dict) else d) if e.get("ph") == "X"]
bad = [e for e in ev if e.get("dur", -1) < 0]
print(f"{len(ev)} step events, {len(bad)} with a negative duration")
sys.exit(1 if not ev or bad else 0)
PY
)
    rc=$?
  else
    r="moe-run failed: $(tail -3 "$OUT/trace.log" | tr '\n' ' ')"
    rc=1
  fi
  stage trace "$([ $rc -eq 0 ] && echo ok || echo failed)" $(( $(date +%s) - s )) "$r"
else
  stage trace skipped 0 "no $plan"
fi

# --- benchmarks ------------------------------------------------------------------
# moe-run --bench --json (decode and prefill times, the same run's HBM read
# bandwidth floor) on random weights of the plans gpu-build.sh staged.
s=$(date +%s)
bench=""
if [ -n "$BIN" ] && ls .gpu/plans/bench-*.plan > /dev/null 2>&1; then
  for plan in .gpu/plans/bench-*.plan; do
    # Decode steps as replayed CUDA graphs (the default), then launched one
    # by one (MOERT_CUDA_GRAPHS=0): the issue's with/without comparison.
    for graphs in 1 0; do
      base=$(basename "$plan" .plan)
      [ $graphs = 0 ] && base=$base.no-graphs
      MOERT_CUDA_GRAPHS=$graphs timeout 120 "$BIN/moe-run" "$plan" --backend=cuda \
        --random-weights --prompt-ids=1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20 \
        --max-new-tokens=64 --bench --json > "$OUT/$base.bench.json" 2> "$OUT/$base.bench.log"
      rc=$?
      if [ $rc -eq 0 ]; then
        bench+="${bench:+, }\"$base\": $(tr -d '\n' < "$OUT/$base.bench.json")"
      else
        bench+="${bench:+, }\"$base\": $(json_str "rc $rc: $(tail -3 "$OUT/$base.bench.log")")"
      fi
    done
  done
  stage benchmarks ok $(( $(date +%s) - s )) "moe-run --bench per plan" "\"results\": {$bench}"
else
  stage benchmarks skipped 0 "no .gpu/plans/bench-*.plan (scripts/gpu-build.sh compiles them)"
fi

# --- seed-benchmarks ---------------------------------------------------------------
# Seed 000's protocol: 20 prompt tokens, 128 new, batch 1, greedy, random
# weights; moe-run's JSON has ms per token and decode_pct_of_floor (the
# roofline: active weight + KV bytes per token over the HBM read bandwidth
# measured in the same run). Smallest first, so a cut-off run keeps those.
s=$(date +%s)
bench=""
ids=$(seq -s, 1 20)
if [ -n "$BIN" ] && ls .gpu/plans/seed-*.plan > /dev/null 2>&1; then
  for n in gpt-1.3B gpt-0.35B-moe-64 gpt-2.7B gpt-1.3B-moe-32 gpt-1.3B-moe-64; do
    plan=.gpu/plans/seed-$n.plan
    [ -f "$plan" ] || continue
    if over_budget; then
      stage "seed-benchmarks-$n" skipped-budget 0 "past ${BUDGET} s"
      continue
    fi
    timeout 120 "$BIN/moe-run" "$plan" --backend=cuda --random-weights --prompt-ids="$ids" \
      --max-new-tokens=128 --bench --json > "$OUT/seed-$n.bench.json" 2> "$OUT/seed-$n.bench.log"
    rc=$?
    if [ $rc -eq 0 ]; then
      bench+="${bench:+, }\"$n\": $(tr -d '\n' < "$OUT/seed-$n.bench.json")"
    else
      bench+="${bench:+, }\"$n\": $(json_str "rc $rc: $(tail -3 "$OUT/seed-$n.bench.log")")"
    fi
    stage "seed-benchmarks-$n" "$([ $rc -eq 0 ] && echo ok || echo failed)" \
      $(( $(date +%s) - s )) "moe-run --bench, 20 + 128 tokens" "\"rc\": $rc"
  done
  stage seed-benchmarks ok $(( $(date +%s) - s )) "seed 000 configurations" "\"results\": {$bench}"
else
  stage seed-benchmarks skipped 0 "no .gpu/plans/seed-*.plan (scripts/gpu-build.sh compiles them)"
fi

# --- batch-benchmarks --------------------------------------------------------------
# Batched generation on the GPU (paged KV, a decode graph per batch size):
# tokens per second, time to first token and inter-token latency at 1, 8 and
# 32 sequences of 20-token prompts.
s=$(date +%s)
plan=.gpu/plans/batch-mixtral-bf16.plan
if over_budget; then
  stage batch-benchmarks skipped-budget 0 "past ${BUDGET} s"
elif [ -n "$BIN" ] && [ -f "$plan" ]; then
  timeout 120 "$BIN/moe-run" "$plan" --backend=cuda --random-weights --bench --batch=1,8,32 \
    --max-new-tokens=64 --json > "$OUT/batch-mixtral.bench.json" 2> "$OUT/batch-mixtral.bench.log"
  rc=$?
  if [ $rc -eq 0 ]; then
    stage batch-benchmarks ok $(( $(date +%s) - s )) "moe-run --bench --batch=1,8,32" \
      "\"results\": $(tr -d '\n' < "$OUT/batch-mixtral.bench.json")"
  else
    stage batch-benchmarks failed $(( $(date +%s) - s )) "$(tail -3 "$OUT/batch-mixtral.bench.log")" \
      "\"rc\": $rc"
  fi
else
  stage batch-benchmarks skipped 0 "no $plan (scripts/gpu-build.sh compiles it)"
fi

write_json true
echo "gpu-check: finished in $(( $(date +%s) - T0 )) s; wrote $JSON"
exit 0
