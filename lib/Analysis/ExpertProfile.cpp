//===- ExpertProfile.cpp - expert load profiles ---------------------------===//

#include "moe/Analysis/ExpertProfile.h"
#include "moe/Compiler/ExpertProfile.h"

#include "mlir/IR/Diagnostics.h"

using namespace mlir;

FailureOr<moe::ExpertProfile> moe::readExpertProfile(Operation *op,
                                                     StringRef path) {
  // One checked reader (moe/Compiler/ExpertProfile.h) for moe-compile, the
  // placement pass and plugins, so they reject the same files the same way.
  llvm::Expected<ExpertProfileCounts> counts = readExpertProfileFile(path);
  if (!counts)
    return op->emitError() << llvm::toString(counts.takeError());
  ExpertProfile profile;
  for (auto &[layer, routed] : *counts)
    profile.routed[layer].assign(routed.begin(), routed.end());
  return profile;
}
