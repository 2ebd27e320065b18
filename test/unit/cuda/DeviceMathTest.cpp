//===- DeviceMathTest.cpp - The CUDA kernels' math on the CPU -------------===//
//
// Runs the `__host__ __device__` functions of runtime/backends/cuda/
// DeviceMath.h the way the kernels run them (per token, per expert, per
// tile, per split) and compares with the CPU reference kernels. Needs no
// GPU and no CUDA toolkit: this executable is built in every configuration.
//
//===----------------------------------------------------------------------===//
#include "DeviceMath.h"

#include "CudaTestUtil.h"
#include "moert/DType.h"
#include "moert/Generate.h"
#include "moert/cpu/Kernels.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

using namespace moert;
namespace cm = moert::cuda::math;
using moert::cuda::ActKind;
using moert::cuda::WType;
using moetest::randn;

namespace {

TEST(CudaMath, ConversionsMatchDType) {
  std::mt19937 rng(1);
  std::vector<float> vals = randn(20000, rng, 100.0f);
  const float specials[] = {0.0f,
                            -0.0f,
                            1e-8f,
                            -3e-7f,
                            6.0e-5f,
                            65504.0f,
                            65520.0f,
                            1e30f,
                            std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(),
                            std::numeric_limits<float>::quiet_NaN(),
                            1.00390625f,
                            1.001953125f};
  vals.insert(vals.end(), std::begin(specials), std::end(specials));
  for (float v : vals) {
    ASSERT_EQ(cm::f32ToBf16(v), f32ToBf16(v)) << v;
    ASSERT_EQ(cm::f32ToF16(v), f32ToF16(v)) << v;
  }
  for (uint32_t h = 0; h < 65536; ++h) {
    float a = cm::bf16ToF32(uint16_t(h)), b = bf16ToF32(uint16_t(h));
    ASSERT_TRUE(std::memcmp(&a, &b, 4) == 0) << h;
    a = cm::f16ToF32(uint16_t(h));
    b = f16ToF32(uint16_t(h));
    ASSERT_TRUE(std::memcmp(&a, &b, 4) == 0) << h;
  }
  uint16_t buf[4];
  cm::storeW(buf, WType::BF16, 1, 3.14159f);
  EXPECT_EQ(cm::loadW(buf, WType::BF16, 1), bf16ToF32(f32ToBf16(3.14159f)));
  cm::storeW(buf, WType::F16, 2, -2.5f);
  EXPECT_EQ(cm::loadW(buf, WType::F16, 2), -2.5f);
}

TEST(CudaMath, ActivationsMatchCpu) {
  std::mt19937 rng(2);
  const int64_t rows = 3, n = 37;
  std::vector<float> x = randn(size_t(rows * 2 * n), rng, 4.0f);
  for (int k = 0; k <= int(ActKind::Identity); ++k)
    for (bool gated : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "act=" << k << " gated=" << gated);
      std::vector<float> ref(size_t(rows * n));
      cpu::activation(x.data(), 2 * n, ref.data(), n, rows, n, cpu::Act(k), gated);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < n; ++j) {
          float got = cm::activationAt(ActKind(k), gated, x.data() + r * 2 * n, n, j);
          float want = ref[size_t(r * n + j)];
          // The CPU computes SiLU in float or with libmvec: last bits may differ.
          ASSERT_NEAR(got, want, 1e-6f * std::max(1.0f, std::fabs(want)));
        }
      for (float v : x)
        ASSERT_EQ(cm::activate(ActKind(k), v), cpu::activate(cpu::Act(k), v));
    }
}

TEST(CudaMath, SwigluOaiMatchesCpu) {
  std::mt19937 rng(12);
  const int64_t n = 61;
  const float limit = 7.0f, alpha = 1.702f;
  std::vector<float> row = randn(size_t(2 * n), rng, 6.0f); // [gate | up], past the clamps
  row[0] = NAN;                                             // passes through min
  row[size_t(n + 1)] = NAN;                                 // and through clamp
  row[2] = limit;
  row[size_t(n + 3)] = -limit;
  row[4] = -INFINITY;
  std::vector<float> ref = row;
  cpu::swigluOai(ref.data(), 2 * n, 1, n, limit, alpha);
  for (int64_t j = 0; j < n; ++j) {
    float got = cm::swigluOai(row[size_t(j)], row[size_t(n + j)], limit, alpha);
    float want = ref[size_t(j)];
    SCOPED_TRACE(::testing::Message() << "j=" << j << " g=" << row[size_t(j)]
                                      << " u=" << row[size_t(n + j)]);
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(got));
      continue;
    }
    // The CPU's vector path takes libmvec's exp: last bits may differ.
    ASSERT_NEAR(got, want, 1e-6f * std::max(1.0f, std::fabs(want)));
  }
}

