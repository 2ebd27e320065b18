#!/usr/bin/env python3
"""Checks a moe-compile --report JSON and its --plot SVG against each other.

usage: check_report.py REPORT.json PLOT.svg

The report: every MoE layer's experts_per_rank counts its placement; per rank
peak = weights + activations + KV cache, and with f32 compute the weights are
4 bytes per parameter held; ranks differ in parameters only by the experts
they hold (a description's experts all have one shape), so
params(r) = base + experts(r) * expert_size for one base and one size.
The SVG must be well-formed XML with a stacked bar (weights, activations, KV
cache) per rank whose data-bytes are the report's, and one heat-map cell per
MoE layer and rank with the report's expert count.
"""
import json
import sys
import xml.etree.ElementTree as ET

report = json.load(open(sys.argv[1]))
svg = ET.parse(sys.argv[2]).getroot()
NS = "{http://www.w3.org/2000/svg}"
errors = []

n = report["num_ranks"]
ranks = report["ranks"]
moe = [l for l in report["layers"] if l["kind"] == "moe"]
if len(ranks) != n:
    errors.append(f"{len(ranks)} rank entries for {n} ranks")

for l in moe:
    placement = l.get("placement", [])
    counts = [placement.count(r) for r in range(n)]
    if len(placement) != l["num_experts"] or counts != l["experts_per_rank"]:
        errors.append(f"layer {l['layer']}: experts_per_rank "
                      f"{l['experts_per_rank']} vs placement {placement}")

for r in ranks:
    if r["peak_bytes"] != r["weight_bytes"] + r["activation_bytes"] + r["kv_cache_bytes"]:
        errors.append(f"rank {r['rank']}: peak != weights + activations + KV")
    if r["weight_bytes"] != 4 * r["params"]:
        errors.append(f"rank {r['rank']}: {r['weight_bytes']} weight bytes for "
                      f"{r['params']} f32 parameters")

held = [sum(l["experts_per_rank"][r] for l in moe) for r in range(n)]
if len(set(held)) < 2:
    errors.append(f"every rank holds {held[0]} experts: placement untested")
else:
    a, b = held.index(max(held)), held.index(min(held))
    size = (ranks[a]["params"] - ranks[b]["params"]) // (held[a] - held[b])
    base = ranks[a]["params"] - held[a] * size
    for r in range(n):
        if ranks[r]["params"] != base + held[r] * size:
            errors.append(f"rank {r}: {ranks[r]['params']} params, expected "
                          f"{base} + {held[r]} x {size}")
    print(f"ranks hold {base} parameters + {size} per expert")

bars, cells = {}, {}
for rect in svg.iter(NS + "rect"):
    cls = rect.get("class")
    if cls in ("weights", "activations", "kv-cache"):
        bars[(int(rect.get("data-rank")), cls)] = int(rect.get("data-bytes"))
        if float(rect.get("height")) < 0:
            errors.append(f"negative bar height: {rect.attrib}")
    elif cls == "experts":
        cells[(int(rect.get("data-layer")), int(rect.get("data-rank")))] = \
            int(rect.get("data-count"))
for r in ranks:
    for cls, key in (("weights", "weight_bytes"),
                     ("activations", "activation_bytes"),
                     ("kv-cache", "kv_cache_bytes")):
        if bars.get((r["rank"], cls)) != r[key]:
            errors.append(f"svg {cls} bar of rank {r['rank']}: "
                          f"{bars.get((r['rank'], cls))} != {r[key]}")
for l in moe:
    for r in range(n):
        if cells.get((l["layer"], r)) != l["experts_per_rank"][r]:
            errors.append(f"svg cell layer {l['layer']} rank {r}: "
                          f"{cells.get((l['layer'], r))}")
if len(bars) != 3 * n or len(cells) != len(moe) * n:
    errors.append(f"{len(bars)} bars and {len(cells)} cells for {n} ranks "
                  f"and {len(moe)} MoE layers")

for e in errors:
    print("error:", e)
sys.exit(1 if errors else 0)
