//===- GatingChain.h - The unfused gating chain of an MoE layer -*- C++ -*-===//
//
// scores -> top_k -> [renormalize] -> [scale_weights] -> [capacity] ->
// expert_map, as the
// importers emit it: matched by moe-fuse-gating (which rewrites it into one
// moe.gate) and by moe-verify-input-legality (which reports a chain the
// fusion cannot take, so it is not skipped without a word).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_DIALECT_GATINGCHAIN_H
#define MOE_DIALECT_GATINGCHAIN_H

#include "moe/Dialect/MoEOps.h"

#include <string>

namespace mlir::moe {

struct GatingChain {
  TopKOp topK;
  /// Null when the capacity step is absent.
  CapacityOp capacity;
  ExpertMapOp map;
  /// The router logits the chain starts from.
  Value logits;
  /// The final routing weights (after renormalization and capacity).
  Value weights;
  ScoreFn score = ScoreFn::Softmax;
  bool scoreBeforeTopk = true;
  bool renormalize = false;
  /// top_k's selection-only bias and groups (DeepSeek-V3), null / 1 / 1
  /// when absent; scale_weights' factor, 1 when absent.
  Value selectionBias;
  int64_t nGroup = 1, topkGroup = 1;
  double routedScalingFactor = 1.0;
  /// Every op of the chain.
  SmallVector<Operation *> ops;
};

/// Matches the chain that ends in `map`; on failure `why` says what did not
/// match (for notifyMatchFailure and diagnostics).
FailureOr<GatingChain> matchGatingChain(ExpertMapOp map, std::string &why);

} // namespace mlir::moe

#endif // MOE_DIALECT_GATINGCHAIN_H
