"""Batched greedy generation equals one-sequence runs of the same prompts.

usage: check_batched.py BATCHED_PLAN SINGLE_PLAN VOCAB WORKDIR [MOE_RUN_ARGS...]

Writes a --prompts file of prompts of different lengths and budgets (more
prompts than the batch has slots, so slots are refilled), runs it batched on
BATCHED_PLAN (extra arguments such as --prefill-chunk go to that run), then
every prompt alone with --prompt-ids on SINGLE_PLAN, and compares the tokens.

--long (taken by this script, not passed on): six prompts of 1 to 23 tokens
with 40 to 60 new tokens each (at most 64 positions), for plans whose KV page
pool (moe-compile --kv-pages) is too small for every sequence at once; the
batched run is then repeated with --bench --json and its preemption count
and page waits printed ("preemptions: N, page_waits: W"; the scheduler does
not depend on timing, so both runs take the same steps).
"""
import json
import os
import subprocess
import sys

batched, single, vocab, work = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
extra = sys.argv[5:]
long = "--long" in extra
extra = [a for a in extra if a != "--long"]
lengths = [11, 1, 23, 5, 17, 3, 9, 30, 2]
budgets = [16, 9, 4, 12, 1, 16, 7, 10, 0]
if long:
    lengths = [11, 1, 23, 5, 17, 3]
    budgets = [50, 60, 40, 55, 45, 58]
lines = []
for k, (n, m) in enumerate(zip(lengths, budgets)):
    ids = [(i * 7919 + 13 + k * 104729) % vocab for i in range(n)]
    lines.append({"id": f"p{k}", "prompt_ids": ids, "max_new_tokens": m})
prompts = os.path.join(work, "prompts.jsonl")
out = os.path.join(work, "out.jsonl")
with open(prompts, "w") as f:
    for l in lines:
        f.write(json.dumps(l) + "\n")
subprocess.run(["moe-run", batched, f"--prompts={prompts}", f"--output={out}", "--ignore-eos"]
               + extra, check=True)
got = [json.loads(l) for l in open(out)]
assert [g["id"] for g in got] == [l["id"] for l in lines], "output not in input order"
for l, g in zip(lines, got):
    assert g["prompt_ids"] == l["prompt_ids"], g
    r = subprocess.run(["moe-run", single, "--prompt-ids=" + ",".join(map(str, l["prompt_ids"])),
                        f"--max-new-tokens={l['max_new_tokens']}", "--ignore-eos", "--json"],
                       check=True, capture_output=True, text=True)
    want = json.loads(r.stdout)
    assert g["output_ids"] == want["output_ids"], (l["id"], g["output_ids"], want["output_ids"])
    assert g["finish_reason"] == "length", g
    assert len(g["output_ids"]) == l["max_new_tokens"], g
print(f"batched == single: {len(lines)} sequences")
if long:
    r = subprocess.run(["moe-run", batched, f"--prompts={prompts}", "--ignore-eos", "--bench",
                        "--json", "--warmup=0", "--iters=1"] + extra,
                       check=True, capture_output=True, text=True)
    run = json.loads(r.stdout)["runs"][0]
    assert run["generated_tokens"] == sum(budgets), run
    print(f"preemptions: {run['preemptions']}, page_waits: {run['page_waits']}")
