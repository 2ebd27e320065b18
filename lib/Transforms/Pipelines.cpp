//===- Pipelines.cpp - moe pass pipelines ---------------------------------===//

#include "moe/Transforms/Passes.h"

#include "mlir/Pass/PassRegistry.h"
#include "mlir/Transforms/Passes.h"

using namespace mlir;

void moe::buildDefaultPipeline(OpPassManager &pm, const CompileOptions &) {
  // The optimization passes (placement, gating fusion, communication,
  // streaming, scheduling, memory planning) slot in here as they land; each
  // stage is followed by canonicalize + cse.
  pm.addPass(createCanonicalizerPass());
  pm.addPass(createCSEPass());
}

void moe::registerMoEPasses() {
  // Passes.td also declares the planned optimization passes; each joins
  // this list when it is implemented.
  registerPass([] { return createPrintReportPass(); });
}

void moe::registerMoEPipelines() {
  PassPipelineRegistration<>(
      "moe-default-pipeline",
      "The pipeline moe-compile runs by default (default options)",
      [](OpPassManager &pm) { buildDefaultPipeline(pm, CompileOptions()); });
}
