//===- RopeTablesTest.cpp - Rope tables of plain and scaled RoPE ----------===//

#include "moert/RopeTables.h"

#include <cmath>
#include <gtest/gtest.h>

using namespace moert;

namespace {

/// A plan Rope table in its own buffer.
struct RopeOp {
  flatbuffers::FlatBufferBuilder fbb;
  const plan::Rope *op = nullptr;
  RopeOp(int rotaryDim, float theta, std::vector<float> invFreq, float attentionFactor) {
    auto inv = invFreq.empty() ? 0 : fbb.CreateVector(invFreq);
    fbb.Finish(plan::CreateRope(fbb, 0, 0, 1, rotaryDim, rotaryDim, theta,
                                plan::RopeStyle::NeoX, inv, attentionFactor));
    op = flatbuffers::GetRoot<plan::Rope>(fbb.GetBufferPointer());
  }
};

TEST(RopeTables, ScaledTablesUseInvFreqAndAttentionFactor) {
  // HF: freqs = position (f32) * inv_freq (f32); cos(freqs) * attention_scaling.
  std::vector<float> inv{1.0f, 0.1f, 1e-3f, 3.3e-5f};
  RopeOp r(8, 10000.0f, inv, 1.25f);
  RopeTableCache cache;
  const RopeTableCache::Entry &e = cache.get(5000, *r.op);
  ASSERT_GE(e.positions, 5000);
  for (int64_t p : {0, 1, 17, 4095, 4999})
    for (int i = 0; i < 4; ++i) {
      float angle = float(p) * inv[size_t(i)];
      EXPECT_EQ(e.cosTab[size_t(p * 4 + i)], float(std::cos(double(angle))) * 1.25f) << p << " " << i;
      EXPECT_EQ(e.sinTab[size_t(p * 4 + i)], float(std::sin(double(angle))) * 1.25f) << p << " " << i;
    }
}

TEST(RopeTables, PlainTablesAreUnchanged) {
  RopeOp r(8, 10000.0f, {}, 1.0f);
  RopeTableCache cache;
  const RopeTableCache::Entry &e = cache.get(10, *r.op);
  std::vector<float> c, s;
  ropeTables(e.positions, 8, 10000.0, c, s);
  EXPECT_EQ(e.cosTab, c);
  EXPECT_EQ(e.sinTab, s);
}

TEST(RopeTables, EqualOpsShareAnEntryAndGrowKeepsValues) {
  std::vector<float> inv{0.5f, 0.25f};
  RopeOp q(4, 10000.0f, inv, 1.0f), k(4, 10000.0f, inv, 1.0f), other(4, 10000.0f, {0.5f, 0.2f}, 1.0f);
  RopeTableCache cache;
  const RopeTableCache::Entry *a = &cache.get(10, *q.op);
  float before = a->cosTab[2 * 7 + 1];
  uint64_t gen = a->generation;
  EXPECT_EQ(&cache.get(10, *k.op), a);
  EXPECT_NE(&cache.get(10, *other.op), a);
  const RopeTableCache::Entry *grown = &cache.get(100000, *k.op);
  EXPECT_EQ(grown, a);
  EXPECT_GT(grown->generation, gen);
  EXPECT_EQ(grown->cosTab[2 * 7 + 1], before);
}

} // namespace
