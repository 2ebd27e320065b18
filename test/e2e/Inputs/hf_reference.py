#!/usr/bin/env python3
"""An independent numpy (float64) forward pass of Hugging Face transformers'
DeepseekV3ForCausalLM and GptOssForCausalLM, for checkpoints this suite
writes with configurations the shared fixtures do not cover.

usage: hf_reference.py CHECKPOINT_DIR --prompt-ids=1,2,3 [--new-tokens=N]
                       [--out=FILE] [--check=DUMP [--atol=A]]
       --out writes FILE (an expected.safetensors) in the fixtures' layout:
       input_ids [1,T] I64, logits [1,T,V] F32 (full forward of the prompt),
       generated_ids [1,T+N] I64 (greedy, full forward recomputed per step),
       and prints the smallest top1-top2 logit gap of the greedy steps (the
       margin within which an f32 runtime must pick the same tokens).
       --check compares moe-run's --dump=DUMP with the reference: identical
       generated_ids and logits within A (default 1e-5); prints one line
       starting "match" or "MISMATCH" (exit 1).

Each function follows the modeling code it names (transformers 4.57):
modeling_deepseek_v3.py, modeling_gpt_oss.py, modeling_rope_utils.py,
masking_utils.py. Quantized weights are dequantized as HF's reference does:
FP8 e4m3 value x its block's weight_scale_inv (integrations/finegrained_fp8.py)
and MXFP4 e2m1 value x 2^(scale - 127) (integrations/mxfp4.py).
"""
import argparse
import json
import math
import os
import struct
import sys

import numpy as np


# ---- checkpoint -----------------------------------------------------------

def _fp8_e4m3_table():
    # e4m3fn: 1 sign, 4 exponent (bias 7), 3 mantissa bits; no infinities,
    # S.1111.111 is NaN.
    t = np.zeros(256)
    for b in range(256):
        s, e, m = b >> 7, (b >> 3) & 15, b & 7
        if e == 15 and m == 7:
            v = math.nan
        elif e == 0:
            v = m / 8.0 * 2.0 ** -6
        else:
            v = (1 + m / 8.0) * 2.0 ** (e - 7)
        t[b] = -v if s else v
    return t


FP8 = _fp8_e4m3_table()
E2M1 = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
                 -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0])


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, v in header.items():
        if name == "__metadata__":
            continue
        a, b = v["data_offsets"]
        raw, dt = data[a:b], v["dtype"]
        if dt == "BF16":
            arr = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif dt == "F8_E4M3":
            arr = FP8[np.frombuffer(raw, np.uint8)]
        else:
            arr = np.frombuffer(raw, {"F32": np.float32, "F16": np.float16,
                                      "U8": np.uint8, "I64": np.int64}[dt])
        out[name] = arr.reshape(v["shape"]).astype(np.float64) if dt != "U8" else \
            arr.reshape(v["shape"])
    return out


def load_checkpoint(d):
    index = os.path.join(d, "model.safetensors.index.json")
    files = sorted(set(json.load(open(index))["weight_map"].values())) \
        if os.path.exists(index) else ["model.safetensors"]
    t = {}
    for f in files:
        t.update(read_safetensors(os.path.join(d, f)))
    return t


