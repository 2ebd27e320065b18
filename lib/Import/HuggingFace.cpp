//===- HuggingFace.cpp - Hugging Face checkpoints -> moe IR ---------------===//
//
// Reads config.json the way transformers' modeling code interprets it and
// maps each architecture's tensor names onto the builder's roles:
//
//   gpt2        Conv1D weights ([in, out]), fused c_attn, LayerNorm, learned
//               positions, tied head; gelu_new = tanh GELU; attention scale
//               1/sqrt(head_dim) (scale_attn_weights), also 1/(i+1)
//               (scale_attn_by_inverse_layer_idx).
//   mixtral     RMSNorm, NeoX RoPE, GQA, block_sparse_moe.gate router,
//               experts w1 (gate) / w3 (up) / w2 (down), softmax -> top-k ->
//               renormalize.
//   qwen2_moe   q/k/v bias, mlp.gate router, experts + shared_expert scaled by
//               sigmoid(shared_expert_gate), norm_topk_prob from the config,
//               sparse layers from decoder_sparse_step / mlp_only_layers.
//   qwen3_moe   like qwen2_moe without shared expert and qkv bias, per-head
//               q_norm / k_norm before RoPE, head_dim from the config.
//   olmoe       q_norm / k_norm over the whole q and k projections.
//   llama, mistral, qwen2, qwen3   the dense members of the same family.
//   gpt_oss     q/k/v/o biases, learned attention sinks, sliding and full
//               layers by layer_types, YaRN; mlp.router with bias, top-k of
//               the logits then softmax over the k; experts fused as
//               gate_up_proj [E, H, 2I] (gate/up columns interleaved) +
//               down_proj [E, I, H] with biases, clamped SwiGLU.
//   deepseek_v3 multi-head latent attention (q_a/q_b or q_proj, kv_a with
//               the shared rope key, kv_b), interleaved or NeoX RoPE with
//               YaRN and its softmax mscale; sigmoid router with the
//               selection-only e_score_correction_bias, group-limited top-k,
//               routed_scaling_factor; shared_experts; dense first layers.
//
//===----------------------------------------------------------------------===//

#include "Importers.h"
#include "JsonReader.h"
#include "ModelBuilder.h"
#include "RopeScaling.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/ADT/StringSwitch.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/Path.h"

#include <cmath>

using namespace mlir;
using namespace mlir::moe;
using namespace mlir::moe::detail;
using llvm::StringRef;

