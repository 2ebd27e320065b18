//===- ExpertProfile.h - expert load profiles -------------------*- C++ -*-===//
//
// The per-layer per-expert routed-token counts that `moe-run --expert-profile`
// writes,
//
//   {"layers": [{"layer": L, "routed": [c0, c1, ...]}, ...]}
//
// and their one checked reader, shared by moe-compile (which checks a
// profile before anything is imported), moe-expert-placement and pass
// plugins, so they all reject the same files the same way. Other keys
// (model, tokens, step, dropped) are ignored; num_experts, when present,
// must agree with the counts.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_ANALYSIS_EXPERTPROFILE_H
#define MOE_ANALYSIS_EXPERTPROFILE_H

#include "mlir/IR/Operation.h"
#include "mlir/Support/LLVM.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/SmallVector.h"
#include "llvm/Support/Error.h"

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

/// Parses and checks a profile: layers are integers in [0, 2^24] and appear
/// once, counts are finite and >= 0, one per expert (num_experts, when
/// present, agrees). Errors read "PATH: what (expected ...)".
llvm::Expected<ExpertProfile> parseExpertProfile(StringRef text,
                                                 StringRef path);

/// Reads `path` and parses it.
llvm::Expected<ExpertProfile> readExpertProfileFile(StringRef path);

/// Reads the profile at `path` for a pass; on failure reports "PATH: what"
/// at `op` and returns failure. An empty path (a pass's profile option left
/// unset) gives an empty profile, so a pass calls this whether or not it was
/// given one.
FailureOr<ExpertProfile> readExpertProfile(Operation *op, StringRef path);

} // namespace mlir::moe

#endif // MOE_ANALYSIS_EXPERTPROFILE_H
