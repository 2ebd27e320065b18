//===- moe-place-experts.cpp - a tool linking the installed moe libraries -===//
//
// moe-place-experts FILE.mlir: runs moe-expert-placement and prints each
// MoE layer's experts per rank, read through MoEOpInterface.
//
//===----------------------------------------------------------------------===//

#include "moe/Dialect/MoEOps.h"
#include "moe/Transforms/Passes.h"

#include "mlir/Dialect/Shard/IR/ShardDialect.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/Support/raw_ostream.h"

using namespace mlir;

int main(int argc, char **argv) {
  if (argc != 2) {
    llvm::errs() << "usage: moe-place-experts FILE.mlir\n";
    return 1;
  }
  MLIRContext context;
  context.loadDialect<moe::MoEDialect, shard::ShardDialect>();
  OwningOpRef<ModuleOp> module = parseSourceFile<ModuleOp>(argv[1], &context);
  if (!module)
    return 1;
  PassManager pm(&context);
  pm.nest<moe::ModelOp>().addPass(moe::createMoEExpertPlacementPass());
  if (failed(pm.run(*module)))
    return 1;
  module->walk([](moe::LayerOp layer) {
    for (moe::MoEOpInterface op : layer.getMoEOps()) {
      moe::PlacementAttr placement = op.getExpertPlacement();
      if (!placement || !op.getParamsPerExpert())
        continue;
      llvm::SmallVector<int64_t> perRank(placement.getNumRanks(), 0);
      for (int64_t rank : placement.getExpertRanks())
        ++perRank[rank];
      llvm::outs() << "layer " << op.getLayerIndex() << ": "
                   << op.getNumExperts() << " experts, per rank";
      for (int64_t n : perRank)
        llvm::outs() << " " << n;
      llvm::outs() << "\n";
    }
  });
  return 0;
}
