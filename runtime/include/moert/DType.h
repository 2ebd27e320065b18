//===- DType.h - Element types and scalar conversions ----------*- C++ -*-===//
#pragma once

#include "moert/plan_generated.h"

#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace moert {

using DType = moe::plan::DType;

inline size_t dtypeSize(DType t) {
  switch (t) {
  case DType::F32:
  case DType::I32:
    return 4;
  case DType::BF16:
  case DType::F16:
    return 2;
  case DType::I64:
    return 8;
  }
  return 0;
}

/// The safetensors spelling of a plan dtype.
inline const char *dtypeName(DType t) {
  switch (t) {
  case DType::F32:
    return "F32";
  case DType::BF16:
    return "BF16";
  case DType::F16:
    return "F16";
  case DType::I32:
    return "I32";
  case DType::I64:
    return "I64";
  }
  return "?";
}

/// How a weight matrix [N, K] lies in memory. Packed16 (BF16 only) is the
/// operand order of the AVX512-BF16 dot product: blocks of 16 rows, and in a
/// block, per pair of columns (2j, 2j+1), one 64-byte vector whose 32-bit lane
/// r holds (W[16b+r, 2j], W[16b+r, 2j+1]). Rows past N and the column past an
/// odd K are zero. The CPU backend packs them (packBf16 in its Kernels.h).
enum class Layout : uint8_t { RowMajor, Packed16 };

inline bool isFloatWeightType(DType t) {
  return t == DType::F32 || t == DType::BF16 || t == DType::F16;
}

inline float bf16ToF32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

/// Round to nearest even; NaN stays NaN.
inline uint16_t f32ToBf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u)
    return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

inline float f16ToF32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  uint32_t u;
  if (exp == 0) {
    if (man == 0) {
      u = sign;
    } else { // subnormal: renormalize
      int e = -1;
      do {
        ++e;
        man <<= 1;
      } while (!(man & 0x400u));
      u = sign | uint32_t(127 - 15 - e) << 23 | (man & 0x3ffu) << 13;
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | man << 13;
  } else {
    u = sign | (exp + 127 - 15) << 23 | man << 13;
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

/// Round to nearest even, with overflow to infinity and subnormals.
inline uint16_t f32ToF16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  uint32_t sign = (u >> 16) & 0x8000u;
  uint32_t absu = u & 0x7fffffffu;
  if (absu > 0x7f800000u)
    return uint16_t(sign | 0x7e00u);
  if (absu >= 0x477ff000u) // rounds to >= 65520: infinity
    return uint16_t(sign | 0x7c00u);
  if (absu < 0x38800000u) { // below the smallest normal f16: subnormal/zero
    float a;
    std::memcpy(&a, &absu, 4);
    // a * 2^24 rounded to nearest even gives the subnormal mantissa.
    float scaled = a * 16777216.0f;
    uint32_t m = uint32_t(scaled);
    float frac = scaled - float(m);
    if (frac > 0.5f || (frac == 0.5f && (m & 1u)))
      ++m;
    return uint16_t(sign | m);
  }
  uint32_t mant = absu & 0x7fffffu;
  uint32_t exp = (absu >> 23) - 127 + 15;
  uint32_t h = exp << 10 | mant >> 13;
  uint32_t rest = mant & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u)))
    ++h;
  return uint16_t(sign | h);
}

/// Reads element i of a F32/BF16/F16 array as float. memcpy: the array may
/// be a checkpoint's mapped bytes, which need not be aligned (the same plain
/// load when it is).
inline float loadAsF32(const void *data, DType t, size_t i) {
  const char *p = static_cast<const char *>(data);
  switch (t) {
  case DType::F32: {
    float v;
    std::memcpy(&v, p + 4 * i, 4);
    return v;
  }
  case DType::BF16:
  case DType::F16: {
    uint16_t u;
    std::memcpy(&u, p + 2 * i, 2);
    return t == DType::BF16 ? bf16ToF32(u) : f16ToF32(u);
  }
  default:
    return 0.0f;
  }
}

inline void storeFromF32(void *data, DType t, size_t i, float v) {
  switch (t) {
  case DType::F32:
    static_cast<float *>(data)[i] = v;
    break;
  case DType::BF16:
    static_cast<uint16_t *>(data)[i] = f32ToBf16(v);
    break;
  case DType::F16:
    static_cast<uint16_t *>(data)[i] = f32ToF16(v);
    break;
  default:
    break;
  }
}

} // namespace moert
