//===- EmitPlan.h - lowering to the runtime's plan --------------*- C++ -*-===//
//
// The hook between the compiler and the runtime: lowers a compiled module
// (one moe.model, after the pass pipeline) to the FlatBuffers plan of
// runtime/schema/plan.fbs and writes it to `os` (lib/Plan/EmitPlan.cpp), or
// prints it as text (lib/Plan/PrintPlan.cpp).
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

/// --emit=plan-text: emits the plan and prints it as text (printPlanText).
LogicalResult emitPlanText(ModuleOp module, const CompileOptions &options,
                           llvm::raw_ostream &os);

/// Prints a serialized plan readably: the weight table, the placement, and
/// per rank its buffers, KV caches and steps (stream, name, op with its
/// buffer/weight operands, cross-stream waits). Fails when `bytes` is not a
/// plan that verifies.
LogicalResult printPlanText(llvm::ArrayRef<uint8_t> bytes,
                            llvm::raw_ostream &os);

} // namespace mlir::moe

#endif // MOE_PLAN_EMITPLAN_H
