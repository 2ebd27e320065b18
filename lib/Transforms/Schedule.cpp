//===- Schedule.cpp - Overlap communication with compute ------------------===//
//
// Within a layer, every combine exchange starts as soon as its expert outputs
// exist; the ops after its first user that do not depend on it (the shared
// expert of Qwen2-MoE, DeepSpeed's residual MLP, their weights) move in front
// of that user, so the runtime computes them while the collective is in
// flight on the communication stream.
//
//===----------------------------------------------------------------------===//

#include "moe/Dialect/MoEOps.h"
#include "moe/Transforms/Passes.h"

#include "mlir/IR/Builders.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"
#include "llvm/ADT/SetVector.h"
#include "llvm/Support/Debug.h"

#define DEBUG_TYPE "moe-schedule"

namespace mlir::moe {
#define GEN_PASS_DEF_MOESCHEDULEPASS
#include "moe/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {

/// Moves the ops after `exchange`'s first user that do not depend on it in
/// front of that user. Returns how many moved.
int overlap(AllToAllOp exchange) {
  Block *block = exchange->getBlock();
  Operation *firstUser = nullptr;
  for (Operation *user : exchange->getUsers())
    if (user->getBlock() == block &&
        (!firstUser || user->isBeforeInBlock(firstUser)))
      firstUser = user;
  // A staged (hierarchical) exchange overlaps from its last stage: compute
  // issued after it runs while all stages are in flight.
  if (!firstUser || isa<AllToAllOp>(firstUser))
    return 0;
  llvm::SmallPtrSet<Operation *, 16> dependent = {exchange};
  auto dependsOnExchange = [&](Operation *op) {
    return llvm::any_of(op->getOperands(), [&](Value v) {
      Operation *def = v.getDefiningOp();
      return def && dependent.contains(def);
    });
  };
  // Ops at or after the first user that stay there: anything an op moved in
  // front of it would read must not be among them.
  llvm::SmallPtrSet<Operation *, 16> stays;
  int moved = 0;
  for (Operation *op = exchange->getNextNode(); op && !op->hasTrait<OpTrait::IsTerminator>();) {
    Operation *next = op->getNextNode();
    if (dependsOnExchange(op)) {
      dependent.insert(op);
      if (!op->isBeforeInBlock(firstUser))
        stays.insert(op);
    } else if (firstUser->isBeforeInBlock(op) || op == firstUser) {
      bool readsStaying = llvm::any_of(op->getOperands(), [&](Value v) {
        Operation *def = v.getDefiningOp();
        return def && (stays.contains(def) || def == firstUser);
      });
      if (readsStaying || !isPure(op)) {
        stays.insert(op);
      } else {
        op->moveBefore(firstUser);
        ++moved;
      }
    }
    op = next;
  }
  return moved;
}

struct MoESchedulePass : mlir::moe::impl::MoESchedulePassBase<MoESchedulePass> {
  void runOnOperation() override {
    SmallVector<AllToAllOp> exchanges;
    getOperation().walk([&](AllToAllOp x) {
      if (x.getKind() == ExchangeKind::Combine)
        exchanges.push_back(x);
    });
    for (AllToAllOp x : exchanges) {
      int moved = overlap(x);
      (void)moved;
      LLVM_DEBUG(llvm::dbgs() << "moved " << moved << " ops under " << x
                              << "\n");
    }
    if (GraphOp graph = getOperation().getGraph())
      getMoEDialect(&getContext())
          .getDecodeGraphAttrHelper()
          .setAttr(graph, UnitAttr::get(&getContext()));
  }
};

} // namespace
