//===- PlanMemory.cpp - Activation memory planning ------------------------===//
//
// Runs the plan lowering's storage analysis (lib/Plan/Storage.cpp: buffer
// assignment, in-place reuse, q/k/v packing, arena offsets) once and records
// it in the IR, where the plan emitter and moe-layer-streaming read it and
// reports and tests see it: `moe.buffers`, `moe.slices`, `moe.scratch`,
// `moe.memory` and `moe.peak_bytes` (per rank: weights + arena + KV cache).
//
//===----------------------------------------------------------------------===//

#include "moe/Dialect/MoEOps.h"
#include "moe/Plan/Program.h"
#include "moe/Transforms/Passes.h"

#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "mlir/IR/Builders.h"

namespace mlir::moe {
#define GEN_PASS_DEF_MOEPLANMEMORYPASS
#include "moe/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {

struct MoEPlanMemoryPass : mlir::moe::impl::MoEPlanMemoryPassBase<MoEPlanMemoryPass> {
  using Base::Base;

  void runOnOperation() override {
    ModelOp model = getOperation();
    CompileOptions options;
    options.maxSeqLen = maxSeqLen;
    options.maxBatch = maxBatch;
    options.kvPageSize = kvPageSize;
    options.kvPages = kvPages;
    options.dtype = dtype;
    int64_t ranks = getGridRankCount(model);
    if (ranks < 1) {
      model.emitError("moe-plan-memory: the device grid must have static, "
                      "positive sizes");
      return signalPassFailure();
    }
    options.devices = ranks;

    FailureOr<std::vector<plan::Weight>> weights =
        plan::buildWeightTable(model, options.dtype);
    if (failed(weights))
      return signalPassFailure();
    FailureOr<plan::Storage> storage = plan::analyzeStorage(model, options);
    if (failed(storage))
      return signalPassFailure();
    plan::writeStorage(model, *storage);

    SmallVector<int64_t> peak;
    for (uint64_t bytes : plan::weightBytesPerRank(*weights, options.devices))
      peak.push_back(
          int64_t(bytes + storage->arenaBytes + storage->kvCacheBytes));
    getMoEDialect(&getContext())
        .getPeakBytesAttrHelper()
        .setAttr(model, Builder(&getContext()).getDenseI64ArrayAttr(peak));
  }
};

} // namespace
