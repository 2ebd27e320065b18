//===- EmitPlan.h - lowering to the runtime's plan --------------*- C++ -*-===//
//
// The hook between the compiler and the runtime: lowers a compiled module
// (one moe.model, after the pass pipeline) to the FlatBuffers plan of
// runtime/schema/plan.fbs and writes it to `os`. Implemented in lib/Plan;
// until that library exists moe-compile reports `--emit=plan` as not
// implemented.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_PLAN_EMITPLAN_H
#define MOE_PLAN_EMITPLAN_H

#include "moe/Compiler/Options.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/Support/LLVM.h"
#include "llvm/Support/raw_ostream.h"

namespace mlir::moe {

/// Emits errors on `module` (with locations) and fails if it cannot be
/// lowered under `options`.
LogicalResult emitPlan(ModuleOp module, const CompileOptions &options,
                       llvm::raw_ostream &os);

} // namespace mlir::moe

#endif // MOE_PLAN_EMITPLAN_H
