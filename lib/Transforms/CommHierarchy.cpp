//===- CommHierarchy.cpp - Hierarchical expert exchanges ------------------===//
//
// Splits every flat exchange over a [nodes, gpus_per_node] grid into an
// intra-node stage (axis 1) and an inter-node stage among ranks with the same
// local index (axis 0): (G-1) + (P/G-1) hops per rank instead of P-1, and
// P/G-1 messages instead of P-G on the slow inter-node links (DeepSpeed-MoE's
// hierarchical all-to-all). Dispatch goes intra-node first so the inter-node
// stage carries node-aggregated messages; combine mirrors it.
//
//===----------------------------------------------------------------------===//

#include "moe/Dialect/MoEOps.h"
#include "moe/Transforms/Passes.h"

#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/SymbolTable.h"
#include "llvm/Support/Debug.h"

#define DEBUG_TYPE "moe-comm-hierarchy"

namespace mlir::moe {
#define GEN_PASS_DEF_MOECOMMHIERARCHYPASS
#include "moe/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {

struct MoECommHierarchyPass
    : mlir::moe::impl::MoECommHierarchyPassBase<MoECommHierarchyPass> {
  void runOnOperation() override {
    SmallVector<AllToAllOp> flat;
    getOperation().walk([&](AllToAllOp x) {
      auto grid = SymbolTable::lookupNearestSymbolFrom<shard::GridOp>(
          x, x.getGridAttr());
      ArrayRef<int64_t> shape = grid.getShape();
      // Only a real two-level grid with an exchange over both levels splits.
      if (shape.size() == 2 && shape[0] > 1 && shape[1] > 1 &&
          x.getGridAxes().size() == 2)
        flat.push_back(x);
    });
    for (AllToAllOp x : flat) {
      bool dispatch = x.getKind() == ExchangeKind::Dispatch;
      SmallVector<int16_t> first = {dispatch ? int16_t(1) : int16_t(0)};
      SmallVector<int16_t> second = {dispatch ? int16_t(0) : int16_t(1)};
      OpBuilder b(x);
      auto stage1 = AllToAllOp::create(b, x.getLoc(), x.getKind(), x.getInput(),
                                       x.getExpertOffsets(), x.getGrid(),
                                       first, x.getPlacement());
      auto stage2 = AllToAllOp::create(b, x.getLoc(), x.getKind(),
                                       stage1.getResult(), x.getExpertOffsets(),
                                       x.getGrid(), second, x.getPlacement());
      LLVM_DEBUG(llvm::dbgs() << "split " << x << "\n");
      x.getResult().replaceAllUsesWith(stage2.getResult());
      x.erase();
    }
  }
};

} // namespace
