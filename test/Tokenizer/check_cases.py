#!/usr/bin/env python3
"""Checks moe-tokenize against a cases.json produced by Hugging Face tokenizers.

usage: check_cases.py MOE_TOKENIZE TOKENIZER.json CASES.json

CASES.json is either a list of {text, ids, ids_with_special, decoded} (the
shared fixtures) or {"cases": [...], "decode_cases": [{ids, skip_special,
decoded}]} (test/Tokenizer/Inputs). Every text goes through one
`moe-tokenize --jsonl` run and all three fields must match exactly; every
decode case through `moe-tokenize --decode=...`. Prints each mismatch and a
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
        data = json.load(f)
    cases = data if isinstance(data, list) else data["cases"]
    decode_cases = [] if isinstance(data, list) else data.get("decode_cases", [])

    stdin = "".join(json.dumps({"text": c["text"]}) + "\n" for c in cases)
    proc = subprocess.run([tool, tokenizer, "--jsonl"], input=stdin.encode(),
                          capture_output=True)
    if proc.returncode != 0:
        sys.exit("moe-tokenize failed: " + proc.stderr.decode(errors="replace"))
    # Not splitlines(): U+0085 and U+2028 may appear raw inside a line.
    lines = proc.stdout.decode("utf-8").split("\n")[:-1]
    if len(lines) != len(cases):
        sys.exit(f"expected {len(cases)} output lines, got {len(lines)}")
    passed = failed = 0
    for case, line in zip(cases, lines):
        got = json.loads(line)
        bad = [f for f in ("ids", "ids_with_special", "decoded")
               if got[f] != case[f]]
        for field in bad:
            print(f"MISMATCH {field} for {case['text']!r}:\n"
                  f"  expected {case[field]!r}\n  got      {got[field]!r}")
        failed += bool(bad)
        passed += not bad

    for case in decode_cases:
        args = [tool, tokenizer, "--decode=" + ",".join(map(str, case["ids"]))]
        if case["skip_special"]:
            args.append("--skip-special")
        proc = subprocess.run(args, capture_output=True)
        got = proc.stdout.decode("utf-8")
        if proc.returncode != 0 or got != case["decoded"] + "\n":
            failed += 1
            print(f"MISMATCH decode {case['ids']} skip={case['skip_special']}:"
                  f"\n  expected {case['decoded']!r}\n  got      {got[:-1]!r}"
                  f" {proc.stderr.decode(errors='replace')}")
        else:
            passed += 1
    print(f"{cases_path}: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
