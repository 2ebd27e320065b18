#!/usr/bin/env python3
"""Checks moe-tokenize against a cases.json produced by Hugging Face tokenizers.

usage: check_cases.py MOE_TOKENIZE TOKENIZER.json CASES.json

Feeds every case's text through `moe-tokenize --jsonl` and compares ids,
ids_with_special and decoded exactly. Prints one line per mismatch and a
closing 'N passed, N failed' line; exits 1 on any mismatch.
"""
import json
import subprocess
import sys


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    tool, tokenizer, cases_path = sys.argv[1:]
    with open(cases_path, encoding="utf-8") as f:
        cases = json.load(f)
    stdin = "".join(json.dumps({"text": c["text"]}) + "\n" for c in cases)
    proc = subprocess.run([tool, tokenizer, "--jsonl"], input=stdin.encode(),
                          capture_output=True)
    if proc.returncode != 0:
        sys.exit("moe-tokenize failed: " + proc.stderr.decode(errors="replace"))
    lines = proc.stdout.decode("utf-8").splitlines()
    if len(lines) != len(cases):
        sys.exit(f"expected {len(cases)} output lines, got {len(lines)}")
    failed = 0
    for case, line in zip(cases, lines):
        got = json.loads(line)
        for field in ("ids", "ids_with_special", "decoded"):
            if got[field] != case[field]:
                failed += 1
                print(f"MISMATCH {field} for {case['text']!r}:\n"
                      f"  expected {case[field]!r}\n  got      {got[field]!r}")
                break
    print(f"{cases_path}: {len(cases) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
