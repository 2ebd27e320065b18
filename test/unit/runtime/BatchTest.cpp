//===- BatchTest.cpp - The batching scheduler (generateBatch) -------------===//
#include "TestUtil.h"

#include "BatchCheck.h"
#include "HFPlans.h"
#include "TinyPlans.h"
#include "moert/Batch.h"
#include "moert/Generate.h"
#include "moert/Prompts.h"

#include <map>

using namespace moert;
using namespace moetest;

TEST(Batch, GreedyEqualsOneSequenceRuns) {
  TestBackend be(2);
  for (const char *config : {kTinyQwen, kTinyGpt2}) {
    PlanFile single = planFor(config, singleOptions());
    PlanFile batched = planFor(config, batchedOptions(3, 4));
    checkBatchEqualsSingle(be, batched, single, 0.0f, 0);
    checkBatchEqualsSingle(be, batched, single, 0.0f, 3);
  }
}

TEST(Batch, SamplingPerSequenceEqualsOneSequenceRuns) {
  TestBackend be(2);
  // Each sequence keeps its own temperature, top-p and seed.
  checkBatchEqualsSingle(be, planFor(kTinyQwen, batchedOptions(4, 8)),
                         planFor(kTinyQwen, singleOptions()), 0.9f, 2);
}

TEST(Batch, SequencesWaitForKVPages) {
  TestBackend be(2);
  // A pool of 16 pages of 4 positions holds one 64-position sequence, but
  // the prompts of the six requests (17 to 28 tokens, 5 to 7 pages each)
  // do not fit in 6 slots at once: later ones wait until a sequence
  // finishes.
  // 16 pages of 4: 64 positions, one full-length sequence.
  BatchStats st;
  checkBatchEqualsSingle(be, planFor(kTinyQwen, batchedOptions(6, 4, 16)),
                         planFor(kTinyQwen, singleOptions()), 0.0f, 0, &st, 16);
  EXPECT_GT(st.pageWaits, 0);
  EXPECT_LT(st.peakRunning, 6);
}

TEST(Batch, StopsAndBadRequests) {
  PlanFile plan = planFor(kTinyQwen, batchedOptions(2, 4));
  TestBackend be(1);
  auto comm = makeLocalComm();
  auto w = WeightStore::random(plan, 7, {0}, be);
  Session s(plan, 0, *w, *comm, be);
  std::vector<SequenceRequest> reqs = requests(plan.vocabSize(), 0.0f);
  std::vector<SequenceResult> free = generateBatch(s, *comm, reqs);
  // Stop after the first two generated tokens (a stop sequence), at an EOS
  // id, and by a stop callback.
  reqs[0].stopIds = {{free[0].output[0], free[0].output[1]}};
  reqs[2].eosIds = {free[2].output[0]};
  reqs[2].stopAtEos = true;
  reqs[3].stopCheck = [](std::span<const int64_t> out) { return out.size() == 4; };
  reqs[4].prompt = {};                       // refused
  reqs[5].prompt = {plan.vocabSize()};       // refused
  std::vector<SequenceResult> r = generateBatch(s, *comm, reqs);
  EXPECT_EQ(r[0].output, std::vector<int64_t>(free[0].output.begin(), free[0].output.begin() + 2));
  EXPECT_EQ(r[0].finishReason, "stop");
  EXPECT_EQ(r[1].output, free[1].output);
  EXPECT_EQ(r[2].output.size(), 1u);
  EXPECT_EQ(r[2].finishReason, "stop");
  EXPECT_EQ(r[3].output.size(), 4u);
  EXPECT_EQ(r[3].finishReason, "stop");
  EXPECT_EQ(r[4].error, "empty prompt (expected at least one token id)");
  EXPECT_EQ(r[5].error, "token id 97 out of range (expected 0..96)");
  EXPECT_TRUE(r[4].output.empty() && r[5].output.empty());
}

