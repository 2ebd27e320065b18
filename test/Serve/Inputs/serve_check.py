#!/usr/bin/env python3
"""Drives moe-serve for the lit tests (stdlib only).

serve_check.py MODE PLAN FIXTURE_DIR [moe-serve flags...]

Starts `moe-serve PLAN --port=0 [flags]` (behind $LAUNCH when set, e.g.
mpirun), reads the port it prints, runs
MODE, stops the server with SIGTERM and checks it exits 0. Prints one line
per check; a failed check prints "FAIL: ..." and exits 1.

Modes:
  greedy   the fixture's expected greedy tokens (expected.safetensors), not
           streamed and streamed (same tokens, same chunks' concatenation),
           then 8 concurrent requests equal to one-at-a-time answers
  errors   every line of Inputs/bad-requests.jsonl gets its status and an
           OpenAI-style error naming its parameter
  load     N requests (default 200) at concurrency 16: every one answered
           with the tokens of its one-at-a-time answer; prints throughput
  queue    --max-batch=1 --max-queue=1: a running stream, one queued
           request, the next gets 503; the stream's client goes away and
           its slot serves the queued request; the same with a non-streamed
           request whose client goes away
  sigterm  SIGTERM while requests run: they are answered, exit 0 in 10 s
  text     a text prompt and a stop string (a plan with a tokenizer)
serve_check.py expected FIXTURE_DIR prints {"prompt", "want"}: the fixture's
prompt ids and greedy tokens.
"""
import http.client
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def fail(msg):
    print("FAIL: " + msg, flush=True)
    sys.exit(1)


