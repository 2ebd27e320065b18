"""Checks that tensor parallelism shrinks every rank's weights, parameters
and KV cache.

usage: check_tp_report.py ONE.json TP.json MAX_SHARE [MAX_PARAMS_SHARE]
Prints the largest per-rank share of the one-rank weight bytes, of the
one-rank parameters and the KV share, or a line naming the rank over
MAX_SHARE (weights) or MAX_PARAMS_SHARE (parameters; MAX_SHARE when not
given).
"""
import json
import sys

one = json.load(open(sys.argv[1]))["ranks"][0]
tp = json.load(open(sys.argv[2]))
limit = float(sys.argv[3])
params_limit = float(sys.argv[4]) if len(sys.argv) > 4 else limit
worst = worst_params = 0.0
for r in tp["ranks"]:
    share = r["weight_bytes"] / one["weight_bytes"]
    if share > limit:
        sys.exit(f"rank {r['rank']} holds {share:.3f} of one rank's weight bytes (expected <= {limit})")
    worst = max(worst, share)
    share = r["params"] / one["params"]
    if share > params_limit:
        sys.exit(f"rank {r['rank']} holds {share:.3f} of one rank's parameters (expected <= {params_limit})")
    worst_params = max(worst_params, share)
kv = max(r["kv_cache_bytes"] for r in tp["ranks"]) / one["kv_cache_bytes"]
print(f"tensor_parallel {tp['tensor_parallel']}: weights {worst:.3f} of one rank on every rank, "
      f"params {worst_params:.3f}, kv cache {kv:g}")
