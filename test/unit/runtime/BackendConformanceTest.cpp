//===- BackendConformanceTest.cpp - Every op kind on every backend --------===//
//
// The backend conformance suite: each plan op kind (plan.fbs) run through a
// backend's kernel on random inputs and compared with the plain scalar
// reference in ReferenceOps.{h,cpp}, which shares no code with any backend.
//
// How an op runs: a tiny plan (PlanBuilder) holds the op's buffers, weights
// and step (plus the Logits step every plan needs on rank 0); the harness
// (Runner) creates the weights with WeightStore::random, allocates the arena,
// KV caches and token buffers with Backend::allocate, writes inputs with
// copyToDevice, fills StepArgs itself and calls Backend::launch on the
// step's stream, then synchronizeAll and copyToHost. Weight values for the
// reference are regenerated with randomWeightValue and rounded to the
// weight's dtype, so a backend may hold them in any layout. Sizes are odd on
// purpose, weights come in every dtype the op takes (F32, BF16, F16), T = 1
// (decode paths) and T > 1, and 1 and 3 kernel threads.
//
// Tolerances (per op, also stated at each test). "normwise e" means
// |got - ref| <= e * max|ref| over the compared output; "product bound e"
// means |got - ref| <= e * sum_k |x_k w_k| per element (the magnitude of
// the terms, so cancellation does not make a correct kernel fail):
//   Embedding, PositionEmbedding, Add, KV cache contents, Gate's routing
//     (experts, offsets, sorted slots), Collective: exact (data movement, or a
//     single f32 operation, or sums in the fixed group order of plan.fbs).
//   Norm 1e-5 normwise; Rope 1e-5 normwise; Activation, SigmoidGate,
//   ResidualMix, Combine 1e-6 normwise; Gate weights 1e-6 absolute.
//   Linear, Logits: product bound 1e-5 (f32 compute, any weight dtype: the
//     weights are upcast exactly); with compute dtype BF16 activations (and
//     weights) may be rounded to bf16, 2^-9 relative each: product bound 2^-8.
//   Attention 1e-5 normwise (K/V rounded to the cache dtype in the
//     reference); Experts 1e-5 normwise (two chained f32 products), 2^-6
//     normwise with compute dtype BF16; Gate's expert-profile counts exact.
//   Fixtures (one rank, and the MoE fixtures' experts split over 2 and 3
//     in-process ranks): logits within 1e-3 of expected.safetensors, greedy
//     tokens equal on every rank.
// Besides the ops, the rest of the Backend interface a session relies on:
// grouped steps (groupSteps + launchGroup, bounds as Linear), Experts
// launched in parts (expert streaming), streamed weights uploaded, evicted and
// uploaded again, sample() (the same token and RNG state as core's
// sampleToken: exact), fillNormal (bit for bit the scalar generator), and
// stream/event ordering with error propagation, routeTopK (expert
// prediction: exact ids).
//
// A new backend runs the suite by being listed in availableBackends(): the
// tests are instantiated once per name (BackendConformance/
// BackendConformance.<Test>/<backend>). A backend whose construction throws
// (built, but no device here) skips. Nothing here calls a backend's kernels
// directly; the suite only uses the Backend interface. For the CPU backend,
// ctest also runs the suite with MOERT_ISA=scalar and =avx512 (the fallback
// kernels). Collectives run on the host communicators (local, in-process);
// a backend whose buffers the host cannot address needs its own Comm there.
// Run time: about a second per backend on 2 cores.
//
//===----------------------------------------------------------------------===//
#include "TestUtil.h"

#include "BatchCheck.h"
#include "HFPlans.h"
#include "PlanBuilder.h"
#include "TinyPlans.h"
#include "ReferenceOps.h"
#include "moert/Comm.h"
#include "moert/Generate.h"
#include "moert/Random.h"
#include "moert/Safetensors.h"
#include "moert/Session.h"
#include "moert/Weights.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <numeric>
#include <random>
#include <thread>

using namespace moert;
using namespace moetest;
using ref::Ids;
using ref::Vec;

namespace {

constexpr DType kWeightDtypes[] = {DType::F32, DType::BF16, DType::F16};

std::unique_ptr<Backend> tryBackend(const std::string &name, int threads, bool pack = true) {
  try {
    return makeBackend(name, {.threads = threads, .packWeights = pack});
  } catch (const std::exception &) { // not built, or no device here
    return nullptr;
  }
}

/// Creates backend `var` of the test's parameter, or skips the test.
#define BACKEND_OR_SKIP(var, threads)                                                             \
  auto var = tryBackend(GetParam(), threads);                                                     \
  if (!var)                                                                                       \
    GTEST_SKIP() << "backend " << GetParam() << " cannot be created here";

/// A plan of a few ops; finish() adds the Logits step rank 0 must have.
struct TinyPlan {
  explicit TinyPlan(int64_t maxTokens = 8, int64_t maxSeq = 32, int ranks = 1, int64_t vocab = 13)
      : b("conformance", vocab, 8, 1, maxSeq, maxTokens, maxSeq, ranks), vocab(vocab) {}
  PlanFile finish(DType compute = DType::F32, bool addLogits = true) {
    if (addLogits) {
      int r = b.currentRank();
      b.setRank(0);
      mp::LogitsT l;
      l.in = b.buffer("lm.in", 8);
      l.out = b.buffer("lm.out", vocab, 0, 1);
      l.weight = b.weight("lm_head", {vocab, 8}, DType::F32, DType::F32);
      b.step(l, "lm_head");
      b.setRank(r);
    }
    b.plan().compute_dtype = compute;
    return PlanFile::fromBytes(b.finish(), "conformance.plan");
  }
  PlanBuilder b;
  int64_t vocab;
};

/// One rank's arena, caches and tokens on a backend, and launching steps.
class Runner {
public:
  Runner(Backend &be, const PlanFile &plan, Comm &comm, int rank = 0, uint64_t seed = 5)
      : be_(be), plan_(plan), rank_(rank), seed_(seed), prog_(plan.rankProgram(rank)) {
    weights_ = WeightStore::random(plan, seed, {rank}, be);
    be.bindComm(comm);
    arenaBytes_ = std::max<uint64_t>(prog_.arena_bytes(), 64);
    arena_ = static_cast<uint8_t *>(be.allocate(arenaBytes_, "arena"));
    std::vector<uint8_t> zeros(arenaBytes_, 0);
    be.copyToDevice(StreamKind::Compute, arena_, zeros.data(), arenaBytes_);
    const int64_t S = plan.maxSeqLen(), maxT = plan.maxTokens();
    if (prog_.kv_caches())
      for (const plan::KVCache *c : *prog_.kv_caches())
        caches_.push_back(allocateKVCache(be, *c, S));
    // ids, positions, sequence slots, logit rows: maxT each (as Session).
    tokens_ = static_cast<int64_t *>(be.allocate(uint64_t(4 * maxT) * 8, "tokens"));
    be.synchronizeAll();
    args_.buffers = &plan.rankInfo(rank).buffers;
    args_.arena = arena_;
    args_.caches = caches_.data();
    args_.weights = weights_->views();
    args_.weightInfo = &plan.weights();
    args_.stats = &stats_;
    args_.computeDtype = plan.plan().compute_dtype();
    args_.ids = tokens_;
    args_.pos = tokens_ + maxT;
    args_.seq = tokens_ + 2 * maxT;
    args_.logitRows = tokens_ + 3 * maxT;
  }
  ~Runner() {
    be_.synchronizeAll();
    be_.deallocate(arena_, arenaBytes_);
    for (KVCacheBuf &c : caches_) {
      be_.deallocate(c.k, c.bytes);
      be_.deallocate(c.v, c.bytes);
    }
    be_.deallocate(tokens_, uint64_t(4 * plan_.maxTokens()) * 8);
    if (pages_)
      be_.deallocate(pages_, pagesBytes_);
  }

  const BufferInfo &buf(int b) const { return plan_.rankInfo(rank_).buffers[size_t(b)]; }
  /// Writes v at the start of buffer b.
  template <typename V> void set(int b, const std::vector<V> &v) {
    be_.copyToDevice(StreamKind::Compute, arena_ + buf(b).offset, v.data(), v.size() * sizeof(V));
    be_.synchronize(StreamKind::Compute);
  }
  /// The first n elements of buffer b.
  template <typename V = float> std::vector<V> get(int b, size_t n) {
    std::vector<V> v(n);
    be_.copyToHost(StreamKind::Compute, v.data(), arena_ + buf(b).offset, n * sizeof(V));
    be_.synchronize(StreamKind::Compute);
    return v;
  }
  /// Random values for the first `rows` rows of buffer b (written), in [-amp, amp).
  Vec fill(int b, int64_t rows, uint32_t seed, float amp = 1.0f) {
    Vec v = randomFloats(size_t(rows * buf(b).rowElems), seed);
    for (float &x : v)
      x *= amp;
    set(b, v);
    return v;
  }
  /// Weight idx as the backend holds its values (rounded to its dtype).
  Vec weight(int idx) const {
    if (idx < 0)
      return {};
    const WeightInfo &w = plan_.weights()[size_t(idx)];
    // An expert's slice of a stacked weight is its block of the whole.
    std::string key = w.name;
    uint64_t shift = 0;
    if (w.stacked >= 0 && w.sourceTensor.find("{e}") == std::string::npos) {
      key = plan_.weights()[size_t(w.stacked)].name;
      shift = uint64_t(w.expert) * w.numel;
    }
    Vec v(w.numel);
    uint8_t tmp[4];
    for (uint64_t i = 0; i < w.numel; ++i) {
      storeFromF32(tmp, w.dtype, 0, randomWeightValue(seed_, key, w.init, w.initStd, i + shift));
      v[i] = loadAsF32(tmp, w.dtype, 0);
    }
    return v;
  }
  /// K or V of cache c as floats ([kvHeads, maxSeq, headDim]).
  Vec cache(int c, bool v) {
    const KVCacheBuf &kc = caches_[size_t(c)];
    std::vector<uint8_t> raw(kc.bytes);
    be_.copyToHost(StreamKind::Compute, raw.data(), v ? kc.v : kc.k, kc.bytes);
    be_.synchronizeAll();
    Vec out(kc.bytes / dtypeSize(kc.dtype));
    for (size_t i = 0; i < out.size(); ++i)
      out[i] = loadAsF32(raw.data(), kc.dtype, i);
    return out;
  }

  /// Makes the next runs batched steps (StepArgs' batch description): row
  /// t belongs to sequence slot seq[t], whose position p is KV pool row
  /// table[seq[t] * pagesPerSeq + p / pageSize] * pageSize + p % pageSize;
  /// the Logits step computes rows logitRows into rowLogits (device).
  void batch(Ids seq, const std::vector<int32_t> &table, int64_t pagesPerSeq, int64_t pageSize,
             Ids logitRows = {}, float *rowLogits = nullptr) {
    seq_ = std::move(seq);
    logitRows_ = std::move(logitRows);
    if (pages_)
      be_.deallocate(pages_, pagesBytes_);
    pagesBytes_ = std::max<uint64_t>(table.size() * 4, 4);
    pages_ = static_cast<int32_t *>(be_.allocate(pagesBytes_, "page table"));
    be_.copyToDevice(StreamKind::Compute, pages_, table.data(), table.size() * 4);
    be_.synchronize(StreamKind::Compute);
    args_.pageTable = pages_;
    args_.pagesPerSeq = pagesPerSeq;
    args_.pageSize = pageSize;
    args_.rowLogits = rowLogits;
  }

  /// Runs step `step` for T = pos.size() tokens at positions pos.
  void run(int step, const Ids &pos, const Ids &ids = {}, float *allLogits = nullptr) {
    setTokens(pos, ids);
    args_.allLogits = allLogits;
    args_.stepIndex = step;
    const plan::Step &s = *prog_.steps()->Get(unsigned(step));
    be_.launch(streamOf(s), s, args_);
    be_.synchronizeAll();
  }

