#!/usr/bin/env python3
"""Writes the bad-input corpus of test/BadInput into OUT.

usage: make_bad_inputs.py OUT [--plan-schema plan.fbs --plan PLAN]

Without --plan: a tiny valid Mixtral-style checkpoint (OUT/good) and one
broken copy per case, broken descriptions, configs, profiles and tokenizers.
With --plan: broken copies of PLAN (a plan moe-compile wrote), edited through
flatc's JSON form so each one breaks exactly one field, plus raw byte damage.
Everything is generated at test time from a fixed seed; nothing binary is
committed.
"""
import argparse
import copy
import json
import os
import shutil
import struct
import subprocess
import sys

import numpy as np

V, D, H, KV, HD, I, E, K, L, P = 32, 16, 2, 1, 8, 8, 4, 2, 2, 64


def config():
    return {
        "architectures": ["MixtralForCausalLM"], "model_type": "mixtral",
        "vocab_size": V, "hidden_size": D, "num_attention_heads": H,
        "num_key_value_heads": KV, "num_hidden_layers": L, "intermediate_size": I,
        "num_local_experts": E, "num_experts_per_tok": K,
        "max_position_embeddings": P, "rms_norm_eps": 1e-5, "rope_theta": 1e6,
        "hidden_act": "silu", "tie_word_embeddings": False, "sliding_window": None,
        "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32",
    }


def tensors():
    """name -> shape of the Mixtral tensors, in a fixed order."""
    t = {"model.embed_tokens.weight": [V, D]}
    for l in range(L):
        p = "model.layers.%d." % l
        t[p + "input_layernorm.weight"] = [D]
        t[p + "self_attn.q_proj.weight"] = [H * HD, D]
        t[p + "self_attn.k_proj.weight"] = [KV * HD, D]
        t[p + "self_attn.v_proj.weight"] = [KV * HD, D]
        t[p + "self_attn.o_proj.weight"] = [D, H * HD]
        t[p + "post_attention_layernorm.weight"] = [D]
        t[p + "block_sparse_moe.gate.weight"] = [E, D]
        for e in range(E):
            q = p + "block_sparse_moe.experts.%d." % e
            t[q + "w1.weight"] = [I, D]
            t[q + "w3.weight"] = [I, D]
            t[q + "w2.weight"] = [D, I]
    t["model.norm.weight"] = [D]
    t["lm_head.weight"] = [V, D]
    return t


