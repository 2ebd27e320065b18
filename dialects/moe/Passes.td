//===- Passes.td - moe pass declarations -------------------*- tablegen -*-===//
//
// Passes over the moe dialect. Conventions (STYLE.md): one pass per file in
// lib/Transforms, defs end in `Pass`, flags carry the `moe-` prefix, options
// are declared here (no global cl::opt). registerMoEPasses()
// (lib/Transforms/Passes.cpp) registers the passes that are implemented.
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

//===----------------------------------------------------------------------===//
// The optimization pipeline (DESIGN.md). Declared here so the pipeline, the
// options and the reference docs have one source; not implemented yet: each
// is registered by registerMoEPasses() once lib/Transforms implements it
// (then drop "not implemented yet" from its summary).
//===----------------------------------------------------------------------===//

def CommHierarchyPass : Pass<"moe-comm-hierarchy", "::mlir::ModuleOp"> {
  let summary = "Splits flat expert exchanges into intra- and inter-node "
                "stages (not implemented yet)";
  let description = [{
    Rewrites every `moe.all_to_all` over grid axes `[0, 1]` of a
    `[nodes, gpus_per_node]` `shard.grid` into an exchange over axis `[1]`
    (within each node) followed by one over axis `[0]` (between nodes), as
    DeepSpeed-MoE's hierarchical all-to-all does; combine exchanges in the
    reverse order. Exchanges over groups of one rank fold away.
  }];
}

def ExpertPlacementPass : Pass<"moe-expert-placement", "::mlir::ModuleOp"> {
  let summary = "Assigns every expert a rank and inserts the exchanges "
                "(not implemented yet)";
  let description = [{
    For the ranks of the model's `shard.grid`, fills `#moe.placement` on each
    `moe.experts` and wraps it in `moe.all_to_all` dispatch / combine
    exchanges over all grid axes. `balanced` spreads experts so the busiest
    rank's expected load (from `profile`, else uniform) stays close to the
    mean; `round-robin` puts expert e on rank e % ranks; `contiguous` gives
    each rank a block of consecutive experts.
  }];
  let options = [
    Option<"strategy", "strategy", "std::string", /*default=*/"\"balanced\"",
           "balanced, round-robin or contiguous">,
    Option<"profile", "profile", "std::string", /*default=*/"\"\"",
           "Per-layer per-expert token counts (moe-run --expert-profile)">
  ];
  let dependentDialects = ["::mlir::shard::ShardDialect"];
}

def FuseGatingPass : Pass<"moe-fuse-gating", "::mlir::ModuleOp"> {
  let summary = "Fuses scores, top-k, renormalization, capacity and the "
                "mapping table into moe.gate (not implemented yet)";
  let description = [{
    Replaces each `moe.scores -> moe.top_k -> [moe.renormalize] ->
    [moe.capacity] -> moe.expert_map` chain with one `moe.gate` whose
    `#moe.routing` records top_k, the score function, norm_topk_prob and the
    capacity (the plan's Gate step: DeepSpeed-MoE's fused gating kernel with
    a dense token-to-expert table).
  }];
}

def LayerStreamingPass : Pass<"moe-layer-streaming", "::mlir::ModuleOp"> {
  let summary = "Streams weights that do not fit the memory budget "
                "(not implemented yet)";
  let description = [{
    When a rank's weights exceed `memory-budget`, keeps the layers that fit
    resident and brings the others in ahead of use and releases them after
    their last use (the plan's Prefetch / Evict), overlapped with compute
    `prefetch-depth` layers ahead.
  }];
  let options = [
    Option<"memoryBudget", "memory-budget", "uint64_t", /*default=*/"0",
           "Bytes per rank for weights and activations (0: unlimited)">,
    Option<"prefetchDepth", "prefetch-depth", "int64_t", /*default=*/"1",
           "How many layers ahead to prefetch">
  ];
}

def PlanMemoryPass : Pass<"moe-plan-memory", "::mlir::ModuleOp"> {
  let summary = "Assigns activation buffers arena offsets by liveness "
                "(not implemented yet)";
  let description = [{
    Computes each activation's live range, packs buffers whose ranges do not
    overlap into one arena per rank (offsets `alignment`-byte aligned), and
    reports per-rank peak memory for `max-tokens` tokens per forward call.
  }];
  let options = [
    Option<"alignment", "alignment", "int64_t", /*default=*/"64",
           "Byte alignment of arena offsets">,
    Option<"maxTokens", "max-tokens", "int64_t", /*default=*/"0",
           "Tokens per forward call to size buffers for (0: from the model)">
  ];
}

def SchedulePass : Pass<"moe-schedule", "::mlir::ModuleOp"> {
  let summary = "Orders steps on compute, communication and streaming "
                "streams (not implemented yet)";
  let description = [{
    Assigns every step a stream (compute, communication, weight streaming)
    and the cross-stream waits it needs, so expert exchanges and weight
    prefetches overlap with compute; marks the decode graph for capture.
  }];
  let options = [
    Option<"overlap", "overlap", "bool", /*default=*/"true",
           "Overlap communication and streaming with compute">
  ];
}

#endif // MOE_PASSES_TD