  /// Runs steps [begin, end) as the backend groups them (groupSteps +
  /// launchGroup), or one by one; checks the grouping is well formed.
  void runSteps(unsigned begin, unsigned end, const Ids &pos, bool grouped) {
    std::vector<unsigned> ends = be_.groupSteps(plan_, rank_);
    EXPECT_EQ(ends.size(), size_t(prog_.steps()->size()));
    setTokens(pos, {});
    args_.allLogits = nullptr;
    for (unsigned i = begin; i < end;) {
      unsigned e = grouped ? std::min(ends[i], end) : i + 1;
      EXPECT_GT(e, i);
      const plan::Step &s = *prog_.steps()->Get(i);
      args_.stepIndex = int(i);
      if (e == i + 1) {
        be_.launch(streamOf(s), s, args_);
      } else {
        for (unsigned k = i + 1; k < e; ++k)
          EXPECT_EQ(streamOf(*prog_.steps()->Get(k)), streamOf(s)) << "a group spans streams";
        be_.launchGroup(streamOf(s), prog_, i, e, args_);
      }
      i = std::max(e, i + 1);
    }
    be_.synchronizeAll();
  }

  /// Gate steps: where to add routing counts (--expert-profile); nulls: none.
  void gateCounts(uint64_t *routed, uint64_t *dropped) { args_.gateCounts = {routed, dropped}; }

  /// Experts steps: the local experts the next launches run (empty: all) and
  /// whether a launch starts the step (expert streaming launches in parts).
  void expertParts(std::vector<int32_t> subset, bool first) {
    subset_ = std::move(subset);
    args_.expertSubset = subset_;
    args_.expertsFirstPart = first;
  }

  Backend &backend() { return be_; }
  /// Buffer b in the backend's memory.
  float *device(int b) { return reinterpret_cast<float *>(arena_ + buf(b).offset); }
  WeightStore &weights() { return *weights_; }

private:
  /// The call's ids, positions, slots (batch(); else slot 0) and logit rows.
  void setTokens(const Ids &pos, const Ids &ids) {
    const int64_t maxT = plan_.maxTokens();
    hostTokens_.assign(size_t(4 * maxT), 0);
    std::copy(ids.begin(), ids.end(), hostTokens_.begin());
    std::copy(pos.begin(), pos.end(), hostTokens_.begin() + maxT);
    std::copy(seq_.begin(), seq_.end(), hostTokens_.begin() + 2 * maxT);
    std::copy(logitRows_.begin(), logitRows_.end(), hostTokens_.begin() + 3 * maxT);
    be_.copyToDevice(StreamKind::Compute, tokens_, hostTokens_.data(), uint64_t(4 * maxT) * 8);
    be_.synchronize(StreamKind::Compute);
    args_.T = int64_t(pos.size());
    args_.hostPos = hostTokens_.data() + maxT;
    args_.hostSeq = hostTokens_.data() + 2 * maxT;
    args_.hostLogitRows = hostTokens_.data() + 3 * maxT;
    args_.numLogitRows = int64_t(logitRows_.size());
  }

  Backend &be_;
  const PlanFile &plan_;
  int rank_;
  uint64_t seed_;
  const plan::RankProgram &prog_;
  std::unique_ptr<WeightStore> weights_;
  uint8_t *arena_ = nullptr;
  uint64_t arenaBytes_ = 0;
  std::vector<KVCacheBuf> caches_;
  int64_t *tokens_ = nullptr;
  std::vector<int64_t> hostTokens_;
  StepStats stats_;
  StepArgs args_;
  std::vector<int32_t> subset_;
  Ids seq_, logitRows_;
  int32_t *pages_ = nullptr;
  uint64_t pagesBytes_ = 0;
};

double maxAbs(const Vec &v) {
  double m = 0.0;
  for (float x : v)
    m = std::max(m, double(std::abs(x)));
  return m;
}

/// |got - ref| <= tol * max|ref| (tol 0: equal values).
void expectNormwise(const Vec &got, const Vec &ref, double tol, const std::string &what) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  double bound = tol * maxAbs(ref), worst = 0.0;
  size_t at = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    double e = std::abs(double(got[i]) - double(ref[i]));
    if (!(e <= worst) || std::isnan(got[i])) {
      worst = std::isnan(got[i]) ? INFINITY : e;
      at = i;
    }
  }
  EXPECT_LE(worst, bound) << what << ": element " << at << " is " << got[at] << ", expected "
                          << ref[at] << " (bound " << bound << ")";
}

/// |got - ref| <= tol * mag per element (mag: the sum of |terms|).
void expectBounded(const Vec &got, const Vec &ref, const Vec &mag, double tol,
                   const std::string &what) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    double e = std::abs(double(got[i]) - double(ref[i]));
    if (!(e <= tol * mag[i] + 1e-30)) {
      ADD_FAILURE() << what << ": element " << i << " is " << got[i] << ", expected " << ref[i]
                    << " (bound " << tol * mag[i] << ")";
      return;
    }
  }
}

Vec absOf(Vec v) {
  for (float &x : v)
    x = std::abs(x);
  return v;
}

Ids positions(int64_t start, int64_t T) {
  Ids p;
  for (int64_t t = 0; t < T; ++t)
    p.push_back(start + t);
  return p;
}

std::string dtypeStr(DType d) { return dtypeName(d); }

class BackendConformance : public ::testing::TestWithParam<std::string> {};

} // namespace

//===----------------------------------------------------------------------===//
// Embedding, PositionEmbedding: exact (a weight row, times the scale: one f32
// multiplication / addition per element).
//===----------------------------------------------------------------------===//

TEST_P(BackendConformance, Embedding) {
  BACKEND_OR_SKIP(be, 1);
  auto comm = makeLocalComm();
  for (DType dt : kWeightDtypes)
    for (float scale : {1.0f, 2.75f}) {
      TinyPlan p(8, 32, 1, 13);
      const int64_t D = 7;
      mp::EmbeddingT op;
      op.weight = p.b.weight("emb", {13, D}, dt, dt, mp::Init::Normal, 0.5f);
      op.out = p.b.buffer("x", 9);
      op.scale = scale;
      p.b.step(op, "embed");
      PlanFile plan = p.finish();
      Runner r(*be, plan, *comm);
      for (int64_t T : {1, 6}) {
        Ids ids;
        for (int64_t t = 0; t < T; ++t)
          ids.push_back((t * 5 + 3) % 13);
        Vec before = r.fill(op.out, T, 1);
        r.run(0, positions(0, T), ids);
        Vec ref = before;
        ref::embedding(ids, r.weight(op.weight), D, scale, ref, 9);
        expectNormwise(r.get(op.out, size_t(T * 9)), ref, 0.0,
                       "Embedding " + dtypeStr(dt) + " T=" + std::to_string(T));
      }
    }
}

TEST_P(BackendConformance, PositionEmbedding) {
  BACKEND_OR_SKIP(be, 1);
  auto comm = makeLocalComm();
  for (DType dt : kWeightDtypes) {
    TinyPlan p(8, 32);
    const int64_t D = 7;
    mp::PositionEmbeddingT op;
    op.weight = p.b.weight("wpe", {32, D}, dt, dt, mp::Init::Normal, 0.5f);
    op.inout = p.b.buffer("x", D);
    p.b.step(op, "wpe");
    PlanFile plan = p.finish();
    Runner r(*be, plan, *comm);
    for (int64_t T : {1, 5}) {
      Ids pos = positions(T == 1 ? 17 : 9, T);
      Vec ref = r.fill(op.inout, T, 2);
      r.run(0, pos);
      ref::positionEmbedding(pos, r.weight(op.weight), D, ref, D);
      expectNormwise(r.get(op.inout, size_t(T * D)), ref, 0.0,
                     "PositionEmbedding " + dtypeStr(dt) + " T=" + std::to_string(T));
    }
  }
}

//===----------------------------------------------------------------------===//
// Norm: 1e-5 normwise (f32 reductions of up to a few dozen elements).
//===----------------------------------------------------------------------===//

TEST_P(BackendConformance, Norm) {
  BACKEND_OR_SKIP(be, 1);
  auto comm = makeLocalComm();
  struct Case {
    bool rms;
    bool weight, bias;
    float weightOffset;
    int64_t ld, colOffset, cols, dim;
    bool inPlace;
  };
  const Case cases[] = {
      {false, true, true, 0.0f, 23, 0, 0, 23, false},  // GPT-2 LayerNorm
      {false, false, false, 0.0f, 23, 0, 0, 23, true}, // no affine
      {true, true, false, 0.0f, 23, 0, 0, 23, false},  // Llama RMSNorm
      {true, true, false, 1.0f, 23, 0, 0, 23, true},   // Gemma: (1 + w)
      {true, false, false, 0.0f, 19, 0, 0, 19, false}, // no weight
      {true, true, false, 0.0f, 31, 3, 20, 5, true},   // per-head q/k norm: 4 groups of 5
      {false, true, true, 0.0f, 31, 7, 0, 6, false},   // LayerNorm groups to the row's end
      {true, true, false, 0.0f, 24, 0, 0, 24, false},  // out wider than in (below)
  };
  for (DType dt : kWeightDtypes)
    for (const Case &c : cases) {
      TinyPlan p;
      mp::NormT op;
      op.kind = c.rms ? mp::NormKind::RMSNorm : mp::NormKind::LayerNorm;
      // The last case writes an out buffer of 5 more columns than in.
      const int64_t ldo = &c == &cases[std::size(cases) - 1] ? c.ld + 5 : c.ld;
      op.in = p.b.buffer("in", c.ld);
      op.out = c.inPlace ? op.in : p.b.buffer("out", ldo);
      op.dim = c.dim;
      op.eps = 1e-5f;
      op.col_offset = c.colOffset;
      op.cols = c.cols;
      op.weight_offset = c.weightOffset;
      if (c.weight)
        op.weight = p.b.weight("w", {c.dim}, dt, dt, mp::Init::Normal, 0.7f);
      if (c.bias)
        op.bias = p.b.weight("b", {c.dim}, dt, dt, mp::Init::Normal, 0.3f);
      p.b.step(op, "norm");
      PlanFile plan = p.finish();
      Runner r(*be, plan, *comm);
      for (int64_t T : {1, 4}) {
        std::string what = fmt::format("Norm rms={} w={} b={} off={} cols [{}, +{}) dim {} {} T={}",
                                       c.rms, c.weight, c.bias, c.weightOffset, c.colOffset,
                                       c.cols, c.dim, dtypeStr(dt), T);
        Vec out = c.inPlace ? Vec{} : r.fill(op.out, T, 7);
        Vec in = r.fill(op.in, T, 3, 2.0f);
        if (c.inPlace)
          out = in;
        r.run(0, positions(0, T));
        Vec w = r.weight(op.weight), b = r.weight(op.bias);
        int64_t cols = c.cols ? c.cols : c.ld - c.colOffset;
        ref::norm(c.rms, in, c.ld, out, ldo, T, c.colOffset, cols, c.dim,
                  c.weight ? &w : nullptr, c.bias ? &b : nullptr, 1e-5f, c.weightOffset);
        Vec got = r.get(op.out, size_t(T * ldo));
        expectNormwise(got, out, 1e-5, what);
        // Columns outside the range are kept bit for bit.
        for (int64_t t = 0; t < T; ++t)
          for (int64_t j = 0; j < ldo; ++j) {
            if (j < c.colOffset || j >= c.colOffset + cols) {
              EXPECT_EQ(got[size_t(t * ldo + j)], out[size_t(t * ldo + j)]) << what << " col " << j;
            }
          }
      }
    }
}

//===----------------------------------------------------------------------===//
// Linear: product bound 1e-5 with f32 compute (weights of any dtype upcast
// exactly, f32 accumulation of at most ~130 terms); 2^-8 with compute dtype
// BF16 (activations and weights may be rounded to bf16: 2^-9 relative each).
//===----------------------------------------------------------------------===//

namespace {
struct LinearCase {
  DType dt;
  bool transposed, bias, accumulate, lastRowOnly;
  int64_t outColOffset;
};
} // namespace

