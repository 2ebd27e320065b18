//===- MoEOps.h - moe operations --------------------------------*- C++ -*-===//

#ifndef MOE_DIALECT_MOEOPS_H
#define MOE_DIALECT_MOEOPS_H

#include "moe/Dialect/MoEDialect.h"

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/SymbolTable.h"
#include "mlir/Interfaces/ControlFlowInterfaces.h"
#include "mlir/Interfaces/FunctionInterfaces.h"
#include "mlir/Interfaces/InferTypeOpInterface.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#include <cstdint>
#include <limits>

namespace mlir::moe {
/// Counts of the cost model: non-negative, saturating at INT64_MAX instead of
/// overflowing (hand-written IR may declare absurd shapes).
inline int64_t satMul(int64_t a, int64_t b) {
  int64_t r;
  return __builtin_mul_overflow(a, b, &r) ? std::numeric_limits<int64_t>::max()
                                          : r;
}
inline int64_t satAdd(int64_t a, int64_t b) {
  int64_t r;
  return __builtin_add_overflow(a, b, &r) ? std::numeric_limits<int64_t>::max()
                                          : r;
}
/// Elements of a statically shaped type, saturating.
inline int64_t satNumElements(ShapedType type) {
  int64_t n = 1;
  for (int64_t d : type.getShape())
    n = satMul(n, d);
  return n;
}

class ExpertsOp;
namespace detail {
/// Index of the moe.layer enclosing `op`, or -1 (MoEOpInterface's default).
int64_t getEnclosingLayerIndex(Operation *op);
} // namespace detail
} // namespace mlir::moe

#include "moe/MoEInterfaces.h.inc"

#define GET_OP_CLASSES
#include "moe/MoEOps.h.inc"

namespace mlir::moe {
/// Ranks of a device grid of `shape`: the product of its sizes (1 for a 0-d
/// grid), or -1 when a size is dynamic or not positive or the product
/// overflows. The one place the passes and verifiers count ranks.
int64_t getGridRankCount(ArrayRef<int64_t> shape);
/// Ranks of the device grid of `model` (its shard.grid; 1 without one, -1 as
/// getGridRankCount).
int64_t getGridRankCount(ModelOp model);
/// The grid checks of a pass that places experts on ranks (for moe passes
/// and pass plugins alike): the ranks of `model`'s device grid (1 without
/// one), or an error at the grid, prefixed with `pass`, when its sizes are
/// not static and positive or it has more than 65536 ranks.
FailureOr<int64_t> getPlacementRankCount(ModelOp model, StringRef pass);
} // namespace mlir::moe

#endif // MOE_DIALECT_MOEOPS_H
