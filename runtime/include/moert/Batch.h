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
// KV pages are taken as sequences grow: at admission those of the prompt and
// of the first generated token, then one whenever a decode row crosses into
// a new page. When no page is free for a running sequence, the running
// sequence admitted last is preempted (recompute): its pages and slot go
// back, and it waits at the front of the queue with its generated tokens,
// which it prefills again when readmitted. A queued sequence waits (in
// order: no later request overtakes it) while too few pages are free for its
// admission plus one for every running sequence that crosses into a new page
// at the next step.
//
// The scheduler is a streaming engine (runBatchEngine): a RequestSource it
// polls before every step hands it new requests, which join free slots at
// that step (continuous batching across arrivals, as a server needs); it
// hears every new token and every finished sequence, and may cancel a
// sequence (a client that went away), whose slot and pages are free at the
// next step. generateBatch is that engine over a fixed list of requests.
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
  /// The strings stopCheck looks for, when it looks for strings: the engine
  /// never reads them; a caller that hands requests to another process
  /// (moe-serve under MPI) sends them so that it can build the same check.
  std::vector<std::string> stopStrings;
};

struct SequenceResult {
  std::vector<int64_t> output;   // the new tokens
  /// "stop" (EOS or a stop sequence), "length", or "cancelled" (the source
  /// cancelled it; runBatchEngine only).
  std::string finishReason;
  std::string error;             // set when the request was refused (not run)
  /// Milliseconds from the request's arrival (the start of the run for
  /// generateBatch; the poll that handed it over for runBatchEngine) to each
  /// new token: the first is the time to first token, queueing included.
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
  int64_t preemptions = 0;   // sequences preempted for KV pages (recomputed later)
  int64_t peakRunning = 0;   // most sequences in one step
  double wallMs = 0.0;
  double occupancy() const { return steps ? occupancySum / double(steps) : 0.0; }
};

/// Checks a request against the plan: the one-line reason it cannot run, or "".
std::string checkRequest(const PlanFile &plan, const SequenceRequest &r);

/// Where runBatchEngine gets its requests and sends its results. Its calls
/// all come from the thread that runs the engine. With several ranks, every
/// rank's source must hand over the same requests at the same polls and
/// cancel the same sequences at the same steps (rank 0, or with
/// data-parallel groups the first rank of each group, samples; all ranks run
/// the same steps).
class RequestSource {
public:
  virtual ~RequestSource() = default;
  /// Appends the requests that arrived since the last poll, each with a tag
  /// the other calls name it by. Called before every step; `idle` is true
  /// when no sequence is running or queued, and the source may then block
  /// until a request comes. Returns false when no request will come any
  /// more: the engine finishes the running and queued ones and returns.
  virtual bool poll(std::vector<std::pair<uint64_t, SequenceRequest>> &out, bool idle) = 0;
  /// Asked before every step for every running or queued sequence: true
  /// finishes it as "cancelled" and frees its slot and pages for that step.
  virtual bool cancelled(uint64_t tag) { (void)tag; return false; }
  /// Every new token, once (rank 0 and every other rank alike; a preempted
  /// sequence's tokens are not reported again when it is recomputed).
  virtual void onToken(uint64_t tag, int64_t token) { (void)tag, (void)token; }
  /// A running sequence was preempted for KV pages: it waits in the queue
  /// and is recomputed when readmitted (for metrics).
  virtual void onPreempted(uint64_t tag) { (void)tag; }
  /// Once per request: its result (error set when checkRequest refused it).
  virtual void onFinish(uint64_t tag, SequenceResult result) = 0;
  /// After every step: sequences running and queued (for metrics).
  virtual void onStep(int64_t running, int64_t queued) { (void)running, (void)queued; }
};

/// The streaming engine: runs until `source.poll` returns false and every
/// sequence it handed over has finished. BatchOptions::onFinish is not used
/// (the source hears every result).
void runBatchEngine(Session &session, Comm &comm, RequestSource &source,
                    const BatchOptions &opts = {}, BatchStats *stats = nullptr);

/// Generates every request (results in request order). Every rank calls
/// this with the same requests; rank 0 samples and broadcasts each step's
/// tokens, so all ranks run the same steps. With data-parallel groups (plan
/// data_parallel G > 1) there are G x max_batch slots: each group runs the
/// rows of its slots, with its own pool of KV pages, and the first rank of
/// each group samples them and broadcasts the tokens and sampler states. Requests that fail checkRequest
/// get an error and do not run.
std::vector<SequenceResult> generateBatch(Session &session, Comm &comm,
                                          std::span<const SequenceRequest> requests,
                                          const BatchOptions &opts = {},
                                          BatchStats *stats = nullptr);

} // namespace moert