/// A scripted source: request k arrives at poll `arrive[k]`; the one named
/// `cancelTag` is cancelled once it has `cancelAfter` tokens.
class ScriptSource final : public RequestSource {
public:
  std::vector<SequenceRequest> reqs;
  std::vector<int64_t> arrive;
  uint64_t cancelTag = ~uint64_t(0);
  size_t cancelAfter = 0;
  std::map<uint64_t, SequenceResult> done;
  std::map<uint64_t, std::vector<int64_t>> streamed;
  std::vector<int64_t> runningAtStep;
  int64_t polls = 0, idlePolls = 0;
  std::vector<uint64_t> preempted;
  size_t mostTokensPreempted = 0; // tokens reported before a preemption, at most
  /// Cancel the first sequence that is preempted (it is then in the queue).
  bool cancelFirstPreempted = false;

  bool poll(std::vector<std::pair<uint64_t, SequenceRequest>> &out, bool idle) override {
    idlePolls += idle;
    for (size_t k = 0; k < reqs.size(); ++k)
      if (arrive[k] == polls)
        out.emplace_back(uint64_t(k), reqs[k]);
    ++polls;
    return polls <= *std::max_element(arrive.begin(), arrive.end());
  }
  bool cancelled(uint64_t tag) override {
    if (cancelFirstPreempted && !preempted.empty() && tag == preempted.front())
      return true;
    return tag == cancelTag && streamed[tag].size() >= cancelAfter;
  }
  void onPreempted(uint64_t tag) override {
    preempted.push_back(tag);
    mostTokensPreempted = std::max(mostTokensPreempted, streamed[tag].size());
  }
  void onToken(uint64_t tag, int64_t token) override { streamed[tag].push_back(token); }
  void onFinish(uint64_t tag, SequenceResult r) override {
    EXPECT_FALSE(done.count(tag)) << "request " << tag << " finished twice";
    done[tag] = std::move(r);
  }
  void onStep(int64_t running, int64_t) override { runningAtStep.push_back(running); }
};

TEST(Batch, StreamingEngineJoinsRunningBatchAndCancels) {
  // Requests arrive while others run (polls 0, 2, 3, 7 and 9) and join
  // free slots; greedy tokens equal one-sequence runs. Request 1 asks for
  // 30 tokens and is cancelled after 3: its slot goes to a later request.
  PlanFile batched = planFor(kTinyQwen, batchedOptions(2, 4));
  PlanFile single = planFor(kTinyQwen, singleOptions());
  TestBackend be(2);
  auto comm = makeLocalComm();
  auto wb = WeightStore::random(batched, 7, {0}, be);
  auto ws = WeightStore::random(single, 7, {0}, be);
  Session sb(batched, 0, *wb, *comm, be), ss(single, 0, *ws, *comm, be);
  ScriptSource src;
  src.reqs = requests(batched.vocabSize(), 0.0f);
  src.reqs.resize(5);
  src.reqs[1].maxNewTokens = 30;
  src.arrive = {0, 0, 2, 3, 9};
  src.cancelTag = 1;
  src.cancelAfter = 3;
  BatchStats st;
  runBatchEngine(sb, *comm, src, {}, &st);
  ASSERT_EQ(src.done.size(), src.reqs.size());
  for (size_t k = 0; k < src.reqs.size(); ++k) {
    const SequenceResult &got = src.done[k];
    EXPECT_TRUE(got.error.empty()) << got.error;
    EXPECT_EQ(got.output, src.streamed[k]) << "sequence " << k << ": streamed tokens";
    if (k == 1) {
      EXPECT_EQ(got.finishReason, "cancelled");
      EXPECT_EQ(got.output.size(), 3u);
      continue;
    }
    GenerateOptions g;
    g.maxNewTokens = src.reqs[k].maxNewTokens;
    g.stopAtEos = false;
    GenerateResult want = generate(ss, *comm, src.reqs[k].prompt, g);
    std::vector<int64_t> w(want.tokens.begin() + int64_t(src.reqs[k].prompt.size()),
                           want.tokens.end());
    EXPECT_EQ(got.output, w) << "sequence " << k;
    EXPECT_EQ(got.finishReason, "length");
  }
  // Never more than max_batch sequences; the cancelled one did not hold its
  // slot for its 30 tokens (the run is shorter than that).
  for (int64_t r : src.runningAtStep)
    EXPECT_LE(r, 2);
  EXPECT_LT(st.steps, 30);
  // The first poll, before any request, says the engine is idle (a server
  // blocks there).
  EXPECT_GE(src.idlePolls, 1);
}

