//===- CpuBackend.h - The CPU backend ---------------------------*- C++ -*-===//
//
// Device memory is host memory. The compute stream runs on the calling
// thread (its kernels spread over the thread pool, so a second compute
// worker would only add a hand-off per step); the communication and weight
// streaming streams are worker threads with in-order queues, so a collective
// or a weight load runs beside the compute that does not wait for it.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "moert/Backend.h"
#include "moert/RopeTables.h"
#include "moert/StreamWorker.h"
#include "moert/ThreadPool.h"
#include "moert/cpu/Kernels.h"

namespace moert::cpu {

class CpuBackend final : public Backend {
public:
  explicit CpuBackend(const BackendOptions &opts);
  ~CpuBackend() override;

  const char *name() const override { return "cpu"; }
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
  void touch(const DeviceWeight &w) override;

  std::vector<unsigned> groupSteps(const PlanFile &plan, int rank) override;
  void launch(StreamKind s, const plan::Step &step, const StepArgs &args) override;
  void launchGroup(StreamKind s, const plan::RankProgram &prog, unsigned begin, unsigned end,
                   const StepArgs &args) override;
  void bindComm(Comm &comm) override { comm_ = &comm; }
  void enqueueHost(StreamKind s, std::function<void()> fn) override;
  void routeTopK(const float *x, int64_t ldx, int64_t rows, const DeviceWeight &router,
                 const DeviceWeight *bias, int64_t H, const ExpertSelection &sel,
                 std::vector<int32_t> &experts) override;
  int64_t sample(const float *logits, int64_t vocab, const SamplingParams &p) override;

  EventId record(StreamKind s) override;
  void waitEvent(StreamKind s, EventId e) override;
  void synchronize(StreamKind s) override;
  void resetEvents() override;
  bool synchronousCompute() const override { return true; }
  bool supportsBatchedSteps() const override { return true; }

  std::pair<double, double> readBandwidth(std::span<const std::span<const uint8_t>> regions,
                                          uint64_t bytes, int passes) override;
  std::string isa() const override { return isaName(activeIsa()); }
  void fillNormal(uint64_t key, float scale, uint64_t b, uint64_t e, float *f32,
                  uint16_t *bf16) override;

  /// Runs one step now on the calling thread (the stream workers call it).
  void runStep(const plan::Step &step, const StepArgs &args);

private:
  StreamWorker *worker(StreamKind s);
  void runExperts(const plan::Step &s, const plan::Experts &op, const StepArgs &a);
  void runGroup(const plan::RankProgram &prog, unsigned begin, unsigned end, const StepArgs &a);

  ThreadPool pool_;
  Workspace ws_;
  bool pack_;
  Comm *comm_ = nullptr;
  std::unique_ptr<StreamWorker> workers_[kNumStreams];
  /// Events: (stream, ticket); the compute stream's are complete when recorded.
  std::vector<std::pair<StreamKind, uint64_t>> events_;
  RopeTableCache ropes_;
};

} // namespace moert::cpu