static void checkLinear(Backend &be, const LinearCase &c, int64_t N, int64_t K, DType compute,
                        double tol) {
  auto comm = makeLocalComm();
  TinyPlan p(32);
  const int64_t ldx = K + 3, ldy = c.outColOffset + N + 2;
  mp::LinearT op;
  op.in = p.b.buffer("x", ldx);
  op.out = c.lastRowOnly ? p.b.buffer("y", ldy, 0, 1) : p.b.buffer("y", ldy);
  std::vector<int64_t> shape = c.transposed ? std::vector<int64_t>{K, N} : std::vector<int64_t>{N, K};
  op.weight = p.b.weight("w", shape, c.dt, c.dt, mp::Init::Normal, 0.3f);
  if (c.bias)
    op.bias = p.b.weight("bias", {N}, c.dt, c.dt, mp::Init::Normal, 0.5f);
  op.weight_transposed = c.transposed;
  op.accumulate = c.accumulate;
  op.out_col_offset = c.outColOffset;
  op.last_row_only = c.lastRowOnly;
  p.b.step(op, "linear");
  PlanFile plan = p.finish(compute);
  Runner r(be, plan, *comm);
  Vec w = r.weight(op.weight), b = r.weight(op.bias);
  // T = 1 and 2 (matrix-vector products), up to 8 (small batches), 13 and
  // 30 (tiled products with partial tiles).
  for (int64_t T : {1, 2, 7, 13, 30}) {
    std::string what = fmt::format("Linear {} [{}x{}] tr={} bias={} acc={} last={} off={} "
                                   "compute={} threads={} T={}",
                                   dtypeStr(c.dt), N, K, c.transposed, c.bias, c.accumulate,
                                   c.lastRowOnly, c.outColOffset, dtypeStr(compute), be.threads(),
                                   T);
    int64_t outRows = c.lastRowOnly ? 1 : T;
    Vec x = r.fill(op.in, T, 11 + uint32_t(T));
    Vec y = r.fill(op.out, outRows, 12);
    r.run(0, positions(0, T));
    Vec xs(x.begin() + (c.lastRowOnly ? (T - 1) * ldx : 0), x.end());
    Vec ref = y, mag(y.size(), 0.0f);
    for (size_t i = 0; i < mag.size(); ++i)
      mag[i] = c.accumulate ? std::abs(y[i]) : 0.0f;
    ref::linear(xs, ldx, outRows, w, N, K, c.transposed, c.bias ? &b : nullptr, ref, ldy,
                c.outColOffset, c.accumulate);
    Vec ab = absOf(b);
    ref::linear(absOf(xs), ldx, outRows, absOf(w), N, K, c.transposed, c.bias ? &ab : nullptr,
                mag, ldy, c.outColOffset, true);
    Vec got = r.get(op.out, size_t(outRows * ldy));
    expectBounded(got, ref, mag, tol, what);
    // Columns outside [off, off + N) are untouched.
    for (int64_t t = 0; t < outRows; ++t)
      for (int64_t j = 0; j < ldy; ++j) {
        if (j < c.outColOffset || j >= c.outColOffset + N) {
          EXPECT_EQ(got[size_t(t * ldy + j)], y[size_t(t * ldy + j)]) << what << " col " << j;
        }
      }
  }
}

TEST_P(BackendConformance, Linear) {
  for (int threads : {1, 3}) {
    BACKEND_OR_SKIP(be, threads);
    for (DType dt : kWeightDtypes)
      for (bool tr : {false, true})
        for (int v = 0; v < 4; ++v) { // plain, bias, accumulate at a column offset, both
          LinearCase c{dt, tr, v == 1 || v == 3, v >= 2, false, v == 2 ? 5 : 0};
          checkLinear(*be, c, 37, 29, DType::F32, 1e-5);
          if (v == 0)
            checkLinear(*be, c, 67, 130, DType::F32, 1e-5); // more than one block of rows
        }
    // Degenerate and exact-block shapes: one output (a router or shared
    // expert gate), one input column, whole blocks of 16 rows / 32 columns.
    for (DType dt : kWeightDtypes)
      for (auto [N, K] : {std::pair<int64_t, int64_t>{1, 45}, {5, 1}, {1, 1}, {16, 32}, {48, 64}})
        checkLinear(*be, {dt, false, true, false, false, 0}, N, K, DType::F32, 1e-5);
    // last_row_only, with bias and an output column offset.
    checkLinear(*be, {DType::BF16, false, true, false, true, 3}, 37, 29, DType::F32, 1e-5);
    checkLinear(*be, {DType::F32, true, false, true, true, 0}, 37, 29, DType::F32, 1e-5);
  }
  // BF16 weights row-major (BackendOptions::packWeights = false).
  if (auto be = tryBackend(GetParam(), 2, false))
    for (bool tr : {false, true}) {
      checkLinear(*be, {DType::BF16, tr, true, false, false, 0}, 67, 130, DType::F32, 1e-5);
      checkLinear(*be, {DType::BF16, tr, false, true, false, 2}, 37, 29, DType::BF16, 1.0 / 256);
    }
}

TEST_P(BackendConformance, LinearRandomShapes) {
  // Shapes drawn from a fixed seed (N, K in 1..100): every tile and block
  // remainder sooner or later; product bounds as Linear. MOERT_SHAPE_SEED=n
  // draws other shapes.
  BACKEND_OR_SKIP(be, 3);
  const char *seed = std::getenv("MOERT_SHAPE_SEED");
  std::mt19937 rng(seed ? uint32_t(std::strtoul(seed, nullptr, 10)) : 2026u);
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  for (int i = 0; i < 24; ++i) {
    DType dt = kWeightDtypes[pick(0, 2)];
    LinearCase c{dt, pick(0, 3) == 0, pick(0, 1) == 1, pick(0, 1) == 1, false, pick(0, 2)};
    DType compute = pick(0, 3) == 0 ? DType::BF16 : DType::F32;
    checkLinear(*be, c, pick(1, 100), pick(1, 100), compute,
                compute == DType::BF16 ? 1.0 / 256 : 1e-5);
  }
}

TEST_P(BackendConformance, LinearOverSlotRows) {
  // A Linear over a buffer of T * 3 rows (per-slot rows, as after a gate)
  // computes every row; product bound 1e-5.
  BACKEND_OR_SKIP(be, 3);
  auto comm = makeLocalComm();
  for (DType dt : kWeightDtypes) {
    const int64_t N = 19, K = 22, per = 3;
    TinyPlan p(16);
    mp::LinearT op;
    op.in = p.b.buffer("slots", K, per);
    op.out = p.b.buffer("y", N, per);
    op.weight = p.b.weight("w", {N, K}, dt, dt, mp::Init::Normal, 0.3f);
    p.b.step(op, "linear");
    PlanFile plan = p.finish();
    Runner r(*be, plan, *comm);
    Vec w = r.weight(op.weight);
    for (int64_t T : {1, 5, 11}) {
      Vec x = r.fill(op.in, T * per, 191);
      r.run(0, positions(0, T));
      Vec ref(size_t(T * per * N)), mag(ref.size());
      ref::linear(x, K, T * per, w, N, K, false, nullptr, ref, N, 0, false);
      ref::linear(absOf(x), K, T * per, absOf(w), N, K, false, nullptr, mag, N, 0, false);
      expectBounded(r.get(op.out, ref.size()), ref, mag, 1e-5,
                    fmt::format("Linear over {} rows per token, {} T={}", per, dtypeStr(dt), T));
    }
  }
}

TEST_P(BackendConformance, LinearBf16Compute) {
  BACKEND_OR_SKIP(be, 3);
  for (DType dt : kWeightDtypes)
    for (bool tr : {false, true}) {
      checkLinear(*be, {dt, tr, true, false, false, 0}, 67, 130, DType::BF16, 1.0 / 256);
      checkLinear(*be, {dt, tr, false, true, false, 4}, 37, 29, DType::BF16, 1.0 / 256);
      checkLinear(*be, {dt, tr, true, false, false, 0}, 1, 45, DType::BF16, 1.0 / 256);
      checkLinear(*be, {dt, tr, false, false, false, 0}, 5, 1, DType::BF16, 1.0 / 256);
    }
}

//===----------------------------------------------------------------------===//
// Rope: 1e-5 normwise (cos/sin of positions up to ~45, |x| < 1).
//===----------------------------------------------------------------------===//

TEST_P(BackendConformance, Rope) {
  BACKEND_OR_SKIP(be, 1);
  auto comm = makeLocalComm();
  for (bool interleaved : {false, true})
    for (int rotary : {10, 6}) {
      TinyPlan p(8, 1024);
      const int heads = 3, hd = 10;
      const int64_t colOffset = 4, ld = colOffset + heads * hd + 3;
      mp::RopeT op;
      op.buf = p.b.buffer("qk", ld);
      op.col_offset = colOffset;
      op.num_heads = heads;
      op.head_dim = hd;
      op.rotary_dim = rotary;
      op.theta = 500.0f;
      op.style = interleaved ? mp::RopeStyle::Interleaved : mp::RopeStyle::NeoX;
      p.b.step(op, "rope");
      PlanFile plan = p.finish();
      Runner r(*be, plan, *comm);
      for (int64_t T : {1, 7, 3}) {
        // After a prefix; then far positions (past any table built so far).
        Ids pos = positions(T == 1 ? 44 : T == 7 ? 5 : 700, T);
        Vec ref = r.fill(op.buf, T, 21);
        Vec in = ref;
        r.run(0, pos);
        ref::rope(ref, ld, pos, colOffset, heads, hd, rotary, 500.0f, interleaved);
        Vec got = r.get(op.buf, size_t(T * ld));
        std::string what = fmt::format("Rope interleaved={} rotary {} of {} T={}", interleaved,
                                       rotary, hd, T);
        expectNormwise(got, ref, 1e-5, what);
        for (int64_t t = 0; t < T; ++t)
          for (int64_t j = 0; j < ld; ++j) {
            int64_t c = j - colOffset;
            bool rotated = c >= 0 && c < heads * hd && c % hd < rotary;
            if (!rotated) {
              EXPECT_EQ(got[size_t(t * ld + j)], in[size_t(t * ld + j)]) << what << " col " << j;
            }
          }
      }
    }
}

//===----------------------------------------------------------------------===//
// Attention: 1e-5 normwise against double softmax(q k^T * scale) v over K/V
// rounded to the cache dtype; the cache's contents exactly.
//===----------------------------------------------------------------------===//

namespace {
/// x as a value of dtype dt holds it.
float roundTo(DType dt, float x) {
  uint8_t tmp[4];
  storeFromF32(tmp, dt, 0, x);
  return loadAsF32(tmp, dt, 0);
}

/// An Attention step of H query heads on KV heads of head_dim hd over qkv
/// rows [pad | q | k | v] (one column of padding first), into out rows of
/// H * hd + 2 floats; gpt-oss's sinks (large enough to take a real share)
/// when asked.
mp::AttentionT attentionStep(TinyPlan &p, int H, int KV, int hd, DType cacheDt, int window,
                             bool sinks) {
  mp::AttentionT op;
  op.qkv = p.b.buffer("qkv", (H + 2 * KV) * hd + 1);
  op.out = p.b.buffer("attn", H * hd + 2);
  op.q_col = 1;
  op.k_col = 1 + H * hd;
  op.v_col = 1 + (H + KV) * hd;
  op.cache = p.b.kvCache(0, KV, hd, cacheDt);
  op.num_heads = H;
  op.num_kv_heads = KV;
  op.head_dim = hd;
  op.scale = 1.0f / std::sqrt(float(hd));
  op.sliding_window = window;
  if (sinks)
    op.sinks = p.b.weight("attn.sinks", {H}, cacheDt, cacheDt, mp::Init::Normal, 2.0f);
  p.b.step(op, "attn");
  return op;
}
} // namespace

