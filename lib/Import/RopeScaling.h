//===- RopeScaling.h - Hugging Face's scaled RoPE frequencies ---*- C++ -*-===//
//
// The inverse frequencies and cos/sin scale of transformers'
// modeling_rope_utils.py ROPE_INIT_FUNCTIONS for the rope types whose
// frequencies do not depend on the sequence length: linear
// (_compute_linear_scaling_rope_parameters), llama3
// (_compute_llama3_parameters) and yarn (_compute_yarn_parameters, with
// mscale / mscale_all_dim / truncate / original_max_position_embeddings as in
// transformers 4.57). Computed in f32 as torch computes them, so that the
// angles pos * inv_freq round as Hugging Face's do.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_IMPORT_ROPESCALING_H
#define MOE_LIB_IMPORT_ROPESCALING_H

#include "mlir/Support/LLVM.h"
#include "llvm/ADT/SmallVector.h"

#include <optional>
#include <string>

namespace mlir::moe::detail {

struct RopeScalingParams {
  std::string type = "default";
  double factor = 1.0;
  /// yarn
  std::optional<double> attentionFactor;
  double mscale = 0.0, mscaleAllDim = 0.0;
  double betaFast = 32.0, betaSlow = 1.0;
  bool truncate = true;
  /// yarn and llama3 (yarn falls back to max_position_embeddings).
  int64_t originalMaxPositions = 0;
  /// llama3
  double lowFreqFactor = 1.0, highFreqFactor = 4.0;
};

struct RopeFrequencies {
  SmallVector<float> invFreq; // dim / 2 values
  double attentionFactor = 1.0;
};

/// HF's default inverse frequencies 1 / base^(2i/dim) in f32.
SmallVector<float> defaultInvFreq(double base, int64_t dim);

/// The frequencies of `p.type` ("linear", "llama3" or "yarn") for rotary
/// dimension `dim` and base `base`.
RopeFrequencies computeRopeFrequencies(const RopeScalingParams &p, double base,
                                       int64_t dim);

} // namespace mlir::moe::detail

#endif // MOE_LIB_IMPORT_ROPESCALING_H
