//===- Passes.td - moe pass declarations -------------------*- tablegen -*-===//
//
// Passes over the moe dialect. Conventions: one pass per file in
// lib/Transforms, defs end in `Pass`, flags carry the `moe-` prefix, options
// are declared here (no global cl::opt). The generated registerMoEPasses()
// registers every pass declared below. The optimization passes run on one `moe.model`.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_PASSES_TD
#define MOE_PASSES_TD

include "mlir/Pass/PassBase.td"

//===----------------------------------------------------------------------===//
// Analysis and debugging
//===----------------------------------------------------------------------===//

def MoEPrintReportPass : Pass<"moe-print-report", "::mlir::ModuleOp"> {
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
// Input contract
//===----------------------------------------------------------------------===//

def MoEVerifyInputLegalityPass
    : Pass<"moe-verify-input-legality", "::mlir::moe::ModelOp"> {
  let summary = "Rejects IR the pipeline or the runtime cannot take, with a "
                "diagnostic at the op";
  let description = [{
    The compiler's input contract, checked up front (IREE's
    VerifyInputLegality) instead of deep inside the plan lowering:

    - every op of the graph has a plan lowering (or is a piece of the
      gating chain moe-fuse-gating fuses);
    - every `moe.expert_map` ends a gating chain moe-fuse-gating can
      match, and no gating piece is left outside one;
    - with `before-lowering` (the run the default pipeline makes just before
      moe-plan-memory): no gating piece is left unfused and the experts read
      their tokens through `moe.dispatch`.

    Runs first in the default pipeline and again before memory planning.
    Changes nothing.

    Example:

    ```
    moe-opt model.mlir --pass-pipeline='builtin.module(moe.model(moe-verify-input-legality))'
    ```
  }];
  let options = [
    Option<"beforeLowering", "before-lowering", "bool", /*default=*/"false",
           "Check the contract of the plan lowering instead of the pipeline "
           "input: gating fused, experts fed by moe.dispatch">,
  ];
}

//===----------------------------------------------------------------------===//
// Routing
//===----------------------------------------------------------------------===//

def MoEFuseGatingPass : Pass<"moe-fuse-gating", "::mlir::moe::ModelOp"> {
  let summary = "Fuses router scores, top-k, renormalization, capacity and the "
                "token-to-expert table into one moe.gate";
  let description = [{
    DeepSpeed-MoE's fused gating kernel: the chain the importers emit,

    ```mlir
    %p = moe.scores softmax %logits : tensor<?x8xf32>
    %w, %e = moe.top_k %p k 2 : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
    %wn = moe.renormalize %w : tensor<?x2xf32>
    %off, %slots = moe.expert_map %e : tensor<?x2xi32> -> tensor<9xi32>, tensor<?xi32>
    ```

    becomes one op whose `#moe.routing` records every choice, and which
    the runtime executes as one kernel producing the dense mapping table
    (no one-hot einsums, one launch instead of five):

    ```mlir
    %e, %wn, %off, %slots = moe.gate %logits routing <top_k = 2, norm_topk_prob = true>
        : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>, tensor<9xi32>, tensor<?xi32>
    ```

    Also fused: `moe.capacity` (capacity factor, min capacity, token
    dropping), the top-k-then-softmax order (`moe.top_k` on the logits,
    `moe.scores` on the picked values) and DeepSeek-V3's selection
    (`moe.top_k`'s `selection_bias`, which becomes `moe.gate`'s operand,
    and its `n_group` / `topk_group`; `moe.scale_weights` after the
    renormalization as `routed_scaling_factor`). A chain whose intermediate
    values have other users is left alone.
  }];
  let dependentDialects = ["::mlir::moe::MoEDialect"];
}

//===----------------------------------------------------------------------===//
// Expert parallelism
//===----------------------------------------------------------------------===//

