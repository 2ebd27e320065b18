//===- VerifyInputLegality.cpp - Reject what the pipeline cannot take -----===//
//
// The input contract of the compiler, checked up front with a diagnostic at
// the op (as IREE's VerifyInputLegality does) instead of deep inside the
// plan lowering:
//  - every op of the graph has a plan lowering, or is a piece of the gating
//    chain that moe-fuse-gating fuses;
//  - every gating chain is one moe-fuse-gating can match, and no gating piece
//    is left outside a chain (the fusion would skip it without a word);
//  - with `before-lowering` (the run just before moe-plan-memory): nothing
//    is left unfused, and the experts read their tokens through moe.dispatch.
//
//===----------------------------------------------------------------------===//

#include "moe/Dialect/GatingChain.h"
#include "moe/Dialect/MoEOps.h"
#include "moe/Plan/Program.h"
#include "moe/Transforms/Passes.h"

#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/Support/Debug.h"

#define DEBUG_TYPE "moe-verify-input-legality"

namespace mlir::moe {
#define GEN_PASS_DEF_MOEVERIFYINPUTLEGALITYPASS
#include "moe/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {

bool isGatingPiece(Operation *op) {
  return isa<ScoresOp, TopKOp, RenormalizeOp, ScaleWeightsOp, CapacityOp,
             ExpertMapOp>(op);
}

/// Ops the plan lowering turns into steps, or that need none.
bool hasPlanLowering(Operation *op) {
  return isa<WeightOp, shard::GridOp, LayerOp, YieldOp, ReturnOp, EmbeddingOp,
             PositionEmbeddingOp, LayerNormOp, RMSNormOp, LinearOp, RouterOp,
             SplitOp, RotaryOp, AttentionOp, MLAAttentionOp, GatherColumnsOp,
             MLPOp, AddOp, LMHeadOp, GateOp,
             DispatchOp, ExpertsOp, AllToAllOp, CombineOp, SigmoidGateOp,
             ResidualMixOp>(op);
}

struct MoEVerifyInputLegalityPass
    : mlir::moe::impl::MoEVerifyInputLegalityPassBase<
          MoEVerifyInputLegalityPass> {
  using Base::Base;

  void runOnOperation() override {
    ModelOp model = getOperation();
    GraphOp graph = model.getGraph();
    if (!graph) {
      model.emitOpError("has no moe.graph to compile");
      return signalPassFailure();
    }
    bool legal = true;
    // Gating pieces that belong to a chain ending in moe.expert_map (one
    // moe-fuse-gating can fuse, or one reported as a whole).
    llvm::DenseSet<Operation *> fusible;
    graph.walk([&](ExpertMapOp map) {
      std::string why;
      FailureOr<GatingChain> chain = matchGatingChain(map, why);
      if (succeeded(chain)) {
        fusible.insert(chain->ops.begin(), chain->ops.end());
        return;
      }
      // The pieces of a chain reported here are not reported one by one.
      SmallVector<Operation *> worklist = {map};
      while (!worklist.empty()) {
        Operation *op = worklist.pop_back_val();
        if (!fusible.insert(op).second)
          continue;
        for (Value operand : op->getOperands())
          if (Operation *def = operand.getDefiningOp(); def && isGatingPiece(def))
            worklist.push_back(def);
        for (Operation *user : op->getUsers())
          if (isGatingPiece(user))
            worklist.push_back(user);
      }
      if (!beforeLowering) {
        map.emitOpError("ends a gating chain moe-fuse-gating cannot fuse: ")
            << why << " (expected scores -> top_k -> [renormalize] -> "
            << "[capacity] -> expert_map, each result used only by the next)";
        legal = false;
      }
    });
    graph.walk([&](Operation *op) {
      if (op == graph.getOperation())
        return;
      if (isGatingPiece(op)) {
        if (beforeLowering) {
          op->emitOpError("is an unfused gating piece: run moe-fuse-gating "
                          "before lowering to a plan");
          legal = false;
        } else if (!fusible.contains(op) && !isa<ExpertMapOp>(op)) {
          op->emitOpError("is not part of a gating chain ending in "
                          "moe.expert_map (moe-fuse-gating would leave it "
                          "unfused, and the runtime cannot run it alone)");
          legal = false;
        }
        return;
      }
      if (!hasPlanLowering(op)) {
        op->emitOpError("cannot be executed by the runtime (no plan step "
                        "lowers it)");
        legal = false;
        return;
      }
      if (!beforeLowering)
        return;
      if (auto experts = dyn_cast<ExpertsOp>(op))
        if (!plan::getDispatch(experts.getInput())) {
          experts.emitOpError("input must come from moe.dispatch (the "
                              "runtime gathers token rows through the "
                              "mapping table)");
          legal = false;
        }
    });
    LLVM_DEBUG(llvm::dbgs() << "moe-verify-input-legality: "
                            << (legal ? "legal" : "illegal") << "\n");
    if (!legal)
      signalPassFailure();
  }
};

} // namespace
