#!/usr/bin/python3
"""serve-bench.py PLAN [--requests N] [--concurrency C] [--prompt-len L]
                  [--new-tokens T[,T...]] [--rounds R] [--weights DIR] [--threads N]
                  [--client-threads]

moe-serve's throughput beside `moe-run --prompts --batch=C` on the same
prompts, interleaved in one run: per round and per new-token count, moe-run
runs the N prompts (L token ids each, T new tokens, EOS ignored) at batch C,
then N requests go to one moe-serve (started once, warmed up) at concurrency
C. Prints tokens/s of both, the ratio server / moe-run, and the load average.

moe-run's tokens/s is its engine's (generated tokens over the scheduler's
wall time, weights already loaded); the server's is the client's (generated
tokens over first request sent .. last answer read), which includes HTTP.

The default client is one thread multiplexing C keep-alive connections with
`selectors` and pre-encoded requests, so that on a small machine the client
takes little of the CPU the engine needs; --client-threads uses C threads
with http.client (what a simple Python client does) to show the difference.
Needs moe-run and moe-serve on PATH (build/bin).
"""
import argparse
import http.client
import json
import os
import re
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import prompt_ids  # noqa: E402


def body(ids, new_tokens):
    return {"prompt": ids, "max_tokens": new_tokens, "temperature": 0, "ignore_eos": True}


def run_moe_run(args, prompts_file):
    cmd = ["moe-run", args.plan, "--prompts=" + prompts_file, "--batch=%d" % args.concurrency,
           "--bench", "--json", "--warmup=1", "--iters=1"] + args.run_flags
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    r = json.loads(out)["runs"][0]
    return r["tokens_per_s"], r["generated_tokens"], r["steps"]


