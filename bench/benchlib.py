"""benchlib: what the scripts in bench/ share.

Running a tool (its command line echoed to stderr), one `moe-run --bench
--json` process, the machine's description in a result, the batch
benchmark's prompts, and writing the result JSON whole (a reader never sees
half a file).
"""
import json, os, platform, subprocess, sys, time


def run(cmd, **kw):
    """cmd's stdout (text); cmd is echoed to stderr first, a failure raises."""
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, **kw).stdout


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def machine():
    """The result's cpu, cores, date and load_before, in that order."""
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "load_before": os.getloadavg()}


def moe_run_bench(bindir, plan, weights, threads, iters, new_tokens):
    """One `moe-run PLAN WEIGHTS... --bench --json` process (a 20-token
    prompt, one warm-up run, `iters` timed runs of `new_tokens` greedy
    tokens): its JSON without generated_ids. weights: moe-run's flags for
    the weights, e.g. ["--random-weights", "--seed=1"] or ["--weights=DIR"]."""
    j = json.loads(run([os.path.join(bindir, "moe-run"), plan, *weights, "--bench", "--json",
                        f"--threads={threads}", "--warmup=1", f"--iters={iters}",
                        f"--max-new-tokens={new_tokens}"]))
    j.pop("generated_ids", None)
    return j


def prompt_ids(k, length, vocab):
    """Prompt k of `moe-run --bench --batch`'s protocol (its 20-token
    prompts), any length: the same ids moe-run generates itself."""
    return [(i * 7919 + 13 + k * 104729) % vocab for i in range(length)]


def write_json(path, result):
    """result as indented JSON at path (its folder made), through a .tmp
    file renamed over it."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(result, f, indent=1)
    os.replace(path + ".tmp", path)


def load_line(result, path):
    """The closing line of a run: the load averages and where it wrote."""
    return (f"load average before {result['load_before'][0]:.2f}, after {result['load_after'][0]:.2f}; "
            f"wrote {path}")
