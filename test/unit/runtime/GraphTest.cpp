//===- GraphTest.cpp - The session's decode graphs, on the CPU ------------===//
//
// Session::run captures a decode step once on a backend with graphs and
// replays it after (the CUDA backend's CUDA graphs). A wrapper of the CPU
// backend stands in for that contract here: while capturing it records the
// launches instead of running them, endCapture runs the recording (or
// fails, as a capture the device refused), replay runs it again. Decoding
// through it must give what direct launches give, and the same bytes-read
// counts for the bandwidth floor.
//
//===----------------------------------------------------------------------===//
#include "TestUtil.h"

#include "BatchCheck.h"
#include "HFPlans.h"
#include "TinyPlans.h"
#include "moert/Batch.h"
#include "moert/Generate.h"

using namespace moert;
using namespace moetest;

namespace {

class RecordingBackend final : public Backend {
public:
  explicit RecordingBackend(Backend &inner, bool failCaptures)
      : in_(inner), failCaptures_(failCaptures) {}

  int captures = 0, replays = 0, failed = 0;

  const char *name() const override { return in_.name(); }
  std::string description() const override { return in_.description(); }
  int threads() const override { return in_.threads(); }
  ThreadPool &hostPool() override { return in_.hostPool(); }
  void *allocate(uint64_t bytes, const char *what) override { return in_.allocate(bytes, what); }
  void deallocate(void *p, uint64_t bytes) override { in_.deallocate(p, bytes); }
  void copyToDevice(StreamKind s, void *dst, const void *src, uint64_t bytes) override {
    in_.copyToDevice(s, dst, src, bytes);
  }
  void copyToHost(StreamKind s, void *dst, const void *src, uint64_t bytes) override {
    in_.copyToHost(s, dst, src, bytes);
  }
  Layout chooseLayout(const WeightInfo &w, bool onlyProduct) override {
    return in_.chooseLayout(w, onlyProduct);
  }
  uint64_t layoutBytes(const WeightInfo &w, Layout layout) override {
    return in_.layoutBytes(w, layout);
  }
  UploadResult upload(std::span<const WeightSource> srcs, std::span<const Layout> layouts,
                      const ProgressFn &progress) override {
    return in_.upload(srcs, layouts, progress);
  }
  void evict(const DeviceWeight &w, std::shared_ptr<void> &memory) override {
    in_.evict(w, memory);
  }
  void touch(const DeviceWeight &w) override { in_.touch(w); }
  std::vector<unsigned> groupSteps(const PlanFile &plan, int rank) override {
    return in_.groupSteps(plan, rank);
  }
  void launch(StreamKind s, const plan::Step &step, const StepArgs &args) override {
    if (!capturing_)
      return in_.launch(s, step, args);
    // Run later, in order, one at a time (the recording keeps no events).
    ops_.push_back({s, &step, nullptr, 0, 0, args});
  }
  void launchGroup(StreamKind s, const plan::RankProgram &prog, unsigned begin, unsigned end,
                   const StepArgs &args) override {
    if (!capturing_)
      return in_.launchGroup(s, prog, begin, end, args);
    ops_.push_back({s, nullptr, &prog, begin, end, args});
  }
  void bindComm(Comm &comm) override { in_.bindComm(comm); }
  void enqueueHost(StreamKind s, std::function<void()> fn) override {
    in_.enqueueHost(s, std::move(fn));
  }
  void routeTopK(const float *x, int64_t ldx, int64_t rows, const DeviceWeight &router,
                 const DeviceWeight *bias, int64_t H, const ExpertSelection &sel,
                 std::vector<int32_t> &experts) override {
    in_.routeTopK(x, ldx, rows, router, bias, H, sel, experts);
  }
  int64_t sample(const float *logits, int64_t vocab, const SamplingParams &p) override {
    return in_.sample(logits, vocab, p);
  }
  EventId record(StreamKind s) override { return capturing_ ? 0 : in_.record(s); }
  void waitEvent(StreamKind s, EventId e) override {
    if (!capturing_)
      in_.waitEvent(s, e);
  }
  void synchronize(StreamKind s) override { in_.synchronize(s); }
  void resetEvents() override { in_.resetEvents(); }
  void collectStats(StepStats &stats) override { in_.collectStats(stats); }

  bool supportsBatchedSteps() const override { return in_.supportsBatchedSteps(); }
  bool supportsGraphs() const override { return true; }
  void beginCapture(int) override {
    EXPECT_FALSE(capturing_);
    capturing_ = true;
    ops_.clear();
  }
  bool endCapture(int key) override {
    EXPECT_TRUE(capturing_);
    capturing_ = false;
    ++captures;
    if (failCaptures_) {
      ++failed;
      ops_.clear();
      return false;
    }
    // The capture's host work (its byte counts) happened while capturing
    // on a device: the first run counts, replays do not.
    graphs_[key] = std::move(ops_);
    run(graphs_[key], nullptr);
    return true;
  }
  bool replay(int key) override {
    auto it = graphs_.find(key);
    if (it == graphs_.end())
      return false;
    ++replays;
    run(it->second, &scratchStats_);
    return true;
  }

