//===- ModelBuilder.h - decoder config -> moe IR ----------------*- C++ -*-===//
//
// Every importer (descriptions, each Hugging Face architecture) fills a
// DecoderConfig and a name scheme; buildModel emits the moe.model, declaring
// each parameter on first use and checking it against the checkpoint.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_IMPORT_MODELBUILDER_H
#define MOE_LIB_IMPORT_MODELBUILDER_H

#include "moe/Dialect/MoEOps.h"
#include "moe/Import/Safetensors.h"

#include "mlir/IR/OwningOpRef.h"

#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace mlir::moe::detail {

enum class NormKind { LayerNorm, RMSNorm };
/// How q/k are normalized before RoPE: not at all, per head over head_dim
/// (Qwen3), or over the whole projection (OLMoE).
enum class QKNorm { None, PerHead, Full };

struct LayerConfig {
  bool moe = false;
  /// Dense MLP width (dense layers; the residual MLP of residual-MoE layers).
  int64_t ffnSize = 0;
  int64_t numExperts = 0;
  /// 0: full causal attention.
  int64_t slidingWindow = 0;
  double attentionScale = 1.0;
};

struct DecoderConfig {
  std::string name, architecture;
  /// The file the configuration came from (config.json or the description),
  /// named by errors about the configuration as a whole.
  std::string configFile;
  int64_t vocabSize = 0, hiddenSize = 0, maxPositions = 0;
  std::optional<int64_t> bosTokenId;
  std::vector<int64_t> eosTokenIds;
  /// Absolute checkpoint directory, or "" when there are no weights.
  std::string checkpoint;

  int64_t numHeads = 0, numKvHeads = 0, headDim = 0;
  NormKind norm = NormKind::RMSNorm;
  double normEps = 1e-5;
  bool normBias = false;

  bool learnedPositions = false;
  bool rope = false;
  double ropeTheta = 10000.0;
  int64_t rotaryDim = 0;
  /// Scaled RoPE (HF rope_type linear, llama3, yarn): the frequencies of the
  /// rotary_dim / 2 pairs and the cos/sin scale; empty and 1 for plain RoPE.
  SmallVector<float> ropeInvFreq;
  double ropeAttentionFactor = 1.0;

  bool fusedQKV = false;  // one [D, 3D] projection (GPT-2 c_attn)
  bool conv1d = false;    // weights stored [in, out] (GPT-2 Conv1D)
  bool qkvBias = false, outBias = false, mlpBias = false;
  QKNorm qkNorm = QKNorm::None;
  /// Learned per-head attention sinks (gpt-oss; role "sinks").
  bool attentionSinks = false;
  /// Multi-head latent attention (DeepSeek-V3), when kvLoraRank > 0: q from
  /// "q.weight" or, with qLoraRank > 0, "q_a" -> "q_a_norm" -> "q_b"; keys
  /// and values from "kv_a" ([kvLoraRank | qkRopeDim]) -> "kv_a_norm" on the
  /// latent -> "kv_b" (per head [qkNopeDim | vHeadDim]); every head's key
  /// ends with the one rotated k_pe. headDim is qkNopeDim + qkRopeDim and
  /// rotaryDim qkRopeDim; the rope dims of q are each head's last ones.
  /// mlaBias: q_a, kv_a and o carry biases (attention_bias).
  int64_t qLoraRank = 0, kvLoraRank = 0, qkNopeDim = 0, qkRopeDim = 0,
          vHeadDim = 0;
  bool mlaBias = false;
  RopeStyle ropeStyle = RopeStyle::NeoX;

  Activation activation = Activation::Silu;
  bool gated = true;
  bool tied = false;

