#!/usr/bin/env python3
"""with_input_ids.py DUMP OUT IDS: writes DUMP (moe-run --dump: logits,
generated_ids) plus input_ids = IDS (comma-separated) to OUT, the layout of
the fixtures' expected.safetensors that scripts/gpu-check.sh compares with.
scripts/gpu-build.sh makes the quantized fixtures' expected outputs with it
from CPU backend runs."""
import json
import struct
import sys


def main():
    src, dst, ids = sys.argv[1], sys.argv[2], [int(x) for x in sys.argv[3].split(",")]
    with open(src, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
        data = f.read()
    hdr.pop("__metadata__", None)
    extra = struct.pack("<%dq" % len(ids), *ids)
    hdr["input_ids"] = {"dtype": "I64", "shape": [1, len(ids)],
                        "data_offsets": [len(data), len(data) + len(extra)]}
    head = json.dumps(hdr).encode()
    head += b" " * (-len(head) % 8)
    with open(dst, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        f.write(data + extra)


if __name__ == "__main__":
    main()
