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

namespace {

/// A plan with one Experts step over E = 2 experts (D = 4, I = 3) whose
/// stacked gate/up/down weights take their slices from `src` (one
/// WeightSource per role, null: the weight's own tensor), listing `local`.
PlanFile expertsPlan(std::vector<std::unique_ptr<mp::WeightSourceT>> src,
                     std::vector<int> local = {0, 1}, int slices = 1,
                     int firstSlice = 0) {
  const int64_t E = 2, D = 4, I = 3, k = 1;
  PlanBuilder b("test", 16, D, 1, 16, 4, 16);
  int emb = b.weight("emb", {16, D}, mp::DType::BF16, mp::DType::BF16);
  int in = b.buffer("in", D), lg = b.buffer("logits", 16, 0, 1);
  mp::EmbeddingT e;
  e.weight = emb;
  e.out = in;
  b.step(std::move(e), "emb");
  mp::GateT g;
  g.logits = b.buffer("router", E);
  g.num_experts = int(E);
  g.top_k = int(k);
  g.slot_expert = b.buffer("slot_expert", 1, k, 0, mp::DType::I32);
  g.slot_weight = b.buffer("slot_weight", 1, k);
  g.expert_offsets = b.buffer("expert_offsets", 1, 0, E + 1, mp::DType::I32);
  g.sorted_slots = b.buffer("sorted_slots", 1, k, 0, mp::DType::I32);
  mp::ExpertsT x;
  x.in = in;
  x.sorted_slots = g.sorted_slots;
  x.expert_offsets = g.expert_offsets;
  x.slot_out = b.buffer("slot_out", D, k);
  x.top_k = int(k);
  x.intermediate = I;
  b.step(std::move(g), "gate");
  const char *names[3] = {"experts.gate", "experts.up", "experts.down"};
  std::vector<int64_t> shapes[3] = {{E, I, D}, {E, I, D}, {E, D, I}};
  int idx[3];
  for (int r = 0; r < 3; ++r) {
    idx[r] = b.weight(names[r], shapes[r], mp::DType::BF16, mp::DType::BF16);
    b.plan().weights[size_t(idx[r])]->source = std::move(src[size_t(r)]);
  }
  x.gate = idx[0];
  x.up = idx[1];
  x.down = idx[2];
  x.expert_slices = slices;
  // With expert slicing, the j-th listed expert is part (firstSlice + j) % S.
  for (size_t j = 0; j < local.size(); ++j) {
    auto le = std::make_unique<mp::LocalExpertT>();
    le->expert = local[j];
    le->slice = (firstSlice + int(j)) % slices;
    x.experts.push_back(std::move(le));
  }
  b.step(std::move(x), "experts");
  mp::LogitsT lo;
  lo.in = in;
  lo.weight = emb;
  lo.out = lg;
  b.step(std::move(lo), "logits");
  return PlanFile::fromBytes(b.finish(), "e.plan");
}

std::unique_ptr<mp::WeightSourceT> source(std::string tensor, int64_t offset = 0,
                                          int64_t stride = 1, bool transposed = false) {
  auto s = std::make_unique<mp::WeightSourceT>();
  s->tensor = std::move(tensor);
  s->offset = offset;
  s->stride = stride;
  s->transposed = transposed;
  return s;
}

std::vector<std::unique_ptr<mp::WeightSourceT>>
sources(std::unique_ptr<mp::WeightSourceT> g, std::unique_ptr<mp::WeightSourceT> u,
        std::unique_ptr<mp::WeightSourceT> d) {
  std::vector<std::unique_ptr<mp::WeightSourceT>> v;
  v.push_back(std::move(g));
  v.push_back(std::move(u));
  v.push_back(std::move(d));
  return v;
}

} // namespace