  std::pair<double, double> readBandwidth(std::span<const std::span<const uint8_t>> regions,
                                          uint64_t bytes, int passes) override {
    return in_.readBandwidth(regions, bytes, passes);
  }
  std::string isa() const override { return in_.isa(); }

private:
  struct Op {
    StreamKind s;
    const plan::Step *step; // launch, or launchGroup over prog's [begin, end)
    const plan::RankProgram *prog;
    unsigned begin, end;
    StepArgs args;
  };
  /// Runs a recording; stats: where its byte counts go (null: the capture's).
  void run(const std::vector<Op> &ops, StepStats *stats) {
    for (Op op : ops) {
      if (stats)
        op.args.stats = stats;
      if (op.step)
        in_.launch(op.s, *op.step, op.args);
      else
        in_.launchGroup(op.s, *op.prog, op.begin, op.end, op.args);
      in_.synchronizeAll();
    }
  }
  Backend &in_;
  bool failCaptures_;
  bool capturing_ = false;
  StepStats scratchStats_;
  std::vector<Op> ops_;
  std::map<int, std::vector<Op>> graphs_;
};


struct Decoded {
  GenerateResult r;
  std::vector<float> lastLogits;
};

Decoded decode(const PlanFile &plan, Backend &be, int newTokens) {
  auto weights = WeightStore::random(plan, 11, {0}, be);
  auto comm = makeLocalComm();
  Session s(plan, 0, *weights, *comm, be);
  GenerateOptions g;
  g.maxNewTokens = newTokens;
  std::vector<int64_t> prompt = {3, 14, 15, 92, 65};
  Decoded d;
  d.r = generate(s, *comm, prompt, g);
  // One more decode step by hand: its logits, not just its argmax.
  const float *l = s.forward(&d.r.tokens.back(), 1, int64_t(d.r.tokens.size()) - 1);
  d.lastLogits.assign(l, l + plan.vocabSize());
  return d;
}

} // namespace

TEST(Graphs, ReplayedDecodeStepsEqualDirectLaunches) {
  HFPlanOptions o;
  o.maxTokens = 8;
  PlanFile plan = planFor(kTinyMixtral, o);
  TestBackend cpu(2);
  Decoded direct = decode(plan, cpu, 9);
  for (bool fail : {false, true}) {
    SCOPED_TRACE(fail ? "captures fail" : "captures work");
    TestBackend inner(2);
    RecordingBackend graphs(inner, fail);
    Decoded got = decode(plan, graphs, 9);
    EXPECT_EQ(got.r.tokens, direct.r.tokens);
    EXPECT_EQ(got.lastLogits, direct.lastLogits);
    // The floor's byte counts do not depend on how the step ran.
    EXPECT_EQ(got.r.decodeWeightBytes, direct.r.decodeWeightBytes);
    EXPECT_EQ(got.r.decodeKVBytes, direct.r.decodeKVBytes);
    EXPECT_GT(direct.r.decodeKVBytes, 0u);
    if (fail) {
      // The first two decode steps try to capture, fail and launch
      // directly; the later ones launch directly without trying.
      EXPECT_EQ(graphs.replays, 0);
      EXPECT_EQ(graphs.failed, graphs.captures);
      EXPECT_EQ(graphs.captures, 2);
    } else {
      // One capture (the first decode step), replays for every later one.
      EXPECT_EQ(graphs.captures, 1);
      EXPECT_GE(graphs.replays, 8);
    }
  }
}

/// Two sessions on one backend decoding in turns: each replays its own
/// graph (its own buffers), never the other's.
TEST(Graphs, SessionsOnOneBackendKeepTheirOwnGraphs) {
  HFPlanOptions o;
  o.maxTokens = 8;
  PlanFile plan = planFor(kTinyMixtral, o);
  auto run = [&](Backend &be) {
    auto weights = WeightStore::random(plan, 11, {0}, be);
    auto comm = makeLocalComm();
    Session a(plan, 0, *weights, *comm, be), b(plan, 0, *weights, *comm, be);
    std::vector<float> logits;
    const int64_t V = plan.vocabSize();
    int64_t ta = 3, tb = 40;
    for (int64_t p = 0; p < 6; ++p) { // in turns: a, b, a, b, ...
      const float *la = a.forward(&ta, 1, p);
      logits.insert(logits.end(), la, la + V);
      ta = Sampler::argmax(la, V);
      const float *lb = b.forward(&tb, 1, p);
      logits.insert(logits.end(), lb, lb + V);
      tb = Sampler::argmax(lb, V);
    }
    return logits;
  };
  TestBackend cpu(1), inner(1);
  RecordingBackend graphs(inner, false);
  std::vector<float> direct = run(cpu), got = run(graphs);
  EXPECT_EQ(got, direct);
  EXPECT_EQ(graphs.captures, 2); // one per session
  EXPECT_GE(graphs.replays, 8);
}

/// Batched decode steps (every row a sequence's next token) are captured
/// once per batch size and replayed: the batch's tokens equal direct
/// launches, and so do each request's tokens alone.
TEST(Graphs, BatchedDecodeStepsReplayPerBatchSize) {
  PlanFile batched = planFor(kTinyMixtral, batchedOptions(3, 4));
  PlanFile single = planFor(kTinyMixtral, singleOptions());
  TestBackend cpu(2), inner(2);
  RecordingBackend graphs(inner, false);
  auto batch = [&](Backend &be) {
    auto weights = WeightStore::random(batched, 7, {0}, be);
    auto comm = makeLocalComm();
    Session s(batched, 0, *weights, *comm, be);
    return generateBatch(s, *comm, requests(batched.vocabSize(), 0.0f), BatchOptions{});
  };
  std::vector<SequenceResult> direct = batch(cpu), got = batch(graphs);
  ASSERT_EQ(got.size(), direct.size());
  for (size_t k = 0; k < got.size(); ++k)
    EXPECT_EQ(got[k].output, direct[k].output) << "sequence " << k;
  // Decode steps of 1, 2 and 3 sequences, each size captured once.
  EXPECT_GE(graphs.captures, 2);
  EXPECT_LE(graphs.captures, 4);
  EXPECT_GT(graphs.replays, graphs.captures);
  graphs.captures = graphs.replays = 0;
  checkBatchEqualsSingle(graphs, batched, single, 0.9f, 0);
  EXPECT_GT(graphs.replays, 0);
}
