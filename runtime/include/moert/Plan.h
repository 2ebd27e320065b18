//===- Plan.h - Reading and validating plan files ---------------*- C++ -*-===//
//
// A plan is accepted only after three checks: the FlatBuffers file
// identifier and Verifier (memory safety), the format version, and a
// semantic validation of everything the executor relies on (indices in
// range, arena slots inside the arena, row sizes consistent with the ops
// that use them, gate parameters). After PlanFile::load succeeds the
// executor indexes without further checks.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "moert/DType.h"
#include "moert/Error.h"
#include "moert/plan_generated.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace moert {

namespace plan = moe::plan;

/// A buffer of a rank's arena with its row count as a function of T.
struct BufferInfo {
  std::string name;
  DType dtype = DType::F32;
  int64_t rowElems = 0, rowsPerToken = 1, fixedRows = 0, maxRows = 0;
  uint64_t offset = 0, bytes = 0; // arena slot (bytes = maxRows*rowElems*4)
  int64_t rows(int64_t T) const { return T * rowsPerToken + fixedRows; }
};

struct WeightInfo {
  std::string name;
  DType storedDtype, dtype;
  std::vector<int64_t> shape;
  uint64_t numel = 0;
  plan::Init init = plan::Init::Normal;
  float initStd = 0.02f;
  std::vector<int> ranks; // empty = all
  bool streamed = false;  // loaded on Prefetch / first use, not at start-up (1.1)
  // Expert-stacked weights (3.0): a weight an Experts step reads is
  // [E, ...] and is never bound itself; its E slices, one per expert, follow
  // the plan's weights in PlanFile::weights() and are the unit a rank loads,
  // streams and evicts.
  std::vector<int32_t> slices; // of a stacked weight: weights() index of expert e's slice
  int32_t stacked = -1;        // of a slice: its stacked weight
  int64_t expert = -1;         // of a slice: its expert
  // A stacked weight's (and its slices') checkpoint source (plan.fbs
  // WeightSource); empty sourceTensor: the tensor `name` of the stacked weight.
  std::string sourceTensor;
  int64_t sourceOffset = 0, sourceStride = 1;
  bool sourceTransposed = false;
  // Expert slicing (3.1): an expert slice whose Experts step splits the
  // experts in S parts lists its S parts (appended after the slices); it is
  // then never bound itself. A part is rows (axis 0) or columns (axis 1) of
  // its expert slice `partOf`, starting at partOffset; `shape` is the part's.
  // A tensor-parallel part (3.3, Weight.part_of) is such a part of a whole
  // plan weight (partOf < numPlanWeights()), and steps name it directly.
  std::vector<int32_t> parts;
  int32_t partOf = -1;
  // A quantized matrix (3.3, plan.fbs WeightFormat): held as stored, its
  // scale tensor (per expert slice: that expert's) and scale block.
  plan::WeightFormat format = plan::WeightFormat::Plain;
  std::string scaleTensor;
  int64_t blockRows = 0, blockCols = 0;
  /// Bytes of one stored row (K for FP8, K / 2 for MXFP4) and of the
  /// scales (the [ceil(N / blockRows), ceil(K / blockCols)] grid).
  uint64_t quantRowBytes() const;
  uint64_t scaleRowBytes() const;
  uint64_t scaleRows() const;
  int partAxis = 0;
  int64_t partOffset = 0;
  bool usedBy(int rank) const;
};

/// The stacked weight roles of an Experts step: gate, up, down, up_bias,
/// down_bias and gate_bias (3.1), in that order; matrices first.
inline constexpr size_t kExpertRoles = 6;
/// The Plan.weights indices of an Experts step's roles (-1 where absent).
std::array<int32_t, kExpertRoles> expertRoles(const plan::Experts &op);
/// The weights (PlanFile::weights() indices; -1 where a role is absent) that
/// local expert `e` of an Experts step reads: its expert's slices (or, when
/// sliced, its part's) of each role, in expertRoles' order. The down bias is
/// not split: part 0 reads it, other parts get -1.
std::array<int32_t, kExpertRoles> expertWeights(const std::vector<WeightInfo> &weights,
                                                const plan::Experts &op,
                                                const plan::LocalExpert &e);

