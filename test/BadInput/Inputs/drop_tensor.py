"""Copies a safetensors checkpoint directory without one tensor.

usage: drop_tensor.py SRC_DIR DST_DIR TENSOR
"""
import json
import shutil
import struct
import sys

src, dst, drop = sys.argv[1:4]
shutil.copy(f"{src}/config.json", f"{dst}/config.json")
raw = open(f"{src}/model.safetensors", "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n])
data = raw[8 + n:]
if drop not in header:
    sys.exit(f"{src}: no tensor {drop}")
out, blob = {}, b""
for name, info in header.items():
    if name == "__metadata__" or name == drop:
        continue
    s, e = info["data_offsets"]
    out[name] = dict(info, data_offsets=[len(blob), len(blob) + e - s])
    blob += data[s:e]
text = json.dumps(out).encode()
text += b" " * ((8 - len(text) % 8) % 8)
open(f"{dst}/model.safetensors", "wb").write(struct.pack("<Q", len(text)) + text + blob)