TEST(CudaMath, NormsMatchCpu) {
  std::mt19937 rng(3);
  const int64_t rows = 4, dim = 29, groups = 3, ld = dim * groups + 5;
  std::vector<float> x = randn(size_t(rows * ld), rng, 2.0f);
  std::vector<float> w = randn(size_t(dim), rng), b = randn(size_t(dim), rng);
  cpu::WRef wr{w.data(), DType::F32}, br{b.data(), DType::F32};
  for (bool rms : {true, false})
    for (bool hasW : {true, false}) {
      std::vector<float> ref(x.size(), 0.0f), got(x.size(), 0.0f);
      const float eps = 1e-5f, off = rms ? 1.0f : 0.0f;
      if (rms)
        cpu::rmsNorm(x.data(), ld, ref.data(), ld, rows, dim, dim * 2, dim, hasW ? wr : cpu::WRef{},
                     eps, off);
      else
        cpu::layerNorm(x.data(), ld, ref.data(), ld, rows, dim, dim * 2, dim,
                       hasW ? wr : cpu::WRef{}, hasW ? br : cpu::WRef{}, eps);
      // The kernel: one block per (row, group); sequential sums here.
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t g = dim; g < 3 * dim; g += dim) {
          const float *xi = x.data() + r * ld + g;
          float *y = got.data() + r * ld + g;
          if (rms) {
            double ss = 0.0;
            for (int64_t d = 0; d < dim; ++d)
              ss += double(xi[d]) * xi[d];
            float inv = cm::rmsInv(ss, dim, eps);
            for (int64_t d = 0; d < dim; ++d)
              y[d] = cm::rmsApply(xi[d], inv, hasW, hasW ? w[size_t(d)] : 1.0f, off);
          } else {
            double s = 0.0, v = 0.0;
            for (int64_t d = 0; d < dim; ++d)
              s += xi[d];
            double mean = s / double(dim);
            for (int64_t d = 0; d < dim; ++d)
              v += (xi[d] - mean) * (xi[d] - mean);
            double inv = cm::layerInv(v, dim, eps);
            for (int64_t d = 0; d < dim; ++d)
              y[d] = cm::layerApply(xi[d], mean, inv, hasW ? w[size_t(d)] : 1.0f,
                                    hasW ? b[size_t(d)] : 0.0f);
          }
        }
      for (size_t i = 0; i < x.size(); ++i)
        ASSERT_EQ(got[i], ref[i]) << "rms=" << rms << " w=" << hasW << " i=" << i;
    }
}

TEST(CudaMath, RopeMatchesCpu) {
  std::mt19937 rng(4);
  const int heads = 3, headDim = 16, rotaryDim = 12, half = rotaryDim / 2;
  const int64_t T = 5, ld = heads * headDim + 7;
  std::vector<int64_t> pos = {0, 3, 7, 8, 20};
  std::vector<float> cosT, sinT;
  cpu::ropeTables(32, rotaryDim, 10000.0, cosT, sinT);
  for (bool inter : {false, true}) {
    std::vector<float> ref = randn(size_t(T * ld), rng), got = ref;
    cpu::rope(ref.data(), ld, T, pos.data(), heads, headDim, rotaryDim, cosT.data(), sinT.data(),
              inter);
    for (int64_t t = 0; t < T; ++t)
      for (int h = 0; h < heads; ++h)
        for (int i = 0; i < half; ++i) { // one thread per (t, h, pair)
          int i1, i2;
          cm::ropePair(i, half, inter, i1, i2);
          float *v = got.data() + t * ld + h * headDim;
          size_t c = size_t(pos[size_t(t)] * half + i);
          cm::ropeRotate(v[i1], v[i2], cosT[c], sinT[c]);
        }
    ASSERT_EQ(got, ref) << "interleaved=" << inter;
  }
}

/// The gate kernel's algorithm, serially: per token, then per expert.
int64_t emulateGate(const std::vector<float> &logits, int64_t T, const cm::GateParams &p,
                    std::vector<int32_t> &slotExpert, std::vector<float> &slotWeight,
                    std::vector<int32_t> &offsets, std::vector<int32_t> &sorted) {
  const int E = p.numExperts, K = p.topK;
  std::vector<double> score(static_cast<size_t>(E)), choice(static_cast<size_t>(E));
  slotExpert.assign(size_t(T * K), -1);
  slotWeight.assign(size_t(T * K), -1.0f);
  offsets.assign(size_t(E + 1), -1);
  sorted.assign(size_t(T * K), -1);
  for (int64_t t = 0; t < T; ++t) {
    int pick[cm::kGateMaxTopK];
    float w[cm::kGateMaxTopK];
    cm::gateToken(logits.data() + t * E, p, score.data(), choice.data(), pick, w);
    for (int j = 0; j < K; ++j) {
      slotExpert[size_t(t * K + j)] = pick[j];
      slotWeight[size_t(t * K + j)] = w[j];
    }
  }
  const int64_t cap = cm::gateCapacity(p, T), slots = T * K;
  // The kernel: a warp per expert, 32 slots per step (chunkRank).
  std::vector<float> sequentialWeight = slotWeight;
  offsets[0] = 0;
  for (int e = 0; e < E; ++e) {
    int64_t n = 0;
    for (int64_t base = 0; base < slots; base += 32) {
      uint32_t mask = 0;
      for (int lane = 0; lane < 32; ++lane)
        if (base + lane < slots && slotExpert[size_t(base + lane)] == e)
          mask |= 1u << lane;
      for (int lane = 0; lane < 32; ++lane)
        if (mask >> lane & 1u && cm::chunkRank(mask, lane, n) >= cap)
          slotWeight[size_t(base + lane)] = 0.0f;
      n += cm::popcount32(mask);
    }
    offsets[size_t(e + 1)] = int32_t(std::min(n, cap));
    // The sequential form gives the same count and drops.
    EXPECT_EQ(cm::gateAdmit(slotExpert.data(), slots, e, cap, nullptr, sequentialWeight.data()),
              offsets[size_t(e + 1)]);
  }
  EXPECT_EQ(slotWeight, sequentialWeight);
  for (int e = 0; e < E; ++e)
    offsets[size_t(e + 1)] += offsets[size_t(e)];
  for (int e = 0; e < E; ++e) {
    int64_t n = 0;
    for (int64_t base = 0; base < slots && n < cap; base += 32) {
      uint32_t mask = 0;
      for (int lane = 0; lane < 32; ++lane)
        if (base + lane < slots && slotExpert[size_t(base + lane)] == e)
          mask |= 1u << lane;
      for (int lane = 0; lane < 32; ++lane) {
        int64_t r = cm::chunkRank(mask, lane, n);
        if (mask >> lane & 1u && r < cap)
          sorted[size_t(offsets[size_t(e)] + r)] = int32_t(base + lane);
      }
      n += cm::popcount32(mask);
    }
    std::vector<int32_t> seq(size_t(offsets[size_t(e + 1)] - offsets[size_t(e)]) + 1, -7);
    cm::gateAdmit(slotExpert.data(), slots, e, cap, seq.data(), nullptr);
    EXPECT_TRUE(std::equal(seq.begin(), seq.end() - 1, sorted.begin() + offsets[size_t(e)]));
  }
  // The per-slot predicate agrees with the per-expert scan.
  for (int64_t s = 0; s < T * K; ++s)
    EXPECT_EQ(cm::gateSlotAdmitted(slotExpert.data(), s, cap),
              std::find(sorted.begin(), sorted.begin() + offsets[size_t(E)], int32_t(s)) !=
                  sorted.begin() + offsets[size_t(E)]);
  return offsets[size_t(E)];
}