namespace {

std::string layerPrefix(int64_t layer) {
  return llvm::formatv("model.layers.{0}.", layer).str();
}

/// Llama-family names; `moeStyle` picks the expert naming (gpt-oss names
/// its experts like Qwen, fused, and its router mlp.router).
enum class MoEStyle { Mixtral, Qwen, GptOss, DeepSeek };

std::string llamaName(MoEStyle style, StringRef role, int64_t layer,
                      int64_t expert) {
  if (layer < 0) {
    if (role == "embed")
      return "model.embed_tokens.weight";
    if (role == "lm_head")
      return "lm_head.weight";
    if (role == "final_norm.weight")
      return "model.norm.weight";
    return "model." + role.str();
  }
  std::string p = layerPrefix(layer);
  if (role == "attn_norm.weight")
    return p + "input_layernorm.weight";
  if (role == "mlp_norm.weight")
    return p + "post_attention_layernorm.weight";
  if (role == "q_norm.weight" || role == "k_norm.weight")
    return p + "self_attn." + role.str();
  if (role == "sinks")
    return p + "self_attn.sinks";
  if (style == MoEStyle::GptOss && role == "router")
    return p + "mlp.router.weight";
  if (style == MoEStyle::GptOss && role == "router_bias")
    return p + "mlp.router.bias";
  if (style == MoEStyle::DeepSeek) {
    // DeepseekV3Attention's projections and norms.
    static constexpr std::pair<StringRef, StringRef> mla[] = {
        {"q_a.", "q_a_proj."},
        {"q_b.", "q_b_proj."},
        {"kv_a.", "kv_a_proj_with_mqa."},
        {"kv_b.", "kv_b_proj."},
        {"q_a_norm.", "q_a_layernorm."},
        {"kv_a_norm.", "kv_a_layernorm."}};
    for (auto [from, to] : mla) {
      StringRef rest = role;
      if (rest.consume_front(from))
        return p + "self_attn." + to.str() + rest.str();
    }
    if (role == "router_selection_bias")
      return p + "mlp.gate.e_score_correction_bias";
    StringRef rest = role;
    if (rest.consume_front("shared.")) {
      auto [which, kind] = rest.split('.');
      return p + "mlp.shared_experts." + which.str() + "_proj." + kind.str();
    }
  }
  for (StringRef proj : {"q", "k", "v", "o"}) {
    StringRef rest = role;
    if (rest.consume_front(proj) && rest.consume_front("."))
      return p + "self_attn." + proj.str() + "_proj." + rest.str();
  }
  StringRef rest = role;
  if (rest.consume_front("mlp.")) { // mlp.{gate,up,down}.{weight,bias}
    auto [which, kind] = rest.split('.');
    return p + "mlp." + which.str() + "_proj." + kind.str();
  }
  if (style == MoEStyle::Mixtral) {
    if (role == "router")
      return p + "block_sparse_moe.gate.weight";
    StringRef w = llvm::StringSwitch<StringRef>(role)
                      .Case("expert.gate.weight", "w1")
                      .Case("expert.up.weight", "w3")
                      .Case("expert.down.weight", "w2")
                      .Default("");
    if (!w.empty())
      return p + llvm::formatv("block_sparse_moe.experts.{0}.{1}.weight",
                               expertToken(expert), w)
                     .str();
  } else {
    if (role == "router")
      return p + "mlp.gate.weight";
    if (role == "shared_gate")
      return p + "mlp.shared_expert_gate.weight";
    rest = role;
    if (rest.consume_front("expert.")) {
      auto [which, kind] = rest.split('.');
      return p + llvm::formatv("mlp.experts.{0}.{1}_proj.{2}",
                               expertToken(expert), which, kind)
                     .str();
    }
    rest = role;
    if (rest.consume_front("shared.")) {
      auto [which, kind] = rest.split('.');
      return p + "mlp.shared_expert." + which.str() + "_proj." + kind.str();
    }
  }
  return p + role.str();
}

/// Reads the hidden activation of a gated (SwiGLU-style) MLP.
Activation readHiddenAct(JsonReader &r, StringRef key, StringRef def) {
  std::string act = r.getChoice(
      key, {"silu", "swish", "gelu", "gelu_pytorch_tanh", "gelu_new", "relu"},
      def.str());
  return llvm::StringSwitch<Activation>(act)
      .Cases({"silu", "swish"}, Activation::Silu)
      .Case("gelu", Activation::Gelu)
      .Cases({"gelu_pytorch_tanh", "gelu_new"}, Activation::GeluTanh)
      .Default(Activation::Relu);
}

/// Token ids: an integer, a list of integers, or null.
std::vector<int64_t> readTokenIds(JsonReader &r, const llvm::json::Object &o,
                                  StringRef key) {
  const llvm::json::Value *v = o.get(key);
  if (!v || v->kind() == llvm::json::Value::Null)
    return {};
  if (v->getAsArray())
    return r.getIntList(key, 0);
  if (std::optional<int64_t> id = r.getOptInt(key, 0))
    return {*id};
  return {};
}

/// The scaling keys of a rope type, read from `s` (rope_parameters or
/// rope_scaling); the rope types whose frequencies depend on the sequence
/// length beyond what a plan can hold are refused.
RopeScalingParams readRopeScaling(JsonReader &s, const std::string &type,
                                  int64_t maxPositions) {
  RopeScalingParams p;
  p.type = type;
  if (type == "linear" || type == "llama3" || type == "yarn")
    p.factor = s.getPositive("factor", std::nullopt);
  if (type == "llama3") {
    p.lowFreqFactor = s.getPositive("low_freq_factor", std::nullopt);
    p.highFreqFactor = s.getPositive("high_freq_factor", std::nullopt);
    p.originalMaxPositions =
        s.getInt("original_max_position_embeddings", std::nullopt, 1);
    if (!s.failed() && p.highFreqFactor == p.lowFreqFactor)
      s.badValue("high_freq_factor", "a value different from low_freq_factor");
  }
  if (type == "yarn") {
    if (s.has("attention_factor"))
      p.attentionFactor = s.getPositive("attention_factor", std::nullopt);
    // Python's `x or default`: absent, null or 0 take the default.
    p.mscale = s.getPositive("mscale", 0.0, /*allowZero=*/true);
    p.mscaleAllDim = s.getPositive("mscale_all_dim", 0.0, /*allowZero=*/true);
    p.betaFast = s.getPositive("beta_fast", 32.0, /*allowZero=*/true);
    p.betaSlow = s.getPositive("beta_slow", 1.0, /*allowZero=*/true);
    if (p.betaFast == 0.0)
      p.betaFast = 32.0;
    if (p.betaSlow == 0.0)
      p.betaSlow = 1.0;
    p.truncate = s.getBool("truncate", true);
    p.originalMaxPositions =
        s.getOptInt("original_max_position_embeddings", 1).value_or(0);
    if (p.originalMaxPositions == 0)
      p.originalMaxPositions = maxPositions;
  }
  return p;
}

/// RoPE from `rope_parameters` (transformers 5) or top-level `rope_theta` +
/// `rope_scaling` (classic). Scaled types (linear, llama3, yarn) become the
/// rotary op's inv_freq and attention_factor; "dynamic" is plain RoPE within
/// max_position_embeddings, which bounds every plan's KV cache.
void readRope(JsonReader &r, const llvm::json::Object &root, ErrorSink &errors,
              StringRef file, double defaultTheta, DecoderConfig &cfg) {
  cfg.rope = true;
  double partial = r.getPositive("partial_rotary_factor", 1.0);
  std::string ropeType = "default";
  std::optional<JsonReader> scaling;
  if (const llvm::json::Object *params = r.getObject("rope_parameters")) {
    scaling.emplace(*params, file, errors, "rope_parameters.");
    cfg.ropeTheta = scaling->getPositive("rope_theta", defaultTheta);
    ropeType = scaling->getString("rope_type", std::string("default"));
    partial = scaling->getPositive("partial_rotary_factor", partial);
  } else {
    cfg.ropeTheta = r.getPositive("rope_theta", defaultTheta);
    if (const llvm::json::Object *s = r.getObject("rope_scaling")) {
      scaling.emplace(*s, file, errors, "rope_scaling.");
      ropeType = scaling->getString(
          scaling->has("rope_type") ? "rope_type" : "type",
          std::string("default"));
    }
  }
  if (errors.failed())
    return;
  if (!llvm::is_contained({"default", "dynamic", "linear", "llama3", "yarn"},
                          ropeType)) {
    r.error("rope_type '" + ropeType +
            "' is not supported (expected default, dynamic, linear, llama3 "
            "or yarn)");
    return;
  }
  if (partial > 1.0) {
    r.badValue("partial_rotary_factor", "a number in (0, 1]");
    return;
  }
  cfg.rotaryDim = int64_t(std::llround(double(cfg.headDim) * partial));
  if (cfg.rotaryDim < 2 || cfg.rotaryDim % 2 != 0) {
    r.error(llvm::formatv("rotary dimension {0} (head_dim {1} x "
                          "partial_rotary_factor {2}) is not even and >= 2 "
                          "(expected an even number of rotated dims)",
                          cfg.rotaryDim, cfg.headDim, partial));
    return;
  }
  if (ropeType == "default" || ropeType == "dynamic")
    return;
  RopeScalingParams p = readRopeScaling(*scaling, ropeType, cfg.maxPositions);
  if (errors.failed())
    return;
  RopeFrequencies f = computeRopeFrequencies(p, cfg.ropeTheta, cfg.rotaryDim);
  cfg.ropeInvFreq = std::move(f.invFreq);
  cfg.ropeAttentionFactor = f.attentionFactor;
}

/// The Llama family: attention, norms, rope, dense or MoE layers.
llvm::Expected<OwningOpRef<ModuleOp>>
importLlamaFamily(StringRef arch, StringRef file, const llvm::json::Object &root,
                  JsonReader &r, ErrorSink &errors, DecoderConfig &cfg,
                  ParamSource &source, MLIRContext &context) {
  bool mixtral = arch == "mixtral";
  bool qwen2 = arch == "qwen2" || arch == "qwen2_moe";
  bool qwen3 = arch == "qwen3" || arch == "qwen3_moe";
  bool olmoe = arch == "olmoe";
  bool gptOss = arch == "gpt_oss";
  bool isMoE =
      mixtral || olmoe || gptOss || arch == "qwen2_moe" || arch == "qwen3_moe";

  cfg.hiddenSize = r.getInt("hidden_size", std::nullopt, 1);
  int64_t numLayers = r.getInt("num_hidden_layers", std::nullopt, 1);
  cfg.numHeads = r.getInt("num_attention_heads", std::nullopt, 1);
  cfg.numKvHeads = r.getInt("num_key_value_heads", cfg.numHeads, 1);
  cfg.vocabSize = r.getInt("vocab_size", std::nullopt, 1);
  cfg.maxPositions = r.getInt("max_position_embeddings", std::nullopt, 1);
  // GptOssConfig's defaults differ from Llama's where they matter here.
  cfg.normEps = r.getPositive("rms_norm_eps", gptOss ? 1e-5 : 1e-6);
  cfg.tied = r.getBool("tie_word_embeddings", false);
  cfg.activation = readHiddenAct(r, "hidden_act", "silu");
  cfg.initStd = r.getPositive("initializer_range", 0.02);
  if (errors.failed())
    return errors.take();
  if (r.has("head_dim") || gptOss) {
    // gpt-oss's head_dim (64) is not hidden_size / heads (2880 / 64).
    cfg.headDim =
        r.getInt("head_dim", gptOss ? 64 : std::optional<int64_t>(), 1);
  } else if (cfg.hiddenSize % cfg.numHeads != 0) {
    r.error(llvm::formatv("hidden_size {0} is not a multiple of "
                          "num_attention_heads {1} (expected it to be, or an "
                          "explicit head_dim)",
                          cfg.hiddenSize, cfg.numHeads));
  } else {
    cfg.headDim = cfg.hiddenSize / cfg.numHeads;
  }
  if (cfg.numHeads % cfg.numKvHeads != 0)
    r.error(llvm::formatv("num_attention_heads {0} is not a multiple of "
                          "num_key_value_heads {1} (expected whole query-head "
                          "groups per KV head)",
                          cfg.numHeads, cfg.numKvHeads));
  readRope(r, root, errors, file,
           mixtral  ? 1e6
           : gptOss ? 150000.0
                    : 10000.0,
           cfg);
  if (errors.failed())
    return errors.take();

  cfg.norm = NormKind::RMSNorm;
  cfg.gated = true;
  if (qwen2)
    cfg.qkvBias = r.getBool("qkv_bias", true);
  else
    cfg.qkvBias = cfg.outBias = r.getBool("attention_bias", false);
  if (arch == "llama")
    cfg.mlpBias = r.getBool("mlp_bias", false);
  if (qwen3)
    cfg.qkNorm = QKNorm::PerHead;
  if (gptOss) {
    // GptOssAttention: biased projections and a learned sink per head.
    cfg.qkvBias = cfg.outBias = r.getBool("attention_bias", true);
    cfg.attentionSinks = true;
  }
  if (olmoe) {
    cfg.qkNorm = QKNorm::Full;
    if (r.has("clip_qkv"))
      r.badValue("clip_qkv", "null: clipping q/k/v is not supported");
  }

  // Sliding-window attention per layer.
  std::vector<int64_t> window(numLayers, 0);
  if (arch == "mistral" || mixtral) {
    if (std::optional<int64_t> w = r.getOptInt("sliding_window", 1))
      window.assign(numLayers, *w);
  } else if (qwen2 || qwen3 || gptOss) {
    const llvm::json::Array *types =
        r.has("layer_types") ? root.getArray("layer_types") : nullptr;
    // GptOssConfig's default: sliding layers alternate with full ones,
    // starting with a sliding one, with a window of 128.
    llvm::json::Array gptOssTypes;
    if (gptOss && !r.has("layer_types")) {
      for (int64_t i = 0; i < numLayers; ++i)
        gptOssTypes.push_back((i + 1) % 2 ? "sliding_attention"
                                          : "full_attention");
      types = &gptOssTypes;
    }
    if (r.has("layer_types") && !types)
      r.badValue("layer_types", "a list of full_attention / sliding_attention");
    std::optional<int64_t> w = r.getOptInt("sliding_window", 1);
    if (gptOss && !r.has("sliding_window"))
      w = 128;
    if (types) {
      if (int64_t(types->size()) != numLayers)
        r.badValue("layer_types", "one entry per layer");
      for (auto [i, t] : llvm::enumerate(*types)) {
        std::optional<StringRef> s = t.getAsString();
        if (!s || (*s != "full_attention" && *s != "sliding_attention")) {
          r.badValue("layer_types",
                     "a list of full_attention / sliding_attention");
          break;
        }
        if (*s == "sliding_attention") {
          if (!w) {
            r.error("layer_types has sliding_attention layers but "
                    "sliding_window is not set (expected a window size)");
            break;
          }
          if (int64_t(i) < numLayers)
            window[i] = *w;
        }
      }
    } else if (r.getBool("use_sliding_window", false)) {
      if (!w) {
        r.error("use_sliding_window is true but sliding_window is not set "
                "(expected a window size)");
      } else {
        int64_t from = r.getInt("max_window_layers", numLayers, 0);
        for (int64_t i = from; i < numLayers; ++i)
          window[i] = *w;
      }
    }
  }

  // Dense and sparse layers.
  int64_t intermediate =
      olmoe ? 0 : r.getInt("intermediate_size", std::nullopt, 1);
  std::vector<bool> sparse(numLayers, false);
  int64_t numExperts = 0;
  if (isMoE) {
    StringRef expertsKey =
        mixtral || gptOss ? "num_local_experts" : "num_experts";
    numExperts = r.getInt(expertsKey, std::nullopt, 1);
    cfg.topK = r.getInt("num_experts_per_tok", std::nullopt, 1);
    if (!errors.failed() && cfg.topK > numExperts)
      r.error(llvm::formatv("num_experts_per_tok = {0} exceeds {1} = {2} "
                            "(expected top_k <= number of experts)",
                            cfg.topK, expertsKey, numExperts));
    cfg.normTopkProb =
        mixtral || (!gptOss && r.getBool("norm_topk_prob", false));
    if (gptOss) {
      // GptOssTopKRouter: linear with bias, top-k of the logits, softmax over
      // the k. GptOssExperts: biased, clamped SwiGLU with alpha = 1.702
      // (a constant of the module, not of the config).
      cfg.routerBias = true;
      cfg.scoreAfterTopk = true;
      cfg.expertBias = true;
      cfg.activation = Activation::SwigluOai;
      cfg.swigluLimit = float(r.getPositive("swiglu_limit", 7.0));
      cfg.swigluAlpha = 1.702f;
    }
    if (mixtral || olmoe || gptOss) {
      cfg.expertSize = r.getInt("intermediate_size", std::nullopt, 1);
      sparse.assign(numLayers, true);
    } else {
      cfg.expertSize = r.getInt("moe_intermediate_size", std::nullopt, 1);
      int64_t step = r.getInt("decoder_sparse_step", 1, 1);
      std::vector<int64_t> mlpOnly = r.getIntList("mlp_only_layers", 0);
      for (int64_t i = 0; i < numLayers; ++i)
        sparse[i] = !llvm::is_contained(mlpOnly, i) && (i + 1) % step == 0;
      if (arch == "qwen2_moe") {
        cfg.sharedExpertSize =
            r.getInt("shared_expert_intermediate_size", std::nullopt, 0);
        cfg.sharedExpertGate = true;
      }
    }
  }
  if (errors.failed())
    return errors.take();

  double scale = 1.0 / std::sqrt(double(cfg.headDim));
  for (int64_t i = 0; i < numLayers; ++i)
    cfg.layers.push_back(
        LayerConfig{sparse[i], intermediate, numExperts, window[i], scale});

  MoEStyle style = mixtral  ? MoEStyle::Mixtral
                   : gptOss ? MoEStyle::GptOss
                            : MoEStyle::Qwen;
  auto names = [style](StringRef role, int64_t layer, int64_t expert) {
    return llamaName(style, role, layer, expert);
  };
  source.ignorable = [tied = cfg.tied](StringRef name) {
    return name.ends_with(".rotary_emb.inv_freq") ||
           (tied && name == "lm_head.weight");
  };
  return buildModel(context, cfg, names, source);
}

/// quantization_config (HF integrations/finegrained_fp8.py's
/// FineGrainedFP8Config): FP8 e4m3 weights with block scales are kept as
/// stored. Activations are not quantized here (HF's GPU path quantizes them
/// per block when activation_scheme is "dynamic"; the reference is its
/// dequantized weights with unquantized activations).
static void readQuantization(JsonReader &r, ErrorSink &errors,
                             ParamSource &source) {
  const llvm::json::Object *q = r.getObject("quantization_config");
  if (!q)
    return;
  JsonReader c(*q, r.getFile(), errors, "quantization_config.");
  std::string method =
      c.getChoice("quant_method", {"fp8", "mxfp4"}, std::nullopt);
  source.quantField = r.getFile() + ": quantization_config";
  if (method == "mxfp4") {
    // HF integrations/mxfp4.py (Mxfp4Config): the experts' gate_up_proj and
    // down_proj are stored as `_blocks` + `_scales`; modules_to_not_convert
    // names what stays unquantized, which the tensors' dtypes show too.
    source.mxfp4 = true;
    return;
  }
  c.getChoice("fmt", {"e4m3"}, std::string("e4m3"));
  c.getChoice("activation_scheme", {"dynamic"}, std::string("dynamic"));
  std::vector<int64_t> block = c.getIntList("weight_block_size", 1);
  if (!c.has("weight_block_size"))
    block = {128, 128}; // FineGrainedFP8Config's default
  if (block.size() != 2) {
    c.error(llvm::formatv("field '{0}' has {1} sizes (expected [rows, "
                          "columns])",
                          c.fieldName("weight_block_size"), block.size()));
    return;
  }
  source.fp8 = method == "fp8";
  source.blockRows = block[0];
  source.blockCols = block[1];
}

/// DeepSeek-V3 (HF DeepseekV3Config / modeling_deepseek_v3.py).
llvm::Expected<OwningOpRef<ModuleOp>>
importDeepseekV3(StringRef file, const llvm::json::Object &root, JsonReader &r,
                 ErrorSink &errors, DecoderConfig &cfg, ParamSource &source,
                 MLIRContext &context) {
  cfg.hiddenSize = r.getInt("hidden_size", std::nullopt, 1);
  int64_t numLayers = r.getInt("num_hidden_layers", std::nullopt, 1);
  cfg.numHeads = r.getInt("num_attention_heads", std::nullopt, 1);
  cfg.vocabSize = r.getInt("vocab_size", std::nullopt, 1);
  cfg.maxPositions = r.getInt("max_position_embeddings", std::nullopt, 1);
  cfg.normEps = r.getPositive("rms_norm_eps", 1e-6);
  cfg.tied = r.getBool("tie_word_embeddings", false);
  cfg.activation = readHiddenAct(r, "hidden_act", "silu");
  cfg.initStd = r.getPositive("initializer_range", 0.02);
  // MLA: every head has its own keys and values (num_key_value_heads is
  // not used by DeepseekV3Attention). Absent keys take DeepseekV3Config's
  // defaults (DeepSeek-V3's sizes); q_lora_rank null means q_proj.
  cfg.numKvHeads = cfg.numHeads;
  if (!root.get("q_lora_rank")) // absent; JSON null reads as no LoRA
    cfg.qLoraRank = 1536;
  else if (std::optional<int64_t> q = r.getOptInt("q_lora_rank", 1))
    cfg.qLoraRank = *q;
  cfg.kvLoraRank = r.getInt("kv_lora_rank", 512, 1);
  cfg.qkNopeDim = r.getInt("qk_nope_head_dim", 128, 1);
  cfg.qkRopeDim = r.getInt("qk_rope_head_dim", 64, 1);
  cfg.vHeadDim = r.getInt("v_head_dim", 128, 1);
  cfg.mlaBias = r.getBool("attention_bias", false);
  cfg.ropeStyle = r.getBool("rope_interleave", true) ? RopeStyle::Interleaved
                                                     : RopeStyle::NeoX;
  if (errors.failed())
    return errors.take();
  // RoPE covers the qk_rope_head_dim dims (DeepseekV3Config's head_dim).
  cfg.headDim = cfg.qkRopeDim;
  readRope(r, root, errors, file, 10000.0, cfg);
  if (errors.failed())
    return errors.take();
  if (cfg.rotaryDim != cfg.qkRopeDim)
    return llvm::createStringError(
        llvm::formatv("{0}: partial_rotary_factor must be 1 (expected RoPE "
                      "over all qk_rope_head_dim = {1} dims)",
                      file, cfg.qkRopeDim)
            .str());
  cfg.headDim = cfg.qkNopeDim + cfg.qkRopeDim;
  // DeepseekV3Attention.__init__: qk_head_dim^-0.5, times YaRN's
  // mscale(factor, mscale_all_dim)^2 when the rope type is not default and
  // sets mscale_all_dim (rope_parameters, or the rope_scaling it comes from).
  double scale = 1.0 / std::sqrt(double(cfg.headDim));
  bool params = r.has("rope_parameters");
  if (const llvm::json::Object *rs =
          r.getObject(params ? "rope_parameters" : "rope_scaling")) {
    JsonReader s(*rs, file, errors,
                 params ? "rope_parameters." : "rope_scaling.");
    std::string type = s.getString(s.has("rope_type") ? "rope_type" : "type",
                                   std::string("default"));
    double mscaleAllDim = s.getPositive("mscale_all_dim", 0.0, true);
    if (type != "default" && mscaleAllDim != 0.0) {
      double factor = s.getPositive("factor", std::nullopt);
      double m = factor <= 1.0 ? 1.0 : 0.1 * mscaleAllDim * std::log(factor) + 1.0;
      scale *= m * m;
    }
  }
  if (errors.failed())
    return errors.take();

  // Routing (DeepseekV3TopkRouter, DeepseekV3MoE.route_tokens_to_experts).
  int64_t numExperts = r.getInt("n_routed_experts", 256, 1);
  cfg.topK = r.getInt("num_experts_per_tok", 8, 1);
  cfg.nGroup = r.getInt("n_group", 8, 1);
  cfg.topkGroup = r.getInt("topk_group", 4, 1);
  cfg.normTopkProb = r.getBool("norm_topk_prob", true);
  cfg.routedScalingFactor = r.getPositive("routed_scaling_factor", 2.5);
  cfg.expertSize = r.getInt("moe_intermediate_size", 2048, 1);
  int64_t numShared = r.getInt("n_shared_experts", 1, 0);
  int64_t intermediate = r.getInt("intermediate_size", 18432, 1);
  int64_t firstDense = r.getInt("first_k_dense_replace", 3, 0);
  // DeepSeek's own modeling code also reads moe_layer_freq; HF's
  // DeepseekV3Config has none, which is frequency 1.
  int64_t freq = r.getInt("moe_layer_freq", 1, 1);
  // Keys of DeepSeek's own configuration that HF's modeling code does not
  // read: only the routing it implements is accepted.
  r.getChoice("scoring_func", {"sigmoid"}, std::string("sigmoid"));
  r.getChoice("topk_method", {"noaux_tc"}, std::string("noaux_tc"));
  if (errors.failed())
    return errors.take();
  if (cfg.topK > numExperts)
    r.error(llvm::formatv("num_experts_per_tok = {0} exceeds n_routed_experts "
                          "= {1} (expected top_k <= number of experts)",
                          cfg.topK, numExperts));
  else if (numExperts % cfg.nGroup != 0 ||
           (cfg.nGroup > 1 && numExperts / cfg.nGroup < 2))
    r.error(llvm::formatv("n_group = {0} does not split n_routed_experts = {1} "
                          "into equal groups of at least 2 (expected a "
                          "divisor; a group scores its two best experts)",
                          cfg.nGroup, numExperts));
  else if (cfg.topkGroup > cfg.nGroup)
    r.error(llvm::formatv("topk_group = {0} exceeds n_group = {1} (expected "
                          "at most n_group groups kept)",
                          cfg.topkGroup, cfg.nGroup));
  else if (cfg.topK > cfg.topkGroup * (numExperts / cfg.nGroup))
    r.error(llvm::formatv("num_experts_per_tok = {0} exceeds the {1} experts "
                          "of topk_group = {2} groups (expected enough "
                          "experts in the kept groups)",
                          cfg.topK, cfg.topkGroup * (numExperts / cfg.nGroup),
                          cfg.topkGroup));
  if (errors.failed())
    return errors.take();
  if (cfg.nGroup == 1)
    cfg.topkGroup = 1; // one group: nothing to limit
  cfg.scoreFn = ScoreFn::Sigmoid;
  cfg.selectionBias = true;
  cfg.sharedExpertSize = cfg.expertSize * numShared;
  cfg.norm = NormKind::RMSNorm;
  cfg.gated = true;

  for (int64_t i = 0; i < numLayers; ++i) {
    bool moe = i >= firstDense && i % freq == 0;
    cfg.layers.push_back(
        LayerConfig{moe, intermediate, moe ? numExperts : 0, 0, scale});
  }
  auto names = [](StringRef role, int64_t layer, int64_t expert) {
    return llamaName(MoEStyle::DeepSeek, role, layer, expert);
  };
  // HF's DeepseekV3 ignores the multi-token-prediction layer(s) stored after
  // the last decoder layer (_keys_to_ignore_on_load_unexpected:
  // model.layers.{num_hidden_layers}.*), and so do we.
  auto pastLastLayer = [numLayers](StringRef name) {
    int64_t index;
    return name.consume_front("model.layers.") &&
           !name.consumeInteger(10, index) && index >= numLayers;
  };
  source.ignorable = [pastLastLayer, tied = cfg.tied](StringRef name) {
    return pastLastLayer(name) || name.ends_with(".rotary_emb.inv_freq") ||
           (tied && name == "lm_head.weight");
  };
  source.noteSkipped = pastLastLayer;
  source.skippedBecause =
      "layers at or past num_hidden_layers (DeepSeek-V3's multi-token-"
      "prediction layer), which transformers does not load either";
  return buildModel(context, cfg, names, source);
}

llvm::Expected<OwningOpRef<ModuleOp>>
importGpt2(const llvm::json::Object &root, JsonReader &r, ErrorSink &errors,
           DecoderConfig &cfg, ParamSource &source, MLIRContext &context) {
  cfg.hiddenSize = r.getInt("n_embd", std::nullopt, 1);
  int64_t numLayers = r.getInt("n_layer", std::nullopt, 1);
  cfg.numHeads = cfg.numKvHeads = r.getInt("n_head", std::nullopt, 1);
  cfg.vocabSize = r.getInt("vocab_size", std::nullopt, 1);
  cfg.maxPositions = r.getInt("n_positions", std::nullopt, 1);
  int64_t inner = r.getInt("n_inner", 4 * cfg.hiddenSize, 1);
  cfg.normEps = r.getPositive("layer_norm_epsilon", 1e-5);
  std::string act = r.getChoice(
      "activation_function",
      {"gelu_new", "gelu", "gelu_pytorch_tanh", "relu", "silu", "swish"},
      std::string("gelu_new"));
  bool scaleWeights = r.getBool("scale_attn_weights", true);
  bool byLayer = r.getBool("scale_attn_by_inverse_layer_idx", false);
  cfg.tied = r.getBool("tie_word_embeddings", true);
  cfg.initStd = r.getPositive("initializer_range", 0.02);
  if (r.getBool("add_cross_attention", false))
    r.badValue("add_cross_attention", "false: cross-attention is not "
                                      "supported");
  if (errors.failed())
    return errors.take();
  if (cfg.hiddenSize % cfg.numHeads != 0)
    return llvm::createStringError(
        llvm::formatv("{0}: n_embd {1} is not a multiple of n_head {2} "
                      "(expected head_dim = n_embd / n_head)",
                      r.getFile(), cfg.hiddenSize, cfg.numHeads)
            .str());
  cfg.headDim = cfg.hiddenSize / cfg.numHeads;
  cfg.activation = llvm::StringSwitch<Activation>(act)
                       .Cases({"gelu_new", "gelu_pytorch_tanh"},
                              Activation::GeluTanh)
                       .Case("gelu", Activation::Gelu)
                       .Case("relu", Activation::Relu)
                       .Default(Activation::Silu);
  cfg.gated = false;
  cfg.norm = NormKind::LayerNorm;
  cfg.normBias = cfg.qkvBias = cfg.outBias = cfg.mlpBias = true;
  cfg.fusedQKV = cfg.conv1d = true;
  cfg.learnedPositions = true;
  for (int64_t i = 0; i < numLayers; ++i) {
    double scale = scaleWeights ? 1.0 / std::sqrt(double(cfg.headDim)) : 1.0;
    if (byLayer)
      scale /= double(i + 1);
    cfg.layers.push_back(LayerConfig{false, inner, 0, 0, scale});
  }

  // Older checkpoints store the transformer's tensors without the prefix.
  std::string prefix = "transformer.";
  if (source.tensors && !source.tensors->count("transformer.wte.weight") &&
      source.tensors->count("wte.weight"))
    prefix = "";
  auto names = [prefix](StringRef role, int64_t layer, int64_t) {
    if (layer < 0) {
      if (role == "embed")
        return prefix + "wte.weight";
      if (role == "pos_embed")
        return prefix + "wpe.weight";
      if (role == "lm_head")
        return std::string("lm_head.weight");
      StringRef rest = role;
      rest.consume_front("final_norm");
      return prefix + "ln_f" + rest.str();
    }
    std::string p = prefix + llvm::formatv("h.{0}.", layer).str();
    static constexpr std::pair<StringRef, StringRef> map[] = {
        {"attn_norm", "ln_1"},   {"mlp_norm", "ln_2"},
        {"qkv", "attn.c_attn"},  {"o", "attn.c_proj"},
        {"mlp.up", "mlp.c_fc"}, {"mlp.down", "mlp.c_proj"}};
    for (auto [from, to] : map) {
      StringRef rest = role;
      if (rest.consume_front(from) && rest.starts_with("."))
        return p + to.str() + rest.str();
    }
    return p + role.str();
  };
  source.ignorable = [tied = cfg.tied](StringRef name) {
    return name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias") ||
           (tied && name == "lm_head.weight");
  };
  return buildModel(context, cfg, names, source);
}

} // namespace

