//===- PlanTest.cpp - Plan reader: identifier, version, validation --------===//
#include "TestUtil.h"

#include "HFPlans.h"
#include "moert/Error.h"
#include "moert/Plan.h"
#include "moert/Version.h"

#include <fmt/format.h>
#include <functional>
#include <limits>

using namespace moert;
using namespace moetest;

namespace {

const char *kTinyMixtral = R"({"model_type":"mixtral","hidden_size":32,"intermediate_size":48,
  "num_attention_heads":4,"num_key_value_heads":2,"num_hidden_layers":2,"vocab_size":64,
  "max_position_embeddings":128,"num_local_experts":4,"num_experts_per_tok":2,
  "rms_norm_eps":1e-5,"rope_theta":10000.0,"torch_dtype":"float32","eos_token_id":2})";

std::vector<uint8_t> tinyPlan(int ranks = 1) {
  TempDir d;
  writeBytes(d.file("config.json"), kTinyMixtral);
  HFPlanOptions o;
  o.maxTokens = 8;
  o.numRanks = ranks;
  return buildHFPlan(d.file("config.json"), o);
}

/// Unpacks, edits and repacks a plan (keeping its arena layout).
std::vector<uint8_t> edit(const std::vector<uint8_t> &bytes, const std::function<void(mp::PlanT &)> &f) {
  std::unique_ptr<mp::PlanT> p(mp::GetPlan(bytes.data())->UnPack());
  f(*p);
  return packPlan(*p);
}

void expectBad(const std::vector<uint8_t> &bytes, const std::string &msg) {
  EXPECT_THROW_MSG(PlanFile::fromBytes(bytes, "p.plan"), msg);
}

} // namespace

TEST(Plan, GoodPlanLoads) {
  PlanFile pf = PlanFile::fromBytes(tinyPlan(), "p.plan");
  EXPECT_EQ(pf.vocabSize(), 64);
  EXPECT_EQ(pf.numRanks(), 1);
  EXPECT_GE(pf.rankInfo(0).logitsStep, 0);
  EXPECT_EQ(pf.maxPositions(), 128);
  TempDir d;
  std::vector<uint8_t> b = tinyPlan(2);
  writeBytes(d.file("q.plan"),
             std::string(reinterpret_cast<const char *>(b.data()), b.size()));
  PlanFile two = PlanFile::load(d.file("q.plan"));
  EXPECT_EQ(two.numRanks(), 2);
  // Each rank uses only its own experts.
  int on0 = 0, on1 = 0;
  for (size_t i = 0; i < two.weights().size(); ++i) {
    on0 += two.rankInfo(0).usesWeight[i];
    on1 += two.rankInfo(1).usesWeight[i];
  }
  EXPECT_EQ(on0, on1);
  EXPECT_LT(on0, int(two.weights().size()));
}

TEST(Plan, RejectsOtherFilesAndVersions) {
  std::vector<uint8_t> good = tinyPlan();
  std::vector<uint8_t> bad = good;
  bad[4] = 'X';
  expectBad(bad, "not a moe plan (expected file identifier \"MOEP\")");
  expectBad({1, 2, 3}, "not a moe plan");
  expectBad(edit(good,
                 [](mp::PlanT &p) {
                   p.version_major = 4;
                   p.version_minor = 0;
                 }),
            "p.plan: plan format 4.0 is not supported (expected 3.x");
  // 2.x plans listed per-expert weights: their Experts op is not 3.0's.
  expectBad(edit(good,
                 [](mp::PlanT &p) {
                   p.version_major = 2;
                   p.version_minor = 0;
                 }),
            fmt::format("p.plan: plan format 2.0 is not supported (expected {}.x with x <= {})",
                        kPlanVersionMajor, kPlanVersionMinor));
  expectBad(edit(good, [](mp::PlanT &p) { p.ranks[0]->steps[0]->stream = mp::Stream(7); }),
            "stream 7 (expected 0 compute, 1 communication or 2 weights)");
  expectBad(edit(good, [](mp::PlanT &p) { p.version_minor = kPlanVersionMinor + 1; }),
            "is not supported");
  // 3.1 only appended fields whose defaults keep 3.0's meaning: a 3.0 plan
  // (a Mixtral has no sinks, gate bias or SwigluOai) still loads.
  EXPECT_NO_THROW(
      PlanFile::fromBytes(edit(good, [](mp::PlanT &p) { p.version_minor = 0; }), "p.plan"));
  // Truncated: the verifier catches offsets beyond the buffer.
  std::vector<uint8_t> cut(good.begin(), good.begin() + long(good.size() / 2));
  EXPECT_THROW(PlanFile::fromBytes(cut, "p.plan"), Error);
  TempDir d;
  EXPECT_THROW_MSG(PlanFile::load(d.file("none.plan")), "cannot open plan file");
}

