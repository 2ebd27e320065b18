//===- Session.h - Executes one rank's program ------------------*- C++ -*-===//
//
// A Session owns a rank's activation arena and KV caches (allocated by the
// backend) and runs its steps for one forward call of T <= max_tokens tokens:
// each step is launched on its plan stream, and a step's `waits` become
// backend events, so communication and weight streaming run beside the
// compute that does not depend on them. The session names no backend.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "moert/Backend.h"
#include "moert/Comm.h"
#include "moert/Plan.h"
#include "moert/Trace.h"
#include "moert/Weights.h"

#include <atomic>
#include <map>
#include <memory>
#include <span>
#include <vector>

namespace moert {

struct SessionOptions {
  bool trace = false;          // record a trace event per step (and per expert)
  bool expertProfile = false;  // count routed tokens per layer and expert
  /// Expert streaming: predict the next MoE layer's experts by applying its
  /// router to this layer's router input, and prefetch them. Off by default:
  /// it did not pay on the CPU (docs/runtime.md, "Weight streaming").
  bool predictExperts = false;
};

/// How expert streaming went (accumulated over forward calls).
struct StreamingStats {
  uint64_t predicted = 0; // experts prefetched by prediction
  uint64_t hits = 0;      // of those, experts the gate then chose
  uint64_t chosen = 0;    // experts the gates of on-demand layers chose
  int64_t waitNs = 0;     // time the compute stream waited for weight fetches
};

/// Routed-token counts of one Gate step.
struct GateProfile {
  int step, layer;
  std::string name;
  std::vector<uint64_t> routed;   // top-k choices per expert
  std::vector<uint64_t> dropped;  // choices over capacity per expert
};

/// Allocates a layer's K/V cache for `maxSeq` positions on the backend
/// (k and v each [kvHeads, maxSeq, headDim] of the cache's dtype).
KVCacheBuf allocateKVCache(Backend &backend, const plan::KVCache &cache, int64_t maxSeq);

/// One forward call of rows from several sequences (batched generation):
/// row t is token ids[t] of sequence slot seq[t] at position pos[t].
struct BatchRows {
  std::span<const int64_t> ids, pos, seq;
  /// Rows whose logits are wanted (the last row of each sequence that
  /// samples after this call), in the order of the returned logits.
  std::span<const int64_t> logitRows;
};

class Session {
public:
  Session(const PlanFile &plan, int rank, WeightStore &weights, Comm &comm, Backend &backend,
          SessionOptions opts = {});
  ~Session();

  /// Runs tokens ids[0..T) at positions startPos.. (T <= max_tokens). Returns
  /// the logits of the last token (vocab floats, host memory), or nullptr on a
  /// rank without a Logits step. With allLogits, also writes T x vocab
  /// logits there (host memory). A vocabulary-parallel LM head (plan 3.5
  /// Logits.group) gathers its logits over the tensor-parallel group: its
  /// members must all pass allLogits or all not.
  const float *forward(const int64_t *ids, int64_t T, int64_t startPos, float *allLogits = nullptr);
  /// Samples the next token from the last forward call's logits on the
  /// backend (only ranks with a Logits step).
  int64_t sample(float temperature, float topP, uint64_t &state);

  /// Batched generation: gives sequence slot `slot` (0..max_batch) the KV
  /// pages `pages` (page i holds positions [i, i+1) x kv_page_size). Slot 0
  /// starts with pages 0.. so that forward() needs no call.
  void setPages(int64_t slot, std::span<const int32_t> pages);
  /// Runs one batched forward call; returns the logits of b.logitRows
  /// ([rows, vocab], host memory), or nullptr on a rank without a Logits
  /// step.
  const float *forwardBatch(const BatchRows &b);
  /// Samples from row i of the last forwardBatch call's logits (on the backend).
  int64_t sampleRow(int64_t i, float temperature, float topP, uint64_t &state);

