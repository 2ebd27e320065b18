//===- moe-opt.cpp - mlir-opt for the moe dialect -------------------------===//
//
// MlirOptMain with the moe dialect, the moe passes and pipelines, the upstream
// transforms (canonicalize, cse, ...) and the shard dialect (device grids).
// `--load-pass-plugin=lib.so` loads further passes.
//
//===----------------------------------------------------------------------===//

#include "moe/Dialect/MoEOps.h"
#include "moe/Transforms/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Shard/IR/ShardDialect.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"
#include "mlir/Transforms/Passes.h"

int main(int argc, char **argv) {
  mlir::registerTransformsPasses();
  mlir::moe::registerMoEPasses();
  mlir::moe::registerMoEPipelines();

  mlir::DialectRegistry registry;
  // func: lets tests exercise single ops on function arguments.
  registry.insert<mlir::moe::MoEDialect, mlir::shard::ShardDialect,
                  mlir::func::FuncDialect>();
  return mlir::asMainReturnCode(
      mlir::MlirOptMain(argc, argv, "moe optimizer driver\n", registry));
}