TEST(Plan, CorruptBytesNeverCrash) {
  std::vector<uint8_t> good = tinyPlan();
  // Flip every byte after the identifier in turn (a cheap deterministic fuzz).
  int rejected = 0;
  for (size_t i = 8; i < good.size(); i += 7) {
    std::vector<uint8_t> b = good;
    b[i] ^= 0x5a;
    try {
      PlanFile::fromBytes(b, "p.plan");
    } catch (const Error &) {
      ++rejected;
    }
  }
  EXPECT_GT(rejected, 0);
}

TEST(Plan, RejectsOutOfRangeIndices) {
  std::vector<uint8_t> good = tinyPlan();
  expectBad(edit(good, [](mp::PlanT &p) { firstOp<mp::LinearT>(p, mp::Op::Linear)->in = 99; }),
            "in buffer index 99 out of range");
  expectBad(edit(good,
                 [](mp::PlanT &p) { firstOp<mp::LinearT>(p, mp::Op::Linear)->weight = 1000; }),
            "weight index 1000 out of range");
  expectBad(edit(good, [](mp::PlanT &p) { firstOp<mp::AttentionT>(p, mp::Op::Attention)->cache = 7; }),
            "cache index 7 out of range");
  expectBad(edit(good, [](mp::PlanT &p) { p.ranks[0]->steps[3]->waits = {5}; }),
            "waits on step 5 (expected an earlier step)");
}

