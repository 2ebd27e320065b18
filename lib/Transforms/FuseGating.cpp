//===- FuseGating.cpp - Fuse the gating chain into moe.gate ---------------===//
//
// Rewrites scores -> top_k -> [renormalize] -> [capacity] -> expert_map into
// one moe.gate carrying a #moe.routing (DeepSpeed-MoE's fused gating kernel
// with a dense token-to-expert mapping table). One pattern rooted at
// expert_map (the matcher, shared with moe-verify-input-legality, is in
// lib/Dialect/GatingChain.cpp), applied with the greedy driver: each MoE
// layer has one chain and the rewrite only removes ops.
//
//===----------------------------------------------------------------------===//

#include "moe/Dialect/GatingChain.h"
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

struct FuseGatingChain : OpRewritePattern<ExpertMapOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(ExpertMapOp map,
                                PatternRewriter &rewriter) const override {
    std::string why;
    FailureOr<GatingChain> chain = matchGatingChain(map, why);
    if (failed(chain))
      return rewriter.notifyMatchFailure(map, why);

    int64_t k = chain->topK.getK();
    CapacityOp capacity = chain->capacity;
    RoutingAttr routing = RoutingAttr::get(
        getContext(), k, chain->score, chain->scoreBeforeTopk,
        chain->renormalize,
        capacity ? capacity.getCapacityFactor().convertToDouble() : 0.0,
        capacity ? capacity.getMinCapacity() : 0,
        /*dropTokens=*/bool(capacity), chain->nGroup, chain->topkGroup,
        chain->routedScalingFactor);

    rewriter.setInsertionPoint(map);
    auto gate = GateOp::create(
        rewriter, map.getLoc(), chain->topK.getIndices().getType(),
        chain->weights.getType(), map.getExpertOffsets().getType(),
        map.getSortedSlots().getType(), chain->logits, routing,
        chain->selectionBias);
    LLVM_DEBUG(llvm::dbgs() << "fused " << chain->ops.size()
                            << " gating ops into " << gate << "\n");
    rewriter.replaceAllUsesWith(chain->weights, gate.getSlotWeight());
    rewriter.replaceAllUsesWith(map.getExpertOffsets(),
                                gate.getExpertOffsets());
    rewriter.replaceAllUsesWith(map.getSortedSlots(), gate.getSortedSlots());
    // Erase users before producers.
    SmallVector<Operation *> ops = chain->ops;
    llvm::sort(ops, [](Operation *a, Operation *b) {
      return b->isBeforeInBlock(a);
    });
    for (Operation *op : ops)
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