def MoEExpertPlacementPass
    : Pass<"moe-expert-placement", "::mlir::moe::ModelOp"> {
  let summary = "Places experts on the ranks of the device grid and inserts "
                "the expert-parallel token exchanges";
  let description = [{
    With a device grid in the model (`shard.grid @devices(shape = NxG)`,
    added by `moe-compile --devices=P --gpus-per-node=G`), gives every
    `moe.experts` a `#moe.placement` (expert -> rank) and wraps its input
    and output in `moe.all_to_all` dispatch/combine exchanges over all grid
    axes. Strategies:

    - `contiguous`: experts `[e*P/E, (e+1)*P/E)` of each layer on one rank;
    - `round-robin`: expert e on rank e mod P;
    - `balanced` (default): longest-processing-time first — experts sorted by
      load go to the least-loaded rank that still has room for its share
      (ceil(E/P) experts), so both memory and routed tokens balance. Loads
      come from `profile` (the JSON `moe-run --expert-profile` writes:
      per-layer per-expert token counts), else they are uniform. With
      `replicas=R`, R extra copies per layer go to the experts with the most
      load per copy (DeepSeek's EPLB): a hot expert's slots are split among
      its copies, so a skewed layer's busiest rank stays near the mean.

    Before:

    ```mlir
    %y = moe.experts %d, %off top_k 1 act gelu up [...] down [...] : ...
    ```

    After (`--devices=2`):

    ```mlir
    %d2 = moe.all_to_all dispatch %d, %off on @devices axes [0, 1]
        placement <ranks = 2, experts = [0, 1, 0, 1]> : ...
    %y = moe.experts %d2, %off ... placement <ranks = 2, experts = [0, 1, 0, 1]> : ...
    %y2 = moe.all_to_all combine %y, %off on @devices axes [0, 1]
        placement <ranks = 2, experts = [0, 1, 0, 1]> : ...
    ```

    Expert slicing (DeepSpeed-MoE): a layer with fewer experts E than
    ranks P (and `replicas = 0`, `slicing` on) splits every expert's
    intermediate dimension into S = P / gcd(E, P) parts, so E x S is a
    multiple of P and every rank holds the same share of the expert
    weights; part q = e S + s goes to rank q mod P (the parts of an expert
    on S different ranks). Each part computes all of its expert's slots and
    the combine exchange sums the partial outputs. When S does not divide
    the intermediate size the layer is placed whole, as without slicing.
    4 experts on 8 ranks: `placement <ranks = 8, experts = [0, 1, 2, ..., 7],
    slices = 2>`, 1/8 of the expert weights per rank.

    Without a grid (one rank) the pass does nothing.
  }];
  let options = [
    Option<"strategy", "strategy", "::mlir::moe::PlacementStrategy",
           /*default=*/"::mlir::moe::PlacementStrategy::Balanced",
           "balanced, round-robin or contiguous",
           [{::llvm::cl::values(
             clEnumValN(::mlir::moe::PlacementStrategy::Balanced, "balanced",
                        "by load, longest-processing-time first"),
             clEnumValN(::mlir::moe::PlacementStrategy::RoundRobin,
                        "round-robin", "expert e on rank e mod P"),
             clEnumValN(::mlir::moe::PlacementStrategy::Contiguous,
                        "contiguous", "consecutive experts on one rank"))}]>,
    Option<"profile", "profile", "std::string", /*default=*/"\"\"",
           "expert load profile (JSON from moe-run --expert-profile)">,
    Option<"replicas", "replicas", "int64_t", /*default=*/"0",
           "extra copies of hot experts per layer (balanced strategy)">,
    Option<"slicing", "slicing", "bool", /*default=*/"true",
           "split experts over ranks when a layer has fewer experts than "
           "ranks (and no replicas)">,
  ];
  let dependentDialects = ["::mlir::moe::MoEDialect",
                           "::mlir::shard::ShardDialect"];
}

def MoETensorParallelPass
    : Pass<"moe-tensor-parallel", "::mlir::moe::ModelOp"> {
  let summary = "Slices attention heads and dense FFNs over tensor-parallel "
                "groups (Megatron)";
  let description = [{
    With `tensor-parallel = T` > 1 the ranks of the device grid form groups
    of T consecutive ranks, and every group member computes 1/T of each
    attention and dense FFN (Megatron-LM's slicing): the q/k/v projections
    and the FFN's gate/up are column-parallel (each member computes the
    output features of its heads or of its share of the intermediate
    dimension), o_proj and the FFN's down projection are row-parallel (each
    member multiplies its input features and the group adds the partial
    sums with one all-reduce; a bias is added by member 0 only). Rotary
    embeddings and attention run on the member's heads, and the KV cache
    holds only its kv heads. Records `moe.tensor_parallel = T` on the model
    and `moe.tensor_slice` on the sliced ops ("column", "column_qkv" for
    GPT-2's fused c_attn, "row", "heads", "ffn"); the plan lowering reads
    them. Experts stay placed over all ranks.

    With `vocab-parallel` (moe-compile decides it with the cost model), the
    token embedding and the LM head are vocabulary-parallel too ("vocab"):
    each member holds 1/T of the table's rows, looks up the ids in its part
    (the group sums the rows with one all-reduce) and computes its part of
    the logits (the group gathers them). A tied table is split once.

    Errors (one line, at the op): heads not divisible by T; kv heads that
    neither divide by T nor divide T (kv heads fewer than T are replicated
    when T is a multiple of them); an intermediate size not divisible by T;
    T not dividing the grid; with `vocab-parallel`, a vocabulary not
    divisible by T or a quantized table whose parts would cut blocks;
    attention whose q/k/v are not projections
    (through rotary embeddings) of the layer input, or whose output feeds
    anything but one projection.

    ```mlir
    %q = moe.linear %x, %wq {moe.tensor_slice = "column"} : ...
    %a = moe.attention %q, %k, %v heads 4 kv_heads 2 ... {moe.tensor_slice = "heads"} : ...
    %o = moe.linear %a, %wo {moe.tensor_slice = "row"} : ...
    %f = moe.mlp %n up %wu gate %wg down %wd act silu {moe.tensor_slice = "ffn"} : ...
    ```
  }];
  let options = [
    Option<"ways", "tensor-parallel", "int64_t", /*default=*/"1",
           "ranks per tensor-parallel group (1: replicated)">,
    Option<"vocabParallel", "vocab-parallel", "bool", /*default=*/"false",
           "also split the embedding and LM head tables by vocabulary rows">,
  ];
  let dependentDialects = ["::mlir::moe::MoEDialect",
                           "::mlir::shard::ShardDialect"];
}

def MoEDataParallelPass
    : Pass<"moe-data-parallel", "::mlir::moe::ModelOp"> {
  let summary = "Forms data-parallel groups of the tensor-parallel groups for "
                "batched plans";
  let description = [{
    With `max-batch` > 1 and a device grid of N ranks in tensor-parallel
    groups of T (`moe.tensor_parallel`, 1 when absent), N / T > 1 groups run
    different sequences (DeepSpeed-MoE's data parallelism for the non-expert
    parts): each group has its own batch of `max-batch` sequences, its own
    KV cache pool and up to max_tokens rows per step, and the expert layers
    send each token to the ranks of its experts and its outputs back (the
    plan lowering turns the `moe.all_to_all` dispatch/combine pair of every
    MoE layer into AllToAllV steps: one all-to-all-v over all ranks, or where
    moe-comm-hierarchy split the pair, within the node to a relay and then
    across nodes). Records
    `moe.data_parallel = N / T` on the model; changes nothing otherwise
    (batch 1, one group).

    ```mlir
    moe.model @m ... attributes {moe.data_parallel = 2 : i64, moe.tensor_parallel = 2 : i64}
    ```
  }];
  let options = [
    Option<"maxBatch", "max-batch", "int64_t", /*default=*/"1",
           "Sequences per step and group (moe-compile --max-batch)">,
  ];
  let dependentDialects = ["::mlir::moe::MoEDialect"];
}

def MoECommHierarchyPass
    : Pass<"moe-comm-hierarchy", "::mlir::moe::ModelOp"> {
  let summary = "Splits flat expert exchanges into intra-node and inter-node "
                "stages";
  let description = [{
    A flat all-to-all over P ranks is P-1 hops per rank; with G ranks per
    node, an intra-node stage (grid axis 1) followed by an inter-node stage
    among ranks with the same local index (grid axis 0) is (G-1) + (P/G-1)
    hops, O(G + P/G) instead of O(P) (DeepSpeed-MoE's hierarchical
    all-to-all); the slow inter-node links carry P/G-1 messages per rank
    instead of P-G. Dispatch goes intra-node first, combine inter-node
    first. Exchanges over a grid with one node or one rank per node stay
    flat.

    ```mlir
    %y2 = moe.all_to_all combine %y, %off on @devices axes [0, 1] ...
    ```

    becomes

    ```mlir
    %a = moe.all_to_all combine %y, %off on @devices axes [0] ...
    %y2 = moe.all_to_all combine %a, %off on @devices axes [1] ...
    ```
  }];
  let dependentDialects = ["::mlir::moe::MoEDialect"];
}

//===----------------------------------------------------------------------===//
// Memory and scheduling
//===----------------------------------------------------------------------===//

def MoELayerStreamingPass
    : Pass<"moe-layer-streaming", "::mlir::moe::ModelOp"> {
  let summary = "Streams the weights that exceed the memory budget, expert by "
                "expert and layer by layer, overlapped with compute";
  let description = [{
    When a rank's weights plus its activation arena and KV cache exceed
    `memory-budget` bytes, decides which weights stay resident and which are
    streamed, cheapest per token first:

    1. Experts of MoE layers (largest layers first) become on-demand: only
       the experts the gate routes tokens to are fetched, after the gate, so
       a decode step reads top_k of E experts instead of holding all E. The
       runtime keeps them in a cache bounded by the budget (at least two
       experts: one computing, one loading).
    2. If that is not enough, the dense weights of layers (largest first) are
       fetched `lookahead` layers ahead of their use and released after it,
       so the fetch overlaps the compute of the layers in between.

    Embeddings, the final norm and the LM head stay resident. The decisions
    are made for the rank that needs the most memory and applied to all.
    Annotates the ops (the plan lowering turns them into Prefetch/Evict steps
    on the streaming stream and on-demand Experts steps):

    ```mlir
    %h = moe.layer 5 (%x = %h4) {moe.prefetch_distance = 1 : i64} : ...
    %y = moe.experts ... {moe.on_demand} : ...
    ```

    and the model with `moe.streaming = {resident_bytes, streamed_bytes,
    peak_bytes}` of the worst rank. Fails when even the resident weights,
    the activations and the minimum streaming buffers exceed the budget.

    The activations (arena and KV caches) are those moe-plan-memory
    recorded in `moe.memory`, so that pass runs first (streaming changes no
    buffer); the KV cache size follows its `max-seq-len`.
  }];
  let options = [
    Option<"memoryBudget", "memory-budget", "uint64_t", /*default=*/"0",
           "bytes per rank (0: unlimited, nothing is streamed)">,
    Option<"lookahead", "lookahead", "int64_t", /*default=*/"1",
           "how many layers ahead a streamed layer is fetched">,
    Option<"dtype", "dtype", "::mlir::moe::ComputeDType",
           /*default=*/"::mlir::moe::ComputeDType::F32",
           "compute dtype the weights are held in (f32, bf16, f16)",
           [{::llvm::cl::values(
             clEnumValN(::mlir::moe::ComputeDType::F32, "f32", "float32"),
             clEnumValN(::mlir::moe::ComputeDType::BF16, "bf16", "bfloat16"),
             clEnumValN(::mlir::moe::ComputeDType::F16, "f16", "float16"))}]>,
  ];
  let dependentDialects = ["::mlir::moe::MoEDialect"];
}

def MoESchedulePass : Pass<"moe-schedule", "::mlir::moe::ModelOp"> {
  let summary = "Orders each layer so communication can overlap independent "
                "compute";
  let description = [{
    Within each layer, starts every combine exchange as soon as its expert
    outputs exist and moves the ops that do not depend on it (e.g.
    Qwen2-MoE's shared expert, DeepSpeed's residual MLP) between the
    exchange and its first user, so the runtime computes them while the
    collective is in flight on the plan's communication stream. Dispatch
    exchanges move as late as possible. Marks the graph with
    `moe.decode_graph` (the whole forward is capturable as one CUDA graph
    for one-token decode steps: no host-side data-dependent control flow).

    Before:

    ```mlir
    %y2 = moe.all_to_all combine %y ...
    %m = moe.combine %y2 ...
    %s = moe.mlp %x ...          // shared expert
    ```

    After:

    ```mlir
    %y2 = moe.all_to_all combine %y ...
    %s = moe.mlp %x ...          // can run while the exchange is in flight
    %m = moe.combine %y2 ...
    ```
  }];
  let dependentDialects = ["::mlir::moe::MoEDialect"];
}

def MoEPlanMemoryPass : Pass<"moe-plan-memory", "::mlir::moe::ModelOp"> {
  let summary = "Plans activation memory: buffer liveness and arena offsets";
  let description = [{
    Runs the plan lowering's storage analysis (in-place reuse of dying
    inputs, column views, packed q/k/v) and live-range based arena
    planning once, and records the result, which the plan emitter and
    moe-layer-streaming read instead of recomputing it: the model gets
    `moe.buffers` (one `#moe.buffer` per activation buffer: row shape,
    arena offset, live range in steps), `moe.memory = {arena_bytes,
    unplanned_bytes, kv_cache_bytes, max_tokens, max_seq_len}` and
    `moe.peak_bytes` (per rank: weights + arena + KV cache); every op
    producing activations gets `moe.slices` (per result: buffer, first
    column, width) and `moe.mlp` its `moe.scratch` buffers. Run it after the
    last pass that changes the graph: the emitter checks the recorded live
    ranges against the steps and rejects a stale record.

    Example:

    ```mlir
    %q = moe.linear %x, %wq ... {moe.slices = array<i64: 2, 0, 16>}
    %k = moe.linear %x, %wk ... {moe.slices = array<i64: 2, 16, 8>}
    ```
  }];
  let options = [
    Option<"maxSeqLen", "max-seq-len", "int64_t", /*default=*/"0",
           "KV cache tokens (0: min(max_position_embeddings, 4096))">,
    Option<"maxBatch", "max-batch", "int64_t", /*default=*/"1",
           "sequences decoded together: KV cache pages for this many "
           "sequences, and forward calls of at least this many tokens">,
    Option<"kvPageSize", "kv-page-size", "int64_t", /*default=*/"0",
           "positions per KV page of a batched plan (0: 16, or max-seq-len "
           "when shorter)">,
    Option<"kvPages", "kv-pages", "int64_t", /*default=*/"0",
           "KV pages of a batched plan's pool (0: enough for max-batch "
           "sequences at full length; at least one such sequence)">,
    Option<"dtype", "dtype", "::mlir::moe::ComputeDType",
           /*default=*/"::mlir::moe::ComputeDType::F32",
           "compute dtype the weights are held in (f32, bf16, f16)",
           [{::llvm::cl::values(
             clEnumValN(::mlir::moe::ComputeDType::F32, "f32", "float32"),
             clEnumValN(::mlir::moe::ComputeDType::BF16, "bf16", "bfloat16"),
             clEnumValN(::mlir::moe::ComputeDType::F16, "f16", "float16"))}]>,
  ];
}

#endif // MOE_PASSES_TD