TEST_P(BackendConformance, Attention) {
  for (int threads : {1, 3}) {
    BACKEND_OR_SKIP(be, threads);
    auto comm = makeLocalComm();
    for (DType cacheDt : kWeightDtypes)
      for (int window : {0, 4})
        for (int64_t T : {1, 3, 4})
          for (bool sinks : {false, true}) {
          // GQA (6 heads on 2) of head_dim 10; T = 4: MQA of head_dim 40.
          const int H = T == 4 ? 4 : 6, KV = T == 4 ? 1 : 2, hd = T == 4 ? 40 : 10;
          const int64_t S = 32, ldqkv = (H + 2 * KV) * hd + 1, ldo = H * hd + 2;
          TinyPlan p(8, S);
          mp::AttentionT op = attentionStep(p, H, KV, hd, cacheDt, window, sinks);
          PlanFile plan = p.finish();
          Runner r(*be, plan, *comm);
          const Vec sinkValues = sinks ? r.weight(op.sinks) : Vec();
          // Reference K/V history [KV][S][hd], rounded to the cache dtype.
          Vec K(size_t(KV * S * hd), 0.0f), V = K;
          auto call = [&](Ids pos, uint32_t seed) {
            int64_t n = int64_t(pos.size());
            Vec qkv = r.fill(op.qkv, n, seed, 1.5f);
            Vec out = r.fill(op.out, n, seed + 1);
            r.run(0, pos);
            auto round = [&](float x) { return roundTo(cacheDt, x); };
            for (int64_t t = 0; t < n; ++t)
              for (int h = 0; h < KV; ++h)
                for (int i = 0; i < hd; ++i) {
                  size_t at = size_t((h * S + pos[size_t(t)]) * hd + i);
                  K[at] = round(qkv[size_t(t * ldqkv + op.k_col + h * hd + i)]);
                  V[at] = round(qkv[size_t(t * ldqkv + op.v_col + h * hd + i)]);
                }
            ref::attention(qkv, ldqkv, op.q_col, pos, K, V, S, H, KV, hd, op.scale, window, out,
                           ldo, sinks ? &sinkValues : nullptr);
            std::string what =
                fmt::format("Attention cache {} window {} sinks {} threads {} T={} at {}",
                            dtypeStr(cacheDt), window, sinks, threads, n, pos[0]);
            expectNormwise(r.get(op.out, size_t(n * ldo)), out, 1e-5, what);
            expectNormwise(r.cache(op.cache, false), K, 0.0, what + " K cache");
            expectNormwise(r.cache(op.cache, true), V, 0.0, what + " V cache");
          };
          call(positions(0, 7), 31);  // the prefix (prefill)
          call(positions(7, T), 41);  // then decode / a chunk over it
          call(positions(7 + T, 2), 51);
        }
  }
}

/// A batched step (StepArgs seq/pageTable): rows of three sequences,
/// interleaved, whose K/V share one pool of shuffled pages; each row attends
/// over its own sequence's positions only. Same bounds as Attention.
TEST_P(BackendConformance, PagedAttention) {
  BACKEND_OR_SKIP(be, 2);
  auto comm = makeLocalComm();
  const int64_t pageSize = 4, pagesPerSeq = 4, slots = 3, S = slots * pagesPerSeq * pageSize;
  const int64_t seqLen = pagesPerSeq * pageSize;
  for (DType cacheDt : {DType::F32, DType::BF16})
    for (int window : {0, 3})
      for (bool sinks : {false, true}) {
        const int H = 6, KV = 2, hd = 10;
        const int64_t ldqkv = (H + 2 * KV) * hd + 1, ldo = H * hd + 2;
        TinyPlan p(8, S);
        mp::AttentionT op = attentionStep(p, H, KV, hd, cacheDt, window, sinks);
        PlanFile plan = p.finish();
        Runner r(*be, plan, *comm);
        const Vec sinkValues = sinks ? r.weight(op.sinks) : Vec();
        std::vector<int32_t> table(size_t(slots * pagesPerSeq));
        std::iota(table.begin(), table.end(), 0);
        std::mt19937 rng(uint32_t(3 + window));
        std::shuffle(table.begin(), table.end(), rng);
        // Each sequence's K/V history [KV][seqLen][hd] and the pool it maps to.
        std::vector<Vec> K(size_t(slots), Vec(size_t(KV * seqLen * hd), 0.0f)), V = K;
        Vec poolK(size_t(KV * S * hd), 0.0f), poolV = poolK;
        auto call = [&](const Ids &seq, const Ids &pos, uint32_t seed) {
          const int64_t n = int64_t(pos.size());
          r.batch(seq, table, pagesPerSeq, pageSize);
          Vec qkv = r.fill(op.qkv, n, seed, 1.5f);
          Vec out = r.fill(op.out, n, seed + 1);
          r.run(0, pos);
          auto round = [&](float x) { return roundTo(cacheDt, x); };
          for (int64_t t = 0; t < n; ++t) {
            const int64_t sl = seq[size_t(t)], ps = pos[size_t(t)];
            const int64_t row = table[size_t(sl * pagesPerSeq + ps / pageSize)] * pageSize +
                                ps % pageSize;
            for (int h = 0; h < KV; ++h)
              for (int i = 0; i < hd; ++i) {
                float k = round(qkv[size_t(t * ldqkv + op.k_col + h * hd + i)]);
                float v = round(qkv[size_t(t * ldqkv + op.v_col + h * hd + i)]);
                K[size_t(sl)][size_t((h * seqLen + ps) * hd + i)] = k;
                V[size_t(sl)][size_t((h * seqLen + ps) * hd + i)] = v;
                poolK[size_t((h * S + row) * hd + i)] = k;
                poolV[size_t((h * S + row) * hd + i)] = v;
              }
          }
          // The reference: each sequence's rows alone over its own history.
          for (int64_t sl = 0; sl < slots; ++sl) {
            Ids rows, spos;
            for (int64_t t = 0; t < n; ++t)
              if (seq[size_t(t)] == sl) {
                rows.push_back(t);
                spos.push_back(pos[size_t(t)]);
              }
            if (rows.empty())
              continue;
            Vec sq(rows.size() * size_t(ldqkv)), so(rows.size() * size_t(ldo));
            for (size_t i = 0; i < rows.size(); ++i) {
              std::copy_n(qkv.begin() + rows[i] * ldqkv, ldqkv, sq.begin() + int64_t(i) * ldqkv);
              std::copy_n(out.begin() + rows[i] * ldo, ldo, so.begin() + int64_t(i) * ldo);
            }
            ref::attention(sq, ldqkv, op.q_col, spos, K[size_t(sl)], V[size_t(sl)], seqLen, H, KV,
                           hd, op.scale, window, so, ldo, sinks ? &sinkValues : nullptr);
            for (size_t i = 0; i < rows.size(); ++i)
              std::copy_n(so.begin() + int64_t(i) * ldo, ldo, out.begin() + rows[i] * ldo);
          }
          std::string what = fmt::format("PagedAttention cache {} window {} sinks {} seq [{}]",
                                         dtypeStr(cacheDt), window, sinks, fmt::join(seq, ","));
          expectNormwise(r.get(op.out, size_t(n * ldo)), out, 1e-5, what);
          expectNormwise(r.cache(op.cache, false), poolK, 0.0, what + " K pool");
          expectNormwise(r.cache(op.cache, true), poolV, 0.0, what + " V pool");
        };
        call({0, 2, 0, 2, 0, 2, 0}, {0, 0, 1, 1, 2, 2, 3}, 61); // prompts, interleaved
        call({1, 0, 2, 1, 1}, {0, 4, 3, 1, 2}, 71);             // a new one joins
        call({2, 1, 0}, {4, 3, 5}, 81);                         // decode rows
        call({1, 1, 1, 1, 1, 1, 0, 2}, {4, 5, 6, 7, 8, 9, 6, 5}, 91); // a chunk and decodes
      }
}

//===----------------------------------------------------------------------===//
// Activation: 1e-6 normwise (double math rounded to f32; SiLU may use f32 exp).
//===----------------------------------------------------------------------===//

TEST_P(BackendConformance, Activation) {
  BACKEND_OR_SKIP(be, 1);
  auto comm = makeLocalComm();
  const mp::ActKind kinds[] = {mp::ActKind::Gelu, mp::ActKind::GeluTanh, mp::ActKind::Silu,
                               mp::ActKind::Relu, mp::ActKind::Sigmoid,  mp::ActKind::Identity};
  for (mp::ActKind k : kinds)
    for (bool gated : {false, true})
      for (bool inPlace : {false, true}) {
        const int64_t n = 21, ldi = 2 * n + 3, ldo = inPlace ? ldi : n + 1;
        TinyPlan p;
        mp::ActivationT op;
        op.in = p.b.buffer("in", ldi);
        op.out = inPlace ? op.in : p.b.buffer("out", ldo);
        op.kind = k;
        op.gated = gated;
        op.n = n;
        p.b.step(op, "act");
        PlanFile plan = p.finish();
        Runner r(*be, plan, *comm);
        for (int64_t T : {1, 6}) {
          Vec out = inPlace ? Vec{} : r.fill(op.out, T, 61);
          Vec in = r.fill(op.in, T, 62, 5.0f);
          if (inPlace)
            out = in;
          r.run(0, positions(0, T));
          ref::activation(in, ldi, out, ldo, T, n, ref::Act(int(k)), gated);
          std::string what = fmt::format("Activation {} gated={} inPlace={} T={}",
                                         mp::EnumNameActKind(k), gated, inPlace, T);
          Vec got = r.get(op.out, size_t(T * ldo));
          // Only the n output columns are specified.
          for (int64_t t = 0; t < T; ++t)
            for (int64_t j = n; j < ldo; ++j)
              got[size_t(t * ldo + j)] = out[size_t(t * ldo + j)];
          expectNormwise(got, out, 1e-6, what);
        }
      }
}

//===----------------------------------------------------------------------===//
// Add: exact (one f32 addition), out separate or aliasing a or b.
//===----------------------------------------------------------------------===//

TEST_P(BackendConformance, Add) {
  BACKEND_OR_SKIP(be, 1);
  auto comm = makeLocalComm();
  for (int alias : {0, 1, 2}) {
    TinyPlan p;
    const int64_t D = 19;
    mp::AddT op;
    op.a = p.b.buffer("a", D);
    op.b = p.b.buffer("b", D);
    op.out = alias == 1 ? op.a : alias == 2 ? op.b : p.b.buffer("out", D);
    p.b.step(op, "add");
    PlanFile plan = p.finish();
    Runner r(*be, plan, *comm);
    for (int64_t T : {1, 5}) {
      Vec a = r.fill(op.a, T, 71), b = r.fill(op.b, T, 72);
      r.run(0, positions(0, T));
      Vec ref(a.size());
      for (size_t i = 0; i < a.size(); ++i)
        ref[i] = a[i] + b[i];
      expectNormwise(r.get(op.out, ref.size()), ref, 0.0,
                     fmt::format("Add alias={} T={}", alias, T));
    }
  }
}

//===----------------------------------------------------------------------===//
// Gate: routing exact (slot_expert, expert_offsets, the admitted prefix of
// sorted_slots), slot_weight 1e-6 absolute (probabilities in [0, 1]).
//===----------------------------------------------------------------------===//

namespace {
struct GateBufs {
  int logits, se, sw, eo, ss;
  int bias = -1; // the selection bias weight (DeepSeek-V3)
};

GateBufs addGate(PlanBuilder &b, const ref::GateSpec &g, int64_t ldLogits) {
  GateBufs x;
  x.logits = b.buffer("router", ldLogits);
  x.se = b.buffer("slot_expert", 1, g.topK, 0, DType::I32);
  x.sw = b.buffer("slot_weight", 1, g.topK);
  x.eo = b.buffer("expert_offsets", 1, 0, g.numExperts + 1, DType::I32);
  x.ss = b.buffer("sorted_slots", 1, g.topK, 0, DType::I32);
  mp::GateT op;
  op.logits = x.logits;
  op.num_experts = g.numExperts;
  op.top_k = g.topK;
  op.score = g.sigmoid ? mp::ScoreFn::Sigmoid : mp::ScoreFn::Softmax;
  op.softmax_before_topk = g.softmaxBeforeTopk;
  op.norm_topk_prob = g.normTopk;
  op.capacity_factor = g.capacityFactor;
  op.min_capacity = g.minCapacity;
  op.drop_tokens = g.dropTokens;
  op.num_groups = g.numGroups;
  op.topk_groups = g.topkGroups;
  op.routed_scaling_factor = g.routedScalingFactor;
  if (g.selectionBias)
    op.selection_bias = x.bias = b.weight("gate.selection_bias", {g.numExperts}, DType::F32,
                                          DType::F32, mp::Init::Normal, 0.5f);
  op.slot_expert = x.se;
  op.slot_weight = x.sw;
  op.expert_offsets = x.eo;
  op.sorted_slots = x.ss;
  b.step(op, "gate");
  return x;
}
} // namespace

