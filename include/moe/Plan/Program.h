//===- Program.h - A model as a sequence of runtime steps -------*- C++ -*-===//
//
// The bridge between the moe dialect and the plan file, in three stages that
// each run once per compile (as Triton's AllocateSharedMemory analysis runs
// once and the lowering reads the offsets it wrote):
//
//  1. Storage (lib/Plan/Storage.cpp, Arena.cpp; run by moe-plan-memory):
//     decides where every SSA activation lives (buffer, first column):
//     elementwise ops reuse a dying input, `moe.split` results are column
//     views, the q/k/v projections of an attention share one buffer. It
//     gives every buffer an
//     arena offset from its live range and records the result in the IR
//     (`moe.buffers` on the model, `moe.slices` / `moe.scratch` on ops).
//  2. Lowering (lib/Plan/Lowering*.cpp, one file per op family): reads that
//     storage back and turns each op into plain step descriptions (Step, a
//     variant of one struct per plan.fbs op kind). No FlatBuffers here.
//  3. Emission (lib/Plan/EmitPlan.cpp): serializes the Program per rank.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_PLAN_PROGRAM_H
#define MOE_PLAN_PROGRAM_H

#include "moe/Compiler/Options.h"
#include "moe/Dialect/AttentionFeed.h"
#include "moe/Dialect/MoEOps.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Value.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/SmallVector.h"

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

namespace mlir::moe::plan {

/// Element types of buffers and weights (values of plan.fbs `DType`).
enum class ElemType : uint8_t { F32 = 0, BF16 = 1, F16 = 2, I32 = 3, I64 = 4 };

int64_t elemSize(ElemType type);
std::optional<ElemType> toElemType(Type type);
Type toMLIRType(MLIRContext *context, ElemType type);

/// One activation buffer: rows = T * rowsPerToken + fixedRows for a forward
/// call over T tokens, each of rowElems elements.
struct Buffer {
  std::string name;
  ElemType type = ElemType::F32;
  int64_t rowElems = 0;
  int64_t rowsPerToken = 1;
  int64_t fixedRows = 0;
  /// Live range in steps (inclusive, counting the steps that touch
  /// activations); -1 when no step touches it.
  int64_t firstStep = -1, lastStep = -1;
  /// Arena offset.
  uint64_t offset = 0;

