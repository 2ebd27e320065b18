//===- Pipelines.cpp - moe pass pipelines ---------------------------------===//
//
// The default pipeline of moe-compile (IREE-style: a function building it
// from the compile options plus a registration for moe-opt). Canonicalize +
// CSE run before the MoE passes and again before memory planning so the plan
// is made from the final IR; nothing after moe-plan-memory changes the graph
// (the emitter checks that the recorded live ranges still hold).
//
//===----------------------------------------------------------------------===//

#include "moe/Dialect/MoEOps.h"
#include "moe/Transforms/Passes.h"

#include "mlir/Pass/PassRegistry.h"
#include "mlir/Transforms/Passes.h"

using namespace mlir;
using namespace mlir::moe;

void moe::buildDefaultPipeline(OpPassManager &pm, const CompileOptions &options) {
  buildPlacementPipeline(pm, options);
  buildTensorParallelPipeline(pm, options);
}

void moe::buildPlacementPipeline(OpPassManager &pm,
                                 const CompileOptions &options) {
  // The input contract first (IREE's VerifyInputLegality): a clear error at
  // the op instead of one deep inside a later pass.
  pm.addNestedPass<ModelOp>(createMoEVerifyInputLegalityPass());
  pm.addPass(createCanonicalizerPass());
  pm.addPass(createCSEPass());
  OpPassManager &model = pm.nest<ModelOp>();
  model.addPass(createMoEFuseGatingPass());

  MoEExpertPlacementPassOptions placement;
  placement.strategy = options.placement;
  placement.profile = options.expertProfile;
  placement.replicas = options.expertReplicas;
  placement.slicing = options.expertSlicing;
  model.addPass(createMoEExpertPlacementPass(placement));
}

void moe::buildTensorParallelPipeline(OpPassManager &pm,
                                      const CompileOptions &options) {
  OpPassManager &model = pm.nest<ModelOp>();
  // First, so that moe-compile can compare flat and hierarchical exchanges
  // on copies of the placed model.
  if (options.hierarchicalExchanges)
    model.addPass(createMoECommHierarchyPass());
  MoETensorParallelPassOptions tensorParallel;
  tensorParallel.ways = options.tensorParallel;
  tensorParallel.vocabParallel = options.vocabParallel;
  model.addPass(createMoETensorParallelPass(tensorParallel));
  MoEDataParallelPassOptions dataParallel;
  dataParallel.maxBatch = options.maxBatch;
  model.addPass(createMoEDataParallelPass(dataParallel));

  model.addPass(createMoESchedulePass());
  model.addPass(createCanonicalizerPass());
  model.addPass(createCSEPass());

  MoEVerifyInputLegalityPassOptions legality;
  legality.beforeLowering = true;
  model.addPass(createMoEVerifyInputLegalityPass(legality));

  // The storage analysis runs once, on the final graph; layer streaming
  // reads the activation bytes it recorded and only adds attributes.
  MoEPlanMemoryPassOptions memory;
  memory.maxSeqLen = options.maxSeqLen;
  memory.maxBatch = options.maxBatch;
  memory.kvPageSize = options.kvPageSize;
  memory.kvPages = options.kvPages;
  memory.dtype = options.dtype;
  model.addPass(createMoEPlanMemoryPass(memory));

  MoELayerStreamingPassOptions streaming;
  streaming.memoryBudget = options.memoryBudget;
  streaming.dtype = options.dtype;
  model.addPass(createMoELayerStreamingPass(streaming));
}

void moe::registerMoEPipelines() {
  PassPipelineRegistration<>(
      "moe-default-pipeline",
      "The pipeline moe-compile runs by default (default options)",
      [](OpPassManager &pm) { buildDefaultPipeline(pm, CompileOptions()); });
}