TEST(Batch, StreamingEngineRefusesAndCancelsQueued) {
  PlanFile plan = planFor(kTinyQwen, batchedOptions(1, 4));
  TestBackend be(1);
  auto comm = makeLocalComm();
  auto w = WeightStore::random(plan, 7, {0}, be);
  Session s(plan, 0, *w, *comm, be);
  ScriptSource src;
  src.reqs = requests(plan.vocabSize(), 0.0f);
  src.reqs.resize(3);
  src.reqs[2].prompt = {};      // refused at the poll
  src.arrive = {0, 0, 0};
  src.cancelTag = 1;            // queued behind request 0 (one slot): never runs
  src.cancelAfter = 0;
  runBatchEngine(s, *comm, src);
  ASSERT_EQ(src.done.size(), 3u);
  EXPECT_EQ(src.done[0].finishReason, "length");
  EXPECT_EQ(src.done[1].finishReason, "cancelled");
  EXPECT_TRUE(src.done[1].output.empty());
  EXPECT_EQ(src.done[2].error, "empty prompt (expected at least one token id)");
}

namespace {

/// The new tokens of `r` generated alone by generate() on `single`, stopping
/// after `count` tokens.
std::vector<int64_t> aloneTokens(Session &single, Comm &comm, const SequenceRequest &r,
                                 int64_t count) {
  GenerateOptions g;
  g.maxNewTokens = count;
  g.temperature = r.temperature;
  g.topP = r.topP;
  g.seed = r.seed;
  g.stopAtEos = false;
  GenerateResult want = generate(single, comm, r.prompt, g);
  return {want.tokens.begin() + int64_t(r.prompt.size()), want.tokens.end()};
}

/// A pool of 16 pages of 4 positions (64: one full-length sequence) for
/// six sequences.
HFPlanOptions smallPool() { return batchedOptions(6, 4, 16); }

/// The tiny Qwen2-MoE with smallPool()'s KV pages and the same model for
/// one sequence, with the same random weights: batched runs and the
/// one-sequence runs they must equal.
struct SmallPoolModels {
  PlanFile batched = planFor(kTinyQwen, smallPool());
  PlanFile single = planFor(kTinyQwen, singleOptions());
  TestBackend be{2};
  std::unique_ptr<Comm> comm = makeLocalComm();
  std::unique_ptr<WeightStore> wb = WeightStore::random(batched, 7, {0}, be);
  std::unique_ptr<WeightStore> ws = WeightStore::random(single, 7, {0}, be);
  Session sb{batched, 0, *wb, *comm, be};
  Session ss{single, 0, *ws, *comm, be};
};

} // namespace

TEST(Batch, PagesGrowWithSequencesThatStopEarly) {
  // Each request asks for 40 new tokens (11 to 13 pages with its prompt:
  // reserving those at admission runs one sequence at a time in 16 pages)
  // and stops after 1 to 9 (a stop condition): taken as they grow, their
  // pages let all six run together.
  SmallPoolModels m;
  const PlanFile &batched = m.batched;
  Comm *comm = m.comm.get();
  Session &sb = m.sb, &ss = m.ss;
  std::vector<SequenceRequest> reqs = requests(batched.vocabSize(), 0.0f);
  std::vector<int64_t> stopAt;
  for (SequenceRequest &r : reqs) {
    size_t n = size_t(r.maxNewTokens);
    stopAt.push_back(int64_t(n));
    r.maxNewTokens = 40;
    r.stopCheck = [n](std::span<const int64_t> out) { return out.size() == n; };
    // Reserved at admission, no two would fit.
    EXPECT_GT(2 * ((int64_t(r.prompt.size()) + 40 + 3) / 4), batched.kvPages());
  }
  BatchStats st;
  std::vector<SequenceResult> got = generateBatch(sb, *comm, reqs, {}, &st);
  for (size_t k = 0; k < reqs.size(); ++k) {
    EXPECT_EQ(got[k].output, aloneTokens(ss, *comm, reqs[k], stopAt[k])) << "sequence " << k;
    EXPECT_EQ(got[k].finishReason, "stop");
  }
  EXPECT_EQ(st.peakRunning, 6);
}