TEST(CudaMath, GateMatchesCpu) {
  std::mt19937 rng(5);
  int cases = 0;
  for (int E : {1, 2, 5, 8, 13, 64})
    for (int K : {1, 2, 3, 8})
      for (int64_t T : {1, 3, 17, 70})
        for (int variant = 0; variant < 12; ++variant) {
          if (K > E)
            continue;
          cm::GateParams p;
          p.numExperts = E;
          p.topK = K;
          p.sigmoid = variant & 1;
          p.softmaxBeforeTopk = !(variant & 2);
          p.normTopk = variant & 4;
          p.dropTokens = (variant + T) % 3 != 0;
          p.capacityFactor = 0.5f + float(variant) * 0.25f;
          p.minCapacity = variant % 3;
          // Variants 8..11: DeepSeek-V3's routing (scores before top-k):
          // groups where E allows, a selection bias, a routed scale.
          std::vector<float> bias;
          if (variant >= 8) {
            p.softmaxBeforeTopk = true;
            p.numGroups = E % 4 == 0 ? 4 : 1;
            p.topkGroups = p.numGroups == 4 ? 2 : 1;
            if (K > p.topkGroups * (E / p.numGroups))
              continue;
            if (variant != 9) {
              bias = moetest::randn(size_t(E), rng, 0.3f);
              p.selectionBias = bias.data();
            }
            p.routedScalingFactor = variant == 10 ? 1.0f : 2.5f;
          }
          // Quantized logits: many exact ties (ties go to the lower id).
          std::vector<float> logits(size_t(T * E));
          std::uniform_int_distribution<int> q(-3, 3);
          for (auto &l : logits)
            l = variant % 2 ? float(q(rng)) * 0.5f : std::normal_distribution<float>()(rng);
          SCOPED_TRACE(::testing::Message()
                       << "E=" << E << " K=" << K << " T=" << T << " variant=" << variant);
          std::vector<int32_t> se, off, sorted;
          std::vector<float> sw;
          int64_t n = emulateGate(logits, T, p, se, sw, off, sorted);
          cpu::GateParams cp = moetest::cpuGateParams(p, bias);
          std::vector<int32_t> rse(size_t(T * K)), roff(size_t(E + 1)), rsorted(size_t(T * K), -1);
          std::vector<float> rsw(size_t(T * K));
          int64_t rn = cpu::gate(logits.data(), E, T, cp, rse.data(), rsw.data(), roff.data(),
                                 rsorted.data(), nullptr);
          ASSERT_EQ(n, rn);
          ASSERT_EQ(se, rse);
          ASSERT_EQ(sw, rsw);
          ASSERT_EQ(off, roff);
          ASSERT_TRUE(std::equal(sorted.begin(), sorted.begin() + n, rsorted.begin()));
          ++cases;
        }
  EXPECT_GT(cases, 300);
}

TEST(CudaMath, GateCapacity) {
  cm::GateParams p;
  p.numExperts = 8;
  p.topK = 2;
  EXPECT_EQ(cm::gateCapacity(p, 100), INT64_MAX);
  p.dropTokens = true;
  p.capacityFactor = 1.25f;
  p.minCapacity = 4;
  EXPECT_EQ(cm::gateCapacity(p, 100), 32); // ceil(1.25 * 200 / 8) = 31.25 -> 32
  EXPECT_EQ(cm::gateCapacity(p, 1), 4);    // min capacity
}

TEST(CudaMath, PermuteIndexArithmetic) {
  // offsets with empty experts at the start, middle and end.
  std::vector<int32_t> off = {0, 0, 3, 3, 4, 9, 9};
  const int E = 6;
  for (int64_t j = -1; j <= 10; ++j) {
    int want = -1;
    for (int e = 0; e < E; ++e)
      if (j >= off[size_t(e)] && j < off[size_t(e + 1)])
        want = e;
    EXPECT_EQ(cm::expertOfSorted(off.data(), E, j), want) << j;
  }
  EXPECT_EQ(cm::slotToken(7, 2), 3);
  EXPECT_EQ(cm::slotToken(7, 1), 7);
  // Replicas partition every expert's positions.
  for (int reps : {1, 2, 3})
    for (int e = 0; e < E; ++e)
      for (int64_t j = off[size_t(e)]; j < off[size_t(e + 1)]; ++j) {
        int owners = 0;
        for (int r = 0; r < reps; ++r)
          owners += cm::replicaOwns(off.data(), e, j, r, reps);
        EXPECT_EQ(owners, 1);
      }
}

