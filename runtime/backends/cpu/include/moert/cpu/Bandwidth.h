//===- Bandwidth.h - The CPU's memory read bandwidth probe -----*- C++ -*-===//
#pragma once

#include "moert/ThreadPool.h"

#include <cstdint>
#include <span>
#include <vector>

namespace moert {

struct BandwidthResult {
  double bestGBs = 0.0, medianGBs = 0.0;
  uint64_t bytesPerPass = 0;
  int passes = 0;
};

/// Multi-threaded streaming read of `regions` (each thread a contiguous
/// share), `passes` times; GB/s = 1e9 bytes per second.
BandwidthResult measureReadBandwidth(ThreadPool &pool,
                                     const std::vector<std::span<const uint8_t>> &regions,
                                     int passes);

/// The same on a freshly allocated buffer of `bytes` (for small models whose
/// weights fit in the caches).
BandwidthResult measureReadBandwidth(ThreadPool &pool, uint64_t bytes, int passes);

} // namespace moert
