//===- Weights.h - The weights a rank computes with -------------*- C++ -*-===//
//
// The weight store decides what is resident and accounts for memory; the
// backend decides how a weight lies in its memory (Backend::upload). Weights
// come from a checkpoint (mmap'd; the backend may use the mapping in place)
// or from --random-weights (moert/Random.h). The unit of residency is a
// PlanFile weight: a dense weight, or one expert's slice of an
// expert-stacked weight (a rank binds only its experts' slices).
//
// Weights the plan marks `streamed` are not loaded at start-up: load() (a
// Prefetch step, or the session before a step that needs one) brings one in
// and evict() releases it. The store keeps the plan's memory budget: resident
// weights + the session's buffers (arena and KV caches, reserved with
// reserveBuffers) stay within Plan.memory_budget; to make room it evicts the
// least recently used streamed weights that no running step holds (pin).
// load/evict may be called from the weight-streaming stream and the compute
// stream concurrently.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "moert/Backend.h"
#include "moert/Plan.h"
#include "moert/Safetensors.h"

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <functional>
#include <span>
#include <vector>

namespace moert {

class WeightStore {
public:
  /// Binds the weights that `ranks` use from a checkpoint.
  static std::unique_ptr<WeightStore> fromCheckpoint(const PlanFile &plan,
                                                     std::shared_ptr<Checkpoint> ckpt,
                                                     const std::vector<int> &ranks,
                                                     Backend &backend,
                                                     const ProgressFn &progress = {});
  /// Generates the weights that `ranks` use per Weight.init / init_std.
  static std::unique_ptr<WeightStore> random(const PlanFile &plan, uint64_t seed,
                                             const std::vector<int> &ranks, Backend &backend,
                                             const ProgressFn &progress = {});
  ~WeightStore();

  /// Every weight's view, indexed like Plan.weights (data null while a
  /// streamed weight is not resident, or when no bound rank uses it).
  const DeviceWeight *views() const { return views_.data(); }
  const DeviceWeight &view(int32_t idx) const { return views_[size_t(idx)]; }
  size_t size() const { return views_.size(); }

  bool isStreamed(int32_t idx) const { return streamed_[size_t(idx)] != nullptr; }
  bool isResident(int32_t idx) const {
    return !streamed_[size_t(idx)] || streamed_[size_t(idx)]->resident.load();
  }
  /// Makes a streamed weight resident (blocking); no-op for the others.
  void load(int32_t idx);
  void evict(int32_t idx);
  /// A pinned weight is not evicted to make room (a step is reading it).
  void pin(std::span<const int32_t> idx);
  void unpin(std::span<const int32_t> idx);
  /// Evicts unpinned streamed weights (least recently used first) while the
  /// budget is exceeded: a step that had to go over it (its own weights did
  /// not fit) leaves nothing behind.
  void trim();

  /// The order a rank's program reads the weights: uses[w] lists the steps
  /// (of `steps`) that read weight w. With it, making room evicts the
  /// weight whose next use lies farthest ahead of the cursor (the program
  /// repeats every forward call: Belady's choice for its cyclic order, where
  /// least-recently-used would evict exactly what the next layers need).
  void setSchedule(uint32_t steps, std::vector<std::vector<uint32_t>> uses);
  /// The step the session is at.
  void setCursor(uint32_t step) { cursor_.store(step, std::memory_order_relaxed); }

  /// Adds (or, negative, removes) bytes of activation buffers and KV caches
  /// to the budget's account.
  void reserveBuffers(int64_t bytes);
  /// Whether `bytes` more would fit in the budget next to what is pinned
  /// (unpinned streamed weights can be evicted to make room).
  bool fits(uint64_t bytes);
  /// Plan.memory_budget (0: none).
  uint64_t budget() const { return budget_; }

