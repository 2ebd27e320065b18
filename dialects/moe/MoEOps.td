//===- MoEOps.td - moe operations --------------------------*- tablegen -*-===//
//
// Ops of the moe dialect. They stay close to the runtime's kernels
// (runtime/schema/plan.fbs) so that lowering to a plan is one op to one (or a
// few) steps, while keeping the MoE layer decomposed for the passes.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_OPS_TD
#define MOE_OPS_TD

include "MoEDialect.td"
include "MoEAttrs.td"
include "MoEInterfaces.td"
include "mlir/IR/BuiltinAttributeInterfaces.td"
include "mlir/IR/OpAsmInterface.td"
include "mlir/IR/SymbolInterfaces.td"
include "mlir/Interfaces/ControlFlowInterfaces.td"
include "mlir/Interfaces/FunctionInterfaces.td"
include "mlir/Interfaces/SideEffectInterfaces.td"
include "mlir/Interfaces/InferTypeOpInterface.td"

//===----------------------------------------------------------------------===//
// Type constraints
//===----------------------------------------------------------------------===//

// Activations: [tokens, features], f32. The token count is normally dynamic.
def MoE_Act : TensorRankOf<[F32], [2]>;
def MoE_TokenIds : TensorRankOf<[I32], [1]>;
def MoE_WeightElement : AnyTypeOf<[F32, BF16, F16]>;
def MoE_Weight : ConfinedType<TensorOf<[F32, BF16, F16]>, [HasStaticShapePred],
    "statically shaped tensor of f32, bf16 or f16">;
def MoE_Matrix : ConfinedType<2DTensorOf<[F32, BF16, F16]>, [HasStaticShapePred],
    "2D statically shaped tensor of f32, bf16 or f16">;
def MoE_Vector : ConfinedType<1DTensorOf<[F32, BF16, F16]>, [HasStaticShapePred],
    "1D statically shaped tensor of f32, bf16 or f16">;
// Expert-stacked weights: axis 0 is the expert.
def MoE_StackedMatrix : ConfinedType<3DTensorOf<[F32, BF16, F16]>, [HasStaticShapePred],
    "3D statically shaped tensor of f32, bf16 or f16 (expert-stacked matrices)">;
def MoE_StackedVector : ConfinedType<2DTensorOf<[F32, BF16, F16]>, [HasStaticShapePred],
    "2D statically shaped tensor of f32, bf16 or f16 (expert-stacked vectors)">;
// Routing tables: [tokens, top_k] expert ids / weights / admission flags.
def MoE_SlotIds : TensorRankOf<[I32], [2]>;
def MoE_SlotWeights : TensorRankOf<[F32], [2]>;
def MoE_SlotMask : TensorRankOf<[I1], [2]>;
def MoE_Offsets : ConfinedType<1DTensorOf<[I32]>, [HasStaticShapePred],
    "1D statically shaped tensor of i32 (per-expert prefix sums)">;
def MoE_SlotList : TensorRankOf<[I32], [1]>;

// A signless i64 attribute read as int64_t (I64Attr reads as uint64_t, which
// would hide negative values from the verifiers).
def MoE_I64Attr : TypedSignlessIntegerAttrBase<I64, "int64_t",
    "64-bit signless integer attribute"> {
  let convertFromStorage = "$_self.getValue().getSExtValue()";
}

//===----------------------------------------------------------------------===//
// Model structure
//===----------------------------------------------------------------------===//