TEST(CudaMath, GroupedTilesCoverEveryRowOnce) {
  std::mt19937 rng(6);
  for (int trial = 0; trial < 200; ++trial) {
    int E = 1 + int(rng() % 70), bm = (trial % 3 == 0) ? 1 : int(8 << (rng() % 4));
    int64_t rows = int64_t(rng() % 300);
    std::vector<int32_t> off(size_t(E + 1), 0);
    std::vector<int64_t> cut(size_t(E - 1));
    for (auto &c : cut)
      c = rows ? int64_t(rng() % uint64_t(rows + 1)) : 0;
    std::sort(cut.begin(), cut.end());
    for (int e = 1; e < E; ++e)
      off[size_t(e)] = int32_t(cut[size_t(e - 1)]);
    off[size_t(E)] = int32_t(rows);
    int64_t count = cm::groupedTileCount(off.data(), E, bm);
    ASSERT_LE(count, cm::groupedTileBound(rows, E, bm));
    std::vector<int> seen(size_t(rows), 0);
    for (int64_t tile = 0; tile < cm::groupedTileBound(rows, E, bm) + 2; ++tile) {
      int e = -1;
      int64_t r0 = -1, r1 = -1;
      bool ok = cm::groupedTileOf(off.data(), E, bm, tile, e, r0, r1);
      ASSERT_EQ(ok, tile < count);
      if (!ok)
        continue;
      ASSERT_GE(r0, off[size_t(e)]);
      ASSERT_LE(r1, off[size_t(e + 1)]);
      ASSERT_GT(r1, r0);
      ASSERT_LE(r1 - r0, bm);
      for (int64_t r = r0; r < r1; ++r) {
        ++seen[size_t(r)];
        ASSERT_EQ(cm::expertOfSorted(off.data(), E, r), e);
      }
    }
    for (int s : seen)
      ASSERT_EQ(s, 1);
  }
}

/// The Experts op computed the way the grouped kernels index it (gather by
/// slotToken, tiles of groupedTileOf, scatter to sorted slots), against a
/// direct per-slot loop over the gate's outputs.
TEST(CudaMath, GroupedExpertsIndexing) {
  std::mt19937 rng(7);
  const int E = 6, K = 2;
  const int64_t T = 11, D = 5, I = 3;
  std::vector<float> x = randn(size_t(T * D), rng), logits = randn(size_t(T * E), rng);
  std::vector<std::vector<float>> wu(E), wd(E);
  for (int e = 0; e < E; ++e) {
    wu[size_t(e)] = randn(size_t(I * D), rng);
    wd[size_t(e)] = randn(size_t(D * I), rng);
  }
  cm::GateParams p;
  p.numExperts = E;
  p.topK = K;
  p.dropTokens = true;
  p.capacityFactor = 1.0f;
  std::vector<int32_t> se, off, sorted;
  std::vector<float> sw;
  emulateGate(logits, T, p, se, sw, off, sorted);
  auto ffn = [&](int e, const float *xi, float *out) {
    std::vector<float> h(static_cast<size_t>(I));
    for (int64_t i = 0; i < I; ++i) {
      float s = 0.0f;
      for (int64_t d = 0; d < D; ++d)
        s += wu[size_t(e)][size_t(i * D + d)] * xi[d];
      h[size_t(i)] = cm::activate(ActKind::Relu, s);
    }
    for (int64_t d = 0; d < D; ++d) {
      float s = 0.0f;
      for (int64_t i = 0; i < I; ++i)
        s += wd[size_t(e)][size_t(d * I + i)] * h[size_t(i)];
      out[d] = s;
    }
  };
  std::vector<float> ref(size_t(T * K * D), 0.0f), got(size_t(T * K * D), 0.0f);
  for (int64_t s = 0; s < T * K; ++s)
    if (sw[size_t(s)] != 0.0f)
      ffn(se[size_t(s)], x.data() + (s / K) * D, ref.data() + s * D);
  const int bm = 4;
  for (int64_t tile = 0; tile < cm::groupedTileBound(T * K, E, bm); ++tile) {
    int e;
    int64_t r0, r1;
    if (!cm::groupedTileOf(off.data(), E, bm, tile, e, r0, r1))
      continue;
    for (int64_t j = r0; j < r1; ++j)
      ffn(e, x.data() + cm::slotToken(sorted[size_t(j)], K) * D,
          got.data() + int64_t(sorted[size_t(j)]) * D);
  }
  EXPECT_EQ(got, ref);
  // Combine of the un-permuted rows equals cpu::combine's.
  std::vector<float> c1(size_t(T * D)), c2(size_t(T * D));
  cpu::combine(got.data(), sw.data(), T, K, D, c1.data(), D, false);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t d = 0; d < D; ++d) {
      float s = 0.0f;
      for (int j = 0; j < K; ++j)
        s += sw[size_t(t * K + j)] * got[size_t((t * K + j) * D + d)];
      c2[size_t(t * D + d)] = s;
    }
  EXPECT_EQ(c1, c2);
}

TEST(CudaMath, SplitRangesPartition) {
  for (int64_t len : {0, 1, 7, 64, 1000})
    for (int splits : {1, 2, 3, 8, 32}) {
      int64_t next = 0;
      for (int s = 0; s < splits; ++s) {
        int64_t b, e;
        cm::splitRange(len, splits, s, b, e);
        ASSERT_LE(b, e);
        if (b < e) {
          ASSERT_EQ(b, next);
          next = e;
        }
      }
      ASSERT_EQ(next, len);
    }
  EXPECT_EQ(cm::attnSplits(10, 64, 132, 32, 256), 1);
  EXPECT_GE(cm::attnSplits(32768, 8, 132, 32, 256), 2);
  EXPECT_LE(cm::attnSplits(1 << 20, 1, 132, 32, 256), 32);
  EXPECT_EQ(cm::attnStart(10, 0), 0);
  EXPECT_EQ(cm::attnStart(10, 4), 7);
  EXPECT_EQ(cm::attnStart(2, 4), 0);
}

