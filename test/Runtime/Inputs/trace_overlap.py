"""Prints, per rank, the communication steps of a Chrome trace (moe-run
--trace) that were in flight -- issued on the communication stream and not yet
finished -- when a compute step named like PATTERN started on the same rank,
as `rank R: COMM overlaps COMPUTE`, and a count line. Under sequential
execution no compute step would start while an exchange is in flight."""
import json, re, sys

trace, pattern = sys.argv[1], re.compile(sys.argv[2])
events = [e for e in json.load(open(trace))["traceEvents"] if e.get("ph") == "X"]
comm = [e for e in events if e["tid"] == 1]
compute = [e for e in events if e["tid"] == 0 and pattern.search(e["name"])]
pairs = set()
for c in comm:
    issued = c.get("args", {}).get("issued_us", c["ts"])
    for k in compute:
        if c["pid"] == k["pid"] and issued <= k["ts"] < c["ts"] + c["dur"]:
            pairs.add((c["pid"], c["name"], k["name"]))
for pid, c, k in sorted(pairs):
    print(f"rank {pid}: {c} overlaps {k}")
print(f"{len(pairs)} overlapping pairs")
