// The official openai npm client (version pinned by package-lock.json)
// against moe-serve: lists the model, completes once not streamed and once
// streamed, and checks both against the expected token ids.
//   node client.mjs BASE_URL EXPECTED.json ({"prompt": ids, "want": ids})
import OpenAI from "openai";
import { readFileSync } from "node:fs";

const [baseURL, expectedFile] = process.argv.slice(2);
const { prompt, want } = JSON.parse(readFileSync(expectedFile, "utf8"));
const client = new OpenAI({ baseURL, apiKey: "unused", maxRetries: 0, timeout: 60000 });
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
function check(ok, what) {
  if (!ok) {
    console.log(`FAIL: ${what}`);
    process.exit(1);
  }
}

const models = await client.models.list();
const model = models.data[0].id;
console.log(`model: ${model}`);
// vLLM's extensions (ignore_eos, return_token_ids) go in the body as given.
const body = { model, prompt, max_tokens: want.length, temperature: 0, ignore_eos: true,
               return_token_ids: true };
const c = await client.completions.create(body);
check(same(c.choices[0].token_ids, want), `completion tokens ${JSON.stringify(c.choices[0])}`);
check(c.usage.completion_tokens === want.length, `usage ${JSON.stringify(c.usage)}`);
console.log(`completion: ${c.choices[0].token_ids.length} tokens, finish_reason ${c.choices[0].finish_reason}`);

const stream = await client.completions.create({ ...body, stream: true });
const ids = [];
let chunks = 0, finish = null;
for await (const chunk of stream) {
  ++chunks;
  for (const ch of chunk.choices) {
    ids.push(...(ch.token_ids ?? []));
    finish = ch.finish_reason ?? finish;
  }
}
check(same(ids, want), `streamed tokens ${JSON.stringify(ids)}`);
console.log(`stream: ${ids.length} tokens in ${chunks} chunks, finish_reason ${finish}`);

// An error reaches the client as an APIError with its status.
try {
  await client.completions.create({ ...body, n: 2 });
  check(false, "n: 2 was accepted");
} catch (e) {
  check(e instanceof OpenAI.APIError && e.status === 400, `n: 2 gave ${e}`);
  console.log(`n=2: ${e.status} ${e.message}`);
}
