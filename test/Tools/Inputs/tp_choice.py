"""Prints a --report JSON's tensor_parallel_choice on one line:
"tensor_parallel T chosen_by_cost_model B (reason): T=1 ms, T=2 excluded, ..."
and checks it agrees with the report's tensor_parallel and, when the cost
model chose, with the candidates (resident weights first, then the fastest).
--chosen: prints only the chosen T."""
import json
import sys

chosen_only = sys.argv[1] == "--chosen"
report = json.load(open(sys.argv[-1]))
choice = report["tensor_parallel_choice"]
assert choice["tensor_parallel"] == report["tensor_parallel"], (choice, report["tensor_parallel"])
parts = []
for c in choice["candidates"]:
    if "excluded" in c:
        parts.append("T=%d excluded" % c["tensor_parallel"])
    else:
        parts.append("T=%d %.3f" % (c["tensor_parallel"], c["decode_step_ms"]))
if choice["chosen_by_cost_model"]:
    compared = [c for c in choice["candidates"] if "excluded" not in c]
    best = min(compared, key=lambda c: ("streamed_weight_bytes" in c, c["decode_step_ms"]))
    assert best["tensor_parallel"] == choice["tensor_parallel"], (best, choice)
    if chosen_only:
        print(choice["tensor_parallel"])
    else:
        print("tensor_parallel %d chosen_by_cost_model True: %s" % (choice["tensor_parallel"], ", ".join(parts)))
else:
    assert not choice["candidates"], choice
    if chosen_only:
        print(choice["tensor_parallel"])
    else:
        print("tensor_parallel %d chosen_by_cost_model False (%s):" % (choice["tensor_parallel"], choice["reason"]))
