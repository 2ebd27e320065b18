"""Checks that every batched step of a capacity-factor model stays within
capacity: usage check_capacity.py TRACE.json DESCRIPTION.json PROFILE.json

For each batched step (trace category "Batch", "batch step (T rows, ...)")
of rank 0, every expert's admitted tokens in that step (category "Experts",
"... (N tok)") are at most max(min_capacity, ceil(cf * T * top_k / E)); the
capacity binds in some step with more routed slots than it, some step has
rows of several sequences, and the profile counts dropped tokens.
"""
import json
import math
import re
import sys

trace, desc, prof = sys.argv[1:4]
moe = json.load(open(desc))["moe"]
cf, mc, k, E = moe["capacity_factor"], moe["min_capacity"], moe["top_k"], moe["num_experts"]
ev = [e for e in json.load(open(trace))["traceEvents"] if e["ph"] == "X" and e["pid"] == 0]
steps = [e for e in ev if e["cat"] == "Batch"]
experts = [e for e in ev if e["cat"] == "Experts"]
assert steps and experts, "no batched steps or experts in the trace"
binds = multi = 0
for s in steps:
    T = int(re.search(r"\((\d+) rows", s["name"]).group(1))
    cap = max(mc, math.ceil(cf * T * k / E))
    toks = [int(re.search(r"\((\d+) tok\)", e["name"]).group(1)) for e in experts
            if s["ts"] <= e["ts"] <= s["ts"] + s["dur"]]
    assert toks, s
    assert max(toks) <= cap, (T, cap, toks)
    multi += T > 1
    binds += max(toks) == cap and T * k > cap
dropped = sum(sum(l["dropped"]) for l in json.load(open(prof))["layers"])
assert multi > 0 and binds > 0 and dropped > 0, (multi, binds, dropped)
print(f"capacity ok: {len(steps)} steps")
