//===- Description.cpp - model descriptions -> moe IR ---------------------===//
//
// Model descriptions carry the knobs of the seed papers (Megatron /
// DeepSpeed-MoE argument names). They have no checkpoint, so their
// parameter names are ours (docs/compiler.md lists them):
//
//   embed_tokens.weight, embed_positions.weight, final_norm.{weight,bias},
//   lm_head.weight, and per layer i, under layers.{i}.:
//   attn_norm.*, attn.{q,k,v,o}.*, mlp_norm.*, mlp.{gate,up,down}.*,
//   moe.router.weight, moe.experts.{e}.{gate,up,down}.*,
//   moe.shared.{gate,up,down}.weight, moe.shared_gate.weight,
//   moe.coef.{weight,bias}.
//
// Megatron-style models (norm = layernorm) have biases on every linear
// layer and norm, as GPT does; rmsnorm models (T5/Switch, Llama-style) have
// none. Layer i (0-based) is an MoE layer iff (i + 1) % expert_interval == 0.
//
//===----------------------------------------------------------------------===//

#include "Importers.h"
#include "JsonReader.h"
#include "ModelBuilder.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/ADT/StringSwitch.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/Path.h"

#include <cmath>

using namespace mlir;
using namespace mlir::moe;
using namespace mlir::moe::detail;
using llvm::StringRef;

static std::string descriptionName(StringRef role, int64_t layer,
                                   int64_t expert) {
  if (layer < 0) {
    if (role == "embed")
      return "embed_tokens.weight";
    if (role == "pos_embed")
      return "embed_positions.weight";
    if (role == "lm_head")
      return "lm_head.weight";
    return role.str(); // final_norm.*
  }
  std::string prefix = llvm::formatv("layers.{0}.", layer).str();
  if (role.consume_front("expert."))
    return prefix +
           llvm::formatv("moe.experts.{0}.{1}", expertToken(expert), role).str();
  if (role == "router")
    return prefix + "moe.router.weight";
  if (role == "shared_gate")
    return prefix + "moe.shared_gate.weight";
  if (role.starts_with("shared.") || role.starts_with("coef."))
    return prefix + "moe." + role.str();
  if (role.starts_with("q.") || role.starts_with("k.") ||
      role.starts_with("v.") || role.starts_with("o."))
    return prefix + "attn." + role.str();
  return prefix + role.str(); // attn_norm.*, mlp_norm.*, mlp.*
}

