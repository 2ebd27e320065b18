//===- ExpertPlacement.cpp - Place experts on ranks -----------------------===//
//
// Gives every moe.experts a #moe.placement over the model's device grid and
// inserts the dispatch/combine exchanges around it. The balanced strategy is
// longest-processing-time-first list scheduling with a per-rank cap of
// ceil(E/P) experts: every rank holds the same number of experts (memory)
// while the busiest rank's routed-token load stays close to the mean.
//
//===----------------------------------------------------------------------===//

#include "moe/Compiler/ExpertProfile.h"
#include "moe/Dialect/MoEOps.h"
#include "moe/Transforms/Passes.h"

#include "mlir/Dialect/Shard/IR/ShardDialect.h"
#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "mlir/IR/Builders.h"
#include "llvm/Support/Debug.h"

#include <numeric>
#include <set>

#define DEBUG_TYPE "moe-expert-placement"

namespace mlir::moe {
#define GEN_PASS_DEF_MOEEXPERTPLACEMENTPASS
#include "moe/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {

/// Per-layer per-expert routed-token counts (moe-run --expert-profile).
using Profile = ExpertProfile;

FailureOr<Profile> readProfile(ModelOp model, StringRef path) {
  llvm::Expected<Profile> profile = readExpertProfile(path);
  if (!profile)
    return model.emitError() << llvm::toString(profile.takeError());
  return std::move(*profile);
}

SmallVector<int64_t> placeContiguous(int64_t numExperts, int64_t numRanks) {
  SmallVector<int64_t> ranks(numExperts);
  for (int64_t e = 0; e < numExperts; ++e)
    ranks[e] = e * numRanks / numExperts;
  return ranks;
}

SmallVector<int64_t> placeRoundRobin(int64_t numExperts, int64_t numRanks) {
  SmallVector<int64_t> ranks(numExperts);
  for (int64_t e = 0; e < numExperts; ++e)
    ranks[e] = e % numRanks;
  return ranks;
}

SmallVector<int64_t> placeBalanced(ArrayRef<double> load, int64_t numRanks) {
  int64_t numExperts = int64_t(load.size());
  int64_t cap = llvm::divideCeil(numExperts, numRanks);
  SmallVector<int64_t> order(numExperts);
  std::iota(order.begin(), order.end(), 0);
  llvm::stable_sort(order, [&](int64_t a, int64_t b) { return load[a] > load[b]; });
  SmallVector<double> rankLoad(numRanks, 0.0);
  SmallVector<int64_t> rankCount(numRanks, 0), ranks(numExperts, 0);
  for (int64_t e : order) {
    int64_t best = -1;
    for (int64_t r = 0; r < numRanks; ++r) {
      if (rankCount[r] >= cap)
        continue;
      if (best < 0 || rankLoad[r] < rankLoad[best] ||
          (rankLoad[r] == rankLoad[best] && rankCount[r] < rankCount[best]))
        best = r;
    }
    ranks[e] = best;
    rankLoad[best] += load[e];
    ++rankCount[best];
  }
  return ranks;
}

struct MoEExpertPlacementPass
    : mlir::moe::impl::MoEExpertPlacementPassBase<MoEExpertPlacementPass> {
  using Base::Base;

  void runOnOperation() override {
    ModelOp model = getOperation();
    auto grids = model.getBodyBlock().getOps<shard::GridOp>();
    if (grids.empty())
      return; // one rank: every expert everywhere
    shard::GridOp grid = *grids.begin();
    // The grid may come from user IR: static, and small enough to place on.
    int64_t numRanks = 1;
    for (int64_t d : grid.getShape()) {
      if (d <= 0 || d > (int64_t(1) << 16) || numRanks * d > (int64_t(1) << 16)) {
        grid.emitError() << "moe-expert-placement: device grid of shape ["
                         << grid.getShape()
                         << "] (expected static sizes, at most 65536 ranks)";
        return signalPassFailure();
      }
      numRanks *= d;
    }
    if (strategy != "balanced" && strategy != "round-robin" &&
        strategy != "contiguous") {
      model.emitError() << "moe-expert-placement: unknown strategy '"
                        << strategy
                        << "' (expected balanced, round-robin or contiguous)";
      return signalPassFailure();
    }
    Profile loads;
    if (!profile.empty()) {
      FailureOr<Profile> read = readProfile(model, profile);
      if (failed(read))
        return signalPassFailure();
      loads = std::move(*read);
    }
    SmallVector<int16_t> allAxes;
    for (size_t d = 0; d < grid.getShape().size(); ++d)
      allAxes.push_back(int16_t(d));

    std::set<int64_t> profiledLayers;
    for (const auto &entry : loads)
      profiledLayers.insert(entry.first);
    WalkResult result = model.walk([&](ExpertsOp experts) -> WalkResult {
      if (auto layer = experts->getParentOfType<LayerOp>())
        profiledLayers.erase(layer.getIndex());
      if (experts.getInput().getDefiningOp<AllToAllOp>())
        return WalkResult::advance(); // already placed and exchanged
      int64_t numExperts = experts.getNumExperts();
      auto layer = experts->getParentOfType<LayerOp>();
      int64_t layerIndex = layer ? layer.getIndex() : -1;
      SmallVector<int64_t> ranks;
      if (strategy == "contiguous") {
        ranks = placeContiguous(numExperts, numRanks);
      } else if (strategy == "round-robin") {
        ranks = placeRoundRobin(numExperts, numRanks);
      } else {
        SmallVector<double> load(numExperts, 1.0);
        auto it = loads.find(layerIndex);
        if (it != loads.end()) {
          if (int64_t(it->second.size()) != numExperts) {
            experts.emitError() << profile << ": layer " << layerIndex
                                << " has " << it->second.size()
                                << " expert counts (expected " << numExperts
                                << ")";
            return WalkResult::interrupt();
          }
          load.assign(it->second.begin(), it->second.end());
        }
        ranks = placeBalanced(load, numRanks);
      }
      auto placement =
          PlacementAttr::get(&getContext(), numRanks, ranks);
      experts.setPlacementAttr(placement);
      LLVM_DEBUG(llvm::dbgs() << "layer " << layerIndex << ": " << placement
                              << "\n");

      auto dispatch = experts.getInput().getDefiningOp<DispatchOp>();
      if (!dispatch) {
        experts.emitError("experts input must come from moe.dispatch to be "
                          "exchanged");
        return WalkResult::interrupt();
      }
      // Tokens leave as soon as they are dispatched.
      OpBuilder b(experts);
      b.setInsertionPointAfter(dispatch);
      Value offsets = experts.getExpertOffsets();
      auto in = AllToAllOp::create(b, dispatch.getLoc(), ExchangeKind::Dispatch,
                                   experts.getInput(), offsets,
                                   grid.getSymName(), allAxes, placement);
      experts.getInputMutable().assign(in.getResult());
      b.setInsertionPointAfter(experts);
      auto out = AllToAllOp::create(b, experts.getLoc(), ExchangeKind::Combine,
                                    experts.getResult(), offsets,
                                    grid.getSymName(), allAxes, placement);
      experts.getResult().replaceAllUsesExcept(out.getResult(), out);
      return WalkResult::advance();
    });
    if (result.wasInterrupted())
      return signalPassFailure();
    // A profile of another model would place this one by unrelated loads.
    if (!profiledLayers.empty() && strategy == "balanced") {
      model.emitError() << profile << ": layer " << *profiledLayers.begin()
                        << " is not an MoE layer of the model (expected the "
                           "profile of this model)";
      signalPassFailure();
    }
  }
};

} // namespace
