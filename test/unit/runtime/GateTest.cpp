//===- GateTest.cpp - Gating semantics of the plan's Gate op --------------===//
#include "TestUtil.h"

#include "moert/Backend.h"
#include "moert/cpu/Kernels.h"

#include <cmath>
#include <numeric>

using namespace moert::cpu;

namespace {

struct GateOut {
  std::vector<int32_t> expert, offsets, sorted;
  std::vector<float> weight;
  std::vector<uint64_t> routed;
  int64_t admitted;
};

GateOut runGate(const std::vector<float> &logits, int64_t T, const GateParams &p) {
  GateOut o;
  o.expert.resize(size_t(T * p.sel.topK));
  o.weight.resize(size_t(T * p.sel.topK));
  o.offsets.resize(size_t(p.sel.numExperts + 1));
  o.sorted.assign(size_t(T * p.sel.topK), -1);
  o.routed.assign(size_t(p.sel.numExperts), 0);
  o.admitted = gate(logits.data(), p.sel.numExperts, T, p, o.expert.data(), o.weight.data(),
                    o.offsets.data(), o.sorted.data(), o.routed.data());
  return o;
}

std::vector<double> softmax(const float *x, int n) {
  std::vector<double> p(static_cast<size_t>(n));
  double mx = *std::max_element(x, x + n), s = 0;
  for (int i = 0; i < n; ++i)
    s += p[size_t(i)] = std::exp(double(x[i]) - mx);
  for (double &v : p)
    v /= s;
  return p;
}

/// A gate's choice of k of E experts (softmax first, no groups unless given).
moert::ExpertSelection choice(int E, int k, bool sigmoid = false, bool softmaxFirst = true,
                              int groups = 1, int keepGroups = 1) {
  return {.numExperts = E,
          .topK = k,
          .sigmoid = sigmoid,
          .softmaxBeforeTopk = softmaxFirst,
          .numGroups = groups,
          .topkGroups = keepGroups};
}

GateParams mixtral(int E, int k) { return {choice(E, k), true, 0.0f, 0, false}; }

} // namespace

TEST(Gate, SoftmaxThenTopKThenRenormalize) {
  const int E = 8, k = 2;
  const int64_t T = 5;
  std::vector<float> logits = moetest::randomFloats(size_t(T * E), 21);
  for (float &x : logits)
    x *= 4.0f;
  GateOut o = runGate(logits, T, mixtral(E, k));
  EXPECT_EQ(o.admitted, T * k);
  for (int64_t t = 0; t < T; ++t) {
    std::vector<double> p = softmax(&logits[size_t(t * E)], E);
    std::vector<int> order(E);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return p[size_t(a)] > p[size_t(b)]; });
    double sum = p[size_t(order[0])] + p[size_t(order[1])];
    for (int j = 0; j < k; ++j) {
      EXPECT_EQ(o.expert[size_t(t * k + j)], order[size_t(j)]);
      EXPECT_NEAR(o.weight[size_t(t * k + j)], p[size_t(order[size_t(j)])] / sum, 1e-6);
    }
  }
  // Softmax over the picked logits (GShard order) is the same distribution.
  GateParams after = mixtral(E, k);
  after.sel.softmaxBeforeTopk = false;
  GateOut o2 = runGate(logits, T, after);
  EXPECT_EQ(o2.expert, o.expert);
  for (size_t i = 0; i < o.weight.size(); ++i)
    EXPECT_NEAR(o2.weight[i], o.weight[i], 1e-6);
}

TEST(Gate, WithoutRenormalizationKeepsProbabilities) {
  const int E = 4, k = 2;
  std::vector<float> logits{0.5f, 2.0f, -1.0f, 1.0f};
  GateParams p = mixtral(E, k);
  p.normTopk = false;
  GateOut o = runGate(logits, 1, p);
  std::vector<double> sm = softmax(logits.data(), E);
  EXPECT_EQ(o.expert, (std::vector<int32_t>{1, 3}));
  EXPECT_NEAR(o.weight[0], sm[1], 1e-7);
  EXPECT_NEAR(o.weight[1], sm[3], 1e-7);
}