TEST(Plan, RejectsInconsistentSizes) {
  std::vector<uint8_t> good = tinyPlan();
  expectBad(edit(good, [](mp::PlanT &p) { p.ranks[0]->arena_bytes = 64; }), "exceeds arena_bytes");
  expectBad(edit(good, [](mp::PlanT &p) { p.ranks[0]->buffers[1]->offset += 4; }),
            "(expected a multiple of 64)");
  expectBad(edit(good, [](mp::PlanT &p) { p.ranks[0]->buffers[0]->max_rows = 1; }),
            "max_rows 1 (expected at least 8 rows");
  expectBad(edit(good,
                 [](mp::PlanT &p) {
                   auto *g = firstOp<mp::GateT>(p, mp::Op::Gate);
                   g->top_k = 5;
                 }),
            "top_k 5 with 4 experts (expected 1 <= top_k <= num_experts)");
  expectBad(edit(good,
                 [](mp::PlanT &p) {
                   auto *a = firstOp<mp::AttentionT>(p, mp::Op::Attention);
                   a->num_kv_heads = 3;
                 }),
            "kv heads dividing heads");
  expectBad(edit(good,
                 [](mp::PlanT &p) { firstOp<mp::LinearT>(p, mp::Op::Linear)->out_col_offset = 60; }),
            "elements per row (expected at least");
  expectBad(edit(good, [](mp::PlanT &p) { p.weights[1]->name = p.weights[0]->name; }),
            "duplicate name");
  expectBad(edit(good, [](mp::PlanT &p) { p.weights[0]->shape = {64, -1}; }), "bad shape");
  expectBad(edit(good, [](mp::PlanT &p) { p.model->vocab_size = 0; }), "vocab_size 0");
  expectBad(edit(good, [](mp::PlanT &p) { p.max_tokens = 0; }), "max_tokens 0");
  expectBad(edit(good, [](mp::PlanT &p) { p.num_ranks = 2; }), "1 rank programs for num_ranks 2");
  expectBad(edit(good, [](mp::PlanT &p) { p.model->eos_token_ids = {64}; }), "eos token id 64");
  expectBad(edit(good,
                 [](mp::PlanT &p) {
                   auto &steps = p.ranks[0]->steps;
                   for (size_t i = 0; i < steps.size(); ++i)
                     if (steps[i]->op.type == mp::Op::Gate) {
                       steps.erase(steps.begin() + long(i));
                       break;
                     }
                 }),
            "is not written by an earlier Gate step");
  expectBad(edit(good,
                 [](mp::PlanT &p) {
                   auto *e = firstOp<mp::ExpertsT>(p, mp::Op::Experts);
                   e->experts[1]->expert = e->experts[0]->expert;
                 }),
            "is listed twice");
  expectBad(edit(good,
                 [](mp::PlanT &p) {
                   auto *e = firstOp<mp::ExpertsT>(p, mp::Op::Experts);
                   e->intermediate = 47;
                 }),
            "gate weight 'model.layers.0.block_sparse_moe.experts.{e}.w1.weight' has shape [4, 48, "
            "32] (expected [4, 47, 32]: expert-stacked, 4 experts)");
  // Expert-stacked weights and their checkpoint sources.
  auto experts = [](mp::PlanT &p) { return firstOp<mp::ExpertsT>(p, mp::Op::Experts); };
  expectBad(edit(good, [&](mp::PlanT &p) { experts(p)->up = experts(p)->down; }),
            "up weight 'model.layers.0.block_sparse_moe.experts.{e}.w2.weight' has shape [4, 32, "
            "48] (expected [4, 48, 32]");
  expectBad(edit(good, [&](mp::PlanT &p) { experts(p)->up = experts(p)->gate; }),
            "weight 'model.layers.0.block_sparse_moe.experts.{e}.w3.weight' has a source but no "
            "Experts step reads it");
  expectBad(edit(good, [&](mp::PlanT &p) { experts(p)->gate = -1; }),
            "gate weight -1 (expected one since gated=true)");
  expectBad(edit(good, [&](mp::PlanT &p) { experts(p)->down = 999; }),
            "down weight index 999 out of range");
  expectBad(edit(good,
                 [&](mp::PlanT &p) {
                   p.weights[size_t(experts(p)->up)]->source->tensor = "a.{e}.{e}";
                 }),
            "has source 'a.{e}.{e}' (expected one {e} and no offset, stride or transposed in a "
            "per-expert pattern)");
  expectBad(edit(good,
                 [&](mp::PlanT &p) {
                   auto &src = p.weights[size_t(experts(p)->up)]->source;
                   src->tensor = "fused";
                   src->stride = 0;
                 }),
            "has source offset 0 and stride 0 (expected 0 <= offset and 1 <= stride");
  expectBad(edit(good,
                 [&](mp::PlanT &p) {
                   auto src = std::make_unique<mp::WeightSourceT>();
                   src->tensor = "x";
                   p.weights[0]->source = std::move(src);
                 }),
            "has a source but no Experts step reads it (expected sources on expert-stacked "
            "weights only)");
  expectBad(edit(good,
                 [&](mp::PlanT &p) {
                   firstOp<mp::LinearT>(p, mp::Op::Linear)->weight = experts(p)->up;
                 }),
            "is expert-stacked (expected a weight no Experts step reads)");
  expectBad(edit(good,
                 [&](mp::PlanT &p) {
                   mp::PrefetchT pf;
                   pf.weights = {experts(p)->down};
                   auto s = std::make_unique<mp::StepT>();
                   s->op.Set(std::move(pf));
                   s->stream = mp::Stream::Weights;
                   p.ranks[0]->steps.insert(p.ranks[0]->steps.begin(), std::move(s));
                 }),
            "is expert-stacked (expected a dense weight: experts stream on demand)");
  expectBad(edit(good,
                 [](mp::PlanT &p) {
                   auto &steps = p.ranks[0]->steps;
                   steps.erase(steps.end() - 1); // the Logits step
                 }),
            "rank 0 has no Logits step");
}