/// The kernels' online-softmax step (Common.cuh onlineSoftmaxAdd) on the
/// host: rescales acc when the max moves, returns the key's weight.
float onlineSoftmaxAdd(float s, float &m, float &l, std::vector<float> &acc) {
  if (s > m) {
    float c = std::exp(m - s);
    l *= c;
    for (auto &a : acc)
      a *= c;
    m = s;
  }
  float e = std::exp(s - m);
  l += e;
  return e;
}

/// One key of a split, as the kernels take it (laneDot, onlineSoftmaxAdd,
/// laneAxpy): score q . k over n columns, acc += weight * v over acc's.
void attendKey(const float *q, const float *k, int64_t n, const float *v, float &m, float &l,
               std::vector<float> &acc) {
  float sc = 0.0f;
  for (int64_t d = 0; d < n; ++d)
    sc += q[d] * k[d];
  float ex = onlineSoftmaxAdd(sc, m, l, acc);
  for (size_t d = 0; d < acc.size(); ++d)
    acc[d] += ex * v[d];
}

/// A split's partial (m, l, acc) merged into the running state and output
/// (math::softmaxMerge, as the merge kernels do).
void mergeSplit(cm::SoftmaxState &st, float m, float l, const std::vector<float> &acc, float *o) {
  float fa, fb;
  st = cm::softmaxMerge(st, {m, l}, fa, fb);
  for (size_t d = 0; d < acc.size(); ++d)
    o[d] = o[d] * fa + acc[d] * fb;
}

/// Attention the way the kernel computes it: per (t, h) and per split an
/// online softmax over its positions, then softmaxMerge of the splits.
TEST(CudaMath, SplitAttentionMatchesCpu) {
  std::mt19937 rng(8);
  const int heads = 4, kvHeads = 2, hd = 8;
  const int64_t S = 40, T = 3;
  for (int window : {0, 5})
    for (int splits : {1, 3, 7})
      for (bool withSinks : {false, true}) {
      std::vector<int64_t> pos = {17, 18, 19};
      const int64_t ld = (heads + 2 * kvHeads) * hd;
      std::vector<float> qkv = randn(size_t(T * ld), rng);
      std::vector<float> kc = randn(size_t(kvHeads * S * hd), rng), vc = kc;
      for (auto &v : vc)
        v = std::normal_distribution<float>()(rng);
      std::vector<float> kc0 = kc, vc0 = vc;
      ThreadPool pool(1);
      cpu::Workspace ws(1);
      std::vector<float> ref(size_t(T * heads * hd));
      const float scale = 0.35f;
      // gpt-oss's sinks: one more logit per head in the denominator.
      std::vector<float> sinks = randn(size_t(heads), rng, 2.0f);
      cpu::attention(pool, ws, qkv.data(), ld, 0, heads * hd, (heads + kvHeads) * hd, ref.data(),
                     heads * hd, T, pos.data(), {kc.data(), vc.data(), DType::F32, S}, heads,
                     kvHeads, hd, scale, window,
                     withSinks ? cpu::WRef{sinks.data(), DType::F32} : cpu::WRef{});
      // The cache after the CPU's store is what the kernel reads too.
      const int64_t maxPos = 19;
      for (int64_t t = 0; t < T; ++t)
        for (int h = 0; h < heads; ++h) {
          int g = h / (heads / kvHeads);
          std::vector<float> q(static_cast<size_t>(hd)); // the kernel's query, scaled once
          for (int d = 0; d < hd; ++d)
            q[size_t(d)] = qkv[size_t(t * ld + h * hd + d)] * scale;
          cm::SoftmaxState st{-INFINITY, 0.0f};
          std::vector<float> o(size_t(hd), 0.0f);
          for (int s = 0; s < splits; ++s) {
            int64_t b, e;
            cm::splitRange(maxPos + 1, splits, s, b, e);
            float m = -INFINITY, l = 0.0f;
            std::vector<float> acc(size_t(hd), 0.0f);
            for (int64_t j = std::max(b, cm::attnStart(pos[size_t(t)], window));
                 j < e && j <= pos[size_t(t)]; ++j) {
              attendKey(q.data(), kc.data() + (g * S + j) * hd, hd, vc.data() + (g * S + j) * hd,
                        m, l, acc);
            }
            mergeSplit(st, m, l, acc, o.data());
          }
          if (withSinks) {
            float fa;
            st = cm::withSink(st, sinks[size_t(h)], fa);
            for (auto &x : o)
              x *= fa;
          }
          for (int d = 0; d < hd; ++d)
            ASSERT_NEAR(o[size_t(d)] / st.l, ref[size_t(t * heads * hd + h * hd + d)], 2e-5f)
                << "window=" << window << " splits=" << splits << " sinks=" << withSinks
                << " t=" << t << " h=" << h;
        }
    }
}

