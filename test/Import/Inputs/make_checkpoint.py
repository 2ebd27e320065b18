#!/usr/bin/env python3
"""Writes a tiny Hugging Face-style checkpoint directory for importer tests.

usage: make_checkpoint.py ARCH OUTDIR [--dtype F32|BF16|F16] [--shards N]
                          [--variant NAME] [--bare-config]

ARCH: qwen3_moe, olmoe, gpt_oss, deepseek_v3, llama, mistral, qwen2, qwen3. The
tensor names and
config keys are those of the transformers modeling code for ARCH; the data is
random (numpy, fixed seed). --variant breaks the checkpoint in one way for
the error tests (see VARIANTS). --bare-config writes only config.json.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np

VARIANTS = [
    "ok", "missing-tensor", "wrong-shape", "wrong-dtype", "extra-tensor",
    "bad-offsets", "short-header", "bad-header-json", "overlap",
    "index-wrong-shard", "index-missing-shard", "topk-too-large",
    "bad-rope", "clip-qkv", "bad-model-type", "heads-not-divisible",
    # gpt_oss: every layer full attention; an unknown layer type; a zero
    # window; no attention sinks; YaRN RoPE as published.
    "all-full", "bad-layer-type", "zero-window", "missing-sinks", "yarn",
    # deepseek_v3: q_proj instead of the q LoRA; one expert group; plain
    # RoPE (no YaRN, no softmax mscale); and the bad configurations and
    # checkpoints: n_group not dividing the experts, topk_group > n_group,
    # no e_score_correction_bias, an unsupported rope type; plus a stored
    # multi-token-prediction layer that is skipped.
    "no-q-lora", "one-group", "no-yarn", "bad-n-group", "bad-topk-group",
    "missing-score-bias", "mtp-layer",
]
# deepseek_v3's MLA and routing sizes.
QL, KVL, NOPE, ROPE, VD, E_DS = 12, 10, 4, 4, 6, 8

H, KV, HD, D, V, P, E, K = 2, 1, 8, 16, 32, 64, 4, 2
DENSE_I, EXPERT_I = 24, 8


def config_for(arch):
    c = {
        "architectures": ["X"], "model_type": arch, "hidden_size": D,
        "num_hidden_layers": 2, "num_attention_heads": H,
        "num_key_value_heads": KV, "vocab_size": V,
        "max_position_embeddings": P, "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0, "tie_word_embeddings": False,
        "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2,
        "torch_dtype": "float32", "initializer_range": 0.02,
    }
    if arch == "qwen3_moe":
        # head_dim differs from hidden / heads; layer 1 is dense (mlp_only_layers).
        c.update(head_dim=12, intermediate_size=DENSE_I,
                 moe_intermediate_size=EXPERT_I, num_experts=E,
                 num_experts_per_tok=K, norm_topk_prob=True,
                 decoder_sparse_step=1, mlp_only_layers=[1],
                 attention_bias=False, use_sliding_window=False,
                 sliding_window=None)
    elif arch == "olmoe":
        c.update(intermediate_size=EXPERT_I, num_experts=E,
                 num_experts_per_tok=K, norm_topk_prob=False, clip_qkv=None,
                 attention_bias=False, tie_word_embeddings=True)
    elif arch == "gpt_oss":
        # No layer_types and no sliding_window: GptOssConfig's defaults
        # (sliding layers alternate with full ones, window 128).
        c.update(head_dim=HD, intermediate_size=EXPERT_I,
                 num_local_experts=E, num_experts_per_tok=K,
                 attention_bias=True, swiglu_limit=5.0, rope_theta=150000.0)
    elif arch == "deepseek_v3":
        # Layer 0 dense (first_k_dense_replace), layers 1-2 MoE; YaRN with
        # mscale_all_dim as DeepSeek-V3 publishes it.
        c.update(num_hidden_layers=3, num_key_value_heads=H, head_dim=ROPE,
                 q_lora_rank=QL, kv_lora_rank=KVL, qk_nope_head_dim=NOPE,
                 qk_rope_head_dim=ROPE, qk_head_dim=NOPE + ROPE,
                 v_head_dim=VD, rope_interleave=True, intermediate_size=DENSE_I,
                 moe_intermediate_size=EXPERT_I, n_routed_experts=E_DS,
                 n_shared_experts=2, num_experts_per_tok=K, n_group=4,
                 topk_group=2, norm_topk_prob=True, routed_scaling_factor=2.5,
                 first_k_dense_replace=1, attention_bias=False,
                 rope_scaling={"type": "yarn", "factor": 40.0, "beta_fast": 32.0,
                               "beta_slow": 1.0, "mscale": 1.0,
                               "mscale_all_dim": 1.0,
                               "original_max_position_embeddings": 16})
    elif arch == "qwen3":
        c.update(head_dim=HD, intermediate_size=DENSE_I, attention_bias=False)
    elif arch in ("llama", "mistral", "qwen2"):
        c.update(intermediate_size=DENSE_I)
        if arch == "mistral":
            c["sliding_window"] = 16
        if arch == "llama":
            c.update(attention_bias=False, mlp_bias=False, rope_scaling=None)
    else:
        sys.exit(f"unknown arch {arch}")
    return c


def deepseek_tensors(c, t, layers):
    for i in layers:
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = [D]
        t[p + "post_attention_layernorm.weight"] = [D]
        a = p + "self_attn."
        if c["q_lora_rank"]:
            t[a + "q_a_proj.weight"] = [QL, D]
            t[a + "q_a_layernorm.weight"] = [QL]
            t[a + "q_b_proj.weight"] = [H * (NOPE + ROPE), QL]
        else:
            t[a + "q_proj.weight"] = [H * (NOPE + ROPE), D]
        t[a + "kv_a_proj_with_mqa.weight"] = [KVL + ROPE, D]
        t[a + "kv_a_layernorm.weight"] = [KVL]
        t[a + "kv_b_proj.weight"] = [H * (NOPE + VD), KVL]
        t[a + "o_proj.weight"] = [D, H * VD]
        if i < c["first_k_dense_replace"]:
            for n, shape in (("gate", [DENSE_I, D]), ("up", [DENSE_I, D]),
                             ("down", [D, DENSE_I])):
                t[p + f"mlp.{n}_proj.weight"] = shape
            continue
        t[p + "mlp.gate.weight"] = [E_DS, D]
        t[p + "mlp.gate.e_score_correction_bias"] = [E_DS]
        si = EXPERT_I * c["n_shared_experts"]
        for n, shape in (("gate", [si, D]), ("up", [si, D]), ("down", [D, si])):
            t[p + f"mlp.shared_experts.{n}_proj.weight"] = shape
        for e in range(E_DS):
            q = p + f"mlp.experts.{e}."
            t[q + "gate_proj.weight"] = [EXPERT_I, D]
            t[q + "up_proj.weight"] = [EXPERT_I, D]
            t[q + "down_proj.weight"] = [D, EXPERT_I]
    return t


def tensors_for(arch, c):
    # Sizes --set may change (gpt_oss's experts too); the rest are fixed.
    D, H, KV, V = (c["hidden_size"], c["num_attention_heads"],
                   c["num_key_value_heads"], c["vocab_size"])
    hd = c.get("head_dim", D // H)
    t = {"model.embed_tokens.weight": [V, D], "model.norm.weight": [D]}
    if not c["tie_word_embeddings"]:
        t["lm_head.weight"] = [V, D]
    if arch == "deepseek_v3":
        return deepseek_tensors(c, t, range(c["num_hidden_layers"]))
    moe = arch in ("qwen3_moe", "olmoe")
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = [D]
        t[p + "post_attention_layernorm.weight"] = [D]
        t[p + "self_attn.q_proj.weight"] = [H * hd, D]
        t[p + "self_attn.k_proj.weight"] = [KV * hd, D]
        t[p + "self_attn.v_proj.weight"] = [KV * hd, D]
        t[p + "self_attn.o_proj.weight"] = [D, H * hd]
        if arch == "qwen2":
            for n, rows in (("q", H * hd), ("k", KV * hd), ("v", KV * hd)):
                t[p + f"self_attn.{n}_proj.bias"] = [rows]
        if arch in ("qwen3", "qwen3_moe"):
            t[p + "self_attn.q_norm.weight"] = [hd]
            t[p + "self_attn.k_norm.weight"] = [hd]
        if arch == "olmoe":
            t[p + "self_attn.q_norm.weight"] = [H * hd]
            t[p + "self_attn.k_norm.weight"] = [KV * hd]
        if arch == "gpt_oss":
            for n, rows in (("q", H * hd), ("k", KV * hd), ("v", KV * hd), ("o", D)):
                t[p + f"self_attn.{n}_proj.bias"] = [rows]
            e, ei = c["num_local_experts"], c["intermediate_size"]
            t[p + "self_attn.sinks"] = [H]
            t[p + "mlp.router.weight"] = [e, D]
            t[p + "mlp.router.bias"] = [e]
            # Fused experts, gate/up columns interleaved.
            t[p + "mlp.experts.gate_up_proj"] = [e, D, 2 * ei]
            t[p + "mlp.experts.gate_up_proj_bias"] = [e, 2 * ei]
            t[p + "mlp.experts.down_proj"] = [e, ei, D]
            t[p + "mlp.experts.down_proj_bias"] = [e, D]
        elif moe and i not in c.get("mlp_only_layers", []):
            t[p + "mlp.gate.weight"] = [E, D]
            for e in range(E):
                q = p + f"mlp.experts.{e}."
                t[q + "gate_proj.weight"] = [EXPERT_I, D]
                t[q + "up_proj.weight"] = [EXPERT_I, D]
                t[q + "down_proj.weight"] = [D, EXPERT_I]
        else:
            t[p + "mlp.gate_proj.weight"] = [DENSE_I, D]
            t[p + "mlp.up_proj.weight"] = [DENSE_I, D]
            t[p + "mlp.down_proj.weight"] = [D, DENSE_I]
    return t


def realistic(name, a):
    """Scales N(0, 0.02) draws as the shared fixtures do, so that every
    semantic moves the logits: norm weights 1 + N(0, 0.1), routers x 8,
    gpt-oss q/k x 8 and gate_up (with its bias) x 25 so the SwiGLU clamp
    bites, sinks N(0, 1), score-correction biases N(0, 0.05)."""
    if name.endswith("norm.weight"):
        return 1 + a * 5
    if name.endswith("sinks"):
        return a * 50
    if name.endswith("e_score_correction_bias"):
        return a * 2.5
    if name.endswith(("mlp.gate.weight", "mlp.router.weight")):
        return a * 8
    if "experts.gate_up_proj" in name:
        return a * 25
    if name.endswith(("q_proj.weight", "k_proj.weight")) and ".self_attn." in name:
        return a * 8
    return a


def encode(shape, dtype, rng, name="", scale=False):
    a = rng.standard_normal(int(np.prod(shape))).astype(np.float32) * 0.02
    if scale:
        a = realistic(name, a).astype(np.float32)
    if dtype == "F32":
        return a.tobytes()
    if dtype == "F16":
        return a.astype(np.float16).tobytes()
    if dtype == "BF16":
        return (a.view(np.uint32) >> 16).astype(np.uint16).tobytes()
    if dtype == "I64":
        return np.zeros(int(np.prod(shape)), np.int64).tobytes()
    raise ValueError(dtype)


def write_safetensors(path, entries, variant):
    """entries: list of (name, dtype, shape, bytes)."""
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, dtype, shape, data in entries:
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    if variant == "bad-offsets":
        last = entries[-1][0]
        header[last]["data_offsets"][1] += 4096
        header[last]["data_offsets"][0] += 4096
    if variant == "overlap":
        first, second = entries[0][0], entries[1][0]
        size = header[second]["data_offsets"][1] - header[second]["data_offsets"][0]
        begin = header[first]["data_offsets"][0]
        header[second]["data_offsets"] = [begin, begin + size]
    raw = json.dumps(header).encode()
    if variant == "bad-header-json":
        raw = raw[:-3]
    raw += b" " * (-len(raw) % 8)
    length = len(raw)
    if variant == "short-header":
        length = 1 << 40
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", length))
        f.write(raw)
        for b in blobs:
            f.write(b)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("arch")
    ap.add_argument("outdir")
    ap.add_argument("--dtype", default="F32", choices=["F32", "BF16", "F16"])
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--variant", default="ok", choices=VARIANTS)
    ap.add_argument("--bare-config", action="store_true")
    # Weights scaled like the shared fixtures' (see realistic()), for
    # numerical tests against hf_reference.py.
    ap.add_argument("--realistic", action="store_true")
    # Config keys to set, as JSON: --set '{"n_group": 1}'.
    ap.add_argument("--set", default=None)
    a = ap.parse_args()

    c = config_for(a.arch)
    c["torch_dtype"] = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}[a.dtype]
    v = a.variant
    if v == "topk-too-large":
        c["num_experts_per_tok"] = E + 1
    if v == "bad-rope":
        c["rope_scaling"] = {"rope_type": "longrope", "short_factor": [1.0], "long_factor": [2.0]}
    if v == "clip-qkv":
        c["clip_qkv"] = 8.0
    if v == "bad-model-type":
        c["model_type"] = "t5"
    if v == "all-full":
        c["layer_types"] = ["full_attention"] * c["num_hidden_layers"]
    if v == "bad-layer-type":
        c["layer_types"] = ["sliding_attention", "chunked_attention"]
    if v == "zero-window":
        c["sliding_window"] = 0
    if v == "yarn":
        c["rope_scaling"] = {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0,
                             "beta_slow": 1.0, "original_max_position_embeddings": 16,
                             "truncate": False}
    if v == "no-q-lora":
        c["q_lora_rank"] = None
    if v == "one-group":
        c.update(n_group=1, topk_group=1)
    if v == "no-yarn":
        c["rope_scaling"] = None
    if v == "bad-n-group":
        c["n_group"] = 3
    if v == "bad-topk-group":
        c["topk_group"] = 5
    if v == "heads-not-divisible":
        c["num_key_value_heads"] = 3
        c["num_attention_heads"] = 4

    if a.set:
        c.update(json.loads(a.set))

    os.makedirs(a.outdir, exist_ok=True)
    with open(os.path.join(a.outdir, "config.json"), "w") as f:
        json.dump(c, f, indent=2)
    if a.bare_config:
        return

    shapes = tensors_for(a.arch if v != "bad-model-type" else "llama", c)
    names = sorted(shapes)
    if v == "missing-tensor":
        names.remove("model.layers.1.post_attention_layernorm.weight")
    if v == "missing-sinks":
        names.remove("model.layers.0.self_attn.sinks")
    if v == "missing-score-bias":
        names.remove("model.layers.1.mlp.gate.e_score_correction_bias")
    if v == "mtp-layer":
        # DeepSeek-V3's multi-token-prediction layer after the last one.
        mtp = deepseek_tensors(c, {}, [c["num_hidden_layers"]])
        mtp["model.layers.3.eh_proj.weight"] = [D, 2 * D]
        shapes.update(mtp)
        names = sorted(names + list(mtp))
    if v == "wrong-shape":
        shapes["model.layers.0.self_attn.k_proj.weight"] = [KV * 4, D]
    if v == "extra-tensor":
        shapes["model.layers.0.mlp.extra_proj.weight"] = [4, D]
        names = sorted(names + ["model.layers.0.mlp.extra_proj.weight"])
    rng = np.random.default_rng(7)
    entries = []
    for n in names:
        dtype = a.dtype
        if v == "wrong-dtype" and n == "model.norm.weight":
            dtype = "I64"
        if n.endswith("e_score_correction_bias"):
            dtype = "F32"  # as DeepSeek-V3 stores it
        entries.append((n, dtype, shapes[n], encode(shapes[n], dtype, rng, n, a.realistic)))

    if a.shards == 1:
        write_safetensors(os.path.join(a.outdir, "model.safetensors"), entries, v)
        return
    files = [f"model-{i + 1:05d}-of-{a.shards:05d}.safetensors" for i in range(a.shards)]
    weight_map = {}
    for i, f in enumerate(files):
        part = entries[i::a.shards]
        write_safetensors(os.path.join(a.outdir, f), part, v)
        for n, *_ in part:
            weight_map[n] = f
    if v == "index-wrong-shard":
        weight_map[entries[0][0]] = files[1]
    if v == "index-missing-shard":
        weight_map[entries[0][0]] = "model-gone.safetensors"
    with open(os.path.join(a.outdir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, f, indent=2)


if __name__ == "__main__":
    main()