TEST_P(BackendConformance, Gate) {
  BACKEND_OR_SKIP(be, 1);
  auto comm = makeLocalComm();
  // {E, k, sigmoid, softmaxBeforeTopk, normTopk, capacityFactor, minCapacity, drop}
  std::vector<ref::GateSpec> specs = {
      {7, 2, false, true, true, 0, 0, false},   // Mixtral
      {7, 3, false, true, false, 0, 0, false},  // Qwen2-MoE (no renormalization)
      {7, 2, false, false, false, 0, 0, false}, // softmax over the picked logits
      {7, 3, true, true, true, 0, 0, false},    // sigmoid scores, renormalized
      {7, 2, true, false, false, 0, 0, false},  // sigmoid of the picked
      {7, 1, false, true, false, 0, 0, false},  // Switch top-1
      {5, 2, false, true, true, 1.0f, 0, true}, // capacity ceil(1.0 * T * 2 / 5)
      {5, 1, false, true, false, 0.0f, 2, true}, // min_capacity only
      {4, 2, false, true, true, 0.5f, 1, true},
  };
  // DeepSeek-V3's routing: sigmoid scores, a selection bias, groups, a
  // routed scale; with capacity too.
  auto deepseek = [](int E, int k, int groups, int keep, bool bias, float scale, bool drop) {
    ref::GateSpec g{E, k, true, true, true, drop ? 1.0f : 0.0f, 0, drop};
    g.numGroups = groups;
    g.topkGroups = keep;
    g.selectionBias = bias;
    g.routedScalingFactor = scale;
    return g;
  };
  specs.push_back(deepseek(16, 4, 4, 2, true, 2.5f, false));
  specs.push_back(deepseek(12, 3, 3, 1, false, 1.0f, false)); // groups only
  specs.push_back(deepseek(7, 2, 1, 1, true, 1.0f, false));   // bias only
  specs.push_back(deepseek(16, 2, 8, 3, true, 0.5f, true));
  for (const ref::GateSpec &g : specs) {
    TinyPlan p(12);
    const int64_t ld = g.numExperts + 2;
    GateBufs x = addGate(p.b, g, ld);
    PlanFile plan = p.finish();
    Runner r(*be, plan, *comm);
    const Vec bias = x.bias >= 0 ? r.weight(x.bias) : Vec();
    for (int64_t T : {1, 11}) {
      for (bool ties : {false, true}) {
        Vec logits = randomFloats(size_t(T * ld), 81 + uint32_t(T));
        for (float &v : logits)
          v *= 3.0f;
        if (ties) // equal logits: the lower expert id wins
          for (int64_t t = 0; t < T; ++t)
            for (int e = 0; e < g.numExperts; ++e)
              logits[size_t(t * ld + e)] = t % 2 ? 0.5f : float((e * 7 + t) % 3);
        r.set(x.logits, logits);
        std::vector<uint64_t> routed(size_t(g.numExperts), 1), dropped(routed);
        r.gateCounts(routed.data(), dropped.data());
        r.run(0, positions(0, T));
        r.gateCounts(nullptr, nullptr);
        ref::GateResult ref = ref::gate(logits, ld, T, g, &bias);
        // Counts are added (to the 1s above): choices before capacity, and
        // the slots capacity dropped (only when dropping).
        std::vector<uint64_t> wantRouted(size_t(g.numExperts), 1), wantDropped(wantRouted);
        for (int32_t e : ref.slotExpert)
          ++wantRouted[size_t(e)];
        for (int e = 0; e < g.numExperts; ++e)
          wantDropped[size_t(e)] += wantRouted[size_t(e)] - 1 -
                                    uint64_t(ref.expertOffsets[size_t(e) + 1] -
                                             ref.expertOffsets[size_t(e)]);
        std::string what = fmt::format("Gate E={} k={} sigmoid={} before={} norm={} cf={} min={} "
                                       "drop={} groups={}/{} bias={} scale={} T={} ties={}",
                                       g.numExperts, g.topK, g.sigmoid, g.softmaxBeforeTopk,
                                       g.normTopk, g.capacityFactor, g.minCapacity, g.dropTokens,
                                       g.topkGroups, g.numGroups, g.selectionBias,
                                       g.routedScalingFactor, T, ties);
        size_t slots = size_t(T * g.topK);
        EXPECT_EQ(routed, wantRouted) << what << " (routed counts)";
        EXPECT_EQ(dropped, wantDropped) << what << " (dropped counts)";
        EXPECT_EQ(r.get<int32_t>(x.se, slots), ref.slotExpert) << what;
        EXPECT_EQ(r.get<int32_t>(x.eo, size_t(g.numExperts + 1)), ref.expertOffsets) << what;
        EXPECT_EQ(r.get<int32_t>(x.ss, ref.sortedSlots.size()), ref.sortedSlots) << what;
        Vec sw = r.get(x.sw, slots);
        for (size_t i = 0; i < slots; ++i)
          EXPECT_NEAR(sw[i], ref.slotWeight[i], 1e-6) << what << " slot " << i;
      }
    }
  }
}

//===----------------------------------------------------------------------===//
// Experts: 1e-5 normwise over slot_out (f32 compute; weights of any dtype).
//===----------------------------------------------------------------------===//

namespace {
struct ExpertsCase {
  DType dt;
  bool gated, biases;
  mp::ActKind act; // SwigluOai: gpt-oss's experts, with a gate bias
};
} // namespace

static void checkExperts(Backend &be, const ExpertsCase &c, DType compute, double tol,
                         int64_t D = 13, int64_t I = 9) {
  auto comm = makeLocalComm();
  const int E = 5, k = 2;
  TinyPlan p(32);
  ref::GateSpec g{E, k, false, true, true, 0, 0, false};
  GateBufs x = addGate(p.b, g, E);
  mp::ExpertsT op;
  op.in = p.b.buffer("h", D + 2);
  op.sorted_slots = x.ss;
  op.expert_offsets = x.eo;
  op.slot_out = p.b.buffer("slot_out", D, k);
  op.top_k = k;
  op.intermediate = I;
  op.act = c.act;
  op.gated = c.gated;
  const bool oai = c.act == mp::ActKind::SwigluOai;
  if (oai) { // a limit the products reach
    op.swiglu_limit = 1.5f;
    op.swiglu_alpha = 1.702f;
  }
  // Experts 0, 2, 3 (copy 1 of 2: every other slot) and 4 live here; 1 does not.
  struct Listed {
    int id, replica, copies;
  };
  const Listed listed[] = {{0, 0, 1}, {2, 0, 1}, {3, 1, 2}, {4, 0, 2}};
  // Stacked [E, ...] weights; this rank reads the listed experts' slices.
  if (c.gated)
    op.gate = p.b.weight("experts.gate", {E, I, D}, c.dt, c.dt, mp::Init::Normal, 0.4f);
  op.up = p.b.weight("experts.up", {E, I, D}, c.dt, c.dt, mp::Init::Normal, 0.4f);
  op.down = p.b.weight("experts.down", {E, D, I}, c.dt, c.dt, mp::Init::Normal, 0.4f);
  if (c.biases) {
    op.up_bias = p.b.weight("experts.up_bias", {E, I}, c.dt, c.dt, mp::Init::Normal, 0.3f);
    op.down_bias = p.b.weight("experts.down_bias", {E, D}, c.dt, c.dt, mp::Init::Normal, 0.3f);
  }
  if (oai)
    op.gate_bias = p.b.weight("experts.gate_bias", {E, I}, c.dt, c.dt, mp::Init::Normal, 1.0f);
  for (const Listed &l : listed) {
    auto e = std::make_unique<mp::LocalExpertT>();
    e->expert = l.id;
    e->replica = l.replica;
    e->num_replicas = l.copies;
    op.experts.push_back(std::move(e));
  }
  p.b.step(op, "experts");
  PlanFile plan = p.finish(compute);
  Runner r(be, plan, *comm);
  std::vector<Vec> w;
  for (size_t i = 0; i < plan.weights().size(); ++i)
    w.push_back(r.weight(int(i)));
  std::vector<ref::Expert> list;
  for (size_t i = 0; i < op.experts.size(); ++i) {
    const mp::LocalExpertT &e = *op.experts[i];
    auto slice = [&](int stacked) -> const Vec * {
      return stacked < 0 ? nullptr : &w[size_t(plan.weights()[size_t(stacked)].slices[size_t(e.expert)])];
    };
    ref::Expert re;
    re.id = e.expert;
    re.gate = slice(op.gate);
    re.up = slice(op.up);
    re.down = slice(op.down);
    re.upBias = slice(op.up_bias);
    re.downBias = slice(op.down_bias);
    re.gateBias = slice(op.gate_bias);
    re.replica = e.replica;
    re.numReplicas = e.num_replicas;
    list.push_back(re);
  }
  for (int64_t T : {1, 2, 7, 29}) {
    for (uint32_t seed : {91u, 92u, 93u}) {
      std::string what = fmt::format("Experts {} D={} I={} gated={} biases={} act={} compute={} "
                                     "threads={} T={} seed={}",
                                     dtypeStr(c.dt), D, I, c.gated, c.biases,
                                     mp::EnumNameActKind(c.act), dtypeStr(compute), be.threads(),
                                     T, seed);
      Vec logits = randomFloats(size_t(T * E), seed);
      ref::GateResult routing = ref::gate(logits, E, T, g);
      r.set(x.ss, routing.sortedSlots);
      r.set(x.eo, routing.expertOffsets);
      Vec in = r.fill(op.in, T, seed + 100, 2.0f);
      r.fill(op.slot_out, T * k, seed + 200); // overwritten (zeros where not computed)
      r.run(1, positions(0, T));
      Vec ref;
      ref::experts(in, D + 2, T, k, D, I, ref::Act(int(c.act)), c.gated, list, routing, ref,
                   op.swiglu_limit, op.swiglu_alpha);
      expectNormwise(r.get(op.slot_out, size_t(T * k * D)), ref, tol, what);
      // Expert streaming launches the step once per part: the first part
      // clears slot_out, later ones add their experts' rows.
      r.fill(op.slot_out, T * k, seed + 300);
      r.expertParts({2}, true);
      r.run(1, positions(0, T));
      r.expertParts({0, 3}, false);
      r.run(1, positions(0, T));
      r.expertParts({1}, false);
      r.run(1, positions(0, T));
      r.expertParts({}, true);
      expectNormwise(r.get(op.slot_out, size_t(T * k * D)), ref, tol, what + " (in parts)");
    }
  }
}

TEST_P(BackendConformance, Experts) {
  for (int threads : {1, 3}) {
    BACKEND_OR_SKIP(be, threads);
    for (DType dt : kWeightDtypes) {
      checkExperts(*be, {dt, true, false, mp::ActKind::Silu}, DType::F32, 1e-5);
      checkExperts(*be, {dt, false, true, mp::ActKind::Gelu}, DType::F32, 1e-5);
    }
    checkExperts(*be, {DType::BF16, true, true, mp::ActKind::GeluTanh}, DType::F32, 1e-5);
    // Several blocks of rows per matrix.
    checkExperts(*be, {DType::BF16, true, false, mp::ActKind::Silu}, DType::F32, 1e-5, 40, 70);
    checkExperts(*be, {DType::F16, false, true, mp::ActKind::Relu}, DType::F32, 1e-5, 33, 50);
    // gpt-oss: gate bias, clamped SwiGLU (values past the limit both ways).
    for (DType dt : kWeightDtypes)
      checkExperts(*be, {dt, true, true, mp::ActKind::SwigluOai}, DType::F32, 1e-5);
    checkExperts(*be, {DType::BF16, true, true, mp::ActKind::SwigluOai}, DType::F32, 1e-5, 40, 70);
  }
}

TEST_P(BackendConformance, ExpertsRandomShapes) {
  // D, I in 1..80 from a fixed seed (MOERT_SHAPE_SEED=n for others).
  BACKEND_OR_SKIP(be, 3);
  const char *seed = std::getenv("MOERT_SHAPE_SEED");
  std::mt19937 rng(seed ? uint32_t(std::strtoul(seed, nullptr, 10)) : 2027u);
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  const mp::ActKind acts[] = {mp::ActKind::Silu, mp::ActKind::Gelu, mp::ActKind::GeluTanh,
                              mp::ActKind::Relu};
  for (int i = 0; i < 4; ++i) {
    ExpertsCase c{kWeightDtypes[pick(0, 2)], pick(0, 1) == 1, pick(0, 1) == 1, acts[pick(0, 3)]};
    checkExperts(*be, c, DType::F32, 1e-5, pick(1, 80), pick(1, 80));
  }
}