def dequantize(t, config):
    """FP8 block-scaled and MXFP4 tensors as the dense weights HF computes
    with (the FP8 block shape from quantization_config.weight_block_size)."""
    q = config.get("quantization_config") or {}
    bn, bk = q.get("weight_block_size") or [128, 128]
    w = {}
    for name, a in t.items():
        if name.endswith("_scale_inv") or name.endswith("_scales"):
            continue
        if name + "_scale_inv" in t:  # "x.weight" + "x.weight_scale_inv"
            s = t[name + "_scale_inv"]
            assert s.shape == (-(-a.shape[0] // bn), -(-a.shape[1] // bk)), name
            full = np.repeat(np.repeat(s, bn, 0), bk, 1)[:a.shape[0], :a.shape[1]]
            w[name] = a * full
        elif name.endswith("_blocks"):
            base = name[:-len("_blocks")]
            scales = t[base + "_scales"].astype(np.int64) - 127
            lo, hi = E2M1[a & 15], E2M1[a >> 4]
            vals = np.stack([lo, hi], -1).reshape(*a.shape[:-1], 32)  # element 2j low nibble
            vals = vals * np.ldexp(1.0, scales)[..., None]
            # [E, R, G, 32] -> [E, R, G*32]; HF's dequantized parameter is its
            # transpose, [E, G*32, R] (gate_up_proj [E, H, 2I], down [E, I, H]).
            w[base] = vals.reshape(*a.shape[:-2], -1).transpose(0, 2, 1)
        else:
            w[name] = a
    return w


# ---- shared pieces --------------------------------------------------------

def rms_norm(x, w, eps):
    return w * (x / np.sqrt((x * x).mean(-1, keepdims=True) + eps))


def linear(x, w, b=None):
    y = x @ w.T
    return y + b if b is not None else y


def silu(x):
    return x / (1 + np.exp(-x))


def softmax(x, axis=-1):
    x = x - x.max(axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis, keepdims=True)


def rope_frequencies(c, dim):
    """(inv_freq, attention_scaling) of modeling_rope_utils for the default
    and yarn rope types."""
    params = c.get("rope_parameters") or c.get("rope_scaling") or {}
    base = params.get("rope_theta", c.get("rope_theta", 10000.0))
    kind = params.get("rope_type", params.get("type", "default"))
    inv = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    if kind == "default":
        return inv, 1.0
    assert kind == "yarn", kind
    factor = params["factor"]
    orig = params.get("original_max_position_embeddings") or c["max_position_embeddings"]

    def get_mscale(scale, mscale=1.0):
        return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0

    att = params.get("attention_factor")
    if att is None:
        m, mad = params.get("mscale"), params.get("mscale_all_dim")
        att = get_mscale(factor, m) / get_mscale(factor, mad) if m and mad else get_mscale(factor)
    beta_fast, beta_slow = params.get("beta_fast") or 32, params.get("beta_slow") or 1

    def corr(rot):
        return dim * math.log(orig / (rot * 2 * math.pi)) / (2 * math.log(base))

    low, high = corr(beta_fast), corr(beta_slow)
    if params.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = np.clip((np.arange(dim // 2) - low) / (high - low), 0, 1)
    extra = 1 - ramp
    pos = base ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    return (1 / (factor * pos)) * (1 - extra) + (1 / pos) * extra, att


def cos_sin(c, dim, T):
    inv, att = rope_frequencies(c, dim)
    f = np.arange(T)[:, None] * inv[None, :]
    emb = np.concatenate([f, f], -1)
    return np.cos(emb) * att, np.sin(emb) * att


def rotate_half(x):
    h = x.shape[-1] // 2
    return np.concatenate([-x[..., h:], x[..., :h]], -1)


def attend(q, k, v, scale, mask, sinks=None):
    """q [H,T,d], k [H,T,d], v [H,T,dv]; mask [T,T] bool (True = attend)."""
    s = np.einsum("htd,hsd->hts", q, k) * scale
    s = np.where(mask[None], s, -np.inf)
    if sinks is not None:
        s = np.concatenate([s, np.broadcast_to(sinks[:, None, None], s.shape[:2] + (1,))], -1)
        p = softmax(s)[..., :-1]
    else:
        p = softmax(s)
    return np.einsum("hts,hsd->htd", p, v)


# ---- deepseek_v3 ----------------------------------------------------------

def deepseek_forward(c, w, ids):
    T, H = len(ids), c["num_attention_heads"]
    nope, rope, vd = c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"]
    kvl, eps = c["kv_lora_rank"], c["rms_norm_eps"]
    scaling = (nope + rope) ** -0.5
    rs = c.get("rope_scaling")
    if rs is not None and rs.get("mscale_all_dim", 0):
        m = 0.1 * rs["mscale_all_dim"] * math.log(rs["factor"]) + 1.0 if rs["factor"] > 1 else 1.0
        scaling *= m * m
    cos, sin = cos_sin(c, rope, T)
    mask = np.tril(np.ones((T, T), bool))
    x = w["model.embed_tokens.weight"][ids]
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        a = p + "self_attn."
        h = rms_norm(x, w[p + "input_layernorm.weight"], eps)
        if c.get("q_lora_rank"):
            q = linear(rms_norm(linear(h, w[a + "q_a_proj.weight"]),
                                w[a + "q_a_layernorm.weight"], eps), w[a + "q_b_proj.weight"])
        else:
            q = linear(h, w[a + "q_proj.weight"])
        q = q.reshape(T, H, nope + rope).transpose(1, 0, 2)
        q_pass, q_rot = q[..., :nope], q[..., nope:]
        ckv = linear(h, w[a + "kv_a_proj_with_mqa.weight"])
        k_pass, k_rot = ckv[:, :kvl], ckv[:, kvl:][None]
        kv = linear(rms_norm(k_pass, w[a + "kv_a_layernorm.weight"], eps), w[a + "kv_b_proj.weight"])
        kv = kv.reshape(T, H, nope + vd).transpose(1, 0, 2)
        k_pass, v = kv[..., :nope], kv[..., nope:]
        if c.get("rope_interleave", True):
            def deinterleave(t):
                return t.reshape(*t.shape[:-1], rope // 2, 2).swapaxes(-1, -2).reshape(t.shape)
            q_rot, k_rot = deinterleave(q_rot), deinterleave(k_rot)
        q_rot = q_rot * cos + rotate_half(q_rot) * sin
        k_rot = k_rot * cos + rotate_half(k_rot) * sin
        k_rot = np.broadcast_to(k_rot, (H, T, rope))
        o = attend(np.concatenate([q_pass, q_rot], -1), np.concatenate([k_pass, k_rot], -1),
                   v, scaling, mask)
        x = x + linear(o.transpose(1, 0, 2).reshape(T, H * vd), w[a + "o_proj.weight"])
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)

        def mlp(q, y):
            return linear(silu(linear(y, w[q + "gate_proj.weight"])) * linear(y, w[q + "up_proj.weight"]),
                          w[q + "down_proj.weight"])

        if i < c.get("first_k_dense_replace", 3):
            x = x + mlp(p + "mlp.", h)
            continue
        E, K = c["n_routed_experts"], c["num_experts_per_tok"]
        G, TG = c.get("n_group", 8), c.get("topk_group", 4)
        scores = 1 / (1 + np.exp(-linear(h, w[p + "mlp.gate.weight"])))
        choice = scores + w[p + "mlp.gate.e_score_correction_bias"][None]
        out = np.zeros_like(h)
        for t in range(T):
            grp = np.sort(choice[t].reshape(G, E // G), -1)[:, -2:].sum(-1)
            keep = np.argsort(-grp, kind="stable")[:TG]
            sel = np.where(np.repeat(np.isin(np.arange(G), keep), E // G), choice[t], 0.0)
            top = np.argsort(-sel, kind="stable")[:K]
            wt = scores[t, top]
            if c.get("norm_topk_prob", True):
                wt = wt / (wt.sum() + 1e-20)
            wt = wt * c.get("routed_scaling_factor", 2.5)
            for e, we in zip(top, wt):
                out[t] += we * mlp(p + f"mlp.experts.{e}.", h[t:t + 1])[0]
        x = x + out + mlp(p + "mlp.shared_experts.", h)
    x = rms_norm(x, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if c.get("tie_word_embeddings") else w["lm_head.weight"]
    return x @ head.T


# ---- gpt_oss --------------------------------------------------------------

def gptoss_forward(c, w, ids):
    T, H, KV = len(ids), c["num_attention_heads"], c["num_key_value_heads"]
    hd = c.get("head_dim") or c["hidden_size"] // H
    eps = c["rms_norm_eps"]
    n = c["num_hidden_layers"]
    types = c.get("layer_types") or ["sliding_attention" if (i + 1) % 2 else "full_attention"
                                     for i in range(n)]
    window = c.get("sliding_window", 128)
    cos, sin = cos_sin(c, hd, T)
    qi, ki = np.arange(T)[:, None], np.arange(T)[None, :]
    full = ki <= qi
    sliding = full & (ki > qi - window)
    limit, alpha = c.get("swiglu_limit", 7.0), 1.702
    x = w["model.embed_tokens.weight"][ids]
    for i in range(n):
        p = f"model.layers.{i}."
        a = p + "self_attn."
        h = rms_norm(x, w[p + "input_layernorm.weight"], eps)
        q = linear(h, w[a + "q_proj.weight"], w.get(a + "q_proj.bias")).reshape(T, H, hd).transpose(1, 0, 2)
        k = linear(h, w[a + "k_proj.weight"], w.get(a + "k_proj.bias")).reshape(T, KV, hd).transpose(1, 0, 2)
        v = linear(h, w[a + "v_proj.weight"], w.get(a + "v_proj.bias")).reshape(T, KV, hd).transpose(1, 0, 2)

        def rot(t):  # _apply_rotary_emb: halves, cos/sin of the first half
            h2 = hd // 2
            x1, x2 = t[..., :h2], t[..., h2:]
            cc, ss = cos[:, :h2], sin[:, :h2]
            return np.concatenate([x1 * cc - x2 * ss, x2 * cc + x1 * ss], -1)

        q, k = rot(q), rot(k)
        k, v = np.repeat(k, H // KV, 0), np.repeat(v, H // KV, 0)
        m = sliding if types[i] == "sliding_attention" else full
        o = attend(q, k, v, hd ** -0.5, m, w[a + "sinks"])
        x = x + linear(o.transpose(1, 0, 2).reshape(T, H * hd), w[a + "o_proj.weight"],
                       w.get(a + "o_proj.bias"))
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        logits = linear(h, w[p + "mlp.router.weight"], w[p + "mlp.router.bias"])
        K = c["num_experts_per_tok"]
        ex = p + "mlp.experts."
        out = np.zeros_like(h)
        for t in range(T):
            top = np.argsort(-logits[t], kind="stable")[:K]
            wt = softmax(logits[t, top])
            for e, we in zip(top, wt):
                gu = h[t] @ w[ex + "gate_up_proj"][e] + w[ex + "gate_up_proj_bias"][e]
                g, u = np.minimum(gu[::2], limit), np.clip(gu[1::2], -limit, limit)
                y = ((u + 1) * g / (1 + np.exp(-alpha * g))) @ w[ex + "down_proj"][e] + \
                    w[ex + "down_proj_bias"][e]
                out[t] += we * y
        x = x + out
    x = rms_norm(x, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if c.get("tie_word_embeddings") else w["lm_head.weight"]
    return x @ head.T


FORWARD = {"deepseek_v3": deepseek_forward, "gpt_oss": gptoss_forward}


def write_expected(path, ids, logits, generated):
    entries = [("generated_ids", "I64", [1, len(generated)], np.array(generated, np.int64).tobytes()),
               ("input_ids", "I64", [1, len(ids)], np.array(ids, np.int64).tobytes()),
               ("logits", "F32", [1, *logits.shape], logits.astype(np.float32).tobytes())]
    header, off, blobs = {}, 0, []
    for name, dt, shape, data in entries:
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(data)]}
        off += len(data)
        blobs.append(data)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("--prompt-ids", required=True)
    ap.add_argument("--out")
    ap.add_argument("--check")
    ap.add_argument("--atol", type=float, default=1e-5)
    ap.add_argument("--new-tokens", type=int, default=8)
    a = ap.parse_args()
    c = json.load(open(os.path.join(a.checkpoint, "config.json")))
    forward = FORWARD.get(c["model_type"])
    if not forward:
        sys.exit(f"hf_reference.py: no reference for model_type {c['model_type']}")
    w = dequantize(load_checkpoint(a.checkpoint), c)
    ids = [int(x) for x in a.prompt_ids.split(",")]
    logits = forward(c, w, ids)
    seq, gap = list(ids), math.inf
    for _ in range(a.new_tokens):
        last = forward(c, w, seq)[-1]
        top2 = np.sort(last)[-2:]
        gap = min(gap, top2[1] - top2[0])
        seq.append(int(np.argmax(last)))
    if a.out:
        write_expected(a.out, ids, logits, seq)
    print(f"reference: {len(seq) - len(ids)} tokens {seq[len(ids):]}, "
          f"smallest top1-top2 gap {gap:.3g}")
    if a.check:
        got = read_safetensors(a.check)
        gen = [int(x) for x in got["generated_ids"].reshape(-1)]
        if gen != seq:
            print(f"MISMATCH generated_ids: reference {seq} runtime {gen}")
            return 1
        err = float(np.abs(got["logits"].reshape(logits.shape) - logits).max())
        if err > a.atol:
            print(f"MISMATCH logits: max abs err {err:.3g} > {a.atol}")
            return 1
        print(f"match: {len(seq) - len(ids)} tokens, logits max abs err {err:.2g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
