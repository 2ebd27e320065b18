//===- PrintReport.cpp - moe-print-report ---------------------------------===//

#include "moe/Analysis/CostModel.h"
#include "moe/Transforms/Passes.h"

#include "llvm/Support/FormatVariadic.h"

namespace mlir::moe {
#define GEN_PASS_DEF_MOEPRINTREPORTPASS
#include "moe/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {
struct MoEPrintReportPass
    : mlir::moe::impl::MoEPrintReportPassBase<MoEPrintReportPass> {
  using Base::Base;

  void runOnOperation() override {
    if (int64_t(contextLength) < 0) {
      emitError(UnknownLoc::get(&getContext()))
          << "moe-print-report: context-length must be >= 0 (got "
          << int64_t(contextLength) << ")";
      return signalPassFailure();
    }
    for (ModelOp model : getOperation().getOps<ModelOp>()) {
      ModelCost cost = analyzeModel(model, contextLength);
      if (json)
        llvm::outs() << llvm::formatv("{0:2}", toJSON(cost)) << "\n";
      else
        printReport(llvm::outs(), cost);
    }
    markAllAnalysesPreserved();
  }
};
} // namespace