  /// Bytes of all bound weights (in their layouts; streamed or not).
  uint64_t boundBytes() const { return boundBytes_; }
  /// Weight bytes resident now / at their peak.
  uint64_t residentBytes() const { return fixedBytes_ + streamedResident_.load(); }
  uint64_t peakResidentBytes() const { return fixedBytes_ + streamedPeak_.load(); }
  /// Resident weights + reserved buffers at their peak (what the budget bounds).
  uint64_t peakTotalBytes() const { return totalPeak_.load(); }
  /// Bytes the backend holds in memory of its own (converted, packed, generated).
  uint64_t ownedBytes() const { return ownedBytes_; }
  /// Weights in Layout::Packed16.
  size_t packedCount() const;
  /// Streamed weights loaded (on demand or prefetched) and evicted so far.
  uint64_t loads() const { return loads_.load(); }
  uint64_t evictions() const { return evictions_.load(); }
  /// Time spent fetching streamed weights (on any stream).
  int64_t fetchNs() const { return fetchNs_.load(); }
  /// The memory of every resident weight (for the bandwidth probe).
  std::vector<std::span<const uint8_t>> regions() const;

private:
  struct Streamed {
    WeightSource src;
    std::shared_ptr<void> memory; // the backend's, while resident
    std::atomic<bool> resident{false};
    bool loading = false; // being uploaded by some thread (outside the lock)
    int pins = 0;
    uint64_t lastUse = 0;
  };
  WeightStore(const PlanFile &plan, Backend &backend) : plan_(&plan), backend_(&backend) {}
  /// The checkpoint tensor `w.name`, mapped in place where it can be.
  static WeightSource tensorSource(const Checkpoint &ckpt, const PlanFile &plan,
                                   const WeightInfo &w);
  /// Slice `w` (one expert) of an expert-stacked weight, per its source:
  /// a per-expert tensor or contiguous rows of a fused one are mapped in
  /// place; strided or transposed rows are gathered at load.
  static WeightSource expertSliceSource(const PlanFile &plan, const Checkpoint &ckpt,
                                        const WeightInfo &w);
  /// Fused expert tensors every use of which is gathered into backend
  /// memory at load (strided or transposed sources), each with the plan
  /// weight index past its last used slice, in that order.
  static std::vector<std::pair<size_t, const TensorInfo *>>
  gatheredSources(const PlanFile &plan, const Checkpoint &ckpt, const std::vector<bool> &used);
  /// Drops a mapped tensor's whole pages from the process.
  static void dropPages(const TensorInfo &t);
  /// Layouts, sources and the start-up upload, shared by both constructors.
  /// The upload goes in batches of about 256 MiB, in plan order;
  /// after each, `loaded(n)` says every weight below index n is in place.
  void bind(const std::vector<int> &ranks, std::vector<WeightSource> srcs,
            const ProgressFn &progress, const std::function<void(size_t)> &loaded = {});
  /// Evicts unpinned streamed weights, least recently used first, until
  /// `need` more bytes fit in the budget. Called with mutex_ held.
  void makeRoom(uint64_t need);
  void evictLocked(size_t idx);
  void notePeak();

  const PlanFile *plan_;
  Backend *backend_;
  std::shared_ptr<Checkpoint> ckpt_;
  uint64_t seed_ = 0;
  std::vector<DeviceWeight> views_;
  std::vector<std::unique_ptr<Streamed>> streamed_; // null: loaded at start-up
  std::vector<std::shared_ptr<void>> fixedMemory_; // one per upload batch
  std::mutex mutex_; // guards residency bookkeeping (not the uploads themselves)
  std::condition_variable loaded_;
  uint64_t tick_ = 0;
  uint32_t steps_ = 0;
  std::vector<std::vector<uint32_t>> uses_;
  std::atomic<uint32_t> cursor_{0};
  /// Steps from the cursor to weight i's next use (steps_ + 1: none known).
  uint64_t nextUse(size_t i) const;
  uint64_t budget_ = 0, ownedBytes_ = 0, boundBytes_ = 0, fixedBytes_ = 0;
  std::atomic<int64_t> buffers_{0};
  std::atomic<uint64_t> streamedResident_{0}, streamedPeak_{0}, totalPeak_{0};
  std::atomic<uint64_t> loads_{0}, evictions_{0};
  std::atomic<int64_t> fetchNs_{0};
};

/// The value --random-weights gives element i of tensor `name` (before
/// rounding to the tensor's dtype). Exposed for tests.
float randomWeightValue(uint64_t seed, const std::string &name, plan::Init init, float std,
                        uint64_t i);

} // namespace moert
