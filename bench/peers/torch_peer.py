#!/usr/bin/python3
"""PyTorch-eager peer for the CPU benchmarks: Hugging Face semantics written as
plain PyTorch (the way HF's modeling code does it), with a KV cache.

  torch_peer.py check FIXTURE_DIR            # logits + 16 greedy tokens vs expected.safetensors
  torch_peer.py bench CONFIG.json [--dtype bf16|f32] [--threads N] [--prompt-len 20]
                [--new-tokens 64] [--seed S] [--json]

`bench` builds random weights of the config's shape (the numbers do not depend
on the values: every token routes to top_k experts whatever they are) and
reports prefill ms and decode ms/token (median/min/max) for batch 1.
Needs Debian's python3-torch (1.13); not part of the build or of CI.
"""
import argparse, json, math, os, statistics, struct, sys, time

import numpy as np
import torch
import torch.nn.functional as F

# ---------------------------------------------------------------- safetensors


def read_safetensors(path):
    dt = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        if v["dtype"] == "BF16":
            raw = np.frombuffer(data[a:b], dtype=np.uint16).astype(np.uint32) << 16
            t = torch.from_numpy(raw.view(np.float32).reshape(v["shape"]).copy())
            out[k] = t.to(torch.bfloat16)
        else:
            out[k] = torch.from_numpy(np.frombuffer(data[a:b], dtype=dt[v["dtype"]]).reshape(v["shape"]).copy())
    return out


