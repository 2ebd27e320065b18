"""Prints, per rank, the communication steps of a Chrome trace (moe-run
--trace) that ran while a compute step named like PATTERN was running on the
same rank, as `rank R: COMM overlaps COMPUTE`, and a count line."""
import json, re, sys

trace, pattern = sys.argv[1], re.compile(sys.argv[2])
events = [e for e in json.load(open(trace))["traceEvents"] if e.get("ph") == "X"]
comm = [e for e in events if e["tid"] == 1]
compute = [e for e in events if e["tid"] == 0 and pattern.search(e["name"])]
pairs = set()
for c in comm:
    for k in compute:
        if c["pid"] == k["pid"] and k["ts"] < c["ts"] + c["dur"] and c["ts"] < k["ts"] + k["dur"]:
            pairs.add((c["pid"], c["name"], k["name"]))
for pid, c, k in sorted(pairs):
    print(f"rank {pid}: {c} overlaps {k}")
print(f"{len(pairs)} overlapping pairs")