  const PlanFile &plan() const { return plan_; }
  Backend &backend() { return backend_; }
  int rank() const { return rank_; }
  bool hasLogits() const { return info_.logitsStep >= 0; }
  /// Weight bytes the last forward call read (only routed experts count).
  uint64_t lastWeightBytes() const { return stats_.weightBytes; }
  /// KV-cache bytes the last forward call's attention read.
  uint64_t lastKVBytes() const { return stats_.kvBytes; }
  /// Arena + KV cache bytes this session holds.
  uint64_t bufferBytes() const { return bufferBytes_; }
  Trace &trace() { return trace_; }
  const StreamingStats &streamingStats() const { return streaming_; }
  const std::vector<GateProfile> &expertProfile() const { return profile_; }

private:
  /// Runs the tokens already in hostTokens_.
  const float *run(int64_t T, int64_t numLogitRows, float *allLogits);
  /// Launches every step of a forward call of T rows (waits, groups, events).
  void launchSteps(int64_t T);
  void launchStep(unsigned i, const plan::Step &s);
  /// KV-cache bytes the attention steps of T rows read (the floor's share).
  uint64_t kvBytesRead(int64_t T) const;
  /// Makes the streamed weights step `i` reads resident and pins them.
  void acquireWeights(unsigned i);
  /// An Experts step whose experts stream on demand: fetches the routed ones
  /// (one at a time when together they would exceed the budget).
  void launchOnDemandExperts(const plan::Step &s, const plan::Experts &ex);

  const PlanFile &plan_;
  const plan::RankProgram &prog_;
  const RankInfo &info_;
  int rank_;
  WeightStore &weights_;
  Comm &comm_;
  Backend &backend_;
  SessionOptions opts_;

  uint8_t *arena_ = nullptr;
  uint64_t arenaBytes_ = 0, bufferBytes_ = 0;
  std::vector<KVCacheBuf> caches_;
  int64_t *deviceTokens_ = nullptr; // ids then positions, 2 x max_tokens
  float *deviceLogits_ = nullptr;   // the Logits step's output (device)
  float *deviceAllLogits_ = nullptr; // max_tokens x vocab for --dump, on first use
  std::vector<int64_t> hostTokens_;
  int64_t tokenWords_ = 0;
  std::vector<int32_t> pageTable_;  // [max_batch, pagesPerSeq_] (-1: none)
  int32_t *devicePages_ = nullptr;
  int64_t pagesPerSeq_ = 1;
  bool pagesDirty_ = true;
  float *deviceRowLogits_ = nullptr; // max_batch x vocab, on first batched call
  std::vector<float> rowLogits_;
  int64_t lastLogitRows_ = 0;
  std::vector<float> lastLogits_;
  std::vector<int> profileIndex_;          // step -> index into profile_ (-1)
  std::vector<GateProfile> profile_;
  std::vector<unsigned> groupEnd_;         // the backend's step groups
  std::vector<bool> needsEvent_;           // a later step waits for this one
  std::vector<EventId> events_;            // per step, this call
  std::vector<std::vector<int32_t>> streamedWeights_; // per step: streamed weights it reads
  std::vector<int32_t> pinned_;
  bool streams_ = false; // some step may fetch weights (no graph capture)
  /// Prediction of a MoE layer's experts from the previous MoE layer: after
  /// the previous layer's router step runs, the next layer's router is
  /// applied to the previous router's input.
  struct Prediction {
    unsigned after;          // the previous MoE layer's router step
    int32_t input;           // its input buffer
    int32_t router;          // the next layer's router weight [E, H]
    int32_t routerBias;      // and its bias (-1: none)
    int32_t selectionBias;   // the next Gate's selection bias (-1: none)
    unsigned experts;        // the next layer's on-demand Experts step
    ExpertSelection sel;     // the next Gate's choice; its bias read once
    std::vector<int32_t> ids; // predicted this call
  };
  std::vector<Prediction> predictions_;
  std::vector<int> predictAfter_;   // step -> index into predictions_ (-1)
  std::vector<int> predictionFor_;  // Experts step -> index into predictions_ (-1)
  void findPredictions();
  void predict(Prediction &p);
  /// Loads weights on the compute stream, timing the wait.
  void loadNow(std::span<const int32_t> list);
  StreamingStats streaming_;
  StepStats stats_;
  /// Decode graphs: one per session and batch size (bucket 0: a single
  /// sequence's step; b: a batched step of b sequences' next tokens), keyed
  /// graphKey_ * kGraphBuckets + bucket across the sessions of a backend.
  static constexpr int kGraphBuckets = 1024;
  struct GraphState {
    uint64_t weightBytes = 0; // what the captured step reads
    int failures = 0;         // captures the backend refused
  };
  std::map<int, GraphState> graphs_;
  const int graphKey_ = nextGraphKey();
  static int nextGraphKey() {
    static std::atomic<int> next{0};
    return ++next;
  }
  StepArgs args_;
  Trace trace_;
};

} // namespace moert
