//===- HFPlans.cpp --------------------------------------------------------===//
#include "HFPlans.h"

#include "moert/Error.h"
#include "moert/FileUtil.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>

namespace moetest {

using json = nlohmann::json;
using moert::fail;

namespace {

mp::DType dtypeOf(const std::string &s) {
  if (s == "float32")
    return mp::DType::F32;
  if (s == "bfloat16")
    return mp::DType::BF16;
  if (s == "float16")
    return mp::DType::F16;
  fail("unsupported torch dtype '{}'", s);
}

template <typename T> T get(const json &c, const char *key, T dflt) {
  auto it = c.find(key);
  return it == c.end() || it->is_null() ? dflt : it->get<T>();
}

class Builder {
public:
  Builder(const json &cfg, const HFPlanOptions &opts) : c_(cfg), o_(opts) {}
  std::vector<uint8_t> build();

private:
  int W(const std::string &name, std::vector<int64_t> shape, mp::Init init = mp::Init::Normal,
        std::vector<int> ranks = {}) {
    int i = pb_->findWeight(name);
    if (i >= 0)
      return i;
    return pb_->weight(name, std::move(shape), stored_, o_.dtype, init, initStd_, std::move(ranks));
  }
  int linear(int in, int out, int w, const std::string &name, int layer, int bias = -1,
             int64_t col = 0, bool acc = false, bool transposed = false) {
    mp::LinearT l;
    l.in = in;
    l.out = out;
    l.weight = w;
    l.bias = bias;
    l.out_col_offset = col;
    l.accumulate = acc;
    l.weight_transposed = transposed;
    return pb_->step(std::move(l), name, layer);
  }
  int norm(mp::NormKind kind, int in, int out, int w, int b, float eps, int64_t dim,
           const std::string &name, int layer, int64_t col = 0, int64_t cols = 0) {
    mp::NormT n;
    n.kind = kind;
    n.in = in;
    n.out = out;
    n.weight = w;
    n.bias = b;
    n.eps = eps;
    n.dim = dim;
    n.col_offset = col;
    n.cols = cols;
    return pb_->step(std::move(n), name, layer);
  }
  void rope(int buf, int64_t col, int heads, const std::string &name, int layer) {
    mp::RopeT r;
    r.buf = buf;
    r.col_offset = col;
    r.num_heads = heads;
    r.head_dim = int(hd_);
    r.rotary_dim = int(hd_);
    r.theta = theta_;
    pb_->step(std::move(r), name, layer);
  }
  void attention(int qkv, int out, int cache, float scale, int layer, const std::string &p) {
    mp::AttentionT a;
    a.qkv = qkv;
    a.q_col = 0;
    a.k_col = H_ * hd_;
    a.v_col = (H_ + KV_) * hd_;
    a.out = out;
    a.cache = cache;
    a.num_heads = int(H_);
    a.num_kv_heads = int(KV_);
    a.head_dim = int(hd_);
    a.scale = scale;
    pb_->step(std::move(a), p + "attn", layer);
  }
  /// gate_proj|up_proj -> SiLU-gated -> down_proj, via `ff` (2*inter columns).
  void gatedMlp(const std::string &w, const std::string &sp, int layer, int64_t inter, int ff,
                int out, bool accumulate) {
    linear(x_, ff, W(w + "gate_proj.weight", {inter, D_}), sp + "gate_proj", layer);
    linear(x_, ff, W(w + "up_proj.weight", {inter, D_}), sp + "up_proj", layer, -1, inter);
    mp::ActivationT a;
    a.in = ff;
    a.out = ff;
    a.kind = mp::ActKind::Silu;
    a.gated = true;
    a.n = inter;
    pb_->step(std::move(a), sp + "act", layer);
    linear(ff, out, W(w + "down_proj.weight", {D_, inter}), sp + "down_proj", layer, -1, 0,
           accumulate);
  }
  void buildGpt2Rank(int r);
  void buildLlamaRank(int r);
  void moeBlock(int layer, const std::string &p, int r);