TEST(Batch, PreemptedSequencesAreRecomputed) {
  // Six sequences of 25 to 36 positions (7 to 9 pages each) in 16 pages:
  // growing sequences preempt the newest ones, which prefill their prompt
  // and generated tokens again when readmitted. Tokens equal one-sequence
  // runs (greedy, and sampled: the sampler's state is kept), and each is
  // reported once, in order.
  SmallPoolModels m;
  const PlanFile &batched = m.batched;
  Comm *comm = m.comm.get();
  Session &sb = m.sb, &ss = m.ss;
  for (float temperature : {0.0f, 0.9f})
    for (int64_t chunk : {0, 3}) {
      ScriptSource src;
      src.reqs = requests(batched.vocabSize(), temperature);
      for (SequenceRequest &r : src.reqs)
        r.maxNewTokens = 24;
      src.arrive = {0, 0, 0, 0, 1, 2};
      BatchOptions bo;
      bo.prefillChunk = chunk;
      BatchStats st;
      runBatchEngine(sb, *comm, src, bo, &st);
      ASSERT_EQ(src.done.size(), src.reqs.size());
      for (size_t k = 0; k < src.reqs.size(); ++k) {
        const SequenceResult &got = src.done[k];
        EXPECT_EQ(got.output, aloneTokens(ss, *comm, src.reqs[k], 24))
            << "sequence " << k << ", temperature " << temperature << ", chunk " << chunk;
        EXPECT_EQ(src.streamed[k], got.output) << "sequence " << k << ": streamed tokens";
        EXPECT_EQ(got.tokenMs.size(), got.output.size());
        EXPECT_EQ(got.finishReason, "length");
      }
      EXPECT_GT(st.preemptions, 0);
      EXPECT_EQ(int64_t(src.preempted.size()), st.preemptions);
      // Generated tokens were recomputed, not only prompts.
      EXPECT_GT(src.mostTokensPreempted, 0u);
    }
}

TEST(Batch, CancelWhilePreemptedFreesEverything) {
  // The first preempted sequence is cancelled while it waits in the queue:
  // it finishes with the tokens it had; the engine checks at the end that
  // every page came back, and a request of the plan's full length (every
  // page) that arrives last still runs.
  PlanFile plan = planFor(kTinyQwen, smallPool());
  TestBackend be(2);
  auto comm = makeLocalComm();
  auto w = WeightStore::random(plan, 7, {0}, be);
  Session s(plan, 0, *w, *comm, be);
  ScriptSource src;
  src.reqs = requests(plan.vocabSize(), 0.0f);
  for (SequenceRequest &r : src.reqs)
    r.maxNewTokens = 24;
  SequenceRequest full = src.reqs[0];
  full.maxNewTokens = plan.maxPositions() - int64_t(full.prompt.size());
  src.reqs.push_back(full);
  src.arrive = {0, 0, 0, 0, 0, 0, 30};
  src.cancelFirstPreempted = true;
  BatchStats st;
  runBatchEngine(s, *comm, src, {}, &st);
  ASSERT_EQ(src.done.size(), src.reqs.size());
  ASSERT_FALSE(src.preempted.empty());
  uint64_t gone = src.preempted.front();
  EXPECT_EQ(src.done[gone].finishReason, "cancelled");
  EXPECT_FALSE(src.done[gone].output.empty());
  EXPECT_EQ(src.done[gone].output, src.streamed[gone]);
  for (size_t k = 0; k < src.reqs.size(); ++k)
    if (k != gone) {
      EXPECT_EQ(src.done[k].finishReason, "length") << "sequence " << k;
      EXPECT_EQ(int64_t(src.done[k].output.size()), src.reqs[k].maxNewTokens);
    }
}

