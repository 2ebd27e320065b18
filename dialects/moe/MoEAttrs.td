//===- MoEAttrs.td - moe enums and attributes ---------------*- tablegen -*-===//
//
// Enums (activation, score function, rope style, init kind, exchange
// direction) and the structured attributes that passes read and fill:
// `#moe.routing` (gating configuration) and `#moe.placement` (expert -> rank).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_ATTRS_TD
#define MOE_ATTRS_TD

include "MoEDialect.td"
include "mlir/IR/AttrTypeBase.td"
include "mlir/IR/EnumAttr.td"

//===----------------------------------------------------------------------===//
// Enums
//===----------------------------------------------------------------------===//

def MoE_InitKind : I32EnumAttr<"InitKind",
    "how `moe-run --random-weights` fills a parameter", [
  I32EnumAttrCase<"Normal", 0, "normal">,
  I32EnumAttrCase<"Ones", 1, "ones">,
  I32EnumAttrCase<"Zeros", 2, "zeros">
]> {
  let cppNamespace = "::mlir::moe";
}

def MoE_WeightFormat : I32EnumAttr<"WeightFormat",
    "how a quantized parameter is stored in the checkpoint", [
  I32EnumAttrCase<"FP8E4M3Block", 1, "fp8_e4m3">,
  I32EnumAttrCase<"MXFP4", 2, "mxfp4">
]> {
  let cppNamespace = "::mlir::moe";
}

def MoE_Activation : I32EnumAttr<"Activation",
    "activation of a feed-forward network", [
  I32EnumAttrCase<"Gelu", 0, "gelu">,
  I32EnumAttrCase<"GeluTanh", 1, "gelu_tanh">,
  I32EnumAttrCase<"Relu", 2, "relu">,
  I32EnumAttrCase<"Silu", 3, "silu">,
  // gpt-oss's clamped SwiGLU (HF GptOssExperts): with gate g and up u,
  // g = min(g, limit), u = clamp(u, -limit, limit),
  // out = (u + 1) * g * sigmoid(alpha * g). Only moe.experts takes it: it
  // carries the `swiglu_limit` and `swiglu_alpha` it needs.
  I32EnumAttrCase<"SwigluOai", 4, "swiglu_oai">
]> {
  let cppNamespace = "::mlir::moe";
}

def MoE_ScoreFn : I32EnumAttr<"ScoreFn", "router score function", [
  I32EnumAttrCase<"Softmax", 0, "softmax">,
  I32EnumAttrCase<"Sigmoid", 1, "sigmoid">
]> {
  let cppNamespace = "::mlir::moe";
}

def MoE_RopeStyle : I32EnumAttr<"RopeStyle", "how rotary embedding pairs dims", [
  // Rotates dim i with dim i + rotary_dim/2 (HF rotate_half; Llama, Mixtral, Qwen).
  I32EnumAttrCase<"NeoX", 0, "neox">,
  // Rotates dims 2i and 2i+1 (GPT-J, original RoFormer).
  I32EnumAttrCase<"Interleaved", 1, "interleaved">
]> {
  let cppNamespace = "::mlir::moe";
}

def MoE_ExchangeKind : I32EnumAttr<"ExchangeKind",
    "direction of an expert-parallel token exchange", [
  // Token rows go to the ranks that own their experts.
  I32EnumAttrCase<"Dispatch", 0, "dispatch">,
  // Expert outputs come back to the ranks that own their tokens.
  I32EnumAttrCase<"Combine", 1, "combine">
]> {
  let cppNamespace = "::mlir::moe";
}

//===----------------------------------------------------------------------===//
// Attributes
//===----------------------------------------------------------------------===//

class MoE_Attr<string name, string attrMnemonic, list<Trait> traits = []>
    : AttrDef<MoE_Dialect, name, traits> {
  let mnemonic = attrMnemonic;
}

