//===- WeightsTest.cpp - Checkpoint binding and random weights ------------===//
#include "TestUtil.h"

#include "PlanBuilder.h"
#include "moert/Error.h"
#include "moert/Safetensors.h"
#include "moert/Weights.h"
#include "moert/cpu/Kernels.h"

#include <cmath>

using namespace moert;
using namespace moetest;

namespace {

/// A plan whose single Linear uses weight "w" [N, K] and bias "b" [N].
PlanFile linearPlan(int64_t N, int64_t K, mp::DType stored, mp::DType dtype,
                    mp::Init init = mp::Init::Normal) {
  PlanBuilder b("test", 16, K, 1, 16, 4, 16);
  int w = b.weight("w", {N, K}, stored, dtype, init, 0.5f);
  int bias = b.weight("b", {N}, stored, dtype, mp::Init::Zeros);
  int emb = b.weight("emb", {16, K}, stored, dtype);
  int in = b.buffer("in", K), out = b.buffer("out", N), lg = b.buffer("logits", 16, 0, 1);
  mp::EmbeddingT e;
  e.weight = emb;
  e.out = in;
  b.step(std::move(e), "emb");
  mp::LinearT l;
  l.in = in;
  l.out = out;
  l.weight = w;
  l.bias = bias;
  b.step(std::move(l), "lin");
  mp::LogitsT lo;
  lo.in = in;
  lo.weight = emb;
  lo.out = lg;
  b.step(std::move(lo), "logits");
  return PlanFile::fromBytes(b.finish(), "w.plan");
}

} // namespace

// Backends made with pack = false keep the row-major layout: the tests
// below look at raw elements.

bool packingAvailable() { return cpu::activeIsa() != cpu::Isa::Scalar; }

TEST(RandomWeights, DeterministicAcrossThreadCounts) {
  PlanFile p = linearPlan(300, 7000, mp::DType::BF16, mp::DType::BF16);
  TestBackend p1(1), p3(3), p1Rm(1, false), p3Rm(3, false);
  auto a = WeightStore::random(p, 42, {0}, p1Rm);
  auto b = WeightStore::random(p, 42, {0}, p3Rm);
  auto c = WeightStore::random(p, 43, {0}, p3Rm);
  DeviceWeight wa = a->view(0), wb = b->view(0), wc = c->view(0);
  ASSERT_EQ(wa.bytes, 300u * 7000u * 2u);
  EXPECT_EQ(std::memcmp(wa.data, wb.data, wa.bytes), 0);
  EXPECT_NE(std::memcmp(wa.data, wc.data, wa.bytes), 0);
  // Values follow init_std = 0.5 with mean 0.
  double sum = 0, sq = 0;
  size_t n = 300 * 7000;
  for (size_t i = 0; i < n; ++i) {
    double v = loadAsF32(wa.data, DType::BF16, i);
    sum += v;
    sq += v * v;
  }
  EXPECT_NEAR(sum / double(n), 0.0, 2e-3);
  EXPECT_NEAR(std::sqrt(sq / double(n)), 0.5, 5e-3);
  EXPECT_EQ(loadAsF32(wa.data, DType::BF16, 5),
            bf16ToF32(f32ToBf16(randomWeightValue(42, "w", mp::Init::Normal, 0.5f, 5))));
  // Biases follow their Zeros init.
  for (size_t i = 0; i < 300; ++i)
    ASSERT_EQ(loadAsF32(a->view(1).data, DType::BF16, i), 0.0f);
  // Packed (the default with AVX-512): the same values in blocks of 16 rows
  // (300 rows: the last block half padding), whatever the thread count.
  if (!packingAvailable())
    GTEST_SKIP() << "no AVX-512: weights stay row-major";
  auto pa = WeightStore::random(p, 42, {0}, p1), pb = WeightStore::random(p, 42, {0}, p3);
  DeviceWeight va = pa->view(0), vb = pb->view(0);
  ASSERT_EQ(va.layout, Layout::Packed16);
  ASSERT_EQ(va.bytes, cpu::packedBytes(300, 7000));
  EXPECT_EQ(std::memcmp(va.data, vb.data, va.bytes), 0);
  cpu::WRef packed{va.data, va.dtype, va.layout};
  for (int64_t n = 0; n < 300; n += 7)
    for (int64_t k = 0; k < 7000; k += 13)
      ASSERT_EQ(cpu::weightAt(packed, 7000, n, k), loadAsF32(wa.data, DType::BF16, size_t(n * 7000 + k)))
          << n << "," << k;
  EXPECT_EQ(pa->view(1).layout, Layout::RowMajor); // a bias
  EXPECT_EQ(pa->view(2).layout, Layout::RowMajor); // used by Embedding too
  EXPECT_EQ(pa->packedCount(), 1u);
}