TEST(Batch, SessionRejectsBadBatches) {
  PlanFile plan = planFor(kTinyQwen, batchedOptions(2, 4));
  TestBackend be(1);
  auto comm = makeLocalComm();
  auto w = WeightStore::random(plan, 7, {0}, be);
  Session s(plan, 0, *w, *comm, be);
  std::vector<int64_t> ids{1, 2}, pos{0, 1}, seq{0, 1}, rows{1};
  // Slot 1 has no pages yet.
  EXPECT_THROW_MSG(s.forwardBatch({ids, pos, seq, rows}),
                   "row 1: sequence slot 1 has no KV page for position 1 (expected pages from "
                   "setPages)");
  std::vector<int32_t> pages{int32_t(plan.kvPages())};
  EXPECT_THROW_MSG(s.setPages(1, pages),
                   fmt::format("KV page {} (expected 0..{})", plan.kvPages(), plan.kvPages() - 1));
  std::vector<int64_t> badSeq{0, 2};
  EXPECT_THROW_MSG(s.forwardBatch({ids, pos, badSeq, rows}),
                   "row 1: sequence slot 2 (expected 0..1)");
  std::vector<int64_t> badRows{2};
  pages = {5};
  s.setPages(1, pages);
  EXPECT_THROW_MSG(s.forwardBatch({ids, pos, seq, badRows}), "logit row 2 (expected 0..1)");
  EXPECT_NE(s.forwardBatch({ids, pos, seq, rows}), nullptr);
}

TEST(Prompts, LinesAndErrors) {
  std::string text = "{\"id\": 1, \"prompt_ids\": [1, 2], \"max_new_tokens\": 3, \"seed\": 4}\n"
                     "\n"
                     "{\"id\": \"x\", \"prompt\": \"hi\", \"stop\": [\"a\", [5, 6]], \"top_p\": 0.5}\r\n"
                     "{\"prompt_ids\": [1], \"stop\": [7, 8]}\n"
                     "{\"prompt_ids\": [-1]}\n"
                     "{\"prompt_ids\": [1], \"top_p\": 0}\n"
                     "{\"prompt_ids\": [1], \"bogus\": 1}\n"
                     "{\"prompt_ids\": [1], \"max_new_tokens\": 1.5}\n"
                     "nope";
  std::vector<PromptLine> l = parsePromptLines(text, "p.jsonl");
  ASSERT_EQ(l.size(), 8u);
  EXPECT_EQ(l[0].line, 1u);
  EXPECT_EQ(*l[0].promptIds, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(*l[0].maxNewTokens, 3);
  EXPECT_EQ(*l[0].seed, 4u);
  EXPECT_EQ(l[1].line, 3u);
  EXPECT_EQ(*l[1].prompt, "hi");
  EXPECT_EQ(l[1].stopStrings, std::vector<std::string>{"a"});
  EXPECT_EQ(l[1].stopIds, (std::vector<std::vector<int64_t>>{{5, 6}}));
  EXPECT_TRUE(l[1].error.empty()) << l[1].error;
  EXPECT_EQ(l[2].stopIds, (std::vector<std::vector<int64_t>>{{7, 8}}));
  EXPECT_TRUE(l[2].id.is_null());
  EXPECT_EQ(l[3].error, "p.jsonl:5: prompt_ids: -1 (expected token ids >= 0)");
  EXPECT_EQ(l[4].error, "p.jsonl:6: top_p: 0 (expected a number in (0, 1])");
  EXPECT_EQ(l[5].error, "p.jsonl:7: bogus: unknown field (expected id, prompt, prompt_ids, "
                        "max_new_tokens, temperature, top_p, seed, ignore_eos, stop)");
  EXPECT_EQ(l[6].error, "p.jsonl:8: max_new_tokens: 1.5 (expected an integer >= 0)");
  EXPECT_EQ(l[7].error, "p.jsonl:9: not JSON (expected one object per line)");
}
