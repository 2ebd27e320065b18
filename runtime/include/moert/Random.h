//===- Random.h - The --random-weights generator ----------------*- C++ -*-===//
//
// A counter-based generator keyed by (seed, tensor name), so values do not
// depend on the thread count, the backend or which rank generates them.
// Approximately normal with exact mean 0 and variance 1: the sum of four
// independent 16-bit uniforms (Irwin-Hall, tails cut at 3.5 sigma), cheap to
// vectorize. The value is (float(sum) - 131070) * scale in float arithmetic
// (the sum is exact in float), so vectorized backends agree bit for bit.
//
//===----------------------------------------------------------------------===//
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

namespace moert {

inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

inline uint64_t tensorKey(uint64_t seed, const std::string &name) {
  uint64_t h = 0xcbf29ce484222325ull; // FNV-1a
  for (unsigned char c : name)
    h = (h ^ c) * 0x100000001b3ull;
  return splitmix64(seed ^ splitmix64(h));
}

inline constexpr uint64_t kIrwinIndexMul = 0xd1342543de82ef95ull;
inline constexpr float kIrwinMean = 131070.0f;

inline uint32_t irwinSum(uint64_t key, uint64_t i) {
  uint64_t h = splitmix64(key + i * kIrwinIndexMul);
  return uint32_t(h & 0xffff) + uint32_t((h >> 16) & 0xffff) + uint32_t((h >> 32) & 0xffff) +
         uint32_t(h >> 48);
}

/// The factor turning an Irwin-Hall sum into a value of standard deviation std.
inline float irwinScale(float std) {
  return float(double(std) / std::sqrt(4 * (65536.0 * 65536.0 - 1) / 12.0));
}

inline float irwinValue(uint64_t key, float scale, uint64_t i) {
  return (float(irwinSum(key, i)) - kIrwinMean) * scale;
}

} // namespace moert
