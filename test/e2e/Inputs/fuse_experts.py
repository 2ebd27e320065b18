#!/usr/bin/env python3
"""Rewrites a checkpoint's per-expert tensors as fused 3-D expert tensors.

usage: fuse_experts.py SRC_DIR DST_DIR --layout rows|gpt-oss [--variant NAME]

SRC_DIR holds one model.safetensors with Qwen/OLMoE-style per-expert tensors
(model.layers.L.mlp.experts.E.{gate,up,down}_proj.weight). DST_DIR gets the
same config.json and the same weights with each layer's experts fused:

  rows     transformers v5: mlp.experts.gate_up_proj [E, 2I, H] (gate rows,
           then up rows, per expert) and mlp.experts.down_proj [E, H, I]
  gpt-oss  gpt-oss bf16 checkpoints: gate_up_proj [E, H, 2I] with gate/up
           columns interleaved (gate = column 2j, up = 2j + 1) and down_proj
           [E, I, H] (transposed)

--variant breaks it for error tests: bad-shape (gate_up_proj one row short),
no-down (down_proj missing).
"""
import argparse
import json
import os
import re
import shutil
import struct
from collections import defaultdict

import numpy as np

DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "I64": np.int64}


def read(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, h in header.items():
        if name == "__metadata__":
            continue
        b, e = h["data_offsets"]
        out[name] = (h["dtype"], np.frombuffer(data[b:e], DTYPES[h["dtype"]]).reshape(h["shape"]))
    return out


def write(path, tensors):
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name in sorted(tensors):
        dtype, a = tensors[name]
        raw = np.ascontiguousarray(a).tobytes()
        header[name] = {"dtype": dtype, "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for b in blobs:
            f.write(b)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--layout", required=True, choices=["rows", "gpt-oss"])
    ap.add_argument("--variant", default="ok", choices=["ok", "bad-shape", "no-down"])
    a = ap.parse_args()
    tensors = read(os.path.join(a.src, "model.safetensors"))
    experts = defaultdict(dict)  # prefix -> {(e, role): (dtype, array)}
    out = {}
    for name, t in tensors.items():
        m = re.fullmatch(r"(.*\.experts)\.(\d+)\.(gate|up|down)_proj\.weight", name)
        if m:
            experts[m.group(1)][(int(m.group(2)), m.group(3))] = t
        else:
            out[name] = t
    for prefix, ws in experts.items():
        E = 1 + max(e for e, _ in ws)
        dtype = ws[(0, "gate")][0]
        gate = np.stack([ws[(e, "gate")][1] for e in range(E)])  # [E, I, H]
        up = np.stack([ws[(e, "up")][1] for e in range(E)])      # [E, I, H]
        down = np.stack([ws[(e, "down")][1] for e in range(E)])  # [E, H, I]
        if a.layout == "rows":
            gate_up = np.concatenate([gate, up], axis=1)          # [E, 2I, H]
        else:
            E_, I, H = gate.shape
            gate_up = np.empty((E_, H, 2 * I), gate.dtype)        # [E, H, 2I]
            gate_up[:, :, 0::2] = gate.transpose(0, 2, 1)
            gate_up[:, :, 1::2] = up.transpose(0, 2, 1)
            down = down.transpose(0, 2, 1)                        # [E, I, H]
        if a.variant == "bad-shape":
            gate_up = gate_up[:, :-1, :]
        out[prefix + ".gate_up_proj"] = (dtype, gate_up)
        if a.variant != "no-down":
            out[prefix + ".down_proj"] = (dtype, down)
    os.makedirs(a.dst, exist_ok=True)
    shutil.copy(os.path.join(a.src, "config.json"), a.dst)
    write(os.path.join(a.dst, "model.safetensors"), out)


if __name__ == "__main__":
    main()