// 3.1's gpt-oss fields: attention sinks, the experts' gate bias and the
// clamped SwiGLU are indices and parameters like any other.
TEST(Plan, RejectsBadGptOssFields) {
  std::vector<uint8_t> good = tinyPlan();
  auto attention = [](mp::PlanT &p) { return firstOp<mp::AttentionT>(p, mp::Op::Attention); };
  auto experts = [](mp::PlanT &p) { return firstOp<mp::ExpertsT>(p, mp::Op::Experts); };
  expectBad(edit(good, [&](mp::PlanT &p) { attention(p)->sinks = 999; }),
            "sinks weight index 999 out of range");
  // The embedding [64, 32] is not a vector; a norm weight has 32 elements,
  // not one per head (4).
  expectBad(edit(good, [&](mp::PlanT &p) { attention(p)->sinks = 0; }),
            "sinks weight 'model.embed_tokens.weight' has rank 2 (expected rank 1)");
  expectBad(edit(good,
                 [&](mp::PlanT &p) {
                   for (size_t i = 0; i < p.weights.size(); ++i)
                     if (p.weights[i]->name == "model.norm.weight")
                       attention(p)->sinks = int32_t(i);
                 }),
            "sinks 'model.norm.weight' has 32 elements (expected one per head, 4)");
  expectBad(edit(good, [&](mp::PlanT &p) { experts(p)->gate_bias = 999; }),
            "gate_bias weight index 999 out of range");
  expectBad(edit(good, [&](mp::PlanT &p) { experts(p)->gate_bias = experts(p)->up; }),
            "gate_bias weight 'model.layers.0.block_sparse_moe.experts.{e}.w3.weight' has shape "
            "[4, 48, 32] (expected [4, 48]");
  expectBad(edit(good, [&](mp::PlanT &p) { experts(p)->act = mp::ActKind::SwigluOai; }),
            "SwigluOai with swiglu_limit 0 and swiglu_alpha 0 (expected a positive finite limit");
  expectBad(edit(good,
                 [&](mp::PlanT &p) {
                   experts(p)->act = mp::ActKind::SwigluOai;
                   experts(p)->swiglu_limit = 7.0f;
                   experts(p)->swiglu_alpha = std::numeric_limits<float>::quiet_NaN();
                 }),
            "swiglu_alpha nan");
  expectBad(edit(good, [&](mp::PlanT &p) { experts(p)->act = mp::ActKind(42); }),
            "unknown activation kind 42");
  // Valid values load.
  EXPECT_NO_THROW(PlanFile::fromBytes(edit(good,
                                           [&](mp::PlanT &p) {
                                             experts(p)->act = mp::ActKind::SwigluOai;
                                             experts(p)->swiglu_limit = 7.0f;
                                             experts(p)->swiglu_alpha = 1.702f;
                                           }),
                                      "p.plan"));
}