TEST(RandomWeights, SameOnEveryIsa) {
  PlanFile p = linearPlan(33, 517, mp::DType::F32, mp::DType::F32);
  PlanFile pb = linearPlan(33, 517, mp::DType::BF16, mp::DType::BF16);
  TestBackend pool(2), poolRm(2, false);
  cpu::Isa saved = cpu::activeIsa();
  auto fast = WeightStore::random(p, 9, {0}, pool);
  auto fastB = WeightStore::random(pb, 9, {0}, poolRm);
  auto fastPacked = WeightStore::random(pb, 9, {0}, pool);
  cpu::setIsa(cpu::Isa::Scalar);
  TestBackend scalar(2); // made on the scalar path: it does not pack
  auto slow = WeightStore::random(p, 9, {0}, scalar);
  auto slowB = WeightStore::random(pb, 9, {0}, scalar);
  cpu::setIsa(saved);
  EXPECT_EQ(slowB->view(0).layout, Layout::RowMajor); // no packing on the scalar path
  EXPECT_EQ(std::memcmp(fast->view(0).data, slow->view(0).data, fast->view(0).bytes), 0);
  EXPECT_EQ(std::memcmp(fastB->view(0).data, slowB->view(0).data, fastB->view(0).bytes), 0);
  // Packing (AVX-512 gathers, odd K) keeps every value.
  DeviceWeight pv = fastPacked->view(0);
  for (int64_t n = 0; n < 33; ++n)
    for (int64_t k = 0; k < 517; ++k)
      ASSERT_EQ(cpu::weightAt({pv.data, pv.dtype, pv.layout}, 517, n, k),
                loadAsF32(slowB->view(0).data, DType::BF16, size_t(n * 517 + k)));
  for (size_t i = 0; i < 33 * 517; i += 97)
    EXPECT_EQ(static_cast<const float *>(fast->view(0).data)[i],
              randomWeightValue(9, "w", mp::Init::Normal, 0.5f, i));
}

TEST(CheckpointWeights, ZeroCopyWhenDtypesMatchElseConverted) {
  TempDir d;
  std::vector<float> w = randomFloats(6 * 5, 1), b = randomFloats(6, 2), e = randomFloats(16 * 5, 3);
  std::vector<uint16_t> wb(w.size()), bb(b.size()), eb(e.size());
  for (size_t i = 0; i < w.size(); ++i)
    wb[i] = f32ToBf16(w[i]);
  for (size_t i = 0; i < b.size(); ++i)
    bb[i] = f32ToBf16(b[i]);
  for (size_t i = 0; i < e.size(); ++i)
    eb[i] = f32ToBf16(e[i]);
  writeSafetensors(d.file("model.safetensors"),
                   {{"w", "BF16", {6, 5}, wb.data(), wb.size() * 2},
                    {"b", "BF16", {6}, bb.data(), bb.size() * 2},
                    {"emb", "BF16", {16, 5}, eb.data(), eb.size() * 2}});
  TestBackend pool(2), poolRm(2, false);
  auto ck = std::make_shared<Checkpoint>(d.path());
  PlanFile same = linearPlan(6, 5, mp::DType::BF16, mp::DType::BF16);
  auto s = WeightStore::fromCheckpoint(same, ck, {0}, poolRm);
  EXPECT_EQ(s->ownedBytes(), 0u);
  EXPECT_EQ(s->view(0).data, ck->find("w")->data); // the mapping itself
  if (packingAvailable()) {
    // Packed: an owned copy of the product's matrix; the embedding stays mapped.
    auto pk = WeightStore::fromCheckpoint(same, ck, {0}, pool);
    DeviceWeight v = pk->view(0);
    EXPECT_EQ(v.layout, Layout::Packed16);
    EXPECT_EQ(pk->ownedBytes(), cpu::packedBytes(6, 5));
    EXPECT_EQ(pk->view(2).data, ck->find("emb")->data);
    for (int64_t n = 0; n < 6; ++n)
      for (int64_t k = 0; k < 5; ++k)
        ASSERT_EQ(cpu::weightAt({v.data, v.dtype, v.layout}, 5, n, k), bf16ToF32(wb[size_t(n * 5 + k)]));
  }
  PlanFile conv = linearPlan(6, 5, mp::DType::BF16, mp::DType::F32);
  auto c = WeightStore::fromCheckpoint(conv, ck, {0}, pool);
  EXPECT_GT(c->ownedBytes(), 0u);
  for (size_t i = 0; i < w.size(); ++i)
    ASSERT_EQ(static_cast<const float *>(c->view(0).data)[i], bf16ToF32(wb[i]));
  // Mismatches are one-line errors naming the tensor.
  PlanFile f32 = linearPlan(6, 5, mp::DType::F32, mp::DType::F32);
  EXPECT_THROW_MSG(WeightStore::fromCheckpoint(f32, ck, {0}, pool),
                   "tensor 'w' is BF16 (expected F32 as the plan records)");
  PlanFile shape = linearPlan(6, 4, mp::DType::BF16, mp::DType::BF16);
  EXPECT_THROW_MSG(WeightStore::fromCheckpoint(shape, ck, {0}, pool),
                   "tensor 'w' has shape [6, 5] (expected [6, 4])");
  TempDir d2;
  writeSafetensors(d2.file("model.safetensors"), {{"w", "BF16", {6, 5}, wb.data(), wb.size() * 2}});
  EXPECT_THROW_MSG(
      WeightStore::fromCheckpoint(same, std::make_shared<Checkpoint>(d2.path()), {0}, pool),
      "tensor 'b' is missing");
}
