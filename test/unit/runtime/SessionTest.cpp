//===- SessionTest.cpp - KV cache, sampling, multi-rank execution ---------===//
#include "TestUtil.h"

#include "HFPlans.h"
#include "TinyPlans.h"
#include "moert/Generate.h"

#include <cmath>
#include <map>
#include <thread>

using namespace moert;
using namespace moetest;

namespace {

std::vector<int64_t> prompt(int64_t n, int64_t vocab) {
  std::vector<int64_t> p;
  for (int64_t i = 0; i < n; ++i)
    p.push_back((i * 37 + 5) % vocab);
  return p;
}

/// The set-up of a one-rank test: a CPU backend of `threads` threads, a
/// local comm and the random weights of `plan` from `seed`; session() is a
/// new Session (an empty KV cache) on them.
struct OneRank {
  OneRank(const PlanFile &plan, uint64_t seed, int threads = 1)
      : plan(plan), pool(threads), weights(WeightStore::random(plan, seed, {0}, pool)) {}
  Session session(const SessionOptions &so = {}) {
    return Session(plan, 0, *weights, *comm, pool, so);
  }
  const PlanFile &plan;
  TestBackend pool;
  std::unique_ptr<Comm> comm = makeLocalComm();
  std::unique_ptr<WeightStore> weights;
};

/// Decoding with the cache vs recomputing the whole sequence each step.
void checkCacheEqualsRecompute(const PlanFile &plan, int threads) {
  OneRank one(plan, 7, threads);
  Comm &comm = *one.comm;
  Session s = one.session();
  GenerateOptions g;
  g.maxNewTokens = 8;
  std::vector<int64_t> p = prompt(5, plan.vocabSize());
  GenerateResult r = generate(s, comm, p, g);
  ASSERT_EQ(r.tokens.size(), 13u);
  const int64_t V = plan.vocabSize();
  // Logits at every position from one full forward over the final sequence.
  Session full = one.session();
  std::vector<float> all(r.tokens.size() * size_t(V));
  for (int64_t s0 = 0; s0 < int64_t(r.tokens.size()); s0 += plan.maxTokens()) {
    int64_t T = std::min<int64_t>(plan.maxTokens(), int64_t(r.tokens.size()) - s0);
    full.forward(r.tokens.data() + s0, T, s0, all.data() + s0 * V);
  }
  // Replaying the cached decode: each step's logits equal the full pass row.
  Session dec = one.session();
  const float *logits = nullptr;
  for (size_t t = 0; t < r.tokens.size() - 1; ++t) {
    logits = dec.forward(&r.tokens[t], 1, int64_t(t));
    double err = 0.0;
    for (int64_t v = 0; v < V; ++v)
      err = std::max(err, double(std::abs(logits[v] - all[t * size_t(V) + size_t(v)])));
    EXPECT_LE(err, 2e-5) << "position " << t;
    if (t + 1 >= p.size()) {
      EXPECT_EQ(Sampler::argmax(logits, V), r.tokens[t + 1]) << "position " << t;
    }
  }
}

} // namespace

TEST(Session, KVCacheDecodeEqualsFullRecompute) {
  HFPlanOptions o;
  o.maxTokens = 16;
  checkCacheEqualsRecompute(planFor(kTinyMixtral, o), 1);
  checkCacheEqualsRecompute(planFor(kTinyQwen, o), 2);
  o.dtype = mp::DType::BF16; // bf16 weights in memory, f32 compute
  checkCacheEqualsRecompute(planFor(kTinyMixtral, o), 2);
}

TEST(Session, Bf16ComputeStaysCloseToF32) {
  HFPlanOptions o;
  o.dtype = mp::DType::BF16;
  PlanFile f32 = planFor(kTinyMixtral, o);
  o.computeDtype = mp::DType::BF16;
  PlanFile bf = planFor(kTinyMixtral, o);
  OneRank ra(f32, 3, 2), rb(bf, 3, 2);
  Session a = ra.session(), b = rb.session();
  std::vector<int64_t> p = prompt(12, f32.vocabSize());
  std::vector<float> la(p.size() * 101), lb(la.size());
  a.forward(p.data(), int64_t(p.size()), 0, la.data());
  b.forward(p.data(), int64_t(p.size()), 0, lb.data());
  double err = 0.0, mag = 0.0;
  for (size_t i = 0; i < la.size(); ++i) {
    err = std::max(err, double(std::abs(la[i] - lb[i])));
    mag = std::max(mag, double(std::abs(la[i])));
  }
  EXPECT_LE(err, 0.02 * mag + 1e-3);
}