llvm::Expected<OwningOpRef<ModuleOp>>
mlir::moe::detail::importDescription(StringRef path,
                                     const llvm::json::Object &root,
                                     MLIRContext &context,
                                     const ImportOptions &options) {
  ErrorSink errors;
  JsonReader r(root, path, errors);
  r.rejectUnknownKeys({"name", "description", "num_layers", "hidden_size",
                       "num_attention_heads", "num_kv_heads", "ffn_hidden_size",
                       "vocab_size", "max_position_embeddings", "activation",
                       "norm", "position", "tie_word_embeddings", "rope_theta",
                       "norm_eps", "moe"});
  if (errors.failed())
    return errors.take();

  DecoderConfig cfg;
  cfg.architecture = "description";
  cfg.configFile = path.str();
  cfg.name = r.getString("name", llvm::sys::path::stem(path).str());
  (void)r.getString("description", std::string());
  int64_t numLayers = r.getInt("num_layers", std::nullopt, 1);
  cfg.hiddenSize = r.getInt("hidden_size", std::nullopt, 1);
  cfg.numHeads = r.getInt("num_attention_heads", std::nullopt, 1);
  cfg.numKvHeads = r.getInt("num_kv_heads", cfg.numHeads, 1);
  int64_t ffnSize = r.getInt("ffn_hidden_size", 4 * cfg.hiddenSize, 1);
  cfg.vocabSize = r.getInt("vocab_size", std::nullopt, 1);
  cfg.maxPositions = r.getInt("max_position_embeddings", std::nullopt, 1);
  std::string activation = r.getChoice(
      "activation", {"gelu", "gelu_tanh", "relu", "silu", "swiglu", "geglu"},
      "gelu");
  std::string norm = r.getChoice("norm", {"layernorm", "rmsnorm"}, "layernorm");
  std::string position = r.getChoice("position", {"learned", "rope"}, "learned");
  cfg.tied = r.getBool("tie_word_embeddings", true);
  cfg.ropeTheta = r.getPositive("rope_theta", 10000.0);
  cfg.normEps = r.getPositive("norm_eps", 1e-5);
  if (errors.failed())
    return errors.take();

  if (cfg.hiddenSize % cfg.numHeads != 0)
    r.error(llvm::formatv("hidden_size {0} is not a multiple of "
                          "num_attention_heads {1} (expected head_dim = "
                          "hidden_size / num_attention_heads)",
                          cfg.hiddenSize, cfg.numHeads));
  else if (cfg.numHeads % cfg.numKvHeads != 0)
    r.error(llvm::formatv("num_attention_heads {0} is not a multiple of "
                          "num_kv_heads {1} (expected whole query-head groups)",
                          cfg.numHeads, cfg.numKvHeads));
  cfg.headDim = cfg.hiddenSize / cfg.numHeads;
  if (position == "rope" && cfg.headDim % 2 != 0)
    r.error(llvm::formatv("head_dim {0} is odd (expected an even head_dim "
                          "for position = rope)",
                          cfg.headDim));
  if (position != "rope" && r.has("rope_theta"))
    r.error("rope_theta is set but position is '" + position +
            "' (expected position = rope)");

  cfg.learnedPositions = position == "learned";
  cfg.rope = position == "rope";
  cfg.rotaryDim = cfg.headDim;
  cfg.norm = norm == "layernorm" ? NormKind::LayerNorm : NormKind::RMSNorm;
  bool biases = cfg.norm == NormKind::LayerNorm;
  cfg.normBias = cfg.qkvBias = cfg.outBias = cfg.mlpBias = cfg.expertBias =
      biases;
  cfg.gated = activation == "swiglu" || activation == "geglu";
  cfg.activation = llvm::StringSwitch<Activation>(activation)
                       .Cases({"gelu", "geglu"}, Activation::Gelu)
                       .Case("gelu_tanh", Activation::GeluTanh)
                       .Case("relu", Activation::Relu)
                       .Default(Activation::Silu);
  cfg.expertSize = ffnSize;

  double scale = 1.0 / std::sqrt(double(cfg.headDim));
  cfg.layers.assign(numLayers, LayerConfig{false, ffnSize, 0, 0, scale});

  if (const llvm::json::Object *moe = r.getObject("moe")) {
    JsonReader m(*moe, path, errors, "moe.");
    m.rejectUnknownKeys({"num_experts", "expert_interval", "top_k",
                         "capacity_factor", "eval_capacity_factor",
                         "min_capacity", "drop_tokens", "use_residual",
                         "shared_expert_size", "norm_topk_prob"});
    if (errors.failed())
      return errors.take();
    // DeepSpeed-MoE / Megatron-DeepSpeed defaults.
    int64_t interval = m.getInt("expert_interval", 2, 1);
    cfg.topK = m.getInt("top_k", 1, 1);
    double capacityFactor = m.getPositive("capacity_factor", 1.0);
    // Inference runs with the eval capacity factor.
    cfg.capacityFactor = m.getPositive("eval_capacity_factor", capacityFactor);
    cfg.minCapacity = m.getInt("min_capacity", 4, 0);
    cfg.dropTokens = m.getBool("drop_tokens", true);
    cfg.residualMoE = m.getBool("use_residual", false);
    cfg.sharedExpertSize = m.getInt("shared_expert_size", 0, 0);
    cfg.sharedExpertGate = true;
    cfg.normTopkProb = m.getBool("norm_topk_prob", false);

    std::vector<int64_t> moeLayers;
    for (int64_t i = 0; i < numLayers; ++i)
      if ((i + 1) % interval == 0)
        moeLayers.push_back(i);
    if (!errors.failed() && moeLayers.empty())
      m.error(llvm::formatv("moe.expert_interval {0} leaves no MoE layer among "
                            "{1} layers (expected expert_interval <= "
                            "num_layers)",
                            interval, numLayers));

    std::vector<int64_t> experts;
    if (!m.has("num_experts")) {
      m.error("missing field 'moe.num_experts' (expected a number of experts "
              ">= 1, or a list with one per MoE layer)");
    } else if (moe->get("num_experts")->getAsArray()) {
      experts = m.getIntList("num_experts", 1);
      if (!errors.failed() && experts.size() != moeLayers.size())
        m.error(llvm::formatv(
            "moe.num_experts lists {0} entries (expected one per MoE layer: "
            "{1} with num_layers {2} and expert_interval {3})",
            experts.size(), moeLayers.size(), numLayers, interval));
    } else {
      experts.assign(moeLayers.size(), m.getInt("num_experts", std::nullopt, 1));
    }
    if (errors.failed())
      return errors.take();
    for (auto [idx, layerIdx] : llvm::enumerate(moeLayers)) {
      if (cfg.topK > experts[idx]) {
        m.error(llvm::formatv("moe.top_k = {0} exceeds moe.num_experts = {1} "
                              "of layer {2} (expected top_k <= num_experts)",
                              cfg.topK, experts[idx], layerIdx));
        break;
      }
      cfg.layers[layerIdx].moe = true;
      cfg.layers[layerIdx].numExperts = experts[idx];
    }
  }
  if (errors.failed())
    return errors.take();

  ParamSource source;
  switch (options.descriptionDType) {
  case ComputeDType::F32:
    source.elementType = Float32Type::get(&context);
    break;
  case ComputeDType::BF16:
    source.elementType = BFloat16Type::get(&context);
    break;
  case ComputeDType::F16:
    source.elementType = Float16Type::get(&context);
    break;
  }
  source.describedBy = path.str();
  return buildModel(context, cfg, descriptionName, source);
}