  // MoE layers.
  int64_t topK = 1;
  /// The router's bias (gpt-oss; role "router_bias"), part of the logits.
  bool routerBias = false;
  /// Top-k of the router logits, then the score function over the k picked
  /// (gpt-oss), instead of top-k of the scores.
  bool scoreAfterTopk = false;
  ScoreFn scoreFn = ScoreFn::Softmax;
  /// DeepSeek-V3's selection-only bias (role "router_selection_bias"),
  /// group-limited top-k and routed scaling factor.
  bool selectionBias = false;
  int64_t nGroup = 1, topkGroup = 1;
  double routedScalingFactor = 1.0;
  bool normTopkProb = false;
  bool dropTokens = false;
  double capacityFactor = 0.0;
  int64_t minCapacity = 0;
  int64_t expertSize = 0;
  bool expertBias = false;
  /// Activation::SwigluOai's clamp and sigmoid scale (HF GptOssExperts).
  float swigluLimit = 0.0f, swigluAlpha = 0.0f;
  int64_t sharedExpertSize = 0;
  bool sharedExpertGate = false;
  bool residualMoE = false; // DeepSpeed use_residual

  double initStd = 0.02;
  std::vector<LayerConfig> layers;
};

/// Maps a parameter role to its checkpoint tensor name. Roles: "embed",
/// "pos_embed", "final_norm.weight|bias", "lm_head", and per layer
/// "attn_norm.*", "qkv.*", "q.*", "k.*", "v.*", "o.*", "q_norm.weight",
/// "k_norm.weight", "mlp_norm.*", "mlp.{up,gate,down}.{weight,bias}", "sinks",
/// "router", "router_bias", "router_selection_bias", MLA's "q_a.*",
/// "q_a_norm.weight", "q_b.weight", "kv_a.*", "kv_a_norm.weight",
/// "kv_b.weight", "expert.{up,gate,down}.{weight,bias}" (with
/// `expert`), "shared.{up,gate,down}.weight", "shared_gate",
/// "coef.{weight,bias}". With `expert == kAllExperts` an expert role's name is
/// the per-expert pattern, `{e}` standing for the expert's number.
using NameFn = std::function<std::string(llvm::StringRef role, int64_t layer,
                                         int64_t expert)>;
inline constexpr int64_t kAllExperts = -2;
/// The expert part of a per-expert tensor name: the number, or `{e}`.
inline std::string expertToken(int64_t expert) {
  return expert == kAllExperts ? std::string("{e}") : std::to_string(expert);
}

/// Where parameters come from: a checkpoint (tensors are checked), or
/// nothing (every parameter gets `elementType`).
struct ParamSource {
  const TensorMap *tensors = nullptr;
  std::string describedBy; // file named in "missing tensor" errors
  Type elementType;
  /// Checkpoint tensors the model may leave unused (buffers such as GPT-2's
  /// attn.bias, or lm_head.weight of a tied model).
  std::function<bool(llvm::StringRef)> ignorable;
  /// Ignorable tensors worth a note when skipped (a whole stored layer the
  /// modeling code drops, unlike a buffer), and why they are skipped.
  std::function<bool(llvm::StringRef)> noteSkipped;
  std::string skippedBecause;
  /// The checkpoint's quantization_config (HF FineGrainedFP8Config): FP8
  /// e4m3 matrices with F32 block scales `<name>_scale_inv`, each scale
  /// covering blockRows x blockCols values.
  bool fp8 = false;
  int64_t blockRows = 0, blockCols = 0;
  /// quant_method "mxfp4" (HF Mxfp4Config): gpt-oss's fused experts as
  /// `*_blocks` + `*_scales`, everything else unquantized.
  bool mxfp4 = false;
  std::string quantField; // "FILE: quantization_config" for messages
};

/// Builds and verifies the model. Errors: "FILE: what (expected ...)".
llvm::Expected<OwningOpRef<ModuleOp>>
buildModel(MLIRContext &context, const DecoderConfig &config,
           const NameFn &names, const ParamSource &source);

} // namespace mlir::moe::detail

#endif // MOE_LIB_IMPORT_MODELBUILDER_H
