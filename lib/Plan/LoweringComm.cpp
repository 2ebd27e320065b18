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

std::vector<int32_t> mlir::moe::plan::tensorParallelGroup(int32_t rank, int32_t T,
                                                          int32_t numRanks) {
  std::vector<int32_t> group;
  for (int32_t r = rank - rank % T; r < rank - rank % T + T && r < numRanks; ++r)
    group.push_back(r);
  return group;
}

std::vector<int32_t> CollectiveStep::groupOf(int32_t rank,
                                             int32_t numRanks) const {
  if (tensorParallel > 0)
    return tensorParallelGroup(rank, tensorParallel, numRanks);
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

/// Data-parallel groups: the dispatch/combine pair of a MoE layer as two
/// AllToAllV steps over all ranks (the first dispatch stage and the last
/// combine stage carry them; moe-comm-hierarchy's other stages add none).
std::optional<Lowering::ExchangeBuffers>
Lowering::exchangeBuffers(AllToAllOp xchg) const {
  auto it = xchg ? storage.scratch.find(xchg) : storage.scratch.end();
  if (it == storage.scratch.end() || it->second.size() != 6)
    return std::nullopt;
  ArrayRef<int> b = it->second;
  return ExchangeBuffers{b[0], b[1], b[2], b[3], b[4], b[5]};
}

LogicalResult Lowering::lowerDataParallelExchange(AllToAllOp x) {
  bool dispatch = x.getKind() == ExchangeKind::Dispatch;
  AllToAllOp first = x;
  ExpertsOp experts;
  if (dispatch) {
    if (getDispatchExchange(x.getResult()) != x)
      return success();
  } else {
    for (Operation *u : x->getUsers())
      if (auto next = dyn_cast<AllToAllOp>(u);
          next && next.getKind() == ExchangeKind::Combine)
        return success();
    experts = getCombinedExperts(x.getInput());
    first = experts ? getDispatchExchange(experts.getInput()) : AllToAllOp();
  }
  std::optional<ExchangeBuffers> xs = exchangeBuffers(first);
  if (!xs)
    return x.emitOpError("data-parallel exchange without its buffers (expected "
                         "moe-plan-memory's record on the dispatch exchange)");
  DispatchOp d = getDispatch(first.getInput());
  AllToAllVStep step;
  step.dispatch = dispatch;
  step.sendSlots = xs->sendSlots;
  step.counts = xs->counts;
  step.relay = xs->relay;
  // moe-comm-hierarchy split the pair (its first dispatch stage is within
  // the node): the two-stage form over the grid's nodes.
  auto grid =
      SymbolTable::lookupNearestSymbolFrom<shard::GridOp>(first, first.getGridAttr());
  if (grid && grid.getShape().size() == 2 && first.getGridAxes().size() == 1)
    step.ranksPerNode = int(grid.getShape()[1]);
  step.topK = int(d.getTopK());
  step.numExperts = int(first.getNumExperts());
  step.tensorParallel = int(p.tensorParallel);
  PlacementAttr placement = first.getPlacement();
  step.slices = placement ? int(placement.getSlices()) : 1;
  step.targetOffsets.push_back(0);
  for (int64_t e = 0; e < step.numExperts; ++e) {
    SmallVector<int64_t> copies;
    if (placement)
      copies = placement.getCopies(e);
    if (copies.empty())
      return x.emitOpError("expert ") << e << " has no rank in the placement";
    step.targets.insert(step.targets.end(), copies.begin(), copies.end());
    step.targetOffsets.push_back(int32_t(step.targets.size()));
  }
  if (dispatch) {
    step.in = bufferOf(d.getInput(), x);
    step.sorted = bufferOf(d.getSortedSlots(), x);
    step.offsets = bufferOf(x.getExpertOffsets(), x);
    if (step.in < 0 || step.sorted < 0 || step.offsets < 0)
      return failure();
    step.out = xs->recv;
    step.recvSorted = xs->recvSorted;
    step.recvOffsets = xs->recvOffsets;
    SmallVector<int> reads = {step.in, step.sorted, step.offsets};
    SmallVector<int> writes = {xs->recv,      xs->recvSorted, xs->recvOffsets,
                               xs->sendSlots, xs->counts,     xs->relay};
    addStep(x, stepName("moe.dispatch_exchange"), reads, writes,
            std::move(step), Stream::Comm);
    return success();
  }
  step.in = bufferOf(x.getInput(), x);
  step.out = bufferOf(x.getResult(), x);
  if (step.in < 0 || step.out < 0)
    return failure();
  int out = step.out;
  SmallVector<int> reads = {step.in, xs->sendSlots, xs->counts, xs->relay};
  addStep(x, stepName("moe.combine_exchange"), reads, {out}, std::move(step),
          Stream::Comm);
  // Each member filled the slots of its rows: the group sums them.
  if (p.tensorParallel > 1)
    addTensorParallelAllReduce(x, out, stepName("moe.slots"));
  return success();
}

LogicalResult Lowering::lowerExchange(AllToAllOp x) {
  if (p.dataParallel > 1)
    return lowerDataParallelExchange(x);
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