// The unit of residency of a stacked expert weight is one expert's slice.
// Per-expert tensors and the contiguous rows of a fused [E, 2I, D] tensor are
// the checkpoint's own bytes (no copy); gpt-oss's interleaved [E, D, 2I] is
// gathered once into the backend's layout, with the same values.
TEST(CheckpointWeights, ExpertSlicesMappedOrGathered) {
  const int64_t E = 2, D = 4, I = 3;
  // gate[e][i][d], up[e][i][d], down[e][d][i]: distinct bf16 values.
  auto val = [](int role, int64_t e, int64_t a, int64_t b) {
    return f32ToBf16(float(role * 100 + e * 20 + a * 4 + b) / 64.0f);
  };
  std::vector<uint16_t> per[2][3], rows(size_t(E * 2 * I * D)), downRows(size_t(E * D * I)),
      cols(size_t(E * D * 2 * I)), downCols(size_t(E * I * D)), emb(16 * D, 0);
  for (int64_t e = 0; e < E; ++e)
    for (int64_t i = 0; i < I; ++i)
      for (int64_t d = 0; d < D; ++d) {
        per[e][0].push_back(val(0, e, i, d));
        rows[size_t((e * 2 * I + i) * D + d)] = val(0, e, i, d);
        rows[size_t((e * 2 * I + I + i) * D + d)] = val(1, e, i, d);
        cols[size_t((e * D + d) * 2 * I + 2 * i)] = val(0, e, i, d);
        cols[size_t((e * D + d) * 2 * I + 2 * i + 1)] = val(1, e, i, d);
        downRows[size_t((e * D + d) * I + i)] = val(2, e, d, i);
        downCols[size_t((e * I + i) * D + d)] = val(2, e, d, i);
      }
  for (int64_t e = 0; e < E; ++e)
    for (int64_t i = 0; i < I; ++i)
      for (int64_t d = 0; d < D; ++d)
        per[e][1].push_back(val(1, e, i, d));
  for (int64_t e = 0; e < E; ++e)
    for (int64_t d = 0; d < D; ++d)
      for (int64_t i = 0; i < I; ++i)
        per[e][2].push_back(val(2, e, d, i));
  TempDir d;
  std::vector<TensorOut> entries = {{"emb", "BF16", {16, D}, emb.data(), emb.size() * 2},
                                          {"fused.gate_up", "BF16", {E, 2 * I, D}, rows.data(), rows.size() * 2},
                                          {"fused.down", "BF16", {E, D, I}, downRows.data(), downRows.size() * 2},
                                          {"oss.gate_up", "BF16", {E, D, 2 * I}, cols.data(), cols.size() * 2},
                                          {"oss.down", "BF16", {E, I, D}, downCols.data(), downCols.size() * 2}};
  const char *role[3] = {"gate", "up", "down"};
  std::vector<std::string> names;
  for (int e = 0; e < 2; ++e)
    for (int r = 0; r < 3; ++r)
      names.push_back(fmt::format("experts.{}.{}", e, role[r]));
  for (int e = 0; e < 2; ++e)
    for (int r = 0; r < 3; ++r)
      entries.push_back({names[size_t(e * 3 + r)], "BF16",
                         r < 2 ? std::vector<int64_t>{I, D} : std::vector<int64_t>{D, I},
                         per[e][r].data(), per[e][r].size() * 2});
  writeSafetensors(d.file("model.safetensors"), entries);
  auto ck = std::make_shared<Checkpoint>(d.path());
  TestBackend rm(1, false);
  auto check = [&](const PlanFile &p, const WeightStore &s, bool mapped) {
    for (int r = 0; r < 3; ++r)
      for (int64_t e = 0; e < E; ++e) {
        int32_t slice = p.weights()[size_t(1 + r)].slices[size_t(e)]; // w0: emb
        const DeviceWeight &v = s.view(slice);
        ASSERT_TRUE(v.data) << role[r] << " " << e;
        EXPECT_EQ(v.mapped, mapped) << role[r] << " " << e;
        for (size_t i = 0; i < per[e][r].size(); ++i)
          ASSERT_EQ(static_cast<const uint16_t *>(v.data)[i], per[e][r][i])
              << role[r] << " expert " << e << " element " << i;
      }
  };
  PlanFile perExpert = expertsPlan(sources(source("experts.{e}.gate"), source("experts.{e}.up"),
                                           source("experts.{e}.down")));
  auto a = WeightStore::fromCheckpoint(perExpert, ck, {0}, rm);
  check(perExpert, *a, true);
  EXPECT_EQ(a->view(perExpert.weights()[1].slices[1]).data, ck->find("experts.1.gate")->data);
  PlanFile fused = expertsPlan(sources(source("fused.gate_up"), source("fused.gate_up", I),
                                       source("fused.down")));
  auto b = WeightStore::fromCheckpoint(fused, ck, {0}, rm);
  check(fused, *b, true);
  EXPECT_EQ(b->ownedBytes(), 0u);
  // Expert 1's up rows: block 1, rows [I, 2I) of the fused tensor, in place.
  EXPECT_EQ(b->view(fused.weights()[2].slices[1]).data,
            static_cast<const uint8_t *>(ck->find("fused.gate_up")->data) + (2 * I + I) * D * 2);
  PlanFile oss = expertsPlan(sources(source("oss.gate_up", 0, 2, true),
                                     source("oss.gate_up", 1, 2, true),
                                     source("oss.down", 0, 1, true)));
  auto c = WeightStore::fromCheckpoint(oss, ck, {0}, rm);
  check(oss, *c, false);
  EXPECT_EQ(c->ownedBytes(), uint64_t(E * 3 * I * D * 2));
  // A rank binds only its experts' slices.
  PlanFile one = expertsPlan(sources(source("oss.gate_up", 0, 2, true),
                                     source("oss.gate_up", 1, 2, true),
                                     source("oss.down", 0, 1, true)),
                             {1});
  auto o = WeightStore::fromCheckpoint(one, ck, {0}, rm);
  EXPECT_FALSE(o->view(one.weights()[1].slices[0]).data);
  EXPECT_TRUE(o->view(one.weights()[1].slices[1]).data);
  EXPECT_EQ(o->ownedBytes(), uint64_t(3 * I * D * 2));
  // A fused tensor too short for the rows the plan reads: one line naming it.
  PlanFile bad = expertsPlan(sources(source("fused.gate_up"), source("fused.gate_up", I + 1),
                                     source("fused.down")));
  EXPECT_THROW_MSG(WeightStore::fromCheckpoint(bad, ck, {0}, rm),
                   "tensor 'fused.gate_up' has shape [2, 6, 4] (expected [2, A, 4] with A > 6 for "
                   "'experts.up': rows 4 + n * 1)");
}