  const json &c_;
  const HFPlanOptions &o_;
  std::unique_ptr<PlanBuilder> pb_;
  std::string arch_;
  mp::DType stored_ = mp::DType::F32;
  float initStd_ = 0.02f;
  int64_t V_ = 0, D_ = 0, L_ = 0, H_ = 0, KV_ = 0, hd_ = 0, I_ = 0, maxPos_ = 0;
  float eps_ = 1e-5f, theta_ = 10000.0f;
  bool tied_ = false;
  // MoE
  int64_t E_ = 0, k_ = 0, Ie_ = 0, Is_ = 0;
  bool normTopk_ = false, qkvBias_ = false, qkNorm_ = false;
  std::vector<bool> moeLayer_;
  // Per-rank buffers
  int h_ = -1, x_ = -1, qkv_ = -1, attn_ = -1, ff_ = -1, logits_ = -1;
  int router_ = -1, se_ = -1, sw_ = -1, eo_ = -1, ss_ = -1, so_ = -1, sh_ = -1, sout_ = -1,
      sg_ = -1;
};

void Builder::buildGpt2Rank(int r) {
  pb_->setRank(r);
  int64_t inner = get<int64_t>(c_, "n_inner", 4 * D_);
  h_ = pb_->buffer("h", D_);
  x_ = pb_->buffer("x", D_);
  qkv_ = pb_->buffer("qkv", 3 * D_);
  attn_ = pb_->buffer("attn", D_);
  ff_ = pb_->buffer("ff", inner);
  logits_ = pb_->buffer("logits", V_, 0, 1);
  std::string act = get<std::string>(c_, "activation_function", "gelu_new");
  mp::ActKind kind = act == "gelu_new" || act == "gelu_pytorch_tanh" ? mp::ActKind::GeluTanh
                     : act == "gelu"                                 ? mp::ActKind::Gelu
                     : act == "relu"                                 ? mp::ActKind::Relu
                                                                     : mp::ActKind::Silu;
  bool invLayer = get<bool>(c_, "scale_attn_by_inverse_layer_idx", false);
  int wte = W("transformer.wte.weight", {V_, D_});
  int wpe = W("transformer.wpe.weight", {maxPos_, D_});
  mp::EmbeddingT e;
  e.weight = wte;
  e.out = h_;
  pb_->step(std::move(e), "wte");
  mp::PositionEmbeddingT pe;
  pe.weight = wpe;
  pe.inout = h_;
  pb_->step(std::move(pe), "wpe");
  for (int i = 0; i < L_; ++i) {
    std::string p = "transformer.h." + std::to_string(i) + ".";
    std::string sp = "layers." + std::to_string(i) + ".";
    norm(mp::NormKind::LayerNorm, h_, x_, W(p + "ln_1.weight", {D_}, mp::Init::Ones),
         W(p + "ln_1.bias", {D_}, mp::Init::Zeros), eps_, D_, sp + "ln_1", i);
    linear(x_, qkv_, W(p + "attn.c_attn.weight", {D_, 3 * D_}), sp + "attn.c_attn", i,
           W(p + "attn.c_attn.bias", {3 * D_}, mp::Init::Zeros), 0, false, true);
    int cache = pb_->kvCache(i, int(H_), int(hd_), o_.kvDtype);
    float scale = float(1.0 / std::sqrt(double(hd_)) / (invLayer ? double(i + 1) : 1.0));
    attention(qkv_, attn_, cache, scale, i, sp);
    linear(attn_, h_, W(p + "attn.c_proj.weight", {D_, D_}), sp + "attn.c_proj", i,
           W(p + "attn.c_proj.bias", {D_}, mp::Init::Zeros), 0, true, true);
    norm(mp::NormKind::LayerNorm, h_, x_, W(p + "ln_2.weight", {D_}, mp::Init::Ones),
         W(p + "ln_2.bias", {D_}, mp::Init::Zeros), eps_, D_, sp + "ln_2", i);
    linear(x_, ff_, W(p + "mlp.c_fc.weight", {D_, inner}), sp + "mlp.c_fc", i,
           W(p + "mlp.c_fc.bias", {inner}, mp::Init::Zeros), 0, false, true);
    mp::ActivationT a;
    a.in = ff_;
    a.out = ff_;
    a.kind = kind;
    a.n = inner;
    pb_->step(std::move(a), sp + "mlp.act", i);
    linear(ff_, h_, W(p + "mlp.c_proj.weight", {inner, D_}), sp + "mlp.c_proj", i,
           W(p + "mlp.c_proj.bias", {D_}, mp::Init::Zeros), 0, true, true);
  }
  norm(mp::NormKind::LayerNorm, h_, x_, W("transformer.ln_f.weight", {D_}, mp::Init::Ones),
       W("transformer.ln_f.bias", {D_}, mp::Init::Zeros), eps_, D_, "ln_f", -1);
  mp::LogitsT lg;
  lg.in = x_;
  lg.weight = wte;
  lg.out = logits_;
  pb_->step(std::move(lg), "lm_head");
}

void Builder::moeBlock(int i, const std::string &p, int r) {
  std::string sp = "layers." + std::to_string(i) + ".";
  int R = o_.numRanks;
  bool mixtral = arch_ == "mixtral";
  std::string mp_ = p + (mixtral ? "block_sparse_moe." : "mlp.");
  linear(x_, router_, W(mp_ + "gate.weight", {E_, D_}), sp + "moe.router", i);
  mp::GateT g;
  g.logits = router_;
  g.num_experts = int(E_);
  g.top_k = int(k_);
  g.norm_topk_prob = normTopk_;
  g.slot_expert = se_;
  g.slot_weight = sw_;
  g.expert_offsets = eo_;
  g.sorted_slots = ss_;
  pb_->step(std::move(g), sp + "moe.gate", i);
  mp::ExpertsT ex;
  ex.in = x_;
  ex.sorted_slots = ss_;
  ex.expert_offsets = eo_;
  ex.slot_out = so_;
  ex.top_k = int(k_);
  ex.intermediate = Ie_;
  // Stacked [E, ...] weights read from the per-expert tensors; with R ranks
  // expert e lives on rank e % R.
  std::string ep = mp_ + "experts.{e}.";
  auto stacked = [&](const std::string &pattern, std::vector<int64_t> shape) {
    int w = W(pattern, std::move(shape));
    auto src = std::make_unique<mp::WeightSourceT>();
    src->tensor = pattern;
    pb_->plan().weights[size_t(w)]->source = std::move(src);
    return w;
  };
  if (mixtral) {
    ex.gate = stacked(ep + "w1.weight", {E_, Ie_, D_});
    ex.up = stacked(ep + "w3.weight", {E_, Ie_, D_});
    ex.down = stacked(ep + "w2.weight", {E_, D_, Ie_});
  } else {
    ex.gate = stacked(ep + "gate_proj.weight", {E_, Ie_, D_});
    ex.up = stacked(ep + "up_proj.weight", {E_, Ie_, D_});
    ex.down = stacked(ep + "down_proj.weight", {E_, D_, Ie_});
  }
  for (int e = 0; e < E_; ++e) {
    if (e % R != r)
      continue;
    auto le = std::make_unique<mp::LocalExpertT>();
    le->expert = e;
    ex.experts.push_back(std::move(le));
  }
  pb_->step(std::move(ex), sp + "moe.experts", i);
  int exchange = -1;
  if (R > 1) {
    mp::CollectiveT col;
    col.kind = mp::CollectiveKind::AllReduceSum;
    col.buf = so_;
    col.level = "flat";
    exchange = pb_->step(std::move(col), sp + "moe.allreduce", i, mp::Stream::Comm);
  }
  if (Is_ > 0) { // Qwen2-MoE shared expert, gated by sigmoid(x . w)
    gatedMlp(mp_ + "shared_expert.", sp + "shared.", i, Is_, sh_, sout_, false);
    linear(x_, sg_, W(mp_ + "shared_expert_gate.weight", {1, D_}), sp + "shared.gate", i);
    mp::SigmoidGateT sgt;
    sgt.gate_logit = sg_;
    sgt.inout = sout_;
    pb_->step(std::move(sgt), sp + "shared.sigmoid", i);
    mp::AddT add;
    add.a = h_;
    add.b = sout_;
    add.out = h_;
    pb_->step(std::move(add), sp + "shared.residual", i);
  }
  mp::CombineT cb;
  cb.slot_out = so_;
  cb.slot_weight = sw_;
  cb.out = h_;
  cb.top_k = int(k_);
  cb.accumulate = true;
  int combine = pb_->step(std::move(cb), sp + "moe.combine", i);
  // The exchange runs on the communication stream: the combine reads its
  // result, so it waits for it (the shared expert above does not).
  if (exchange >= 0)
    pb_->waitFor(combine, exchange);
}

void Builder::buildLlamaRank(int r) {
  pb_->setRank(r);
  h_ = pb_->buffer("h", D_);
  x_ = pb_->buffer("x", D_);
  qkv_ = pb_->buffer("qkv", (H_ + 2 * KV_) * hd_);
  attn_ = pb_->buffer("attn", H_ * hd_);
  logits_ = pb_->buffer("logits", V_, 0, 1);
  if (I_ > 0)
    ff_ = pb_->buffer("ff", 2 * I_);
  if (E_ > 0) {
    router_ = pb_->buffer("router", E_);
    se_ = pb_->buffer("slot_expert", 1, k_, 0, mp::DType::I32);
    sw_ = pb_->buffer("slot_weight", 1, k_);
    eo_ = pb_->buffer("expert_offsets", 1, 0, E_ + 1, mp::DType::I32);
    ss_ = pb_->buffer("sorted_slots", 1, k_, 0, mp::DType::I32);
    so_ = pb_->buffer("slot_out", D_, k_);
  }
  if (Is_ > 0) {
    sh_ = pb_->buffer("shared_ff", 2 * Is_);
    sout_ = pb_->buffer("shared_out", D_);
    sg_ = pb_->buffer("shared_gate", 1);
  }
  int emb = W("model.embed_tokens.weight", {V_, D_});
  mp::EmbeddingT e;
  e.weight = emb;
  e.out = h_;
  pb_->step(std::move(e), "embed_tokens");
  for (int i = 0; i < L_; ++i) {
    std::string p = "model.layers." + std::to_string(i) + ".";
    std::string sp = "layers." + std::to_string(i) + ".";
    norm(mp::NormKind::RMSNorm, h_, x_, W(p + "input_layernorm.weight", {D_}, mp::Init::Ones), -1,
         eps_, D_, sp + "input_layernorm", i);
    std::string a = p + "self_attn.";
    auto bias = [&](const char *n, int64_t len) {
      return qkvBias_ ? W(a + n + ".bias", {len}, mp::Init::Zeros) : -1;
    };
    linear(x_, qkv_, W(a + "q_proj.weight", {H_ * hd_, D_}), sp + "attn.q_proj", i,
           bias("q_proj", H_ * hd_), 0);
    linear(x_, qkv_, W(a + "k_proj.weight", {KV_ * hd_, D_}), sp + "attn.k_proj", i,
           bias("k_proj", KV_ * hd_), H_ * hd_);
    linear(x_, qkv_, W(a + "v_proj.weight", {KV_ * hd_, D_}), sp + "attn.v_proj", i,
           bias("v_proj", KV_ * hd_), (H_ + KV_) * hd_);
    if (qkNorm_) { // Qwen3: RMSNorm per head before RoPE
      norm(mp::NormKind::RMSNorm, qkv_, qkv_, W(a + "q_norm.weight", {hd_}, mp::Init::Ones), -1,
           eps_, hd_, sp + "attn.q_norm", i, 0, H_ * hd_);
      norm(mp::NormKind::RMSNorm, qkv_, qkv_, W(a + "k_norm.weight", {hd_}, mp::Init::Ones), -1,
           eps_, hd_, sp + "attn.k_norm", i, H_ * hd_, KV_ * hd_);
    }
    rope(qkv_, 0, int(H_), sp + "attn.rope_q", i);
    rope(qkv_, H_ * hd_, int(KV_), sp + "attn.rope_k", i);
    int cache = pb_->kvCache(i, int(KV_), int(hd_), o_.kvDtype);
    attention(qkv_, attn_, cache, float(1.0 / std::sqrt(double(hd_))), i, sp + "attn.");
    linear(attn_, h_, W(a + "o_proj.weight", {D_, H_ * hd_}), sp + "attn.o_proj", i, -1, 0, true);
    norm(mp::NormKind::RMSNorm, h_, x_,
         W(p + "post_attention_layernorm.weight", {D_}, mp::Init::Ones), -1, eps_, D_,
         sp + "post_attention_layernorm", i);
    if (moeLayer_[size_t(i)]) {
      moeBlock(i, p, r);
    } else {
      gatedMlp(p + "mlp.", sp + "mlp.", i, I_, ff_, h_, true);
    }
  }
  norm(mp::NormKind::RMSNorm, h_, x_, W("model.norm.weight", {D_}, mp::Init::Ones), -1, eps_, D_,
       "norm", -1);
  mp::LogitsT lg;
  lg.in = x_;
  lg.weight = tied_ ? emb : W("lm_head.weight", {V_, D_});
  lg.out = logits_;
  pb_->step(std::move(lg), "lm_head");
}

std::vector<uint8_t> Builder::build() {
  arch_ = get<std::string>(c_, "model_type", "");
  std::string dt = c_.contains("torch_dtype") ? get<std::string>(c_, "torch_dtype", "float32")
                                               : get<std::string>(c_, "dtype", "float32");
  stored_ = dtypeOf(dt);
  initStd_ = get<float>(c_, "initializer_range", 0.02f);
  V_ = get<int64_t>(c_, "vocab_size", 0);
  if (arch_ == "gpt2") {
    D_ = get<int64_t>(c_, "n_embd", 0);
    H_ = KV_ = get<int64_t>(c_, "n_head", 0);
    L_ = get<int64_t>(c_, "n_layer", 0);
    maxPos_ = get<int64_t>(c_, "n_positions", 1024);
    eps_ = get<float>(c_, "layer_norm_epsilon", 1e-5f);
    tied_ = true;
  } else if (arch_ == "mixtral" || arch_ == "qwen2_moe" || arch_ == "qwen3_moe") {
    D_ = get<int64_t>(c_, "hidden_size", 0);
    H_ = get<int64_t>(c_, "num_attention_heads", 0);
    KV_ = get<int64_t>(c_, "num_key_value_heads", H_);
    L_ = get<int64_t>(c_, "num_hidden_layers", 0);
    maxPos_ = get<int64_t>(c_, "max_position_embeddings", 4096);
    eps_ = get<float>(c_, "rms_norm_eps", 1e-6f);
    tied_ = get<bool>(c_, "tie_word_embeddings", false);
    I_ = get<int64_t>(c_, "intermediate_size", 0);
    theta_ = get<float>(c_, "rope_theta", 10000.0f);
    if (c_.contains("rope_parameters") && c_["rope_parameters"].is_object())
      theta_ = get<float>(c_["rope_parameters"], "rope_theta", theta_);
    hd_ = get<int64_t>(c_, "head_dim", 0);
    k_ = get<int64_t>(c_, "num_experts_per_tok", 0);
    if (arch_ == "mixtral") {
      E_ = get<int64_t>(c_, "num_local_experts", 0);
      Ie_ = I_;
      I_ = 0;
      normTopk_ = true;
      moeLayer_.assign(size_t(L_), true);
    } else {
      E_ = get<int64_t>(c_, "num_experts", 0);
      Ie_ = get<int64_t>(c_, "moe_intermediate_size", 0);
      normTopk_ = get<bool>(c_, "norm_topk_prob", false);
      int64_t step = get<int64_t>(c_, "decoder_sparse_step", 1);
      std::vector<int64_t> only = get<std::vector<int64_t>>(c_, "mlp_only_layers", {});
      for (int64_t i = 0; i < L_; ++i)
        moeLayer_.push_back(E_ > 0 && std::find(only.begin(), only.end(), i) == only.end() &&
                            (i + 1) % step == 0);
      if (arch_ == "qwen2_moe") {
        Is_ = get<int64_t>(c_, "shared_expert_intermediate_size", 0);
        qkvBias_ = get<bool>(c_, "qkv_bias", true);
      } else {
        qkNorm_ = true;
        qkvBias_ = get<bool>(c_, "attention_bias", false);
      }
    }
  } else {
    fail("unsupported model_type '{}'", arch_);
  }
  if (hd_ <= 0)
    hd_ = D_ / H_;
  int64_t seq = o_.maxSeqLen > 0 ? o_.maxSeqLen : std::min<int64_t>(maxPos_, 4096);
  pb_ = std::make_unique<PlanBuilder>(arch_, V_, D_, int(L_), maxPos_, o_.maxTokens, seq,
                                      o_.numRanks);
  mp::PlanT &plan = pb_->plan();
  plan.compute_dtype = o_.computeDtype;
  plan.checkpoint = o_.checkpoint;
  plan.max_batch = o_.maxBatch;
  if (o_.kvPageSize > 0) {
    plan.kv_page_size = o_.kvPageSize;
    plan.kv_pages = o_.kvPages > 0 ? o_.kvPages
                                   : o_.maxBatch * ((seq + o_.kvPageSize - 1) / o_.kvPageSize);
  }
  plan.model->bos_token_id = get<int64_t>(c_, "bos_token_id", -1);
  if (c_.contains("eos_token_id")) {
    const json &e = c_["eos_token_id"];
    if (e.is_number_integer())
      plan.model->eos_token_ids.push_back(e.get<int64_t>());
    else if (e.is_array())
      for (auto &v : e)
        plan.model->eos_token_ids.push_back(v.get<int64_t>());
  }
  for (int r = 0; r < o_.numRanks; ++r) {
    if (arch_ == "gpt2")
      buildGpt2Rank(r);
    else
      buildLlamaRank(r);
  }
  for (int r = 0; r < o_.numRanks; ++r)
    pb_->plan().ranks[size_t(r)]->node = 0;
  return pb_->finish();
}

} // namespace

std::vector<uint8_t> buildHFPlan(const std::string &path, const HFPlanOptions &opts) {
  std::string cfgPath = moert::isDirectory(path) ? path + "/config.json" : path;
  std::ifstream in(cfgPath);
  if (!in)
    fail("{}: cannot open config", cfgPath);
  json cfg;
  try {
    cfg = json::parse(in);
  } catch (const json::exception &e) {
    fail("{}: not valid JSON", cfgPath);
  }
  HFPlanOptions o = opts;
  if (o.checkpoint.empty() && moert::isDirectory(path)) {
    char *abs = ::realpath(path.c_str(), nullptr);
    o.checkpoint = abs ? abs : path;
    std::free(abs);
  }
  return Builder(cfg, o).build();
}

} // namespace moetest
