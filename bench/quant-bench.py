#!/usr/bin/python3
"""quant-bench.py: decode with quantized weights beside the same model in bf16.

  bench/quant-bench.py [--build build] [--work DIR] [--models deepseek,gptoss]
      [--threads 1,2] [--rounds 5] [--iters 3] [--new-tokens 64] [--out FILE.json]
      [--llama-bin DIR --gguf MODEL-FORMAT=FILE ...]

The benchmark of issue 18. Two bench models scaled to a 2-core machine:

  deepseek  DeepSeek-V3 shape (model_type deepseek_v3): hidden 1024, 10 layers
            (the first dense), MLA (q LoRA 384, kv latent 256, 16 heads, nope
            64 + rope 32, v 64), 32 routed experts top-4 in 4 groups (2 chosen)
            + 1 shared expert, expert intermediate 512, vocab 16384. bf16
            1.08 GB; FP8 e4m3 with 128x128 f32 block scales on every decoder
            projection, as DeepSeek-V3 publishes (test/e2e/Inputs/quantize_fp8.py).
  gptoss    gpt-oss shape (model_type gpt_oss): hidden 1024, 6 layers
            alternating sliding (128) and full attention, 16 heads x 64, 4 kv
            heads, sinks, 32 experts top-4 with intermediate 1024 (fused
            gate_up, biases, clamped SwiGLU), vocab 16384. bf16 1.31 GB; MXFP4
            experts (*_blocks + *_scales; the model 0.42 GB) as gpt-oss publishes
            them, rounded as test/e2e/Inputs/quantize_mxfp4.py does (checked
            against its quantize() on the first expert); skipped with a
            message where that script does not exist.

Each model is written once into --work as a bf16 checkpoint (random N(0,
0.02) weights, fixed seeds) and its quantized twin (the same weights
quantized), compiled with `moe-compile --dtype=bf16` and run with
`moe-run --bench --json --weights=CKPT` (20-token prompt, --new-tokens greedy
tokens, --iters timed runs per process). --rounds rounds, each running every
(model, threads) once in alternating order, so bf16 and the quantized model
share the machine's state. Reported per model and thread count: decode
ms/token (median over the processes of each process's median), the
speed-up over the bf16 twin (ratio of the medians; "best": the fastest
process's median), the bytes read per
decode token as stored (FP8 values + f32 scales; MXFP4 nibbles + e8m0
scales; moe-run counts the routed experts' stored bytes), the ratio of those
bytes (the speed-up the bytes allow), % of the same-run bandwidth floor
(that process's read-bandwidth probe, median over processes), peak resident
bytes and peak RSS (no full-precision copy). JSON with every run in --out.

With --llama-bin (llama.cpp's build/bin, built beside the project as
../shared/BENCHMARKS.md says) and --gguf gptoss-mxfp4=FILE (the checkpoint
converted with llama.cpp's gguf-py, MXFP4 experts kept as they are; not in
this repository), each round also runs `llama-bench -p 0 -n NEW -d 20 -r ITERS`
on every GGUF at every thread count, and the summary gives llama.cpp's decode
ms/token (median over rounds of the median of its runs) beside ours.
"""
import argparse, json, os, re, statistics, struct, subprocess, sys, time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
INPUTS = os.path.join(ROOT, "test", "e2e", "Inputs")
sys.path.insert(0, INPUTS)
import quantize_fp8  # noqa: E402
from benchlib import load_line, machine, moe_run_bench, run, write_json  # noqa: E402

GEN_VERSION = 1  # bump when the generated weights change

DEEPSEEK = {
    "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
    "vocab_size": 16384, "hidden_size": 1024, "intermediate_size": 2816,
    "moe_intermediate_size": 512, "num_hidden_layers": 10, "first_k_dense_replace": 1,
    "num_attention_heads": 16, "num_key_value_heads": 16, "q_lora_rank": 384,
    "kv_lora_rank": 256, "qk_nope_head_dim": 64, "qk_rope_head_dim": 32, "qk_head_dim": 96,
    "head_dim": 32, "v_head_dim": 64, "rope_interleave": True, "n_routed_experts": 32,
    "n_shared_experts": 1, "num_experts_per_tok": 4, "n_group": 4, "topk_group": 2,
    "norm_topk_prob": True, "routed_scaling_factor": 2.5, "scoring_func": "sigmoid",
    "topk_method": "noaux_tc", "hidden_act": "silu", "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "attention_bias": False,
    "rope_scaling": {"type": "yarn", "factor": 4.0, "beta_fast": 32.0, "beta_slow": 1.0,
                     "mscale": 1.0, "mscale_all_dim": 1.0,
                     "original_max_position_embeddings": 1024},
    "tie_word_embeddings": False, "bos_token_id": 0, "eos_token_id": 1,
    "initializer_range": 0.02, "torch_dtype": "bfloat16",
}

