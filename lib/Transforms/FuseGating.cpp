//===- FuseGating.cpp - Fuse the gating chain into moe.gate ---------------===//
//
// Rewrites scores -> top_k -> [renormalize] -> [capacity] -> expert_map into
// one moe.gate carrying a #moe.routing (DeepSpeed-MoE's fused gating kernel
// with a dense token-to-expert mapping table). One pattern rooted at
// expert_map, applied with the greedy driver: each MoE layer has one chain and
// the rewrite only removes ops.
//
//===----------------------------------------------------------------------===//

#include "moe/Dialect/MoEOps.h"
#include "moe/Transforms/Passes.h"

#include "mlir/IR/PatternMatch.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"
#include "llvm/Support/Debug.h"

#define DEBUG_TYPE "moe-fuse-gating"

namespace mlir::moe {
#define GEN_PASS_DEF_MOEFUSEGATINGPASS
#include "moe/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {

/// True when every user of `v` is one of `allowed`.
bool onlyUsedBy(Value v, ArrayRef<Operation *> allowed) {
  return llvm::all_of(v.getUsers(), [&](Operation *user) {
    return llvm::is_contained(allowed, user);
  });
}

struct FuseGatingChain : OpRewritePattern<ExpertMapOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(ExpertMapOp map,
                                PatternRewriter &rewriter) const override {
    // Walk up from the mapping table: expert ids come from top_k, either
    // directly or (with capacity) through the capacity op's admission mask.
    auto topK = map.getIndices().getDefiningOp<TopKOp>();
    if (!topK)
      return rewriter.notifyMatchFailure(map, "expert ids not from moe.top_k");
    CapacityOp capacity;
    if (Value admitted = map.getAdmitted()) {
      capacity = admitted.getDefiningOp<CapacityOp>();
      if (!capacity || capacity.getIndices() != topK.getIndices())
        return rewriter.notifyMatchFailure(map, "admission mask not from "
                                                "moe.capacity of the same ids");
    }

    // Scores before or after the top-k.
    Value logits;
    ScoreFn score = ScoreFn::Softmax;
    bool scoreBeforeTopk = true;
    ScoresOp scores = topK.getInput().getDefiningOp<ScoresOp>();
    Value weights = topK.getValues();
    SmallVector<Operation *> chain = {topK, map};
    if (scores) {
      logits = scores.getInput();
      score = scores.getFn();
      if (!onlyUsedBy(scores.getResult(), {topK}))
        return rewriter.notifyMatchFailure(map, "scores used elsewhere");
      chain.push_back(scores);
    } else {
      // top_k on the raw logits, then scores over the k picked values.
      logits = topK.getInput();
      if (!weights.hasOneUse())
        return rewriter.notifyMatchFailure(map, "top-k values used elsewhere");
      auto after = dyn_cast<ScoresOp>(*weights.getUsers().begin());
      if (!after)
        return rewriter.notifyMatchFailure(map, "no score function");
      score = after.getFn();
      scoreBeforeTopk = false;
      weights = after.getResult();
      chain.push_back(after);
    }

    // Optional renormalization, then optional capacity, on the weights.
    bool renormalize = false;
    if (weights.hasOneUse())
      if (auto renorm = dyn_cast<RenormalizeOp>(*weights.getUsers().begin())) {
        renormalize = true;
        weights = renorm.getResult();
        chain.push_back(renorm);
      }
    if (capacity) {
      if (capacity.getWeights() != weights || !weights.hasOneUse())
        return rewriter.notifyMatchFailure(map, "capacity does not take the "
                                                "final routing weights");
      chain.push_back(capacity);
      weights = capacity.getResult();
      if (!onlyUsedBy(capacity.getAdmitted(), {map}))
        return rewriter.notifyMatchFailure(map, "admission mask used "
                                                "elsewhere");
    }
    // The expert ids may feed the capacity and the map only.
    if (!onlyUsedBy(topK.getIndices(), chain))
      return rewriter.notifyMatchFailure(map, "expert ids used elsewhere");

    int64_t k = topK.getK();
    RoutingAttr routing =
        capacity ? RoutingAttr::get(getContext(), k, score, scoreBeforeTopk,
                                    renormalize,
                                    capacity.getCapacityFactor().convertToDouble(),
                                    capacity.getMinCapacity(),
                                    /*dropTokens=*/true)
                 : RoutingAttr::get(getContext(), k, score, scoreBeforeTopk,
                                    renormalize);

    rewriter.setInsertionPoint(map);
    auto gate = GateOp::create(rewriter, map.getLoc(),
                               topK.getIndices().getType(), weights.getType(),
                               map.getExpertOffsets().getType(),
                               map.getSortedSlots().getType(), logits, routing);
    LLVM_DEBUG(llvm::dbgs() << "fused " << chain.size() << " gating ops into "
                            << gate << "\n");
    rewriter.replaceAllUsesWith(weights, gate.getSlotWeight());
    rewriter.replaceAllUsesWith(map.getExpertOffsets(),
                                gate.getExpertOffsets());
    rewriter.replaceAllUsesWith(map.getSortedSlots(), gate.getSortedSlots());
    // Erase users before producers.
    llvm::sort(chain, [](Operation *a, Operation *b) {
      return b->isBeforeInBlock(a);
    });
    for (Operation *op : chain)
      rewriter.eraseOp(op);
    return success();
  }
};

struct MoEFuseGatingPass
    : mlir::moe::impl::MoEFuseGatingPassBase<MoEFuseGatingPass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    patterns.add<FuseGatingChain>(&getContext());
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};

} // namespace
