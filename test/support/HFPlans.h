//===- HFPlans.h - Reference plans for Hugging Face configs -----*- C++ -*-===//
//
// Builds, in test code, the plans the compiler's lowering is expected to
// produce for gpt2, mixtral, qwen2_moe and qwen3_moe checkpoints (HF
// semantics as listed in the compiler brief). The runtime conformance tests
// run these against the fixtures; the benchmark builds its Mixtral-shaped
// model with them. With numRanks > 1 the experts are split round-robin over
// the ranks (expert parallelism: an all-reduce of slot_out before Combine).
//
//===----------------------------------------------------------------------===//
#pragma once

#include "PlanBuilder.h"

#include <string>
#include <vector>

namespace moetest {

struct HFPlanOptions {
  mp::DType dtype = mp::DType::F32;        // weights in memory
  mp::DType computeDtype = mp::DType::F32; // plan compute dtype
  mp::DType kvDtype = mp::DType::F32;
  int64_t maxTokens = 64;
  int64_t maxSeqLen = 0; // 0: min(max_position_embeddings, 4096)
  int numRanks = 1;
  std::string checkpoint; // recorded in the plan
  /// Batched plans (2.1): max_batch, and KV pages of kvPageSize positions
  /// (kvPages of them; 0: enough for maxBatch full-length sequences).
  int maxBatch = 1;
  int64_t kvPageSize = 0, kvPages = 0;
};

/// `path` is a checkpoint directory or a config.json. Throws moert::Error.
std::vector<uint8_t> buildHFPlan(const std::string &path, const HFPlanOptions &opts);

} // namespace moetest