// 3.2's DeepSeek-V3 fields: the value width, the gate's groups, selection
// bias and scaling, and the GatherColumns op.
TEST(Plan, RejectsBadDeepSeekFields) {
  std::vector<uint8_t> good = tinyPlan();
  auto attention = [](mp::PlanT &p) { return firstOp<mp::AttentionT>(p, mp::Op::Attention); };
  auto gate = [](mp::PlanT &p) { return firstOp<mp::GateT>(p, mp::Op::Gate); };
  auto weightNamed = [](mp::PlanT &p, const std::string &name) {
    for (size_t i = 0; i < p.weights.size(); ++i)
      if (p.weights[i]->name == name)
        return int32_t(i);
    return int32_t(-1);
  };
  // The tiny Mixtral: 4 heads of 8 (qkv 64 wide), 4 experts, top-2.
  expectBad(edit(good, [&](mp::PlanT &p) { attention(p)->v_head_dim = -1; }),
            "v_head_dim -1 (expected 0..1048576)");
  expectBad(edit(good, [&](mp::PlanT &p) { attention(p)->v_head_dim = 64; }),
            "(expected at least");
  expectBad(edit(good, [&](mp::PlanT &p) { attention(p)->v_head_dim = 4; }),
            "cache 0 holds 2 heads of dim 8 (v 8) (expected 2 of dim 8 (v 4))");
  expectBad(edit(good, [&](mp::PlanT &p) { gate(p)->num_groups = 3; }),
            "num_groups 3 with 4 experts (expected equal groups of at least 2 experts)");
  expectBad(edit(good, [&](mp::PlanT &p) { gate(p)->num_groups = 4; }),
            "num_groups 4 with 4 experts");
  expectBad(edit(good,
                 [&](mp::PlanT &p) {
                   gate(p)->num_groups = 2;
                   gate(p)->topk_groups = 3;
                 }),
            "topk_groups 3 of 2 groups with top_k 2");
  expectBad(edit(good, [&](mp::PlanT &p) { gate(p)->selection_bias = 999; }),
            "selection_bias weight index 999 out of range");
  expectBad(edit(good,
                 [&](mp::PlanT &p) {
                   gate(p)->selection_bias = weightNamed(p, "model.norm.weight");
                 }),
            "selection_bias 'model.norm.weight' has 32 elements (expected num_experts 4)");
  expectBad(edit(good,
                 [&](mp::PlanT &p) {
                   gate(p)->routed_scaling_factor = std::numeric_limits<float>::infinity();
                 }),
            "routed_scaling_factor inf");
  expectBad(edit(good,
                 [&](mp::PlanT &p) {
                   gate(p)->num_groups = 2;
                   gate(p)->softmax_before_topk = false;
                 }),
            "num_groups 2 without scores before top-k");
  // A GatherColumns step reading past its input or indexing past the
  // columns it reads.
  auto withGather = [&](std::vector<int32_t> indices, int64_t width) {
    return edit(good, [&, indices, width](mp::PlanT &p) {
      auto *a = attention(p);
      auto g = std::make_unique<mp::GatherColumnsT>();
      g->inputs = {a->qkv};
      g->input_cols = {0};
      g->input_widths = {width};
      g->out = a->out;
      g->indices = indices;
      auto step = std::make_unique<mp::StepT>();
      step->op.Set(std::move(*g));
      step->name = "gather";
      auto &steps = p.ranks[0]->steps;
      steps.insert(steps.end() - 1, std::move(step)); // before Logits: no wait moves
    });
  };
  expectBad(withGather({0, 1}, 100000), "(expected at least 100000)");
  expectBad(withGather({0, 8}, 8), "index 8 outside the inputs' 8 columns");
  // Valid values load.
  EXPECT_NO_THROW(PlanFile::fromBytes(withGather({0, 7, 7}, 8), "p.plan"));
  EXPECT_NO_THROW(PlanFile::fromBytes(edit(good,
                                           [&](mp::PlanT &p) {
                                             gate(p)->score = mp::ScoreFn::Sigmoid;
                                             gate(p)->num_groups = 2;
                                             gate(p)->topk_groups = 1;
                                             gate(p)->routed_scaling_factor = 2.5f;
                                           }),
                                      "p.plan"));
}

TEST(Plan, RejectsBadCollectives) {
  std::vector<uint8_t> good = tinyPlan(2);
  auto col = [](mp::PlanT &p) {
    for (auto &s : p.ranks[0]->steps)
      if (s->op.type == mp::Op::Collective)
        return reinterpret_cast<mp::CollectiveT *>(s->op.value);
    return static_cast<mp::CollectiveT *>(nullptr);
  };
  expectBad(edit(good, [&](mp::PlanT &p) { col(p)->group = {1, 0}; }),
            "expected ascending ranks");
  expectBad(edit(good, [&](mp::PlanT &p) { col(p)->group = {1}; }),
            "rank 0 runs a collective of a group it is not in");
  expectBad(edit(good, [&](mp::PlanT &p) { col(p)->kind = mp::CollectiveKind::AllGather; }),
            "out buffer index -1 out of range");
}
