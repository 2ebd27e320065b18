//===- LayerStreaming.cpp - Stream weights beyond the memory budget -------===//
//
// Decides which weights a rank keeps resident and which it streams when the
// model does not fit its memory budget. Per token, an on-demand MoE layer
// reads only its routed experts (top_k of E), a streamed dense layer reads all
// of its weights, so experts go first, largest layers first; dense layers
// follow only if that is not enough. The plan lowering turns the decisions
// into Prefetch/Evict steps on the streaming stream and on-demand Experts
// steps. The activations come from moe-plan-memory's record (moe.memory),
// which runs before this pass: what streams changes no buffer.
//
//===----------------------------------------------------------------------===//

#include "moe/Dialect/MoEOps.h"
#include "moe/Plan/Program.h"
#include "moe/Transforms/Passes.h"

#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "mlir/IR/Builders.h"
#include "llvm/Support/Debug.h"

#include <numeric>

#define DEBUG_TYPE "moe-layer-streaming"

namespace mlir::moe {
#define GEN_PASS_DEF_MOELAYERSTREAMINGPASS
#include "moe/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {

struct LayerBytes {
  LayerOp layer;
  ExpertsOp experts;              // null for dense layers
  SmallVector<uint64_t> dense;    // per rank
  SmallVector<uint64_t> expert;   // per rank: all local experts
  SmallVector<uint64_t> oneExpert; // per rank: the largest local expert
};

struct MoELayerStreamingPass
    : mlir::moe::impl::MoELayerStreamingPassBase<MoELayerStreamingPass> {
  using Base::Base;

  void runOnOperation() override;
};

void MoELayerStreamingPass::runOnOperation() {
  if (memoryBudget == 0)
    return;
  ModelOp model = getOperation();
  ComputeDType computeType = dtype;
  int64_t ranks = getGridRankCount(model);
  if (ranks < 1) {
    model.emitError("moe-layer-streaming: the device grid must have static, "
                    "positive sizes");
    return signalPassFailure();
  }
  if (lookahead < 0) {
    model.emitError("moe-layer-streaming: lookahead must be >= 0");
    return signalPassFailure();
  }

  // The activations as moe-plan-memory planned them (it runs first: neither
  // the arena nor the KV caches depend on what streams).
  FailureOr<uint64_t> activations = plan::recordedActivationBytes(model);
  if (failed(activations))
    return signalPassFailure();
  FailureOr<std::vector<plan::Weight>> weightTable =
      plan::buildWeightTable(model, computeType);
  if (failed(weightTable))
    return signalPassFailure();

  // Weight index of every param, in declaration order (as the plan numbers
  // them), and the bytes each rank holds of it.
  llvm::DenseMap<StringAttr, int> paramIndex;
  for (ParamOp param : model.getBodyBlock().getOps<ParamOp>())
    paramIndex[param.getSymNameAttr()] = int(paramIndex.size());
  std::vector<std::vector<uint64_t>> perRank;
  for (const plan::Weight &weight : *weightTable)
    perRank.push_back(weight.bytesPerRank(ranks));
  auto bytesOn = [&](int w, int64_t rank) -> uint64_t {
    return perRank[size_t(w)][size_t(rank)];
  };

  SmallVector<uint64_t> global(ranks, 0);
  llvm::DenseSet<int> inLayers;
  SmallVector<LayerBytes> layers;
  model.walk([&](LayerOp layer) {
    LayerBytes lb{layer, nullptr, SmallVector<uint64_t>(ranks, 0),
                  SmallVector<uint64_t>(ranks, 0),
                  SmallVector<uint64_t>(ranks, 0)};
    llvm::DenseSet<int> seen;
    layer.walk([&](ExpertsOp experts) {
      lb.experts = experts;
      // Stacked weights: expert e is slice e of each (all of one size).
      int64_t numExperts = experts.getNumExperts();
      for (Value v : experts.getExpertWeights()) {
        int w = paramIndex.lookup(
            v.getDefiningOp<WeightOp>().getParamAttr().getAttr());
        if (!seen.insert(w).second)
          continue;
        const plan::Weight &weight = (*weightTable)[w];
        uint64_t slice = weight.bytes() / uint64_t(numExperts);
        for (int64_t r = 0; r < ranks; ++r) {
          lb.expert[r] += bytesOn(w, r);
          lb.oneExpert[r] += bytesOn(w, r) ? slice : 0;
        }
      }
    });
    // A tensor-parallel sliced whole is held by no rank: each member holds
    // (and streams) its part, which the table appends after the params.
    layer.walk([&](WeightOp weight) {
      int param = paramIndex.lookup(weight.getParamAttr().getAttr());
      for (int w : plan::heldWeights(*weightTable, {int32_t(param)})) {
        inLayers.insert(w);
        if (!seen.insert(w).second)
          continue;
        for (int64_t r = 0; r < ranks; ++r)
          lb.dense[r] += bytesOn(w, r);
      }
    });
    layers.push_back(std::move(lb));
  });
  for (int w = 0; w < int(weightTable->size()); ++w)
    if (!inLayers.contains(w))
      for (int64_t r = 0; r < ranks; ++r)
        global[r] += bytesOn(w, r);

  SmallVector<bool> onDemand(layers.size(), false), streamed(layers.size(), false);
  // What a rank needs under the current decisions: resident weights, the
  // activations, a cache for two on-demand experts and room for lookahead+1
  // streamed layers in flight.
  auto need = [&](int64_t r) {
    uint64_t total = global[r] + *activations, cache = 0, inFlight = 0;
    for (auto [i, lb] : llvm::enumerate(layers)) {
      if (!onDemand[i])
        total += lb.expert[r];
      else
        cache = std::max(cache, 2 * lb.oneExpert[r]);
      if (!streamed[i])
        total += lb.dense[r];
      else
        inFlight = std::max(inFlight, lb.dense[r]);
    }
    return total + cache + uint64_t(lookahead + 1) * inFlight;
  };
  auto worst = [&] {
    uint64_t m = 0;
    for (int64_t r = 0; r < ranks; ++r)
      m = std::max(m, need(r));
    return m;
  };
  uint64_t all = worst();
  if (all <= memoryBudget)
    return; // everything fits
  auto largestFirst = [&](auto bytesOf) {
    SmallVector<size_t> order(layers.size());
    std::iota(order.begin(), order.end(), 0);
    llvm::stable_sort(order, [&](size_t a, size_t b) {
      return bytesOf(layers[a]) > bytesOf(layers[b]);
    });
    return order;
  };
  auto maxOverRanks = [&](const SmallVector<uint64_t> &v) {
    return *llvm::max_element(v);
  };
  for (size_t i : largestFirst([&](const LayerBytes &lb) {
         return maxOverRanks(lb.expert);
       })) {
    if (worst() <= memoryBudget)
      break;
    if (layers[i].experts)
      onDemand[i] = true;
  }
  for (size_t i : largestFirst([&](const LayerBytes &lb) {
         return maxOverRanks(lb.dense);
       })) {
    if (worst() <= memoryBudget)
      break;
    streamed[i] = true;
  }
  uint64_t peak = worst();
  if (peak > memoryBudget) {
    model.emitError() << "memory budget of " << formatBytes(memoryBudget)
                      << " per rank is too small: with every layer streamed a "
                      << "rank still needs " << formatBytes(peak)
                      << " (resident weights, activations and KV cache, "
                      << "streaming buffers)";
    return signalPassFailure();
  }

  Builder b(&getContext());
  MoEDialect &moe = getMoEDialect(&getContext());
  uint64_t streamedBytes = 0;
  for (auto [i, lb] : llvm::enumerate(layers)) {
    if (onDemand[i]) {
      moe.getOnDemandAttrHelper().setAttr(lb.experts, b.getUnitAttr());
      streamedBytes += maxOverRanks(lb.expert);
    }
    if (streamed[i]) {
      moe.getPrefetchDistanceAttrHelper().setAttr(
          lb.layer, b.getI64IntegerAttr(lookahead));
      streamedBytes += maxOverRanks(lb.dense);
    }
    LLVM_DEBUG(llvm::dbgs() << "layer " << lb.layer.getIndex()
                            << (onDemand[i] ? " experts on demand" : "")
                            << (streamed[i] ? " dense streamed" : "") << "\n");
  }
  moe.getStreamingAttrHelper().setAttr(
      model, b.getDictionaryAttr(
                     {b.getNamedAttr("budget_bytes",
                                     b.getI64IntegerAttr(memoryBudget)),
                      b.getNamedAttr("unstreamed_bytes", b.getI64IntegerAttr(all)),
                      b.getNamedAttr("peak_bytes", b.getI64IntegerAttr(peak)),
                      b.getNamedAttr("streamed_weight_bytes",
                                     b.getI64IntegerAttr(streamedBytes))}));
}

} // namespace