TEST(CudaMath, KVPagesMatchCpu) {
  // Pool rows of (slot, position) as the CPU's KVView computes them.
  std::mt19937 rng(12);
  const int64_t pageSize = 4, pagesPerSeq = 5, slots = 3;
  std::vector<int32_t> table(size_t(slots * pagesPerSeq));
  std::iota(table.begin(), table.end(), 0);
  std::shuffle(table.begin(), table.end(), rng);
  std::vector<int64_t> seq = {2, 0, 1, 2, 1};
  cm::KVPages pages{table.data(), seq.data(), pagesPerSeq, pageSize};
  cpu::KVView view{nullptr, nullptr, DType::F32, 64, table.data(), seq.data(), pagesPerSeq,
                   pageSize};
  for (int64_t t = 0; t < int64_t(seq.size()); ++t)
    for (int64_t p = 0; p < pagesPerSeq * pageSize; ++p) {
      ASSERT_EQ(pages.slotOf(t), seq[size_t(t)]);
      ASSERT_EQ(pages.row(pages.slotOf(t), p), view.poolRow(t, p)) << t << " " << p;
    }
  cm::KVPages unpaged;
  EXPECT_EQ(unpaged.slotOf(3), 0);
  EXPECT_EQ(unpaged.row(0, 17), 17);
  const int blockSlots[] = {1, 0, 1, -1, 0, 2, -1, 2};
  const bool first[] = {true, true, false, false, false, true, false, false};
  for (int w = 0; w < 8; ++w)
    EXPECT_EQ(cm::firstOfSlot(blockSlots, w), first[w]) << w;
}

/// A batched step's attention the way Attention.cu runs it: blocks of
/// kItems (token, head) warps whose tokens belong to several sequences of a
/// paged pool make one pass per sequence over that sequence's pool rows,
/// split-K over positions, merged; against the CPU's paged attention.
TEST(CudaMath, PagedAttentionPassesMatchCpu) {
  constexpr int kItems = 8, kBK = 16; // Attention.cu's
  std::mt19937 rng(21);
  const int heads = 4, kvHeads = 2, hd = 8, group = heads / kvHeads;
  const int64_t pageSize = 4, pagesPerSeq = 4, S = 48; // 12 pages in the pool
  std::vector<int32_t> table(12);
  std::iota(table.begin(), table.end(), 0);
  std::shuffle(table.begin(), table.end(), rng);
  // Rows of three sequences, interleaved, decode rows and chunks mixed.
  const std::vector<int64_t> seq = {0, 2, 1, 0, 2, 2, 1}, pos = {5, 9, 3, 6, 10, 11, 4};
  const int64_t T = int64_t(seq.size()), ld = (heads + 2 * kvHeads) * hd;
  for (int window : {0, 3})
    for (int splits : {1, 3}) {
      std::vector<float> qkv = randn(size_t(T * ld), rng);
      std::vector<float> kc = randn(size_t(kvHeads * S * hd), rng), vc = randn(kc.size(), rng);
      std::vector<float> kc0 = kc, vc0 = vc;
      ThreadPool pool(1);
      cpu::Workspace ws(1);
      std::vector<float> ref(size_t(T * heads * hd));
      const float scale = 0.3f;
      cpu::KVView view{kc.data(), vc.data(), DType::F32, S, table.data(), seq.data(),
                       pagesPerSeq, pageSize};
      cpu::attention(pool, ws, qkv.data(), ld, 0, heads * hd, (heads + kvHeads) * hd, ref.data(),
                     heads * hd, T, pos.data(), view, heads, kvHeads, hd, scale, window);
      cm::KVPages pages{table.data(), seq.data(), pagesPerSeq, pageSize};
      // storeKVKernel's rows: the CPU stored the same values at the same rows.
      for (int64_t t = 0; t < T; ++t)
        for (int g = 0; g < kvHeads; ++g)
          for (int d = 0; d < hd; ++d) {
            int64_t off = (g * S + pages.row(pages.slotOf(t), pos[size_t(t)])) * hd + d;
            kc0[size_t(off)] = qkv[size_t(t * ld + heads * hd + g * hd + d)];
            vc0[size_t(off)] = qkv[size_t(t * ld + (heads + kvHeads) * hd + g * hd + d)];
          }
      ASSERT_EQ(kc0, kc);
      ASSERT_EQ(vc0, vc);
      const int64_t maxPos = *std::max_element(pos.begin(), pos.end());
      std::vector<float> out(ref.size(), 0.0f);
      std::vector<cm::SoftmaxState> merged(size_t(T * heads), {-INFINITY, 0.0f});
      for (int g = 0; g < kvHeads; ++g)
        for (int64_t bx = 0; bx * kItems < T * group; ++bx)
          for (int z = 0; z < splits; ++z) {
            int64_t sb, se;
            cm::splitRange(maxPos + 1, splits, z, sb, se);
            int slots[kItems];
            for (int w = 0; w < kItems; ++w) {
              int64_t item = bx * kItems + w;
              slots[w] = item < T * group ? int(pages.slotOf(item / group)) : -1;
            }
            for (int w0 = 0; w0 < kItems; ++w0) {
              if (!cm::firstOfSlot(slots, w0))
                continue;
              const int cur = slots[w0];
              int64_t kb = INT64_MAX, ke = -1;
              for (int w = 0; w < kItems; ++w)
                if (slots[w] == cur) {
                  int64_t t = (bx * kItems + w) / group, p = pos[size_t(t)];
                  kb = std::min(kb, std::max(cm::attnStart(p, window), sb));
                  ke = std::max(ke, std::min(p + 1, se));
                }
              for (int w = 0; w < kItems; ++w) {
                if (slots[w] != cur)
                  continue;
                const int64_t item = bx * kItems + w, t = item / group;
                const int h = g * group + int(item % group);
                const int64_t p = pos[size_t(t)], start = cm::attnStart(p, window);
                std::vector<float> q(static_cast<size_t>(hd));
                for (int d = 0; d < hd; ++d)
                  q[size_t(d)] = qkv[size_t(t * ld + h * hd + d)] * scale;
                float m = -INFINITY, l = 0.0f;
                std::vector<float> acc(size_t(hd), 0.0f);
                for (int64_t k0 = kb; k0 < ke; k0 += kBK)
                  for (int r = 0; r < kBK; ++r) {
                    int64_t j = k0 + r;
                    if (j >= ke || j < start || j > p || j < sb)
                      continue;
                    const int64_t row = pages.row(cur, j);
                    attendKey(q.data(), kc.data() + (g * S + row) * hd, hd,
                              vc.data() + (g * S + row) * hd, m, l, acc);
                  }
                mergeSplit(merged[size_t(t * heads + h)], m, l, acc,
                           out.data() + (t * heads + h) * hd);
              }
            }
          }
      for (int64_t th = 0; th < T * heads; ++th)
        for (int d = 0; d < hd; ++d)
          ASSERT_NEAR(out[size_t(th * hd + d)] / merged[size_t(th)].l,
                      ref[size_t(th * hd + d)], 2e-5f)
              << "window=" << window << " splits=" << splits << " row " << th / heads;
    }
}

