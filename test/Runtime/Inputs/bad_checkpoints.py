#!/usr/bin/python3
"""bad_checkpoints.py SRC_DIR OUT_DIR: writes corrupted copies of the
safetensors checkpoint in SRC_DIR (one directory each) for bad-input tests."""
import json, os, struct, sys

src, out = sys.argv[1], sys.argv[2]
with open(os.path.join(src, "model.safetensors"), "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    header = json.loads(f.read(n))
    data = f.read()


def write(name, hdr, payload, raw_header=None, length=None):
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    h = raw_header if raw_header is not None else json.dumps(hdr).encode()
    with open(os.path.join(d, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(h) if length is None else length))
        f.write(h)
        f.write(payload)
    return d


def copy_hdr():
    return json.loads(json.dumps(header))


names = sorted(k for k in header if k != "__metadata__")
first = names[0]

h = copy_hdr()
h[first]["data_offsets"][1] = len(data) + 64
write("offsets-beyond-file", h, data)

h = copy_hdr()
a, b = names[0], names[1]
h[b]["data_offsets"] = [h[a]["data_offsets"][0], h[a]["data_offsets"][0] + (h[b]["data_offsets"][1] - h[b]["data_offsets"][0])]
write("overlap", h, data)

h = copy_hdr()
h[first]["shape"] = [h[first]["shape"][0] + 1] + h[first]["shape"][1:]
write("size-mismatch", h, data)

h = copy_hdr()
h[first]["dtype"] = "Q4_K"
write("unknown-dtype", h, data)

h = copy_hdr()
del h["model.norm.weight"]
write("missing-tensor", h, data)

h = copy_hdr()
h[first]["shape"] = list(reversed(h[first]["shape"]))
write("wrong-shape", h, data)

# A tensor stored as F16 where the plan records F32: bytes are consistent.
h = copy_hdr()
t = h["model.norm.weight"]
beg, end = t["data_offsets"]
t["dtype"] = "F16"
half = (end - beg) // 2
t["data_offsets"] = [beg, beg + half]
write("wrong-dtype", h, data)

raw = json.dumps(header).encode()
dup = raw[:-1] + b', "' + first.encode() + b'": ' + json.dumps(header[first]).encode() + b"}"
write("duplicate-name", None, data, raw_header=dup)

write("header-too-long", header, data, length=10 ** 12)
write("not-json", None, data, raw_header=b"{not json")

d = os.path.join(out, "truncated")
os.makedirs(d, exist_ok=True)
with open(os.path.join(d, "model.safetensors"), "wb") as f:
    f.write(b"\x01\x02")

d = os.path.join(out, "missing-shard")
os.makedirs(d, exist_ok=True)
with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
    json.dump({"weight_map": {k: "model-00001-of-00002.safetensors" for k in names}}, f)

d = os.path.join(out, "shard-traversal")
os.makedirs(d, exist_ok=True)
with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
    json.dump({"weight_map": {first: "../offsets-beyond-file/model.safetensors"}}, f)

os.makedirs(os.path.join(out, "empty-dir"), exist_ok=True)
