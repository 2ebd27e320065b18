//===- Program.h - A model as a sequence of runtime steps -------*- C++ -*-===//
//
// The bridge between the moe dialect and the plan file. A Program is the list
// of runtime steps (the ops of runtime/schema/plan.fbs) a model lowers to, the
// activation buffers those steps read and write, the KV caches and the weight
// table. buildProgram() maps every SSA activation of the graph to a region of
// a buffer (buffer, first column, width): elementwise ops reuse the storage of
// an input that dies at them, `moe.split` results are column views, and the
// q/k/v projections of each attention are packed into one buffer.
// planMemory() then gives every buffer an arena offset from its live range.
// The plan emitter and moe-plan-memory share this code.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_PLAN_PROGRAM_H
#define MOE_PLAN_PROGRAM_H

#include "moe/Compiler/Options.h"
#include "moe/Dialect/MoEOps.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Value.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/SmallVector.h"

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace flatbuffers {
class FlatBufferBuilder;
} // namespace flatbuffers

namespace mlir::moe::plan {

/// Element types of buffers and weights (values of plan.fbs `DType`).
enum class ElemType : uint8_t { F32 = 0, BF16 = 1, F16 = 2, I32 = 3, I64 = 4 };

/// One activation buffer: rows = T * rowsPerToken + fixedRows for a forward
/// call over T tokens, each of rowElems elements.
struct Buffer {
  std::string name;
  ElemType type = ElemType::F32;
  int64_t rowElems = 0;
  int64_t rowsPerToken = 1;
  int64_t fixedRows = 0;
  /// Live range in step indices (inclusive); -1 until a step touches it.
  int64_t firstStep = -1, lastStep = -1;
  /// Arena offset, set by planMemory().
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
  uint64_t bytes() const;
};

struct KVCache {
  int64_t layer = 0, numKVHeads = 0, headDim = 0;
};

/// What a rank-specific step builder knows about the rank it builds for.
struct RankInfo {
  int32_t rank = 0;
  int32_t numRanks = 1;
  int32_t gpusPerNode = 1;
};

/// Indices (in the rank's step list) of the steps on other streams a step
/// must wait for.
using Waits = std::vector<int32_t>;

/// Serializes one step (a plan.fbs `Step`) for one rank and returns its
/// offset in the builder, or 0 when the step does nothing on that rank.
using StepBuilderFn = std::function<uint32_t(
    flatbuffers::FlatBufferBuilder &, const RankInfo &, const Waits &)>;

struct Step {
  std::string name;
  int32_t layer = -1;
  /// 0 compute, 1 communication, 2 weight streaming.
  int32_t stream = 0;
  llvm::SmallVector<int> reads, writes;
  StepBuilderFn build;
  /// The op it came from (for diagnostics and moe-plan-memory).
  Operation *origin = nullptr;
};

struct Program {
  std::vector<Buffer> buffers;
  std::vector<Step> steps;
  std::vector<Weight> weights;
  std::vector<KVCache> kvCaches;
  llvm::DenseMap<Value, Slice> regions;
  /// Tokens per forward call the arena is sized for (the prefill chunk).
  int64_t maxTokens = 0;
  /// KV cache capacity in tokens.
  int64_t maxSeqLen = 0;
  /// Arena size after planMemory().
  uint64_t arenaBytes = 0;
  /// Sum of the buffer sizes: what the arena would be without reuse.
  uint64_t unplannedBytes = 0;
  /// The buffer the runtime reads the logits from.
  int logitsBuffer = -1;
};

/// The one moe.model of `module`, or an error.
FailureOr<ModelOp> getSingleModel(ModuleOp module);

/// Lowers the graph of `model` to steps. Fails with a diagnostic at the
/// offending op for IR the runtime cannot execute (unfused gating, an
/// in-place op whose input is still needed, ...).
LogicalResult buildProgram(ModelOp model, const CompileOptions &options,
                           Program &program);

/// For every step, the earlier steps on other streams that write a buffer it
/// reads or writes, or read a buffer it writes (indices into program.steps).
std::vector<std::vector<int>> crossStreamDependencies(const Program &program);

/// Assigns arena offsets (64-byte aligned) so that buffers whose live ranges
/// overlap never share bytes: greedy by size, first fit.
void planMemory(Program &program);

/// Activation bytes per rank: arena + KV caches (f32) at maxSeqLen.
uint64_t kvCacheBytes(const Program &program);

/// Weight bytes resident on `rank` (its experts and all shared weights).
uint64_t weightBytesOnRank(const Program &program, int32_t rank);

} // namespace mlir::moe::plan

#endif // MOE_PLAN_PROGRAM_H
