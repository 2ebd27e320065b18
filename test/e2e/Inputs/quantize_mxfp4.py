#!/usr/bin/env python3
"""Quantizes a gpt-oss checkpoint's experts to MXFP4 as gpt-oss is
published on the Hub.

usage: quantize_mxfp4.py SRC_DIR DST_DIR [--variant NAME]

SRC_DIR holds one model.safetensors (F32 or BF16) of a gpt_oss model with
HF's dequantized expert layout: model.layers.L.mlp.experts.gate_up_proj
[E, H, 2I] (gate/up columns interleaved) and down_proj [E, I, H]. DST_DIR
gets the same model with each pair replaced by OCP MXFP4 as
transformers' integrations/mxfp4.py reads it:

  <name>_blocks  U8 [E, R, C / 32, 16]  e2m1 pairs, element 2j of a group of
                                        32 in the low nibble of byte j
  <name>_scales  U8 [E, R, C / 32]      e8m0: the group's 2^(scale - 127)

where [E, R, C] is the parameter transposed (gate_up_proj [E, 2I, H], down
[E, H, I]), and config.json gains quantization_config {quant_method: mxfp4,
modules_to_not_convert: [...]}. The biases stay as they are. hf_reference.py
dequantizes these tensors itself (e2m1 x 2^(scale - 127)).
--variant breaks DST_DIR for error tests.
"""
import argparse
import json
import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fuse_experts import read, write  # noqa: E402

VARIANTS = ["ok", "no-scales", "scale-shape", "scale-dtype", "method",
            "no-quant-config"]
E2M1 = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
                 -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0])


def to_f32(dtype, a):
    if dtype == "BF16":
        return (a.astype(np.uint32) << 16).view(np.float32)
    return a.astype(np.float32)


def quantize(w):
    """[.., C] (C a multiple of 32) -> (blocks [.., C/32, 16], scales
    [.., C/32]): per group the smallest power of two that fits its largest
    magnitude under 6, each value rounded to the nearest e2m1."""
    g = w.reshape(*w.shape[:-1], -1, 32).astype(np.float64)
    amax = np.abs(g).max(-1)
    exp = np.ceil(np.log2(np.maximum(amax, 1e-30) / 6.0))
    exp = np.clip(exp, -127, 127)
    scales = (exp + 127).astype(np.uint8)
    x = g / np.ldexp(1.0, exp.astype(np.int64))[..., None]
    idx = np.abs(x[..., None] - E2M1).argmin(-1).astype(np.uint8)
    blocks = idx[..., 0::2] | (idx[..., 1::2] << 4)
    return blocks.astype(np.uint8), scales


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--variant", default="ok", choices=VARIANTS)
    a = ap.parse_args()
    tensors = read(os.path.join(a.src, "model.safetensors"))
    out = {}
    first = True
    for name in sorted(tensors):
        dtype, t = tensors[name]
        if not re.fullmatch(r"model\.layers\.\d+\.mlp\.experts\.(gate_up|down)_proj", name):
            out[name] = (dtype, t)
            continue
        # The parameter [E, C, R] transposed to the stored rows [E, R, C].
        blocks, scales = quantize(to_f32(dtype, t).transpose(0, 2, 1))
        out[name + "_blocks"] = ("U8", blocks)
        if first and a.variant == "no-scales":
            pass
        elif first and a.variant == "scale-shape":
            out[name + "_scales"] = ("U8", scales[:, :-1])
        elif first and a.variant == "scale-dtype":
            out[name + "_scales"] = ("F32", scales.astype(np.float32))
        else:
            out[name + "_scales"] = ("U8", scales)
        first = False
    with open(os.path.join(a.src, "config.json")) as f:
        config = json.load(f)
    if a.variant != "no-quant-config":
        config["quantization_config"] = {
            "modules_to_not_convert": ["model.layers.*.self_attn",
                                       "model.layers.*.mlp.router",
                                       "model.embed_tokens", "lm_head"],
            "quant_method": "mxfp8" if a.variant == "method" else "mxfp4"}
    os.makedirs(a.dst, exist_ok=True)
    with open(os.path.join(a.dst, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    write(os.path.join(a.dst, "model.safetensors"), out)


if __name__ == "__main__":
    main()
