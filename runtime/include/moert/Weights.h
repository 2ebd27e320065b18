//===- Weights.h - The weights a rank computes with -------------*- C++ -*-===//
//
// Weights come from a checkpoint (mmap'd; used in place when the stored dtype
// is the plan's dtype, converted once into owned memory otherwise) or from
// --random-weights (a counter-based generator keyed by (seed, tensor name), so
// values do not depend on the thread count or on which rank generates them).
//
//===----------------------------------------------------------------------===//
#pragma once

#include "moert/Plan.h"
#include "moert/Safetensors.h"
#include "moert/ThreadPool.h"

#include <functional>
#include <atomic>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

namespace moert {

struct WeightView {
  const void *data = nullptr; // null when no bound rank uses the weight
  DType dtype = DType::F32;
  uint64_t bytes = 0;
  Layout layout = Layout::RowMajor;
};

struct WeightOptions {
  /// Store BF16 matrices that the plan only multiplies (W of X W^T) in
  /// Layout::Packed16 when the CPU kernels are AVX-512 ones (and the
  /// environment does not say MOERT_PACK=0): an owned copy instead of the
  /// checkpoint's mapping, made once at load.
  bool packMatrices = true;
};

/// Called with (done, total) bytes while weights load; may be empty.
using ProgressFn = std::function<void(uint64_t, uint64_t)>;

/// Weights of a rank. Weights the plan marks `streamed` are not loaded at
/// start-up: load() (a Prefetch step, or acquire() on first use) brings one
/// in and evict() releases it — a mapped tensor's pages are dropped from the
/// process (MADV_DONTNEED), converted or generated ones are freed — so the
/// resident bytes follow the plan's memory budget. load/evict/acquire may be
/// called from the streaming thread and the compute thread concurrently.
class WeightStore {
public:
  /// Binds the weights that `ranks` use from a checkpoint.
  static std::unique_ptr<WeightStore> fromCheckpoint(const PlanFile &plan,
                                                     std::shared_ptr<Checkpoint> ckpt,
                                                     const std::vector<int> &ranks,
                                                     ThreadPool &pool,
                                                     const ProgressFn &progress = {},
                                                     WeightOptions opts = {});
  /// Generates the weights that `ranks` use per Weight.init / init_std.
  static std::unique_ptr<WeightStore> random(const PlanFile &plan, uint64_t seed,
                                             const std::vector<int> &ranks, ThreadPool &pool,
                                             const ProgressFn &progress = {},
                                             WeightOptions opts = {});
  ~WeightStore();

  /// The weight, resident (a streamed weight is loaded now if it is not).
  WeightView acquire(int32_t idx) {
    if (!streamed_[size_t(idx)] || streamed_[size_t(idx)]->resident.load(std::memory_order_acquire))
      return views_[size_t(idx)];
    return loadAndGet(idx);
  }
  void load(int32_t idx) { (void)acquire(idx); }
  void evict(int32_t idx);
  bool isStreamed(int32_t idx) const { return streamed_[size_t(idx)] != nullptr; }
  bool isResident(int32_t idx) const {
    return !streamed_[size_t(idx)] || streamed_[size_t(idx)]->resident.load();
  }

  size_t size() const { return views_.size(); }
  /// Bytes of all bound weights (mapped or owned, streamed or not).
  uint64_t boundBytes() const { return boundBytes_; }
  /// Bytes resident now: the non-streamed weights plus the loaded streamed ones.
  uint64_t residentBytes() const { return fixedBytes_ + streamedResident_.load(); }
  uint64_t peakResidentBytes() const { return fixedBytes_ + streamedPeak_.load(); }
  /// Bytes converted or generated into owned memory at start-up.
  uint64_t ownedBytes() const { return ownedBytes_; }
  /// Weights stored in Layout::Packed16.
  size_t packedCount() const;
  /// The memory of every resident weight (for the bandwidth probe).
  std::vector<std::span<const uint8_t>> regions() const;

private:
  /// Where a streamed weight comes from and whether it is in memory.
  struct Streamed {
    const TensorInfo *src = nullptr; // checkpoint tensor, or null for random
    uint64_t key = 0;                // random: the tensor's generator key
    void *mem = nullptr;             // owned memory while resident
    bool mapped = false;             // mem came from mmap (large tensors)
    std::atomic<bool> resident{false};
  };
  WeightStore() = default;
  /// Which weights to pack (views_' layout and bytes); the rest stay row-major.
  void choosePacked(const PlanFile &plan, WeightOptions opts);
  /// Lays the given weights out in one owned mapping and points their views at it.
  void placeOwned(const std::vector<size_t> &which);
  WeightView loadAndGet(int32_t idx);

  const PlanFile *plan_ = nullptr;
  std::shared_ptr<Checkpoint> ckpt_;
  std::vector<WeightView> views_;
  std::vector<std::unique_ptr<Streamed>> streamed_; // null: loaded at start-up
  std::mutex mutex_;                                // serializes load/evict
  bool avx512_ = false;
  uint8_t *owned_ = nullptr;
  uint64_t ownedBytes_ = 0, ownedCap_ = 0, boundBytes_ = 0, fixedBytes_ = 0;
  std::atomic<uint64_t> streamedResident_{0}, streamedPeak_{0};
};

/// The value --random-weights gives element i of tensor `name` (before
/// rounding to the tensor's dtype). Exposed for tests.
float randomWeightValue(uint64_t seed, const std::string &name, plan::Init init, float std,
                        uint64_t i);

} // namespace moert