TEST_P(BackendConformance, ExpertsBf16Compute) {
  // Activations rounded to bf16 before each of the two products: 2^-6
  // normwise covers the rounding of x and of the hidden layer.
  BACKEND_OR_SKIP(be, 3);
  checkExperts(*be, {DType::BF16, true, false, mp::ActKind::Silu}, DType::BF16, 1.0 / 64);
  checkExperts(*be, {DType::BF16, false, true, mp::ActKind::Gelu}, DType::BF16, 1.0 / 64);
}

//===----------------------------------------------------------------------===//
// Grouped steps (Backend::groupSteps + launchGroup, the load-time optimize
// hook): q/k/v into column ranges of one buffer and gate/up into two, of
// mixed weight dtypes; product bound 1e-5 like Linear, grouped or not.
//===----------------------------------------------------------------------===//

TEST_P(BackendConformance, GroupedLinear) {
  for (int threads : {1, 3}) {
    BACKEND_OR_SKIP(be, threads);
    auto comm = makeLocalComm();
    const int64_t K = 45, ldx = K + 1, Nq = 24, Nk = 13, Nv = 13, Ni = 35;
    TinyPlan p(32);
    int x = p.b.buffer("x", ldx);
    int qkv = p.b.buffer("qkv", Nq + Nk + Nv);
    int g = p.b.buffer("g", Ni), u = p.b.buffer("u", Ni);
    struct L {
      std::string name;
      int64_t N;
      DType dt;
      bool bias, acc;
      int out;
      int64_t col;
    };
    const L ls[] = {{"q", Nq, DType::BF16, false, false, qkv, 0},
                    {"k", Nk, DType::F32, true, false, qkv, Nq},
                    {"v", Nv, DType::F16, true, false, qkv, Nq + Nk},
                    {"gate", Ni, DType::BF16, false, false, g, 0},
                    {"up", Ni, DType::BF16, true, true, u, 0}};
    std::vector<mp::LinearT> ops;
    for (const L &l : ls) {
      mp::LinearT op;
      op.in = x;
      op.out = l.out;
      op.weight = p.b.weight(l.name, {l.N, K}, l.dt, l.dt, mp::Init::Normal, 0.3f);
      if (l.bias)
        op.bias = p.b.weight(l.name + ".bias", {l.N}, l.dt, l.dt, mp::Init::Normal, 0.3f);
      op.out_col_offset = l.col;
      op.accumulate = l.acc;
      p.b.step(op, l.name);
      ops.push_back(op);
    }
    PlanFile plan = p.finish();
    Runner r(*be, plan, *comm);
    for (int64_t T : {1, 3, 6, 25})
      for (bool grouped : {true, false}) {
        Vec xv = r.fill(x, T, 161 + uint32_t(T));
        Vec ref[2] = {r.fill(qkv, T, 162), r.fill(g, T, 163)};
        Vec uv = r.fill(u, T, 164);
        r.runSteps(0, 5, positions(0, T), grouped);
        Vec refs[3] = {ref[0], ref[1], uv};
        Vec mags[3] = {Vec(ref[0].size()), Vec(ref[1].size()), absOf(uv)};
        for (size_t i = 0; i < ops.size(); ++i) {
          const mp::LinearT &op = ops[i];
          size_t o = op.out == qkv ? 0 : op.out == g ? 1 : 2;
          int64_t ldy = r.buf(op.out).rowElems;
          Vec w = r.weight(op.weight), b = r.weight(op.bias), ab = absOf(b);
          ref::linear(xv, ldx, T, w, ls[i].N, K, false, op.bias >= 0 ? &b : nullptr, refs[o], ldy,
                      op.out_col_offset, op.accumulate);
          ref::linear(absOf(xv), ldx, T, absOf(w), ls[i].N, K, false, op.bias >= 0 ? &ab : nullptr,
                      mags[o], ldy, op.out_col_offset, true);
        }
        std::string what = fmt::format("GroupedLinear threads={} T={} grouped={}", threads, T,
                                       grouped);
        expectBounded(r.get(qkv, refs[0].size()), refs[0], mags[0], 1e-5, what + " qkv");
        expectBounded(r.get(g, refs[1].size()), refs[1], mags[1], 1e-5, what + " gate");
        expectBounded(r.get(u, refs[2].size()), refs[2], mags[2], 1e-5, what + " up");
      }
  }
}

TEST_P(BackendConformance, GroupedLinearOfDifferentWidths) {
  // Linear reads in[t, :K] with K from its weight: steps sharing an input
  // may read different column counts of it (and must still be right when a
  // backend groups them).
  BACKEND_OR_SKIP(be, 2);
  auto comm = makeLocalComm();
  const int64_t ldx = 41;
  TinyPlan p(32);
  int x = p.b.buffer("x", ldx);
  int y1 = p.b.buffer("y1", 19), y2 = p.b.buffer("y2", 23);
  const int64_t K1 = 40, K2 = 17;
  mp::LinearT a, b;
  a.in = b.in = x;
  a.out = y1;
  b.out = y2;
  a.weight = p.b.weight("a", {19, K1}, DType::BF16, DType::BF16, mp::Init::Normal, 0.3f);
  b.weight = p.b.weight("b", {23, K2}, DType::BF16, DType::BF16, mp::Init::Normal, 0.3f);
  p.b.step(a, "a");
  p.b.step(b, "b");
  PlanFile plan = p.finish();
  Runner r(*be, plan, *comm);
  for (int64_t T : {1, 6})
    for (bool grouped : {false, true}) {
      Vec xv = r.fill(x, T, 165);
      r.runSteps(0, 2, positions(0, T), grouped);
      std::string what = fmt::format("Linear K={} and K={} of one input, T={} grouped={}", K1, K2,
                                     T, grouped);
      for (auto [op, N, K] : {std::tuple{a, int64_t(19), K1}, {b, int64_t(23), K2}}) {
        Vec w = r.weight(op.weight), ref(size_t(T * N)), mag(ref.size());
        ref::linear(xv, ldx, T, w, N, K, false, nullptr, ref, N, 0, false);
        ref::linear(absOf(xv), ldx, T, absOf(w), N, K, false, nullptr, mag, N, 0, false);
        expectBounded(r.get(op.out, ref.size()), ref, mag, 1e-5,
                      what + " (K=" + std::to_string(K) + ")");
      }
    }
}

//===----------------------------------------------------------------------===//
// Backend::sample: the same token and RNG state as core's sampleToken on the
// host (exact: the algorithm is core's).
//===----------------------------------------------------------------------===//

TEST_P(BackendConformance, Sample) {
  BACKEND_OR_SKIP(be, 1);
  const int64_t V = 101;
  float *dev = static_cast<float *>(be->allocate(uint64_t(V) * 4, "logits"));
  for (uint32_t seed : {171u, 172u, 173u}) {
    Vec logits = randomFloats(size_t(V), seed);
    for (float &v : logits)
      v *= 6.0f;
    if (seed == 173u) // a tie for the largest logit: the lower id
      logits[40] = logits[77] = 9.0f;
    be->copyToDevice(StreamKind::Compute, dev, logits.data(), uint64_t(V) * 4);
    be->synchronizeAll();
    for (auto [temp, topP] : {std::pair{0.0f, 1.0f}, {0.8f, 1.0f}, {1.3f, 0.9f}}) {
      uint64_t s1 = seed * 7919ull, s2 = s1;
      for (int i = 0; i < 5; ++i) {
        int64_t got = be->sample(dev, V, {temp, topP, &s1});
        int64_t want = sampleToken(logits.data(), V, temp, topP, s2);
        EXPECT_EQ(got, want) << "temperature " << temp << " top_p " << topP << " draw " << i;
        EXPECT_EQ(s1, s2) << "RNG state";
      }
    }
  }
  be->deallocate(dev, uint64_t(V) * 4);
}

//===----------------------------------------------------------------------===//
// Combine, SigmoidGate, ResidualMix: 1e-6 normwise (a few f32 operations).
//===----------------------------------------------------------------------===//

TEST_P(BackendConformance, Combine) {
  BACKEND_OR_SKIP(be, 1);
  auto comm = makeLocalComm();
  for (bool acc : {false, true}) {
    const int k = 3;
    const int64_t D = 11;
    TinyPlan p;
    mp::CombineT op;
    op.slot_out = p.b.buffer("slot_out", D, k);
    op.slot_weight = p.b.buffer("slot_weight", 1, k);
    op.out = p.b.buffer("out", D);
    op.top_k = k;
    op.accumulate = acc;
    p.b.step(op, "combine");
    PlanFile plan = p.finish();
    Runner r(*be, plan, *comm);
    for (int64_t T : {1, 5}) {
      Vec so = r.fill(op.slot_out, T * k, 101);
      Vec sw = r.fill(op.slot_weight, T * k, 102);
      sw[1] = 0.0f; // a dropped slot
      r.set(op.slot_weight, sw);
      Vec out = r.fill(op.out, T, 103);
      r.run(0, positions(0, T));
      ref::combine(so, sw, T, k, D, out, D, acc);
      expectNormwise(r.get(op.out, size_t(T * D)), out, 1e-6,
                     fmt::format("Combine accumulate={} T={}", acc, T));
    }
  }
}

TEST_P(BackendConformance, SigmoidGate) {
  BACKEND_OR_SKIP(be, 1);
  auto comm = makeLocalComm();
  TinyPlan p;
  const int64_t D = 17;
  mp::SigmoidGateT op;
  op.gate_logit = p.b.buffer("g", 3);
  op.inout = p.b.buffer("x", D);
  p.b.step(op, "sgate");
  PlanFile plan = p.finish();
  Runner r(*be, plan, *comm);
  for (int64_t T : {1, 6}) {
    Vec g = r.fill(op.gate_logit, T, 111, 4.0f);
    Vec x = r.fill(op.inout, T, 112);
    r.run(0, positions(0, T));
    ref::sigmoidGate(g, 3, x, D, D, T);
    expectNormwise(r.get(op.inout, size_t(T * D)), x, 1e-6, fmt::format("SigmoidGate T={}", T));
  }
}

TEST_P(BackendConformance, ResidualMix) {
  BACKEND_OR_SKIP(be, 1);
  auto comm = makeLocalComm();
  for (bool alias : {false, true}) {
    TinyPlan p;
    const int64_t D = 17;
    mp::ResidualMixT op;
    op.moe = p.b.buffer("moe", D);
    op.mlp = p.b.buffer("mlp", D);
    op.coef_logits = p.b.buffer("coef", 3);
    op.out = alias ? op.moe : p.b.buffer("out", D);
    p.b.step(op, "mix");
    PlanFile plan = p.finish();
    Runner r(*be, plan, *comm);
    for (int64_t T : {1, 6}) {
      Vec m = r.fill(op.moe, T, 121), d = r.fill(op.mlp, T, 122);
      Vec c = r.fill(op.coef_logits, T, 123, 3.0f);
      r.run(0, positions(0, T));
      Vec ref(size_t(T * D));
      ref::residualMix(m, d, c, 3, ref, D, T);
      expectNormwise(r.get(op.out, size_t(T * D)), ref, 1e-6,
                     fmt::format("ResidualMix alias={} T={}", alias, T));
    }
  }
}

//===----------------------------------------------------------------------===//
// Logits: product bound 1e-5 (f32 compute), for the last row and, with
// allLogits (--dump), every row.
//===----------------------------------------------------------------------===//

namespace {
/// A Logits step of V logits over rows of ldx floats (K used): lm_head
/// [V, K] (or [K, V] transposed) and optionally a bias, of dtype dt.
mp::LogitsT logitsStep(TinyPlan &p, int64_t V, int64_t K, int64_t ldx, DType dt, bool tr,
                       bool bias) {
  mp::LogitsT op;
  op.in = p.b.buffer("h", ldx);
  op.out = p.b.buffer("logits", V, 0, 1);
  op.weight = p.b.weight("lm", tr ? std::vector<int64_t>{K, V} : std::vector<int64_t>{V, K}, dt,
                         dt, mp::Init::Normal, 0.5f);
  if (bias)
    op.bias = p.b.weight("lm.bias", {V}, dt, dt, mp::Init::Normal, 0.5f);
  op.weight_transposed = tr;
  p.b.step(op, "logits");
  return op;
}
} // namespace

