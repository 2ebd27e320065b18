//===- CudaBackend.h - The CUDA backend -------------------------*- C++ -*-===//
//
// moert::Backend on one NVIDIA GPU (issue 14): device memory from cudaMalloc,
// the plan's three streams as CUDA streams ordered by CUDA events, one
// launcher of CudaKernels.h per plan op. Weights are row-major in their
// compute dtype (the kernels read bf16/f16/f32 and accumulate in f32);
// quantized ones (FP8 blocks, MXFP4) are expanded to bf16 at upload.
// Routing stays on the device: nothing is read back during a step except for
// --expert-profile counts and expert streaming's offsets (core's copy).
//
// Host work enqueued on the weights stream (weight streaming's loads and
// evictions) runs in order on a worker thread, beside the session's
// launches; it calls CUDA itself, which a stream callback may not. Events
// recorded on that stream are recorded by the worker after the work queued
// before them.
//
// Decode steps that fetch nothing are captured once as a CUDA graph and
// replayed (CudaGraphs.cpp; MOERT_CUDA_GRAPHS=0 launches them one by one).
//
// Several ranks talk through NCCL (deviceComm, NcclDeviceComm.cpp): the
// collectives get device pointers, which host communicators cannot read;
// bound to a host communicator of several ranks (in-process ranks sharing a
// GPU), the backend stages each collective through host memory
// (StagedComm.cpp).
//
// --trace: per-step events from CUDA timing events (CudaTrace.cpp).
//
// The bandwidth floor's count of the routed experts' bytes is kept on the
// device (the Experts launch's activation kernel adds them) and read by
// collectStats from mapped host memory.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "CudaKernels.h"

#include "moert/Backend.h"
#include "moert/RopeTables.h"
#include "moert/StreamWorker.h"
#include "moert/ThreadPool.h"

#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace moert::cuda {

class CudaBackend final : public Backend {
public:
  explicit CudaBackend(const BackendOptions &opts);
  ~CudaBackend() override;

  const char *name() const override { return "cuda"; }
  std::string description() const override;
  int threads() const override { return pool_.size(); }
  ThreadPool &hostPool() override { return pool_; }

  void *allocate(uint64_t bytes, const char *what) override;
  void deallocate(void *p, uint64_t bytes) override;
  void copyToDevice(StreamKind s, void *dst, const void *src, uint64_t bytes) override;
  void copyToHost(StreamKind s, void *dst, const void *src, uint64_t bytes) override;

  Layout chooseLayout(const WeightInfo &w, bool onlyProduct) override;
  uint64_t layoutBytes(const WeightInfo &w, Layout layout) override;
  UploadResult upload(std::span<const WeightSource> srcs, std::span<const Layout> layouts,
                      const ProgressFn &progress) override;
  void evict(const DeviceWeight &w, std::shared_ptr<void> &memory) override;
  void touch(const DeviceWeight &) override {}

  std::vector<unsigned> groupSteps(const PlanFile &plan, int rank) override;
  void launch(StreamKind s, const plan::Step &step, const StepArgs &args) override;
  void launchGroup(StreamKind s, const plan::RankProgram &prog, unsigned begin, unsigned end,
                   const StepArgs &args) override;
  std::unique_ptr<Comm> deviceComm(Comm &host) override;
  void bindComm(Comm &comm) override;
  void enqueueHost(StreamKind s, std::function<void()> fn) override;
  void routeTopK(const float *x, int64_t ldx, int64_t rows, const DeviceWeight &router,
                 const DeviceWeight *bias, int64_t H, const ExpertSelection &sel,
                 std::vector<int32_t> &experts) override;
  int64_t sample(const float *logits, int64_t vocab, const SamplingParams &p) override;

  EventId record(StreamKind s) override;
  void waitEvent(StreamKind s, EventId e) override;
  void synchronize(StreamKind s) override;
  void resetEvents() override { nextEvent_ = 0; }

  /// Attention and MLA read a batched step's page table and slots; the
  /// lm_head computes its sampled rows.
  bool supportsBatchedSteps() const override { return true; }
  void collectStats(StepStats &stats) override;
  bool supportsGraphs() const override { return graphsOn_ && !staged_ && !hostExchange_; }
  void beginCapture(int key) override;
  bool endCapture(int key) override;
  bool replay(int key) override;

  std::pair<double, double> readBandwidth(std::span<const std::span<const uint8_t>> regions,
                                          uint64_t bytes, int passes) override;
  std::string isa() const override;

  /// The native stream of `s` (tests).
  cudaStream_t stream(StreamKind s) const { return streams_[int(s)]; }

private:
  void runStep(cudaStream_t st, const plan::Step &s, const StepArgs &a);
  void runExperts(cudaStream_t st, const plan::Experts &op, const StepArgs &a);
  void countRouting(cudaStream_t st, const plan::Gate &op, const StepArgs &a);
  // Trace events (CudaTrace.cpp).
  struct PendingTraceEvent {
    Trace *trace = nullptr;
    std::string name, cat;
    int stream = 0;
    int64_t issuedNs = 0;
    cudaEvent_t start = nullptr, end = nullptr;
  };
  /// Runs a step between two timing events, its trace event pending.
  void launchTraced(StreamKind s, const plan::Step &step, const StepArgs &args);
  /// Adds stream s's pending events to their traces (s is synchronized).
  void flushTrace(StreamKind s);
  cudaEvent_t timingEvent();
  std::vector<PendingTraceEvent> pendingTrace_;
  std::vector<cudaEvent_t> freeTimingEvents_;
  cudaEvent_t traceBase_ = nullptr;
  int64_t traceBaseNs_ = 0;

