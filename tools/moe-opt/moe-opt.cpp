//===- moe-opt.cpp - mlir-opt for the moe dialect -------------------------===//
//
// MlirOptMain with the moe dialect, the moe passes and pipelines, the upstream
// transforms (canonicalize, cse, ...) and the shard dialect (device grids).
// `--load-pass-plugin=lib.so` loads further passes.
//
// The input is checked for nesting depth before the recursive MLIR parser
// sees it: a few thousand nested regions or brackets overflow its stack.
//
//===----------------------------------------------------------------------===//

#include "moe/Compiler/InputLimits.h"
#include "moe/Dialect/MoEOps.h"
#include "moe/Transforms/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Shard/IR/ShardDialect.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/Support/FileUtilities.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"
#include "mlir/Transforms/Passes.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/ToolOutputFile.h"

int main(int argc, char **argv) {
  mlir::registerTransformsPasses();
  mlir::moe::registerMoEPasses();
  mlir::moe::registerMoEPipelines();

  mlir::DialectRegistry registry;
  // func: lets tests exercise single ops on function arguments.
  registry.insert<mlir::moe::MoEDialect, mlir::shard::ShardDialect,
                  mlir::func::FuncDialect>();
  auto [inputFilename, outputFilename] = mlir::registerAndParseCLIOptions(
      argc, argv, "moe optimizer driver\n", registry);
  mlir::MlirOptMainConfig config = mlir::MlirOptMainConfig::createFromCLOptions();
  if (config.shouldShowDialects() || config.shouldListPasses())
    return mlir::asMainReturnCode(
        mlir::MlirOptMain(argc, argv, inputFilename, outputFilename, registry));

  llvm::InitLLVM init(argc, argv);
  std::string errorMessage;
  std::unique_ptr<llvm::MemoryBuffer> input =
      mlir::openInputFile(inputFilename, &errorMessage);
  if (!input) {
    llvm::errs() << errorMessage << "\n";
    return 1;
  }
  if (std::optional<size_t> at = mlir::moe::findDeepNesting(input->getBuffer())) {
    auto [line, column] = mlir::moe::lineAndColumn(input->getBuffer(), *at);
    llvm::errs() << input->getBufferIdentifier() << ":" << line << ":" << column
                 << ": error: brackets nested deeper than "
                 << mlir::moe::kMaxIRDepth << " levels (expected at most "
                 << mlir::moe::kMaxIRDepth << ")\n";
    return 1;
  }
  std::unique_ptr<llvm::ToolOutputFile> output =
      mlir::openOutputFile(outputFilename, &errorMessage);
  if (!output) {
    llvm::errs() << errorMessage << "\n";
    return 1;
  }
  if (mlir::failed(
          mlir::MlirOptMain(output->os(), std::move(input), registry, config)))
    return 1;
  // Written only on success (ToolOutputFile removes it otherwise).
  output->keep();
  return 0;
}