  int64_t maxRows(int64_t maxTokens) const {
    return maxTokens * rowsPerToken + fixedRows;
  }
  uint64_t bytes(int64_t maxTokens) const;
};

/// Where an SSA activation lives: columns [col, col + width) of a buffer.
struct Slice {
  int buffer = -1;
  int64_t col = 0;
  int64_t width = 0;
};

/// The paged KV cache of a plan for `maxBatch` sequences of `maxSeqLen`
/// positions (plan fields kv_page_size, kv_pages): pages of `pageSize`
/// positions (moe-compile --kv-page-size; 0: kKVPageSize, or max_seq_len
/// when shorter), `pages` of them (--kv-pages; 0: enough for every sequence
/// at full length). One sequence keeps the contiguous cache ({0, 0}: one
/// page of max_seq_len).
inline constexpr int64_t kKVPageSize = 16;

/// The most expert slices a plan may have: moe-run holds each expert's slice
/// of a stacked weight, and each part of a sliced expert, as a weight of its
/// own and refuses plans with more (kMaxExpertSlices in
/// runtime/core/PlanReader.cpp, which cannot include this header). The
/// importer and emitPlan refuse such models first.
inline constexpr int64_t kMaxExpertSlices = int64_t(1) << 18;
struct KVPaging {
  int64_t pageSize = 0, pages = 0;
  /// Positions the pool holds (the KV cache's rows per head).
  int64_t positions(int64_t maxSeqLen) const { return pages ? pageSize * pages : maxSeqLen; }
};
inline KVPaging kvPaging(int64_t maxBatch, int64_t maxSeqLen, int64_t pageSize = 0,
                         int64_t pages = 0) {
  if (maxBatch <= 1)
    return {};
  int64_t ps = pageSize > 0                ? pageSize
               : maxSeqLen < kKVPageSize ? maxSeqLen
                                         : kKVPageSize;
  return {ps, pages > 0 ? pages : maxBatch * ((maxSeqLen + ps - 1) / ps)};
}
inline KVPaging kvPaging(const CompileOptions &options, int64_t maxSeqLen) {
  return kvPaging(options.maxBatch, maxSeqLen, options.kvPageSize, options.kvPages);
}
/// Why --kv-page-size / --kv-pages of `options` cannot size the KV page
/// pool of a plan of `maxSeqLen` positions ("--FLAG: what (expected ...)"),
/// or "" when they can (or are not given). The pool must hold one sequence
/// of max_seq_len (the runtime's PlanReader refuses less), and more pages
/// than max_batch full-length sequences take are never used.
std::string checkKVPaging(const CompileOptions &options, int64_t maxSeqLen);

/// max_seq_len of a plan without --max-seq-len: the model's
/// max_position_embeddings, at most 4096.
inline int64_t defaultMaxSeqLen(int64_t maxPositionEmbeddings) {
  return maxPositionEmbeddings < 4096 ? maxPositionEmbeddings : 4096;
}

/// The result of the storage analysis (what moe-plan-memory records).
struct Storage {
  std::vector<Buffer> buffers;
  llvm::DenseMap<Value, Slice> slices;
  /// Buffers an op uses besides its results' (the MLP's hidden activations).
  llvm::DenseMap<Operation *, SmallVector<int>> scratch;
  /// Tokens per forward call the arena is sized for (the prefill chunk).
  int64_t maxTokens = 0;
  /// KV cache capacity in tokens.
  int64_t maxSeqLen = 0;
  uint64_t arenaBytes = 0;
  /// Sum of the buffer sizes: what the arena would be without reuse.
  uint64_t unplannedBytes = 0;
  uint64_t kvCacheBytes = 0;
};

/// A checkpoint tensor of the plan's weight table.
struct Weight {
  std::string name;
  ElemType storedType = ElemType::F32;
  ElemType type = ElemType::F32;
  llvm::SmallVector<int64_t> shape;
  InitKind init = InitKind::Normal;
  float initStd = 0.02f;
  /// Ranks that read it; empty = every rank.
  llvm::SmallVector<int32_t> ranks;
  /// Not resident: prefetched before use or loaded on demand (streaming).
  bool streamed = false;
  /// Where an expert-stacked weight's slices lie in the checkpoint
  /// (#moe.source); empty `sourceTensor`: the tensor `name` as is.
  std::string sourceTensor;
  int64_t sourceOffset = 0, sourceStride = 1;
  bool sourceTransposed = false;
  /// A quantized matrix (#moe.quant): 0 plain, else plan.fbs WeightFormat;
  /// its scale tensor (or per-expert pattern) and scale block [rows, cols].
  int format = 0;
  std::string scaleTensor;
  int64_t blockRows = 0, blockCols = 0;
  /// Expert-stacked (axis 0 is the expert: a moe.experts operand): the ranks
  /// of each expert's slice (an empty list: every rank). Empty when the
  /// weight is not stacked; a rank holds only its experts' slices.
  std::vector<llvm::SmallVector<int32_t>> expertRanks;
  /// Expert slicing: each rank in expertRanks[e] holds 1/expertParts of
  /// expert e's slice (a part of its rows or columns); 1: whole slices.
  int64_t expertParts = 1;
  /// Tensor parallelism: a whole weight split in parts (`sliced`, held by no
  /// rank) lists the part each group member reads (tpParts[g], or for a
  /// fused q/k/v projection tpParts[third * T + g]); a part names its whole
  /// (partOf) and lies at partOffset along partAxis (rows 0, columns 1).
  bool sliced = false;
  SmallVector<int> tpParts;
  int partOf = -1, partAxis = 0;
  int64_t partOffset = 0;
  uint64_t bytes() const;
  /// Bytes `rank` holds: the slices of its experts for a stacked weight.
  uint64_t bytesOnRank(int32_t rank) const;
  /// bytesOnRank of every rank in [0, numRanks), in one pass over the
  /// experts' ranks (bytesOnRank per rank is linear in the experts).
  std::vector<uint64_t> bytesPerRank(int64_t numRanks) const;
  bool onRank(int32_t rank) const {
    return ranks.empty() || llvm::is_contained(ranks, rank);
  }
};

struct KVCache {
  /// headDim for keys, valueHeadDim for values (they differ in MLA).
  int64_t layer = 0, numKVHeads = 0, headDim = 0, valueHeadDim = 0;
  /// > 0: an MLA latent cache (moe.mla_attention): one head of headDim =
  /// kvLoraRank + the rope dims per position ([c_kv | k_pe]) and no values.
  int64_t kvLoraRank = 0;
  /// The element type held (the model's kv_cache_dtype): F32, BF16 or F16.
  ElemType type = ElemType::F32;
  /// Elements per position and layer.
  int64_t elementsPerPosition() const {
    return kvLoraRank ? headDim : numKVHeads * (headDim + valueHeadDim);
  }
  int64_t bytesPerPosition() const {
    return elementsPerPosition() * elemSize(type);
  }
};

//===----------------------------------------------------------------------===//
// Step descriptions: one struct per plan.fbs op (buffer and weight indices;
// -1 = none). EmitPlan.cpp serializes them.
//===----------------------------------------------------------------------===//

enum class NormKind : uint8_t { LayerNorm, RMSNorm };

struct EmbeddingStep {
  int weight, out;
  float scale;
  /// Vocabulary-parallel: the first table row the weight (a part) holds.
  int64_t vocabOffset = 0;
};
struct PositionEmbeddingStep {
  int weight, buf;
};
struct NormStep {
  NormKind kind;
  int in, out, weight, bias;
  float eps;
  int64_t groupSize;
  float weightOffset;
  int64_t col, cols;
};
struct LinearStep {
  int in, out, weight, bias;
  bool transposed;
  int64_t col;
};
struct RopeStep {
  int buf;
  int64_t col;
  int heads, headDim, rotaryDim;
  float theta;
  RopeStyle style;
  /// Scaled RoPE: the pairs' frequencies (empty: theta's) and cos/sin scale.
  std::vector<float> invFreq;
  float attentionFactor = 1.0f;
};
struct AttentionStep {
  int qkv;
  int64_t qCol, kCol, vCol;
  int out, cache, heads, kvHeads, headDim;
  float scale;
  int window;
  /// Per-head attention sink logits (a weight), -1 = none.
  int sinks = -1;
  int valueHeadDim = 0; // 0: headDim
};
/// Multi-head latent attention over a latent cache (moe.mla_attention).
struct MLAAttentionStep {
  int q;
  int64_t qCol;
  int latent;
  int64_t latentCol;
  int kPe;
  int64_t kPeCol;
  int kvB, out, cache, heads, nopeDim, ropeDim, valueHeadDim, kvLoraRank;
  float scale;
};
/// out = columns `indices` of the inputs' columns side by side.
struct GatherColumnsStep {
  std::vector<int> inputs;
  std::vector<int64_t> inputCols, inputWidths;
  int out;
  std::vector<int64_t> indices;
};
struct ActivationStep {
  int in, out;
  Activation act;
  bool gated;
  int64_t width;
};
struct AddStep {
  int lhs, rhs, out;
};
struct GateStep {
  int in, numExperts, topK;
  ScoreFn score;
  bool scoreBeforeTopK, normTopK;
  float capacityFactor;
  int minCapacity;
  bool dropTokens;
  int slotExpert, slotWeight, offsets, sorted;
  int nGroup = 1, topkGroup = 1;
  int selectionBias = -1; // a weight, -1 = none
  float routedScalingFactor = 1.0f;
};
struct ExpertRef {
  /// Ranks holding this expert's copies (primary first); empty: every rank.
  /// Sliced (ExpertsStep::slices > 1): the rank of each part, in part order.
  SmallVector<int64_t> copies;
};
struct ExpertsStep {
  int in, sorted, offsets, out, topK;
  int64_t intermediate;
  Activation act;
  bool gated, onDemand;
  /// The stacked weights (Plan.weights indices; -1 = none).
  int gate, up, down, upBias, downBias, gateBias = -1;
  /// swiglu_oai's clamp and sigmoid scale (0 for other activations).
  float swigluLimit = 0.0f, swigluAlpha = 0.0f;
  /// One entry per expert (index = expert id).
  std::vector<ExpertRef> experts;
  /// Parts each expert's intermediate dimension is split in (#moe.placement
  /// slices).
  int slices = 1;
  /// Data-parallel groups: the slots are the rows a dispatch AllToAllV
  /// received (topK 1); every copy computes all of them.
  bool received = false;
};
struct CombineStep {
  int slots, slotWeight, out, topK;
};
struct SigmoidGateStep {
  int gateLogit, buf;
};
struct ResidualMixStep {
  int moe, mlp, coefLogits, out;
};
struct LogitsStep {
  int in, weight, bias, out;
  /// Vocabulary-parallel (tensorParallel > 1): the weight is a member's part
  /// of the vocabulary starting at vocabOffset, and the members of each
  /// group of tensorParallel consecutive ranks gather each other's columns.
  int64_t vocabOffset = 0;
  int32_t tensorParallel = 0;
};
/// The tensor-parallel group of `rank`: the T consecutive ranks holding it
/// (Megatron's groups, inside a node when T divides the ranks per node).
std::vector<int32_t> tensorParallelGroup(int32_t rank, int32_t T, int32_t numRanks);

/// An AllReduceSum over the ranks that share this rank's grid coordinates
/// outside `axes` (see groupOf).
struct CollectiveStep {
  int buf;
  /// > 0: the tensor-parallel group of this many consecutive ranks instead
  /// of a grid group.
  int32_t tensorParallel = 0;
  SmallVector<int64_t> gridShape;
  SmallVector<int16_t> axes;
  std::string level;
  /// The group of `rank` (ascending global ranks).
  std::vector<int32_t> groupOf(int32_t rank, int32_t numRanks) const;
};
/// The token exchange between data-parallel groups (plan.fbs AllToAllV):
/// dispatch or combine, over all ranks.
struct AllToAllVStep {
  bool dispatch = true;
  int in = -1, out = -1;
  int sorted = -1, offsets = -1;        // dispatch: the gate's
  int recvSorted = -1, recvOffsets = -1; // dispatch: written
  int sendSlots = -1, counts = -1;
  int topK = 1, numExperts = 0;
  /// Expert e's target ranks: targets[targetOffsets[e] ..
  /// targetOffsets[e + 1]) (its copies, or with slices > 1 its parts).
  std::vector<int32_t> targets, targetOffsets;
  int slices = 1;
  int tensorParallel = 1;
  /// Hierarchical (> 0): ranks per node, and the relay order buffer.
  int ranksPerNode = 0, relay = -1;
};
struct PrefetchStep {
  std::vector<int32_t> weights;
};
struct EvictStep {
  std::vector<int32_t> weights;
};

using StepOp =
    std::variant<EmbeddingStep, PositionEmbeddingStep, NormStep, LinearStep,
                 RopeStep, AttentionStep, ActivationStep, AddStep, GateStep,
                 ExpertsStep, CombineStep, SigmoidGateStep, ResidualMixStep,
                 LogitsStep, CollectiveStep, PrefetchStep, EvictStep,
                 GatherColumnsStep, MLAAttentionStep, AllToAllVStep>;

/// The queue a step runs on (plan.fbs `Stream`).
enum class Stream : uint8_t { Compute = 0, Comm = 1, Weights = 2 };

struct Step {
  std::string name;
  int32_t layer = -1;
  Stream stream = Stream::Compute;
  llvm::SmallVector<int> reads, writes;
  StepOp op;
  /// Tensor parallelism: the op of each group member (rank r runs
  /// perMember[r % T]); empty: `op` on every rank.
  std::vector<StepOp> perMember;
  /// The op it came from (for diagnostics).
  Operation *origin = nullptr;
};

struct Program {
  std::vector<Buffer> buffers;
  std::vector<Step> steps;
  std::vector<Weight> weights;
  std::vector<KVCache> kvCaches;
  int64_t maxTokens = 0;
  int64_t maxSeqLen = 0;
  uint64_t arenaBytes = 0;
  /// The buffer the runtime reads the logits from.
  int logitsBuffer = -1;
  /// Ranks per tensor-parallel group (moe.tensor_parallel).
  int64_t tensorParallel = 1;
  /// Data-parallel groups (moe.data_parallel).
  int64_t dataParallel = 1;
};

/// Ranks per tensor-parallel group that moe-tensor-parallel recorded (1:
/// none).
int64_t getTensorParallel(ModelOp model);
/// Data-parallel groups that moe-data-parallel recorded (1: none).
int64_t getDataParallel(ModelOp model);
/// The moe.experts whose per-slot outputs reach `slots` through combine
/// exchanges, or null.
ExpertsOp getCombinedExperts(Value slots);
/// The first stage of the dispatch exchanges behind `tokens` (the one that
/// reads moe.dispatch's result), or null.
AllToAllOp getDispatchExchange(Value tokens);
/// Ranks of the model's device grid (1 without one).
int64_t getNumRanks(ModelOp model);
/// The heads of a tensor with `heads` heads that group member `g` of `T`
/// computes: `count` heads from `first`. Heads fewer than T are replicated
/// (members g with the same g * heads / T share one).
struct HeadPart {
  int64_t first, count;
};
HeadPart headPart(int64_t heads, int64_t T, int64_t g);
/// The moe.tensor_slice of `op`, "" when it has none.
StringRef tensorSliceOf(Operation *op);

/// The one moe.model of `module`, or an error.
FailureOr<ModelOp> getSingleModel(ModuleOp module);

/// Stage 1: the storage analysis. Fails with a diagnostic at the offending
/// op for IR the runtime cannot execute (an in-place op whose input is still
/// needed, q/k/v that cannot share a buffer, ...).
FailureOr<Storage> analyzeStorage(ModelOp model, const CompileOptions &options);

/// Records `storage` in the IR (`moe.buffers`, `moe.slices`, `moe.scratch`,
/// `moe.memory`), replacing an earlier record.
void writeStorage(ModelOp model, const Storage &storage);

/// Reads the record of writeStorage back; fails (with a diagnostic) when the
/// model has none or it does not match the IR.
FailureOr<Storage> readStorage(ModelOp model);

/// Activation bytes per rank that moe-plan-memory recorded: arena + KV
/// caches; fails (with a diagnostic) when it has not run.
FailureOr<uint64_t> recordedActivationBytes(ModelOp model);

/// The moe.dispatch behind `tokens`, through dispatch exchanges (tokens are
/// replicated at batch 1, so an exchange moves nothing); null when there is
/// none.
DispatchOp getDispatch(Value tokens);

/// The KV caches of `model`: one per moe.attention, in program order.
std::vector<KVCache> collectKVCaches(ModelOp model);

/// Weight table (lib/Plan/Weights.cpp): every moe.param in declaration
/// order, in the dtype it is held in at run time, the ranks that hold each
/// expert weight (from the placement) and the weights the streaming
/// decisions (`moe.on_demand`, `moe.prefetch_distance`) leave non-resident.
FailureOr<std::vector<Weight>> buildWeightTable(ModelOp model,
                                                ComputeDType dtype);

/// The weights a layer reads outside its experts (what a prefetch of the
/// layer brings in), in first-use order, as indices `weightOf` gives.
SmallVector<int32_t> layerDenseWeights(LayerOp layer,
                                       llvm::function_ref<int(Value)> weightOf);

/// `list` with every tensor-parallel sliced whole (held by no rank) replaced
/// by its parts (each once, in the whole's place): the weights ranks hold of
/// `list`, as streaming prefetches, evicts and counts them.
SmallVector<int32_t> heldWeights(ArrayRef<Weight> weights,
                                 ArrayRef<int32_t> list);

/// Stage 2: lowers the graph of `model` to steps, reading the storage.
FailureOr<Program> lowerToProgram(ModelOp model, const CompileOptions &options,
                                  Storage storage);

/// For every step, the earlier steps on other streams that write a buffer it
/// reads or writes, or read a buffer it writes (indices into program.steps).
std::vector<std::vector<int>> crossStreamDependencies(const Program &program);

/// Assigns arena offsets (64-byte aligned) so that buffers whose live ranges
/// overlap never share bytes: greedy by size, first fit. Returns the arena
/// size and sets `unplannedBytes`.
uint64_t planArena(std::vector<Buffer> &buffers, int64_t maxTokens,
                   uint64_t &unplannedBytes);

/// Weight bytes resident on `rank` (its experts and all shared weights).
uint64_t weightBytesOnRank(ArrayRef<Weight> weights, int32_t rank);
/// weightBytesOnRank of every rank in [0, numRanks).
std::vector<uint64_t> weightBytesPerRank(ArrayRef<Weight> weights,
                                         int64_t numRanks);

} // namespace mlir::moe::plan

#endif // MOE_PLAN_PROGRAM_H
