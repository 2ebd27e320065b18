//===- ExpertPlacement.cpp - Place experts on ranks -----------------------===//
//
// Gives every moe.experts a #moe.placement over the model's device grid and
// inserts the dispatch/combine exchanges around it. The balanced strategy is
// longest-processing-time-first list scheduling with a per-rank cap of
// ceil(E/P) experts: every rank holds the same number of experts (memory)
// while the busiest rank's routed-token load stays close to the mean; with
// `replicas`, the hottest experts get extra copies on other ranks first.
//
//===----------------------------------------------------------------------===//

#include "moe/Analysis/ExpertProfile.h"
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

/// The quantization block along an expert's intermediate dimension (rows of
/// gate/up, columns of down), 1 for plain weights: a slice must hold whole
/// blocks, as the runtime keeps each block's scale whole.
int64_t intermediateBlock(ExpertsOp experts) {
  int64_t block = 1;
  auto visit = [&](Value v, bool columns) {
    auto weight = v ? v.getDefiningOp<WeightOp>() : WeightOp();
    if (!weight)
      return;
    auto param = SymbolTable::lookupNearestSymbolFrom<ParamOp>(
        experts, weight.getParamAttr());
    if (QuantAttr quant = param ? param.getQuantAttr() : QuantAttr())
      block = std::lcm(block, quant.getBlock()[columns ? 1 : 0]);
  };
  visit(experts.getGate(), /*columns=*/false);
  visit(experts.getUp(), /*columns=*/false);
  visit(experts.getDown(), /*columns=*/true);
  return block;
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

/// Longest-processing-time-first placement of the expert copies: `replicas`
/// extra copies go one by one to the expert with the highest load per copy
/// (as DeepSeek's EPLB does), each copy carries its expert's load divided by
/// its copies, and the copies, heaviest first, go to the least-loaded rank
/// that has room (ceil(copies/P) each) and no copy of that expert yet.
/// Returns the primary rank of each expert and the replicas as
/// (expert, rank) pairs.
std::pair<SmallVector<int64_t>, SmallVector<int64_t>>
placeBalanced(ArrayRef<double> load, int64_t numRanks, int64_t replicas) {
  int64_t numExperts = int64_t(load.size());
  SmallVector<int64_t> copies(numExperts, 1);
  for (int64_t r = 0; r < replicas; ++r) {
    int64_t hot = -1;
    for (int64_t e = 0; e < numExperts; ++e)
      if (copies[e] < numRanks &&
          (hot < 0 || load[e] / copies[e] > load[hot] / copies[hot]))
        hot = e;
    if (hot < 0)
      break; // every expert is on every rank
    ++copies[hot];
  }
  struct Copy {
    int64_t expert;
    double load;
  };
  SmallVector<Copy> items;
  for (int64_t e = 0; e < numExperts; ++e)
    for (int64_t c = 0; c < copies[e]; ++c)
      items.push_back({e, load[e] / double(copies[e])});
  llvm::stable_sort(items,
                    [](const Copy &a, const Copy &b) { return a.load > b.load; });
  int64_t cap = llvm::divideCeil(int64_t(items.size()), numRanks);
  SmallVector<double> rankLoad(numRanks, 0.0);
  SmallVector<int64_t> rankCount(numRanks, 0), primary(numExperts, -1), extra;
  llvm::DenseSet<std::pair<int64_t, int64_t>> held;
  for (const Copy &item : items) {
    auto pick = [&](bool respectCap) {
      int64_t best = -1;
      for (int64_t r = 0; r < numRanks; ++r) {
        if ((respectCap && rankCount[r] >= cap) || held.contains({item.expert, r}))
          continue;
        if (best < 0 || rankLoad[r] < rankLoad[best] ||
            (rankLoad[r] == rankLoad[best] && rankCount[r] < rankCount[best]))
          best = r;
      }
      return best;
    };
    int64_t rank = pick(true);
    if (rank < 0)
      rank = pick(false); // the cap leaves no rank without this expert
    held.insert({item.expert, rank});
    rankLoad[rank] += item.load;
    ++rankCount[rank];
    if (primary[item.expert] < 0)
      primary[item.expert] = rank;
    else
      extra.append({item.expert, rank});
  }
  return {primary, extra};
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
    FailureOr<int64_t> ranks =
        getPlacementRankCount(model, "moe-expert-placement");
    if (failed(ranks))
      return signalPassFailure();
    int64_t numRanks = *ranks;
    FailureOr<ExpertProfile> read = readExpertProfile(model, profile);
    if (failed(read))
      return signalPassFailure();
    const ExpertProfile &loads = *read;
    SmallVector<int16_t> allAxes;
    for (size_t d = 0; d < grid.getShape().size(); ++d)
      allAxes.push_back(int16_t(d));

    std::set<int64_t> profiledLayers;
    for (const auto &entry : loads.routed)
      profiledLayers.insert(entry.first);
    WalkResult result = model.walk([&](ExpertsOp experts) -> WalkResult {
      if (auto layer = experts->getParentOfType<LayerOp>())
        profiledLayers.erase(layer.getIndex());
      if (experts.getInput().getDefiningOp<AllToAllOp>())
        return WalkResult::advance(); // already placed and exchanged
      int64_t numExperts = experts.getNumExperts();
      int64_t layerIndex = experts.getLayerIndex();
      SmallVector<int64_t> ranks, copies;
      int64_t slices = 1;
      if (slicing && replicas == 0 && numExperts < numRanks) {
        int64_t parts = numRanks / std::gcd(numExperts, numRanks);
        int64_t size = experts.getIntermediateSize();
        int64_t block = intermediateBlock(experts);
        if (size % parts == 0 && (size / parts) % block == 0)
          slices = parts;
        else
          LLVM_DEBUG(llvm::dbgs()
                     << "layer " << layerIndex << ": intermediate size "
                     << size << " does not split in " << parts
                     << " parts of whole quantization blocks of " << block
                     << "; experts placed whole\n");
      }
      if (slices > 1) {
        // Part q = e * S + s on rank q mod P: S consecutive parts of an
        // expert land on S different ranks (S <= P), and every rank gets
        // E * S / P parts.
        for (int64_t q = 0; q < numExperts * slices; ++q)
          ranks.push_back(q % numRanks);
      } else if (strategy == PlacementStrategy::Contiguous) {
        ranks = placeContiguous(numExperts, numRanks);
      } else if (strategy == PlacementStrategy::RoundRobin) {
        ranks = placeRoundRobin(numExperts, numRanks);
      } else {
        SmallVector<double> load(numExperts, 1.0);
        if (const SmallVector<double> *routed = loads.lookup(layerIndex)) {
          if (int64_t(routed->size()) != numExperts) {
            experts.emitError()
                << profile << ": layer " << layerIndex << " has "
                << routed->size() << " expert counts (expected " << numExperts
                << ")";
            return WalkResult::interrupt();
          }
          load = *routed;
        }
        std::tie(ranks, copies) = placeBalanced(load, numRanks, replicas);
      }
      auto placement =
          PlacementAttr::get(&getContext(), numRanks, ranks, copies, slices);
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
    if (!profiledLayers.empty() && strategy == PlacementStrategy::Balanced) {
      model.emitError() << profile << ": layer " << *profiledLayers.begin()
                        << " is not an MoE layer of the model (expected the "
                           "profile of this model)";
      signalPassFailure();
    }
  }
};

} // namespace