  /// Whether two ranks of `host` use the same GPU (collective over host).
  bool ranksShareGpus(Comm &host) const;
  /// An AllToAllV step through host memory (core's runAllToAllV).
  void exchangeOnHost(cudaStream_t st, const plan::AllToAllV &op, const StepArgs &a,
                      const std::string &where);
  std::vector<uint8_t> hostArena_; // exchangeOnHost's mirror of the arena
  bool hostExchange_ = false;      // a loaded plan has AllToAllV steps
  /// Device scratch of at least `bytes` for the kernels on the compute
  /// stream (grown between steps; growing synchronizes).
  void *workspace(size_t bytes);
  /// Device copies of the host rope tables of `op` covering `positions`.
  std::pair<const float *, const float *> ropeTable(int64_t positions, const plan::Rope &op);
  /// Copies a quantized weight's stored rows and scales to the device and
  /// expands them into `dst` as bf16.
  void uploadQuantized(const WeightSource &src, uint8_t *dst);
  /// Throws Error naming `what` when `e` is not cudaSuccess (ending a
  /// capture in progress first).
  void check(cudaError_t e, const std::string &what) const;

  // Graphs (CudaGraphs.cpp).
  static bool graphsFromEnv();
  /// Ends a capture that failed, discarding it.
  void abortCapture() const;
  /// Frees the scratch a discarded or ended capture retired.
  void freeRetired() const;
  void dropGraph(int key);
  /// Drops every graph: memory a graph reads moved or may move.
  void dropGraphs();
  /// The Experts step's own device table holding hostTable_ (for captures).
  const ExpertW *capturedExpertTable(const plan::Experts &op);
  /// Workspace reserved before a capture (a decode step's scratch is small).
  static constexpr size_t kCaptureWorkspaceBytes = size_t(32) << 20;

  int device_ = 0;
  cudaDeviceProp props_{};
  class Staging; // upload's pinned double buffer
  ThreadPool pool_;
  cudaStream_t streams_[kNumStreams] = {};
  std::vector<cudaEvent_t> events_;
  /// Per event: the weights worker's job that records it (0: recorded).
  std::vector<uint64_t> recordJob_;
  std::unique_ptr<StreamWorker> weightsWorker_;
  /// The first error of host work run on the calling thread, per stream
  /// (rethrown by synchronize).
  std::exception_ptr hostError_[kNumStreams];
  StreamWorker &weightsWorker();
  std::mutex uploadMutex_;
  size_t nextEvent_ = 0;
  std::unique_ptr<Blas> blas_;
  Comm *comm_ = nullptr;
  /// A host communicator of several ranks, staged through host memory.
  std::unique_ptr<Comm> staged_;

  void *ws_ = nullptr;
  size_t wsBytes_ = 0;
  /// The Experts step's device table of local experts (numExperts entries).
  ExpertW *expertTable_ = nullptr;
  size_t expertTableLen_ = 0;
  std::vector<ExpertW> hostTable_;
  /// Sampling: the chosen id and the RNG state on the device.
  int64_t *sampleOut_ = nullptr;
  uint64_t *rngState_ = nullptr;
  /// The routed experts' weight bytes read so far: the device's running
  /// total, its mirror in mapped host memory, and what collectStats took.
  unsigned long long *routedBytes_ = nullptr, *routedMirrorDev_ = nullptr;
  void *routedMirror_ = nullptr;
  uint64_t routedSeen_ = 0;

  RopeTableCache ropeHost_;
  /// Device mirrors of ropeHost_'s entries, with the generation they copy.
  struct DeviceRope {
    uint64_t generation = 0;
    float *cos = nullptr, *sin = nullptr;
  };
  std::unordered_map<const RopeTableCache::Entry *, DeviceRope> ropes_;
  /// expert_offsets buffer -> the number of experts of the Gate writing it.
  std::unordered_map<int32_t, int> gateExperts_;
  /// Positions the rope tables cover from their first use (the plan's).
  int64_t ropePositions_ = 0;

  bool graphsOn_ = true;
  mutable bool capturing_ = false;
  /// The capture in progress cannot be replayed (workspace() had to grow);
  /// retired_: scratch buffers it named, freed when it ends.
  mutable bool captureBroken_ = false;
  mutable std::vector<void *> retired_;
  cudaEvent_t forkJoin_[3] = {};
  std::unordered_map<int, cudaGraphExec_t> graphs_;
  /// Per Experts step: the device table its captured launches read.
  struct StepTable {
    ExpertW *dev = nullptr;
    size_t capacity = 0;
    std::vector<ExpertW> host;
  };
  std::unordered_map<const plan::Experts *, StepTable> stepTables_;
};

} // namespace moert::cuda
