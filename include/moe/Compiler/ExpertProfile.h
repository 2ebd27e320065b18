//===- ExpertProfile.h - moe-run --expert-profile files ---------*- C++ -*-===//
//
// Per-layer per-expert routed-token counts, as moe-run --expert-profile
// writes them: {"layers": [{"layer": L, "routed": [c0, c1, ...]}, ...]}.
// Read by moe-compile (checked before anything is imported) and by
// moe-expert-placement.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_COMPILER_EXPERTPROFILE_H
#define MOE_COMPILER_EXPERTPROFILE_H

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <map>
#include <vector>

namespace mlir::moe {

/// Layer index -> routed-token count per expert.
using ExpertProfileCounts = std::map<int64_t, std::vector<double>>;

/// Parses and checks a profile: layers are integers in [0, 2^24] and appear
/// once, counts are finite and >= 0, one per expert (num_experts, when
/// present, agrees). Errors read "PATH: what (expected ...)".
llvm::Expected<ExpertProfileCounts> parseExpertProfile(llvm::StringRef text,
                                                 llvm::StringRef path);

/// Reads `path` and parses it.
llvm::Expected<ExpertProfileCounts> readExpertProfileFile(llvm::StringRef path);

} // namespace mlir::moe

#endif // MOE_COMPILER_EXPERTPROFILE_H
