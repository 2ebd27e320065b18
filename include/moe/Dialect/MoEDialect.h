//===- MoEDialect.h - The moe dialect ---------------------------*- C++ -*-===//
//
// The moe dialect, its enums and attributes (#moe.routing, #moe.placement).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_DIALECT_MOEDIALECT_H
#define MOE_DIALECT_MOEDIALECT_H

#include "mlir/IR/Attributes.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/Dialect.h"
#include "mlir/IR/Operation.h"

#include "moe/MoEOpsDialect.h.inc"

#include "moe/MoEEnums.h.inc"

#define GET_ATTRDEF_CLASSES
#include "moe/MoEAttrs.h.inc"

namespace mlir::moe {
/// The loaded moe dialect, for its discardable attribute helpers
/// (getMoEDialect(ctx).getOnDemandAttrHelper().isAttrPresent(op)).
inline MoEDialect &getMoEDialect(MLIRContext *context) {
  return *context->getOrLoadDialect<MoEDialect>();
}
} // namespace mlir::moe

#endif // MOE_DIALECT_MOEDIALECT_H
