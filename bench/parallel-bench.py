#!/usr/bin/env python3
"""Issue 15's benchmark: one model on this machine as 1 rank x 2 threads
beside 2 MPI ranks x 1 thread, with tensor parallelism (T=2, the cost
model's choice of splitting the embedding and LM head by vocabulary, and
T=2 with those tables whole) and with expert parallelism (T=1), in one
interleaved run: decode ms/token and
prefill ms, the bytes each rank's communicator moved per decode token, and
the cost model's prediction beside each (moe-compile --report with a
cluster file that describes this machine as 1 or 2 devices sharing its
memory bandwidth and cores). Then 8 sequences batched on one rank beside
2 data-parallel groups of 4 (tokens/s, inter-token latency, bytes moved
per row).

usage: parallel-bench.py CHECKPOINT [--rounds 3] [--new-tokens 32]
       [--dtype bf16] [--build build] [--out bench/runtime/results/parallel-bench.json]
"""
import argparse, json, os, shutil, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

# This VM as the cost model sees it: 30 GB/s of DRAM reads and ~150 GFLOP/s
# of bf16 (examples/clusters/cpu-2core.json), split between two ranks that
# share it; ranks exchange through shared memory.
ONE = {"name": "this VM, 1 rank", "nodes": 1, "devices_per_node": 1,
       "device": {"name": "2 cores", "memory": "24GiB", "memory_bandwidth": "30GB/s",
                  "bf16_flops": "150G"}}
TWO = {"name": "this VM, 2 ranks", "nodes": 1, "devices_per_node": 2,
       "device": {"name": "1 core", "memory": "12GiB", "memory_bandwidth": "15GB/s",
                  "bf16_flops": "75G"},
       "intra_node": {"bandwidth": "10GB/s", "latency": "5us"}}

