//===- Passes.h - moe passes and pipelines ----------------------*- C++ -*-===//

#ifndef MOE_TRANSFORMS_PASSES_H
#define MOE_TRANSFORMS_PASSES_H

#include "moe/Compiler/Options.h"

#include "mlir/Pass/Pass.h"
#include "mlir/Pass/PassManager.h"

namespace mlir::moe {

#define GEN_PASS_DECL
#include "moe/Passes.h.inc"

/// Builds the pipeline moe-compile runs when --pipeline is not given.
void buildDefaultPipeline(OpPassManager &pm, const CompileOptions &options);

/// The default pipeline in two halves: up to the expert placement and the
/// communication hierarchy (what does not depend on --tensor-parallel), then
/// from moe-tensor-parallel on (tensor parallelism, scheduling, memory
/// planning, layer streaming). moe-compile runs the first once and the
/// second per tensor-parallel degree it compares.
void buildPlacementPipeline(OpPassManager &pm, const CompileOptions &options);
void buildTensorParallelPipeline(OpPassManager &pm,
                                 const CompileOptions &options);

/// Registers `moe-default-pipeline` (the default pipeline with default
/// options) for moe-opt.
void registerMoEPipelines();

#define GEN_PASS_REGISTRATION
#include "moe/Passes.h.inc"

} // namespace mlir::moe

#endif // MOE_TRANSFORMS_PASSES_H