def MoE_RoutingAttr : MoE_Attr<"Routing", "routing"> {
  let summary = "how a router's logits pick experts and weigh them";
  let description = [{
    The complete gating configuration of one MoE layer, as executed by the
    fused `moe.gate` (the plan's Gate step):

    - `top_k`: experts per token (k >= 1).
    - `score`: `softmax` (default) or `sigmoid` over the router logits.
    - `score_before_topk`: true (default; Mixtral, Qwen, OLMoE, Switch)
      picks the top-k of the scores; false picks the top-k logits and
      applies the score function to the picked ones only.
    - `norm_topk_prob`: divide the picked weights by their sum.
    - `capacity_factor`, `min_capacity`, `drop_tokens`: with `drop_tokens`,
      expert e admits at most
      `max(min_capacity, ceil(capacity_factor * T * top_k / num_experts))`
      slots in token order; the others get weight 0 and are not dispatched.
      Inference uses the model's eval capacity factor here.

    - `n_group`, `topk_group` (DeepSeek-V3's group-limited routing): the
      experts form `n_group` equal groups of consecutive ids; a group's
      score is the sum of its two largest selection scores, only the
      `topk_group` best groups stay selectable and the others' selection
      scores become 0.0 (not -inf: HF `masked_fill(~score_mask, 0.0)`).
      Defaults 1 and 1: one group, no limit.
    - `routed_scaling_factor`: the final weights (after `norm_topk_prob`)
      are multiplied by it (default 1.0).

    Parameters at their default are not printed. A bias on the logits (the
    gpt-oss router's) is not routing: it is `moe.router`'s `bias` operand,
    which both selection and weights see (gpt-oss is `score_before_topk =
    false`: softmax over the k largest biased logits). DeepSeek-V3's
    score-correction bias (`e_score_correction_bias`) is selection only:
    it is added to the scores that top-k (and the group scores) rank, while
    the weights are the unbiased scores of the picked experts; being a
    weight, it is `moe.gate`'s (`moe.top_k`'s) `selection_bias` operand.

    Example:

    ```mlir
    #moe.routing<top_k = 2, norm_topk_prob = true>
    #moe.routing<top_k = 1, capacity_factor = 1.0, min_capacity = 4, drop_tokens = true>
    #moe.routing<top_k = 8, score = sigmoid, norm_topk_prob = true, n_group = 8, topk_group = 4, routed_scaling_factor = 2.5>
    ```
  }];
  let parameters = (ins
    "int64_t":$topK,
    "::mlir::moe::ScoreFn":$score,
    "bool":$scoreBeforeTopk,
    "bool":$normTopkProb,
    "::llvm::APFloat":$capacityFactor,
    "int64_t":$minCapacity,
    "bool":$dropTokens,
    "int64_t":$nGroup,
    "int64_t":$topkGroup,
    "::llvm::APFloat":$routedScalingFactor);
  let builders = [
    AttrBuilder<(ins "int64_t":$topK,
                     CArg<"::mlir::moe::ScoreFn", "::mlir::moe::ScoreFn::Softmax">:$score,
                     CArg<"bool", "true">:$scoreBeforeTopk,
                     CArg<"bool", "false">:$normTopkProb,
                     CArg<"double", "0.0">:$capacityFactor,
                     CArg<"int64_t", "0">:$minCapacity,
                     CArg<"bool", "false">:$dropTokens,
                     CArg<"int64_t", "1">:$nGroup,
                     CArg<"int64_t", "1">:$topkGroup,
                     CArg<"double", "1.0">:$routedScalingFactor), [{
      return $_get($_ctxt, topK, score, scoreBeforeTopk, normTopkProb,
                   ::llvm::APFloat(capacityFactor), minCapacity, dropTokens,
                   nGroup, topkGroup, ::llvm::APFloat(routedScalingFactor));
    }]>
  ];
  let skipDefaultBuilders = 1;
  let hasCustomAssemblyFormat = 1;
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    /// Slots expert `e` admits out of `numTokens` tokens, or -1 when the layer
    /// drops nothing.
    int64_t getCapacity(int64_t numTokens, int64_t numExperts) const;
    double getCapacityFactorValue() const {
      return getCapacityFactor().convertToDouble();
    }
    double getRoutedScalingFactorValue() const {
      return getRoutedScalingFactor().convertToDouble();
    }
  }];
}

