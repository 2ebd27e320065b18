//===- MoEDialect.td - The moe dialect ---------------------*- tablegen -*-===//
//
// The `moe` dialect: Mixture-of-Experts transformer graphs at the level of the
// runtime's kernels (runtime/schema/plan.fbs), with the MoE layer decomposed
// so that gating fusion, expert placement and communication passes have
// something real to act on.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_DIALECT_TD
#define MOE_DIALECT_TD

include "mlir/IR/OpBase.td"

def MoE_Dialect : Dialect {
  let name = "moe";
  let cppNamespace = "::mlir::moe";
  let summary = "Mixture-of-Experts transformer graphs";
  let description = [{
    The `moe` dialect describes a decoder-only transformer (dense or
    Mixture-of-Experts) as it will execute, one op per runtime kernel, with
    every configuration value as an attribute.

    A module holds one `moe.model` op. Its body declares the checkpoint
    tensors as `moe.param` symbols (name, shape and stored dtype, never
    data), optionally the device grid (`shard.grid`), and one `moe.graph`
    function: token ids in, logits out. Inside the graph, each decoder layer
    is an isolated `moe.layer` region; weights enter through `moe.weight`
    symbol uses.

    Activations are `tensor<?xNxf32>`: the leading dimension is the number of
    tokens of one forward call (prefill chunk or one decode step), the second
    the feature width. Weights keep their stored element type (`f32`, `bf16`
    or `f16`); the runtime converts them at load or inside its kernels.

    An MoE layer is written as a chain that the passes rewrite:

    ```
    router -> scores -> top_k -> [renormalize] -> [capacity] -> expert_map
           -> dispatch -> [all_to_all] -> experts -> [all_to_all] -> combine
    ```

    `moe-fuse-gating` folds `scores .. expert_map` into one `moe.gate` (the
    plan's Gate step), `moe-expert-placement` fills the `placement` of
    `moe.experts`, and the exchange ops carry the device-grid axes that
    `moe-comm-hierarchy` splits into intra- and inter-node stages.
  }];
  let useDefaultAttributePrinterParser = 1;
  let dependentDialects = ["::mlir::shard::ShardDialect"];

  // What the passes record on ops for later passes and the plan emitter
  // (`moe.<name>`): declared here so each has a generated helper
  // (get<Name>AttrHelper()) and verifyOperationAttribute checks the op it is
  // on, its type and its range.
  let discardableAttrs = (ins
    // moe-plan-memory, on moe.model: the activation buffers (#moe.buffer).
    "::mlir::ArrayAttr":$buffers,
    // moe-plan-memory, on ops with activation results: (buffer, first
    // column, width) per result.
    "::mlir::DenseI64ArrayAttr":$slices,
    // moe-plan-memory, on moe.mlp: its hidden (and activated) buffers.
    "::mlir::DenseI64ArrayAttr":$scratch,
    // moe-plan-memory, on moe.model: {arena_bytes, unplanned_bytes,
    // kv_cache_bytes, max_tokens, max_seq_len}.
    "::mlir::DictionaryAttr":$memory,
    // moe-plan-memory, on moe.model: weights + arena + KV bytes per rank.
    "::mlir::DenseI64ArrayAttr":$peak_bytes,
    // moe-layer-streaming, on moe.model: {budget_bytes, unstreamed_bytes,
    // peak_bytes, streamed_weight_bytes}.
    "::mlir::DictionaryAttr":$streaming,
    // moe-layer-streaming, on moe.experts: experts load when routed to.
    "::mlir::UnitAttr":$on_demand,
    // moe-layer-streaming, on moe.layer: prefetched this many layers ahead.
    "::mlir::IntegerAttr":$prefetch_distance,
    // moe-schedule, on moe.graph: decode steps have no host-side control
    // flow (capturable as one CUDA graph).
    "::mlir::UnitAttr":$decode_graph,
    // moe-tensor-parallel, on moe.model: ranks per tensor-parallel group.
    "::mlir::IntegerAttr":$tensor_parallel,
    // moe-data-parallel, on moe.model: data-parallel groups (each group of
    // ranks / groups consecutive ranks runs its own sequences; expert layers
    // exchange tokens between groups).
    "::mlir::IntegerAttr":$data_parallel,
    // moe-tensor-parallel, on the ops it slices over the group: "column"
    // (moe.linear: output features split), "column_qkv" (a fused q/k/v
    // moe.linear: each third split), "row" (moe.linear: input features
    // split, partial sums all-reduced), "heads" (moe.rotary, moe.attention:
    // the group member's heads) or "ffn" (moe.mlp: gate/up column, down row).
    "::mlir::StringAttr":$tensor_slice
  );
  let hasOperationAttrVerify = 1;
}

class MoE_Op<string mnemonic, list<Trait> traits = []>
    : Op<MoE_Dialect, mnemonic, traits>;

#endif // MOE_DIALECT_TD
