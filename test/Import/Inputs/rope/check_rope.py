#!/usr/bin/python3
"""check_rope.py MLIR CONFIG: the moe.rotary ops of MLIR (moe-compile
--emit=mlir --pipeline=none of CONFIG) carry the inverse frequencies and
attention factor of transformers' ROPE_INIT_FUNCTIONS for CONFIG's
rope_scaling (linear, llama3, yarn), recomputed here with numpy in float32 as
torch does (within a few ulp: powf rounds differently between libraries). Prints one line per rope op kind; exit 1 on a mismatch."""
import json
import math
import re
import sys

import numpy as np

mlir, config = open(sys.argv[1]).read(), json.load(open(sys.argv[2]))
rs = config.get("rope_scaling") or config.get("rope_parameters") or {}
kind = rs.get("rope_type", rs.get("type", "default"))
base = rs.get("rope_theta") or config.get("rope_theta", 10000.0)
head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
dim = int(head_dim * config.get("partial_rotary_factor", 1.0))
f32 = np.float32


def default_inv_freq():
    return f32(1.0) / (f32(base) ** (np.arange(0, dim, 2).astype(f32) / f32(dim)))


def mscale(scale, m=1.0):
    return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0


if kind == "linear":
    inv, att = default_inv_freq() / f32(rs["factor"]), 1.0
elif kind == "llama3":
    inv = default_inv_freq()
    factor, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
    old = rs["original_max_position_embeddings"]
    lo_w, hi_w = f32(old / lo), f32(old / hi)
    wavelen = f32(2 * math.pi) / inv
    scaled = np.where(wavelen > lo_w, inv / f32(factor), inv).astype(f32)
    smooth = ((f32(old) / wavelen - f32(lo)) / f32(hi - lo)).astype(f32)
    smoothed = ((f32(1) - smooth) * scaled / f32(factor) + smooth * scaled).astype(f32)
    medium = ~(wavelen < hi_w) & ~(wavelen > lo_w)
    inv, att = np.where(medium, smoothed, scaled).astype(f32), 1.0
elif kind == "yarn":
    factor = rs["factor"]
    att = rs.get("attention_factor")
    m, mad = rs.get("mscale"), rs.get("mscale_all_dim")
    if att is None:
        att = mscale(factor, m) / mscale(factor, mad) if m and mad else mscale(factor)
    fast, slow = rs.get("beta_fast") or 32, rs.get("beta_slow") or 1
    orig = rs.get("original_max_position_embeddings") or config["max_position_embeddings"]

    def corr(rot):
        return dim * math.log(orig / (rot * 2 * math.pi)) / (2 * math.log(base))

    low, high = corr(fast), corr(slow)
    if rs.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = np.clip((np.arange(dim // 2).astype(f32) - f32(low)) / f32(high - low), 0, 1).astype(f32)
    pos = f32(base) ** (np.arange(0, dim, 2).astype(f32) / f32(dim))
    extra, inter = f32(1) / pos, f32(1) / (f32(factor) * pos)
    ef = f32(1) - ramp
    inv = (inter * (f32(1) - ef) + extra * ef).astype(f32)
else:
    sys.exit(f"rope type {kind}: nothing to check")

ops = re.findall(r"moe\.rotary .*?inv_freq dense<\[([^\]]*)\]> : tensor<\d+xf32>(?: attention_factor ([-0-9.e+]+))?", mlir)
if not ops:
    sys.exit("no moe.rotary with inv_freq in " + sys.argv[1])
bad = 0
for values, factor_text in ops:
    got = np.array([float(v) for v in values.split(",")], dtype=f32)
    got_att = float(factor_text) if factor_text else 1.0
    # powf differs by an ulp between libm, numpy and torch (Sleef): allow a
    # few ulp, far below what would change a rotation. (The IR prints f32
    # elements exactly.)
    if got.shape != inv.shape or np.max(np.abs(got / inv - 1)) > 1e-6:
        bad += 1
        print(f"inv_freq differs: max rel err {np.max(np.abs(got / inv - 1)):.3g}")
    if abs(got_att - att) > 1e-6 * att:
        bad += 1
        print(f"attention_factor {got_att} != {att}")
print(f"{kind}: {len(ops)} rotary ops, {dim // 2} frequencies, attention_factor {att:.6f}: "
      + ("ok" if not bad else f"{bad} mismatches"))
sys.exit(1 if bad else 0)
