//===- Pipelines.cpp - moe pass pipelines ---------------------------------===//
//
// The default pipeline of moe-compile (IREE-style: a function building it
// from the compile options plus a registration for moe-opt). Canonicalize +
// CSE run before the MoE passes and again before memory planning so the plan
// is made from the final IR.
//
//===----------------------------------------------------------------------===//

#include "moe/Dialect/MoEOps.h"
#include "moe/Transforms/Passes.h"

#include "mlir/Pass/PassRegistry.h"
#include "mlir/Transforms/Passes.h"

using namespace mlir;
using namespace mlir::moe;

void moe::buildDefaultPipeline(OpPassManager &pm, const CompileOptions &options) {
  pm.addPass(createCanonicalizerPass());
  pm.addPass(createCSEPass());
  OpPassManager &model = pm.nest<ModelOp>();
  model.addPass(createMoEFuseGatingPass());

  MoEExpertPlacementPassOptions placement;
  placement.strategy = options.placement;
  placement.profile = options.expertProfile;
  placement.replicas = options.expertReplicas;
  model.addPass(createMoEExpertPlacementPass(placement));
  model.addPass(createMoECommHierarchyPass());

  MoELayerStreamingPassOptions streaming;
  streaming.memoryBudget = options.memoryBudget;
  streaming.maxSeqLen = options.maxSeqLen;
  streaming.dtype = stringifyComputeDType(options.dtype).str();
  model.addPass(createMoELayerStreamingPass(streaming));

  model.addPass(createMoESchedulePass());
  model.addPass(createCanonicalizerPass());
  model.addPass(createCSEPass());

  MoEPlanMemoryPassOptions memory;
  memory.maxSeqLen = options.maxSeqLen;
  memory.dtype = stringifyComputeDType(options.dtype).str();
  model.addPass(createMoEPlanMemoryPass(memory));
}

void moe::registerMoEPipelines() {
  PassPipelineRegistration<>(
      "moe-default-pipeline",
      "The pipeline moe-compile runs by default (default options)",
      [](OpPassManager &pm) { buildDefaultPipeline(pm, CompileOptions()); });
}