TEST(Gate, TiesGoToTheLowerExpertId) {
  std::vector<float> logits{1.0f, 3.0f, 3.0f, 1.0f, 3.0f};
  GateOut o = runGate(logits, 1, mixtral(5, 3));
  EXPECT_EQ(o.expert, (std::vector<int32_t>{1, 2, 4}));
  GateOut o1 = runGate(std::vector<float>(5, 0.0f), 1, mixtral(5, 2));
  EXPECT_EQ(o1.expert, (std::vector<int32_t>{0, 1}));
  EXPECT_NEAR(o1.weight[0], 0.5f, 1e-7);
}

TEST(Gate, SigmoidScores) {
  std::vector<float> logits{-1.0f, 2.0f, 0.5f};
  GateParams p{choice(3, 2, true), false, 0.0f, 0, false};
  GateOut o = runGate(logits, 1, p);
  EXPECT_EQ(o.expert, (std::vector<int32_t>{1, 2}));
  EXPECT_NEAR(o.weight[0], 1.0 / (1.0 + std::exp(-2.0)), 1e-7);
  EXPECT_NEAR(o.weight[1], 1.0 / (1.0 + std::exp(-0.5)), 1e-7);
}

TEST(Gate, GroupLimitedSelectionWithBias) {
  // DeepSeek-V3's routing (HF DeepseekV3MoE.route_tokens_to_experts): the
  // bias only ranks; groups {0,1} {2,3} {4,5} {6,7} score the sum of their
  // two best biased scores (1.0, 1.5, 0.88, 1.2), the best 2 stay. Expert 4
  // (0.78) is second best overall but its group is left out: 2 then 3.
  std::vector<float> logits(8, 0.0f); // sigmoid 0.5 each
  std::vector<float> bias{0.0f, 0.0f, 0.3f, 0.2f, 0.28f, -0.4f, 0.1f, 0.1f};
  GateParams p{choice(8, 2, true, true, 4, 2), true, 0.0f, 0, false,
               {bias.data(), moert::DType::F32}, 2.5f};
  GateOut o = runGate(logits, 1, p);
  EXPECT_EQ(o.expert, (std::vector<int32_t>{2, 3}));
  // The weights are the unbiased scores, renormalized, times the scaling.
  EXPECT_NEAR(o.weight[0], 1.25, 1e-7);
  EXPECT_NEAR(o.weight[1], 1.25, 1e-7);
  // One group: the overall best two.
  p.sel.numGroups = p.sel.topkGroups = 1;
  EXPECT_EQ(runGate(logits, 1, p).expert, (std::vector<int32_t>{2, 4}));
}

TEST(Gate, ExpertPredictionChoosesAsTheGate) {
  // Expert prediction (moert::predictedExperts) applies the gate's own
  // selection: the union of the experts the gate picks, for every form.
  std::vector<float> logits = moetest::randomFloats(size_t(5 * 16), 41);
  std::vector<float> bias = moetest::randomFloats(16, 42);
  for (bool sigmoid : {false, true})
    for (bool before : {false, true})
      for (int groups : {1, 4})
        for (bool withBias : {false, true}) {
          SCOPED_TRACE(::testing::Message() << "sigmoid " << sigmoid << " softmax first "
                                            << before << " groups " << groups << " bias "
                                            << withBias);
          GateParams p{choice(16, 3, sigmoid, before, groups, 2), true, 0.0f, 0, false,
                       withBias ? WRef{bias.data(), moert::DType::F32} : WRef{}, 1.0f};
          GateOut o = runGate(logits, 5, p);
          std::vector<int32_t> want = o.expert;
          std::sort(want.begin(), want.end());
          want.erase(std::unique(want.begin(), want.end()), want.end());
          moert::ExpertSelection sel = p.sel;
          if (withBias)
            sel.bias = bias;
          EXPECT_EQ(moert::predictedExperts(logits.data(), 5, sel), want);
        }
}

