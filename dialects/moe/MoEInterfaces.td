//===- MoEInterfaces.td - moe op interfaces ----------------*- tablegen -*-===//
//
// Interfaces the analyses and passes query instead of switching over ops:
// the cost of an op (CostOpInterface) and the experts, routing and placement
// of an MoE layer (MoEOpInterface).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_INTERFACES_TD
#define MOE_INTERFACES_TD

include "mlir/IR/OpBase.td"

def MoE_CostOpInterface : OpInterface<"CostOpInterface"> {
  let cppNamespace = "::mlir::moe";
  let description = [{
    An op that does matrix work per token. The cost model (lib/Analysis)
    sums these to report FLOPs per token; elementwise work (norms,
    activations, softmax, adds) is not counted.
  }];
  let methods = [
    InterfaceMethod<[{
        Floating-point operations (2 per multiply-accumulate) this op spends
        on one token when `contextLength` tokens are visible to attention.
        Routed experts count their `top_k` experts only.
      }],
      "int64_t", "getFlopsPerToken", (ins "int64_t":$contextLength)>
  ];
}

def MoE_MoEOpInterface : OpInterface<"MoEOpInterface"> {
  let cppNamespace = "::mlir::moe";
  let description = [{
    An op of an MoE layer's expert machinery: the fused gate (`moe.gate`),
    the grouped experts (`moe.experts`) and the expert-parallel exchanges
    (`moe.all_to_all`). It answers what a pass needs to know about experts
    without op-by-op code: how many there are, how tokens are routed to
    them, which rank holds each one, and what each one weighs.

    Every op of one layer answers for the same experts: `getNumExperts()`
    agrees, and the ops that carry a placement must carry the same one
    (`moe.experts` and the exchanges around it). `LayerOp::getMoEOps()`
    lists a layer's ops and `LayerOp::setExpertPlacement()` re-places all
    of them at once.

    Example (C++): move expert 3 of every layer to rank 0.

    ```c++
    model.walk([](moe::LayerOp layer) {
      moe::ExpertsOp experts = layer.getExpertsOp();
      if (!experts || !experts.getExpertPlacement())
        return;
      SmallVector<int64_t> ranks(experts.getExpertPlacement().getExpertRanks());
      ranks[3] = 0;
      layer.setExpertPlacement(moe::PlacementAttr::get(
          layer.getContext(), experts.getExpertPlacement().getNumRanks(), ranks));
    });
    ```
  }];
  let methods = [
    InterfaceMethod<[{
        Number of experts of the layer (the router's output width).
      }],
      "int64_t", "getNumExperts">,
    InterfaceMethod<[{
        The `[num_experts + 1]` per-expert row offsets of the routed tokens
        that this op reads (experts, exchanges) or produces (gate).
      }],
      "::mlir::Value", "getExpertOffsets">,
    InterfaceMethod<[{
        How many experts each token is routed to, for the ops that know it
        (gate, experts); `std::nullopt` for the others.
      }],
      "std::optional<int64_t>", "getRoutedTopK", (ins), [{}], [{
        return std::nullopt;
      }]>,
    InterfaceMethod<[{
        The complete gating configuration (`#moe.routing`) for the op that
        routes (the fused gate); null for the others.
      }],
      "::mlir::moe::RoutingAttr", "getRoutingAttr", (ins), [{}], [{
        return {};
      }]>,
    InterfaceMethod<[{
        Which rank holds each expert: the `#moe.placement` of the ops whose
        semantics depend on it (experts, exchanges). Null when the op has
        none: on `moe.experts` that means every rank holds every expert.
      }],
      "::mlir::moe::PlacementAttr", "getExpertPlacement", (ins), [{}], [{
        return {};
      }]>,
    InterfaceMethod<[{
        Replaces the placement on the ops that carry one; the others ignore
        it. Keep a layer consistent with `LayerOp::setExpertPlacement`.
      }],
      "void", "setExpertPlacement",
      (ins "::mlir::moe::PlacementAttr":$placement), [{}], [{
        (void)placement;
      }]>,
    InterfaceMethod<[{
        The expert-stacked weights (one `moe.weight` value per role present:
        up, gate, down and the biases; axis 0 is the expert, so expert e's
        weights are slice e of each) of the op that computes the experts;
        empty for the others.
      }],
      "::llvm::SmallVector<::mlir::Value>", "getExpertWeights",
      (ins), [{}], [{
        return {};
      }]>,
    InterfaceMethod<[{
        Parameters of one expert (all experts of a layer have the same
        shapes); 0 for ops that hold no expert weights.
      }],
      "int64_t", "getParamsPerExpert", (ins), [{}], [{
        return 0;
      }]>,
    InterfaceMethod<[{
        Index of the enclosing `moe.layer` (the `layer` of moe-run's
        `--expert-profile`), or -1 outside layers.
      }],
      "int64_t", "getLayerIndex", (ins), [{}], [{
        return ::mlir::moe::detail::getEnclosingLayerIndex($_op.getOperation());
      }]>,
  ];
}

#endif // MOE_INTERFACES_TD
