#!/usr/bin/env bash
# Encode throughput, one thread: moert::Tokenizer vs Hugging Face tokenizers
# (Rust, through its npm binding) on the same text in the same run.
#   bench/tokenizer/run.sh BUILD_DIR NODE_MODULES_DIR [OUT.json]
# NODE_MODULES_DIR holds the npm package `tokenizers` (npm install tokenizers
# in a scratch directory). Also checks both produce the same ids (hash).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$1
modules=$2
out=${3:-}
tokenizer=${TOKENIZER:-$here/../../../shared/fixtures/tokenizers/gpt2/tokenizer.json}
corpus=${CORPUS:-${TMPDIR:-/tmp}/moe-tokenizer-corpus.txt}
[ -f "$corpus" ] || "$here/make-corpus.sh" "$corpus" 4
ours=$("$build/bin/tokenizer-bench" "$tokenizer" "$corpus" --repeat=5)
hf=$(NODE_PATH=$modules TOKENIZERS_PARALLELISM=false node "$here/hf-bench.js" "$tokenizer" "$corpus" --repeat=5)
/usr/bin/python3 - "$ours" "$hf" "$out" <<'PY'
import json, platform, sys
ours, hf = json.loads(sys.argv[1]), json.loads(sys.argv[2])
same = ours["fnv1a"] == hf["fnv1a"] and ours["tokens"] == hf["tokens"]
result = {"benchmark": "tokenizer-encode-gpt2", "machine": platform.processor() or platform.machine(),
          "corpus_bytes": ours["bytes"], "tokens": ours["tokens"], "same_ids": same,
          "moert": ours, "hf_tokenizers": hf,
          "speedup": round(ours["mb_per_s"] / hf["mb_per_s"], 2)}
print(f"{'impl':<16}{'MB/s':>8}{'median s':>10}")
for r in (ours, hf):
    print(f"{r['impl']:<16}{r['mb_per_s']:>8.2f}{r['median_s']:>10.3f}")
print(f"speedup {result['speedup']}x, {ours['tokens']} tokens, identical ids: {same}")
if sys.argv[3]:
    with open(sys.argv[3], "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
sys.exit(0 if same else 1)
PY