def MoE_PlacementAttr : MoE_Attr<"Placement", "placement"> {
  let summary = "which ranks hold each expert";
  let description = [{
    `experts[e]` is the rank (in `[0, ranks)`) that holds expert `e`'s
    weights and runs it. Filled by `moe-expert-placement`; a layer without a
    placement runs every expert on every rank.

    `replicas` lists extra copies of hot experts as `expert : rank` pairs
    (DeepSeek EPLB-style redundant experts): an expert with copies on ranks
    `[experts[e], r1, r2, ...]` (primary first, then the replicas in the
    order listed) splits its routed slots among them, slot `j` of the
    expert going to copy `j mod copies`, so the busiest expert's tokens are
    computed in parallel. Each slot is still computed by exactly one rank.

    `slices = S` (expert slicing, DeepSpeed-MoE's answer to fewer experts
    than ranks) splits every expert's intermediate dimension into S equal
    parts on S different ranks: `experts` then lists E x S ranks, entry
    `e * S + s` holding rows `[s I/S, (s+1) I/S)` of expert e's gate/up and
    the same columns of its down projection. Every part computes all of the
    expert's routed slots; their partial down projections add up in the
    combine exchange (the down bias is added by part 0). Slicing excludes
    replicas.

    Example:

    ```mlir
    #moe.placement<ranks = 2, experts = [0, 0, 0, 0, 1, 1, 1, 1]>
    #moe.placement<ranks = 4, experts = [0, 1, 2, 3], replicas = [0 : 2, 0 : 3]>
    #moe.placement<ranks = 4, experts = [0, 1, 2, 3], slices = 2>
    ```
  }];
  let parameters = (ins "int64_t":$numRanks,
                        ArrayRefParameter<"int64_t">:$expertRanks,
                        OptionalArrayRefParameter<"int64_t">:$replicas,
                        "int64_t":$slices);
  let hasCustomAssemblyFormat = 1;
  let genVerifyDecl = 1;
  let skipDefaultBuilders = 1;
  let builders = [
    AttrBuilder<(ins "int64_t":$numRanks,
                     "::llvm::ArrayRef<int64_t>":$expertRanks,
                     CArg<"::llvm::ArrayRef<int64_t>", "{}">:$replicas,
                     CArg<"int64_t", "1">:$slices), [{
      return $_get($_ctxt, numRanks, expertRanks, replicas, slices);
    }]>
  ];
  let extraClassDeclaration = [{
    int64_t getNumExperts() const {
      return int64_t(getExpertRanks().size()) / std::max<int64_t>(getSlices(), 1);
    }
    /// The ranks holding a copy of `expert`: its primary rank first, then
    /// its replicas in the order listed. Sliced: the ranks of its parts, in
    /// part order.
    ::llvm::SmallVector<int64_t> getCopies(int64_t expert) const;
    /// The rank of part `slice` of `expert` (slice 0 when not sliced).
    int64_t getPartRank(int64_t expert, int64_t slice) const {
      return getExpertRanks()[expert * getSlices() + slice];
    }
    /// Whether `rank` holds a copy of `expert`.
    bool holds(int64_t rank, int64_t expert) const;
    /// The most distinct experts any one rank holds a copy or a part of:
    /// a token's top-k slots send a rank at most min(k, this) rows (a slot
    /// goes to one copy, and an expert's parts lie on distinct ranks).
    int64_t getMaxExpertsPerRank() const;
    /// Number of (expert, rank) copies: experts plus replicas.
    int64_t getNumCopies() const {
      return getNumExperts() + int64_t(getReplicas().size()) / 2;
    }
  }];
}

def MoE_BufferAttr : MoE_Attr<"Buffer", "buffer"> {
  let summary = "an activation buffer of the plan, placed in the arena";
  let description = [{
    One buffer of the activation arena, as moe-plan-memory decided it (the
    model's `moe.buffers` lists them; an op's `moe.slices` point into them):
    `rows = T * rows_per_token + fixed_rows` rows of `row_elems` elements of
    `type` for a forward call over T tokens, at byte `offset` of the arena,
    live from step `first` to step `last` (counting the plan's steps that
    touch activations; -1 when none does).

    Example:

    ```mlir
    #moe.buffer<name = "layers.0.attention.qkv", type = f32, row_elems = 32,
                rows_per_token = 1, fixed_rows = 0, offset = 0, first = 2,
                last = 7>
    ```
  }];
  let parameters = (ins StringRefParameter<>:$name, "::mlir::Type":$type,
                        "int64_t":$rowElems, "int64_t":$rowsPerToken,
                        "int64_t":$fixedRows, "int64_t":$offset,
                        "int64_t":$first, "int64_t":$last);
  let assemblyFormat = [{
    `<` `name` `=` $name `,` `type` `=` $type `,` `row_elems` `=` $rowElems `,`
    `rows_per_token` `=` $rowsPerToken `,` `fixed_rows` `=` $fixedRows `,`
    `offset` `=` $offset `,` `first` `=` $first `,` `last` `=` $last `>`
  }];
  let genVerifyDecl = 1;
}

