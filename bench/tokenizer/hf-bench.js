// Encode throughput of Hugging Face tokenizers (Rust, npm package
// `tokenizers`) on the same corpus, chunks and protocol as tokenizer-bench:
//   node hf-bench.js TOKENIZER.json CORPUS.txt [--repeat=N] [--chunk=BYTES]
// Prints the same JSON line with "impl": "hf-tokenizers".
'use strict';
const fs = require('fs');
const { Tokenizer } = require('tokenizers');

async function main() {
  const [file, corpusPath, ...rest] = process.argv.slice(2);
  let repeat = 5, chunkBytes = 64 * 1024;
  for (const a of rest) {
    if (a.startsWith('--repeat=')) repeat = Math.max(1, parseInt(a.slice(9)));
    if (a.startsWith('--chunk=')) chunkBytes = parseInt(a.slice(8));
  }
  const tok = Tokenizer.fromFile(file);
  const corpus = fs.readFileSync(corpusPath);
  // Same byte-based chunking as tokenizer-bench (cut after a newline).
  const chunks = [];
  for (let pos = 0; pos < corpus.length;) {
    let end = Math.min(corpus.length, pos + chunkBytes);
    const nl = corpus.indexOf(0x0a, end);
    end = nl < 0 ? corpus.length : nl + 1;
    chunks.push(corpus.subarray(pos, end).toString('utf8'));
    pos = end;
  }
  let hash = 1469598103934665603n, tokens = 0;
  const times = [];
  for (let pass = 0; pass <= repeat; ++pass) {
    const t0 = process.hrtime.bigint();
    for (const c of chunks) {
      const enc = await tok.encode(c, null, { addSpecialTokens: false });
      if (pass === 0) {
        const ids = enc.getIds();
        tokens += ids.length;
        for (const id of ids)
          hash = ((hash ^ BigInt(id)) * 1099511628211n) & 0xffffffffffffffffn;
      }
    }
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    if (pass > 0) times.push(s);
  }
  times.sort((a, b) => a - b);
  const median = times[Math.floor(times.length / 2)];
  console.log(JSON.stringify({
    impl: 'hf-tokenizers', bytes: corpus.length, tokens,
    fnv1a: hash.toString(16).padStart(16, '0'), best_s: +times[0].toFixed(4),
    median_s: +median.toFixed(4), mb_per_s: +(corpus.length / median / 1e6).toFixed(2),
  }));
}
main().catch((e) => { console.error(e); process.exit(1); });