/// moert::Sampler::next, step by step with the device's functions.
/// MLA the way Mla.cu computes it (store the latent rows, absorb W_UK into
/// the query, attend per split over the latent rows, merge, apply W_UV)
/// against the CPU backend's mlaAttention: a prefill call, then a decode.
TEST(CudaMath, MlaMatchesCpu) {
  std::mt19937 rng(14);
  const int H = 5, N = 8, R = 4, V = 6, L = 12, C = L + R;
  const int64_t T = 11, S = 16, ldq = H * (N + R) + 3, ldl = L + 2, ldp = R + 1;
  const float scale = 0.37f;
  std::vector<float> q = randn(size_t(T * ldq), rng), lat = randn(size_t(T * ldl), rng),
                     pe = randn(size_t(T * ldp), rng);
  std::vector<float> kvb = randn(size_t(H * (N + V) * L), rng, 0.5f);
  std::vector<int64_t> pos(static_cast<size_t>(T));
  std::iota(pos.begin(), pos.end(), 0);
  ThreadPool pool(1);
  cpu::Workspace ws(1);
  std::vector<float> cacheRef(size_t(S * C)), ref(size_t(T * H * V));
  cpu::MlaParams mp{H, N, R, V, L, scale, {kvb.data(), DType::F32}};
  cpu::KVView kv{cacheRef.data(), nullptr, DType::F32, S};
  auto cpuCall = [&](int64_t t0, int64_t n) {
    cpu::MlaInputs in{q.data() + t0 * ldq, ldq, lat.data() + t0 * ldl, ldl,
                      pe.data() + t0 * ldp, ldp};
    cpu::mlaAttention(pool, ws, in, ref.data() + t0 * H * V, H * V, n, pos.data() + t0, kv, mp);
  };
  cpuCall(0, T - 1);
  cpuCall(T - 1, 1);
  for (int splits : {1, 3}) {
    std::vector<float> cache(size_t(S * C), 0.0f), got(size_t(T * H * V));
    auto gpuCall = [&](int64_t t0, int64_t n) {
      for (int64_t t = t0; t < t0 + n; ++t) // storeLatentKernel
        for (int64_t c = 0; c < C; ++c)
          cache[size_t(pos[size_t(t)] * C + c)] =
              *cm::mlaCacheSource(lat.data(), ldl, pe.data(), ldp, L, t, c);
      int64_t maxPos = pos[size_t(t0 + n - 1)];
      for (int64_t t = t0; t < t0 + n; ++t)
        for (int h = 0; h < H; ++h) {
          const float *qr = q.data() + t * ldq + h * (N + R);
          std::vector<float> qa(static_cast<size_t>(C)); // absorbKernel
          for (int64_t c = 0; c < C; ++c) {
            float v = 0.0f;
            if (c < L)
              for (int64_t i = 0; i < N; ++i)
                v = std::fma(qr[i], kvb[size_t(cm::mlaUkRow(h, i, N, V) * L + c)], v);
            else
              v = qr[N + (c - L)];
            qa[size_t(c)] = v * scale;
          }
          cm::SoftmaxState st{-INFINITY, 0.0f}; // mlaAttendKernel + mlaMergeKernel
          std::vector<float> olat(static_cast<size_t>(L), 0.0f);
          for (int z = 0; z < splits; ++z) {
            int64_t sb, se;
            cm::splitRange(maxPos + 1, splits, z, sb, se);
            float m = -INFINITY, l = 0.0f;
            std::vector<float> acc(static_cast<size_t>(L), 0.0f);
            // Keys are whole latent rows [c_kv | k_pe], values their c_kv.
            for (int64_t j = sb; j < std::min(pos[size_t(t)] + 1, se); ++j)
              attendKey(qa.data(), cache.data() + j * C, C, cache.data() + j * C, m, l, acc);
            mergeSplit(st, m, l, acc, olat.data());
          }
          for (int64_t v = 0; v < V; ++v) { // uvKernel
            float o = 0.0f;
            for (int64_t c = 0; c < L; ++c)
              o += olat[size_t(c)] / st.l * kvb[size_t(cm::mlaUvRow(h, v, N, V) * L + c)];
            got[size_t(t * H * V + h * V + v)] = o;
          }
        }
    };
    gpuCall(0, T - 1);
    gpuCall(T - 1, 1);
    EXPECT_EQ(cache, cacheRef) << "the latent rows";
    for (size_t i = 0; i < got.size(); ++i)
      ASSERT_NEAR(got[i], ref[i], 2e-5f * std::max(1.0f, std::fabs(ref[i])))
          << "splits=" << splits << " at " << i;
  }
}

