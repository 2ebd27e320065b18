"""Compares the report's communication per token of a data-parallel plan
with the bytes the ranks' communicators counted in a batched moe-run --bench.

The report's figure is per rank, for a step in which every one of the G
groups runs one token, with routing spread evenly over the ranks; the
measurement is the bytes all N ranks received over all rows of the run, so
per rank and such step it is total / rows * G / N.

usage: check_dp_comm_bytes.py REPORT.json BENCH.json TOLERANCE
Prints "match" or the two figures.
"""
import json
import sys

report = json.load(open(sys.argv[1]))
bench = json.load(open(sys.argv[2]))
tolerance = float(sys.argv[3])
c = report["communication_per_token"]
predicted = c["intra_node_bytes"] + c["inter_node_bytes"]
groups = report["data_parallel"]
run = bench["runs"][0]
ranks = bench["ranks"]
if len(run["comm_bytes_by_rank"]) != ranks:
    sys.exit("%d ranks counted (expected %d)" % (len(run["comm_bytes_by_rank"]), ranks))
rows = run["prefill_rows"] + run["decode_rows"]
measured = sum(run["comm_bytes_by_rank"]) / rows * groups / ranks
if abs(measured / predicted - 1) > tolerance:
    print("predicted %d bytes per rank and token, measured %.1f" % (predicted, measured))
    sys.exit(1)
print("match (%d groups)" % groups)