def server_steps(port):
    """moe_serve_engine_steps_total of /metrics."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    c.close()
    return int(float(re.search(r"^moe_serve_engine_steps_total (\S+)$", text, re.M).group(1)))


class SelectorClient:
    """C keep-alive connections in one thread; each sends its next request
    when its answer is complete (Content-Length framing)."""

    def __init__(self, port, concurrency):
        self.port, self.concurrency = port, concurrency
        self.reconnects = 0

    def run(self, bodies):
        reqs = []
        for b in bodies:
            data = json.dumps(b).encode()
            reqs.append(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" %
                        (len(data), data))
        sel = selectors.DefaultSelector()
        nxt, done, tokens = 0, 0, 0
        conns = []

        def connect():
            s = socket.create_connection(("127.0.0.1", self.port))
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            st = {"sock": s, "buf": b""}
            sel.register(s, selectors.EVENT_READ, st)
            return st

        t0 = time.perf_counter()
        for _ in range(min(self.concurrency, len(reqs))):
            st = connect()
            st["sock"].sendall(reqs[nxt])
            nxt += 1
            conns.append(st)
        while done < len(reqs):
            for key, _ in sel.select():
                st = key.data
                chunk = st["sock"].recv(65536)
                if not chunk:
                    raise RuntimeError("the server closed a connection (%d answers read, %d bytes pending)" % (done, len(st["buf"])))
                st["buf"] += chunk
                head_end = st["buf"].find(b"\r\n\r\n")
                if head_end < 0:
                    continue
                head = st["buf"][:head_end].decode()
                m = re.search(r"(?im)^content-length:\s*(\d+)", head)
                if not head.startswith("HTTP/1.1 200") or not m:
                    raise RuntimeError("answer: %r" % head)
                end = head_end + 4 + int(m.group(1))
                if len(st["buf"]) < end:
                    continue
                answer = st["buf"][head_end + 4:end]
                st["buf"] = st["buf"][end:]
                tokens += int(re.search(rb'"completion_tokens":(\d+)', answer).group(1))
                done += 1
                if re.search(r"(?im)^connection:\s*close", head):
                    # The server ends this connection (its keep-alive limit): a new one.
                    self.reconnects += 1
                    sel.unregister(st["sock"])
                    st["sock"].close()
                    st.update(connect())
                    sel.modify(st["sock"], selectors.EVENT_READ, st)
                if nxt < len(reqs):
                    st["sock"].sendall(reqs[nxt])
                    nxt += 1
        wall = time.perf_counter() - t0
        for st in conns:
            st["sock"].close()
        return tokens, wall


class ThreadClient:
    """C threads with one http.client keep-alive connection each."""

    def __init__(self, port, concurrency):
        self.port, self.concurrency = port, concurrency
        self.reconnects = 0  # http.client reconnects by itself

    def run(self, bodies):
        lock = threading.Lock()
        it = iter(bodies)
        total = [0]
        errors = []

        def worker():
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
            try:
                while True:
                    with lock:
                        b = next(it, None)
                    if b is None:
                        break
                    c.request("POST", "/v1/completions", body=json.dumps(b),
                              headers={"Content-Type": "application/json"})
                    r = c.getresponse()
                    out = json.loads(r.read())
                    if r.status != 200:
                        raise RuntimeError("%d %s" % (r.status, out))
                    with lock:
                        total[0] += out["usage"]["completion_tokens"]
            except Exception as e:  # a lost request fails the run
                with lock:
                    errors.append(repr(e))
            c.close()

        t0 = time.perf_counter()
        ts = [threading.Thread(target=worker) for _ in range(self.concurrency)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        if errors:
            raise RuntimeError("answers: %s" % errors[:2])
        return total[0], time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("plan")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--prompt-len", type=int, default=20)
    ap.add_argument("--new-tokens", default="64,16")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--vocab", type=int, default=256, help="token ids are < this")
    ap.add_argument("--weights", help="checkpoint (default: the plan's)")
    ap.add_argument("--threads", type=int, help="compute threads of both")
    ap.add_argument("--client-threads", action="store_true")
    args = ap.parse_args()
    args.run_flags = []
    if args.weights:
        args.run_flags.append("--weights=" + args.weights)
    if args.threads:
        args.run_flags.append("--threads=%d" % args.threads)
    news = [int(t) for t in args.new_tokens.split(",")]

    tmp = tempfile.mkdtemp(prefix="serve-bench-")
    files, bodies = {}, {}
    for t in news:
        files[t] = os.path.join(tmp, "prompts-%d.jsonl" % t)
        bodies[t] = []
        with open(files[t], "w") as f:
            for k in range(args.requests):
                ids = prompt_ids(k, args.prompt_len, args.vocab)
                f.write(json.dumps({"id": k, "prompt_ids": ids, "max_new_tokens": t,
                                    "ignore_eos": True}) + "\n")
                bodies[t].append(body(ids, t))

    srv = subprocess.Popen(["moe-serve", args.plan, "--port=0",
                            "--max-batch=%d" % args.concurrency] + args.run_flags,
                           stdout=subprocess.PIPE, text=True)
    line = srv.stdout.readline()
    m = re.match(r"moe-serve: listening on http://127.0.0.1:(\d+)", line)
    if not m:
        srv.kill()
        sys.exit("moe-serve did not start: %r" % line)
    port = int(m.group(1))
    client = (ThreadClient if args.client_threads else SelectorClient)(port, args.concurrency)
    try:
        client.run(bodies[news[0]][:args.concurrency])  # warm up: pages, threads, caches
        ratios = {t: [] for t in news}
        for rnd in range(args.rounds):
            for t in news:
                run_tps, run_tokens, run_steps = run_moe_run(args, files[t])
                client.reconnects = 0
                steps0 = server_steps(port)
                tokens, wall = client.run(bodies[t])
                steps = server_steps(port) - steps0
                if tokens != run_tokens:
                    sys.exit("the server generated %d tokens, moe-run %d" % (tokens, run_tokens))
                srv_tps = tokens / wall
                ratios[t].append(srv_tps / run_tps)
                # Steps (forward calls) do not depend on the machine's load:
                # more steps for the same tokens is the scheduling's cost.
                print("round %d, %3d new tokens: moe-run %9.1f tokens/s (%d steps), "
                      "moe-serve %9.1f tokens/s (%d steps), ratio %.3f (%d reconnects)" %
                      (rnd + 1, t, run_tps, run_steps, srv_tps, steps, srv_tps / run_tps,
                       client.reconnects), flush=True)
        for t in news:
            print("%3d new tokens: ratio moe-serve / moe-run median %.3f over %d rounds (%s)" %
                  (t, statistics.median(ratios[t]), args.rounds,
                   " ".join("%.3f" % r for r in ratios[t])))
        print("load average: %.2f %.2f %.2f" % os.getloadavg())
    finally:
        srv.terminate()
        srv.wait(timeout=30)


if __name__ == "__main__":
    main()