def data(shapes, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in shapes.items():
        if name.endswith("norm.weight"):
            out[name] = np.ones(shape, np.float32)
        else:
            out[name] = (rng.standard_normal(shape) * 0.2).astype(np.float32)
    return out


def header_and_blob(arrays, dtype="F32"):
    hdr, blob = {}, b""
    for name, a in arrays.items():
        raw = a.tobytes()
        hdr[name] = {"dtype": dtype, "shape": list(a.shape),
                     "data_offsets": [len(blob), len(blob) + len(raw)]}
        blob += raw
    return hdr, blob


def pack(hdr, blob, pad_to=8, extra=b""):
    h = json.dumps(hdr).encode() if isinstance(hdr, dict) else hdr
    h += b" " * (-len(h) % pad_to)
    return struct.pack("<Q", len(h)) + h + extra + blob


def write(path, content):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb" if isinstance(content, bytes) else "w") as f:
        f.write(content)


def checkpoint(out, name, arrays=None, hdr=None, blob=None, raw=None, cfg=None, pad_to=8):
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    write(os.path.join(d, "config.json"), json.dumps(cfg or config(), indent=1))
    if raw is None:
        if hdr is None:
            hdr, blob = header_and_blob(arrays)
        raw = pack(hdr, blob, pad_to)
    write(os.path.join(d, "model.safetensors"), raw)
    return d


def checkpoints(out):
    shapes = tensors()
    good = data(shapes)
    checkpoint(out, "good", good)
    hdr, blob = header_and_blob(good)
    first = next(iter(hdr))

    # Truncated: the header is intact, the data stops halfway.
    raw = pack(hdr, blob)
    checkpoint(out, "truncated", raw=raw[:len(raw) - len(blob) // 2])
    # Truncated inside the 8-byte length.
    checkpoint(out, "truncated-length", raw=raw[:5])
    # A header whose length field claims 2^40 bytes.
    checkpoint(out, "lying-length", raw=struct.pack("<Q", 1 << 40) + raw[8:])
    # Lying offsets: the last tensor ends 4 KiB past the end of the file.
    h = copy.deepcopy(hdr)
    last = list(h)[-1]
    h[last]["data_offsets"] = [h[last]["data_offsets"][0] + 4096,
                               h[last]["data_offsets"][1] + 4096]
    checkpoint(out, "offsets-past-eof", hdr=h, blob=blob)
    # Overlap: the second tensor starts inside the first (sizes stay right).
    h = copy.deepcopy(hdr)
    second = list(h)[1]
    n = h[second]["data_offsets"][1] - h[second]["data_offsets"][0]
    h[second]["data_offsets"] = [4, 4 + n]
    checkpoint(out, "overlap", hdr=h, blob=blob)
    # Wrong size for dtype x shape: lm_head claims one row more than its bytes.
    h = copy.deepcopy(hdr)
    h["lm_head.weight"]["shape"] = [V + 1, D]
    checkpoint(out, "size-mismatch", hdr=h, blob=blob)
    # Unknown dtype.
    h = copy.deepcopy(hdr)
    h["model.norm.weight"]["dtype"] = "Q4_K"
    checkpoint(out, "unknown-dtype", hdr=h, blob=blob)
    # A name twice (the JSON object repeats a key).
    text = json.dumps(hdr)
    dup = '{"%s": %s, ' % (first, json.dumps(hdr[first])) + text[1:]
    checkpoint(out, "duplicate-name", raw=pack(dup.encode(), blob))
    # A header nested 100000 levels deep (overflowed llvm::json's stack).
    deep = '{"__metadata__": {"x": ' + "[" * 100000 + "]" * 100000 + "}}"
    checkpoint(out, "deep-header", raw=pack(deep.encode(), b""))
    # Shapes the config does not describe: k_proj as wide as q_proj.
    arrays = dict(good)
    arrays["model.layers.0.self_attn.k_proj.weight"] = np.zeros([H * HD, D], np.float32)
    checkpoint(out, "wrong-shape", arrays)
    # A valid file whose header length is 3 mod 8: every
    # tensor is misaligned in the mapping. Not an error: it must run like good.
    h = json.dumps(hdr).encode()
    h += b" " * ((3 - len(h)) % 8)
    checkpoint(out, "unaligned", raw=struct.pack("<Q", len(h)) + h + blob)

    # Sharded: two shards and an index; then one shard gone, and an index
    # that names a file the directory does not have.
    names = list(good)
    halves = [names[:len(names) // 2], names[len(names) // 2:]]
    for case in ("sharded", "missing-shard", "index-names-missing-file", "index-traversal"):
        d = os.path.join(out, case)
        os.makedirs(d, exist_ok=True)
        write(os.path.join(d, "config.json"), json.dumps(config(), indent=1))
        weight_map = {}
        for i, part in enumerate(halves):
            shard = "model-%05d-of-00002.safetensors" % (i + 1)
            h, b = header_and_blob({n: good[n] for n in part})
            write(os.path.join(d, shard), pack(h, b))
            weight_map.update({n: shard for n in part})
        if case == "missing-shard":
            os.remove(os.path.join(d, "model-00002-of-00002.safetensors"))
        if case == "index-names-missing-file":
            weight_map["lm_head.weight"] = "model-00003-of-00002.safetensors"
        if case == "index-traversal":
            weight_map["lm_head.weight"] = "../good/model.safetensors"
        write(os.path.join(d, "model.safetensors.index.json"),
              json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}, indent=1))


def descriptions(out):
    base = {"num_layers": 2, "hidden_size": 16, "num_attention_heads": 2,
            "vocab_size": 32, "max_position_embeddings": 64, "activation": "swiglu",
            "norm": "rmsnorm", "position": "rope",
            "moe": {"num_experts": 4, "top_k": 2, "expert_interval": 1}}
    d = os.path.join(out, "desc")
    os.makedirs(d, exist_ok=True)

    def put(name, change=None, moe=None, text=None):
        c = copy.deepcopy(base)
        c.update(change or {})
        c["moe"].update(moe or {})
        write(os.path.join(d, name + ".json"), text if text is not None else json.dumps(c))

    put("good")
    put("zero-heads", {"num_attention_heads": 0})
    put("huge-hidden", {"hidden_size": 1 << 40})
    put("topk-over-experts", moe={"top_k": 5})
    put("negative-ffn", {"ffn_hidden_size": -4})
    put("unknown-key", {"num_heads": 2})
    put("heads-not-dividing", {"num_attention_heads": 3})
    put("too-many-experts", {"num_layers": 64}, moe={"num_experts": 65536})
    # Few enough tensors to import, more expert slices than the runtime takes
    # (30 layers x 3000 experts x gate, up, down): found by the import fuzzer.
    put("many-expert-slices", {"num_layers": 30}, moe={"num_experts": 3000, "top_k": 1})
    put("deep", text='{"name": ' + "[" * 100000 + "]" * 100000 + "}")
    put("repeated-key", text=json.dumps(base)[:-1] + ', "hidden_size": 32}')
    put("truncated", text=json.dumps(base)[:40])

    # Hugging Face config.json files (compiled bare, without weights).
    h = os.path.join(out, "hf")
    os.makedirs(h, exist_ok=True)
    for name, change in [("kv-heads", {"num_key_value_heads": 3, "num_attention_heads": 4}),
                         ("zero-layers", {"num_hidden_layers": 0}),
                         ("float-vocab", {"vocab_size": 32.5}),
                         ("window-zero", {"sliding_window": 0})]:
        c = config()
        c.update(change)
        write(os.path.join(h, name, "config.json"), json.dumps(c))


def profiles(out):
    d = os.path.join(out, "profiles")
    os.makedirs(d, exist_ok=True)
    ok = {"layers": [{"layer": l, "num_experts": E, "routed": [5, 1, 1, 1]} for l in range(L)]}
    write(os.path.join(d, "good.json"), json.dumps(ok))
    bad = copy.deepcopy(ok)
    bad["layers"][1]["routed"][2] = -3
    write(os.path.join(d, "negative.json"), json.dumps(bad))
    bad = copy.deepcopy(ok)
    bad["layers"][1]["layer"] = 0
    write(os.path.join(d, "repeated.json"), json.dumps(bad))
    bad = copy.deepcopy(ok)
    bad["layers"][1]["layer"] = 9223372036854775807
    write(os.path.join(d, "huge-layer.json"), json.dumps(bad))
    # A double that rounds to 2^63: llvm::json's getAsInteger converted it to
    # int64_t (undefined behaviour; found by the compiler-inputs fuzzer).
    write(os.path.join(d, "rounds-to-2p63-layer.json"),
          json.dumps(ok).replace('"layer": 1', '"layer": 9223372036854775803.4', 1))
    bad = copy.deepcopy(ok)
    bad["layers"][1]["layer"] = 7
    write(os.path.join(d, "other-model.json"), json.dumps(bad))
    bad = copy.deepcopy(ok)
    bad["layers"][0]["routed"] = [1, 2, 3]
    bad["layers"][0]["num_experts"] = 3
    write(os.path.join(d, "wrong-count.json"), json.dumps(bad))


def tokenizers(out):
    d = os.path.join(out, "tok")
    os.makedirs(d, exist_ok=True)
    vocab = {chr(c): i for i, c in enumerate(range(ord("a"), ord("a") + 26))}
    good = {"version": "1.0", "model": {"type": "BPE", "vocab": vocab, "merges": []},
            "normalizer": None, "pre_tokenizer": None, "decoder": None}
    write(os.path.join(d, "good.json"), json.dumps(good))
    bad = copy.deepcopy(good)
    bad["model"]["type"] = "Unigram"
    write(os.path.join(d, "unigram.json"), json.dumps(bad))
    bad = copy.deepcopy(good)
    bad["model"]["merges"] = ["a zz"]
    write(os.path.join(d, "bad-merge.json"), json.dumps(bad))
    # Sequence inside Sequence, 10000 deep: built recursively.
    n = 10000
    deep = '{"type": "Sequence", "normalizers": [' * n + '{"type": "NFC"}' + "]}" * n
    text = json.dumps(good).replace('"normalizer": null', '"normalizer": ' + deep)
    write(os.path.join(d, "deep.json"), text)
    bad = copy.deepcopy(good)
    bad["version"] = [[["2.0"]]]
    write(os.path.join(d, "version.json"), json.dumps(bad))
    write(os.path.join(d, "truncated.json"), json.dumps(good)[:50])


def flatc_roundtrip(flatc, schema, plan, workdir, edit):
    """PLAN -> JSON -> edit(json) -> plan bytes."""
    subprocess.run([flatc, "--json", "--raw-binary", "--strict-json", "--defaults-json",
                    "-o", workdir, schema, "--", plan], check=True)
    j = os.path.join(workdir, os.path.splitext(os.path.basename(plan))[0] + ".json")
    doc = json.load(open(j))
    edit(doc)
    json.dump(doc, open(j, "w"))
    subprocess.run([flatc, "-b", "-o", workdir, schema, j], check=True)
    out = os.path.splitext(j)[0] + ".moeplan"
    return open(out, "rb").read()


def first_step(doc, kind):
    for s in doc["ranks"][0]["steps"]:
        if s["op_type"] == kind:
            return s
    raise SystemExit("make_bad_inputs: the plan has no %s step" % kind)


def plan_editor(out, schema, plan):
    """edited(name, fn): writes OUT/name.plan, PLAN with fn applied to its
    JSON form (through flatc)."""
    flatc = shutil.which("flatc")
    if not flatc:
        raise SystemExit("make_bad_inputs: flatc not found")
    work = os.path.join(out, "flatc")
    os.makedirs(work, exist_ok=True)

    def edited(name, fn):
        write(os.path.join(out, name + ".plan"), flatc_roundtrip(flatc, schema, plan, work, fn))
    return edited


def plans(out, schema, plan):
    raw = open(plan, "rb").read()
    edited = plan_editor(out, schema, plan)

    edited("major", lambda d: d.update(version_major=d["version_major"] + 1))
    edited("minor", lambda d: d.update(version_minor=d["version_minor"] + 1))
    edited("buffer-index", lambda d: first_step(d, "Linear")["op"].update({"in": 999}))
    edited("weight-index", lambda d: first_step(d, "Linear")["op"].update(weight=100000))
    edited("cache-index", lambda d: first_step(d, "Attention")["op"].update(cache=7))
    edited("unaligned-offset", lambda d: d["ranks"][0]["buffers"][1].update(
        offset=d["ranks"][0]["buffers"][1]["offset"] + 4))
    edited("huge-rows", lambda d: d["ranks"][0]["buffers"][0].update(
        rows_per_token=1 << 40, max_rows=1 << 62))
    edited("topk", lambda d: first_step(d, "Gate")["op"].update(top_k=9))
    edited("stream", lambda d: first_step(d, "Linear").update(stream=7))
    # 3.1's gpt-oss fields: attention sinks and the experts' gate bias are
    # weight indices, SwigluOai needs its clamp.
    edited("sinks-index", lambda d: first_step(d, "Attention")["op"].update(sinks=100000))
    edited("gate-bias-index", lambda d: first_step(d, "Experts")["op"].update(gate_bias=100000))
    edited("swiglu-limit", lambda d: first_step(d, "Experts")["op"].update(act="SwigluOai"))
    # 3.2's DeepSeek-V3 fields: the gate's selection bias is a weight index,
    # its groups must split the experts, and the value width must match the
    # cache's.
    edited("selection-bias-index",
           lambda d: first_step(d, "Gate")["op"].update(selection_bias=100000))
    edited("num-groups", lambda d: first_step(d, "Gate")["op"].update(num_groups=3))
    edited("v-head-dim", lambda d: first_step(d, "Attention")["op"].update(v_head_dim=4))
    # 3.3's quantized weights: a format needs its scale tensor and a block.
    def quant(d, **fields):
        d["weights"][first_step(d, "Linear")["op"]["weight"]].update(fields)
    edited("quant-no-scale", lambda d: quant(d, format="FP8E4M3Block"))
    edited("quant-block", lambda d: quant(d, format="FP8E4M3Block", scale="s", block=[0, 4]))
    # MXFP4 scales one row's groups of 32.
    edited("quant-mxfp4-block", lambda d: quant(d, format="MXFP4", scale="s", block=[1, 16]))

    # A tensor-parallel part of a quantized weight holds whole scale blocks:
    # member 1 of 2's rows of an FP8 weight with 128x128 blocks start inside
    # the first block (DeepSeek-V3's blocks, heads narrower than a block).
    def quant_part(d):
        i = first_step(d, "Linear")["op"]["weight"]
        whole = d["weights"][i]
        whole.update(format="FP8E4M3Block", scale="s", block=[128, 128])
        part = copy.deepcopy(whole)
        rows = whole["shape"][0] // 2
        part.update(name=whole["name"] + " part 1/2", part_of=i, part_axis=0, part_offset=rows)
        part["shape"][0] = rows
        d["weights"].append(part)
    edited("quant-part-block", quant_part)
    write(os.path.join(out, "truncated.plan"), raw[:len(raw) // 2])
    write(os.path.join(out, "empty.plan"), b"")
    # The root offset pointing past the end of the file.
    write(os.path.join(out, "root-offset.plan"), struct.pack("<I", len(raw) + 64) + raw[4:])
    # Every byte of the vtable region flipped: the verifier's job.
    damaged = bytearray(raw)
    for i in range(8, min(len(damaged), 72)):
        damaged[i] ^= 0xA5
    write(os.path.join(out, "damaged.plan"), bytes(damaged))


def data_parallel_plans(out, schema, plan):
    """Plan 3.4's data-parallel groups: edits of a plan with AllToAllV steps."""
    edited = plan_editor(out, schema, plan)

    def dispatch(d):
        for s in d["ranks"][0]["steps"]:
            if s["op_type"] == "AllToAllV" and s["op"].get("kind", "Dispatch") == "Dispatch":
                return s["op"]
        raise SystemExit("make_bad_inputs: the plan has no AllToAllV dispatch")

    def combine(d):
        for s in d["ranks"][0]["steps"]:
            if s["op_type"] == "AllToAllV" and s["op"].get("kind") == "Combine":
                return s["op"]
        raise SystemExit("make_bad_inputs: the plan has no AllToAllV combine")

    edited("dp-groups", lambda d: d.update(data_parallel=3))
    edited("dp-none", lambda d: d.update(data_parallel=1))
    edited("dp-target", lambda d: dispatch(d)["targets"].__setitem__(0, 99))
    edited("dp-target-offsets", lambda d: dispatch(d)["target_offsets"].pop())
    edited("dp-counts", lambda d: combine(d).update(
        counts=first_step(d, "Gate")["op"]["expert_offsets"]))
    edited("dp-per-node", lambda d: dispatch(d).update(ranks_per_node=3))
    edited("dp-received", lambda d: first_step(d, "Experts")["op"].update(received=False))


def vocab_parallel_plans(out, schema, plan):
    """Plan 3.5's vocabulary-parallel embedding and LM head (T=2): edits of
    rank 0's steps."""
    edited = plan_editor(out, schema, plan)
    # An Embedding's rows from vocab_offset must be a part within the table.
    edited("vp-embedding-offset",
           lambda d: first_step(d, "Embedding")["op"].update(vocab_offset=1 << 40))
    # Weight 0, the whole table, with an offset.
    edited("vp-embedding-whole",
           lambda d: first_step(d, "Embedding")["op"].update(weight=0, vocab_offset=1))
    # A Logits member's columns are its share at its index in the group.
    edited("vp-logits-offset",
           lambda d: first_step(d, "Logits")["op"].update(vocab_offset=1))
    edited("vp-logits-group", lambda d: first_step(d, "Logits")["op"].update(group=[1, 2]))
    edited("vp-logits-whole", lambda d: first_step(d, "Logits")["op"].pop("group"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--plan-schema")
    ap.add_argument("--plan")
    ap.add_argument("--data-parallel", action="store_true",
                    help="--plan has data-parallel groups: write their corrupt forms")
    ap.add_argument("--vocab-parallel", action="store_true",
                    help="--plan splits its vocabulary over 2 ranks: write its corrupt forms")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    if a.plan and a.vocab_parallel:
        vocab_parallel_plans(a.out, a.plan_schema, a.plan)
        return
    if a.plan and a.data_parallel:
        data_parallel_plans(a.out, a.plan_schema, a.plan)
        return
    if a.plan:
        plans(a.out, a.plan_schema, a.plan)
        return
    checkpoints(a.out)
    descriptions(a.out)
    profiles(a.out)
    tokenizers(a.out)


if __name__ == "__main__":
    main()
