#!/usr/bin/env python3
"""Checks the architecture table of docs/supported.md against the importer.

usage: check_supported.py SUPPORTED.md MAKE_CHECKPOINT.py FIXTURES_DIR WORK_DIR

1. The rows are exactly the model_types moe-compile accepts (read from its
   error for an unknown model_type).
2. For every row, a checkpoint ("fixture NAME" from FIXTURES_DIR, or
   "synthetic ARCH" written by MAKE_CHECKPOINT.py) is imported with
   moe-compile --emit=mlir --pipeline=none and each cell is checked against
   the IR: MoE (moe.experts), shared expert (moe.sigmoid_gate, or the
   ungated shared_experts MLP of DeepSeek-V3), norm
   (moe.rms_norm / moe.layer_norm), positions (moe.rotary /
   moe.position_embedding), q/k norm (q_norm weights).
Rows whose fixture is missing are reported as skipped.
"""
import json
import os
import re
import subprocess
import sys

doc, make_checkpoint, fixtures, work = sys.argv[1:5]
os.makedirs(work, exist_ok=True)
errors = []


def moe_compile(*args):
    return subprocess.run(["moe-compile", *args], capture_output=True, text=True)


# The table under "## Architectures".
text = open(doc).read()
section = text.split("## Architectures", 1)[1].split("\n## ", 1)[0]
lines = section.splitlines()
header_line = next(l for l in lines if l.startswith("| `model_type`"))
header = [c.strip() for c in header_line.strip().strip("|").split("|")]
rows = [l for l in lines if l.startswith("| `") and l != header_line]
table = {}
for row in rows:
    cells = dict(zip(header, (c.strip() for c in row.strip().strip("|").split("|"))))
    table[cells["`model_type`"].strip("`")] = cells

# 1. The importer's list.
os.makedirs(os.path.join(work, "unknown"), exist_ok=True)
with open(os.path.join(work, "unknown", "config.json"), "w") as f:
    json.dump({"model_type": "no-such-model"}, f)
out = moe_compile(os.path.join(work, "unknown", "config.json"), "--emit=report")
m = re.search(r"expected one of ([^)]*)\)", out.stderr)
if not m:
    sys.exit(f"error: no list of model_types in: {out.stderr.strip()}")
accepted = [a.strip() for a in m.group(1).split(",")]
for arch in accepted:
    if arch not in table:
        errors.append(f"the importer accepts {arch}, the table does not list it")
for arch in table:
    if arch not in accepted:
        errors.append(f"the table lists {arch}, the importer rejects it")

# 2. The cells.
def has_op(ir, name):
    return re.search(r"= moe\." + name + r" ", ir) is not None

checked = 0
for arch, cells in table.items():
    source = cells["checked with"]
    kind, _, name = source.partition(" ")
    name = name.strip("`")
    if kind == "fixture":
        path = os.path.join(fixtures, name)
        if not os.path.isdir(path):
            print(f"{arch}: skipped ({path} missing)")
            continue
    elif kind == "synthetic":
        path = os.path.join(work, name)
        subprocess.run([sys.executable, make_checkpoint, name, path], check=True,
                       stdout=subprocess.DEVNULL)
    else:
        errors.append(f"{arch}: 'checked with' must be fixture or synthetic, not {source}")
        continue
    out = moe_compile(path, "--emit=mlir", "--pipeline=none")
    if out.returncode != 0:
        errors.append(f"{arch}: {source} does not import: {out.stderr.strip()}")
        continue
    ir = out.stdout
    if f'architecture = "{arch}"' not in ir:
        errors.append(f"{arch}: {source} is not a {arch} checkpoint")
    facts = {
        "MoE": "yes" if has_op(ir, "experts") else "no",
        "shared expert": ("yes" if has_op(ir, "sigmoid_gate") or "mlp.shared_experts." in ir
                          else "no"),
        "norm": ("RMSNorm" if has_op(ir, "rms_norm") and not has_op(ir, "layer_norm")
                 else "LayerNorm" if has_op(ir, "layer_norm") and not has_op(ir, "rms_norm")
                 else "mixed"),
        "positions": ("RoPE" if has_op(ir, "rotary")
                      else "learned" if has_op(ir, "position_embedding") else "none"),
        "q/k norm": "yes" if "q_norm" in ir else "no",
    }
    for column, fact in facts.items():
        if cells[column] != fact:
            errors.append(f"{arch}: the table says {column} = {cells[column]}, "
                          f"the IR of {source} says {fact}")
    checked += 1

for e in errors:
    print("error:", e)
print(f"{len(table)} architectures listed, {checked} checked against their IR, "
      f"{len(errors)} errors")
sys.exit(1 if errors else 0)