def expected_ids(fixture):
    """input_ids and the generated tokens of expected.safetensors."""
    path = os.path.join(fixture, "expected.safetensors")
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        base = 8 + n

        def read(name):
            meta = header[name]
            assert meta["dtype"] == "I64", meta
            a, b = meta["data_offsets"]
            f.seek(base + a)
            raw = f.read(b - a)
            return list(struct.unpack("<%dq" % ((b - a) // 8), raw))

        prompt = read("input_ids")
        gen = read("generated_ids")
    return prompt, gen[len(prompt):]


class Server:
    def __init__(self, plan, flags):
        # LAUNCH: a launcher command in front of moe-serve (mpirun ... -np N).
        launch = os.environ.get("LAUNCH", "").split()
        self.proc = subprocess.Popen(launch + ["moe-serve", plan, "--port=0"] + flags,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        prefix = "moe-serve: listening on http://127.0.0.1:"
        if not line.startswith(prefix):
            self.proc.kill()
            fail("moe-serve did not start: %r %s" % (line, self.proc.stderr.read()))
        self.port = int(line[len(prefix):])
        self.plan = plan

    def conn(self, timeout=60):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, raw=False):
        """(status, parsed JSON or text) of one request."""
        c = self.conn()
        data = body if raw or body is None else json.dumps(body)
        headers = {"Content-Type": "application/json"} if data is not None else {}
        c.request(method, path, body=data, headers=headers)
        r = c.getresponse()
        text = r.read().decode()
        c.close()
        try:
            return r.status, json.loads(text)
        except ValueError:
            return r.status, text

    def complete(self, body):
        status, out = self.request("POST", "/v1/completions", body)
        if status != 200:
            fail("POST /v1/completions %s: %d %s" % (json.dumps(body), status, out))
        return out

    def stream(self, body):
        """Every data chunk of a streamed completion (parsed), and whether it ended in [DONE]."""
        c = self.conn()
        c.request("POST", "/v1/completions", body=json.dumps(dict(body, stream=True)),
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        if r.status != 200:
            fail("streamed POST: %d %s" % (r.status, r.read()))
        if not r.getheader("Content-Type", "").startswith("text/event-stream"):
            fail("streamed answer of type %r" % r.getheader("Content-Type"))
        chunks, done = [], False
        for line in r:
            line = line.decode().rstrip("\n")
            if not line:
                continue
            if not line.startswith("data: "):
                fail("not an SSE data line: %r" % line)
            if line == "data: [DONE]":
                done = True
                continue
            if done:
                fail("data after [DONE]")
            chunks.append(json.loads(line[6:]))
        c.close()
        return chunks, done

    def metric(self, name):
        _, text = self.request("GET", "/metrics")
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        fail("no metric %s in /metrics" % name)

    def wait_metric(self, name, at_least, what, limit=30.0):
        """Polls /metrics until `name` is at least `at_least`; fails with `what` after `limit` s."""
        deadline = time.time() + limit
        while self.metric(name) < at_least:
            if time.time() > deadline:
                _, text = self.request("GET", "/metrics")
                fail("%s (after %.0f s: %s)" % (what, limit, "; ".join(
                    l for l in text.splitlines() if l.startswith("moe_serve_") and
                    ("sequences" in l or "queue" in l or "requests_total" in l))))
            time.sleep(0.005)

    def server_pid(self):
        """moe-serve's pid; behind mpirun, rank 0's process (mpirun itself
        exits 1 when it is signalled, whatever its processes do)."""
        if not os.environ.get("LAUNCH"):
            return self.proc.pid
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open("/proc/%s/environ" % entry, "rb") as f:
                    env = f.read().split(b"\0")
                with open("/proc/%s/stat" % entry) as f:
                    stat = f.read()
            except OSError:
                continue
            if "(moe-serve)" not in stat or b"OMPI_COMM_WORLD_RANK=0" not in env:
                continue
            # A descendant of this launcher.
            pid = int(entry)
            while pid > 1:
                if pid == self.proc.pid:
                    return int(entry)
                try:
                    with open("/proc/%d/stat" % pid) as f:
                        pid = int(f.read().rsplit(")", 1)[1].split()[1])
                except OSError:
                    break
        fail("no rank-0 moe-serve process under the launcher")

    def stop(self, limit=10.0):
        t0 = time.time()
        os.kill(self.server_pid(), signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            fail("moe-serve did not exit within %.0f s of SIGTERM" % limit)
        if code != 0:
            fail("moe-serve exited %d after SIGTERM: %s" % (code, self.proc.stderr.read()))
        return time.time() - t0


def greedy_body(prompt, n):
    return {"prompt": prompt, "max_tokens": n, "temperature": 0, "ignore_eos": True,
            "return_token_ids": True}


def prompts(k, vocab=256):
    """k distinct token-id prompts of 1..12 tokens."""
    return [[(i * 37 + 5 + j * 11) % vocab for i in range(1 + (j * 5) % 12)] for j in range(k)]


def run_threads(fn, items, concurrency):
    results = [None] * len(items)
    errors = []
    lock = threading.Lock()
    it = iter(enumerate(items))

    def worker():
        while True:
            with lock:
                nxt = next(it, None)
            if nxt is None:
                return
            i, x = nxt
            try:
                results[i] = fn(x)
            except BaseException as e:  # a lost request is the failure, not a crash
                with lock:
                    errors.append("%d: %r" % (i, e))

    ts = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        fail("%d requests failed: %s" % (len(errors), errors[:3]))
    return results


def mode_greedy(srv, fixture):
    prompt, want = expected_ids(fixture)
    body = greedy_body(prompt, len(want))
    out = srv.complete(body)
    ch = out["choices"][0]
    if ch["token_ids"] != want:
        fail("greedy tokens %s, expected %s" % (ch["token_ids"], want))
    if ch["prompt_token_ids"] != prompt or ch["finish_reason"] != "length":
        fail("choice %s" % ch)
    if out["object"] != "text_completion" or not out["id"].startswith("cmpl-"):
        fail("response %s" % out)
    u = out["usage"]
    if u != {"prompt_tokens": len(prompt), "completion_tokens": len(want),
             "total_tokens": len(prompt) + len(want)}:
        fail("usage %s" % u)
    print("non-streamed: the fixture's %d greedy tokens" % len(want))
    chunks, done = srv.stream(body)
    ids = [t for c in chunks for ch in c["choices"] for t in ch.get("token_ids", [])]
    finish = [ch["finish_reason"] for c in chunks for ch in c["choices"]]
    if not done or ids != want or finish[-1] != "length" or any(finish[:-1]):
        fail("streamed: done=%s ids=%s finish=%s" % (done, ids, finish))
    print("streamed: the same tokens in %d chunks, then [DONE]" % len(chunks))
    # A list of prompts: one choice each, by index.
    out = srv.complete(dict(body, prompt=[prompt, prompt[:3]], max_tokens=4))
    if [c["index"] for c in out["choices"]] != [0, 1] or out["choices"][0]["token_ids"] != want[:4]:
        fail("two prompts: %s" % out["choices"])
    print("two prompts: two choices")
    ps = prompts(8)
    # 48 tokens each: long enough that the 8 overlap in the batch.
    single = [srv.complete(greedy_body(p, 48))["choices"][0]["token_ids"] for p in ps]
    # On a loaded machine the 8 may arrive one after another: up to three
    # rounds, each equal to the single answers, until a step ran several.
    for _ in range(3):
        together = run_threads(
            lambda p: srv.complete(greedy_body(p, 48))["choices"][0]["token_ids"], ps, 8)
        if together != single:
            fail("8 concurrent answers differ from single ones")
        if srv.metric("moe_serve_engine_sequence_steps_total") > srv.metric(
                "moe_serve_engine_steps_total"):
            break
    else:
        fail("no step ran more than one sequence")
    # The default pool holds every slot's full length: nothing is preempted.
    if srv.metric("moe_serve_preemptions_total") != 0:
        fail("preemptions with a pool that holds every slot's full length")
    print("8 concurrent requests: all answered, equal to single ones, batched")


def mode_errors(srv, fixture):
    n = 0
    with open(os.path.join(HERE, "bad-requests.jsonl")) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip() or line.startswith("#"):
                continue
            case = json.loads(line)
            body = case.get("raw")
            if body is None and "body" in case:
                body = json.dumps(case["body"])
            if case.get("repeat"):
                body = body * case["repeat"]
            status, out = srv.request(case.get("method", "POST"),
                                      case.get("path", "/v1/completions"), body, raw=True)
            where = "bad-requests.jsonl:%d" % lineno
            if status != case["status"]:
                fail("%s: status %d, expected %d (%s)" % (where, status, case["status"], out))
            if not isinstance(out, dict) or set(out) != {"error"} or set(out["error"]) != {
                    "message", "type", "param", "code"}:
                fail("%s: not an OpenAI error body: %r" % (where, out))
            if out["error"]["param"] != case.get("param"):
                fail("%s: param %r, expected %r" % (where, out["error"]["param"], case.get("param")))
            if "\n" in out["error"]["message"] or not out["error"]["message"]:
                fail("%s: message %r" % (where, out["error"]["message"]))
            n += 1
    # Still serving after every bad request.
    if srv.request("GET", "/health")[0] != 200:
        fail("not healthy after the bad requests")
    print("bad requests: %d cases got their status, the server still serves" % n)
    # A second server on the same port is a one-line error, not a silent
    # share of the port (httplib's default SO_REUSEPORT).
    second = subprocess.run(["moe-serve", srv.plan, "--port=%d" % srv.port],
                            capture_output=True, text=True, timeout=30)
    err = second.stderr.strip()
    if second.returncode == 0 or "\n" in err or "cannot listen" not in err:
        fail("a second server on port %d: exit %d, %r" % (srv.port, second.returncode, err))
    print("a second server on the same port: exit %d, one line" % second.returncode)


def mode_load(srv, fixture, total=200, concurrency=16):
    ps = prompts(total)
    ps = [p for p in ps]
    bodies = [greedy_body(p, 8) for p in ps]
    distinct = {json.dumps(b): None for b in bodies}
    for b in list(distinct):
        distinct[b] = srv.complete(json.loads(b))["choices"][0]["token_ids"]
    t0 = time.time()
    got = run_threads(lambda b: srv.complete(b), bodies, concurrency)
    wall = time.time() - t0
    tokens = sum(g["usage"]["completion_tokens"] for g in got)
    bad = [i for i, (b, g) in enumerate(zip(bodies, got))
           if g["choices"][0]["token_ids"] != distinct[json.dumps(b)]]
    if bad:
        fail("%d of %d answers differ from one-at-a-time answers" % (len(bad), total))
    # The server counts a request after its response is written: the last
    # ones may be counted just after the client has read them.
    srv.wait_metric('moe_serve_requests_total{path="/v1/completions",status="200"}',
                    total + len(distinct), "metrics count fewer than %d answered completions" %
                    (total + len(distinct)))
    print("load: %d requests at concurrency %d, none lost, all equal to single answers" %
          (total, concurrency))
    sys.stdout.flush()
    print("throughput: %.1f requests/s, %.1f tokens/s (%.2f s)" %
          (total / wall, tokens / wall, wall), file=sys.stderr)


# Tokens of the request that holds the only slot in queue mode: the plan
# (Inputs/long-context.json) holds 16384 positions, so the request outlasts
# the checks that follow by seconds even on a loaded machine (480 tokens of
# a 512-position plan once ended first under load).
HOLD_TOKENS = 16000


def hold_slot(srv, stream):
    """A long request that holds the only slot (its connection); a streamed
    one has sent its first chunk, a non-streamed one runs."""
    c = srv.conn()
    c.request("POST", "/v1/completions",
              body=json.dumps(dict(greedy_body([3], HOLD_TOKENS), stream=stream)),
              headers={"Content-Type": "application/json"})
    if stream:
        r = c.getresponse()
        if r.status != 200 or not r.readline().startswith(b"data: "):
            fail("the long stream did not start")
    else:
        srv.wait_metric("moe_serve_running_sequences", 1, "the long request never ran")
    return c


def queue_one(srv):
    """A short request that waits in the queue (a thread), and its answer."""
    queued = {}
    t = threading.Thread(target=lambda: queued.update(out=srv.complete(greedy_body([5, 6], 4))))
    t.start()
    srv.wait_metric("moe_serve_queue_length", 1, "the second request never queued")
    return t, queued


def client_leaves(srv, c, t, queued, cancelled, what):
    """`c`'s client goes away: its sequence is cancelled (the `cancelled`-th)
    and its slot serves the queued request."""
    c.sock.shutdown(2)
    c.close()
    t.join(timeout=20)
    if t.is_alive() or queued["out"]["choices"][0]["finish_reason"] != "length":
        fail("the queued request was not answered after the %s's client left" % what)
    if srv.metric("moe_serve_cancelled_sequences_total") != cancelled:
        fail("the %s whose client left was not cancelled" % what)


def mode_queue(srv, fixture):
    c = hold_slot(srv, stream=True)
    t, queued = queue_one(srv)
    status, out = srv.request("POST", "/v1/completions", greedy_body([7], 4))
    if status != 503 or out["error"]["type"] != "service_unavailable_error":
        fail("a request beyond --max-queue: %d %s" % (status, out))
    print("full queue: 503")
    client_leaves(srv, c, t, queued, 1, "stream")
    print("client gone: its sequence cancelled, the queued request answered")
    # A non-streamed request writes nothing before its answer: the server
    # watches its connection while it waits.
    c = hold_slot(srv, stream=False)
    t, queued = queue_one(srv)
    client_leaves(srv, c, t, queued, 2, "non-streamed request")
    print("non-streamed client gone: its sequence cancelled, the queued request answered")


def mode_sigterm(srv, fixture):
    answers = {}

    def ask(i):
        answers[i] = srv.request("POST", "/v1/completions", greedy_body([3 + i], 200))

    ts = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    srv.wait_metric("moe_serve_running_sequences", 1, "no request started")
    took = srv.stop()
    for t in ts:
        t.join()
    codes = sorted(a[0] for a in answers.values())
    # Those that arrived before SIGTERM ran to the end; none was dropped.
    if len(codes) != 4 or any(c not in (200, 503) for c in codes) or codes.count(200) < 1:
        fail("answers during shutdown: %s" % codes)
    for status, out in answers.values():
        if status == 200 and out["choices"][0]["finish_reason"] != "length":
            fail("a running request was cut: %s" % out["choices"][0])
    print("SIGTERM: running requests answered, exit 0 within 10 s")
    return True


def mode_text(srv, fixture):
    out = srv.complete({"prompt": "Hello", "max_tokens": 12, "temperature": 0,
                        "ignore_eos": True, "return_token_ids": True})
    ch = out["choices"][0]
    if ch["prompt_token_ids"] != list(b"Hello"):
        fail("text prompt ids %s" % ch["prompt_token_ids"])
    text = ch["text"]
    if text != bytes(ch["token_ids"]).decode("utf-8", "replace"):
        fail("text %r of ids %s" % (text, ch["token_ids"]))
    chunks, _ = srv.stream({"prompt": "Hello", "max_tokens": 12, "temperature": 0,
                            "ignore_eos": True})
    streamed = "".join(ch["text"] for c in chunks for ch in c["choices"])
    if streamed != text:
        fail("streamed text %r, expected %r" % (streamed, text))
    print("text prompt: the bytes' tokens, streamed text equals the text")
    # A stop string: the text ends before it, finish_reason stop.
    i = next(i for i in range(1, len(text) - 1) if text[i:i + 2].isascii() and
             text[i:i + 2].isprintable())
    stop = text[i:i + 2]
    for stream in (False, True):
        body = {"prompt": "Hello", "max_tokens": 12, "temperature": 0, "stop": [stop]}
        if stream:
            chunks, _ = srv.stream(body)
            got = "".join(ch["text"] for c in chunks for ch in c["choices"])
            reason = chunks[-1]["choices"][0]["finish_reason"]
        else:
            ch = srv.complete(body)["choices"][0]
            got, reason = ch["text"], ch["finish_reason"]
        if got != text[:text.find(stop)] or reason != "stop":
            fail("stop %r (stream %s): %r, %s" % (stop, stream, got, reason))
    print("stop string: the text ends before it, streamed too")


def main():
    if sys.argv[1] == "expected":  # serve_check.py expected FIXTURE_DIR: for other clients
        prompt, want = expected_ids(sys.argv[2])
        print(json.dumps({"prompt": prompt, "want": want}))
        return
    mode, plan, fixture = sys.argv[1:4]
    srv = Server(plan, sys.argv[4:])
    try:
        stopped = {"greedy": mode_greedy, "errors": mode_errors, "load": mode_load,
                   "queue": mode_queue, "sigterm": mode_sigterm, "text": mode_text}[mode](
                       srv, fixture)
        if not stopped:
            srv.stop()
    finally:
        if srv.proc.poll() is None:
            srv.proc.kill()


if __name__ == "__main__":
    main()
