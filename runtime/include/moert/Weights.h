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
#include <memory>
#include <span>
#include <vector>

namespace moert {

struct WeightView {
  const void *data = nullptr; // null when no bound rank uses the weight
  DType dtype = DType::F32;
  uint64_t bytes = 0;
};

/// Called with (done, total) bytes while weights load; may be empty.
using ProgressFn = std::function<void(uint64_t, uint64_t)>;

class WeightStore {
public:
  /// Binds the weights that `ranks` use from a checkpoint.
  static std::unique_ptr<WeightStore> fromCheckpoint(const PlanFile &plan,
                                                     std::shared_ptr<Checkpoint> ckpt,
                                                     const std::vector<int> &ranks,
                                                     ThreadPool &pool,
                                                     const ProgressFn &progress = {});
  /// Generates the weights that `ranks` use per Weight.init / init_std.
  static std::unique_ptr<WeightStore> random(const PlanFile &plan, uint64_t seed,
                                             const std::vector<int> &ranks, ThreadPool &pool,
                                             const ProgressFn &progress = {});
  ~WeightStore();

  const WeightView &get(int32_t idx) const { return views_[size_t(idx)]; }
  size_t size() const { return views_.size(); }
  /// Bytes of all bound weights (mapped or owned).
  uint64_t boundBytes() const { return boundBytes_; }
  /// Bytes converted or generated into owned memory.
  uint64_t ownedBytes() const { return ownedBytes_; }
  /// The memory of every bound weight (for the bandwidth probe).
  std::vector<std::span<const uint8_t>> regions() const;

private:
  WeightStore() = default;
  void allocateOwned(uint64_t bytes);

  std::shared_ptr<Checkpoint> ckpt_;
  std::vector<WeightView> views_;
  uint8_t *owned_ = nullptr;
  uint64_t ownedBytes_ = 0, ownedCap_ = 0, boundBytes_ = 0;
};

/// The value --random-weights gives element i of tensor `name` (before
/// rounding to the tensor's dtype). Exposed for tests.
float randomWeightValue(uint64_t seed, const std::string &name, plan::Init init, float std,
                        uint64_t i);

} // namespace moert
