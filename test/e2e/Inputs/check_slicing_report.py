"""Checks a sliced plan's report: every rank holds the non-expert weights and
1/N of the expert weights.

usage: check_slicing_report.py REPORT.json N EXPERT_PARAMS
"""
import json
import sys

report = json.load(open(sys.argv[1]))
n, experts = int(sys.argv[2]), int(sys.argv[3])
ranks = report["ranks"]
if len(ranks) != n:
    sys.exit(f"{len(ranks)} ranks in the report (expected {n})")
want = report["total_params"] - experts + experts // n
for r in ranks:
    if r["params"] != want:
        sys.exit(f"rank {r['rank']} holds {r['params']} params (expected {want}: "
                 f"{report['total_params'] - experts} outside the experts + {experts} / {n})")
print(f"equal shares: {n} ranks, expert params per rank = total / {n}")