def MoE_SourceAttr : MoE_Attr<"Source", "source"> {
  let summary = "where an expert-stacked parameter lies in the checkpoint";
  let description = [{
    On a `moe.param` of shape `[E, N, K]` (an expert-stacked matrix) or
    `[E, N]` (stacked biases): how expert `e`'s slice is read from the
    checkpoint, so one parameter covers both the Hub's per-expert tensors
    and the fused 3-D tensors other writers produce.

    - `tensor` containing `{e}`: one checkpoint tensor per expert, `{e}`
      replaced by the expert's number, each of shape `[N, K]` (`[N]`):
      Mixtral's `experts.{e}.w1.weight`, Qwen/OLMoE's
      `experts.{e}.gate_proj.weight`. `offset`, `stride` and `transposed`
      keep their defaults.
    - otherwise the fused tensor `tensor`, of shape `[E, A, K]`, with
      `param[e, n, k] = tensor[e, offset + n * stride, k]`; with
      `transposed` it is `[E, K, A]` and
      `param[e, n, k] = tensor[e, k, offset + n * stride]`. For biases it is
      `[E, A]` and `param[e, n] = tensor[e, offset + n * stride]`.
      transformers v5's `gate_up_proj` `[E, 2I, H]` gives gate
      (`offset = 0`) and up (`offset = I`); gpt-oss's `[E, H, 2I]` with
      interleaved columns gives gate (`stride = 2, transposed = true`) and
      up (`offset = 1, stride = 2, transposed = true`).

    A parameter without a source is its checkpoint tensor `name` as is.
    Parameters at their default are not printed.

    Example:

    ```mlir
    #moe.source<tensor = "model.layers.0.block_sparse_moe.experts.{e}.w1.weight">
    #moe.source<tensor = "model.layers.0.mlp.experts.gate_up_proj", offset = 32>
    #moe.source<tensor = "model.layers.0.mlp.experts.gate_up_proj", offset = 1, stride = 2, transposed = true>
    ```
  }];
  let parameters = (ins StringRefParameter<"checkpoint tensor, or per-expert pattern with {e}">:$tensor,
                        DefaultValuedParameter<"int64_t", "0">:$offset,
                        DefaultValuedParameter<"int64_t", "1">:$stride,
                        DefaultValuedParameter<"bool", "false">:$transposed);
  let assemblyFormat = "`<` struct(params) `>`";
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    /// Whether `tensor` names one checkpoint tensor per expert (has `{e}`).
    bool isPerExpert() const { return getTensor().contains("{e}"); }
    /// The per-expert tensor name of `expert` (isPerExpert()).
    std::string getExpertTensor(int64_t expert) const;
  }];
}

def MoE_QuantAttr : MoE_Attr<"Quant", "quant"> {
  let summary = "a parameter kept quantized as the checkpoint stores it";
  let description = [{
    On a `moe.param` (a matrix `[N, K]` or an expert-stacked `[E, N, K]`):
    the checkpoint stores it quantized and the runtime computes with it so,
    dequantizing inside its matrix products. The parameter's element type
    is then the type of the dequantized values (f32); what the checkpoint
    holds is:

    - `fp8_e4m3` (HF `quant_method: "fp8"`, `integrations/finegrained_fp8.py`):
      the tensor (`name`, or the per-expert tensors of its `source`) is
      F8_E4M3 `[N, K]`; `scale` names the F32 tensor `[ceil(N / bn),
      ceil(K / bk)]` (`{e}` per expert) with `block = [bn, bk]`, and
      `w[n, k] = fp8[n, k] * scale[n / bn, k / bk]` (edge blocks may be
      partial).
    - `mxfp4` (HF `quant_method: "mxfp4"`, `integrations/mxfp4.py`): U8
      `*_blocks` `[.., N, K / 32, 16]` of e2m1 pairs (element 2j in the low
      nibble) and U8 e8m0 `*_scales` `[.., N, K / 32]` (`scale`), `block =
      [1, 32]`: `w[n, k] = e2m1 * 2^(scale[n, k / 32] - 127)`.

    Example:

    ```mlir
    #moe.quant<format = fp8_e4m3, scale = "model.layers.0.mlp.down_proj.weight_scale_inv", block = 128, 128>
    ```
  }];
  let parameters = (ins EnumParameter<MoE_WeightFormat>:$format,
                        StringRefParameter<"the scale tensor, or per-expert pattern with {e}">:$scale,
                        ArrayRefParameter<"int64_t", "block rows and columns one scale covers">:$block);
  let assemblyFormat = "`<` struct(params) `>`";
  let genVerifyDecl = 1;
}

#endif // MOE_ATTRS_TD
