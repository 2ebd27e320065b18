//===- LoweringComm.cpp - Expert-parallel exchanges -----------------------===//
//
// The communication family of the plan lowering. At batch 1 tokens are
// replicated on every rank (attention and dense layers run everywhere, as
// DeepSpeed-MoE inference does for small batches), so a dispatch exchange
// moves nothing and a combine exchange is a sum over the group of per-slot
// expert outputs, each computed by exactly one rank: an AllReduceSum on the
// communication stream that is bitwise equal to one rank.
//
//===----------------------------------------------------------------------===//

#include "Lowering.h"

#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "mlir/IR/SymbolTable.h"

using namespace mlir;
using namespace mlir::moe;
using namespace mlir::moe::plan;

std::vector<int32_t> CollectiveStep::groupOf(int32_t rank,
                                             int32_t numRanks) const {
  if (tensorParallel > 0) {
    // T consecutive ranks (Megatron's groups, inside a node when T divides
    // the ranks per node).
    std::vector<int32_t> group;
    for (int32_t r = rank - rank % tensorParallel;
         r < rank - rank % tensorParallel + tensorParallel && r < numRanks; ++r)
      group.push_back(r);
    return group;
  }
  // Grid coordinates of a rank (row-major, as shard.grid numbers devices).
  auto coords = [&](int64_t r) {
    SmallVector<int64_t> c(gridShape.size());
    for (int64_t d = int64_t(gridShape.size()) - 1; d >= 0; --d) {
      c[d] = r % gridShape[d];
      r /= gridShape[d];
    }
    return c;
  };
  // The ranks sharing this rank's coordinates outside `axes`.
  SmallVector<int64_t> mine = coords(rank);
  std::vector<int32_t> group;
  for (int64_t r = 0; r < numRanks; ++r) {
    SmallVector<int64_t> c = coords(r);
    bool same = true;
    for (size_t d = 0; d < gridShape.size(); ++d)
      if (!llvm::is_contained(axes, int16_t(d)) && c[d] != mine[d])
        same = false;
    if (same)
      group.push_back(int32_t(r));
  }
  return group;
}

LogicalResult Lowering::lowerExchange(AllToAllOp x) {
  if (x.getKind() == ExchangeKind::Dispatch)
    return success(); // tokens are replicated on every rank: nothing moves
  int buf = bufferOf(x.getInput(), x);
  if (buf < 0)
    return failure();
  auto grid =
      SymbolTable::lookupNearestSymbolFrom<shard::GridOp>(x, x.getGridAttr());
  if (!grid)
    return x.emitOpError("grid not found");
  CollectiveStep step;
  step.buf = buf;
  step.gridShape.assign(grid.getShape().begin(), grid.getShape().end());
  step.axes.assign(x.getGridAxes().begin(), x.getGridAxes().end());
  size_t dims = step.gridShape.size();
  step.level = step.axes.size() == dims ? "flat"
               : (step.axes.size() == 1 && step.axes[0] == int16_t(dims - 1))
                   ? "intra-node"
                   : "inter-node";
  std::string name = stepName("moe.combine_exchange." + step.level);
  addStep(x, std::move(name), {buf}, {buf}, std::move(step), Stream::Comm);
  return success();
}
