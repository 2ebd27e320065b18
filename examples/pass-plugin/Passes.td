//===- Passes.td - passes of the example plugin ------------*- tablegen -*-===//
//
// The pass of the example plugin, declared like the moe passes
// (dialects/moe/Passes.td): ODS generates its base class, options,
// statistics, create function and documentation.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_CAP_EXPERTS_PASSES_TD
#define MOE_CAP_EXPERTS_PASSES_TD

include "mlir/Pass/PassBase.td"

def CapExpertsPerRankPass
    : Pass<"moe-cap-experts-per-rank", "::mlir::moe::ModelOp"> {
  let summary = "Moves experts off ranks that hold more than a cap";
  let description = [{
    For every MoE layer whose experts are placed on ranks, makes sure no
    rank holds more than `max-experts` of the layer's experts (default:
    ceil(experts / ranks), an even spread) - e.g. after a placement made by
    hand, by another tool or for another memory budget. Each move takes an
    expert from the busiest over-full rank to the least-loaded rank with
    room, choosing the expert that leaves the larger of the two ranks'
    loads smallest, so the busiest rank's load goes down as the experts
    spread. Loads come from `profile` (the JSON `moe-run --expert-profile`
    writes: per-layer per-expert token counts), else every expert counts
    the same. Ranks within the cap keep their experts.

    Before (`max-experts=2`, 4 ranks, everything on rank 0):

    ```mlir
    %y = moe.experts ... placement <ranks = 4, experts = [0, 0, 0, 0, 0, 0, 0, 0]> ...
    ```

    After (equal loads: experts 0, 1, 2, 3, 4, 5 leave in turn):

    ```mlir
    %y = moe.experts ... placement <ranks = 4, experts = [1, 2, 3, 1, 2, 3, 0, 0]> ...
    ```

    The exchanges around the experts get the same placement (the layer is
    re-placed as a whole through `LayerOp::setExpertPlacement`). Layers
    without a placement (one rank) are left alone; a cap below
    ceil(experts / ranks) is an error.
  }];
  let options = [
    Option<"maxExperts", "max-experts", "int64_t", /*default=*/"0",
           "most experts of one layer a rank may hold (0: ceil(E / ranks))">,
    Option<"profile", "profile", "std::string", /*default=*/"\"\"",
           "expert load profile (JSON from moe-run --expert-profile)">,
  ];
}

#endif // MOE_CAP_EXPERTS_PASSES_TD
