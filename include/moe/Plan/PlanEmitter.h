//===- PlanEmitter.h - Lowering a model to a plan file ----------*- C++ -*-===//
//
// The last step of moe-compile: lowers the (optimized) moe.model to the
// FlatBuffers plan of runtime/schema/plan.fbs that moe-run executes.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_PLAN_PLANEMITTER_H
#define MOE_PLAN_PLANEMITTER_H

#include "moe/Compiler/Options.h"
#include "moe/Dialect/MoEOps.h"

#include "mlir/IR/BuiltinOps.h"
#include "llvm/Support/raw_ostream.h"

namespace mlir::moe {

/// The one moe.model of `module`, or an error.
FailureOr<ModelOp> getSingleModel(ModuleOp module);

/// Writes the plan of the single moe.model in `module` to `os`. Diagnostics
/// (with locations) explain IR the runtime cannot execute.
LogicalResult emitPlan(ModuleOp module, const CompileOptions &options,
                       llvm::raw_ostream &os);

} // namespace mlir::moe

#endif // MOE_PLAN_PLANEMITTER_H