TEST_P(BackendConformance, Logits) {
  for (int threads : {1, 3}) {
    BACKEND_OR_SKIP(be, threads);
    auto comm = makeLocalComm();
    for (DType dt : kWeightDtypes)
      for (bool tr : {false, true})
        for (bool bias : {false, true}) {
          const int64_t V = 53, K = 27, ldx = K + 1;
          TinyPlan p(32, 32, 1, V);
          mp::LogitsT op = logitsStep(p, V, K, ldx, dt, tr, bias);
          PlanFile plan = p.finish(DType::F32, false);
          Runner r(*be, plan, *comm);
          Vec w = r.weight(op.weight), b = r.weight(op.bias), ab = absOf(b);
          float *all = static_cast<float *>(be->allocate(uint64_t(32 * V) * 4, "all logits"));
          for (int64_t T : {1, 6, 27})
            for (bool dump : {false, true}) {
              std::string what = fmt::format("Logits {} tr={} bias={} threads={} T={} all={}",
                                             dtypeStr(dt), tr, bias, threads, T, dump);
              Vec x = r.fill(op.in, T, 131 + uint32_t(T));
              r.run(0, positions(0, T), {}, dump ? all : nullptr);
              Vec ref(size_t(T * V)), mag(ref.size());
              ref::linear(x, ldx, T, w, V, K, tr, bias ? &b : nullptr, ref, V, 0, false);
              ref::linear(absOf(x), ldx, T, absOf(w), V, K, tr, bias ? &ab : nullptr, mag, V, 0,
                          false);
              Vec last(ref.end() - V, ref.end()), lastMag(mag.end() - V, mag.end());
              expectBounded(r.get(op.out, size_t(V)), last, lastMag, 1e-5, what);
              if (dump) {
                Vec got(size_t(T * V));
                be->copyToHost(StreamKind::Compute, got.data(), all, got.size() * 4);
                be->synchronizeAll();
                expectBounded(got, ref, mag, 1e-5, what + " (every row)");
              }
            }
          be->deallocate(all, uint64_t(32 * V) * 4);
        }
  }
}

/// A batched step's Logits: only the rows of the sequences that sample
/// (StepArgs logitRows), in that order, into rowLogits. Same bound as Logits.
TEST_P(BackendConformance, LogitsOfSampledRows) {
  BACKEND_OR_SKIP(be, 2);
  auto comm = makeLocalComm();
  for (DType dt : {DType::F32, DType::BF16})
    for (bool tr : {false, true}) {
      const int64_t V = 53, K = 27, ldx = K + 1, T = 7;
      TinyPlan p(8, 32, 1, V);
      mp::LogitsT op = logitsStep(p, V, K, ldx, dt, tr, true);
      PlanFile plan = p.finish(DType::F32, false);
      Runner r(*be, plan, *comm);
      Vec w = r.weight(op.weight), b = r.weight(op.bias), ab = absOf(b);
      const Ids rows = {6, 2, 4};
      const int64_t n = int64_t(rows.size());
      auto *rowLogits = static_cast<float *>(be->allocate(uint64_t(n * V) * 4, "row logits"));
      r.batch({0, 1, 1, 2, 2, 1, 0}, {0, 1, 2, 3}, 1, 8, rows, rowLogits);
      Vec x = r.fill(op.in, T, 171);
      r.run(0, {0, 0, 1, 0, 1, 2, 1});
      Vec sel(size_t(n * ldx));
      for (int64_t i = 0; i < n; ++i)
        std::copy_n(x.begin() + rows[size_t(i)] * ldx, ldx, sel.begin() + i * ldx);
      Vec ref(size_t(n * V)), mag(ref.size());
      ref::linear(sel, ldx, n, w, V, K, tr, &b, ref, V, 0, false);
      ref::linear(absOf(sel), ldx, n, absOf(w), V, K, tr, &ab, mag, V, 0, false);
      Vec got(ref.size());
      be->copyToHost(StreamKind::Compute, got.data(), rowLogits, got.size() * 4);
      be->synchronizeAll();
      expectBounded(got, ref, mag, 1e-5,
                    fmt::format("LogitsOfSampledRows {} tr={}", dtypeStr(dt), tr));
      be->deallocate(rowLogits, uint64_t(n * V) * 4);
    }
}

//===----------------------------------------------------------------------===//
// Collective: exact (copies, and sums in group order as plan.fbs specifies),
// on a single-rank local comm and on 2-3 in-process ranks.
//===----------------------------------------------------------------------===//

namespace {
using CK = mp::CollectiveKind;
const CK kCollectives[] = {CK::AllReduceSum, CK::AllGather, CK::AllToAll, CK::ReduceScatterSum,
                           CK::Broadcast};

/// Runs one collective over `group` (empty: all) of `ranks` ranks; buf has
/// rows = T*G (G = group size), D floats each; checks every member's result.
void checkCollective(const std::string &backend, int ranks, CK kind, std::vector<int> group,
                     bool withOut, int64_t T) {
  const int G = group.empty() ? ranks : int(group.size());
  const int64_t D = 7;
  TinyPlan p(4, 32, ranks);
  struct Bufs {
    int buf = -1, out = -1, step = -1;
  };
  std::vector<Bufs> bufs(static_cast<size_t>(ranks));
  for (int rk = 0; rk < ranks; ++rk) {
    p.b.setRank(rk);
    bool member = group.empty() || std::count(group.begin(), group.end(), rk);
    if (!member)
      continue;
    Bufs &x = bufs[size_t(rk)];
    x.buf = p.b.buffer("buf", D, G);
    int64_t outRowsPerToken = kind == CK::AllGather ? G * G : kind == CK::ReduceScatterSum ? 1 : G;
    if (kind != CK::AllReduceSum && (kind != CK::Broadcast || withOut))
      x.out = p.b.buffer("out", D, outRowsPerToken);
    mp::CollectiveT op;
    op.kind = kind;
    op.buf = x.buf;
    op.out = x.out;
    op.group = group;
    op.level = "flat";
    x.step = p.b.step(op, "coll", -1, mp::Stream::Comm);
  }
  p.b.setRank(0);
  PlanFile plan = p.finish();
  std::string what = fmt::format("{} on {} ranks, group of {} {}, out={}, T={}",
                                 mp::EnumNameCollectiveKind(kind), ranks, G,
                                 group.empty() ? "(all)" : "", withOut, T);
  auto comms = ranks == 1 ? std::vector<std::unique_ptr<Comm>>{} : makeInProcessComms(ranks);
  if (ranks == 1)
    comms.push_back(makeLocalComm());
  std::vector<int> members = group;
  if (members.empty())
    for (int rk = 0; rk < ranks; ++rk)
      members.push_back(rk);
  const size_t n = size_t(T * G * D);
  std::vector<Vec> in(static_cast<size_t>(ranks)), got(in), gotBuf(in);
  std::vector<std::string> errors(static_cast<size_t>(ranks));
  std::vector<std::thread> threads;
  for (int rk : members)
    threads.emplace_back([&, rk] {
      try {
        auto be = tryBackend(backend, 1);
        if (!be)
          return;
        Runner r(*be, plan, *comms[size_t(rk)], rk);
        const Bufs &x = bufs[size_t(rk)];
        in[size_t(rk)] = r.fill(x.buf, T * G, 141 + uint32_t(rk));
        size_t outN = kind == CK::AllGather ? n * size_t(G)
                      : kind == CK::ReduceScatterSum ? n / size_t(G)
                                                     : n;
        if (x.out >= 0)
          r.fill(x.out, int64_t(outN / D), 151);
        r.run(x.step, positions(0, T));
        gotBuf[size_t(rk)] = r.get(x.buf, n);
        if (x.out >= 0)
          got[size_t(rk)] = r.get(x.out, outN);
      } catch (const std::exception &e) {
        errors[size_t(rk)] = e.what();
      }
    });
  for (std::thread &t : threads)
    t.join();
  for (int rk : members)
    ASSERT_EQ(errors[size_t(rk)], "") << what << " rank " << rk;
  if (in[size_t(members[0])].empty())
    GTEST_SKIP() << "backend " << backend << " cannot be created here";
  const size_t chunk = n / size_t(G);
  for (int i = 0; i < G; ++i) {
    int rk = members[size_t(i)];
    std::string w = what + " member " + std::to_string(i);
    switch (kind) {
    case CK::AllReduceSum: {
      Vec sum(n, 0.0f);
      for (int j = 0; j < G; ++j)
        for (size_t e = 0; e < n; ++e)
          sum[e] = j == 0 ? in[size_t(members[0])][e] : sum[e] + in[size_t(members[size_t(j)])][e];
      expectNormwise(gotBuf[size_t(rk)], sum, 0.0, w);
      break;
    }
    case CK::AllGather: {
      Vec all;
      for (int j = 0; j < G; ++j)
        all.insert(all.end(), in[size_t(members[size_t(j)])].begin(),
                   in[size_t(members[size_t(j)])].end());
      expectNormwise(got[size_t(rk)], all, 0.0, w);
      break;
    }
    case CK::AllToAll: {
      Vec exp;
      for (int j = 0; j < G; ++j) {
        const Vec &src = in[size_t(members[size_t(j)])];
        exp.insert(exp.end(), src.begin() + long(size_t(i) * chunk),
                   src.begin() + long(size_t(i + 1) * chunk));
      }
      expectNormwise(got[size_t(rk)], exp, 0.0, w);
      break;
    }
    case CK::ReduceScatterSum: {
      Vec sum(chunk, 0.0f);
      for (int j = 0; j < G; ++j)
        for (size_t e = 0; e < chunk; ++e) {
          float v = in[size_t(members[size_t(j)])][size_t(i) * chunk + e];
          sum[e] = j == 0 ? v : sum[e] + v;
        }
      expectNormwise(got[size_t(rk)], sum, 0.0, w);
      break;
    }
    case CK::Broadcast: {
      const Vec &root = in[size_t(members[0])];
      expectNormwise(gotBuf[size_t(rk)], root, 0.0, w);
      if (withOut)
        expectNormwise(got[size_t(rk)], root, 0.0, w + " out");
      break;
    }
    }
  }
}
} // namespace

TEST_P(BackendConformance, CollectiveSingleRank) {
  for (CK k : kCollectives)
    for (int64_t T : {1, 3}) {
      checkCollective(GetParam(), 1, k, {}, true, T);
      if (k == CK::Broadcast)
        checkCollective(GetParam(), 1, k, {}, false, T);
    }
}

TEST_P(BackendConformance, CollectiveInProcess) {
  for (CK k : kCollectives)
    for (int ranks : {2, 3}) {
      checkCollective(GetParam(), ranks, k, {}, true, ranks == 2 ? 1 : 2);
      if (k == CK::Broadcast)
        checkCollective(GetParam(), ranks, k, {}, false, 1);
    }
  // A group that leaves a rank out (hierarchical schedules).
  for (CK k : kCollectives)
    checkCollective(GetParam(), 3, k, {0, 2}, true, 2);
  checkCollective(GetParam(), 3, CK::Broadcast, {1, 2}, true, 1);
}

//===----------------------------------------------------------------------===//
// Backend::routeTopK (expert prediction): the union over rows of the top-k
// experts of x W^T, sorted — exact ids (random logits have no near-ties).
//===----------------------------------------------------------------------===//

TEST_P(BackendConformance, RouteTopK) {
  BACKEND_OR_SKIP(be, 2);
  auto comm = makeLocalComm();
  for (DType dt : kWeightDtypes) {
    const int64_t E = 11, H = 35, ldx = H + 2;
    TinyPlan p(16);
    mp::LinearT op; // the router, as a plan uses it (so it may be packed)
    op.in = p.b.buffer("x", ldx);
    op.out = p.b.buffer("router_logits", E);
    op.weight = p.b.weight("router", {E, H}, dt, dt, mp::Init::Normal, 0.5f);
    p.b.step(op, "router");
    PlanFile plan = p.finish();
    Runner r(*be, plan, *comm);
    Vec w = r.weight(op.weight);
    for (int64_t rows : {1, 3, 7})
      for (int k : {1, 2, 4}) {
        Vec x = r.fill(op.in, rows, 201 + uint32_t(rows));
        std::vector<int32_t> got;
        ExpertSelection sel;
        sel.numExperts = int(E);
        sel.topK = k;
        sel.softmaxBeforeTopk = false; // top-k of the logits
        be->routeTopK(r.device(op.in), ldx, rows, r.weights().view(op.weight), nullptr, H, sel,
                      got);
        Vec logits(size_t(rows * E));
        ref::linear(x, ldx, rows, w, E, H, false, nullptr, logits, E, 0, false);
        ref::GateSpec g{int(E), k, false, false, false, 0, 0, false}; // top-k of the logits
        ref::GateResult routed = ref::gate(logits, E, rows, g);
        std::vector<int32_t> want(routed.slotExpert);
        std::sort(want.begin(), want.end());
        want.erase(std::unique(want.begin(), want.end()), want.end());
        EXPECT_EQ(got, want) << "routeTopK " << dtypeStr(dt) << " rows " << rows << " k " << k;
      }
  }
}