llvm::Expected<OwningOpRef<ModuleOp>> mlir::moe::detail::importHuggingFace(
    StringRef configPath, const llvm::json::Object &root,
    StringRef checkpointDir, MLIRContext &context) {
  ErrorSink errors;
  JsonReader r(root, configPath, errors);
  std::string arch = r.getString("model_type", std::nullopt);
  if (errors.failed())
    return errors.take();
  static constexpr StringRef known[] = {
      "gpt2",  "mixtral", "qwen2_moe", "qwen3_moe", "olmoe",
      "llama", "mistral", "qwen2",     "qwen3",     "gpt_oss",
      "deepseek_v3"};
  if (!llvm::is_contained(known, arch))
    return llvm::createStringError(
        (configPath + ": model_type '" + arch +
         "' is not supported (expected one of " +
         llvm::join(llvm::ArrayRef<StringRef>(known), ", ") + ")")
            .str());

  DecoderConfig cfg;
  cfg.architecture = arch;
  cfg.configFile = configPath.str();
  llvm::SmallString<256> dir(llvm::sys::path::parent_path(configPath));
  if (dir.empty())
    dir = ".";
  (void)llvm::sys::fs::make_absolute(dir);
  llvm::sys::path::remove_dots(dir, /*remove_dot_dot=*/true);
  cfg.name = llvm::sys::path::filename(dir).str();
  if (cfg.name.empty())
    cfg.name = arch;
  if (std::optional<int64_t> bos = r.getOptInt("bos_token_id", 0))
    cfg.bosTokenId = *bos;
  cfg.eosTokenIds = readTokenIds(r, root, "eos_token_id");
  // generate() stops at generation_config.json's eos ids; keep both.
  llvm::SmallString<256> genPath(dir);
  llvm::sys::path::append(genPath, "generation_config.json");
  if (llvm::sys::fs::exists(genPath)) {
    llvm::Expected<llvm::json::Value> gen = parseJsonFile(genPath);
    if (!gen)
      return gen.takeError();
    JsonReader g(*gen->getAsObject(), genPath, errors);
    for (int64_t id : readTokenIds(g, *gen->getAsObject(), "eos_token_id"))
      if (!llvm::is_contained(cfg.eosTokenIds, id))
        cfg.eosTokenIds.push_back(id);
  }

  ParamSource source;
  TensorMap tensors;
  if (!checkpointDir.empty()) {
    llvm::Expected<TensorMap> read = readCheckpoint(checkpointDir, source.describedBy);
    if (!read)
      return read.takeError();
    tensors = std::move(*read);
    source.tensors = &tensors;
    cfg.checkpoint = dir.str().str();
    readQuantization(r, errors, source);
  } else {
    // A bare config: parameters take the dtype the model was saved in.
    source.describedBy = configPath.str();
    std::string dtype = r.getChoice(
        r.has("dtype") ? "dtype" : "torch_dtype",
        {"float32", "bfloat16", "float16"}, std::string("float32"));
    source.elementType =
        llvm::StringSwitch<Type>(dtype)
            .Case("bfloat16", BFloat16Type::get(&context))
            .Case("float16", Float16Type::get(&context))
            .Default(Float32Type::get(&context));
  }
  if (errors.failed())
    return errors.take();

  if (arch == "gpt2")
    return importGpt2(root, r, errors, cfg, source, context);
  if (arch == "deepseek_v3")
    return importDeepseekV3(configPath, root, r, errors, cfg, source, context);
  return importLlamaFamily(arch, configPath, root, r, errors, cfg, source,
                           context);
}