// Expert slicing: part s of an expert holds rows [s I/S, (s+1) I/S) of its
// gate/up slice (mapped in place when the slice is) and those columns of its
// down slice (gathered once at load), with the whole slice's values.
TEST(CheckpointWeights, ExpertPartsAreRowsOrColumnsOfTheSlice) {
  const int64_t E = 2, D = 4, I = 3, S = 3;
  auto val = [](int role, int64_t e, int64_t a, int64_t b) {
    return f32ToBf16(float(role * 100 + e * 20 + a * 4 + b) / 64.0f);
  };
  // gate_up fused [E, 2I, D] (gate rows then up rows), down [E, D, I].
  std::vector<uint16_t> rows(size_t(E * 2 * I * D)), down(size_t(E * D * I)), emb(16 * D, 0);
  for (int64_t e = 0; e < E; ++e)
    for (int64_t i = 0; i < I; ++i)
      for (int64_t d = 0; d < D; ++d) {
        rows[size_t((e * 2 * I + i) * D + d)] = val(0, e, i, d);
        rows[size_t((e * 2 * I + I + i) * D + d)] = val(1, e, i, d);
        down[size_t((e * D + d) * I + i)] = val(2, e, d, i);
      }
  TempDir d;
  writeSafetensors(d.file("model.safetensors"),
                   {{"emb", "BF16", {16, D}, emb.data(), emb.size() * 2},
                    {"fused.gate_up", "BF16", {E, 2 * I, D}, rows.data(), rows.size() * 2},
                    {"fused.down", "BF16", {E, D, I}, down.data(), down.size() * 2}});
  auto ck = std::make_shared<Checkpoint>(d.path());
  TestBackend rm(1, false);
  const uint8_t *base = static_cast<const uint8_t *>(ck->find("fused.gate_up")->data);
  // Rank 0 holds part `first` of expert 0 and part first + 1 of expert 1.
  for (int first = 0; first < S; ++first) {
    PlanFile p = expertsPlan(sources(source("fused.gate_up"), source("fused.gate_up", I),
                                     source("fused.down")),
                             {0, 1}, int(S), first);
    auto store = WeightStore::fromCheckpoint(p, ck, {0}, rm);
    for (int r = 0; r < 3; ++r)
      for (int64_t e = 0; e < E; ++e) {
        const WeightInfo &slice =
            p.weights()[size_t(p.weights()[size_t(1 + r)].slices[size_t(e)])];
        ASSERT_EQ(slice.parts.size(), size_t(S)) << r;
        for (int64_t part = 0; part < S; ++part) {
          const WeightInfo &info = p.weights()[size_t(slice.parts[size_t(part)])];
          const DeviceWeight &v = store->view(slice.parts[size_t(part)]);
          if (part != (first + e) % S) {
            EXPECT_FALSE(v.data) << "a part rank 0 does not list: " << r << " " << e << " "
                                 << part;
            continue;
          }
          ASSERT_TRUE(v.data) << r << " " << e << " " << part;
          const auto *got = static_cast<const uint16_t *>(v.data);
          if (r < 2) {
            // One row (I/S = 1): the checkpoint's own bytes.
            EXPECT_EQ(info.shape, (std::vector<int64_t>{I / S, D}));
            EXPECT_TRUE(v.mapped);
            EXPECT_EQ(v.data, base + ((e * 2 * I + r * I + part) * D) * 2);
            for (int64_t dd = 0; dd < D; ++dd)
              EXPECT_EQ(got[dd], val(r, e, part, dd)) << r << " " << e << " " << part;
          } else {
            // Column `part` of every row of down: gathered.
            EXPECT_EQ(info.shape, (std::vector<int64_t>{D, I / S}));
            EXPECT_FALSE(v.mapped);
            for (int64_t dd = 0; dd < D; ++dd)
              EXPECT_EQ(got[dd], val(2, e, dd, part)) << e << " " << part << " row " << dd;
          }
        }
      }
    // Only the gathered down parts are owned: one D x I/S part per expert.
    EXPECT_EQ(store->ownedBytes(), uint64_t(E * D * (I / S) * 2));
  }
}
