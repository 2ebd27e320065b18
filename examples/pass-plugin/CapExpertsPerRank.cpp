//===- CapExpertsPerRank.cpp - an example pass plugin ---------------------===//
//
// `moe-cap-experts-per-rank` (Passes.td): caps the experts a rank holds per
// MoE layer by moving experts, guided by a `moe-run --expert-profile` load
// profile. Written against the dialect's MoEOpInterface: it never asks
// which op carries the placement, and re-places a layer as a whole with
// LayerOp::setExpertPlacement.
//
// Built as a MODULE and loaded with --load-pass-plugin: moe symbols (the
// dialect, readExpertProfile) resolve against moe-opt / moe-compile, which
// export theirs.
//
//===----------------------------------------------------------------------===//

#include "moe/Analysis/ExpertProfile.h"
#include "moe/Dialect/MoEOps.h"

#include "mlir/Pass/Pass.h"
#include "mlir/Tools/Plugins/PassPlugin.h"
#include "llvm/Config/llvm-config.h"
#include "llvm/Support/Debug.h"

#define DEBUG_TYPE "moe-cap-experts-per-rank"

namespace mlir::moe {
#define GEN_PASS_DECL_CAPEXPERTSPERRANKPASS
#define GEN_PASS_DEF_CAPEXPERTSPERRANKPASS
#define GEN_PASS_REGISTRATION
#include "Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {

struct CapExpertsPerRankPass
    : mlir::moe::impl::CapExpertsPerRankPassBase<CapExpertsPerRankPass> {
  using Base::Base;

  void runOnOperation() override {
    ModelOp model = getOperation();
    if (maxExperts < 0) {
      model.emitError() << "moe-cap-experts-per-rank: max-experts must be "
                           ">= 0 (got "
                        << int64_t(maxExperts) << ")";
      return signalPassFailure();
    }
    // The grid checks every pass that places experts makes (MoEOps.h).
    if (failed(getPlacementRankCount(model, "moe-cap-experts-per-rank")))
      return signalPassFailure();
    FailureOr<ExpertProfile> read = readExpertProfile(model, profile);
    if (failed(read))
      return signalPassFailure();
    const ExpertProfile &loads = *read;
    WalkResult result = model.walk([&](LayerOp layer) {
      return failed(capLayer(layer, loads)) ? WalkResult::interrupt()
                                            : WalkResult::advance();
    });
    if (result.wasInterrupted())
      signalPassFailure();
  }

  LogicalResult capLayer(LayerOp layer, const ExpertProfile &loads) {
    // Whichever ops of the layer carry the placement (the experts, the
    // exchanges), they carry the same one.
    MoEOpInterface placed;
    for (MoEOpInterface op : layer.getMoEOps())
      if (op.getExpertPlacement()) {
        placed = op;
        break;
      }
    if (!placed)
      return success(); // dense, or every expert on every rank
    PlacementAttr placement = placed.getExpertPlacement();
    int64_t numExperts = placed.getNumExperts();
    int64_t numRanks = placement.getNumRanks();
    int64_t cap = maxExperts ? int64_t(maxExperts)
                             : llvm::divideCeil(numExperts, numRanks);
    if (cap * numRanks < numExperts)
      return placed.emitError()
             << "moe-cap-experts-per-rank: " << numExperts
             << " experts do not fit on " << numRanks << " ranks with at most "
             << cap << " each (expected max-experts >= "
             << llvm::divideCeil(numExperts, numRanks) << ")";

    SmallVector<double> load(numExperts, 1.0);
    if (const SmallVector<double> *routed =
            loads.lookup(placed.getLayerIndex())) {
      if (int64_t(routed->size()) != numExperts)
        return placed.emitError()
               << profile << ": layer " << placed.getLayerIndex() << " has "
               << routed->size() << " expert counts (expected " << numExperts
               << ")";
      load = *routed;
    }

    SmallVector<int64_t> ranks(placement.getExpertRanks());
    SmallVector<int64_t> count(numRanks, 0);
    SmallVector<double> rankLoad(numRanks, 0.0);
    for (auto [e, r] : llvm::enumerate(ranks)) {
      ++count[r];
      rankLoad[r] += load[e];
    }
    // Lexicographically smallest key wins; ties go to the lower index.
    auto pickRank = [&](auto key) {
      int64_t best = -1;
      for (int64_t r = 0; r < numRanks; ++r)
        if (key(r) && (best < 0 || *key(r) < *key(best)))
          best = r;
      return best;
    };
    bool moved = false;
    for (;;) {
      int64_t from = pickRank([&](int64_t r) -> std::optional<double> {
        if (count[r] <= cap)
          return std::nullopt;
        return -rankLoad[r]; // busiest first
      });
      if (from < 0)
        break;
      int64_t to =
          pickRank([&](int64_t r) -> std::optional<std::pair<double, int64_t>> {
            if (count[r] >= cap)
              return std::nullopt;
            return std::make_pair(rankLoad[r], count[r]);
          });
      // The expert whose move leaves the larger of the two loads smallest.
      int64_t best = -1;
      double bestPeak = 0;
      for (int64_t e = 0; e < numExperts; ++e) {
        if (ranks[e] != from)
          continue;
        double peak =
            std::max(rankLoad[from] - load[e], rankLoad[to] + load[e]);
        if (best < 0 || peak < bestPeak) {
          best = e;
          bestPeak = peak;
        }
      }
      LLVM_DEBUG(llvm::dbgs()
                 << "layer " << layer.getIndex() << ": expert " << best
                 << " rank " << from << " -> " << to << "\n");
      ranks[best] = to;
      --count[from];
      ++count[to];
      rankLoad[from] -= load[best];
      rankLoad[to] += load[best];
      moved = true;
    }
    if (moved)
      layer.setExpertPlacement(
          PlacementAttr::get(&getContext(), numRanks, ranks));
    return success();
  }
};

} // namespace

/// The entry point --load-pass-plugin looks for.
extern "C" LLVM_ATTRIBUTE_WEAK PassPluginLibraryInfo mlirGetPassPluginInfo() {
  return {MLIR_PLUGIN_API_VERSION, "MoECapExperts", LLVM_VERSION_STRING,
          [] { registerCapExpertsPerRankPass(); }};
}
