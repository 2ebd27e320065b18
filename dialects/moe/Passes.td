//===- Passes.td - moe pass declarations -------------------*- tablegen -*-===//
//
// Passes over the moe dialect. Conventions (STYLE.md): one pass per file in
// lib/Transforms, defs end in `Pass`, flags carry the `moe-` prefix, options
// are declared here (no global cl::opt). The generated registerMoEPasses()
// registers every pass declared below.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_PASSES_TD
#define MOE_PASSES_TD

include "mlir/Pass/PassBase.td"

#endif // MOE_PASSES_TD