def MoE_ModelOp : MoE_Op<"model", [
    Symbol, SymbolTable, IsolatedFromAbove, NoTerminator, SingleBlock,
    NoRegionArguments]> {
  let summary = "a model: configuration, parameter declarations and its graph";
  let description = [{
    The root of a compiled model. Its attributes hold the model-level
    configuration (what the plan's ModelInfo carries); its body declares the
    checkpoint tensors (`moe.param`), optionally the device grid
    (`shard.grid`, `[nodes, gpus_per_node]`), and exactly one `moe.graph`.

    - `architecture`: the Hugging Face `model_type` (`gpt2`, `mixtral`,
      `qwen2_moe`, ...) or `description` for model-description JSON.
    - `checkpoint`: absolute path of the checkpoint directory the params
      refer to; absent when the model has no weights (a description or a
      bare `config.json`: run it with `--random-weights`).
    - `kv_cache_dtype`: the element type the KV caches hold (`f32`, `bf16`
      or `f16`; default f32), `moe-compile --kv-dtype`. The storage plan,
      the cost model's KV bytes and the plan's caches follow it.

    The verifier checks that the graph has `num_layers` `moe.layer` ops
    numbered 0..n-1 in order, that attention layers are distinct, and that
    placements agree with the device grid.

    Example:

    ```mlir
    moe.model @tiny attributes {architecture = "mixtral", vocab_size = 256,
        hidden_size = 64, num_layers = 2, max_position_embeddings = 512,
        bos_token_id = 1, eos_token_ids = array<i64: 2>} {
      moe.param @embed "model.embed_tokens.weight" : tensor<256x64xbf16> init normal std 2.0e-02
      moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x256xf32> {
        ...
      }
    }
    ```
  }];
  let arguments = (ins
    SymbolNameAttr:$sym_name,
    StrAttr:$architecture,
    MoE_I64Attr:$vocab_size,
    MoE_I64Attr:$hidden_size,
    MoE_I64Attr:$num_layers,
    MoE_I64Attr:$max_position_embeddings,
    OptionalAttr<MoE_I64Attr>:$bos_token_id,
    DefaultValuedAttr<DenseI64ArrayAttr, "{}">:$eos_token_ids,
    OptionalAttr<StrAttr>:$checkpoint,
    OptionalAttr<TypeAttr>:$kv_cache_dtype);
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = "$sym_name attr-dict-with-keyword $body";
  let hasVerifier = 1;
  let hasRegionVerifier = 1;
  let skipDefaultBuilders = 1;
  let builders = [OpBuilder<(ins "::llvm::StringRef":$name,
                                 "::llvm::StringRef":$architecture)>];
  let extraClassDeclaration = [{
    /// The model's graph, or null before one is added.
    GraphOp getGraph();
    /// The KV caches' element type (kv_cache_dtype, f32 when absent).
    ::mlir::Type getKvCacheElementType();
    ::mlir::Block &getBodyBlock() { return getBody().front(); }
  }];
}

def MoE_ParamOp : MoE_Op<"param", [Symbol, HasParent<"ModelOp">]> {
  let summary = "declares one checkpoint tensor (never its data)";
  let description = [{
    A weight of the model: the checkpoint tensor `name`, its shape and the
    element type it is stored with. The IR never holds weight data; the
    runtime maps it from the checkpoint, or fills it as `init` says under
    `--random-weights` (`normal` needs `std`).

    An expert-stacked parameter (`[E, N, K]` matrices or `[E, N]` biases of
    a `moe.experts`) may carry a `source` (`#moe.source`) saying how each
    expert's slice is read from the checkpoint: per-expert tensors through
    a `{e}` pattern, or rows/columns of a fused 3-D tensor. Without one,
    the parameter is the checkpoint tensor `name` itself. With a per-expert
    pattern, `name` is that pattern; `--random-weights` fills each expert's
    slice as it would fill the per-expert tensor.

    A `quant` (`#moe.quant`) says the checkpoint stores the matrix quantized
    (FP8 with block scales, MXFP4); the element type is then f32, the type
    of its dequantized values, and only products (`moe.linear`, the
    experts' matrices) may read it.

    Example:

    ```mlir
    moe.param @wq "model.layers.0.self_attn.q_proj.weight" : tensor<64x64xbf16> init normal std 2.0e-02
    moe.param @ln "model.norm.weight" : tensor<64xf32> init ones
    moe.param @w1 "model.layers.0.block_sparse_moe.experts.{e}.w1.weight" : tensor<8x32x64xbf16>
        source <tensor = "model.layers.0.block_sparse_moe.experts.{e}.w1.weight"> init normal std 2.0e-02
    ```
  }];
  let arguments = (ins
    SymbolNameAttr:$sym_name,
    StrAttr:$name,
    TypeAttrOf<AnyRankedTensor>:$type,
    MoE_InitKind:$init,
    OptionalAttr<F32Attr>:$init_std,
    OptionalAttr<MoE_SourceAttr>:$source,
    OptionalAttr<MoE_QuantAttr>:$quant);
  let assemblyFormat = [{
    $sym_name $name `:` $type (`source` $source^)? (`quant` $quant^)? `init` $init (`std` $init_std^)? attr-dict
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    ::mlir::RankedTensorType getTensorType() {
      return ::llvm::cast<::mlir::RankedTensorType>(getType());
    }
  }];
}

def MoE_GraphOp : MoE_Op<"graph", [
    FunctionOpInterface, IsolatedFromAbove, HasParent<"ModelOp">]> {
  let summary = "the forward function of a model: token ids to logits";
  let description = [{
    The computation of one forward call over `T` new tokens (a prefill
    chunk or one decode step): `tensor<?xi32>` token ids in,
    `tensor<?xVxf32>` logits out. Positions are implicit (the runtime
    knows them); the KV cache is addressed by each attention's `layer`.

    Example:

    ```mlir
    moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x256xf32> {
      %table = moe.weight @embed : tensor<256x64xf32>
      %x = moe.embedding %ids, %table : tensor<?xi32>, tensor<256x64xf32> -> tensor<?x64xf32>
      ...
      moe.return %logits : tensor<?x256xf32>
    }
    ```
  }];
  let arguments = (ins
    SymbolNameAttr:$sym_name,
    TypeAttrOf<FunctionType>:$function_type,
    OptionalAttr<DictArrayAttr>:$arg_attrs,
    OptionalAttr<DictArrayAttr>:$res_attrs);
  let regions = (region SizedRegion<1>:$body);
  let hasCustomAssemblyFormat = 1;
  let hasVerifier = 1;
  let skipDefaultBuilders = 1;
  let builders = [OpBuilder<(ins "::llvm::StringRef":$name,
                                 "::mlir::FunctionType":$type)>];
  let extraClassDeclaration = [{
    ::mlir::Region *getCallableRegion() { return &getBody(); }
    ::llvm::ArrayRef<::mlir::Type> getArgumentTypes() {
      return getFunctionType().getInputs();
    }
    ::llvm::ArrayRef<::mlir::Type> getResultTypes() {
      return getFunctionType().getResults();
    }
  }];
}

def MoE_ReturnOp : MoE_Op<"return", [
    Pure, HasParent<"GraphOp">, ReturnLike, Terminator]> {
  let summary = "returns the logits from a moe.graph";
  let description = [{
    Example:

    ```mlir
    moe.return %logits : tensor<?x256xf32>
    ```
  }];
  let arguments = (ins Variadic<AnyType>:$operands);
  let assemblyFormat = "($operands^ `:` type($operands))? attr-dict";
  let hasVerifier = 1;
}

def MoE_WeightOp : MoE_Op<"weight", [
    Pure, DeclareOpInterfaceMethods<SymbolUserOpInterface>]> {
  let summary = "uses a declared parameter as a value";
  let description = [{
    Yields the parameter `@param` of the enclosing model. The result type
    must equal the parameter's declared type.

    Example:

    ```mlir
    %w = moe.weight @wq : tensor<64x64xbf16>
    ```
  }];
  let arguments = (ins FlatSymbolRefAttr:$param);
  let results = (outs MoE_Weight:$result);
  let assemblyFormat = "$param attr-dict `:` type($result)";
}

def MoE_LayerOp : MoE_Op<"layer", [
    IsolatedFromAbove, SingleBlock, RecursiveMemoryEffects,
    AllTypesMatch<["input", "result"]>]> {
  let summary = "one decoder layer";
  let description = [{
    The ops of decoder layer `index` (0-based), isolated from the graph: the
    hidden state enters as the region's argument and leaves through
    `moe.yield`; weights enter through `moe.weight`. Per-layer analyses,
    streaming and scheduling work layer by layer on these regions, and the
    pass manager can process layers in parallel.

    Example:

    ```mlir
    %h1 = moe.layer 0 (%x = %h0) : tensor<?x64xf32> {
      ...
      moe.yield %out : tensor<?x64xf32>
    }
    ```
  }];
  let arguments = (ins MoE_I64Attr:$index, MoE_Act:$input);
  let results = (outs MoE_Act:$result);
  let regions = (region SizedRegion<1>:$body);
  let hasCustomAssemblyFormat = 1;
  let hasRegionVerifier = 1;
  let skipDefaultBuilders = 1;
  let builders = [OpBuilder<(ins "int64_t":$index, "::mlir::Value":$input)>];
  let extraClassDeclaration = [{
    ::mlir::Block &getBodyBlock() { return getBody().front(); }
    /// True when the layer routes tokens to experts.
    bool isMoE();
    /// The layer's expert machinery (MoEOpInterface), in program order.
    ::llvm::SmallVector<MoEOpInterface> getMoEOps();
    /// The layer's grouped experts, or null for a dense layer.
    ExpertsOp getExpertsOp();
    /// Sets `placement` on every op of the layer that carries one (the
    /// experts and the exchanges around them), keeping them consistent.
    void setExpertPlacement(PlacementAttr placement);
  }];
}

def MoE_YieldOp : MoE_Op<"yield", [
    Pure, HasParent<"LayerOp">, ReturnLike, Terminator]> {
  let summary = "ends a moe.layer with its output hidden state";
  let description = [{
    Example:

    ```mlir
    moe.yield %out : tensor<?x64xf32>
    ```
  }];
  let arguments = (ins MoE_Act:$value);
  let assemblyFormat = "$value attr-dict `:` type($value)";
}

//===----------------------------------------------------------------------===//
// Dense sublayers
//===----------------------------------------------------------------------===//

def MoE_EmbeddingOp : MoE_Op<"embedding", [Pure]> {
  let summary = "token embedding lookup";
  let description = [{
    `result[t, :] = scale * table[ids[t], :]` with `table` of shape
    `[vocab, hidden]`.

    Example:

    ```mlir
    %x = moe.embedding %ids, %table : tensor<?xi32>, tensor<256x64xbf16> -> tensor<?x64xf32>
    ```
  }];
  let arguments = (ins MoE_TokenIds:$ids, MoE_Matrix:$table,
                       DefaultValuedAttr<F32Attr, "1.0">:$scale);
  let results = (outs MoE_Act:$result);
  let assemblyFormat = [{
    $ids `,` $table attr-dict `:` type($ids) `,` type($table) `->` type($result)
  }];
  let hasVerifier = 1;
}

def MoE_PositionEmbeddingOp : MoE_Op<"position_embedding", [
    Pure, AllTypesMatch<["input", "result"]>]> {
  let summary = "adds learned absolute position embeddings";
  let description = [{
    `result[t, :] = input[t, :] + table[pos[t], :]` where `pos[t]` is the
    position of token `t` in its sequence and `table` is
    `[max_positions, hidden]` (GPT-2's `wpe`).

    Example:

    ```mlir
    %y = moe.position_embedding %x, %wpe : tensor<?x64xf32>, tensor<128x64xf32>
    ```
  }];
  let arguments = (ins MoE_Act:$input, MoE_Matrix:$table);
  let results = (outs MoE_Act:$result);
  let assemblyFormat = "$input `,` $table attr-dict `:` type($input) `,` type($table)";
  let hasVerifier = 1;
}

class MoE_NormOpBase<string mnemonic, list<Trait> traits = []>
    : MoE_Op<mnemonic, !listconcat(traits, [
        Pure, AllTypesMatch<["input", "result"]>])> {
  let results = (outs MoE_Act:$result);
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// Elements normalized together: `group_size`, or the whole row.
    int64_t getGroupSizeOrWidth() {
      return getGroupSize().value_or(
          ::llvm::cast<::mlir::RankedTensorType>(getInput().getType())
              .getDimSize(1));
    }
  }];
}

def MoE_LayerNormOp : MoE_NormOpBase<"layer_norm"> {
  let summary = "LayerNorm over groups of a row";
  let description = [{
    Splits every row into groups of `group_size` elements (default: the
    whole row) and normalizes each:
    `y = (x - mean) / sqrt(var + eps) * weight + bias`, with `weight` and
    `bias` of shape `[group_size]`.

    Example:

    ```mlir
    %y = moe.layer_norm %x, %w, %b eps 1.0e-05 : tensor<?x64xf32>, tensor<64xf32>, tensor<64xf32>
    ```
  }];
  let arguments = (ins MoE_Act:$input, MoE_Vector:$weight,
                       Optional<MoE_Vector>:$bias,
                       F32Attr:$eps, OptionalAttr<MoE_I64Attr>:$group_size);
  let assemblyFormat = [{
    $input `,` $weight (`,` $bias^)? `eps` $eps (`group` $group_size^)? attr-dict
    `:` type($input) `,` type($weight) (`,` type($bias)^)?
  }];
}

def MoE_RMSNormOp : MoE_NormOpBase<"rms_norm"> {
  let summary = "RMSNorm over groups of a row";
  let description = [{
    Splits every row into groups of `group_size` elements (default: the
    whole row) and normalizes each:
    `y = x / sqrt(mean(x^2) + eps) * (weight_offset + weight)`.
    Per-head q/k norms use `group_size = head_dim` (Qwen3) or the whole
    projection (OLMoE); Gemma-style norms use `weight_offset = 1`.

    Example:

    ```mlir
    %y = moe.rms_norm %x, %w eps 1.0e-06 : tensor<?x64xf32>, tensor<64xbf16>
    %qn = moe.rms_norm %q, %wq eps 1.0e-06 group 16 : tensor<?x64xf32>, tensor<16xbf16>
    ```
  }];
  let arguments = (ins MoE_Act:$input, MoE_Vector:$weight,
                       F32Attr:$eps, OptionalAttr<MoE_I64Attr>:$group_size,
                       DefaultValuedAttr<F32Attr, "0.0">:$weight_offset);
  let assemblyFormat = [{
    $input `,` $weight `eps` $eps (`group` $group_size^)? attr-dict
    `:` type($input) `,` type($weight)
  }];
}

def MoE_LinearOp : MoE_Op<"linear", [
    Pure, DeclareOpInterfaceMethods<MoE_CostOpInterface>]> {
  let summary = "dense projection y = x W^T + b";
  let description = [{
    `weight` is `[N, K]` (Hugging Face `nn.Linear`) or, with `transposed`,
    `[K, N]` (GPT-2's `Conv1D`); `bias` is `[N]`.

    Example:

    ```mlir
    %q = moe.linear %x, %wq, %bq : tensor<?x64xf32>, tensor<64x64xbf16>, tensor<64xbf16> -> tensor<?x64xf32>
    %qkv = moe.linear %x, %c_attn, %c_attn_b {transposed} : tensor<?x64xf32>, tensor<64x192xf32>, tensor<192xf32> -> tensor<?x192xf32>
    ```
  }];
  let arguments = (ins MoE_Act:$input, MoE_Matrix:$weight,
                       Optional<MoE_Vector>:$bias, UnitAttr:$transposed);
  let results = (outs MoE_Act:$result);
  let assemblyFormat = [{
    $input `,` $weight (`,` $bias^)? attr-dict `:` type($input) `,` type($weight)
    (`,` type($bias)^)? `->` type($result)
  }];
  let hasVerifier = 1;
}

def MoE_SplitOp : MoE_Op<"split", [Pure]> {
  let summary = "splits the columns of an activation into pieces";
  let description = [{
    Cuts every row into consecutive column ranges whose widths are the
    result widths (e.g. a fused QKV projection into q, k and v). Lowering
    maps this to column offsets in one buffer, so it costs nothing.

    Example:

    ```mlir
    %q, %k, %v = moe.split %qkv : tensor<?x192xf32> -> tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32>
    ```
  }];
  let arguments = (ins MoE_Act:$input);
  let results = (outs Variadic<MoE_Act>:$results);
  let assemblyFormat = "$input attr-dict `:` type($input) `->` type($results)";
  let hasVerifier = 1;
  let hasFolder = 1;
}

def MoE_RotaryOp : MoE_Op<"rotary", [Pure, AllTypesMatch<["input", "result"]>]> {
  let summary = "rotary position embedding";
  let description = [{
    Rotates `rotary_dim` dims of each of `num_heads` heads of `head_dim`
    columns, the first ones or, with `offset`, those from `offset` on (the
    rope part that DeepSeek-V3's MLA puts after each head's `qk_nope_head_dim`
    dims), by angles `pos * theta^(-2i/rotary_dim)`; `neox`
    pairs dim i with i + rotary_dim/2 (HF rotate_half), `interleaved`
    pairs 2i with 2i+1.

    Scaled RoPE (HF `rope_type` linear, llama3, yarn) replaces the angles'
    frequencies by `inv_freq` (`rotary_dim / 2` values, computed by the
    importer as transformers' `ROPE_INIT_FUNCTIONS` do) and multiplies cos
    and sin by `attention_factor` (YaRN's mscale); `theta` is then the base
    they were derived from. (Elements rather than a dense array: those print
    exactly.)

    Example:

    ```mlir
    %qr = moe.rotary %q heads 4 head_dim 16 rotary_dim 16 theta 1.000000e+06 style neox : tensor<?x64xf32>
    %kr = moe.rotary %k heads 1 head_dim 4 rotary_dim 4 theta 1.000000e+04 style neox
        inv_freq dense<[1.0, 0.0025]> : tensor<2xf32> attention_factor 1.2 : tensor<?x4xf32>
    %qpe = moe.rotary %q heads 4 head_dim 24 rotary_dim 8 offset 16 theta 1.000000e+04 style interleaved : tensor<?x96xf32>
    ```
  }];
  let arguments = (ins MoE_Act:$input, MoE_I64Attr:$num_heads, MoE_I64Attr:$head_dim,
                       MoE_I64Attr:$rotary_dim, F32Attr:$theta,
                       MoE_RopeStyle:$style,
                       OptionalAttr<FloatElementsAttr<32>>:$inv_freq,
                       OptionalAttr<F32Attr>:$attention_factor,
                       OptionalAttr<MoE_I64Attr>:$offset);
  let results = (outs MoE_Act:$result);
  let assemblyFormat = [{
    $input `heads` $num_heads `head_dim` $head_dim `rotary_dim` $rotary_dim
    (`offset` $offset^)? `theta` $theta `style` $style (`inv_freq` $inv_freq^)?
    (`attention_factor` $attention_factor^)? attr-dict `:` type($input)
  }];
  let hasVerifier = 1;
}

def MoE_AttentionOp : MoE_Op<"attention", [
    Pure, DeclareOpInterfaceMethods<MoE_CostOpInterface>]> {
  let summary = "multi-head (grouped-query) causal self-attention over the KV cache";
  let description = [{
    Stores the new tokens' `k` and `v` in KV cache `layer`, then computes
    `softmax(q k^T * scale) v` for every head over the positions each token
    may see: causal, and within the last `sliding_window` positions when
    set (the token itself and the `sliding_window - 1` before it, as HF's
    `sliding_window_causal_mask_function`). Query head h uses KV head
    `h / (num_heads / num_kv_heads)` (GQA).

    With `sinks` (`[num_heads]`, gpt-oss's learned attention sinks) head h's
    softmax has one more logit, `sinks[h]` (unscaled), in its denominator
    only: `p_j = exp(s_j) / (exp(sinks[h]) + sum_i exp(s_i))`, so a head may
    attend to nothing (HF gpt_oss `eager_attention_forward` concatenates the
    sink to the logits and drops its column after the softmax).

    Shapes: `q` is `[T, num_heads * head_dim]`, `k` and `v` are
    `[T, num_kv_heads * head_dim]`, the result is like `q`. With `v_head_dim`
    (DeepSeek-V3's MLA, whose values are narrower than its query/key heads)
    `v` is `[T, num_kv_heads * v_head_dim]` and the result
    `[T, num_heads * v_head_dim]`.

    Example:

    ```mlir
    %o = moe.attention %q, %k, %v heads 4 kv_heads 2 head_dim 16 scale 2.500000e-01 layer 0 causal
        : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?x32xf32> -> tensor<?x64xf32>
    %o2 = moe.attention %q, %k, %v heads 4 kv_heads 2 head_dim 16 scale 2.500000e-01 layer 1 causal
        window 128 sinks %s : tensor<4xbf16>
        : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?x32xf32> -> tensor<?x64xf32>
    %o3 = moe.attention %q3, %k3, %v3 heads 4 kv_heads 4 head_dim 24 v_head_dim 16 scale 2.041241e-01 layer 2 causal
        : tensor<?x96xf32>, tensor<?x96xf32>, tensor<?x64xf32> -> tensor<?x64xf32>
    ```
  }];
  let arguments = (ins MoE_Act:$q, MoE_Act:$k, MoE_Act:$v,
                       MoE_I64Attr:$num_heads, MoE_I64Attr:$num_kv_heads,
                       MoE_I64Attr:$head_dim, F32Attr:$scale, MoE_I64Attr:$layer,
                       UnitAttr:$causal, OptionalAttr<MoE_I64Attr>:$sliding_window,
                       Optional<MoE_Vector>:$sinks,
                       OptionalAttr<MoE_I64Attr>:$v_head_dim);
  let results = (outs MoE_Act:$result);
  let assemblyFormat = [{
    $q `,` $k `,` $v `heads` $num_heads `kv_heads` $num_kv_heads `head_dim` $head_dim
    (`v_head_dim` $v_head_dim^)? `scale` $scale `layer` $layer (`causal` $causal^)? (`window` $sliding_window^)?
    (`sinks` $sinks^ `:` type($sinks))?
    attr-dict `:` type($q) `,` type($k) `,` type($v) `->` type($result)
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// Per-head width of v and of the result.
    int64_t getValueHeadDim() { return getVHeadDim().value_or(getHeadDim()); }
  }];
}

def MoE_MLAAttentionOp : MoE_Op<"mla_attention", [
    Pure, DeclareOpInterfaceMethods<MoE_CostOpInterface>]> {
  let summary = "multi-head latent attention (DeepSeek-V3) over a latent KV cache";
  let description = [{
    DeepSeek-V3's MLA with its KV cache holding the compressed latent: per
    token the normalized `c_kv` (`kv_lora_rank` wide) and the roped `k_pe`
    (`rope_dim` wide, shared by all heads), not expanded keys and values.
    Stores the new tokens' `[c_kv | k_pe]` in KV cache `layer`, then for each
    head h, with `q_h = [q_nope_h (nope_dim) | q_pe_h (rope_dim)]` and
    `kv_b` (`kv_b_proj.weight`, `[num_heads * (nope_dim + v_head_dim),
    kv_lora_rank]`) split per head into `W_UK_h` (its first `nope_dim`
    rows) and `W_UV_h` (the next `v_head_dim` rows), computes causally

      s_j = ((q_nope_h W_UK_h) . c_kv_j + q_pe_h . k_pe_j) * scale
      out_h = (sum_j softmax(s)_j c_kv_j) W_UV_h^T

    which equals HF `DeepseekV3Attention.forward` (keys
    `[c_kv W_UK_h^T | k_pe]`, values `c_kv W_UV_h^T`) by associativity: the
    weights are absorbed into the query and the output instead of expanding
    every cached position.

    Shapes: `q` is `[T, num_heads * (nope_dim + rope_dim)]` (RoPE already on
    each head's last `rope_dim` dims), `c_kv` `[T, kv_lora_rank]`, `k_pe`
    `[T, rope_dim]` (roped), the result `[T, num_heads * v_head_dim]`.

    Example:

    ```mlir
    %o = moe.mla_attention %q, %c, %kpe, %kv_b heads 4 nope_dim 16 rope_dim 8 v_head_dim 16 scale 2.041241e-01 layer 0
        : tensor<?x96xf32>, tensor<?x32xf32>, tensor<?x8xf32>, tensor<128x32xbf16> -> tensor<?x64xf32>
    ```
  }];
  let arguments = (ins MoE_Act:$q, MoE_Act:$c_kv, MoE_Act:$k_pe,
                       MoE_Matrix:$kv_b, MoE_I64Attr:$num_heads,
                       MoE_I64Attr:$nope_dim, MoE_I64Attr:$rope_dim,
                       MoE_I64Attr:$v_head_dim, F32Attr:$scale,
                       MoE_I64Attr:$layer);
  let results = (outs MoE_Act:$result);
  let assemblyFormat = [{
    $q `,` $c_kv `,` $k_pe `,` $kv_b `heads` $num_heads `nope_dim` $nope_dim
    `rope_dim` $rope_dim `v_head_dim` $v_head_dim `scale` $scale `layer` $layer
    attr-dict `:` type($q) `,` type($c_kv) `,` type($k_pe) `,` type($kv_b)
    `->` type($result)
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// Width of the compressed latent c_kv: kv_b's columns (static).
    int64_t getKvLoraRank() {
      return ::llvm::cast<::mlir::RankedTensorType>(getKvB().getType())
          .getDimSize(1);
    }
  }];
}

def MoE_GatherColumnsOp : MoE_Op<"gather_columns", [Pure]> {
  let summary = "builds an activation from columns of others";
  let description = [{
    `result[t, j] = concat(inputs)[t, indices[j]]`, where `concat` puts the
    inputs' columns side by side: a permutation, selection, concatenation or
    repetition of columns in one copy. DeepSeek-V3's MLA assembles its
    per-head keys from it: each head's `k_nope` columns of `kv_b_proj`
    followed by the one `k_pe` all heads share.

    Example:

    ```mlir
    %kv = moe.gather_columns %a, %b indices [0, 1, 4, 2, 3, 4] : tensor<?x4xf32>, tensor<?x1xf32> -> tensor<?x6xf32>
    ```
  }];
  let arguments = (ins Variadic<MoE_Act>:$inputs, DenseI64ArrayAttr:$indices);
  let results = (outs MoE_Act:$result);
  let assemblyFormat = [{
    $inputs `indices` $indices attr-dict `:` type($inputs) `->` type($result)
  }];
  let hasVerifier = 1;
}

def MoE_MLPOp : MoE_Op<"mlp", [
    Pure, AttrSizedOperandSegments, AllTypesMatch<["input", "result"]>,
    DeclareOpInterfaceMethods<MoE_CostOpInterface>]> {
  let summary = "dense feed-forward network";
  let description = [{
    `down(act(x up^T + up_bias)) + down_bias`, or, with a `gate` weight
    (SwiGLU / GeGLU), `down(act(x gate^T) * (x up^T))`. Weights are in
    `nn.Linear` layout (`up`, `gate`: `[I, D]`, `down`: `[D, I]`) or, with
    `transposed`, in `Conv1D` layout (`[D, I]` and `[I, D]`).

    Example:

    ```mlir
    %y = moe.mlp %x up %wu gate %wg down %wd act silu
        : (tensor<?x64xf32>, tensor<128x64xbf16>, tensor<128x64xbf16>, tensor<64x128xbf16>) -> tensor<?x64xf32>
    %z = moe.mlp %x up %fc bias %fcb down %proj bias %projb act gelu_tanh {transposed}
        : (tensor<?x64xf32>, tensor<64x256xf32>, tensor<256xf32>, tensor<256x64xf32>, tensor<64xf32>) -> tensor<?x64xf32>
    ```
  }];
  let arguments = (ins MoE_Act:$input, MoE_Matrix:$up, Optional<MoE_Vector>:$up_bias,
                       Optional<MoE_Matrix>:$gate, MoE_Matrix:$down,
                       Optional<MoE_Vector>:$down_bias,
                       MoE_Activation:$activation, UnitAttr:$transposed);
  let results = (outs MoE_Act:$result);
  let assemblyFormat = [{
    $input `up` $up (`bias` $up_bias^)? (`gate` $gate^)? `down` $down
    (`bias` $down_bias^)? `act` $activation attr-dict
    `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// Width of the hidden (intermediate) layer.
    int64_t getIntermediateSize();
  }];
}

def MoE_AddOp : MoE_Op<"add", [Pure, Commutative, SameOperandsAndResultType]> {
  let summary = "elementwise sum (residual connection)";
  let description = [{
    Example:

    ```mlir
    %h = moe.add %x, %attn : tensor<?x64xf32>
    ```
  }];
  let arguments = (ins MoE_Act:$lhs, MoE_Act:$rhs);
  let results = (outs MoE_Act:$result);
  let assemblyFormat = "$lhs `,` $rhs attr-dict `:` type($result)";
}

def MoE_LMHeadOp : MoE_Op<"lm_head", [
    Pure, DeclareOpInterfaceMethods<MoE_CostOpInterface>]> {
  let summary = "output projection to vocabulary logits";
  let description = [{
    `logits = x W^T (+ bias)` with `W` of shape `[vocab, hidden]`. `tied`
    says `W` is the token embedding table (the same `moe.param`), which the
    graph verifier checks.

    Example:

    ```mlir
    %logits = moe.lm_head %h, %wte tied : tensor<?x64xf32>, tensor<256x64xf32> -> tensor<?x256xf32>
    ```
  }];
  let arguments = (ins MoE_Act:$input, MoE_Matrix:$weight,
                       Optional<MoE_Vector>:$bias, UnitAttr:$tied);
  let results = (outs MoE_Act:$result);
  let assemblyFormat = [{
    $input `,` $weight (`,` $bias^)? (`tied` $tied^)? attr-dict `:` type($input) `,`
    type($weight) (`,` type($bias)^)? `->` type($result)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// MoE: routing
//===----------------------------------------------------------------------===//

def MoE_RouterOp : MoE_Op<"router", [
    Pure, DeclareOpInterfaceMethods<MoE_CostOpInterface>]> {
  let summary = "router logits: x W_r^T";
  let description = [{
    Computes `[T, num_experts]` router logits from the hidden state with the
    router weight `[num_experts, hidden]` (Mixtral's
    `block_sparse_moe.gate`, Qwen's `mlp.gate`), plus the optional `bias`
    `[num_experts]` (gpt-oss's `mlp.router.bias`: part of the logits, so it
    takes part in both the selection and the weights).

    Example:

    ```mlir
    %logits = moe.router %x, %wr : tensor<?x64xf32>, tensor<8x64xbf16> -> tensor<?x8xf32>
    %logits2 = moe.router %x, %wr bias %br : tensor<?x64xf32>, tensor<8x64xbf16>, tensor<8xbf16> -> tensor<?x8xf32>
    ```
  }];
  let arguments = (ins MoE_Act:$input, MoE_Matrix:$weight,
                       Optional<MoE_Vector>:$bias);
  let results = (outs MoE_Act:$result);
  let assemblyFormat = [{
    $input `,` $weight (`bias` $bias^)? attr-dict `:` type($input) `,` type($weight)
    (`,` type($bias)^)? `->` type($result)
  }];
  let hasVerifier = 1;
}

def MoE_ScoresOp : MoE_Op<"scores", [Pure, AllTypesMatch<["input", "result"]>]> {
  let summary = "router scores: softmax or sigmoid of each row";
  let description = [{
    Example:

    ```mlir
    %p = moe.scores softmax %logits : tensor<?x8xf32>
    ```
  }];
  let arguments = (ins MoE_ScoreFn:$fn, MoE_Act:$input);
  let results = (outs MoE_Act:$result);
  let assemblyFormat = "$fn $input attr-dict `:` type($input)";
}

def MoE_TopKOp : MoE_Op<"top_k", [Pure]> {
  let summary = "picks the k largest scores of each token";
  let description = [{
    For every row, the `k` largest values in descending order and their
    column (expert) ids; ties go to the lower id.

    DeepSeek-V3's selection (HF `DeepseekV3MoE.route_tokens_to_experts`):
    with `selection_bias` (`[num_experts]`, `e_score_correction_bias`) the
    ranking uses `input + selection_bias` while `values` stay the unbiased
    inputs of the picked columns; with `n_group` the columns form that many
    equal groups, a group scores the sum of its two largest (biased) values,
    only the `topk_group` best groups stay selectable and the other columns
    rank as 0.0 (HF `masked_fill(~score_mask, 0.0)`).

    Example:

    ```mlir
    %w, %e = moe.top_k %p k 2 : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
    %w2, %e2 = moe.top_k %p bias %b : tensor<8xf32> k 2 n_group 2 topk_group 1
        : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
    ```
  }];
  let arguments = (ins MoE_Act:$input, MoE_I64Attr:$k,
                       Optional<MoE_Vector>:$selection_bias,
                       OptionalAttr<MoE_I64Attr>:$n_group,
                       OptionalAttr<MoE_I64Attr>:$topk_group);
  let results = (outs MoE_SlotWeights:$values, MoE_SlotIds:$indices);
  let assemblyFormat = [{
    $input (`bias` $selection_bias^ `:` type($selection_bias))? `k` $k
    (`n_group` $n_group^)? (`topk_group` $topk_group^)?
    attr-dict `:` type($input) `->` type($values) `,` type($indices)
  }];
  let hasVerifier = 1;
}

def MoE_RenormalizeOp : MoE_Op<"renormalize", [
    Pure, AllTypesMatch<["input", "result"]>]> {
  let summary = "divides each token's picked weights by their sum (norm_topk_prob)";
  let description = [{
    Example:

    ```mlir
    %wn = moe.renormalize %w : tensor<?x2xf32>
    ```
  }];
  let arguments = (ins MoE_SlotWeights:$input);
  let results = (outs MoE_SlotWeights:$result);
  let assemblyFormat = "$input attr-dict `:` type($input)";
  let hasFolder = 1;
}

def MoE_ScaleWeightsOp : MoE_Op<"scale_weights", [
    Pure, AllTypesMatch<["input", "result"]>]> {
  let summary = "multiplies each token's picked weights by a constant";
  let description = [{
    DeepSeek-V3's `routed_scaling_factor`, applied after the optional
    renormalization (HF `DeepseekV3MoE.route_tokens_to_experts`).

    Example:

    ```mlir
    %ws = moe.scale_weights %w factor 2.500000e+00 : tensor<?x2xf32>
    ```
  }];
  let arguments = (ins MoE_SlotWeights:$input, F64Attr:$factor);
  let results = (outs MoE_SlotWeights:$result);
  let assemblyFormat = "$input `factor` $factor attr-dict `:` type($input)";
  let hasVerifier = 1;
}

def MoE_CapacityOp : MoE_Op<"capacity", [Pure]> {
  let summary = "drops slots beyond each expert's capacity";
  let description = [{
    Expert e admits at most
    `max(min_capacity, ceil(factor * T * top_k / num_experts))` slots, in
    token order (slot `t * top_k + j`); the other slots get weight 0 and
    `admitted = false`.

    Example:

    ```mlir
    %wc, %keep = moe.capacity %e, %w experts 8 factor 1.000000e+00 min 4
        : tensor<?x1xi32>, tensor<?x1xf32> -> tensor<?x1xf32>, tensor<?x1xi1>
    ```
  }];
  let arguments = (ins MoE_SlotIds:$indices, MoE_SlotWeights:$weights,
                       MoE_I64Attr:$num_experts, F64Attr:$capacity_factor,
                       MoE_I64Attr:$min_capacity);
  let results = (outs MoE_SlotWeights:$result, MoE_SlotMask:$admitted);
  let assemblyFormat = [{
    $indices `,` $weights `experts` $num_experts `factor` $capacity_factor
    `min` $min_capacity attr-dict `:` type($indices) `,` type($weights) `->`
    type($result) `,` type($admitted)
  }];
  let hasVerifier = 1;
}

def MoE_ExpertMapOp : MoE_Op<"expert_map", [Pure]> {
  let summary = "builds the dense token-to-expert mapping table";
  let description = [{
    From each token's expert ids (and, after `moe.capacity`, which slots
    were admitted) builds the table dispatch and combine use instead of
    one-hot einsums (DeepSpeed-MoE): `expert_offsets[e]` are prefix sums of
    the admitted slots per expert (`num_experts + 1` entries) and
    `sorted_slots` lists the admitted slots grouped by expert, ascending
    within an expert.

    Example:

    ```mlir
    %offsets, %slots = moe.expert_map %e : tensor<?x2xi32> -> tensor<9xi32>, tensor<?xi32>
    %offsets2, %slots2 = moe.expert_map %e admitted %keep : tensor<?x1xi32>, tensor<?x1xi1> -> tensor<9xi32>, tensor<?xi32>
    ```
  }];
  let arguments = (ins MoE_SlotIds:$indices, Optional<MoE_SlotMask>:$admitted);
  let results = (outs MoE_Offsets:$expert_offsets, MoE_SlotList:$sorted_slots);
  let assemblyFormat = [{
    $indices (`admitted` $admitted^)? attr-dict `:` type($indices)
    (`,` type($admitted)^)? `->` type($expert_offsets) `,` type($sorted_slots)
  }];
  let hasVerifier = 1;
}

def MoE_GateOp : MoE_Op<"gate", [Pure, MoE_MoEOpInterface]> {
  let summary = "fused gating: scores, top-k, renormalization, capacity and the mapping table";
  let description = [{
    What `moe-fuse-gating` makes of `scores .. expert_map`, and exactly the
    plan's Gate step: from router logits `[T, num_experts]` and a
    `#moe.routing` configuration it yields

    - `slot_expert` `[T, top_k]`: the expert of slot `t * top_k + j`
      (j-th choice, descending score),
    - `slot_weight` `[T, top_k]`: its combine weight (0 when dropped),
    - `expert_offsets` `[num_experts + 1]`: prefix sums of admitted slots,
    - `sorted_slots` `[S]`: admitted slots grouped by expert.

    Example:

    ```mlir
    %e, %w, %off, %slots = moe.gate %logits routing <top_k = 2, norm_topk_prob = true>
        : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>, tensor<9xi32>, tensor<?xi32>
    %e2, %w2, %off2, %slots2 = moe.gate %logits bias %b : tensor<8xf32> routing <top_k = 2,
        score = sigmoid, norm_topk_prob = true, n_group = 2, routed_scaling_factor = 2.5>
        : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>, tensor<9xi32>, tensor<?xi32>
    ```

    `selection_bias` (`[num_experts]`) is the routing's selection-only bias
    (see `#moe.routing`).
  }];
  let arguments = (ins MoE_Act:$logits, MoE_RoutingAttr:$routing,
                       Optional<MoE_Vector>:$selection_bias);
  let results = (outs MoE_SlotIds:$slot_expert, MoE_SlotWeights:$slot_weight,
                      MoE_Offsets:$expert_offsets, MoE_SlotList:$sorted_slots);
  let assemblyFormat = [{
    $logits (`bias` $selection_bias^ `:` type($selection_bias))? `routing` $routing
    attr-dict `:` type($logits) `->` type($slot_expert)
    `,` type($slot_weight) `,` type($expert_offsets) `,` type($sorted_slots)
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    // MoEOpInterface
    int64_t getNumExperts() {
      return ::llvm::cast<::mlir::RankedTensorType>(
                 getExpertOffsets().getType()).getDimSize(0) - 1;
    }
    std::optional<int64_t> getRoutedTopK() { return getRouting().getTopK(); }
  }];
}

//===----------------------------------------------------------------------===//
// MoE: dispatch, experts, combine
//===----------------------------------------------------------------------===//

def MoE_DispatchOp : MoE_Op<"dispatch", [Pure]> {
  let summary = "permutes token rows into expert order";
  let description = [{
    `result[i, :] = input[sorted_slots[i] / top_k, :]`: one row per admitted
    slot, grouped by expert as the mapping table says.

    Example:

    ```mlir
    %d = moe.dispatch %x, %slots top_k 2 : tensor<?x64xf32>, tensor<?xi32> -> tensor<?x64xf32>
    ```
  }];
  let arguments = (ins MoE_Act:$input, MoE_SlotList:$sorted_slots, MoE_I64Attr:$top_k);
  let results = (outs MoE_Act:$result);
  let assemblyFormat = [{
    $input `,` $sorted_slots `top_k` $top_k attr-dict `:` type($input) `,`
    type($sorted_slots) `->` type($result)
  }];
  let hasVerifier = 1;
}

def MoE_ExpertsOp : MoE_Op<"experts", [
    Pure, AttrSizedOperandSegments,
    DeclareOpInterfaceMethods<MoE_CostOpInterface>, MoE_MoEOpInterface]> {
  let summary = "grouped expert feed-forward networks";
  let description = [{
    Runs expert e's FFN on rows `[expert_offsets[e], expert_offsets[e+1])`
    of the dispatched input. The experts' weights are stacked, one operand
    per role with the expert on axis 0 (`E` = size of `expert_offsets` - 1,
    as llama.cpp's `ffn_{gate,up,down}_exps` and vLLM's `w13`/`w2`): `up`
    (`[E, I, D]`), `down` (`[E, D, I]`), optionally `gate` (`[E, I, D]`,
    gated SwiGLU/GeGLU experts) and the biases `up_bias` (`[E, I]`) and
    `down_bias` (`[E, D]`), and `gate_bias` (`[E, I]`, gated experts only).
    Expert e computes, with `g = gate[e] x + gate_bias[e]` and
    `u = up[e] x + up_bias[e]`, `down[e] (act(g) * u) + down_bias[e]`; with
    `act swiglu_oai` (gpt-oss, HF `GptOssExperts`) the hidden value is
    `(clamp(u, -L, L) + 1) * g' * sigmoid(swiglu_alpha * g')` with
    `g' = min(g, L)`, `L = swiglu_limit` (both attributes required exactly
    then).
    `top_k` is the number of experts each token reaches (cost model, plan).
    `placement`, filled by `moe-expert-placement`, says which rank runs
    each expert (a rank holds only its experts' slices).

    Example:

    ```mlir
    %y = moe.experts %d, %off top_k 2 act silu
        up %u : tensor<2x32x64xbf16>
        gate %g : tensor<2x32x64xbf16>
        down %dn : tensor<2x64x32xbf16>
        placement <ranks = 2, experts = [0, 1]>
        : tensor<?x64xf32>, tensor<3xi32> -> tensor<?x64xf32>
    %z = moe.experts %d, %off top_k 2 act swiglu_oai limit 7.000000e+00 alpha 1.702000e+00
        up %u : tensor<2x32x64xbf16>
        gate %g : tensor<2x32x64xbf16>
        down %dn : tensor<2x64x32xbf16>
        up_bias %ub : tensor<2x32xbf16>
        down_bias %db : tensor<2x64xbf16>
        gate_bias %gb : tensor<2x32xbf16>
        : tensor<?x64xf32>, tensor<3xi32> -> tensor<?x64xf32>
    ```
  }];
  let arguments = (ins MoE_Act:$input, MoE_Offsets:$expert_offsets,
                       MoE_StackedMatrix:$up, Optional<MoE_StackedMatrix>:$gate,
                       MoE_StackedMatrix:$down,
                       Optional<MoE_StackedVector>:$up_bias,
                       Optional<MoE_StackedVector>:$down_bias,
                       Optional<MoE_StackedVector>:$gate_bias,
                       MoE_I64Attr:$top_k, MoE_Activation:$activation,
                       OptionalAttr<MoE_PlacementAttr>:$placement,
                       OptionalAttr<F32Attr>:$swiglu_limit,
                       OptionalAttr<F32Attr>:$swiglu_alpha);
  let results = (outs MoE_Act:$result);
  let hasCustomAssemblyFormat = 1;
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    int64_t getNumExperts() {
      return ::llvm::cast<::mlir::RankedTensorType>(
                 getExpertOffsets().getType()).getDimSize(0) - 1;
    }
    bool isGated() { return bool(getGate()); }
    int64_t getIntermediateSize();
    /// Parameters of one expert (all experts have the same shapes).
    int64_t getParamsPerExpert();

    // MoEOpInterface
    std::optional<int64_t> getRoutedTopK() { return getTopK(); }
    PlacementAttr getExpertPlacement() { return getPlacementAttr(); }
    void setExpertPlacement(PlacementAttr placement);
    ::llvm::SmallVector<::mlir::Value> getExpertWeights();
  }];
}

def MoE_CombineOp : MoE_Op<"combine", [Pure]> {
  let summary = "weighted un-permute of expert outputs back to tokens";
  let description = [{
    `result[t, :] = sum_j slot_weight[t, j] * input[row(t * top_k + j), :]`
    where `row(s)` is the position of slot `s` in `sorted_slots` (dropped
    slots contribute nothing), summed in ascending `j`; `top_k` is the
    second dimension of `slot_weight`.

    Example:

    ```mlir
    %y = moe.combine %out, %slots, %w : tensor<?x64xf32>, tensor<?xi32>, tensor<?x2xf32> -> tensor<?x64xf32>
    ```
  }];
  let arguments = (ins MoE_Act:$input, MoE_SlotList:$sorted_slots,
                       MoE_SlotWeights:$slot_weight);
  let results = (outs MoE_Act:$result);
  let assemblyFormat = [{
    $input `,` $sorted_slots `,` $slot_weight attr-dict `:` type($input) `,`
    type($sorted_slots) `,` type($slot_weight) `->` type($result)
  }];
  let hasVerifier = 1;
}

def MoE_SigmoidGateOp : MoE_Op<"sigmoid_gate", [
    Pure, AllTypesMatch<["input", "result"]>]> {
  let summary = "scales each row by sigmoid of a per-token gate logit";
  let description = [{
    `result[t, :] = input[t, :] * sigmoid(gate_logit[t, 0])`: the shared
    expert gate of Qwen2-MoE (`gate_logit` from `moe.linear` with the
    `[1, hidden]` `shared_expert_gate` weight).

    Example:

    ```mlir
    %s = moe.sigmoid_gate %shared, %g : tensor<?x64xf32>, tensor<?x1xf32>
    ```
  }];
  let arguments = (ins MoE_Act:$input, MoE_Act:$gate_logit);
  let results = (outs MoE_Act:$result);
  let assemblyFormat = "$input `,` $gate_logit attr-dict `:` type($input) `,` type($gate_logit)";
  let hasVerifier = 1;
}

def MoE_ResidualMixOp : MoE_Op<"residual_mix", [
    Pure, AllTypesMatch<["moe", "mlp", "result"]>]> {
  let summary = "DeepSpeed residual MoE: mixes the MoE and dense MLP outputs";
  let description = [{
    `c = softmax(coef_logits[t, 0:2])`,
    `result[t, :] = moe[t, :] * c[0] + mlp[t, :] * c[1]`
    (DeepSpeed `use_residual`; `coef_logits` from `moe.linear` with a
    `[2, hidden]` coefficient weight).

    Example:

    ```mlir
    %y = moe.residual_mix %m, %d, %c : tensor<?x64xf32>, tensor<?x2xf32>
    ```
  }];
  let arguments = (ins MoE_Act:$moe, MoE_Act:$mlp, MoE_Act:$coef_logits);
  let results = (outs MoE_Act:$result);
  let assemblyFormat = [{
    $moe `,` $mlp `,` $coef_logits attr-dict `:` type($moe) `,` type($coef_logits)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Expert parallelism
//===----------------------------------------------------------------------===//

def MoE_AllToAllOp : MoE_Op<"all_to_all", [
    Pure, AllTypesMatch<["input", "result"]>,
    DeclareOpInterfaceMethods<SymbolUserOpInterface>, MoE_MoEOpInterface]> {
  let summary = "expert-parallel token exchange over device-grid axes";
  let description = [{
    Moves the rows of a dispatched tensor between the ranks of the groups
    spanned by `grid_axes` of the `shard.grid` `@grid`: with `dispatch`,
    expert e's rows (`[expert_offsets[e], expert_offsets[e+1])`) go to the
    rank `placement` assigns to e; `combine` brings them back.

    Why not `shard.all_to_all`: that op splits a tensor evenly along one
    axis, so every rank sends every other rank the same number of rows.
    MoE exchanges are uneven: how many rows go where is decided at run time
    by routing (the offsets operand) and by the placement, and both are
    needed to lower the op (an all-to-all-v). The grid, its axes and their
    meaning are still `shard`'s, so `moe-comm-hierarchy` can split a flat
    exchange over axes `[0, 1]` into an intra-node (`[1]`) and an
    inter-node (`[0]`) stage. An exchange over a group of one rank folds
    away.

    Example:

    ```mlir
    shard.grid @devices(shape = 2x4)
    ...
    %r = moe.all_to_all dispatch %d, %off on @devices axes [0, 1]
        placement <ranks = 8, experts = [0, 1, 2, 3, 4, 5, 6, 7]>
        : tensor<?x64xf32>, tensor<9xi32>
    ```
  }];
  let arguments = (ins MoE_ExchangeKind:$kind, MoE_Act:$input,
                       MoE_Offsets:$expert_offsets, FlatSymbolRefAttr:$grid,
                       DenseI16ArrayAttr:$grid_axes,
                       MoE_PlacementAttr:$placement);
  let results = (outs MoE_Act:$result);
  let assemblyFormat = [{
    $kind $input `,` $expert_offsets `on` $grid `axes` $grid_axes
    `placement` $placement attr-dict `:` type($input) `,`
    type($expert_offsets)
  }];
  let hasVerifier = 1;
  let hasFolder = 1;
  let extraClassDeclaration = [{
    // MoEOpInterface
    int64_t getNumExperts() {
      return ::llvm::cast<::mlir::RankedTensorType>(
                 getExpertOffsets().getType()).getDimSize(0) - 1;
    }
    PlacementAttr getExpertPlacement() { return getPlacementAttr(); }
    /// An exchange always has a placement: a null one is ignored.
    void setExpertPlacement(PlacementAttr placement) {
      if (placement)
        setPlacementAttr(placement);
    }
  }];
}

#endif // MOE_OPS_TD
