//===- MoEInterfaces.td - moe op interfaces ----------------*- tablegen -*-===//
//
// Interfaces the analyses and passes query instead of switching over ops.
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

#endif // MOE_INTERFACES_TD
