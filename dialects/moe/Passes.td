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

//===----------------------------------------------------------------------===//
// Analysis and debugging
//===----------------------------------------------------------------------===//

def PrintReportPass : Pass<"moe-print-report", "::mlir::ModuleOp"> {
  let summary = "Prints parameter, byte and FLOP counts of every moe.model";
  let description = [{
    Runs the cost model (lib/Analysis) on each `moe.model` and prints the
    report moe-compile's `--emit=report` prints, or its JSON form, to
    stdout. The IR is not changed. Useful between passes to see what a
    transformation did to the model's size and cost.

    Example:

    ```
    moe-opt model.mlir --moe-print-report='context-length=2048 json=true'
    ```
  }];
  let options = [
    Option<"contextLength", "context-length", "int64_t", /*default=*/"0",
           "Positions attention sees for the attention FLOPs (0: the model's "
           "max_position_embeddings)">,
    Option<"json", "json", "bool", /*default=*/"false",
           "Print the report as JSON">
  ];
}

#endif // MOE_PASSES_TD
