//===- DType.h - Element types and scalar conversions ----------*- C++ -*-===//
#pragma once

#include "moert/HalfFloat.h"
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
