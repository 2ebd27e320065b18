//===- Batch.h - Batched generation with continuous batching ----*- C++ -*-===//
//
// The batching scheduler of core: up to max_batch sequences run together,
// each with its own KV pages (the plan's page pool), position, sampling
// parameters and stop conditions. Every step is one forward call whose rows
// belong to several sequences: one decode row of every sequence that is
// generating, then prompt chunks of sequences that are still prefilling
// (at most `prefillChunk` tokens of one prompt per step, within max_tokens
// rows), so a new prompt does not stall the others for long. A finished
// sequence's slot and pages go to the next queued sequence at the next step.
// A sequence takes the pages of its whole length (prompt + max new tokens)
// when it is admitted; when too few pages are free, it waits (in order: no
// later request overtakes it).
//
// Greedy results equal one-sequence generate() runs for dropless routing;
// with a capacity factor, which slots a gate drops depends on every token of
// the step (docs/runtime.md, "Batched generation").
//
//===----------------------------------------------------------------------===//
#pragma once

#include "moert/Session.h"

#include <functional>
#include <span>
#include <string>
#include <vector>

namespace moert {

/// One sequence to generate.
struct SequenceRequest {
  std::vector<int64_t> prompt;
  int64_t maxNewTokens = 16;
  float temperature = 0.0f, topP = 1.0f;
  uint64_t seed = 0;
  bool stopAtEos = true;
  /// Ids that end generation; empty: the plan's eos_token_ids.
  std::vector<int64_t> eosIds;
  /// Token-id sequences that end generation when the output ends with one.
  std::vector<std::vector<int64_t>> stopIds;
  /// A further stop condition (stop strings), asked after every new token
  /// with the output so far; called on every rank, so it must be
  /// deterministic.
  std::function<bool(std::span<const int64_t> output)> stopCheck;
};

struct SequenceResult {
  std::vector<int64_t> output;   // the new tokens
  std::string finishReason;      // "stop" (EOS or a stop sequence) or "length"
  std::string error;             // set when the request was refused (not run)
  /// Milliseconds from the start of the run to each new token (the first is
  /// the time to first token, queueing included).
  std::vector<double> tokenMs;
};

struct BatchOptions {
  /// Sequences per step (0: the plan's max_batch; at most that).
  int64_t maxBatch = 0;
  /// Prompt tokens of one sequence per step (0: max_tokens).
  int64_t prefillChunk = 0;
  /// Called (on every rank) when sequence `index` of the requests finishes.
  std::function<void(size_t index, const SequenceResult &)> onFinish;
};

struct BatchStats {
  int64_t steps = 0;
  int64_t decodeRows = 0, prefillRows = 0;
  double occupancySum = 0.0; // sum over steps of active sequences / maxBatch
  int64_t maxBatch = 0;
  int64_t pageWaits = 0;     // steps where the next sequence waited for KV pages
  double wallMs = 0.0;
  double occupancy() const { return steps ? occupancySum / double(steps) : 0.0; }
};

/// Checks a request against the plan: the one-line reason it cannot run, or "".
std::string checkRequest(const PlanFile &plan, const SequenceRequest &r);

/// Generates every request (results in request order). Every rank calls
/// this with the same requests; rank 0 samples and broadcasts each step's
/// tokens, so all ranks run the same steps. Requests that fail checkRequest
/// get an error and do not run.
std::vector<SequenceResult> generateBatch(Session &session, Comm &comm,
                                          std::span<const SequenceRequest> requests,
                                          const BatchOptions &opts = {},
                                          BatchStats *stats = nullptr);

} // namespace moert