TEST(Session, SamplingIsDeterministicPerSeed) {
  HFPlanOptions o;
  PlanFile plan = planFor(kTinyMixtral, o);
  OneRank one(plan, 11, 2);
  auto sample = [&](uint64_t seed, float temp, float topP) {
    Session s = one.session();
    GenerateOptions g;
    g.maxNewTokens = 12;
    g.temperature = temp;
    g.topP = topP;
    g.seed = seed;
    return generate(s, *one.comm, prompt(4, plan.vocabSize()), g).tokens;
  };
  EXPECT_EQ(sample(1, 1.5f, 0.95f), sample(1, 1.5f, 0.95f));
  EXPECT_NE(sample(1, 1.5f, 1.0f), sample(2, 1.5f, 1.0f));
  // A tiny nucleus keeps only the top token: greedy.
  EXPECT_EQ(sample(5, 1.0f, 1e-6f), sample(0, 0.0f, 1.0f));
}

TEST(Sampler, TopPKeepsTheNucleus) {
  std::vector<float> logits{std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
  Sampler s(1.0f, 0.7f, 42);
  std::vector<int> hist(4, 0);
  for (int i = 0; i < 4000; ++i)
    ++hist[size_t(s.next(logits.data(), 4))];
  EXPECT_EQ(hist[2] + hist[3], 0); // outside the 0.8 nucleus
  EXPECT_NEAR(hist[0] / 4000.0, 0.5 / 0.8, 0.03);
  EXPECT_EQ(Sampler::argmax(std::vector<float>{1, 3, 3, 2}.data(), 4), 1);
}

TEST(Session, StopsAtEos) {
  HFPlanOptions o;
  PlanFile plan0 = planFor(kTinyMixtral, o);
  OneRank one0(plan0, 5);
  Session s0 = one0.session();
  GenerateOptions g;
  g.maxNewTokens = 6;
  std::vector<int64_t> toks = generate(s0, *one0.comm, prompt(3, 101), g).tokens;
  // Make the third generated token the EOS id: generation stops right after it.
  std::string cfg = kTinyMixtral;
  cfg.insert(cfg.size() - 1, ",\"eos_token_id\":" + std::to_string(toks[5]));
  PlanFile plan = planFor(cfg.c_str(), o);
  OneRank one(plan, 5);
  Session s = one.session();
  std::vector<int64_t> stopped = generate(s, *one.comm, prompt(3, 101), g).tokens;
  ASSERT_LE(stopped.size(), 6u);
  EXPECT_EQ(stopped.back(), toks[5]);
  g.stopAtEos = false;
  Session s2 = one.session();
  EXPECT_EQ(generate(s2, *one.comm, prompt(3, 101), g).tokens, toks);
}

TEST(Session, RejectsBadInputs) {
  HFPlanOptions o;
  o.maxSeqLen = 16;
  PlanFile plan = planFor(kTinyMixtral, o);
  OneRank one(plan, 5);
  Comm &comm = *one.comm;
  Session s = one.session();
  GenerateOptions g;
  g.maxNewTokens = 12;
  std::vector<int64_t> p{1, 2, 3, 4, 5};
  EXPECT_THROW_MSG(generate(s, comm, p, g), "exceeds the plan's 16 positions");
  g.maxNewTokens = 2;
  p[1] = 101;
  EXPECT_THROW_MSG(generate(s, comm, p, g), "token id 101 out of range (expected 0..100)");
  EXPECT_THROW_MSG(generate(s, comm, std::vector<int64_t>{}, g), "empty prompt");
}

namespace {
/// Runs a plan's ranks as threads with in-process comms; returns rank 0's result.
GenerateResult runRanks(const PlanFile &plan, uint64_t seed, const std::vector<int64_t> &p,
                        int64_t newTokens, int threadsPerRank = 1) {
  int R = plan.numRanks();
  auto comms = makeInProcessComms(R);
  std::vector<GenerateResult> res(static_cast<size_t>(R));
  std::vector<std::thread> th;
  for (int r = 0; r < R; ++r)
    th.emplace_back([&, r] {
      TestBackend pool(threadsPerRank);
      auto w = WeightStore::random(plan, seed, {r}, pool);
      Session s(plan, r, *w, *comms[size_t(r)], pool);
      GenerateOptions g;
      g.maxNewTokens = newTokens;
      g.promptLogits = true;
      res[size_t(r)] = generate(s, *comms[size_t(r)], p, g);
    });
  for (auto &t : th)
    t.join();
  for (int r = 1; r < R; ++r)
    EXPECT_EQ(res[size_t(r)].tokens, res[0].tokens) << "rank " << r;
  return res[0];
}
} // namespace

TEST(Session, ExpertParallelRanksReproduceOneRankBitwise) {
  // f32, and bf16 weights (packed with AVX-512) with bf16 compute.
  for (mp::DType dt : {mp::DType::F32, mp::DType::BF16})
    for (const char *cfg : {kTinyMixtral, kTinyQwen}) {
      SCOPED_TRACE(dtypeName(dt));
      HFPlanOptions o;
      o.maxTokens = 8;
      o.dtype = o.computeDtype = dt;
      PlanFile one = planFor(cfg, o);
      std::vector<int64_t> p = prompt(11, one.vocabSize());
      GenerateResult ref = runRanks(one, 9, p, 6);
      for (int R : {2, 3, 4}) {
        o.numRanks = R;
        PlanFile multi = planFor(cfg, o);
        GenerateResult got = runRanks(multi, 9, p, 6, R == 2 ? 2 : 1);
        EXPECT_EQ(got.tokens, ref.tokens) << R << " ranks";
        EXPECT_EQ(got.promptLogits, ref.promptLogits) << R << " ranks";
      }
    }
}

TEST(Session, TraceAndExpertProfile) {
  HFPlanOptions o;
  PlanFile plan = planFor(kTinyMixtral, o);
  OneRank one(plan, 5);
  Comm &comm = *one.comm;
  SessionOptions so;
  so.trace = so.expertProfile = true;
  Session s = one.session(so);
  GenerateOptions g;
  g.maxNewTokens = 3;
  generate(s, comm, prompt(6, 101), g);
  ASSERT_EQ(s.expertProfile().size(), 2u); // two MoE layers
  for (const GateProfile &gp : s.expertProfile()) {
    uint64_t total = 0;
    for (uint64_t c : gp.routed)
      total += c;
    EXPECT_EQ(total, (6u + 2u) * 2u); // (prompt + 2 decode tokens) x top-2
  }
  bool sawExpert = false;
  for (const Trace::Event &e : s.trace().events())
    sawExpert |= e.name.find("layers.1.moe.experts.e") == 0;
  EXPECT_TRUE(sawExpert);
  TempDir d;
  s.trace().write(d.file("t.json"), comm);
  EXPECT_TRUE(isRegularFile(d.file("t.json")));
}

TEST(Session, ResultsDoNotDependOnTheThreadCount) {
  for (mp::DType dt : {mp::DType::F32, mp::DType::BF16}) {
    HFPlanOptions o;
    o.dtype = dt;
    o.computeDtype = dt;
    PlanFile plan = planFor(kTinyQwen, o);
    std::vector<int64_t> p = prompt(13, plan.vocabSize());
    std::vector<std::vector<float>> logits;
    for (int threads : {1, 2, 5}) {
      OneRank one(plan, 4, threads);
      Session s = one.session();
      std::vector<float> all(p.size() * size_t(plan.vocabSize()));
      s.forward(p.data(), int64_t(p.size()), 0, all.data());
      logits.push_back(all);
    }
    EXPECT_EQ(logits[0], logits[1]) << dtypeName(dt);
    EXPECT_EQ(logits[0], logits[2]) << dtypeName(dt);
  }
}

namespace {
/// Marks weights streamed the way moe-layer-streaming does: experts on demand
/// and/or each layer's other weights prefetched (stream 2) before the layer
/// and evicted after it.
std::vector<uint8_t> streamify(const std::vector<uint8_t> &bytes, bool experts, bool layers,
                               uint64_t budget) {
  std::unique_ptr<mp::PlanT> p(mp::GetPlan(bytes.data())->UnPack());
  p->memory_budget = budget;
  auto &steps = p->ranks[0]->steps;
  std::map<int, std::vector<int32_t>> layerWeights;
  for (auto &s : steps) {
    if (s->op.type == mp::Op::Experts && experts) {
      auto *e = reinterpret_cast<mp::ExpertsT *>(s->op.value);
      e->on_demand = true;
      for (int32_t w : {e->gate, e->up, e->down})
        p->weights[size_t(w)]->streamed = true;
    }
    if (!layers || s->layer < 0)
      continue;
    std::vector<int32_t> ws;
    if (s->op.type == mp::Op::Linear) {
      auto *l = reinterpret_cast<mp::LinearT *>(s->op.value);
      ws = {l->weight, l->bias};
    } else if (s->op.type == mp::Op::Norm) {
      auto *n = reinterpret_cast<mp::NormT *>(s->op.value);
      ws = {n->weight, n->bias};
    }
    for (int32_t w : ws)
      if (w >= 0 && std::find(layerWeights[s->layer].begin(), layerWeights[s->layer].end(), w) ==
                        layerWeights[s->layer].end()) {
        layerWeights[s->layer].push_back(w);
        p->weights[size_t(w)]->streamed = true;
      }
  }
  if (layers) {
    std::vector<std::unique_ptr<mp::StepT>> out;
    int current = -1, prefetchAt = -1;
    // A Prefetch or Evict of a layer's weights on the streaming stream.
    auto streamStep = [&](auto op, int layer, const char *what) {
      op.weights = layerWeights[layer];
      auto st = std::make_unique<mp::StepT>();
      st->op.Set(std::move(op));
      st->name = "layers." + std::to_string(layer) + what;
      st->layer = layer;
      st->stream = mp::Stream::Weights;
      out.push_back(std::move(st));
    };
    for (auto &s : steps) {
      if (s->layer != current) {
        if (current >= 0)
          streamStep(mp::EvictT(), current, ".evict");
        current = s->layer;
        if (current >= 0) {
          streamStep(mp::PrefetchT(), current, ".prefetch");
          prefetchAt = int(out.size()) - 1;
        }
      }
      if (current >= 0)
        s->waits.push_back(prefetchAt);
      out.push_back(std::move(s));
    }
    steps = std::move(out);
  }
  return packPlan(*p);
}
} // namespace

TEST(Session, StreamedWeightsGiveTheSameTokensWithinTheBudget) {
  TempDir d;
  writeBytes(d.file("config.json"), kTinyQwen);
  HFPlanOptions o;
  o.maxTokens = 8;
  std::vector<uint8_t> base = buildHFPlan(d.file("config.json"), o);
  PlanFile plain = PlanFile::fromBytes(base, "plain.plan");
  std::vector<int64_t> p = prompt(11, plain.vocabSize());
  auto run = [&](const PlanFile &plan, WeightStore *&store, std::unique_ptr<WeightStore> &keep) {
    TestBackend pool(2);
    auto comm = makeLocalComm();
    keep = WeightStore::random(plan, 21, {0}, pool);
    store = keep.get();
    SessionOptions so;
    so.trace = true;
    Session s(plan, 0, *keep, *comm, pool, so);
    GenerateOptions g;
    g.maxNewTokens = 5;
    g.promptLogits = true;
    return generate(s, *comm, p, g);
  };
  WeightStore *ws = nullptr;
  std::unique_ptr<WeightStore> keep;
  GenerateResult ref = run(plain, ws, keep);
  EXPECT_EQ(ws->peakResidentBytes(), ws->boundBytes());
  for (auto [experts, layers] : {std::pair{true, false}, {false, true}, {true, true}}) {
    SCOPED_TRACE(::testing::Message() << "experts=" << experts << " layers=" << layers);
    PlanFile streamed = PlanFile::fromBytes(streamify(base, experts, layers, 1), "s.plan");
    GenerateResult got = run(streamed, ws, keep);
    EXPECT_EQ(got.tokens, ref.tokens);
    EXPECT_EQ(got.promptLogits, ref.promptLogits);
    // A 1-byte budget keeps nothing streamed resident after use.
    EXPECT_LT(ws->peakResidentBytes(), ws->boundBytes());
    int streamedNow = 0;
    for (size_t i = 0; i < ws->size(); ++i)
      streamedNow += ws->isStreamed(int32_t(i)) && ws->isResident(int32_t(i));
    EXPECT_EQ(streamedNow, 0);
  }
  // With no budget, on-demand experts stay cached after first use.
  PlanFile cached = PlanFile::fromBytes(streamify(base, true, false, 0), "c.plan");
  GenerateResult got = run(cached, ws, keep);
  EXPECT_EQ(got.tokens, ref.tokens);
  EXPECT_GT(ws->residentBytes(), ws->peakResidentBytes() / 2);
}