def load_checkpoint(d):
    idx = os.path.join(d, "model.safetensors.index.json")
    if os.path.exists(idx):
        files = sorted(set(json.load(open(idx))["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    w = {}
    for f in files:
        w.update(read_safetensors(os.path.join(d, f)))
    return w

# ---------------------------------------------------------------- model


def rms_norm(x, w, eps):
    dt = x.dtype
    x = x.float()
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return w * x.to(dt)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class Model:
    """One class for gpt2, mixtral, qwen2_moe, qwen3_moe, olmoe (HF semantics)."""

    def __init__(self, cfg, w, dtype):
        self.c, self.t = cfg, cfg["model_type"]
        self.w = {k: v.to(dtype) for k, v in w.items()}
        self.dtype = dtype
        c = cfg
        if self.t == "gpt2":
            self.L, self.D, self.H = c["n_layer"], c["n_embd"], c["n_head"]
            self.KV, self.hd = self.H, self.D // self.H
        else:
            self.L, self.D, self.H = c["num_hidden_layers"], c["hidden_size"], c["num_attention_heads"]
            self.KV = c.get("num_key_value_heads") or self.H
            self.hd = c.get("head_dim") or self.D // self.H
            rp = c.get("rope_parameters") or {}
            self.theta = rp.get("rope_theta", c.get("rope_theta", 10000.0))
            self.eps = c["rms_norm_eps"]
            self.inv_freq = 1.0 / (self.theta ** (torch.arange(0, self.hd, 2, dtype=torch.float32) / self.hd))

    def W(self, name):
        return self.w[name]

    def is_moe(self, i):
        c = self.c
        if self.t == "gpt2":
            return False
        if self.t == "mixtral" or self.t == "olmoe":
            return True
        step = c.get("decoder_sparse_step", 1)
        return i not in (c.get("mlp_only_layers") or []) and c.get("num_experts", 0) > 0 and (i + 1) % step == 0

    def rope(self, x, pos):
        freqs = pos[:, None].float() * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
        return x * cos[None, :, None, :] + rotate_half(x) * sin[None, :, None, :]

    def attention(self, q, k, v, cache, i, pos):
        # q [1,T,H,hd], k/v [1,T,KV,hd]; cache holds [1,KV,S,hd]
        k, v = k.transpose(1, 2), v.transpose(1, 2)
        if i in cache:
            k = torch.cat([cache[i][0], k], dim=2)
            v = torch.cat([cache[i][1], v], dim=2)
        cache[i] = (k, v)
        rep = self.H // self.KV
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        q = q.transpose(1, 2)
        s = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.hd)
        S, T = k.shape[2], q.shape[2]
        mask = torch.arange(S)[None, :] > pos[:, None]
        s = s.masked_fill(mask[None, None], float("-inf"))
        p = torch.softmax(s.float(), dim=-1).to(q.dtype)
        o = torch.matmul(p, v).transpose(1, 2).reshape(1, T, self.H * self.hd)
        return o

    def mlp(self, x, pre):
        g = F.linear(x, self.W(pre + "gate_proj.weight"))
        u = F.linear(x, self.W(pre + "up_proj.weight"))
        return F.linear(F.silu(g) * u, self.W(pre + "down_proj.weight"))

    def moe(self, x, i):
        c, t = self.c, self.t
        p = f"model.layers.{i}."
        if t == "mixtral":
            gate, ex = p + "block_sparse_moe.gate.weight", p + "block_sparse_moe.experts."
            names = ("w1", "w3", "w2")
            norm = True
        else:
            gate, ex = p + "mlp.gate.weight", p + "mlp.experts."
            names = ("gate_proj", "up_proj", "down_proj")
            norm = c.get("norm_topk_prob", False)
        k = c["num_experts_per_tok"]
        x2 = x.reshape(-1, self.D)
        logits = F.linear(x2, self.W(gate))
        probs = torch.softmax(logits, dim=-1, dtype=torch.float)
        tw, ti = torch.topk(probs, k, dim=-1)
        if norm:
            tw = tw / tw.sum(dim=-1, keepdim=True)
        tw = tw.to(x.dtype)
        out = torch.zeros_like(x2)
        for e in torch.unique(ti).tolist():
            rows, slot = torch.where(ti == e)
            xe = x2[rows]
            pre = f"{ex}{e}."
            h = F.silu(F.linear(xe, self.W(pre + names[0] + ".weight"))) * F.linear(xe, self.W(pre + names[1] + ".weight"))
            y = F.linear(h, self.W(pre + names[2] + ".weight")) * tw[rows, slot, None]
            out.index_add_(0, rows, y)
        if t == "qwen2_moe":
            s = self.mlp(x2, p + "mlp.shared_expert.")
            s = torch.sigmoid(F.linear(x2, self.W(p + "mlp.shared_expert_gate.weight"))) * s
            out = out + s
        return out.reshape(x.shape)

    def forward(self, ids, pos, cache):
        """ids, pos: 1-D long tensors of the T new tokens; returns logits [T, V]."""
        if self.t == "gpt2":
            return self.forward_gpt2(ids, pos, cache)
        c, T = self.c, ids.shape[0]
        h = self.W("model.embed_tokens.weight")[ids][None]
        for i in range(self.L):
            p = f"model.layers.{i}."
            x = rms_norm(h, self.W(p + "input_layernorm.weight"), self.eps)
            a = p + "self_attn."

            def proj(n):
                b = self.w.get(a + n + ".bias")
                return F.linear(x, self.W(a + n + ".weight"), b)
            q, k, v = proj("q_proj"), proj("k_proj"), proj("v_proj")
            if self.t == "olmoe":
                q = rms_norm(q, self.W(a + "q_norm.weight"), self.eps)
                k = rms_norm(k, self.W(a + "k_norm.weight"), self.eps)
            q = q.view(1, T, self.H, self.hd)
            k = k.view(1, T, self.KV, self.hd)
            v = v.view(1, T, self.KV, self.hd)
            if self.t == "qwen3_moe":
                q = rms_norm(q, self.W(a + "q_norm.weight"), self.eps)
                k = rms_norm(k, self.W(a + "k_norm.weight"), self.eps)
            q, k = self.rope(q, pos), self.rope(k, pos)
            o = self.attention(q, k, v, cache, i, pos)
            h = h + F.linear(o, self.W(a + "o_proj.weight"))
            x = rms_norm(h, self.W(p + "post_attention_layernorm.weight"), self.eps)
            h = h + (self.moe(x, i) if self.is_moe(i) else self.mlp(x, p + "mlp."))
        h = rms_norm(h, self.W("model.norm.weight"), self.eps)
        lm = self.w.get("lm_head.weight")
        if lm is None:
            lm = self.W("model.embed_tokens.weight")
        return F.linear(h[0], lm)

    def forward_gpt2(self, ids, pos, cache):
        c, T, eps = self.c, ids.shape[0], self.c["layer_norm_epsilon"]
        ln = lambda x, n: F.layer_norm(x, (self.D,), self.W(n + ".weight"), self.W(n + ".bias"), eps)
        h = (self.W("transformer.wte.weight")[ids] + self.W("transformer.wpe.weight")[pos])[None]
        for i in range(self.L):
            p = f"transformer.h.{i}."
            x = ln(h, p + "ln_1")
            qkv = torch.addmm(self.W(p + "attn.c_attn.bias"), x[0], self.W(p + "attn.c_attn.weight"))
            q, k, v = qkv.split(self.D, dim=-1)
            sh = (1, T, self.H, self.hd)
            o = self.attention(q.reshape(sh), k.reshape(sh), v.reshape(sh), cache, i, pos)
            h = h + torch.addmm(self.W(p + "attn.c_proj.bias"), o[0], self.W(p + "attn.c_proj.weight"))[None]
            x = ln(h, p + "ln_2")
            m = F.gelu(torch.addmm(self.W(p + "mlp.c_fc.bias"), x[0], self.W(p + "mlp.c_fc.weight")), approximate="tanh")
            h = h + torch.addmm(self.W(p + "mlp.c_proj.bias"), m, self.W(p + "mlp.c_proj.weight"))[None]
        h = ln(h, "transformer.ln_f")
        return F.linear(h[0], self.W("transformer.wte.weight"))

    def generate(self, prompt, n_new):
        cache = {}
        ids = torch.tensor(prompt, dtype=torch.long)
        logits = self.forward(ids, torch.arange(len(prompt)), cache)
        out = list(prompt)
        nxt = int(torch.argmax(logits[-1]))
        for _ in range(n_new):
            out.append(nxt)
            if len(out) == len(prompt) + n_new:
                break
            l = self.forward(torch.tensor([nxt]), torch.tensor([len(out) - 1]), cache)
            nxt = int(torch.argmax(l[-1]))
        return logits, out

# ---------------------------------------------------------------- random weights


def random_weights(cfg, dtype, seed):
    """Weights of a Mixtral/Qwen-MoE-shaped config (names as HF)."""
    g = torch.Generator().manual_seed(seed)
    D, I, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    H, KV = cfg["num_attention_heads"], cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
    hd = cfg.get("head_dim") or D // H
    E = cfg.get("num_local_experts") or cfg.get("num_experts")
    w = {}

    def rnd(*shape):
        return (torch.randn(*shape, generator=g) * 0.02).to(dtype)
    w["model.embed_tokens.weight"] = rnd(V, D)
    w["lm_head.weight"] = rnd(V, D)
    w["model.norm.weight"] = torch.ones(D, dtype=dtype)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = torch.ones(D, dtype=dtype)
        w[p + "post_attention_layernorm.weight"] = torch.ones(D, dtype=dtype)
        w[p + "self_attn.q_proj.weight"] = rnd(H * hd, D)
        w[p + "self_attn.k_proj.weight"] = rnd(KV * hd, D)
        w[p + "self_attn.v_proj.weight"] = rnd(KV * hd, D)
        w[p + "self_attn.o_proj.weight"] = rnd(D, H * hd)
        w[p + "block_sparse_moe.gate.weight"] = rnd(E, D)
        for e in range(E):
            q = f"{p}block_sparse_moe.experts.{e}."
            w[q + "w1.weight"], w[q + "w3.weight"], w[q + "w2.weight"] = rnd(I, D), rnd(I, D), rnd(D, I)
    return w

# ---------------------------------------------------------------- commands


def cmd_check(a):
    cfg = json.load(open(os.path.join(a.dir, "config.json")))
    m = Model(cfg, load_checkpoint(a.dir), torch.float32)
    exp = read_safetensors(os.path.join(a.dir, "expected.safetensors"))
    prompt = exp["input_ids"].reshape(-1).tolist()
    with torch.no_grad():
        logits, out = m.generate(prompt, 16)
    err = float((logits.double() - exp["logits"].reshape(logits.shape).double()).abs().max())
    same = out == exp["generated_ids"].reshape(-1).tolist()
    print(f"{os.path.basename(a.dir.rstrip('/'))}: logits max abs err {err:.2e}, tokens {'match' if same else 'DIFFER'}")
    return 0 if err < 1e-3 and same else 1


def cmd_bench(a):
    torch.set_num_threads(a.threads)
    cfg = json.load(open(a.config))
    dtype = {"bf16": torch.bfloat16, "f32": torch.float32}[a.dtype]
    m = Model(cfg, random_weights(cfg, dtype, a.seed), dtype)
    prompt = [(7 * i + 3) % cfg["vocab_size"] for i in range(a.prompt_len)]
    pre, dec = [], []
    with torch.no_grad():
        for it in range(a.iters + 1):
            cache = {}
            t0 = time.perf_counter()
            l = m.forward(torch.tensor(prompt), torch.arange(len(prompt)), cache)
            t1 = time.perf_counter()
            nxt, steps = int(torch.argmax(l[-1])), []
            for j in range(a.new_tokens):
                s = time.perf_counter()
                l = m.forward(torch.tensor([nxt]), torch.tensor([len(prompt) + j]), cache)
                nxt = int(torch.argmax(l[-1]))
                steps.append((time.perf_counter() - s) * 1e3)
            if it > 0:  # the first run warms up
                pre.append((t1 - t0) * 1e3)
                dec.extend(steps)
    r = {"system": f"pytorch {torch.__version__} eager", "dtype": a.dtype, "threads": a.threads,
         "prompt_len": a.prompt_len, "new_tokens": a.new_tokens,
         "prefill_ms": statistics.median(pre), "decode_ms_median": statistics.median(dec),
         "decode_ms_min": min(dec), "decode_ms_max": max(dec)}
    if a.json:
        print(json.dumps(r))
    else:
        print(f"{r['system']} {a.dtype} {a.threads}t: prefill {r['prefill_ms']:.1f} ms, decode "
              f"{r['decode_ms_median']:.2f} ms/token (min {r['decode_ms_min']:.2f}, max {r['decode_ms_max']:.2f})")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check")
    c.add_argument("dir")
    b = sub.add_parser("bench")
    b.add_argument("config")
    b.add_argument("--dtype", default="bf16", choices=["bf16", "f32"])
    b.add_argument("--threads", type=int, default=1)
    b.add_argument("--prompt-len", type=int, default=20)
    b.add_argument("--new-tokens", type=int, default=64)
    b.add_argument("--iters", type=int, default=1)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--json", action="store_true")
    a = ap.parse_args()
    return cmd_check(a) if a.cmd == "check" else cmd_bench(a)


if __name__ == "__main__":
    sys.exit(main())