CONFIGS = [  # name, cluster, extra moe-compile flags, ranks, threads
    ("1 rank x 2 threads", ONE, [], 1, 2),
    # The cost model's choice (it splits the embedding and LM head by
    # vocabulary here), and the same with the tables whole.
    ("2 ranks x 1 thread, T=2", TWO, ["--tensor-parallel=2"], 2, 1),
    ("2 ranks x 1 thread, T=2, tables whole", TWO,
     ["--tensor-parallel=2", "--vocab-parallel=off"], 2, 1),
    ("2 ranks x 1 thread, experts", TWO, ["--tensor-parallel=1"], 2, 1),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--build", default="build")
    ap.add_argument("--out", default="bench/runtime/results/parallel-bench.json")
    a = ap.parse_args()
    bindir = os.path.abspath(os.path.join(a.build, "bin"))
    mpirun = shutil.which("mpirun")
    if not mpirun:
        sys.exit("parallel-bench: mpirun not found")
    result = benchlib.machine()
    result.update({"checkpoint": os.path.abspath(a.checkpoint), "dtype": a.dtype,
                   "new_tokens": a.new_tokens, "rounds": a.rounds, "configs": []})
    tmp = tempfile.mkdtemp(prefix="parallel-bench-")
    plans = []
    for name, cluster, extra, ranks, threads in CONFIGS:
        cfile = os.path.join(tmp, f"cluster{len(plans)}.json")
        json.dump(cluster, open(cfile, "w"))
        plan = os.path.join(tmp, f"p{len(plans)}.plan")
        report = plan + ".json"
        benchlib.run([os.path.join(bindir, "moe-compile"), a.checkpoint, "-o", plan,
                      f"--dtype={a.dtype}", f"--cluster={cfile}", f"--report={report}", *extra])
        plans.append((name, plan, json.load(open(report)), ranks, threads))
    runs = {name: [] for name, *_ in CONFIGS}
    for r in range(a.rounds):
        order = plans if r % 2 == 0 else list(reversed(plans))
        for name, plan, _, ranks, threads in order:
            cmd = [os.path.join(bindir, "moe-run"), plan, f"--weights={a.checkpoint}", "--bench",
                   "--json", f"--threads={threads}", "--warmup=1", "--iters=3",
                   f"--max-new-tokens={a.new_tokens}"]
            if ranks > 1:
                cmd = [mpirun, "--allow-run-as-root", "--oversubscribe", "--bind-to", "none",
                       "-np", str(ranks)] + cmd
            j = json.loads(benchlib.run(cmd))
            j.pop("generated_ids", None)
            runs[name].append(j)
    print(f"{'config':40} {'decode ms/tok':>13} {'predicted':>9} {'prefill ms':>10} "
          f"{'comm B/tok':>10} {'predicted':>9}")
    for name, plan, report, ranks, threads in plans:
        rs = runs[name]
        dec = sorted(x["decode_ms_per_token"]["median"] for x in rs)
        pre = sorted(x["prefill_ms"]["median"] for x in rs)
        comm = rs[0].get("comm_bytes_per_token", 0)
        c = report["communication_per_token"]
        pcomm = c["intra_node_bytes"] + c["inter_node_bytes"]
        pdec = report["estimated_latency"]["decode_step_ms"]
        row = {"config": name, "ranks": ranks, "threads": threads,
               "tensor_parallel": report["tensor_parallel"],
               "vocab_parallel": report.get("vocab_parallel"),
               "decode_ms_per_token": dec, "prefill_ms": pre, "comm_bytes_per_token": comm,
               "predicted_decode_ms": pdec, "predicted_comm_bytes_per_token": pcomm,
               "estimated_latency": report["estimated_latency"], "runs": rs}
        result["configs"].append(row)
        print(f"{name:40} {dec[len(dec) // 2]:13.2f} {pdec:9.2f} {pre[len(pre) // 2]:10.1f} "
              f"{comm:10.0f} {pcomm:9.0f}")
    # Batched: 8 sequences of 20 random tokens, --new-tokens each, on one
    # rank (max_batch 8) beside 2 ranks in 2 data-parallel groups of 4.
    batched = [("1 rank x 2 threads, batch 8", ONE, ["--max-batch=8"], 1, 2),
               ("2 groups x 1 thread, 4 each", TWO, ["--tensor-parallel=1", "--max-batch=4"], 2, 1)]
    bplans = []
    for name, cluster, extra, ranks, threads in batched:
        cfile = os.path.join(tmp, f"bcluster{len(bplans)}.json")
        json.dump(cluster, open(cfile, "w"))
        plan = os.path.join(tmp, f"b{len(bplans)}.plan")
        benchlib.run([os.path.join(bindir, "moe-compile"), a.checkpoint, "-o", plan,
                      f"--dtype={a.dtype}", f"--cluster={cfile}", "--max-seq-len=256", *extra])
        bplans.append((name, plan, ranks, threads))
    bruns = {name: [] for name, *_ in bplans}
    for r in range(a.rounds):
        for name, plan, ranks, threads in (bplans if r % 2 == 0 else list(reversed(bplans))):
            cmd = [os.path.join(bindir, "moe-run"), plan, f"--weights={a.checkpoint}", "--bench",
                   "--json", f"--threads={threads}", "--warmup=0", "--iters=1", "--batch=8",
                   f"--max-new-tokens={a.new_tokens}"]
            if ranks > 1:
                cmd = [mpirun, "--allow-run-as-root", "--oversubscribe", "--bind-to", "none",
                       "-np", str(ranks)] + cmd
            bruns[name].append(json.loads(benchlib.run(cmd))["runs"][0])
    result["batched"] = []
    print(f"{'batched (8 sequences)':32} {'tokens/s':>9} {'itl p50 ms':>10} {'comm B/row':>10}")
    for name, plan, ranks, threads in bplans:
        rs = bruns[name]
        tps = sorted(x["tokens_per_s"] for x in rs)
        itl = sorted(x["itl_ms"]["p50"] for x in rs)
        rows = rs[0]["prefill_rows"] + rs[0]["decode_rows"]
        per_row = sum(rs[0]["comm_bytes_by_rank"]) / ranks / rows
        result["batched"].append({"config": name, "ranks": ranks, "threads": threads,
                                  "tokens_per_s": tps, "itl_p50_ms": itl,
                                  "comm_bytes_per_row_per_rank": per_row, "runs": rs})
        print(f"{name:32} {tps[len(tps) // 2]:9.1f} {itl[len(itl) // 2]:10.1f} {per_row:10.0f}")
    result["load_after"] = os.getloadavg()
    benchlib.write_json(a.out, result)
    print(benchlib.load_line(result, a.out))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
