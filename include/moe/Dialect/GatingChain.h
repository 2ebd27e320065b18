//===- GatingChain.h - The unfused gating chain of an MoE layer -*- C++ -*-===//
//
// scores -> top_k -> [renormalize] -> [capacity] -> expert_map, as the
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
  /// Every op of the chain.
  SmallVector<Operation *> ops;
};

/// Matches the chain that ends in `map`; on failure `why` says what did not
/// match (for notifyMatchFailure and diagnostics).
FailureOr<GatingChain> matchGatingChain(ExpertMapOp map, std::string &why);

} // namespace mlir::moe

#endif // MOE_DIALECT_GATINGCHAIN_H
