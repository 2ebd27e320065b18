"""Compares the report's predicted communication per decode token with the
bytes every rank's communicator counted in moe-run --bench --json.

usage: check_comm_bytes.py REPORT.json BENCH.json
Prints "match PREDICTED" or a line saying which rank differs.
"""
import json
import sys

report = json.load(open(sys.argv[1]))["communication_per_token"]
bench = json.load(open(sys.argv[2]))
predicted = report["intra_node_bytes"] + report["inter_node_bytes"]
counted = bench["comm_bytes_per_token_by_rank"]
if len(counted) != bench["ranks"]:
    sys.exit(f"{len(counted)} ranks counted (expected {bench['ranks']})")
for rank, c in enumerate(counted):
    if c != predicted:
        print(f"rank {rank} moved {c} bytes per token (predicted {predicted})")
        sys.exit(1)
print(f"match {predicted}")
