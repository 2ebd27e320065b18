//===- DataParallel.cpp - Data-parallel groups of a batched plan ----------===//
//
// Decides the data-parallel degree: the tensor-parallel groups of a batched
// plan take different sequences (DeepSpeed-MoE inference). The decision is
// one model attribute that the storage analysis and the plan lowering read;
// the exchanges it implies are already in the IR (moe.all_to_all).
//
//===----------------------------------------------------------------------===//

#include "moe/Dialect/MoEOps.h"
#include "moe/Plan/Program.h"
#include "moe/Transforms/Passes.h"

#include "mlir/IR/Builders.h"
#include "llvm/Support/Debug.h"

#define DEBUG_TYPE "moe-data-parallel"

namespace mlir::moe {
#define GEN_PASS_DEF_MOEDATAPARALLELPASS
#include "moe/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {

struct MoEDataParallelPass
    : mlir::moe::impl::MoEDataParallelPassBase<MoEDataParallelPass> {
  using Base::Base;
  void runOnOperation() override {
    ModelOp model = getOperation();
    int64_t ranks = plan::getNumRanks(model);
    int64_t T = plan::getTensorParallel(model);
    // One sequence at a time: every rank runs it (nothing to split).
    if (maxBatch <= 1 || ranks % T != 0 || ranks / T <= 1)
      return;
    int64_t groups = ranks / T;
    LLVM_DEBUG(llvm::dbgs() << groups << " data-parallel groups of " << T
                            << " ranks\n");
    getMoEDialect(&getContext())
        .getDataParallelAttrHelper()
        .setAttr(model, Builder(&getContext()).getI64IntegerAttr(groups));
  }
};

} // namespace
