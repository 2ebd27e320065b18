//===- Lowering.h - Shared state of the per-family lowerings ----*- C++ -*-===//
//
// Private to lib/Plan: the context the op-family lowerings
// (Lowering{Attention,FFN,MoE,Comm,Misc}.cpp) share. Each turns ops into Step
// descriptions; where values live comes from the storage analysis, which the
// IR carries (Storage.cpp, StorageAttrs.cpp).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_PLAN_LOWERING_H
#define MOE_LIB_PLAN_LOWERING_H

#include "moe/Plan/Program.h"

namespace mlir::moe::plan {

class Lowering {
public:
  Lowering(ModelOp model, const CompileOptions &options, Storage storage,
           Program &program);

  LogicalResult run();

  // Shared by the families.
  /// The slice of `v` (the storage analysis gave every activation one).
  FailureOr<Slice> sliceOf(Value v, Operation *user);
  /// The buffer of `v`, -1 (after a diagnostic) when it has none.
  int bufferOf(Value v, Operation *user);
  int weightOf(Value v);
  int optWeightOf(Value v) { return v ? weightOf(v) : -1; }
  std::string stepName(StringRef what) const;
  void addStep(Operation *op, std::string name, SmallVector<int> reads,
               SmallVector<int> writes, StepOp step,
               Stream stream = Stream::Compute);
  int32_t layer() const { return int32_t(currentLayer); }
  /// The buffers moe-plan-memory records on a data-parallel dispatch
  /// exchange (Storage.cpp's order): what it received and the pair's record.
  struct ExchangeBuffers {
    int recv, recvSorted, recvOffsets, sendSlots, counts, relay;
  };
  /// Those of `xchg` (a null op or one without the record: none).
  std::optional<ExchangeBuffers> exchangeBuffers(AllToAllOp xchg) const;

  // Per family; each fails with a diagnostic at the op.
  LogicalResult lowerNorm(Operation *op);
  LogicalResult lowerLinear(Operation *op, Value input, Value weight,
                            Value bias, bool transposed);
  LogicalResult lowerRotary(RotaryOp op);
  LogicalResult lowerAttention(AttentionOp op);
  LogicalResult lowerMLAAttention(MLAAttentionOp op);
  LogicalResult lowerGatherColumns(GatherColumnsOp op);
  LogicalResult lowerMLP(MLPOp op);
  LogicalResult lowerAdd(AddOp op);
  LogicalResult lowerSigmoidGate(SigmoidGateOp op);
  LogicalResult lowerResidualMix(ResidualMixOp op);
  LogicalResult lowerGate(GateOp op);
  LogicalResult lowerExperts(ExpertsOp op);
  LogicalResult lowerCombine(CombineOp op);
  LogicalResult lowerExchange(AllToAllOp op);
  LogicalResult lowerDataParallelExchange(AllToAllOp op);
  LogicalResult lowerEmbedding(EmbeddingOp op);
  LogicalResult lowerPositionEmbedding(PositionEmbeddingOp op);
  LogicalResult lowerLMHead(LMHeadOp op);
  void addStreamingSteps();
  /// Tensor parallelism (LoweringTensorParallel.cpp): the sliced forms.
  LogicalResult lowerSlicedLinear(LinearOp op, Slice in, Slice out,
                                  StringRef kind);
  LogicalResult lowerSlicedRotary(RotaryOp op, const RopeStep &whole);
  LogicalResult lowerSlicedAttention(AttentionOp op, const AttentionStep &whole);
  LogicalResult lowerSlicedMLAAttention(MLAAttentionOp op,
                                        const MLAAttentionStep &whole,
                                        ArrayRef<int> reads);
  /// The sum of the group members' partial rows of `buf`.
  void addTensorParallelAllReduce(Operation *op, int buf, StringRef what);

  ModelOp model;
  const CompileOptions &options;
  Storage storage;
  Program &p;

private:
  LogicalResult lowerBlock(Block &block);
  LogicalResult lower(Operation *op);

  llvm::DenseMap<StringAttr, int> paramIndex;
  int64_t currentLayer = -1;
  int nextCache = 0;
  SmallVector<LayerOp> layerOps;
};

} // namespace mlir::moe::plan

#endif // MOE_LIB_PLAN_LOWERING_H