GPTOSS = {
    "architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss",
    "vocab_size": 16384, "hidden_size": 1024, "intermediate_size": 1024,
    "num_hidden_layers": 6, "num_attention_heads": 16, "num_key_value_heads": 4,
    "head_dim": 64, "num_local_experts": 32, "num_experts_per_tok": 4,
    "experts_per_token": 4, "sliding_window": 128,
    "layer_types": ["sliding_attention", "full_attention"] * 3, "attention_bias": True,
    "swiglu_limit": 7.0, "hidden_act": "silu", "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5, "rope_theta": 150000.0,
    "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "beta_fast": 32.0, "beta_slow": 1.0,
                     "original_max_position_embeddings": 1024, "truncate": False},
    "tie_word_embeddings": False, "bos_token_id": 0, "eos_token_id": 1,
    "initializer_range": 0.02, "torch_dtype": "bfloat16",
}


def deepseek_tensors(c):
    """(name, shape, init) in checkpoint order; init: normal, ones, zeros."""
    H, V, nh = c["hidden_size"], c["vocab_size"], c["num_attention_heads"]
    QL, KVL, NOPE, ROPE, VD = (c["q_lora_rank"], c["kv_lora_rank"], c["qk_nope_head_dim"],
                               c["qk_rope_head_dim"], c["v_head_dim"])
    DI, EI, E = c["intermediate_size"], c["moe_intermediate_size"], c["n_routed_experts"]
    t = [("model.embed_tokens.weight", (V, H), "normal")]
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        a = p + "self_attn."
        t += [(p + "input_layernorm.weight", (H,), "ones"),
              (p + "post_attention_layernorm.weight", (H,), "ones"),
              (a + "q_a_proj.weight", (QL, H), "normal"),
              (a + "q_a_layernorm.weight", (QL,), "ones"),
              (a + "q_b_proj.weight", (nh * (NOPE + ROPE), QL), "normal"),
              (a + "kv_a_proj_with_mqa.weight", (KVL + ROPE, H), "normal"),
              (a + "kv_a_layernorm.weight", (KVL,), "ones"),
              (a + "kv_b_proj.weight", (nh * (NOPE + VD), KVL), "normal"),
              (a + "o_proj.weight", (H, nh * VD), "normal")]
        if i < c["first_k_dense_replace"]:
            t += [(p + "mlp.gate_proj.weight", (DI, H), "normal"),
                  (p + "mlp.up_proj.weight", (DI, H), "normal"),
                  (p + "mlp.down_proj.weight", (H, DI), "normal")]
            continue
        SI = EI * c["n_shared_experts"]
        t += [(p + "mlp.gate.weight", (E, H), "normal"),
              (p + "mlp.gate.e_score_correction_bias", (E,), "zeros-f32"),
              (p + "mlp.shared_experts.gate_proj.weight", (SI, H), "normal"),
              (p + "mlp.shared_experts.up_proj.weight", (SI, H), "normal"),
              (p + "mlp.shared_experts.down_proj.weight", (H, SI), "normal")]
        for e in range(E):
            q = p + f"mlp.experts.{e}."
            t += [(q + "gate_proj.weight", (EI, H), "normal"),
                  (q + "up_proj.weight", (EI, H), "normal"),
                  (q + "down_proj.weight", (H, EI), "normal")]
    t += [("model.norm.weight", (H,), "ones"), ("lm_head.weight", (V, H), "normal")]
    return t


