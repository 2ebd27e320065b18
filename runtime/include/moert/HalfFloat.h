//===- HalfFloat.h - bf16 and f16 conversions -------------------*- C++ -*-===//
//
// The runtime's one definition of the bf16/f16 <-> f32 conversions, for the
// host (DType.h) and the CUDA kernels (backends/cuda/DeviceMath.h), which
// must agree bit for bit: the functions are `__host__ __device__` under nvcc
// and plain inline C++ otherwise. Includes nothing that nvcc's device pass
// or a backend without the plan schema cannot see.
//
//===----------------------------------------------------------------------===//
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define MOERT_HD __host__ __device__ __forceinline__
#else
#define MOERT_HD inline
#endif

namespace moert {

MOERT_HD float bitsToF32(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

MOERT_HD uint32_t f32ToBits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}

MOERT_HD float bf16ToF32(uint16_t h) { return bitsToF32(uint32_t(h) << 16); }

/// Round to nearest even; NaN stays NaN.
MOERT_HD uint16_t f32ToBf16(float f) {
  uint32_t u = f32ToBits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u)
    return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

MOERT_HD float f16ToF32(uint16_t h) {
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
  return bitsToF32(u);
}

/// Round to nearest even, with overflow to infinity and subnormals.
MOERT_HD uint16_t f32ToF16(float f) {
  uint32_t u = f32ToBits(f);
  uint32_t sign = (u >> 16) & 0x8000u;
  uint32_t absu = u & 0x7fffffffu;
  if (absu > 0x7f800000u)
    return uint16_t(sign | 0x7e00u);
  if (absu >= 0x477ff000u) // rounds to >= 65520: infinity
    return uint16_t(sign | 0x7c00u);
  if (absu < 0x38800000u) { // below the smallest normal f16: subnormal/zero
    // a * 2^24 rounded to nearest even gives the subnormal mantissa.
    float scaled = bitsToF32(absu) * 16777216.0f;
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

} // namespace moert
