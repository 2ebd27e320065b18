#!/usr/bin/env python3
"""Writes the seed corpora of the libFuzzer targets (fuzz/*.cpp).

usage: make_seeds.py OUT_DIR SRC_ROOT SHARED_DIR [MOE_COMPILE]

Seeds are small valid inputs (and a few near-misses) built from the repo's
tests and examples, the shared fixtures, and synthetic safetensors files;
plans are compiled from the fixtures with MOE_COMPILE when it is given.
One directory per target: OUT_DIR/<target>/.
"""
import glob
import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile


def put(out, target, data, prefix=b""):
    if isinstance(data, str):
        data = data.encode()
    data = prefix + data
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def safetensors(tensors, metadata=None, pad=True, header_extra=""):
    """tensors: [(name, dtype, shape, bytes)] -> file bytes."""
    hdr, data = {}, b""
    if metadata is not None:
        hdr["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        hdr[name] = {"dtype": dtype, "shape": shape,
                     "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(hdr) + header_extra
    if pad:
        h += " " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h.encode() + data


def safetensors_seeds():
    f32 = struct.pack("<4f", 1, 2, 3, 4)
    return [
        safetensors([("w", "F32", [2, 2], f32)]),
        safetensors([("a", "BF16", [3], b"\x80\x3f" * 3), ("b", "F16", [1], b"\x00\x3c"),
                     ("c", "I64", [2], struct.pack("<2q", 1, 2))], metadata={"format": "pt"}),
        safetensors([("empty", "F32", [0, 4], b""), ("scalar", "F32", [], struct.pack("<f", 7)),
                     ("u8", "U8", [5], b"\x01\x02\x03\x04\x05")]),
        safetensors([("odd", "F32", [1], struct.pack("<f", 1))], pad=False),
        safetensors([("x", "F8_E4M3", [2], b"\x01\x02"), ("y", "BOOL", [1], b"\x01")]),
        # An FP8 matrix with its block scales (DeepSeek-V3's layout).
        safetensors([("m.weight", "F8_E4M3", [2, 3], b"\x38\x30\xb8\x01\x7e\x00"),
                     ("m.weight_scale_inv", "F32", [1, 1], struct.pack("<f", 0.5))]),
        # gpt-oss's MXFP4 experts: e2m1 pairs and e8m0 scales, one group.
        safetensors([("e.gate_up_proj_blocks", "U8", [1, 2, 1, 16], bytes(range(32))),
                     ("e.gate_up_proj_scales", "U8", [1, 2, 1], b"\x7f\x80")]),
    ]


def split_mlir(path):
    text = open(path).read()
    for chunk in text.split("// -----"):
        lines = [l for l in chunk.splitlines()
                 if not l.lstrip().startswith(("// RUN", "// CHECK", "// expected-"))]
        chunk = "\n".join(lines).strip()
        if chunk:
            yield chunk + "\n"


def main():
    out, src, shared = sys.argv[1:4]
    moe_compile = sys.argv[4] if len(sys.argv) > 4 else None
    fixtures = os.path.join(shared, "fixtures")

    # Runtime safetensors reader: mode byte 0 = file, 1 = index.json.
    for s in safetensors_seeds():
        put(out, "safetensors", s, b"\x00")
    put(out, "safetensors", json.dumps({"metadata": {"total_size": 24}, "weight_map": {
        "x": "a.safetensors", "y": "a.safetensors", "z": "b.safetensors"}}), b"\x01")
    put(out, "safetensors", json.dumps({"weight_map": {"x": "a.safetensors"}}), b"\x01")

    # Compiler readers: 0 safetensors, 1 profile, 2 sizes, 3 JSON, 4 clusters.
    for s in safetensors_seeds():
        put(out, "compiler-inputs", s, b"\x00")
    for p in glob.glob(os.path.join(src, "test", "Transforms", "Inputs", "*.json")):
        put(out, "compiler-inputs", open(p, "rb").read(), b"\x01")
    put(out, "compiler-inputs", json.dumps({"layers": [
        {"layer": 1, "num_experts": 4, "routed": [1, 2.5, 0, 9], "dropped": [0, 0, 0, 0]},
        {"layer": 3, "routed": [4, 4]}]}), b"\x01")
    # Integers written as doubles that round to 2^63 (llvm::json's getAsInteger
    # converted them to int64_t: undefined; jsonInteger refuses them).
    put(out, "compiler-inputs", '{"layers": [{"layer": 09223372036854775803.4, "routed": [.1, 2.5, 0,4]}]}', b"\x01")
    put(out, "compiler-inputs", '{"nodes": 9.3e18, "gpus_per_node": 8}', b"\x04")
    for s in ["24GiB", "1.5GB", "4096", "12 MiB", "0.5k", "7"]:
        put(out, "compiler-inputs", s, b"\x02")
    put(out, "compiler-inputs", '{"a": [1, 2.5e3, "x\\u00e9", null, true], "b": {"c": {}}}', b"\x03")
    for p in glob.glob(os.path.join(src, "examples", "clusters", "*.json")) + \
            glob.glob(os.path.join(src, "test", "Tools", "Inputs", "clusters", "*.json")):
        put(out, "compiler-inputs", open(p, "rb").read(), b"\x04")
    for s in ["3.35TB/s", "400Gb/s", "989T", "1.5e3 TFLOPS", "3us", "0ns", "2e-6s"]:
        put(out, "compiler-inputs", s, b"\x04")

    # Importer: descriptions and config.json files.
    configs = (glob.glob(os.path.join(src, "examples", "**", "*.json"), recursive=True) +
               glob.glob(os.path.join(src, "test", "Import", "Inputs", "descriptions", "*.json")) +
               glob.glob(os.path.join(src, "test", "Runtime", "Inputs", "*.json")) +
               glob.glob(os.path.join(fixtures, "hf", "*", "config.json")) +
               glob.glob(os.path.join(fixtures, "hf-archs", "*", "config.json")) +
               glob.glob(os.path.join(shared, "bench", "*", "config.json")))
    for p in configs:
        put(out, "import", open(p, "rb").read())
    for p in glob.glob(os.path.join(fixtures, "hf-archs", "gptoss-tiny", "config.json")):
        # As gpt-oss is published: MXFP4 experts.
        c = json.load(open(p))
        c["quantization_config"] = {"modules_to_not_convert": ["model.layers.*.self_attn"],
                                    "quant_method": "mxfp4"}
        put(out, "import", json.dumps(c))
    # More expert slices than the runtime takes, few enough tensors to
    # import (the compiler refuses it; the fuzzer once found the runtime
    # refusing the compiled plan instead).
    for p in glob.glob(os.path.join(src, "examples", "switch", "switch-c-1.6T.json")):
        c = json.load(open(p))
        c["moe"]["num_experts"] = 5017
        put(out, "import", json.dumps(c))

    # Tokenizers: the small hand-built layouts.
    for p in glob.glob(os.path.join(src, "test", "Tokenizer", "Inputs", "*", "tokenizer.json")):
        put(out, "tokenizer", open(p, "rb").read())
    for p in glob.glob(os.path.join(fixtures, "tokenizers", "*", "tokenizer.json")):
        if os.path.getsize(p) < 64 * 1024:
            put(out, "tokenizer", open(p, "rb").read())

    # moe-run --prompts: good lines of every shape, and near-misses.
    prompt_lines = [
        '{"id": "a", "prompt_ids": [3, 17, 42], "max_new_tokens": 8}',
        '{"id": 2, "prompt": "Hello", "temperature": 0.8, "top_p": 0.9, "seed": 7}',
        '{"id": null, "prompt_ids": [1], "stop": ["\\n", "end"], "ignore_eos": true}',
        '{"id": [1], "prompt_ids": [5, 6], "stop": [[1, 2], [3]]}',
        '{"id": "s", "prompt_ids": [5], "stop": [13, 13]}',
        '{"id": "bad", "prompt_ids": [1, 2',
        '{"prompt": "x", "prompt_ids": [1]}',
        '{"prompt_ids": [-1], "top_p": 0}',
        '[1, 2]',
        '',
    ]
    for i in range(len(prompt_lines)):
        put(out, "prompts", "\n".join(prompt_lines[i:] + prompt_lines[:i]) + "\n")
    for l in prompt_lines:
        put(out, "prompts", l)

    # moe-opt: every test case of the dialect and pass tests.
    for p in (glob.glob(os.path.join(src, "test", "Dialect", "*.mlir")) +
              glob.glob(os.path.join(src, "test", "Transforms", "*.mlir")) +
              glob.glob(os.path.join(src, "test", "Transforms", "Inputs", "*.mlir"))):
        for chunk in split_mlir(p):
            put(out, "mlir", chunk)

    # Plans: the fixtures and a description compiled for 1 and 2 ranks.
    if moe_compile:
        # hf-archs: the architectures of issue 18 (gpt-oss's sinks, gate
        # bias and clamped SwiGLU), until they join hf; those that do not
        # compile yet are skipped below.
        models = sorted(glob.glob(os.path.join(fixtures, "hf", "*")) +
                        glob.glob(os.path.join(fixtures, "hf-archs", "*"))) + [
            os.path.join(src, "test", "Runtime", "Inputs", "tiny-mixtral.json")]
        env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0")
        with tempfile.TemporaryDirectory() as tmp:
            # MXFP4 experts (plan 3.3 Weight.format, fused quantized sources).
            inputs = os.path.join(src, "test", "e2e", "Inputs")
            mx = os.path.join(tmp, "mxfp4")
            r = subprocess.run(
                [sys.executable, os.path.join(src, "test", "Import", "Inputs", "make_checkpoint.py"),
                 "gpt_oss", mx + "-src", "--set",
                 '{"hidden_size": 64, "intermediate_size": 64, "sliding_window": 4}'],
                capture_output=True, text=True)
            if r.returncode == 0:
                r = subprocess.run([sys.executable, os.path.join(inputs, "quantize_mxfp4.py"),
                                    mx + "-src", mx], capture_output=True, text=True)
            if r.returncode == 0:
                models.append(mx)
            else:
                print("make_seeds: no MXFP4 checkpoint: %s" % r.stderr.strip(), file=sys.stderr)
            for i, m in enumerate(models):
                extras = [[], ["--devices=2"], ["--max-seq-len=16", "--dtype=bf16"],
                          ["--max-batch=3", "--max-seq-len=32"],
                          # Tensor parts of weights (plan 3.3); models whose
                          # heads T=2 does not split are skipped below.
                          ["--devices=2", "--tensor-parallel=2", "--max-seq-len=16"],
                          # Data-parallel groups with AllToAllV steps (plan 3.4).
                          ["--devices=4", "--tensor-parallel=2", "--max-batch=2",
                           "--max-seq-len=16"],
                          # Vocabulary-parallel embedding and LM head (plan 3.5).
                          ["--devices=2", "--tensor-parallel=2", "--vocab-parallel=on",
                           "--max-seq-len=16"]]
                if m.endswith((".json", "mxfp4")):
                    # 4 experts on 8 ranks: expert slicing (plan 3.1).
                    extras.append(["--devices=8", "--max-seq-len=16"])
                for extra in extras:
                    plan = os.path.join(tmp, "p.plan")
                    r = subprocess.run([moe_compile, m, "-o", plan] + extra, env=env,
                                       capture_output=True, text=True)
                    if r.returncode != 0:
                        print("make_seeds: skipping %s %s: %s" % (m, extra, r.stderr.strip()),
                              file=sys.stderr)
                        continue
                    put(out, "plan", open(plan, "rb").read())
    for t in sorted(os.listdir(out)):
        print("seeds: %-16s %d" % (t, len(os.listdir(os.path.join(out, t)))))


if __name__ == "__main__":
    main()