/// Facts derived while validating one rank's program.
struct RankInfo {
  std::vector<BufferInfo> buffers;
  int logitsStep = -1;           // the rank's Logits step, -1 when none
  std::vector<bool> usesWeight;  // indexed like Plan.weights
  std::vector<bool> otherUse;    // used other than as W [N, K] of a product (X W^T)
  // Read a row at a time as stored (MlaAttention's kv_b): may be quantized,
  // must stay row-major.
  std::vector<bool> rowsUse;
  std::vector<std::vector<int32_t>> stepWeights; // per step: the weights its op reads
  int64_t maxExpertScratch = 0;  // floats of expert scratch (gathered x + hidden)
};

class PlanFile {
public:
  /// Reads, verifies and validates `path`; throws Error naming the file.
  static PlanFile load(const std::string &path);
  /// Same checks on bytes already in memory; `name` prefixes messages.
  static PlanFile fromBytes(std::vector<uint8_t> bytes, std::string name);

  const plan::Plan &plan() const { return *root_; }
  const std::string &path() const { return path_; }
  int numRanks() const { return int(ranks_.size()); }
  const RankInfo &rankInfo(int r) const { return ranks_[size_t(r)]; }
  const plan::RankProgram &rankProgram(int r) const { return *root_->ranks()->Get(unsigned(r)); }
  /// Plan.weights, then the slices of the expert-stacked ones.
  const std::vector<WeightInfo> &weights() const { return weights_; }
  /// The number of Plan.weights (the weights a step may name).
  size_t numPlanWeights() const { return numPlanWeights_; }
  int64_t vocabSize() const { return root_->model()->vocab_size(); }
  int64_t maxTokens() const { return root_->max_tokens(); }
  int64_t maxSeqLen() const { return root_->max_seq_len(); }
  /// The largest position + 1 a run may reach: min(max_seq_len, model max positions).
  int64_t maxPositions() const;
  /// Sequences decoded together (the batch's slots; per data-parallel group).
  int64_t maxBatch() const { return root_->max_batch(); }
  /// Data-parallel groups (Plan.data_parallel): num_ranks / dataParallel()
  /// consecutive ranks each, running their own sequences.
  int dataParallel() const { return std::max(1, root_->data_parallel()); }
  /// The data-parallel group of rank `r`.
  int groupOf(int r) const { return r / (numRanks() / dataParallel()); }
  /// The paged KV cache: pages of kvPageSize() positions, kvPages() of them
  /// (plans before 2.1: one page of max_seq_len per batch slot).
  int64_t kvPageSize() const;
  int64_t kvPages() const;
  int64_t kvPoolPositions() const { return kvPageSize() * kvPages(); }
  /// Pages one sequence of maxPositions() positions needs (its page table's length).
  int64_t kvPagesPerSeq() const { return (maxPositions() + kvPageSize() - 1) / kvPageSize(); }

private:
  void validate();
  /// Appends the per-expert slices of every weight an Experts step reads.
  void sliceStackedWeights();
  /// Checks a tensor-parallel part (3.3 Weight.part_of) against its whole.
  void checkTensorPart(size_t i);
  /// Reads a weight's storage format (3.3) into `wi`.
  void readFormat(const plan::Weight &w, WeightInfo &wi) const;

  std::vector<uint8_t> bytes_;
  std::string path_;
  const plan::Plan *root_ = nullptr;
  std::vector<WeightInfo> weights_;
  size_t numPlanWeights_ = 0;
  std::vector<RankInfo> ranks_;
};

/// The name of an op kind ("Linear", ...), for messages and traces.
const char *opName(plan::Op op);

} // namespace moert
