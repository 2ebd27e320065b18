#!/usr/bin/env bash
# The main job on an example: compile seed 000's GPT-MoE 1.3B+MoE-64 (26.7B
# parameters, 64 experts in every other layer, top-1) for this machine's CPU
# and run it. Its 53 GB of bf16 weights do not fit in memory, so the compiler
# streams them under a memory budget (half of the available memory, at most
# 12 GiB): experts come in on demand when the gate routes a token to them.
# Weights are random (no checkpoint of this model exists), generated on the fly.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-build/bin}
OUT=${OUT:-build/demo}
MODEL=${MODEL:-examples/gpt-moe/gpt-1.3B-moe-64.json}
mkdir -p "$OUT"
avail_kib=$(awk '/MemAvailable/ {print $2}' /proc/meminfo)
budget_mib=$(( avail_kib / 1024 / 2 ))
[ "$budget_mib" -gt 12288 ] && budget_mib=12288
FLAGS=(--target=cpu --dtype=bf16 --max-seq-len=256 --memory-budget=${budget_mib}MiB)

echo "== moe-compile $MODEL ${FLAGS[*]} --emit=report"
"$BIN/moe-compile" "$MODEL" "${FLAGS[@]}" --emit=report
plan="$OUT/$(basename "$MODEL" .json).plan"
"$BIN/moe-compile" "$MODEL" "${FLAGS[@]}" -o "$plan"
echo
echo "== IR summary (moe-compile --emit=mlir): the ops of MoE layer 1 after the pipeline"
"$BIN/moe-compile" "$MODEL" "${FLAGS[@]}" --emit=mlir -o "$OUT/model.mlir"
awk '/moe.layer 1 /{on=1} on && !/moe.weight/ {sub(/^ +/, ""); print substr($0, 1, 150)} on && /moe.yield/ {exit}' "$OUT/model.mlir"
echo
echo "== moe-run $plan --random-weights (8 prompt tokens, 8 new tokens)"
/usr/bin/time -f "wall %e s, peak RSS %M KiB" \
  "$BIN/moe-run" "$plan" --random-weights --seed=1 --prompt-ids=464,1893,286,3303,1332,318,257,33 --max-new-tokens=8
