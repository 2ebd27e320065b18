//===- Session.h - Executes one rank's program ------------------*- C++ -*-===//
//
// A Session owns a rank's activation arena and KV caches and runs its steps
// in order for one forward call of T <= max_tokens tokens. Collective steps
// synchronize with the other ranks through a Comm. Prefetch steps on the
// weight-streaming stream (2) run on a thread of their own; a step waits for
// the Prefetch steps listed in its `waits`.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "moert/Comm.h"
#include "moert/Plan.h"
#include "moert/Trace.h"
#include "moert/Weights.h"
#include "moert/cpu/Kernels.h"

#include <memory>
#include <vector>

namespace moert {

struct SessionOptions {
  bool trace = false;          // record a trace event per step (and per expert)
  bool expertProfile = false;  // count routed tokens per layer and expert
};

/// Routed-token counts of one Gate step.
struct GateProfile {
  int step, layer;
  std::string name;
  std::vector<uint64_t> routed;   // top-k choices per expert
  std::vector<uint64_t> dropped;  // choices over capacity per expert
};

class Session {
public:
  Session(const PlanFile &plan, int rank, WeightStore &weights, Comm &comm, ThreadPool &pool,
          SessionOptions opts = {});
  ~Session();

  /// Runs tokens ids[0..T) at positions startPos.. (T <= max_tokens). Returns
  /// the logits of the last token (vocab floats), or nullptr on a rank without
  /// a Logits step. With allLogits, also writes T x vocab logits there.
  const float *forward(const int64_t *ids, int64_t T, int64_t startPos, float *allLogits = nullptr);

  const PlanFile &plan() const { return plan_; }
  int rank() const { return rank_; }
  bool hasLogits() const { return info_.logitsStep >= 0; }
  /// Weight bytes the last forward call read (only routed experts count).
  uint64_t lastWeightBytes() const { return lastWeightBytes_; }
  /// KV-cache bytes the last forward call's attention read.
  uint64_t lastKVBytes() const { return lastKVBytes_; }
  Trace &trace() { return trace_; }
  const std::vector<GateProfile> &expertProfile() const { return profile_; }

private:
  void runStep(int idx, const plan::Step &s, int64_t T, float *allLogits);
  void runExperts(const plan::Step &s, const plan::Experts &op, int64_t T);
  float *f32(int32_t buf) { return reinterpret_cast<float *>(arena_ + info_.buffers[size_t(buf)].offset); }
  int32_t *i32(int32_t buf) {
    return reinterpret_cast<int32_t *>(arena_ + info_.buffers[size_t(buf)].offset);
  }
  int64_t ld(int32_t buf) const { return info_.buffers[size_t(buf)].rowElems; }
  int64_t rows(int32_t buf, int64_t T) const { return info_.buffers[size_t(buf)].rows(T); }
  cpu::WRef w(int32_t idx);
  void waitFor(const plan::Step &s);

  const PlanFile &plan_;
  const plan::RankProgram &prog_;
  const RankInfo &info_;
  int rank_;
  WeightStore &weights_;
  std::unique_ptr<class StreamWorker> streamer_; // runs stream-2 Prefetch steps
  Comm &comm_;
  ThreadPool &pool_;
  SessionOptions opts_;
  cpu::Workspace ws_;
  cpu::Precision prec_;

  uint8_t *arena_ = nullptr;
  size_t arenaBytes_ = 0;
  struct Cache {
    void *k = nullptr, *v = nullptr;
    size_t bytes = 0;
    DType dtype;
  };
  std::vector<Cache> caches_;
  struct RopeTable {
    int rotaryDim;
    float theta;
    std::vector<float> cos, sin;
  };
  std::vector<RopeTable> ropeTables_;
  std::vector<int> stepRope_;             // step -> rope table index
  std::vector<int64_t> ids_, pos_;
  std::vector<float> lastLogits_;
  std::vector<int> profileIndex_;         // step -> index into profile_ (-1)
  std::vector<GateProfile> profile_;
  std::vector<std::vector<int>> groups_;  // step -> collective group
  // step -> one past the last of the consecutive Linear steps that read the
  // same input and write disjoint outputs (q/k/v, gate/up): at T = 1 they run
  // as one batch.
  std::vector<unsigned> linearGroupEnd_;
  void computeLinearGroups();
  void runLinearGroup(unsigned begin, unsigned end, int64_t T);
  uint64_t lastWeightBytes_ = 0, lastKVBytes_ = 0;
  Trace trace_;
};

} // namespace moert