def gptoss_tensors(c):
    """gpt-oss's bf16 layout: fused experts gate_up_proj [E, H, 2I] (gate and
    up columns interleaved) and down_proj [E, I, H], with biases."""
    H, V, nh, kv, hd = (c["hidden_size"], c["vocab_size"], c["num_attention_heads"],
                        c["num_key_value_heads"], c["head_dim"])
    I, E = c["intermediate_size"], c["num_local_experts"]
    t = [("model.embed_tokens.weight", (V, H), "normal")]
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        a = p + "self_attn."
        t += [(p + "input_layernorm.weight", (H,), "ones"),
              (p + "post_attention_layernorm.weight", (H,), "ones"),
              (a + "q_proj.weight", (nh * hd, H), "normal"), (a + "q_proj.bias", (nh * hd,), "normal"),
              (a + "k_proj.weight", (kv * hd, H), "normal"), (a + "k_proj.bias", (kv * hd,), "normal"),
              (a + "v_proj.weight", (kv * hd, H), "normal"), (a + "v_proj.bias", (kv * hd,), "normal"),
              (a + "o_proj.weight", (H, nh * hd), "normal"), (a + "o_proj.bias", (H,), "normal"),
              (a + "sinks", (nh,), "normal"),
              (p + "mlp.router.weight", (E, H), "normal"), (p + "mlp.router.bias", (E,), "normal"),
              (p + "mlp.experts.gate_up_proj", (E, H, 2 * I), "normal"),
              (p + "mlp.experts.gate_up_proj_bias", (E, 2 * I), "normal"),
              (p + "mlp.experts.down_proj", (E, I, H), "normal"),
              (p + "mlp.experts.down_proj_bias", (E, H), "normal")]
    t += [("model.norm.weight", (H,), "ones"), ("lm_head.weight", (V, H), "normal")]
    return t


def bf16_bits(x):
    u = x.view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def write_safetensors(path, entries):
    """entries: (name, dtype, shape, producer) with producer() -> ndarray,
    called in order while the file is written (one tensor in memory)."""
    size = {"BF16": 2, "F32": 4, "F8_E4M3": 1, "U8": 1}
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for name, dtype, shape, _ in entries:
        n = int(np.prod(shape)) * size[dtype]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for name, dtype, shape, make in entries:
            a = np.ascontiguousarray(make())
            b, e = header[name]["data_offsets"]
            assert a.nbytes == e - b, name
            f.write(a.tobytes())
    os.replace(path + ".tmp", path)


def read_safetensors(path):
    """{name: (dtype, ndarray view of the mapped file)}."""
    dt = {"BF16": np.uint16, "F32": np.float32, "F8_E4M3": np.uint8, "U8": np.uint8}
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    mm = np.memmap(path, np.uint8, "r", offset=8 + n)
    out = {}
    for name, h in header.items():
        if name == "__metadata__":
            continue
        b, e = h["data_offsets"]
        out[name] = (h["dtype"], mm[b:e].view(dt[h["dtype"]]).reshape(h["shape"]))
    return out


def write_bf16_checkpoint(d, config, tensors, seed):
    os.makedirs(d, exist_ok=True)
    entries = []
    for idx, (name, shape, init) in enumerate(tensors):
        def make(idx=idx, shape=shape, init=init):
            n = int(np.prod(shape))
            if init == "ones":
                return np.full(shape, 0x3F80, np.uint16)
            if init == "zeros-f32":
                return np.zeros(shape, np.float32)
            rng = np.random.default_rng([seed, idx])
            x = rng.standard_normal(n, dtype=np.float32) * np.float32(0.02)
            return bf16_bits(x).reshape(shape)
        entries.append((name, "F32" if init == "zeros-f32" else "BF16", shape, make))
    write_safetensors(os.path.join(d, "model.safetensors"), entries)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f, indent=2)


