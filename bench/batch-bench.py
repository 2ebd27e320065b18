#!/usr/bin/python3
"""batch-bench.py CHECKPOINT [--sizes 1,4,16,64] [--threads N] [--rounds R]
                  [--llama-bin DIR --gguf FILE] [--build build] [--out JSON]

Issue 16's throughput benchmark: batched generation of B sequences (20-token
prompts, 64 new tokens each, EOS ignored) with `moe-run --bench --batch=B`
beside llama.cpp's `llama-batched-bench` at the same sizes, interleaved rounds
in one run; then the machine's bf16 peak (`kernel-bench --peak`) and the rate
of the expert GEMMs in full decode steps at the largest batch, from a traced
`moe-run --prompts` run.

Tokens/s of both counts the generated tokens over the whole run, prompt
processing included (llama-batched-bench: B x 64 / T; moe-run: its
`tokens_per_s`). Decode tokens/s: llama's S_TG, moe-run's B x 1000 / median
inter-token latency.

llama.cpp is built beside the project as ../shared/BENCHMARKS.md says, and
the checkpoint converted with its gguf-py (nothing of it is in this
repository); without --llama-bin the peer is left out.
"""
import argparse
import json
import os
import re
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import load_line, machine, prompt_ids, run, write_json  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PROMPT, NEW = 20, 64


def moe_run(bindir, plan, ckpt, sizes, threads):
    j = json.loads(run([os.path.join(bindir, "moe-run"), plan, f"--weights={ckpt}", "--bench",
                        "--json", f"--batch={','.join(map(str, sizes))}", f"--threads={threads}",
                        "--warmup=1", "--iters=1", f"--max-new-tokens={NEW}"]))
    out = {}
    for r in j["runs"]:
        out[r["batch"]] = {"tokens_per_s": r["tokens_per_s"],
                           "decode_tokens_per_s": r["batch"] * 1000.0 / r["itl_ms"]["p50"],
                           "ttft_ms_p50": r["ttft_ms"]["p50"], "itl_ms_p50": r["itl_ms"]["p50"],
                           "generated_tokens": r["generated_tokens"], "wall_ms": r["wall_ms"]}
    return out


def llama(bindir, gguf, sizes, threads):
    ctx = max(sizes) * (PROMPT + NEW)
    text = run([os.path.join(bindir, "llama-batched-bench"), "-m", gguf, "-c", str(ctx), "-b", "2048",
                "-ub", "512", "-npp", str(PROMPT), "-ntg", str(NEW), "-npl",
                ",".join(map(str, sizes)), "-t", str(threads), "-tb", str(threads)],
               stderr=open(os.devnull, "w"))
    out = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 10 and cells[0].isdigit():
            pp, tg, b = int(cells[0]), int(cells[1]), int(cells[2])
            t_total, s_tg = float(cells[8]), float(cells[7])
            out[b] = {"tokens_per_s": b * tg / t_total, "decode_tokens_per_s": s_tg,
                      "prefill_s": float(cells[4]), "total_s": t_total}
    if set(out) != set(sizes):
        raise SystemExit(f"llama-batched-bench printed batches {sorted(out)}, expected {sizes}")
    return out


