#!/usr/bin/python3
"""make-checkpoint.py CONFIG.json OUTDIR [--seed S] [--shard-gb G]

Writes a Hugging Face style checkpoint (config.json, sharded bf16
model-0000x-of-0000n.safetensors + model.safetensors.index.json) with random
weights for a Mixtral-shaped config such as ../shared/bench/mixtral-bench:
for benchmarks that must read weights from disk (expert streaming with a cold
page cache), where --random-weights never touches a file. Matrices are
N(0, 0.02), norms ones. Only model_type mixtral is supported.
"""
import argparse, json, os, shutil, struct
import numpy as np


def tensors(cfg):
    H, I, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or H // nh
    E = cfg["num_local_experts"]
    yield "model.embed_tokens.weight", (V, H), "normal"
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        yield p + "input_layernorm.weight", (H,), "ones"
        yield p + "self_attn.q_proj.weight", (nh * hd, H), "normal"
        yield p + "self_attn.k_proj.weight", (nkv * hd, H), "normal"
        yield p + "self_attn.v_proj.weight", (nkv * hd, H), "normal"
        yield p + "self_attn.o_proj.weight", (H, nh * hd), "normal"
        yield p + "post_attention_layernorm.weight", (H,), "ones"
        yield p + "block_sparse_moe.gate.weight", (E, H), "normal"
        for e in range(E):
            q = p + f"block_sparse_moe.experts.{e}."
            yield q + "w1.weight", (I, H), "normal"
            yield q + "w2.weight", (H, I), "normal"
            yield q + "w3.weight", (I, H), "normal"
    yield "model.norm.weight", (H,), "ones"
    if not cfg.get("tie_word_embeddings", False):
        yield "lm_head.weight", (V, H), "normal"


def bf16(rng, shape, kind):
    n = int(np.prod(shape))
    if kind == "ones":
        return np.full(n, 0x3F80, dtype=np.uint16)
    x = rng.standard_normal(n, dtype=np.float32) * np.float32(0.02)
    u = x.view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def write_shard(path, items):
    header, off = {}, 0
    for name, shape, data in items:
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + data.nbytes]}
        off += data.nbytes
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for _, _, data in items:
            f.write(data.tobytes())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shard-gb", type=float, default=1.0)
    a = ap.parse_args()
    cfg = json.load(open(a.config))
    if cfg.get("model_type") != "mixtral":
        raise SystemExit(f"error: {a.config}: model_type {cfg.get('model_type')!r} (expected 'mixtral')")
    os.makedirs(a.out, exist_ok=True)
    shutil.copy(a.config, os.path.join(a.out, "config.json"))
    rng = np.random.default_rng(a.seed)
    shards, cur, size = [], [], 0
    for name, shape, kind in tensors(cfg):
        data = bf16(rng, shape, kind)
        cur.append((name, shape, data))
        size += data.nbytes
        if size >= a.shard_gb * 1e9:
            shards.append(cur)
            cur, size = [], 0
    if cur:
        shards.append(cur)
    index = {"metadata": {}, "weight_map": {}}
    for i, items in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        write_shard(os.path.join(a.out, fname), items)
        for name, _, _ in items:
            index["weight_map"][name] = fname
    json.dump(index, open(os.path.join(a.out, "model.safetensors.index.json"), "w"), indent=1)
    print(f"{a.out}: {len(index['weight_map'])} tensors in {len(shards)} shards")


if __name__ == "__main__":
    main()
