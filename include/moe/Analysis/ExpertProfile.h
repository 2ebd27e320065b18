//===- ExpertProfile.h - expert load profiles -------------------*- C++ -*-===//
//
// Reads the per-layer per-expert token counts that `moe-run --expert-profile`
// writes, for passes that place experts by load (moe-expert-placement, pass
// plugins):
//
//   {"layers": [{"layer": L, "routed": [c0, c1, ...]}, ...]}
//
// Other keys (model, tokens, step, num_experts, dropped) are ignored.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_ANALYSIS_EXPERTPROFILE_H
#define MOE_ANALYSIS_EXPERTPROFILE_H

#include "mlir/IR/Operation.h"
#include "mlir/Support/LLVM.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/SmallVector.h"

namespace mlir::moe {

struct ExpertProfile {
  /// Layer index -> routed-token count of each expert.
  llvm::DenseMap<int64_t, SmallVector<double>> routed;

  /// The counts of `layer`, or null when the profile has none.
  const SmallVector<double> *lookup(int64_t layer) const {
    auto it = routed.find(layer);
    return it == routed.end() ? nullptr : &it->second;
  }
};

/// Reads the profile at `path`; on failure reports "PATH: what" at `op` and
/// returns failure.
FailureOr<ExpertProfile> readExpertProfile(Operation *op, StringRef path);

} // namespace mlir::moe

#endif // MOE_ANALYSIS_EXPERTPROFILE_H