def expert_rate(bindir, plan, ckpt, B, threads, vocab, dims, work):
    """GMAC/s of the per-expert GEMMs (gate, up, down) in the steps that
    decode all B sequences, from a Chrome trace of `moe-run --prompts`."""
    D, I = dims
    prompts = os.path.join(work, "prompts.jsonl")
    with open(prompts, "w") as f:
        for k in range(B):
            f.write(json.dumps({"id": k, "prompt_ids": prompt_ids(k, PROMPT, vocab)}) + "\n")
    trace = os.path.join(work, "trace.json")
    run([os.path.join(bindir, "moe-run"), plan, f"--weights={ckpt}", f"--prompts={prompts}",
         f"--max-new-tokens={NEW}", "--ignore-eos", f"--threads={threads}", f"--trace={trace}",
         f"--output={os.path.join(work, 'out.jsonl')}"])
    t = json.load(open(trace))
    ev = sorted((e for e in (t["traceEvents"] if isinstance(t, dict) else t) if e.get("ph") == "X"),
                key=lambda e: e["ts"])
    macs, us, gemms, steps, step_us = 0, 0.0, 0, 0, 0.0
    open_step = None
    for e in ev:
        m = re.match(r"batch step \((\d+) rows", e["name"])
        if m:
            open_step = (e["ts"], e["ts"] + e["dur"]) if int(m.group(1)) == B else None
            if open_step:
                steps += 1
                step_us += e["dur"]
            continue
        m = re.search(r"\.experts\.e\d+ \((\d+) tok\)", e["name"])
        if m and open_step and open_step[0] <= e["ts"] <= open_step[1]:
            macs += int(m.group(1)) * 3 * D * I
            us += e["dur"]
            gemms += 1
    return {"steps": steps, "expert_gemms": gemms, "gmac": macs / 1e9, "ms": us / 1e3,
            "GMACs": macs / us / 1e3 if us else 0.0, "share_of_step_time": us / step_us if step_us else 0.0}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--sizes", default="1,4,16,64")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--llama-bin", help="llama.cpp's build/bin (llama-batched-bench)")
    ap.add_argument("--gguf", help="the checkpoint converted to a BF16 GGUF")
    ap.add_argument("--out", default=os.path.join(HERE, "runtime", "results", "batch-bench.json"))
    a = ap.parse_args()
    if bool(a.llama_bin) != bool(a.gguf):
        raise SystemExit("--llama-bin and --gguf go together")
    bindir = os.path.join(a.build, "bin")
    sizes = [int(s) for s in a.sizes.split(",")]
    config = json.load(open(os.path.join(a.checkpoint, "config.json")))
    work = tempfile.mkdtemp(prefix="batch-bench-")
    plan = os.path.join(work, "model.plan")
    run([os.path.join(bindir, "moe-compile"), a.checkpoint, "-o", plan, "--target=cpu",
         "--dtype=bf16", f"--max-batch={max(sizes)}", f"--max-seq-len={PROMPT + NEW + 16}"])
    result = {**machine(), "checkpoint": a.checkpoint, "threads": a.threads, "sizes": sizes,
              "prompt_tokens": PROMPT, "new_tokens": NEW, "rounds": []}
    for r in range(a.rounds):
        order = ["moe", "llama"] if r % 2 == 0 else ["llama", "moe"]
        rnd = {"load": os.getloadavg()[0]}
        for who in order:
            if who == "moe":
                rnd["moe"] = moe_run(bindir, plan, a.checkpoint, sizes, a.threads)
            elif a.llama_bin:
                rnd["llama"] = llama(a.llama_bin, a.gguf, sizes, a.threads)
        result["rounds"].append(rnd)
    peak = json.loads(run([os.path.join(bindir, "kernel-bench"), "--peak", "--json",
                           f"--threads={a.threads}"], stderr=open(os.devnull, "w")))
    result["peak"] = peak
    result["expert_gemms"] = expert_rate(bindir, plan, a.checkpoint, max(sizes), a.threads,
                                         config["vocab_size"],
                                         (config["hidden_size"], config["intermediate_size"]), work)
    result["load_after"] = os.getloadavg()
    write_json(a.out, result)

    def med(who, b, key):
        v = [rnd[who][b][key] for rnd in result["rounds"] if who in rnd]
        return statistics.median(v) if v else float("nan")

    peer = bool(a.llama_bin)
    print(f"{'batch':>5} {'moe-run tok/s':>13}" + (f" {'llama.cpp':>10} {'ratio':>6}" if peer else "")
          + f" | {'decode tok/s':>12}" + (f" {'llama.cpp':>10} {'ratio':>6}" if peer else ""))
    for b in sizes:
        m, l = med("moe", b, "tokens_per_s"), med("llama", b, "tokens_per_s")
        md, ld = med("moe", b, "decode_tokens_per_s"), med("llama", b, "decode_tokens_per_s")
        print(f"{b:>5} {m:>13.1f}" + (f" {l:>10.1f} {m / l:>5.2f}x" if peer else "")
              + f" | {md:>12.1f}" + (f" {ld:>10.1f} {md / ld:>5.2f}x" if peer else ""))
    reg = [p["GMACs"] for p in peak if p.get("peak") == "vdpbf16ps registers"]
    gemm = max(p["GMACs"] for p in peak if p.get("peak") == "plain GEMM")
    x = result["expert_gemms"]
    print(f"expert GEMMs at batch {max(sizes)}: {x['GMACs']:.1f} GMAC/s over {x['steps']} full decode "
          f"steps ({100 * x['share_of_step_time']:.0f}% of their time); best plain GEMM "
          f"{gemm:.1f} GMAC/s ({100 * x['GMACs'] / gemm:.0f}%)"
          + (f", bf16 dot product from registers {reg[0]:.1f} ({100 * x['GMACs'] / reg[0]:.0f}%)"
             if reg else ""))
    print(load_line(result, a.out))


if __name__ == "__main__":
    main()
