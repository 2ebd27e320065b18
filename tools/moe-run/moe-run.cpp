//===- moe-run.cpp - Runs a compiled plan ---------------------------------===//
//
// moe-run PLAN [--weights=DIR | --random-weights] [--prompt-ids=...] ...
// Under mpirun -np N each process runs plan.ranks[rank]; rank 0 prints and
// writes the outputs. Every failure is one "error: ..." line and exit 1.
//
//===----------------------------------------------------------------------===//
#include "moert/Backend.h"
#include "moert/Batch.h"
#include "moert/Bench.h"
#include "moert/Prompts.h"
#include "moert/Generate.h"
#include "moert/Safetensors.h"
#include "moert/Tokenizer.h"
#include "moert/Version.h"
#include "ToolSupport.h"
#ifdef MOERT_HAVE_MPI
#include "moert/MpiComm.h"
#endif

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <csignal>
#include <optional>
#include <thread>
#include <unistd.h>

using namespace moert;
using namespace moetool;
using json = nlohmann::json;

namespace {

const char *kUsage = R"(usage: moe-run PLAN [options]
  --weights=DIR            checkpoint directory or .safetensors file
                           (default: the checkpoint the plan was compiled from)
  --random-weights         generate weights per the plan's init (with --seed)
  --prompt-ids=3,17,42     prompt token ids (batch of one)
  --prompt=TEXT            text prompt, tokenized with the checkpoint's tokenizer.json;
                           the generated text streams to stdout
  --prompt-file=FILE       the text prompt from a file
  --tokenizer=FILE         tokenizer.json to use (default: the checkpoint's)
  --max-new-tokens=N       tokens to generate (default 16)
  --temperature=T          sample with temperature T (default 0: greedy)
  --top-p=P                nucleus sampling threshold (default 1)
  --seed=S                 seed for --random-weights and sampling (default 0)
  --ignore-eos             do not stop at the plan's EOS token ids
  --dump=OUT.safetensors   write logits [1,T,V] of the prompt and generated_ids [1,T+N]
  --backend=cpu            backend (default: the plan's target)
  --expert-prediction=on|off  with streamed experts, prefetch the next MoE layer's
                           experts predicted from this layer's hidden state (default off)
  --threads=N              compute threads per rank (default: cores / ranks)
  --prompts=FILE.jsonl     batched generation: one request per line, {"id": ..., "prompt":
                           "text"} or {"id": ..., "prompt_ids": [..]}, optionally
                           max_new_tokens, temperature, top_p, seed, ignore_eos, stop;
                           the flags give the defaults. Output lines in input order.
  --output=OUT.jsonl       where --prompts writes its lines (default: stdout)
  --batch=N[,N...]         sequences per step (at most the plan's --max-batch); with
                           --bench and no --prompts, N random 20-token prompts per size
  --prefill-chunk=N        prompt tokens of one sequence per batched step (default:
                           the plan's max_tokens)
  --bench                  time prefill and decode (with --warmup=W --iters=I, --json);
                           with --prompts or --batch: throughput, time to first token,
                           inter-token latency and batch occupancy
  --json                   print one JSON object: with --bench the timings, else
                           prompt_ids, output_ids, text, finish_reason and timings
  --trace=FILE.json        Chrome trace of every step, per rank and stream
  --expert-profile=FILE.json  per-layer per-expert routed-token counts
  --version, --help
)";

struct Options {
  std::string plan, weights, dump, trace, profile, prompt, promptFile, tokenizer, backend;
  std::string prompts, output;
  std::vector<int64_t> batch; // --batch sizes
  int64_t prefillChunk = 0;
  bool predictExperts = false;
  bool randomWeights = false, bench = false, json = false, ignoreEos = false, help = false,
       version = false, havePromptIds = false;
  std::vector<int64_t> promptIds;
  int64_t maxNewTokens = -1, warmup = 1, iters = 3, threads = -1; // -1: auto
  uint64_t seed = 0;
  float temperature = 0.0f, topP = 1.0f;
};

Options parseArgs(int argc, char **argv) {
  Options o;
  forEachFlag(argc, argv, "moe-run", o.plan, [&](const Flag &f) {
    const std::string &key = f.key;
    if (key == "--weights")
      o.weights = f.value();
    else if (key == "--random-weights")
      o.randomWeights = f.set();
    else if (key == "--seed")
      o.seed = f.number<uint64_t>();
    else if (key == "--prompt-ids") {
      const std::string &v = f.value();
      o.havePromptIds = true;
      size_t s = 0;
      while (s <= v.size()) {
        size_t c = v.find(',', s);
        std::string tok = v.substr(s, c == std::string::npos ? std::string::npos : c - s);
        int64_t id = parseNumber<int64_t>("--prompt-ids", tok);
        if (id < 0)
          fail("--prompt-ids: token id {} is negative (expected ids >= 0)", id);
        o.promptIds.push_back(id);
        if (c == std::string::npos)
          break;
        s = c + 1;
      }
    } else if (key == "--prompt")
      o.prompt = f.value();
    else if (key == "--prompt-file")
      o.promptFile = f.value();
    else if (key == "--tokenizer")
      o.tokenizer = f.value();
    else if (key == "--max-new-tokens") {
      // -1 is "not given" internally: a negative value is an error here.
      o.maxNewTokens = f.number<int64_t>();
      if (o.maxNewTokens < 0)
        fail("--max-new-tokens={}: negative (expected >= 0)", o.maxNewTokens);
    } else if (key == "--temperature")
      o.temperature = f.number<float>();
    else if (key == "--top-p")
      o.topP = f.number<float>();
    else if (key == "--ignore-eos")
      o.ignoreEos = f.set();
    else if (key == "--dump")
      o.dump = f.value();
    else if (key == "--backend")
      o.backend = f.value();
    else if (key == "--expert-prediction") {
      const std::string &v = f.value();
      if (v != "on" && v != "off")
        fail("--expert-prediction={}: (expected on or off)", v);
      o.predictExperts = v == "on";
    } else if (key == "--threads") {
      o.threads = f.number<int64_t>();
      if (o.threads <= 0)
        fail("--threads={}: (expected a positive thread count)", o.threads);
    } else if (key == "--bench")
      o.bench = f.set();
    else if (key == "--prompts")
      o.prompts = f.value();
    else if (key == "--output")
      o.output = f.value();
    else if (key == "--batch") {
      const std::string &v = f.value();
      size_t s = 0;
      o.batch.clear();
      while (s <= v.size()) {
        size_t c = v.find(',', s);
        int64_t n = parseNumber<int64_t>(key, v.substr(s, c == std::string::npos ? std::string::npos
                                                                                 : c - s));
        if (n < 1 || n > 65536)
          fail("--batch={}: {} (expected batch sizes 1..65536)", v, n);
        o.batch.push_back(n);
        if (c == std::string::npos)
          break;
        s = c + 1;
      }
    } else if (key == "--prefill-chunk") {
      o.prefillChunk = f.number<int64_t>();
      if (o.prefillChunk < 1)
        fail("--prefill-chunk={}: (expected a positive token count)", o.prefillChunk);
    } else if (key == "--warmup")
      o.warmup = f.number<int64_t>();
    else if (key == "--iters")
      o.iters = f.number<int64_t>();
    else if (key == "--json")
      o.json = f.set();
    else if (key == "--trace")
      o.trace = f.value();
    else if (key == "--expert-profile")
      o.profile = f.value();
    else if (key == "--help")
      o.help = f.set();
    else if (key == "--version")
      o.version = f.set();
    else
      return false;
    return true;
  });
  if (o.help || o.version)
    return o;
  if (o.plan.empty())
    fail("missing PLAN (expected moe-run PLAN [options])");
  if (o.threads > 1024)
    fail("--threads={}: too many (expected at most 1024)", o.threads);
  if (!(o.temperature >= 0.0f) || !std::isfinite(o.temperature))
    fail("--temperature={}: (expected a finite value >= 0)", o.temperature);
  if (!(o.topP > 0.0f && o.topP <= 1.0f))
    fail("--top-p={}: (expected 0 < p <= 1)", o.topP);
  if (o.warmup < 0 || o.warmup > 1000)
    fail("--warmup={}: (expected 0..1000)", o.warmup);
  if (o.iters < 1 || o.iters > 1000)
    fail("--iters={}: (expected 1..1000)", o.iters);
  if (o.randomWeights && !o.weights.empty())
    fail("--weights and --random-weights both given (expected one source of weights)");
  if (int(o.havePromptIds) + int(!o.prompt.empty()) + int(!o.promptFile.empty()) > 1)
    fail("more than one of --prompt, --prompt-file and --prompt-ids given (expected one prompt)");
  if (!o.promptFile.empty()) {
    std::string text = readFile(o.promptFile);
    if (text.empty())
      fail("{}: empty prompt file (expected the prompt text)", o.promptFile);
    o.prompt = std::move(text);
  }
  for (const std::string *out : {&o.dump, &o.trace, &o.profile, &o.output})
    if (!out->empty() && *out == o.plan)
      fail("{}: output would overwrite the plan", *out);
  bool batched = !o.prompts.empty() || !o.batch.empty();
  if (!o.output.empty() && o.prompts.empty())
    fail("--output: only with --prompts (expected --prompts=FILE.jsonl)");
  if (!o.output.empty() && o.output == o.prompts)
    fail("--output={}: would overwrite --prompts (expected another file)", o.output);
  if (batched && (o.havePromptIds || !o.prompt.empty()))
    fail("--prompts/--batch with --prompt-ids or --prompt (expected the prompts from one of them)");
  if (batched && !o.dump.empty())
    fail("--dump: not with --prompts or --batch (expected a single --prompt-ids run)");
  if (!o.batch.empty() && o.prompts.empty() && !o.bench)
    fail("--batch without --prompts or --bench (expected --prompts=FILE.jsonl, or --bench for "
         "random prompts)");
  if (o.batch.size() > 1 && !o.bench)
    fail("--batch: several sizes only with --bench (expected one batch size)");
  if (o.prefillChunk > 0 && !batched)
    fail("--prefill-chunk: only with --prompts or --batch");
  return o;
}

/// A one-line progress bar on stderr, only when stderr is a terminal.
class Progress {
public:
  Progress(std::string what, bool enabled) : what_(std::move(what)), on_(enabled) {}
  ~Progress() { done(); }
  void update(double done, double total, const char *unit = "") {
    if (!on_ || total <= 0)
      return;
    int64_t now = nowNs();
    if (now - last_ < 100'000'000 && done < total)
      return;
    last_ = now;
    int pct = int(100.0 * done / total), w = 30, fill = pct * w / 100;
    std::fprintf(stderr, "\r%s [%s%s] %3d%% %s", what_.c_str(), std::string(size_t(fill), '#').c_str(),
                 std::string(size_t(w - fill), ' ').c_str(), pct, unit);
    std::fflush(stderr);
    shown_ = true;
  }
  void done() {
    if (shown_)
      std::fprintf(stderr, "\r\033[K");
    shown_ = false;
  }

private:
  std::string what_;
  bool on_, shown_ = false;
  int64_t last_ = 0;
};

std::string joinIds(const std::vector<int64_t> &v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) {
    if (i)
      s += ',';
    s += std::to_string(v[i]);
  }
  return s;
}

struct Stats {
  double median, min, max;
};
Stats stats(std::vector<double> v) {
  if (v.empty())
    return {0, 0, 0};
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  double med = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
  return {med, v.front(), v.back()};
}

void writeProfile(const std::string &path, const PlanFile &plan, const Session &s,
                  int64_t tokens) {
  json layers = json::array();
  for (const GateProfile &g : s.expertProfile())
    layers.push_back({{"layer", g.layer},
                      {"step", g.name},
                      {"num_experts", g.routed.size()},
                      {"routed", g.routed},
                      {"dropped", g.dropped}});
  json doc = {{"model", plan.plan().model()->name() ? plan.plan().model()->name()->str() : ""},
              {"plan", plan.path()},
              {"tokens", tokens},
              {"layers", layers}};
  // Names and paths need not be valid UTF-8: replaced, not an exception.
  writeFileAtomic(path, doc.dump(1, ' ', false, json::error_handler_t::replace) + "\n");
}

/// "stop" when generation ended at an EOS id (generate()'s rule: the given
/// ids, else the plan's), "length" when it produced every token asked for.
const char *finishReason(const std::vector<int64_t> &gen, int64_t maxNew,
                         const GenerateOptions &go, const plan::Plan &p) {
  std::vector<int64_t> eos = go.eosIds;
  if (eos.empty() && p.model()->eos_token_ids())
    eos.assign(p.model()->eos_token_ids()->begin(), p.model()->eos_token_ids()->end());
  bool atEos = go.stopAtEos && !gen.empty() &&
               std::find(eos.begin(), eos.end(), gen.back()) != eos.end();
  return atEos || int64_t(gen.size()) < maxNew ? "stop" : "length";
}

/// What every rank runs, checked before any weight is loaded.
struct Job {
  std::unique_ptr<PlanFile> plan;
  std::unique_ptr<Tokenizer> tokenizer; // for a text prompt
  std::vector<int64_t> eosIds;          // generation_config.json's, if any
  std::vector<int64_t> prompt;
  int64_t maxNew = 0;
  int threads = 1; // per rank
  std::string backend;
  // --prompts: every line; the requests of the good ones (reqLine: their line index).
  std::vector<PromptLine> lines;
  std::vector<std::string> lineError; // per line, "" when it runs
  std::vector<SequenceRequest> requests;
  std::vector<size_t> reqLine;
  int64_t maxBatch = 1; // --batch (the largest size) or the plan's max_batch
};

/// --prompts: reads and checks every line (a bad line gets its error, the
/// others their request).
void preparePrompts(const Options &o, const PlanFile &plan, Job &job) {
  std::string text = readFile(o.prompts);
  job.lines = parsePromptLines(text, o.prompts);
  if (job.lines.empty())
    fail("{}: no prompts (expected one JSON object per line)", o.prompts);
  bool needTok = false;
  for (const PromptLine &l : job.lines)
    needTok |= l.error.empty() && (l.prompt || !l.stopStrings.empty());
  // The tokenizer gives outputs their text when there is one; lines with
  // text prompts or stop strings need it.
  std::string tokError;
  try {
    job.tokenizer = loadTokenizer(o.tokenizer, o.weights, plan);
  } catch (const Error &e) {
    tokError = e.what();
  }
  if (!job.tokenizer && needTok && !o.tokenizer.empty())
    fail("{}", tokError); // an explicit --tokenizer that does not load is the run's error
  job.lineError.assign(job.lines.size(), "");
  for (size_t i = 0; i < job.lines.size(); ++i) {
    const PromptLine &l = job.lines[i];
    std::string &err = job.lineError[i];
    if (!l.error.empty()) {
      err = l.error;
      continue;
    }
    std::string where = fmt::format("{}:{}: ", o.prompts, l.line);
    SequenceRequest r;
    if (l.prompt || !l.stopStrings.empty()) {
      if (!job.tokenizer) {
        err = where + (l.prompt ? "prompt" : "stop") +
              ": text needs a tokenizer, and there is none (" + tokError +
              "; expected prompt_ids and token-id stop lists, or --tokenizer=FILE)";
        continue;
      }
    }
    if (l.prompt) {
      try {
        for (uint32_t id : job.tokenizer->encodePrompt(*l.prompt))
          r.prompt.push_back(int64_t(id));
      } catch (const std::exception &e) {
        err = where + "prompt: " + e.what();
        continue;
      }
    } else {
      r.prompt = *l.promptIds;
    }
    r.maxNewTokens = l.maxNewTokens.value_or(job.maxNew);
    r.temperature = l.temperature.value_or(o.temperature);
    r.topP = l.topP.value_or(o.topP);
    r.seed = l.seed.value_or(o.seed);
    r.stopAtEos = !l.ignoreEos.value_or(o.ignoreEos || o.bench);
    r.eosIds = job.eosIds;
    r.stopIds = l.stopIds;
    if (!l.stopStrings.empty())
      r.stopCheck = stopStringCheck(job.tokenizer.get(), l.stopStrings);
    if (std::string why = checkRequest(plan, r); !why.empty()) {
      err = where + why;
      continue;
    }
    job.reqLine.push_back(i);
    job.requests.push_back(std::move(r));
  }
}

Job prepare(const Options &o, int worldSize) {
  Job job;
  job.plan = std::make_unique<PlanFile>(PlanFile::load(o.plan));
  const PlanFile &plan = *job.plan;
  const plan::Plan &p = plan.plan();
  if (worldSize > 1 && p.num_ranks() != worldSize)
    fail("{}: plan was compiled for {} rank(s) but runs on {} (expected mpirun -np {})",
         plan.path(), p.num_ranks(), worldSize, p.num_ranks());
  std::string target = p.target() == plan::Target::CUDA ? "cuda" : "cpu";
  job.backend = o.backend.empty() ? target : o.backend;
  std::vector<std::string> built = availableBackends();
  if (std::find(built.begin(), built.end(), job.backend) == built.end()) {
    if (o.backend.empty())
      fail("{}: compiled for --target={}, but this moe-run has no {} backend (expected "
           "--backend=cpu to run it on the CPU)",
           plan.path(), target, target);
    makeBackend(job.backend, {}); // says why
  }
  // Sequences at once: max_batch in each data-parallel group.
  const int64_t capacity = plan.maxBatch() * plan.dataParallel();
  job.maxBatch = o.batch.empty() ? capacity
                                 : *std::max_element(o.batch.begin(), o.batch.end());
  if (job.maxBatch > capacity)
    fail("--batch={}: more than the plan's {} sequences at once (max_batch {} x {} "
         "data-parallel groups; expected a plan compiled with a larger moe-compile --max-batch)",
         job.maxBatch, capacity, plan.maxBatch(), plan.dataParallel());
  if (!o.prompts.empty() || !o.batch.empty()) {
    job.maxNew = o.maxNewTokens >= 0 ? o.maxNewTokens : (o.bench ? 64 : 16);
    if (!o.randomWeights)
      job.eosIds = generationEosIds(o.weights, plan);
    if (!o.prompts.empty())
      preparePrompts(o, plan, job);
    if (!o.output.empty())
      AtomicFile probe(o.output); // an unwritable output is found before the run
    job.threads = int(o.threads);
    if (job.threads < 0)
      job.threads = std::max(1, int(std::thread::hardware_concurrency()) / p.num_ranks());
    return job;
  }
  std::vector<int64_t> &prompt = job.prompt;
  prompt = o.promptIds;
  if (!o.prompt.empty()) {
    job.tokenizer = loadTokenizer(o.tokenizer, o.weights, plan);
    try {
      for (uint32_t id : job.tokenizer->encodePrompt(o.prompt))
        prompt.push_back(int64_t(id));
    } catch (const std::exception &e) {
      fail("--prompt: {}", e.what());
    }
    if (prompt.empty())
      fail("--prompt: the text encodes to no tokens (expected a non-empty prompt)");
  }
  if (!o.randomWeights)
    job.eosIds = generationEosIds(o.weights, plan);
  job.maxNew = o.maxNewTokens >= 0 ? o.maxNewTokens : (o.bench ? 64 : 16);
  if (prompt.empty()) {
    if (!o.bench)
      fail("no prompt (expected --prompt-ids=ID,ID,... or --prompt=TEXT)");
    for (int i = 0; i < 20; ++i) // the benchmark protocol's 20-token prompt
      prompt.push_back((int64_t(i) * 7919 + 13) % plan.vocabSize());
  }
  for (int64_t id : prompt)
    if (id >= plan.vocabSize()) {
      // Ids beyond a tokenizer's token count (gaps in its added tokens).
      if (job.tokenizer)
        fail("{}: token id {} of the prompt is out of range for vocab_size {} (expected the "
             "tokenizer of the model the plan was compiled from)",
             o.tokenizer.empty() ? "--prompt" : "--tokenizer", id, plan.vocabSize());
      fail("--prompt-ids: token id {} is out of range for vocab_size {} (expected ids < {})", id,
           plan.vocabSize(), plan.vocabSize());
    }
  if (int64_t(prompt.size()) + job.maxNew > plan.maxPositions())
    fail("prompt of {} tokens + {} new tokens exceeds the plan's {} positions (expected at most "
         "{} in total)",
         prompt.size(), job.maxNew, plan.maxPositions(), plan.maxPositions());
  // Outputs are written at the end: find an unwritable path before the run.
  for (const std::string *out : {&o.dump, &o.trace, &o.profile})
    if (!out->empty())
      AtomicFile probe(*out); // removed again when it goes out of scope
  job.threads = int(o.threads);
  if (job.threads < 0)
    job.threads = std::max(1, int(std::thread::hardware_concurrency()) / p.num_ranks());
  return job;
}

/// Set when some --prompts lines failed (exit 1 without aborting the ranks).
std::atomic<bool> gSomeLinesFailed{false};

double percentile(std::vector<double> v, double q) {
  if (v.empty())
    return 0.0;
  std::sort(v.begin(), v.end());
  size_t k = size_t(std::ceil(q * double(v.size())));
  return v[std::min(v.size() - 1, k > 0 ? k - 1 : 0)];
}

/// Throughput and latencies of one batched run.
json batchMetrics(const std::vector<SequenceResult> &res, const BatchStats &st) {
  std::vector<double> ttft, itl;
  int64_t tokens = 0;
  for (const SequenceResult &r : res) {
    tokens += int64_t(r.output.size());
    if (!r.tokenMs.empty())
      ttft.push_back(r.tokenMs.front());
    for (size_t i = 1; i < r.tokenMs.size(); ++i)
      itl.push_back(r.tokenMs[i] - r.tokenMs[i - 1]);
  }
  return {{"batch", st.maxBatch},
          {"sequences", res.size()},
          {"generated_tokens", tokens},
          {"wall_ms", st.wallMs},
          {"tokens_per_s", st.wallMs > 0 ? 1e3 * double(tokens) / st.wallMs : 0.0},
          {"ttft_ms", {{"p50", percentile(ttft, 0.5)}, {"p99", percentile(ttft, 0.99)}}},
          {"itl_ms", {{"p50", percentile(itl, 0.5)}, {"p99", percentile(itl, 0.99)}}},
          {"occupancy", st.occupancy()},
          {"steps", st.steps},
          {"prefill_rows", st.prefillRows},
          {"decode_rows", st.decodeRows},
          {"page_waits", st.pageWaits},
          {"preemptions", st.preemptions},
          {"peak_running", st.peakRunning}};
}

/// --prompts and --batch: batched generation on every rank; rank 0 writes.
int runBatched(const Options &o, const Job &job, Session &session, Comm &comm,
               Backend &backend) {
  const PlanFile &plan = *job.plan;
  const int rank = comm.rank();
  if (!o.bench) {
    BatchOptions bo;
    bo.maxBatch = job.maxBatch;
    bo.prefillChunk = o.prefillChunk;
    std::vector<SequenceResult> res = generateBatch(session, comm, job.requests, bo);
    if (!o.trace.empty())
      session.trace().write(o.trace, comm);
    int64_t generated = 0;
    for (const SequenceResult &r : res)
      generated += int64_t(r.output.size());
    if (!o.profile.empty() && rank == 0)
      writeProfile(o.profile, plan, session, generated);
    if (rank != 0)
      return 0;
    std::vector<const SequenceResult *> byLine(job.lines.size(), nullptr);
    for (size_t k = 0; k < job.reqLine.size(); ++k)
      byLine[job.reqLine[k]] = &res[k];
    std::string out;
    size_t failed = 0;
    for (size_t i = 0; i < job.lines.size(); ++i) {
      const PromptLine &l = job.lines[i];
      // Keys in the documented order: id, prompt_ids, output_ids, text, finish_reason.
      nlohmann::ordered_json j;
      j["id"] = nlohmann::ordered_json::parse(
          l.id.dump(-1, ' ', false, json::error_handler_t::replace));
      const SequenceResult *r = byLine[i];
      std::string err = job.lineError[i];
      if (r && !r->error.empty())
        err = fmt::format("{}:{}: {}", o.prompts, l.line, r->error);
      if (!err.empty()) {
        ++failed;
        std::fprintf(stderr, "error: %s\n", err.c_str());
        j["error"] = {{"message", err}, {"line", l.line}};
      } else {
        const SequenceRequest &q = job.requests[size_t(
            std::find(job.reqLine.begin(), job.reqLine.end(), i) - job.reqLine.begin())];
        j["prompt_ids"] = q.prompt;
        j["output_ids"] = r->output;
        if (job.tokenizer) {
          std::optional<std::string> text = decodeText(*job.tokenizer, r->output);
          if (text && r->finishReason == "stop")
            for (const std::string &s : l.stopStrings) // the text ends before a stop string
              if (size_t at = text->find(s); at != std::string::npos)
                text->resize(at);
          if (text)
            j["text"] = *text;
        }
        j["finish_reason"] = r->finishReason;
      }
      out += j.dump(-1, ' ', false, json::error_handler_t::replace);
      out += '\n';
    }
    if (o.output.empty()) {
      std::fwrite(out.data(), 1, out.size(), stdout);
      std::fflush(stdout);
    } else {
      writeFileAtomic(o.output, out);
    }
    if (failed > 0) {
      std::fprintf(stderr, "error: %zu of %zu lines of %s failed (their output lines carry the "
                           "error)\n",
                   failed, job.lines.size(), o.prompts.c_str());
      gSomeLinesFailed = true;
      return 1;
    }
    return 0;
  }

  // --bench: the --prompts requests, or N random 20-token prompts, per batch size.
  // A benchmark of some of the lines would measure something else: a bad line fails it.
  for (const std::string &err : job.lineError)
    if (!err.empty())
      fail("--bench: {}", err);
  std::vector<int64_t> sizes = o.batch.empty() ? std::vector<int64_t>{job.maxBatch} : o.batch;
  json runs = json::array();
  for (int64_t B : sizes) {
    std::vector<SequenceRequest> reqs = job.requests;
    if (o.prompts.empty())
      for (int64_t k = 0; k < B; ++k) {
        SequenceRequest r;
        for (int64_t i = 0; i < 20; ++i) // the benchmark protocol's 20-token prompts
          r.prompt.push_back((i * 7919 + 13 + k * 104729) % plan.vocabSize());
        r.maxNewTokens = job.maxNew;
        r.stopAtEos = false;
        r.temperature = o.temperature;
        r.topP = o.topP;
        r.seed = o.seed + uint64_t(k);
        if (std::string why = checkRequest(plan, r); !why.empty())
          fail("--batch: {}", why);
        reqs.push_back(std::move(r));
      }
    BatchOptions bo;
    // B sequences at once over the data-parallel groups.
    bo.maxBatch = (B + plan.dataParallel() - 1) / plan.dataParallel();
    bo.prefillChunk = o.prefillChunk;
    json best;
    std::vector<double> tps;
    std::vector<json> measured;
    size_t moved = 0; // bytes this rank's communicator moved in the timed runs
    for (int64_t it = 0; it < o.warmup + o.iters; ++it) {
      BatchStats st;
      size_t before = comm.bytesMoved();
      std::vector<SequenceResult> res = generateBatch(session, comm, reqs, bo, &st);
      if (it < o.warmup)
        continue;
      moved += comm.bytesMoved() - before;
      measured.push_back(batchMetrics(res, st));
    }
    // Every rank's bytes per timed run (a collective: all ranks call it).
    std::vector<std::string> perRank =
        comm.gatherToRoot(std::to_string(moved / size_t(std::max<int64_t>(o.iters, 1))));
    // The run of median throughput.
    std::sort(measured.begin(), measured.end(), [](const json &a, const json &b) {
      return a["tokens_per_s"].get<double>() < b["tokens_per_s"].get<double>();
    });
    json m = measured[measured.size() / 2];
    m["iters"] = o.iters;
    json bytes = json::array();
    for (const std::string &b : perRank)
      bytes.push_back(std::stoull(b));
    m["comm_bytes_by_rank"] = std::move(bytes);
    runs.push_back(m);
  }
  if (rank != 0)
    return 0;
  const plan::Plan &p = plan.plan();
  json j = {{"plan", plan.path()},
            {"model", p.model()->name() ? p.model()->name()->str() : ""},
            {"ranks", comm.size()},
            {"threads", backend.threads()},
            {"backend", backend.name()},
            {"isa", backend.isa()},
            {"compute_dtype", dtypeName(p.compute_dtype())},
            {"max_batch", plan.maxBatch()},
            {"new_tokens", job.maxNew},
            {"warmup", o.warmup},
            {"runs", runs}};
  if (o.json) {
    std::printf("%s\n", j.dump(1, ' ', false, json::error_handler_t::replace).c_str());
    return 0;
  }
  std::printf("plan  %s (%d rank(s), %d thread(s), %s backend, %s, compute %s, max_batch %lld)\n",
              plan.path().c_str(), comm.size(), backend.threads(), backend.name(),
              backend.isa().c_str(), dtypeName(p.compute_dtype()), (long long)plan.maxBatch());
  std::printf("%6s %5s %7s %10s %9s %9s %9s %9s %9s\n", "batch", "seqs", "tokens", "tokens/s",
              "ttft p50", "ttft p99", "itl p50", "itl p99", "occupancy");
  for (const json &r : runs)
    std::printf("%6lld %5zu %7lld %10.2f %9.2f %9.2f %9.3f %9.3f %8.1f%%\n",
                (long long)r["batch"].get<int64_t>(), r["sequences"].get<size_t>(),
                (long long)r["generated_tokens"].get<int64_t>(), r["tokens_per_s"].get<double>(),
                r["ttft_ms"]["p50"].get<double>(), r["ttft_ms"]["p99"].get<double>(),
                r["itl_ms"]["p50"].get<double>(), r["itl_ms"]["p99"].get<double>(),
                100.0 * r["occupancy"].get<double>());
  std::printf("(latencies in ms; ttft from the start of the run, queueing included)\n");
  return 0;
}

/// Runs one rank of the job; rank 0 prints and writes the outputs.
int runRank(const Options &o, const Job &job, Comm &hostComm) {
  const PlanFile &plan = *job.plan;
  const plan::Plan &p = plan.plan();
  const std::vector<int64_t> &prompt = job.prompt;
  const int64_t maxNew = job.maxNew;
  const int threads = job.threads;
  int rank = hostComm.rank();
  bool tty = rank == 0 && ::isatty(STDERR_FILENO);
  BackendOptions bo;
  bo.threads = threads;
  // A GPU per rank of a node: the plan's local rank picks it.
  bo.device = plan.rankProgram(rank).local_rank();
  std::unique_ptr<Backend> backend = makeBackend(job.backend, bo);
  // Several ranks of a device backend talk through its own communicator
  // (CUDA: NCCL over device buffers, ids sent over hostComm).
  std::unique_ptr<Comm> deviceComm = backend->deviceComm(hostComm);
  Comm &comm = deviceComm ? *deviceComm : hostComm;

  std::unique_ptr<WeightStore> weights;
  {
    Progress bar("loading weights", tty);
    ProgressFn prog = [&](uint64_t d, uint64_t t) {
      if (t > (uint64_t(256) << 20))
        bar.update(double(d), double(t));
    };
    std::vector<int> ranks{rank};
    weights = loadWeights(plan, o.weights, o.randomWeights, o.seed, ranks, *backend, prog);
  }

  SessionOptions so;
  so.trace = !o.trace.empty();
  so.expertProfile = !o.profile.empty();
  so.predictExperts = o.predictExperts;
  Session session(plan, rank, *weights, comm, *backend, so);
  if (!o.prompts.empty() || !o.batch.empty())
    return runBatched(o, job, session, comm, *backend);
  GenerateOptions go;
  go.maxNewTokens = maxNew;
  go.temperature = o.temperature;
  go.topP = o.topP;
  go.seed = o.seed;
  go.stopAtEos = !o.ignoreEos && !o.bench;
  go.eosIds = job.eosIds;

  if (!o.bench) {
    // Every rank computes them (a vocabulary-parallel LM head gathers its
    // columns over the tensor-parallel group, so the members must agree);
    // rank 0 writes them.
    go.promptLogits = !o.dump.empty();
    // A text prompt streams text as tokens arrive; ids are printed at the end.
    std::optional<DecodeStream> text;
    if (job.tokenizer && rank == 0 && !o.json)
      text.emplace(*job.tokenizer, /*skipSpecial=*/true);
    Progress bar("generating", tty && maxNew >= 64 && !text);
    go.onToken = [&](int64_t d, int64_t t) { bar.update(double(d), double(t), "tokens"); };
    if (text)
      go.onTokenId = [&](int64_t id) {
        std::string piece;
        try {
          piece = text->step(uint32_t(id));
        } catch (const std::exception &e) {
          fail("generated token {}: {}", id, e.what());
        }
        std::fwrite(piece.data(), 1, piece.size(), stdout);
        std::fflush(stdout);
      };
    GenerateResult r = generate(session, comm, prompt, go);
    bar.done();
    if (rank == 0) {
      std::vector<int64_t> gen(r.tokens.begin() + int64_t(prompt.size()), r.tokens.end());
      if (o.json) {
        // One object for scripts, in the shape of the --prompts output lines.
        json out = {{"prompt_ids", prompt},
                    {"output_ids", gen},
                    {"finish_reason", finishReason(gen, maxNew, go, p)},
                    {"prefill_ms", r.prefillMs},
                    {"decode_ms_per_token", stats(r.decodeMs).median}};
        if (job.tokenizer) {
          std::vector<uint32_t> ids(gen.begin(), gen.end());
          try {
            out["text"] = job.tokenizer->decode(ids, /*skipSpecial=*/true);
          } catch (const std::exception &e) {
            fail("generated tokens: {}", e.what());
          }
        }
        std::printf("%s\n", out.dump(-1, ' ', false, json::error_handler_t::replace).c_str());
      } else if (text) {
        std::string rest = text->flush();
        std::fwrite(rest.data(), 1, rest.size(), stdout);
        std::printf("\n");
      } else {
        std::printf("%s\n", joinIds(gen).c_str());
      }
      if (!o.dump.empty()) {
        int64_t T = int64_t(prompt.size()), V = plan.vocabSize();
        writeSafetensors(o.dump, {{"logits", "F32", {1, T, V}, r.promptLogits.data(),
                                   r.promptLogits.size() * 4},
                                  {"generated_ids", "I64", {1, int64_t(r.tokens.size())},
                                   r.tokens.data(), r.tokens.size() * 8}});
      }
    }
    if (!o.trace.empty())
      session.trace().write(o.trace, comm);
    if (!o.profile.empty() && rank == 0)
      writeProfile(o.profile, plan, session, int64_t(r.tokens.size()) - 1);
    return 0;
  }

  // --bench: warmup runs, then timed runs of prefill + maxNew greedy tokens.
  std::vector<double> prefill, decode;
  uint64_t wbytes = 0, kvbytes = 0, commBytes = 0, dsteps = 0;
  std::vector<int64_t> firstTokens;
  {
    Progress bar("benchmark", tty);
    for (int64_t it = 0; it < o.warmup + o.iters; ++it) {
      session.trace().clear();
      GenerateResult r = generate(session, comm, prompt, go);
      bar.update(double(it + 1), double(o.warmup + o.iters), "runs");
      if (it == 0)
        firstTokens = r.tokens;
      else if (r.tokens != firstTokens)
        fail("benchmark run {} generated other tokens than run 0 (expected determinism)", it);
      if (it < o.warmup)
        continue;
      prefill.push_back(r.prefillMs);
      decode.insert(decode.end(), r.decodeMs.begin(), r.decodeMs.end());
      wbytes += r.decodeWeightBytes;
      kvbytes += r.decodeKVBytes;
      commBytes += r.decodeCommBytes;
      dsteps += r.decodeMs.size();
    }
  }
  uint64_t rss = peakRssBytes();
  // The floor reads what decode reads: this rank's weights, same threads.
  std::vector<std::span<const uint8_t>> regions;
  if (weights->boundBytes() >= (uint64_t(512) << 20))
    regions = weights->regions();
  auto [bwBest, bwMedian] = backend->readBandwidth(regions, uint64_t(1) << 30, 5);
  Stats pf = stats(prefill), dc = stats(decode);
  const StreamingStats &ss = session.streamingStats();
  double perTok = dsteps ? double(wbytes) / double(dsteps) : 0.0;
  double perTokKV = dsteps ? double(kvbytes) / double(dsteps) : 0.0;
  double floorMs = bwBest > 0 ? perTok / (bwBest * 1e9) * 1e3 : 0.0;
  double pctFloor = dc.median > 0 ? 100.0 * floorMs / dc.median : 0.0;
  if (!o.trace.empty())
    session.trace().write(o.trace, comm);
  if (!o.profile.empty() && rank == 0)
    writeProfile(o.profile, plan, session, 0);
  // Every rank's communication per decode token, for rank 0 to print beside
  // the report's prediction (docs/runtime.md).
  double perTokComm = dsteps ? double(commBytes) / double(dsteps) : 0.0;
  std::vector<std::string> commByRank = comm.gatherToRoot(fmt::format("{}", perTokComm));
  if (rank != 0)
    return 0;
  json commJson = json::array();
  for (const std::string &v : commByRank)
    commJson.push_back(std::stod(v));
  json j = {
      {"plan", plan.path()},
      {"model", p.model()->name() ? p.model()->name()->str() : ""},
      {"ranks", comm.size()},
      {"threads", threads},
      {"backend", backend->name()},
      {"isa", backend->isa()},
      {"compute_dtype", dtypeName(p.compute_dtype())},
      {"prompt_tokens", prompt.size()},
      {"new_tokens", maxNew},
      {"warmup", o.warmup},
      {"iters", o.iters},
      {"prefill_ms", {{"median", pf.median}, {"min", pf.min}, {"max", pf.max}}},
      {"prefill_tokens_per_s", pf.median > 0 ? 1e3 * double(prompt.size()) / pf.median : 0.0},
      {"decode_ms_per_token", {{"median", dc.median}, {"min", dc.min}, {"max", dc.max}}},
      {"decode_tokens_per_s", dc.median > 0 ? 1e3 / dc.median : 0.0},
      {"peak_rss_bytes", rss},
      {"weight_bytes", weights->boundBytes()},
      {"peak_resident_weight_bytes", weights->peakResidentBytes()},
      {"peak_resident_bytes", weights->peakTotalBytes()},
      {"memory_budget", p.memory_budget()},
      {"streamed_loads", weights->loads()},
      {"streamed_evictions", weights->evictions()},
      {"expert_prediction", o.predictExperts},
      {"prediction_hit_rate", ss.chosen ? double(ss.hits) / double(ss.chosen) : 0.0},
      {"fetch_ms", double(weights->fetchNs()) / 1e6},
      {"fetch_wait_ms", double(ss.waitNs) / 1e6},
      {"fetch_hidden_fraction",
       weights->fetchNs() > 0 ? 1.0 - double(ss.waitNs) / double(weights->fetchNs()) : 0.0},
      {"active_weight_bytes_per_token", perTok},
      {"kv_bytes_per_token", perTokKV},
      {"comm_bytes_per_token", perTokComm},
      {"comm_bytes_per_token_by_rank", std::move(commJson)},
      {"read_bandwidth_gbs", {{"best", bwBest}, {"median", bwMedian}}},
      {"decode_floor_ms", floorMs},
      {"decode_pct_of_floor", pctFloor},
      {"generated_ids", firstTokens}};
  if (o.json) {
    std::printf("%s\n", j.dump(1, ' ', false, json::error_handler_t::replace).c_str());
    return 0;
  }
  std::printf("plan              %s (%d rank(s), %d thread(s), %s backend, %s, compute %s)\n",
              plan.path().c_str(), comm.size(), threads, backend->name(), backend->isa().c_str(),
              dtypeName(p.compute_dtype()));
  std::printf("prefill           %zu tokens: %.2f ms median (min %.2f, max %.2f), %.1f tokens/s\n",
              prompt.size(), pf.median, pf.min, pf.max,
              pf.median > 0 ? 1e3 * double(prompt.size()) / pf.median : 0.0);
  std::printf("decode            %.3f ms/token median (min %.3f, max %.3f), %.2f tokens/s\n",
              dc.median, dc.min, dc.max, dc.median > 0 ? 1e3 / dc.median : 0.0);
  std::printf("read bandwidth    %.1f GB/s best, %.1f GB/s median (%d threads)\n", bwBest,
              bwMedian, threads);
  std::printf("decode floor      %.3f ms/token (%.1f MB active weights/token); decode at %.1f%% "
              "of the floor\n",
              floorMs, perTok / 1e6, pctFloor);
  std::printf("memory            peak RSS %.1f MB, weights %.1f MB, peak resident weights "
              "%.1f MB\n",
              double(rss) / 1e6, double(weights->boundBytes()) / 1e6,
              double(weights->peakResidentBytes()) / 1e6);
  std::printf("resident          peak_resident_bytes %llu (weights + arena + KV cache), "
              "peak_resident_weight_bytes %llu, budget %s\n",
              (unsigned long long)weights->peakTotalBytes(),
              (unsigned long long)weights->peakResidentBytes(),
              p.memory_budget() ? fmt::format("{}", p.memory_budget()).c_str() : "none");
  if (comm.size() > 1)
    std::printf("communication     %.0f bytes/token moved by rank 0 in decode (the plan's "
                "collectives; the report's communication_per_token predicts it)\n",
                perTokComm);
  if (weights->loads() > 0)
    std::printf("streaming         %llu loads, %.1f ms fetching, %.1f%% hidden behind compute; "
                "expert prediction %s, hit rate %.1f%% (%llu of %llu chosen experts predicted)\n",
                (unsigned long long)weights->loads(), double(weights->fetchNs()) / 1e6,
                weights->fetchNs() > 0 ? 100.0 * (1.0 - double(ss.waitNs) / double(weights->fetchNs()))
                                       : 0.0,
                o.predictExperts ? "on" : "off",
                ss.chosen ? 100.0 * double(ss.hits) / double(ss.chosen) : 0.0,
                (unsigned long long)ss.hits, (unsigned long long)ss.chosen);
  return 0;
}

} // namespace

/// This rank's number, for the message below.
volatile std::sig_atomic_t gRank = 0;

/// mpirun ends the surviving ranks with SIGTERM when one fails (killed,
/// crashed, or MPI_Abort after an error): each says so on one line and exits
/// 1 rather than vanishing silently. Only async-signal-safe calls here.
extern "C" void onTerminate(int) {
  char msg[160] = "error: rank ";
  size_t n = std::strlen(msg);
  char digits[12];
  int d = 0;
  for (long r = gRank; d == 0 || r > 0; r /= 10)
    digits[d++] = char('0' + r % 10);
  while (d > 0)
    msg[n++] = digits[--d];
  const char tail[] = ": stopped by SIGTERM (the launcher ends every rank when one fails; "
                      "expected its message about the failed rank)\n";
  std::memcpy(msg + n, tail, sizeof(tail) - 1);
  n += sizeof(tail) - 1;
  ssize_t ignored = ::write(STDERR_FILENO, msg, n);
  (void)ignored;
  ::_exit(1);
}

int main(int argc, char **argv) {
  Options o;
  try {
    o = parseArgs(argc, argv);
  } catch (const Error &e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  if (o.help) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (o.version) {
    std::printf("moe-run %s (plan format %u.%u)\n", kProjectVersion, kPlanVersionMajor,
                kPlanVersionMinor);
    return 0;
  }
  std::unique_ptr<Comm> comm;
#ifdef MOERT_HAVE_MPI
  if (launchedByMpi())
    comm = makeMpiComm();
#endif
  if (!comm)
    comm = makeLocalComm();
  if (comm->size() > 1) {
    gRank = comm->rank();
    std::signal(SIGTERM, onTerminate);
  }
  auto report = [](const char *msg) { std::fprintf(stderr, "error: %s\n", msg); };
  int code = 0;
  try {
    Job job = prepare(o, comm->size());
    int ranks = job.plan->numRanks();
    if (comm->size() == 1 && ranks > 1) {
      // No MPI launcher: run the plan's ranks as threads of this process.
      auto comms = makeInProcessComms(ranks);
      auto rankMain = [&](int r) {
        try {
          return runRank(o, job, *comms[size_t(r)]);
        } catch (const std::exception &e) {
          // The other ranks wait in collectives: leave without unwinding them.
          report(e.what());
          std::fflush(stderr);
          std::_Exit(1);
        }
      };
      std::vector<std::thread> others;
      for (int r = 1; r < ranks; ++r)
        others.emplace_back(rankMain, r);
      code = rankMain(0);
      for (auto &t : others)
        t.join();
    } else {
      code = runRank(o, job, *comm);
    }
  } catch (const Error &e) {
    report(e.what());
    code = 1;
  } catch (const std::bad_alloc &) {
    report("out of memory");
    code = 1;
  } catch (const std::exception &e) {
    report(e.what());
    code = 1;
  }
  if (code != 0 && comm->size() > 1 && !gSomeLinesFailed)
    comm->abort(code);
  return code;
}
