//===- PlanMemory.cpp - Activation memory planning ------------------------===//
//
// Runs the plan lowering's buffer assignment and arena planning
// (lib/Plan/Program.cpp) and records the result in the IR, so the memory a
// plan will need is visible in --emit=mlir, in reports and in tests.
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
    std::optional<ComputeDType> computeType = parseComputeDType(dtype);
    if (!computeType) {
      model.emitError() << "moe-plan-memory: dtype '" << dtype
                        << "' is not supported (expected f32, bf16 or f16)";
      return signalPassFailure();
    }
    options.dtype = *computeType;
    for (auto grid : model.getBodyBlock().getOps<shard::GridOp>()) {
      ArrayRef<int64_t> shape = grid.getShape();
      options.devices = 1;
      for (int64_t d : shape)
        options.devices *= d;
      options.gpusPerNode = shape.back();
    }

    plan::Program program;
    if (failed(plan::buildProgram(model, options, program)))
      return signalPassFailure();
    plan::planMemory(program);

    Builder b(&getContext());
    // Byte offset in the arena of each activation result.
    llvm::DenseMap<Operation *, SmallVector<int64_t>> offsets;
    model.walk([&](Operation *op) {
      if (op->getNumResults() == 0 || isa<WeightOp, LayerOp>(op))
        return;
      SmallVector<int64_t> resultOffsets;
      for (Value result : op->getResults()) {
        auto it = program.regions.find(result);
        if (it == program.regions.end())
          return;
        const plan::Buffer &buf = program.buffers[it->second.buffer];
        int64_t elem = buf.type == plan::ElemType::F32 ||
                               buf.type == plan::ElemType::I32
                           ? 4
                           : 2;
        resultOffsets.push_back(int64_t(buf.offset) + it->second.col * elem);
      }
      op->setAttr("moe.arena_offsets", b.getDenseI64ArrayAttr(resultOffsets));
    });

    uint64_t kv = plan::kvCacheBytes(program);
    SmallVector<NamedAttribute> memory = {
        b.getNamedAttr("arena_bytes", b.getI64IntegerAttr(program.arenaBytes)),
        b.getNamedAttr("unplanned_bytes",
                       b.getI64IntegerAttr(program.unplannedBytes)),
        b.getNamedAttr("kv_cache_bytes", b.getI64IntegerAttr(kv)),
        b.getNamedAttr("max_tokens", b.getI64IntegerAttr(program.maxTokens)),
        b.getNamedAttr("max_seq_len", b.getI64IntegerAttr(program.maxSeqLen))};
    model->setAttr("moe.memory", b.getDictionaryAttr(memory));
    SmallVector<int64_t> peak;
    for (int32_t r = 0; r < int32_t(options.devices); ++r)
      peak.push_back(int64_t(plan::weightBytesOnRank(program, r) +
                             program.arenaBytes + kv));
    model->setAttr("moe.peak_bytes", b.getDenseI64ArrayAttr(peak));
  }
};

} // namespace
