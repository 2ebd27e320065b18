//===- TensorParallel.cpp - Megatron slicing of attention and FFNs --------===//
//
// Marks what a tensor-parallel group of T ranks splits (Megatron-LM): the
// projections feeding an attention are column-parallel, the attention and
// its rotary embeddings run on the member's heads, the projection of its
// output is row-parallel; dense FFNs (and shared experts) split their
// intermediate dimension. The decisions are attributes the plan lowering
// reads (moe.tensor_slice, moe.tensor_parallel): the IR keeps whole-model
// shapes, so every other pass and the report see the model as before.
//
//===----------------------------------------------------------------------===//

#include "moe/Dialect/MoEOps.h"
#include "moe/Transforms/Passes.h"

#include "mlir/Dialect/Shard/IR/ShardDialect.h"
#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "mlir/IR/Builders.h"
#include "llvm/Support/Debug.h"

#define DEBUG_TYPE "moe-tensor-parallel"

namespace mlir::moe {
#define GEN_PASS_DEF_MOETENSORPARALLELPASS
#include "moe/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {

/// The ops one attention's slicing marks.
struct AttentionSlice {
  SmallVector<Operation *> heads;   // rotaries and the attention
  SmallVector<LinearOp> columns;    // q/k/v projections
  LinearOp fused;                   // GPT-2's c_attn (q/k/v in one)
  LinearOp row;                     // o_proj
  /// A norm over whole q or k projections (OLMoE's q_norm/k_norm) needs
  /// every head: the attention stays replicated.
  bool replicate = false;
};

/// Whether parts of `size` rows (axis 0) or columns (axis 1) of `weight`
/// hold whole quantization blocks: the runtime keeps each block's scale
/// whole, so a quantized weight is split only at block boundaries.
bool wholeBlocks(Operation *from, Value weight, int axis, int64_t size) {
  auto w = weight ? weight.getDefiningOp<WeightOp>() : WeightOp();
  auto param = w ? SymbolTable::lookupNearestSymbolFrom<ParamOp>(
                       from, w.getParamAttr())
                 : ParamOp();
  QuantAttr quant = param ? param.getQuantAttr() : QuantAttr();
  return !quant || size % quant.getBlock()[axis] == 0;
}

struct MoETensorParallelPass
    : mlir::moe::impl::MoETensorParallelPassBase<MoETensorParallelPass> {
  using Base::Base;

  /// Whether the marked weights of an attention split into whole quantized
  /// blocks: q/k/v rows per member (kv heads fewer than T: one head) and
  /// o_proj's input columns per member.
  bool attentionBlocksWhole(AttentionOp a, int64_t T, AttentionSlice &s) {
    int64_t hd = a.getHeadDim();
    for (LinearOp l : s.columns) {
      int64_t heads = cast<RankedTensorType>(l.getType()).getDimSize(1) / hd;
      if (!wholeBlocks(a, l.getWeight(), l.getTransposed() ? 1 : 0,
                       heads / std::min(heads, T) * hd))
        return false;
    }
    if (s.fused && !wholeBlocks(a, s.fused.getWeight(), 0, a.getNumHeads() / T * hd))
      return false;
    int64_t K = cast<RankedTensorType>(s.row.getInput().getType()).getDimSize(1);
    return wholeBlocks(a, s.row.getWeight(), 1, K / T);
  }

  /// The projection behind one of q/k/v: a moe.linear, through a rotary
  /// embedding, or a third of a fused q/k/v projection cut by moe.split.
  LogicalResult traceProjection(AttentionOp a, Value v, AttentionSlice &s) {
    if (auto rope = v.getDefiningOp<RotaryOp>()) {
      if (rope.getOffset())
        return a.emitOpError("cannot be sliced over tensor-parallel ranks: a "
                             "rotary embedding with an offset (expected "
                             "whole-head rotary embeddings)");
      s.heads.push_back(rope);
      v = rope.getInput();
    }
    if (auto norm = v.getDefiningOp<RMSNormOp>()) {
      // Qwen3's q_norm/k_norm normalize each head (groups of head_dim): a
      // member normalizes its heads. OLMoE's span the whole projection.
      if (norm.getGroupSizeOrWidth() != a.getHeadDim()) {
        s.replicate = true;
        return success();
      }
      if (!norm.getResult().hasOneUse())
        return a.emitOpError("cannot be sliced over tensor-parallel ranks: "
                             "its normalized q, k or v has other uses");
      s.heads.push_back(norm);
      v = norm.getInput();
    }
    if (auto split = v.getDefiningOp<SplitOp>()) {
      auto fused = split.getInput().getDefiningOp<LinearOp>();
      if (!fused || split.getNumResults() != 3 ||
          !split.getInput().hasOneUse())
        return a.emitOpError("cannot be sliced over tensor-parallel ranks: "
                             "q/k/v split from something other than one "
                             "fused projection");
      s.fused = fused;
      return success();
    }
    auto linear = v.getDefiningOp<LinearOp>();
    if (!linear || !linear.getResult().hasOneUse())
      return a.emitOpError("cannot be sliced over tensor-parallel ranks: q, k "
                           "and v must be projections used only by it "
                           "(expected moe.linear, optionally through "
                           "moe.rotary)");
    s.columns.push_back(linear);
    return success();
  }

  /// The row-parallel projection (o_proj) that attention `a`'s output feeds,
  /// and only it.
  LogicalResult traceOutputProjection(Operation *a, AttentionSlice &s) {
    Value out = a->getResult(0);
    if (!out.hasOneUse())
      return a->emitOpError("cannot be sliced over tensor-parallel ranks: its "
                            "output must feed one projection");
    auto o = dyn_cast<LinearOp>(*out.getUsers().begin());
    if (!o || o.getInput() != out)
      return a->emitOpError("cannot be sliced over tensor-parallel ranks: its "
                            "output must feed a moe.linear (o_proj)");
    s.row = o;
    return success();
  }

  LogicalResult sliceAttention(AttentionOp a, int64_t T, AttentionSlice &s) {
    int64_t heads = a.getNumHeads(), kv = a.getNumKvHeads();
    if (heads % T != 0)
      return a.emitOpError() << "has " << heads
                             << " heads, not divisible by --tensor-parallel="
                             << T;
    if (kv % T != 0 && T % kv != 0)
      return a.emitOpError()
             << "has " << kv << " kv heads: --tensor-parallel=" << T
             << " neither divides them nor is a multiple of them (expected "
                "kv heads divisible by T, or T a multiple of the kv heads to "
                "replicate them)";
    // gpt-oss's sinks are per head: members take their heads' part.
    if (a.getVHeadDim())
      return a.emitOpError("cannot be sliced over tensor-parallel ranks yet "
                           "(an attention with v_head_dim)");
    s.heads.push_back(a);
    for (Value v : {a.getQ(), a.getK(), a.getV()})
      if (failed(traceProjection(a, v, s)))
        return failure();
    return traceOutputProjection(a, s);
  }

  /// DeepSeek-V3's MLA: q's projection (through its offset rotary on each
  /// head's rope dims) is column-parallel by heads of nope + rope columns,
  /// kv_b splits by heads, o_proj is row-parallel; the latent path
  /// (kv_a_proj_with_mqa, its norm, k_pe's rotary) stays replicated.
  LogicalResult sliceMLA(MLAAttentionOp a, int64_t T, AttentionSlice &s) {
    if (a.getNumHeads() % T != 0)
      return a.emitOpError() << "has " << a.getNumHeads()
                             << " heads, not divisible by --tensor-parallel="
                             << T;
    s.heads.push_back(a);
    Value q = a.getQ();
    if (auto rope = q.getDefiningOp<RotaryOp>()) {
      if (!rope.getResult().hasOneUse())
        return a.emitOpError("cannot be sliced over tensor-parallel ranks: "
                             "its rotated q has other uses");
      s.heads.push_back(rope);
      q = rope.getInput();
    }
    auto linear = q.getDefiningOp<LinearOp>();
    if (!linear || !linear.getResult().hasOneUse())
      return a.emitOpError("cannot be sliced over tensor-parallel ranks: q "
                           "must be a projection used only by it (expected "
                           "moe.linear, optionally through moe.rotary)");
    s.columns.push_back(linear);
    return traceOutputProjection(a, s);
  }

  /// Whether MLA's split weights hold whole quantization blocks.
  bool mlaBlocksWhole(MLAAttentionOp a, int64_t T, AttentionSlice &s) {
    int64_t h = a.getNumHeads() / T;
    LinearOp q = s.columns.front();
    return wholeBlocks(a, q.getWeight(), q.getTransposed() ? 1 : 0,
                       h * (a.getNopeDim() + a.getRopeDim())) &&
           wholeBlocks(a, a.getKvB(), 0, h * (a.getNopeDim() + a.getVHeadDim())) &&
           wholeBlocks(a, s.row.getWeight(), 1, h * a.getVHeadDim());
  }

  /// Vocabulary-parallel: the token embedding and the LM head split their
  /// tables' rows (the vocabulary) in T equal parts; a member looks up the
  /// ids of its part (zeros for the others, summed over the group) and
  /// computes its part of the logits (gathered over the group). A tied
  /// table is one weight: both uses read the same parts.
  LogicalResult sliceVocabulary(ModelOp model, int64_t T,
                                SmallVectorImpl<Operation *> &ops) {
    WalkResult walk = model.walk([&](Operation *op) {
      Value table;
      if (auto e = dyn_cast<EmbeddingOp>(op))
        table = e.getTable();
      else if (auto h = dyn_cast<LMHeadOp>(op))
        table = h.getWeight();
      else
        return WalkResult::advance();
      int64_t V = cast<RankedTensorType>(table.getType()).getDimSize(0);
      if (V % T != 0) {
        op->emitOpError() << "has a vocabulary of " << V
                          << ", not divisible by --tensor-parallel=" << T
                          << " (expected equal parts for vocab-parallel)";
        return WalkResult::interrupt();
      }
      if (!wholeBlocks(op, table, 0, V / T)) {
        op->emitOpError() << "cannot split its quantized table's " << V
                          << " rows in " << T
                          << " parts of whole blocks (expected vocab-parallel "
                             "off)";
        return WalkResult::interrupt();
      }
      ops.push_back(op);
      return WalkResult::advance();
    });
    return failure(walk.wasInterrupted());
  }

  void runOnOperation() override {
    ModelOp model = getOperation();
    int64_t T = ways; // (an Option streams as its name)
    if (T < 1) {
      model.emitError() << "tensor-parallel " << T << " (expected >= 1)";
      return signalPassFailure();
    }
    if (T == 1)
      return;
    int64_t ranks = 1;
    for (auto grid : model.getBodyBlock().getOps<shard::GridOp>())
      for (int64_t d : grid.getShape())
        ranks *= d;
    if (ranks % T != 0) {
      model.emitOpError() << "has " << ranks
                          << " ranks, not divisible by --tensor-parallel="
                          << T << " (expected groups of T ranks)";
      return signalPassFailure();
    }
    MoEDialect &dialect = getMoEDialect(model.getContext());
    Builder b(model.getContext());
    auto mark = [&](Operation *op, StringRef kind) {
      dialect.getTensorSliceAttrHelper().setAttr(op, b.getStringAttr(kind));
    };
    // Check everything before marking anything.
    SmallVector<AttentionSlice> attentions;
    SmallVector<MLPOp> mlps;
    WalkResult walk = model.walk([&](Operation *op) {
      if (auto a = dyn_cast<AttentionOp>(op)) {
        AttentionSlice s;
        if (failed(sliceAttention(a, T, s)))
          return WalkResult::interrupt();
        // Quantized projections whose parts would cut a block, or norms
        // over whole projections: replicated.
        if (s.replicate || !attentionBlocksWhole(a, T, s)) {
          LLVM_DEBUG(llvm::dbgs() << "replicated (quantization blocks) " << a << "\n");
          return WalkResult::advance();
        }
        attentions.push_back(s);
      } else if (auto a = dyn_cast<MLAAttentionOp>(op)) {
        AttentionSlice s;
        if (failed(sliceMLA(a, T, s)))
          return WalkResult::interrupt();
        if (!mlaBlocksWhole(a, T, s)) {
          LLVM_DEBUG(llvm::dbgs() << "replicated (quantization blocks) " << a << "\n");
          return WalkResult::advance();
        }
        attentions.push_back(s);
      } else if (auto m = dyn_cast<MLPOp>(op)) {
        if (m.getIntermediateSize() % T != 0) {
          m.emitOpError() << "has intermediate size "
                          << m.getIntermediateSize()
                          << ", not divisible by --tensor-parallel=" << T;
          return WalkResult::interrupt();
        }
        int64_t part = m.getIntermediateSize() / T;
        if (!wholeBlocks(m, m.getGate(), 0, part) ||
            !wholeBlocks(m, m.getUp(), 0, part) ||
            !wholeBlocks(m, m.getDown(), 1, part)) {
          LLVM_DEBUG(llvm::dbgs() << "replicated (quantization blocks) " << m << "\n");
          return WalkResult::advance();
        }
        mlps.push_back(m);
      }
      return WalkResult::advance();
    });
    if (walk.wasInterrupted())
      return signalPassFailure();
    SmallVector<Operation *> vocabOps;
    if (vocabParallel && failed(sliceVocabulary(model, T, vocabOps)))
      return signalPassFailure();
    for (AttentionSlice &s : attentions) {
      for (Operation *op : s.heads)
        mark(op, "heads");
      for (LinearOp l : s.columns)
        mark(l, "column");
      if (s.fused)
        mark(s.fused, "column_qkv");
      mark(s.row, "row");
      LLVM_DEBUG(llvm::dbgs() << "sliced attention " << *s.heads.back() << "\n");
    }
    for (MLPOp m : mlps)
      mark(m, "ffn");
    for (Operation *op : vocabOps)
      mark(op, "vocab");
    dialect.getTensorParallelAttrHelper().setAttr(model,
                                                  b.getI64IntegerAttr(T));
  }
};

} // namespace
