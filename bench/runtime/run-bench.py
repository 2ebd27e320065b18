#!/usr/bin/python3
"""run-bench.py: the CPU decode/prefill benchmark of ../shared/BENCHMARKS.md.

  bench/runtime/run-bench.py [--build build] [--config CONFIG.json] [--threads 1,2]
      [--iters 3] [--repeat 1] [--new-tokens 64] [--planner auto|compile|testplan] [--peer]
      [--kernels] [--batch 1,4,8] [--out FILE.json]

Builds a bf16 plan of the Mixtral-shaped bench model (moe-compile when the
build has it, else the reference plan of moe-testplan), runs
`moe-run --random-weights --bench --json` per thread count (20-token prompt,
64 greedy tokens) and writes one JSON with every run, the machine, the load
average and the ratios: decode vs the same-run bandwidth floor, prefill vs
llama.cpp's published numbers, and with --peer vs PyTorch eager
(bench/peers/torch_peer.py) measured in the same run. --repeat runs each
thread count several times (separate processes): on a shared VM the memory
bandwidth two cores get changes from run to run, so each run carries its own
floor and the summary shows every run. --batch also compiles the model with
--max-batch=max(sizes) and runs `moe-run --bench --batch=SIZES --json` per
thread count (SIZE random 20-token prompts, --new-tokens each, continuous
batching): generated tokens/s, time to first token and inter-token latency.
"""
import argparse, json, os, statistics, sys, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.dirname(HERE))
from benchlib import load_line, machine, moe_run_bench, run, write_json  # noqa: E402
# BENCHMARKS.md, llama.cpp BF16 on this machine kind: ms/token and 20-token prefill ms.
LLAMA_CPP = {1: {"decode_ms": 26.3, "prefill_ms": 218.0}, 2: {"decode_ms": 17.0, "prefill_ms": 125.0}}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--config", default=os.path.join(ROOT, "..", "shared", "bench", "mixtral-bench", "config.json"))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--planner", default="auto", choices=["auto", "compile", "testplan"])
    ap.add_argument("--peer", action="store_true", help="also run the PyTorch eager peer")
    ap.add_argument("--kernels", action="store_true", help="also run kernel-bench")
    ap.add_argument("--batch", default="", help="batch sizes for the batched run, e.g. 1,4,8")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "mixtral-bench.json"))
    a = ap.parse_args()
    bindir = os.path.join(a.build, "bin")
    threads = [int(t) for t in a.threads.split(",")]
    tmp = tempfile.mkdtemp(prefix="moe-bench-")
    plan = os.path.join(tmp, "mixtral-bench.plan")
    planner = a.planner
    if planner == "auto":
        planner = "compile" if os.path.exists(os.path.join(bindir, "moe-compile")) else "testplan"
    if planner == "compile":
        run([os.path.join(bindir, "moe-compile"), a.config, "-o", plan, "--target=cpu", "--dtype=bf16",
             "--max-seq-len=512"])
    else:
        run([os.path.join(bindir, "moe-testplan"), a.config, "-o", plan, "--dtype=bf16", "--compute=bf16",
             "--max-tokens=64", "--max-seq-len=512"])
    result = {"config": os.path.abspath(a.config), "planner": planner, **machine(), "runs": [],
              "peer": [], "kernels": []}
    for t in threads:
        mine = []
        for _ in range(a.repeat):
            r = moe_run_bench(bindir, plan, ["--random-weights", "--seed=1"], t, a.iters, a.new_tokens)
            ref = LLAMA_CPP.get(t)
            if ref:
                r["vs_llama_cpp"] = {"decode_speedup": ref["decode_ms"] / r["decode_ms_per_token"]["median"],
                                     "prefill_speedup": ref["prefill_ms"] / r["prefill_ms"]["median"]}
            result["runs"].append(r)
            mine.append(r)
        if a.peer:
            p = json.loads(run(["/usr/bin/python3", os.path.join(ROOT, "bench", "peers", "torch_peer.py"),
                                "bench", a.config, "--dtype", "bf16", "--threads", str(t), "--new-tokens",
                                str(a.new_tokens), "--json"]))
            p["threads"] = t
            dec = statistics.median(r["decode_ms_per_token"]["median"] for r in mine)
            pre = statistics.median(r["prefill_ms"]["median"] for r in mine)
            p["ours_decode_speedup"] = p["decode_ms_median"] / dec
            p["ours_prefill_speedup"] = p["prefill_ms"] / pre
            result["peer"].append(p)
    result["batched"] = []
    if a.batch:
        sizes = [int(b) for b in a.batch.split(",")]
        bplan = os.path.join(tmp, "mixtral-bench-batched.plan")
        run([os.path.join(bindir, "moe-compile"), a.config, "-o", bplan, "--target=cpu", "--dtype=bf16",
             "--max-seq-len=512", f"--max-batch={max(sizes)}"])
        for t in threads:
            r = json.loads(run([os.path.join(bindir, "moe-run"), bplan, "--random-weights", "--seed=1",
                                "--bench", f"--batch={a.batch}", f"--threads={t}", "--warmup=1",
                                f"--iters={a.iters}", f"--max-new-tokens={a.new_tokens}", "--json"]))
            result["batched"].append(r)
    if a.kernels:
        for t in threads:
            result["kernels"] += json.loads(run([os.path.join(bindir, "kernel-bench"), f"--threads={t}", "--json"]))
    result["load_after"] = os.getloadavg()
    write_json(a.out, result)
    print(f"{'threads':>7} {'prefill ms':>11} {'decode ms/tok':>14} {'floor ms':>9} {'% floor':>8} "
          f"{'GB/s':>6} {'vs llama.cpp (dec/pre)':>23}")
    for r in result["runs"]:
        v = r.get("vs_llama_cpp", {})
        print(f"{r['threads']:>7} {r['prefill_ms']['median']:>11.1f} {r['decode_ms_per_token']['median']:>14.2f} "
              f"{r['decode_floor_ms']:>9.2f} {r['decode_pct_of_floor']:>7.1f}% {r['read_bandwidth_gbs']['best']:>6.1f} "
              f"{v.get('decode_speedup', 0):>10.2f}x / {v.get('prefill_speedup', 0):.2f}x")
    for p in result["peer"]:
        print(f"PyTorch eager, {p['threads']} thread(s): decode {p['decode_ms_median']:.1f} ms/token, "
              f"prefill {p['prefill_ms']:.1f} ms; ours {p['ours_decode_speedup']:.2f}x / "
              f"{p['ours_prefill_speedup']:.2f}x faster")
    for b in result["batched"]:
        for r in b["runs"]:
            print(f"batched, {b['threads']} thread(s), batch {r['batch']:>3}: {r['tokens_per_s']:8.2f} tokens/s, "
                  f"ttft p50 {r['ttft_ms']['p50']:.1f} ms, itl p50 {r['itl_ms']['p50']:.2f} ms, "
                  f"occupancy {100 * r['occupancy']:.0f}%")
    print(load_line(result, a.out))


if __name__ == "__main__":
    main()