/// The upload's dequantization (Quant.cu) element by element vs the CPU
/// backend's dequantizeRows: every FP8 byte and e8m0 scale, partial blocks.
TEST(CudaMath, DequantMatchesCpu) {
  std::mt19937 rng(16);
  auto same = [](float a, float b) {
    return (std::isnan(a) && std::isnan(b)) || cm::f32ToBits(a) == cm::f32ToBits(b);
  };
  struct Case {
    cm::QFormat f;
    int64_t N, K, bn, bk;
  };
  for (Case c : {Case{cm::QFormat::FP8E4M3Block, 37, 300, 128, 128},
                 Case{cm::QFormat::FP8E4M3Block, 20, 70, 16, 32},
                 Case{cm::QFormat::MXFP4, 9, 96, 1, 32}}) {
    SCOPED_TRACE(::testing::Message() << "format " << int(c.f) << " N=" << c.N << " K=" << c.K);
    const bool mx = c.f == cm::QFormat::MXFP4;
    const int64_t rowBytes = mx ? c.K / 2 : c.K, cols = (c.K + c.bk - 1) / c.bk,
                  rows = (c.N + c.bn - 1) / c.bn;
    std::vector<uint8_t> q(size_t(c.N * rowBytes));
    for (size_t i = 0; i < q.size(); ++i)
      q[i] = uint8_t(i * 7 + 3); // every byte value
    std::vector<uint8_t> s8(size_t(rows * cols));
    std::vector<float> s32(size_t(rows * cols));
    for (size_t i = 0; i < s8.size(); ++i) {
      s8[i] = uint8_t(i * 13); // e8m0: 0 (subnormal) to 255 (infinity)
      s32[i] = std::normal_distribution<float>(0.0f, 3.0f)(rng);
    }
    const void *scales = mx ? static_cast<const void *>(s8.data()) : s32.data();
    cpu::WRef w{q.data(), DType::F32, Layout::RowMajor,
                mx ? cpu::QuantFormat::MXFP4 : cpu::QuantFormat::FP8E4M3Block, scales, c.bn,
                c.bk};
    std::vector<float> ref(size_t(c.N * c.K));
    cpu::dequantizeRows(w, c.K, 0, c.N, ref.data());
    for (int64_t n = 0; n < c.N; ++n)
      for (int64_t k = 0; k < c.K; ++k) {
        float got = cm::dequantAt(c.f, q.data(), scales, c.K, c.bn, c.bk, n, k);
        // e4m3fn's NaN bytes (0x7f, 0xff): the CPU's AVX-512 path reads
        // them as 480 (no checkpoint holds them); its scalar path and the
        // upload give NaN (checked below).
        if (!mx && (q[size_t(n * c.K + k)] & 0x7f) == 0x7f)
          continue;
        ASSERT_TRUE(same(got, ref[size_t(n * c.K + k)]))
            << "n=" << n << " k=" << k << ": " << got << " vs " << ref[size_t(n * c.K + k)];
      }
  }
  for (int v = 0; v < 256; ++v)
    ASSERT_TRUE(same(cm::fp8e4m3ToF32(uint8_t(v)), cpu::fp8e4m3ToF32(uint8_t(v)))) << v;
}

TEST(CudaMath, TopPSamplingMatchesSampler) {
  std::mt19937 rng(9);
  for (float temperature : {0.5f, 1.0f, 2.0f})
    for (float topP : {0.0f, 0.3f, 0.9f, 1.0f}) {
      const uint64_t seed = 1234;
      Sampler ref(temperature, topP, seed);
      uint64_t state = seed;
      for (int step = 0; step < 50; ++step) {
        int64_t V = 1 + int64_t(rng() % 300);
        std::vector<float> logits = randn(size_t(V), rng, 3.0f);
        if (step % 5 == 0) // ties
          for (auto &l : logits)
            l = std::round(l);
        int64_t best = 0;
        for (int64_t i = 1; i < V; ++i)
          if (cm::argmaxBetter(logits[size_t(i)], i, logits[size_t(best)], best))
            best = i;
        ASSERT_EQ(best, Sampler::argmax(logits.data(), V));
        std::vector<std::pair<double, int64_t>> p(static_cast<size_t>(V));
        double sum = 0.0;
        for (int64_t i = 0; i < V; ++i) {
          p[size_t(i)] = {cm::sampleWeight(logits[size_t(i)], logits[size_t(best)], temperature),
                          i};
          sum += p[size_t(i)].first;
        }
        // Descending, ties to the lower id (what the device's stable radix
        // sort of ascending ids gives).
        std::sort(p.begin(), p.end(), [](const auto &a, const auto &b) {
          return a.first > b.first || (a.first == b.first && a.second < b.second);
        });
        std::vector<double> sorted(static_cast<size_t>(V));
        for (int64_t i = 0; i < V; ++i)
          sorted[size_t(i)] = p[size_t(i)].first;
        int64_t keep = cm::topPKeep(sorted.data(), V, sum, topP);
        int64_t at = cm::topPPick(sorted.data(), keep, cm::uniform01(state));
        ASSERT_EQ(p[size_t(at)].second, ref.next(logits.data(), V))
            << "T=" << temperature << " p=" << topP << " step=" << step;
      }
    }
}

TEST(CudaMath, GemvVectorizable) {
  EXPECT_TRUE(cm::gemvVectorizable(0x1000, 64, 2));
  EXPECT_FALSE(cm::gemvVectorizable(0x1008, 64, 2));
  EXPECT_FALSE(cm::gemvVectorizable(0x1000, 63, 2));
  EXPECT_TRUE(cm::gemvVectorizable(0x1000, 4, 4));
  EXPECT_FALSE(cm::gemvVectorizable(0x1000, 6, 4));
}

} // namespace
