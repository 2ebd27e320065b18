//===- TinyPlans.h - Small HF configs planned without the compiler --*- C++ -*-===//
//
// Configs of a few layers that the runtime tests plan with buildHFPlan
// (test/support/HFPlans.h) and run on random weights.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "TestUtil.h"

#include "HFPlans.h"
#include "moert/Plan.h"

namespace moetest {

inline const char *kTinyQwen = R"({"model_type":"qwen2_moe","hidden_size":48,"intermediate_size":64,
  "moe_intermediate_size":24,"shared_expert_intermediate_size":32,"num_attention_heads":4,
  "num_key_value_heads":2,"num_hidden_layers":3,"vocab_size":97,"max_position_embeddings":64,
  "num_experts":6,"num_experts_per_tok":2,"norm_topk_prob":false,"mlp_only_layers":[1],
  "rms_norm_eps":1e-6,"rope_theta":10000.0,"dtype":"bfloat16","initializer_range":0.2})";

inline const char *kTinyMixtral = R"({"model_type":"mixtral","hidden_size":64,"intermediate_size":96,
  "num_attention_heads":4,"num_key_value_heads":2,"num_hidden_layers":2,"vocab_size":101,
  "max_position_embeddings":64,"num_local_experts":4,"num_experts_per_tok":2,
  "rms_norm_eps":1e-5,"rope_theta":10000.0,"torch_dtype":"bfloat16","initializer_range":0.2})";

inline const char *kTinyGpt2 = R"({"model_type":"gpt2","n_embd":32,"n_head":4,"n_layer":2,
  "vocab_size":89,"n_positions":48,"layer_norm_epsilon":1e-5,"initializer_range":0.2})";

/// One sequence at a time, 8 tokens per forward call.
inline HFPlanOptions singleOptions() {
  HFPlanOptions o;
  o.maxTokens = 8;
  return o;
}

/// Batches of up to maxBatch sequences over KV pages of pageSize positions
/// (kvPages of them; 0: enough for every sequence), 8 tokens per call.
inline HFPlanOptions batchedOptions(int maxBatch, int64_t pageSize, int64_t kvPages = 0) {
  HFPlanOptions o = singleOptions();
  o.maxBatch = maxBatch;
  o.kvPageSize = pageSize;
  o.kvPages = kvPages;
  return o;
}

/// The plan of a config.json with these contents.
inline moert::PlanFile planFor(const char *config, HFPlanOptions o) {
  TempDir d;
  writeBytes(d.file("config.json"), config);
  return moert::PlanFile::fromBytes(buildHFPlan(d.file("config.json"), o), "t.plan");
}

} // namespace moetest