TEST(Gate, MappingTableGroupsSlotsByExpert) {
  const int E = 4, k = 2;
  // Token t prefers experts (t % 4) then ((t + 1) % 4).
  const int64_t T = 6;
  std::vector<float> logits(size_t(T * E), 0.0f);
  for (int64_t t = 0; t < T; ++t) {
    logits[size_t(t * E + t % E)] = 3.0f;
    logits[size_t(t * E + (t + 1) % E)] = 2.0f;
  }
  GateOut o = runGate(logits, T, mixtral(E, k));
  EXPECT_EQ(o.offsets, (std::vector<int32_t>{0, 3, 7, 10, 12}));
  // Expert 0: slots of tokens 0 (1st choice), 3 (2nd choice), 4 (1st choice).
  EXPECT_EQ(std::vector<int32_t>(o.sorted.begin(), o.sorted.begin() + 3),
            (std::vector<int32_t>{0, 7, 8}));
  for (int e = 0; e < E; ++e)
    for (int32_t i = o.offsets[size_t(e)]; i < o.offsets[size_t(e + 1)]; ++i)
      EXPECT_EQ(o.expert[size_t(o.sorted[size_t(i)])], e);
  EXPECT_EQ(o.routed, (std::vector<uint64_t>{3, 4, 3, 2}));
}

TEST(Gate, CapacityDropsLateSlotsInTokenOrder) {
  const int E = 4;
  const int64_t T = 8;
  // Switch top-1, every token prefers expert 2; capacity = ceil(1.0*8*1/4) = 2.
  std::vector<float> logits(size_t(T * E), 0.0f);
  for (int64_t t = 0; t < T; ++t)
    logits[size_t(t * E + 2)] = 5.0f;
  GateParams p{choice(E, 1), false, 1.0f, 0, true};
  GateOut o = runGate(logits, T, p);
  EXPECT_EQ(o.admitted, 2);
  EXPECT_EQ(o.offsets, (std::vector<int32_t>{0, 0, 0, 2, 2}));
  EXPECT_EQ(o.sorted[0], 0);
  EXPECT_EQ(o.sorted[1], 1);
  for (int64_t t = 0; t < T; ++t)
    if (t < 2)
      EXPECT_GT(o.weight[size_t(t)], 0.9f);
    else
      EXPECT_EQ(o.weight[size_t(t)], 0.0f);
  EXPECT_EQ(o.routed[2], 8u);
  // min_capacity raises the limit.
  p.minCapacity = 5;
  EXPECT_EQ(runGate(logits, T, p).admitted, 5);
  // Without drop_tokens nothing is dropped.
  p.dropTokens = false;
  EXPECT_EQ(runGate(logits, T, p).admitted, 8);
}

TEST(Gate, CapacityCountsSecondChoicesInSlotOrder) {
  const int E = 2, k = 2;
  const int64_t T = 3;
  std::vector<float> logits{2.0f, 1.0f, 2.0f, 1.0f, 1.0f, 2.0f};
  // capacity = ceil(1.0 * 3 * 2 / 2) = 3: slots 0..5 = e0,e1,e0,e1,e1,e0: all admitted.
  GateParams p{choice(E, k), true, 1.0f, 0, true};
  EXPECT_EQ(runGate(logits, T, p).admitted, 6);
  // capacity = max(0, ceil(0.5 * 3)) = 2: the third slot of each expert drops.
  p.capacityFactor = 0.5f;
  GateOut o = runGate(logits, T, p);
  EXPECT_EQ(o.admitted, 4);
  EXPECT_EQ(o.offsets, (std::vector<int32_t>{0, 2, 4}));
  EXPECT_EQ(std::vector<int32_t>(o.sorted.begin(), o.sorted.begin() + 4),
            (std::vector<int32_t>{0, 2, 1, 3}));
  EXPECT_EQ(o.weight[4], 0.0f);
  EXPECT_EQ(o.weight[5], 0.0f);
}