def write_fp8_checkpoint(src, dst, block):
    """src's bf16 checkpoint with every decoder projection as F8_E4M3 +
    F32 `_scale_inv`, quantized by quantize_fp8.quantize."""
    bn, bk = block
    os.makedirs(dst, exist_ok=True)
    tensors = read_safetensors(os.path.join(src, "model.safetensors"))
    entries, cache = [], {}

    def quantized(name):
        if name not in cache:
            cache.clear()
            cache[name] = quantize_fp8.quantize(quantize_fp8.to_f32("BF16", tensors[name][1]), bn, bk)
        return cache[name]

    for name in sorted(tensors):
        dtype, t = tensors[name]
        if dtype == "BF16" and quantize_fp8.is_quantized(name, t.ndim):
            N, K = t.shape
            entries.append((name, "F8_E4M3", (N, K), lambda name=name: quantized(name)[0]))
            entries.append((name + "_scale_inv", "F32", (-(-N // bn), -(-K // bk)),
                            lambda name=name: quantized(name)[1]))
        else:
            entries.append((name, dtype, t.shape, lambda t=t: t))
    write_safetensors(os.path.join(dst, "model.safetensors"), entries)
    with open(os.path.join(src, "config.json")) as f:
        c = json.load(f)
    c["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3",
                                "weight_block_size": [bn, bk], "activation_scheme": "dynamic"}
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(c, f, indent=2)


E2M1_MIDS = None


def mxfp4_quantize(w):
    """quantize_mxfp4.quantize, with the nearest e2m1 found by the midpoints
    (ties to the smaller magnitude, zero as +0: argmin's choice) instead of
    a [.., 16] table of distances."""
    global E2M1_MIDS
    import quantize_mxfp4
    if E2M1_MIDS is None:
        mags = quantize_mxfp4.E2M1[:8]
        E2M1_MIDS = (mags[:-1] + mags[1:]) / 2
    g = w.reshape(*w.shape[:-1], -1, 32).astype(np.float64)
    amax = np.abs(g).max(-1)
    exp = np.clip(np.ceil(np.log2(np.maximum(amax, 1e-30) / 6.0)), -127, 127)
    scales = (exp + 127).astype(np.uint8)
    x = g / np.ldexp(1.0, exp.astype(np.int64))[..., None]
    idx = np.searchsorted(E2M1_MIDS, np.abs(x), side="left").astype(np.uint8)
    idx[(x < 0) & (idx != 0)] |= 8
    return (idx[..., 0::2] | (idx[..., 1::2] << 4)).astype(np.uint8), scales


def write_mxfp4_checkpoint(src, dst):
    """src's bf16 gpt-oss checkpoint with the experts' gate_up_proj and
    down_proj as MXFP4 `_blocks` + `_scales` (the parameter transposed to
    [E, R, C]), as test/e2e/Inputs/quantize_mxfp4.py writes them, one expert
    at a time; the first expert is checked against that script's quantize."""
    import quantize_mxfp4
    os.makedirs(dst, exist_ok=True)
    tensors = read_safetensors(os.path.join(src, "model.safetensors"))
    entries, cache, checked = [], {}, []

    def quantized(name):
        if name not in cache:
            cache.clear()
            w = tensors[name][1]
            blocks, scales = [], []
            for e in range(w.shape[0]):
                rows = quantize_fp8.to_f32("BF16", w[e]).T  # [R, C]
                b, sc = mxfp4_quantize(rows)
                if not checked:
                    rb, rs = quantize_mxfp4.quantize(rows)
                    assert np.array_equal(rb, b) and np.array_equal(rs, sc), name
                    checked.append(name)
                blocks.append(b)
                scales.append(sc)
            cache[name] = (np.stack(blocks), np.stack(scales))
        return cache[name]

    expert = re.compile(r"model\.layers\.\d+\.mlp\.experts\.(gate_up|down)_proj")
    for name in sorted(tensors):
        dtype, t = tensors[name]
        if expert.fullmatch(name):
            E, C, R = t.shape
            entries.append((name + "_blocks", "U8", (E, R, C // 32, 16),
                            lambda name=name: quantized(name)[0]))
            entries.append((name + "_scales", "U8", (E, R, C // 32),
                            lambda name=name: quantized(name)[1]))
        else:
            entries.append((name, dtype, t.shape, lambda t=t: t))
    write_safetensors(os.path.join(dst, "model.safetensors"), entries)
    with open(os.path.join(src, "config.json")) as f:
        c = json.load(f)
    c["quantization_config"] = {
        "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
                                   "model.embed_tokens", "lm_head"],
        "quant_method": "mxfp4"}
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(c, f, indent=2)


def cached(d, key, make):
    """Runs make() unless d holds a stamp equal to key."""
    stamp = os.path.join(d, ".quant-bench-stamp")
    if os.path.exists(stamp) and open(stamp).read() == key:
        return
    t0 = time.time()
    make()
    with open(stamp, "w") as f:
        f.write(key)
    print(f"wrote {d} in {time.time() - t0:.0f} s", file=sys.stderr, flush=True)


def prepare_deepseek(work, bindir):
    bf = os.path.join(work, "deepseek-bf16")
    q = os.path.join(work, "deepseek-fp8")
    key = json.dumps([GEN_VERSION, DEEPSEEK])
    cached(bf, key, lambda: write_bf16_checkpoint(bf, DEEPSEEK, deepseek_tensors(DEEPSEEK), 1))
    cached(q, key + "fp8-128", lambda: write_fp8_checkpoint(bf, q, (128, 128)))
    return [("deepseek", "bf16", bf), ("deepseek", "fp8", q)]


def prepare_gptoss(work, bindir):
    script = os.path.join(INPUTS, "quantize_mxfp4.py")
    if not os.path.exists(script):
        print(f"gptoss: skipped: {os.path.relpath(script, ROOT)} does not exist yet (MXFP4 import "
              "lands with it); the DeepSeek-V3 part runs alone", file=sys.stderr)
        return []
    bf = os.path.join(work, "gptoss-bf16")
    q = os.path.join(work, "gptoss-mxfp4")
    key = json.dumps([GEN_VERSION, GPTOSS])
    cached(bf, key, lambda: write_bf16_checkpoint(bf, GPTOSS, gptoss_tensors(GPTOSS), 2))
    cached(q, key + "mxfp4", lambda: write_mxfp4_checkpoint(bf, q))
    return [("gptoss", "bf16", bf), ("gptoss", "mxfp4", q)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--work", default=os.path.join(ROOT, "build", "quant-bench"),
                    help="where the checkpoints and plans go (kept between runs)")
    ap.add_argument("--models", default="deepseek,gptoss")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--out", default=os.path.join(HERE, "runtime", "results", "quant-bench.json"))
    ap.add_argument("--prepare-only", action="store_true", help="write the checkpoints and stop")
    ap.add_argument("--llama-bin", help="llama.cpp's build/bin (llama-bench)")
    ap.add_argument("--gguf", action="append", default=[], metavar="MODEL-FORMAT=FILE",
                    help="a GGUF of that variant for llama-bench, e.g. gptoss-mxfp4=F.gguf")
    a = ap.parse_args()
    ggufs = {}
    for g in a.gguf:
        key, _, path = g.partition("=")
        model, _, fmt = key.partition("-")
        if not path or not fmt:
            raise SystemExit(f"--gguf {g}: expected MODEL-FORMAT=FILE")
        ggufs[(model, fmt)] = path
    if bool(ggufs) != bool(a.llama_bin):
        raise SystemExit("--llama-bin and --gguf go together")
    bindir = os.path.join(a.build, "bin")
    threads = [int(t) for t in a.threads.split(",")]
    os.makedirs(a.work, exist_ok=True)
    if a.prepare_only:
        variants = []
        for m in a.models.split(","):
            variants += {"deepseek": prepare_deepseek, "gptoss": prepare_gptoss}[m](a.work, bindir)
        print(json.dumps(variants))
        return
    # The checkpoints are written by a child process: Linux carries a
    # process's peak RSS over fork and exec, so moe-run's peak_rss_bytes
    # would show this script's (it maps the checkpoints it quantizes).
    variants = json.loads(run([sys.executable, os.path.abspath(__file__), "--prepare-only",
                               "--work", a.work, "--models", a.models, "--build", a.build]))
    if not variants:
        raise SystemExit("nothing to run")
    plans = {}
    for model, fmt, ckpt in variants:
        plan = os.path.join(a.work, f"{model}-{fmt}.plan")
        run([os.path.join(bindir, "moe-compile"), ckpt, "-o", plan, "--target=cpu", "--dtype=bf16",
             "--max-seq-len=512"])
        plans[(model, fmt)] = (plan, ckpt)

    result = {**machine(), "new_tokens": a.new_tokens, "iters": a.iters,
              "rounds": a.rounds, "configs": {"deepseek": DEEPSEEK, "gptoss": GPTOSS}, "runs": []}
    keys = [(m, f, t) for (m, f) in plans for t in threads]
    for r in range(a.rounds):
        order = keys if r % 2 == 0 else keys[::-1]
        for model, fmt, t in order:
            plan, ckpt = plans[(model, fmt)]
            j = moe_run_bench(bindir, plan, [f"--weights={ckpt}"], t, a.iters, a.new_tokens)
            j.update(model=model, format=fmt, round=r, load=os.getloadavg()[0])
            result["runs"].append(j)
        for (model, fmt), path in ggufs.items():
            for t in threads:
                lj = json.loads(run([os.path.join(a.llama_bin, "llama-bench"), "-m", path,
                                     "-t", str(t), "-p", "0", "-n", str(a.new_tokens), "-d", "20",
                                     "-r", str(a.iters), "-o", "json"], stderr=subprocess.DEVNULL))
                ms = 1000.0 / statistics.median(lj[0]["samples_ts"])
                result.setdefault("llama_cpp", []).append(
                    {"model": model, "format": fmt, "threads": t, "round": r,
                     "decode_ms_per_token": ms, "model_type": lj[0].get("model_type")})
    result["load_after"] = os.getloadavg()

    def med(model, fmt, t, f):
        return statistics.median(f(j) for j in result["runs"]
                                 if (j["model"], j["format"], j["threads"]) == (model, fmt, t))

    rows = []
    for model, fmt, t in keys:
        dec = med(model, fmt, t, lambda j: j["decode_ms_per_token"]["median"])
        byt = med(model, fmt, t, lambda j: j["active_weight_bytes_per_token"])
        base = dec if fmt == "bf16" else med(model, "bf16", t, lambda j: j["decode_ms_per_token"]["median"])
        bbase = byt if fmt == "bf16" else med(model, "bf16", t, lambda j: j["active_weight_bytes_per_token"])
        rows.append({
            "model": model, "format": fmt, "threads": t, "decode_ms_per_token": dec,
            "decode_ms_per_token_all": [j["decode_ms_per_token"]["median"] for j in result["runs"]
                                        if (j["model"], j["format"], j["threads"]) == (model, fmt, t)],
            "decode_ms_per_token_best_process": min(
                j["decode_ms_per_token"]["median"] for j in result["runs"]
                if (j["model"], j["format"], j["threads"]) == (model, fmt, t)),
            "speedup_vs_bf16": base / dec, "bytes_per_token": byt, "bytes_ratio_vs_bf16": bbase / byt,
            "pct_of_floor": med(model, fmt, t, lambda j: j["decode_pct_of_floor"]),
            "read_bandwidth_gbs": med(model, fmt, t, lambda j: j["read_bandwidth_gbs"]["best"]),
            "prefill_ms": med(model, fmt, t, lambda j: j["prefill_ms"]["median"]),
            "weight_bytes": med(model, fmt, t, lambda j: j["weight_bytes"]),
            "peak_resident_bytes": med(model, fmt, t, lambda j: j["peak_resident_bytes"]),
            "peak_rss_bytes": med(model, fmt, t, lambda j: j["peak_rss_bytes"])})
    for w in rows:
        lms = [x["decode_ms_per_token"] for x in result.get("llama_cpp", [])
               if (x["model"], x["format"], x["threads"]) == (w["model"], w["format"], w["threads"])]
        if lms:
            w["llama_cpp_decode_ms_per_token"] = statistics.median(lms)
            w["speedup_vs_llama_cpp"] = w["llama_cpp_decode_ms_per_token"] / w["decode_ms_per_token"]
    result["summary"] = rows
    write_json(a.out, result)
    print(f"{result['cpu']}, {result['cores']} cores; {a.rounds} interleaved rounds, {a.iters} runs of "
          f"20 + {a.new_tokens} tokens per process")
    print(f"{'model':>8} {'weights':>7} {'thr':>3} {'decode ms/tok':>13} {'best':>6} {'vs bf16':>7} {'MB/tok':>7} "
          f"{'bytes x':>7} {'% floor':>7} {'GB/s':>5} {'weights MB':>10} {'peak res MB':>11} {'RSS MB':>7}")
    for w in rows:
        print(f"{w['model']:>8} {w['format']:>7} {w['threads']:>3} {w['decode_ms_per_token']:>13.2f} "
              f"{w['decode_ms_per_token_best_process']:>6.2f} "
              f"{w['speedup_vs_bf16']:>6.2f}x {w['bytes_per_token'] / 1e6:>7.1f} "
              f"{w['bytes_ratio_vs_bf16']:>6.2f}x {w['pct_of_floor']:>6.1f}% {w['read_bandwidth_gbs']:>5.1f} "
              f"{w['weight_bytes'] / 1e6:>10.0f} {w['peak_resident_bytes'] / 1e6:>11.0f} "
              f"{w['peak_rss_bytes'] / 1e6:>7.0f}")
    for w in rows:
        if "speedup_vs_llama_cpp" in w:
            print(f"{w['model']} {w['format']} {w['threads']} thread(s): llama.cpp "
                  f"{w['llama_cpp_decode_ms_per_token']:.2f} ms/token, ours "
                  f"{w['decode_ms_per_token']:.2f}: {w['speedup_vs_llama_cpp']:.2f}x")
    print(load_line(result, a.out))


if __name__ == "__main__":
    main()
