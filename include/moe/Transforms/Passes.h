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

/// Registers `moe-default-pipeline` (the default pipeline with default
/// options) for moe-opt.
void registerMoEPipelines();

#define GEN_PASS_REGISTRATION
#include "moe/Passes.h.inc"

} // namespace mlir::moe

#endif // MOE_TRANSFORMS_PASSES_H