//===----------------------------------------------------------------------===//
// Backend::fillNormal (the --random-weights hook): bit for bit the scalar
// generator (moert/Random.h), for any element range, f32 and bf16.
//===----------------------------------------------------------------------===//

TEST_P(BackendConformance, FillNormal) {
  BACKEND_OR_SKIP(be, 2);
  const uint64_t key = tensorKey(9, "model.layers.0.mlp.experts.3.w1.weight");
  const float scale = irwinScale(0.02f);
  for (auto [b, e] : {std::pair<uint64_t, uint64_t>{0, 1000}, {3, 778}, {1u << 20, (1u << 20) + 37},
                      {5, 6}}) {
    std::vector<float> f(e - b);
    std::vector<uint16_t> h(e - b);
    be->fillNormal(key, scale, b, e, f.data(), nullptr);
    be->fillNormal(key, scale, b, e, nullptr, h.data());
    for (uint64_t i = b; i < e; ++i) {
      float want = irwinValue(key, scale, i);
      ASSERT_EQ(f[i - b], want) << "f32 element " << i;
      ASSERT_EQ(h[i - b], f32ToBf16(want)) << "bf16 element " << i;
    }
  }
}

//===----------------------------------------------------------------------===//
// Streamed weights (plan 1.1): uploaded one at a time on demand, evicted and
// uploaded again; a Linear over them matches the reference each time
// (product bound 1e-5).
//===----------------------------------------------------------------------===//

TEST_P(BackendConformance, StreamedWeights) {
  BACKEND_OR_SKIP(be, 2);
  auto comm = makeLocalComm();
  const int64_t K = 33;
  TinyPlan p(16);
  int x = p.b.buffer("x", K);
  std::vector<mp::LinearT> ops;
  for (DType dt : kWeightDtypes) {
    mp::LinearT op;
    op.in = x;
    op.out = p.b.buffer(fmt::format("y.{}", dtypeStr(dt)), 21);
    op.weight = p.b.weight(fmt::format("w.{}", dtypeStr(dt)), {21, K}, dt, dt, mp::Init::Normal,
                           0.3f);
    op.bias = p.b.weight(fmt::format("b.{}", dtypeStr(dt)), {21}, dt, dt, mp::Init::Normal, 0.3f);
    p.b.plan().weights[size_t(op.weight)]->streamed = true;
    p.b.plan().weights[size_t(op.bias)]->streamed = true;
    p.b.step(op, "linear");
    ops.push_back(op);
  }
  PlanFile plan = p.finish();
  Runner r(*be, plan, *comm);
  WeightStore &ws = r.weights();
  for (int round = 0; round < 2; ++round)
    for (size_t i = 0; i < ops.size(); ++i) {
      const mp::LinearT &op = ops[i];
      std::string what = fmt::format("streamed {} round {}", dtypeStr(kWeightDtypes[i]), round);
      EXPECT_FALSE(ws.isResident(op.weight)) << what;
      ws.load(op.weight);
      ws.load(op.bias);
      EXPECT_TRUE(ws.isResident(op.weight)) << what;
      for (int64_t T : {1, 9}) {
        Vec xv = r.fill(x, T, 181 + uint32_t(round));
        r.run(int(i), positions(0, T));
        Vec w = r.weight(op.weight), b = r.weight(op.bias), ab = absOf(b);
        Vec ref(size_t(T * 21)), mag(ref.size());
        ref::linear(xv, K, T, w, 21, K, false, &b, ref, 21, 0, false);
        ref::linear(absOf(xv), K, T, absOf(w), 21, K, false, &ab, mag, 21, 0, false);
        expectBounded(r.get(op.out, ref.size()), ref, mag, 1e-5, what);
      }
      ws.evict(op.weight);
      ws.evict(op.bias);
      EXPECT_FALSE(ws.isResident(op.weight)) << what;
    }
  EXPECT_EQ(ws.loads(), 12u);
  EXPECT_EQ(ws.evictions(), 12u);
}

//===----------------------------------------------------------------------===//
// Streams and events: work on one stream runs in order, waitEvent orders a
// stream after another's recorded work, synchronize rethrows a stream's error.
//===----------------------------------------------------------------------===//

TEST_P(BackendConformance, StreamsAndEvents) {
  {
    BACKEND_OR_SKIP(be, 1);
    std::atomic<int> stage{0};
    std::vector<int> seen;
    // Weights stream: slow work; the comm stream waits for it; compute waits
    // for the comm stream.
    be->enqueueHost(StreamKind::Weights, [&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(30));
      stage = 1;
    });
    EventId w = be->record(StreamKind::Weights);
    be->waitEvent(StreamKind::Comm, w);
    be->enqueueHost(StreamKind::Comm, [&] {
      seen.push_back(stage.load());
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      stage = 2;
    });
    be->enqueueHost(StreamKind::Comm, [&] { seen.push_back(stage.load()); });
    EventId c = be->record(StreamKind::Comm);
    be->waitEvent(StreamKind::Compute, c);
    be->enqueueHost(StreamKind::Compute, [&] { seen.push_back(stage.load() + 10); });
    be->synchronizeAll();
    EXPECT_EQ(seen, (std::vector<int>{1, 2, 12}));
    be->resetEvents();
    // A copy on a stream is ordered with that stream's other work.
    std::vector<float> src(1000, 1.5f), back(1000, 0.0f);
    void *dev = be->allocate(4000, "copy");
    be->copyToDevice(StreamKind::Weights, dev, src.data(), 4000);
    be->copyToHost(StreamKind::Weights, back.data(), dev, 4000);
    be->synchronize(StreamKind::Weights);
    EXPECT_EQ(back, src);
    be->deallocate(dev, 4000);
  }
  {
    BACKEND_OR_SKIP(be, 1);
    be->enqueueHost(StreamKind::Comm, [] { throw Error("boom on the comm stream"); });
    EXPECT_THROW_MSG(be->synchronize(StreamKind::Comm), "boom on the comm stream");
  }
}

//===----------------------------------------------------------------------===//
// Whole fixtures (test/support/HFPlans.h, no compiler): logits within 1e-3
// of expected.safetensors and identical greedy tokens.
//===----------------------------------------------------------------------===//

namespace {
/// Runs fixture `name` on `ranks` ranks (threads, in-process comms; experts
/// split over the ranks) through `backend`; checks rank 0 against
/// expected.safetensors and every rank's tokens. False: no backend here.
bool checkFixture(const std::string &backend, const std::string &name, int ranks, int threads) {
  std::string dir = fixture(name);
  FixtureExpected exp = loadFixtureExpected(dir);
  HFPlanOptions o;
  o.maxTokens = 8; // chunked prefill: the cache carries over between chunks
  o.numRanks = ranks;
  PlanFile plan = PlanFile::fromBytes(buildHFPlan(dir, o), name + ".plan");
  auto ckpt = std::make_shared<Checkpoint>(dir);
  auto comms = ranks == 1 ? std::vector<std::unique_ptr<Comm>>{} : makeInProcessComms(ranks);
  if (ranks == 1)
    comms.push_back(makeLocalComm());
  std::vector<GenerateResult> res(static_cast<size_t>(ranks));
  std::vector<std::string> errors(static_cast<size_t>(ranks));
  std::atomic<bool> missing{false};
  std::vector<std::thread> th;
  for (int r = 0; r < ranks; ++r)
    th.emplace_back([&, r] {
      try {
        auto be = tryBackend(backend, threads);
        if (!be) {
          missing = true;
          return;
        }
        auto w = WeightStore::fromCheckpoint(plan, ckpt, {r}, *be);
        Session s(plan, r, *w, *comms[size_t(r)], *be);
        GenerateOptions g;
        g.maxNewTokens = int64_t(exp.generated.size() - exp.input.size());
        g.promptLogits = true;
        res[size_t(r)] = generate(s, *comms[size_t(r)], exp.input, g);
      } catch (const std::exception &e) {
        errors[size_t(r)] = e.what();
      }
    });
  for (auto &t : th)
    t.join();
  if (missing)
    return false;
  std::string what = fmt::format("{} on {} rank(s)", name, ranks);
  for (int r = 0; r < ranks; ++r) {
    EXPECT_EQ(errors[size_t(r)], "") << what << " rank " << r;
    EXPECT_EQ(res[size_t(r)].tokens, exp.generated) << what << " rank " << r;
  }
  const std::vector<float> &got = res[0].promptLogits;
  EXPECT_EQ(got.size(), exp.logits.size()) << what;
  double err = 0.0;
  for (size_t i = 0; i < std::min(got.size(), exp.logits.size()); ++i)
    err = std::max(err, double(std::abs(got[i] - exp.logits[i])));
  EXPECT_LE(err, 1e-3) << what;
  return true;
}
} // namespace

TEST_P(BackendConformance, Fixtures) {
  if (!haveFixtures())
    GTEST_SKIP() << "no fixtures in " << fixturesDir();
  for (const char *name : {"gpt2-tiny", "mixtral-tiny", "qwen2moe-tiny"})
    if (!checkFixture(GetParam(), name, 1, 3))
      GTEST_SKIP() << "backend " << GetParam() << " cannot be created here";
}

TEST_P(BackendConformance, FixturesExpertParallel) {
  // The MoE fixtures with their experts split over 2 and 3 ranks.
  if (!haveFixtures())
    GTEST_SKIP() << "no fixtures in " << fixturesDir();
  for (const char *name : {"mixtral-tiny", "qwen2moe-tiny"})
    for (int ranks : {2, 3})
      if (!checkFixture(GetParam(), name, ranks, 1))
        GTEST_SKIP() << "backend " << GetParam() << " cannot be created here";
}

/// Batched generation end to end (paged KV, rows of several sequences per
/// step, chunked prompts, per-sequence sampling) equals one sequence at a
/// time on the same backend.
TEST_P(BackendConformance, BatchedGeneration) {
  BACKEND_OR_SKIP(be, 2);
  for (const char *config : {kTinyQwen, kTinyGpt2}) {
    PlanFile single = planFor(config, singleOptions());
    PlanFile batched = planFor(config, batchedOptions(3, 4));
    checkBatchEqualsSingle(*be, batched, single, 0.0f, 3);
    checkBatchEqualsSingle(*be, batched, single, 0.9f, 0);
  }
}

/// The bandwidth floor's byte counts of decode steps (the weights read,
/// routed experts only, and the K/V rows) equal the CPU backend's for the
/// same plan and tokens: the CUDA backend counts routed experts on the device.
TEST_P(BackendConformance, DecodeByteCounts) {
  BACKEND_OR_SKIP(be, 2);
  PlanFile plan = planFor(kTinyMixtral, singleOptions());
  auto run = [&](Backend &b) {
    auto weights = WeightStore::random(plan, 11, {0}, b);
    auto comm = makeLocalComm();
    Session s(plan, 0, *weights, *comm, b);
    GenerateOptions g;
    g.maxNewTokens = 6;
    const std::vector<int64_t> prompt = {3, 14, 15, 92, 65};
    return generate(s, *comm, prompt, g);
  };
  TestBackend cpu(2);
  GenerateResult want = run(cpu), got = run(*be);
  EXPECT_EQ(got.tokens, want.tokens);
  EXPECT_EQ(got.decodeWeightBytes, want.decodeWeightBytes);
  EXPECT_EQ(got.decodeKVBytes, want.decodeKVBytes);
  EXPECT_GT(want.decodeWeightBytes, 0u);
}

INSTANTIATE_TEST_SUITE_P(BackendConformance, BackendConformance,
                         ::testing::ValuesIn(availableBackends()),
                         [](const auto &info) { return info.param; });
