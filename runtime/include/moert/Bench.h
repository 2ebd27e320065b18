//===- Bench.h - Resource usage for benchmarks ------------------*- C++ -*-===//
#pragma once

#include <cstdint>

namespace moert {

/// Peak resident set size of this process in bytes.
uint64_t peakRssBytes();

} // namespace moert
