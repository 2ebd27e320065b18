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

#include "moe/MoEInterfaces.h.inc"

#define GET_OP_CLASSES
#include "moe/MoEOps.h.inc"

#endif // MOE_DIALECT_MOEOPS_H
