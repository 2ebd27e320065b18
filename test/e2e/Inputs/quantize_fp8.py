#!/usr/bin/env python3
"""Quantizes a checkpoint's matrices to FP8 e4m3 with block scales, as
DeepSeek-V3's published checkpoints store them, and writes the exactly
dequantized checkpoint beside it.

usage: quantize_fp8.py SRC_DIR FP8_DIR DEQ_DIR --block BN BK [--variant NAME]

SRC_DIR holds one model.safetensors (F32 or BF16). Every 2-D
`...proj.weight` inside the decoder layers (attention projections, dense and
shared MLPs, experts) becomes F8_E4M3 `<name>` plus F32
`<name>_scale_inv` [ceil(N/BN), ceil(K/BK)] (HF finegrained_fp8: w = fp8 x
scale per block, edge blocks partial), and FP8_DIR's config.json gains
quantization_config {quant_method: fp8, fmt: e4m3, weight_block_size: [BN,
BK], activation_scheme: dynamic}. DEQ_DIR gets the same model in F32 whose
quantized matrices hold exactly the dequantized values (fp8 x scale in f32),
the reference HF computes with. --variant breaks FP8_DIR for error tests.
"""
import argparse
import json
import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fuse_experts import read, write  # noqa: E402

VARIANTS = ["ok", "no-scale", "scale-grid", "scale-dtype", "method"]


def e4m3_table():
    """The f32 value of every e4m3fn byte (NaN for 0x7f/0xff)."""
    t = np.zeros(256, np.float32)
    for v in range(256):
        e, m = (v >> 3) & 15, v & 7
        if e == 15 and m == 7:
            mag = np.nan
        elif e == 0:
            mag = m / 8.0 * 2.0 ** -6
        else:
            mag = (1 + m / 8.0) * 2.0 ** (e - 7)
        t[v] = -mag if v & 0x80 else mag
    return t


TABLE = e4m3_table()
FINITE = np.array([v for v in range(256) if not np.isnan(TABLE[v])], np.uint8)
MIDS = (TABLE[:0x7e] + TABLE[1:0x7f]) / np.float32(2)


def to_f32(dtype, a):
    if dtype == "BF16":
        return (a.astype(np.uint32) << 16).view(np.float32)
    return a.astype(np.float32)


def quantize(w, bn, bk):
    """(fp8 bytes [N, K], f32 scales [ceil(N/bn), ceil(K/bk)]).

    Each value goes to the nearest finite e4m3 byte of x = w / scale (ties
    to the smaller magnitude, zero as 0x00), whole matrices at once."""
    N, K = w.shape
    rows, cols = -(-N // bn), -(-K // bk)
    pad = np.zeros((rows * bn, cols * bk), np.float32)
    pad[:N, :K] = w
    blocks = pad.reshape(rows, bn, cols, bk)
    amax = np.abs(blocks).max(axis=(1, 3)).astype(np.float64)
    scales = (np.maximum(amax, 1e-12) / 448.0).astype(np.float32)
    x = (blocks / scales[:, None, :, None]).reshape(rows * bn, cols * bk)[:N, :K]
    # MIDS: the midpoints between the magnitudes of bytes 0x00..0x7e (exact
    # in f32); the first midpoint >= |x| indexes the nearest byte, a tie
    # going to the smaller one.
    q = np.searchsorted(MIDS, np.abs(x), side="left").astype(np.uint8)
    q[(x < 0) & (q != 0)] |= 0x80
    return q, scales


def is_quantized(name, ndim):
    """Whether the checkpoint tensor `name` is one of the matrices quantized:
    the 2-D projections of the decoder layers, as DeepSeek-V3 publishes."""
    return bool(re.fullmatch(r"model\.layers\.\d+\..*proj(_with_mqa)?\.weight", name)) and ndim == 2


def dequantize(q, scales, bn, bk):
    s = np.repeat(np.repeat(scales, bn, axis=0), bk, axis=1)[:q.shape[0], :q.shape[1]]
    return (TABLE[q] * s).astype(np.float32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("fp8")
    ap.add_argument("deq")
    ap.add_argument("--block", nargs=2, type=int, required=True)
    ap.add_argument("--variant", default="ok", choices=VARIANTS)
    a = ap.parse_args()
    bn, bk = a.block
    tensors = read(os.path.join(a.src, "model.safetensors"))
    fp8, deq = {}, {}
    first = True
    for name in sorted(tensors):
        dtype, t = tensors[name]
        w = to_f32(dtype, t)
        if not is_quantized(name, w.ndim):
            fp8[name] = (dtype, t)
            deq[name] = ("F32", w)
            continue
        q, s = quantize(w, bn, bk)
        deq[name] = ("F32", dequantize(q, s, bn, bk))
        fp8[name] = ("F8_E4M3", q)
        scale = name + "_scale_inv"
        if first and a.variant == "no-scale":
            pass
        elif first and a.variant == "scale-grid":
            fp8[scale] = ("F32", s[:, :-1] if s.shape[1] > 1 else s[:-1])
        elif first and a.variant == "scale-dtype":
            fp8[scale] = ("BF16", (s.view(np.uint32) >> 16).astype(np.uint16))
        else:
            fp8[scale] = ("F32", s)
        first = False
    with open(os.path.join(a.src, "config.json")) as f:
        config = json.load(f)
    for d, ts, quant in [(a.fp8, fp8, True), (a.deq, deq, False)]:
        os.makedirs(d, exist_ok=True)
        c = dict(config)
        if quant:
            c["quantization_config"] = {
                "quant_method": "mxfp8" if a.variant == "method" else "fp8",
                "fmt": "e4m3", "weight_block_size": [bn, bk],
                "activation_scheme": "dynamic"}
        else:
            c["torch_dtype"] = "float32"
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(c, f, indent=2)
        write(os.path.join(d, "model.safetensors"), ts)


if __name__ == "__main__":
    main()
