// Writes cases.json next to each tokenizer.json in OUTDIR, computed by the
// Hugging Face tokenizers library (npm package `tokenizers`, Rust bindings).
// See README.md. Not part of the build or of CI.
//
// usage: node make_cases.js OUTDIR
'use strict';
const fs = require('fs');
const path = require('path');
const { Tokenizer } = require('tokenizers');

const TEXTS = [
  '',
  'Hello world',
  ' Hello world',
  '   leading and trailing spaces   ',
  'multiple     spaces   between  words',
  '\n\n\n',
  'line one\r\nline two\n\ttabbed',
  "It's, don't, we're, I've, I'm, you'll, he'd",
  "IT'S DON'T WE'RE I'VE I'M YOU'LL HE'D",
  '1234567 and 3.14159 and 1,000,000',
  'Wait... what?!?! (really) [yes] {no} <maybe> --- ***',
  'emoji: 😀👍🏽 family 👨‍👩‍👧‍👦 flag 🇺🇸 keycap 1️⃣',
  '日本語のテキストと中文文本。한국어 텍스트',
  'مرحبا بالعالم، كيف حالك؟',
  'café vs cafe\u0301 and naïve vs nai\u0308ve',
  'ﬁne ①②③ ＦＵＬＬＷＩＤＴＨ x² ℌ',
  'İstanbul ΣΊΣΥΦΟΣ Straße',
  'replacement char \uFFFD here',
  'zero\u200bwidth and nbsp\u00a0here and nel\u0085there',
  'The quick brown fox jumps over the lazy dog.',
  'Pneumonoultramicroscopicsilicovolcanoconiosis'.repeat(3),
  'def main():\n    return 0  # code\n',
  '<s>Hello</s>',
  'Hello <s> world </s>',
  '<s><s></s>',
  '<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n',
  '<|endoftext|>',
  '<|im_start',
  '[INST] What is MoE? [/INST] A mixture.',
  'a[INST]b  [/INST]  c',
  'fill <mask> here and<mask>there',
  'the tokenizer tokenizes; Tokenizer TOKENIZER',
  'one <sep> two<sep>three   <sep>   four',
  'Hello World and HELLO WORLD and hello  world',
  'ony bony ony, (ony) onyx',
  '[CODE]   x = 1',
  '   ',
  '\u2581already\u2581metaspace',
];

function rng(seed) {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 4294967296;
  };
}

async function main() {
  const out = process.argv[2];
  if (!out) throw new Error('usage: node make_cases.js OUTDIR');
  for (const name of fs.readdirSync(out).sort()) {
    const file = path.join(out, name, 'tokenizer.json');
    if (!fs.existsSync(file)) continue;
    const tok = Tokenizer.fromFile(file);
    const cases = [];
    for (const text of TEXTS) {
      const a = await tok.encode(text, null, { addSpecialTokens: false });
      const b = await tok.encode(text, null, { addSpecialTokens: true });
      const ids = a.getIds();
      cases.push({ text, ids, ids_with_special: b.getIds(),
                   decoded: await tok.decode(ids, false) });
    }
    // Random id sequences: byte-fallback pieces that do not form UTF-8,
    // special tokens kept and skipped.
    const vocabSize = tok.getVocabSize(true);
    const rand = rng(1234);
    const decodeCases = [];
    for (let k = 0; k < 24; ++k) {
      const len = 1 + Math.floor(rand() * 8);
      const ids = [];
      for (let i = 0; i < len; ++i) ids.push(Math.floor(rand() * vocabSize));
      const skip = k % 2 === 1;
      decodeCases.push({ ids, skip_special: skip,
                         decoded: await tok.decode(ids, skip) });
    }
    fs.writeFileSync(path.join(out, name, 'cases.json'),
                     JSON.stringify({ cases, decode_cases: decodeCases }, null, 0)
                         .replace(/\},\{/g, '},\n{') + '\n');
    console.log(`${name}: ${cases.length} cases, ${decodeCases.length} decode cases`);
  }
}
main().catch((e) => { console.error(e); process.exit(1); });
