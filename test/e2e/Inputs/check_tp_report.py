"""Checks that tensor parallelism shrinks every rank's weights and KV cache.

usage: check_tp_report.py ONE.json TP.json MAX_SHARE
Prints the largest per-rank share of the one-rank weight bytes and the KV
share, or a line naming the rank over MAX_SHARE.
"""
import json
import sys

one = json.load(open(sys.argv[1]))["ranks"][0]
tp = json.load(open(sys.argv[2]))
limit = float(sys.argv[3])
worst = 0.0
for r in tp["ranks"]:
    share = r["weight_bytes"] / one["weight_bytes"]
    if share > limit:
        sys.exit(f"rank {r['rank']} holds {share:.3f} of one rank's weight bytes (expected <= {limit})")
    worst = max(worst, share)
kv = max(r["kv_cache_bytes"] for r in tp["ranks"]) / one["kv_cache_bytes"]
print(f"tensor_parallel {tp['tensor_parallel']}: weights {worst:.3f} of one rank on every rank, kv cache {kv:g}")
