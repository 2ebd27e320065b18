//===- VecMath.h - Vector math for the AVX-512 kernels ----------*- C++ -*-===//
//
// Internal to the CPU backend, where glibc's libmvec exists
// (MOERT_HAVE_MVEC); callers must be running on an AVX-512 CPU.
//
//===----------------------------------------------------------------------===//
#pragma once

#include <immintrin.h>

namespace moert::cpu {

/// out[0..8) = exp(in[0..8)) by libmvec (within 4 ulp of double; in and out
/// may alias). VecMath.cpp.
void exp8(const double *in, double *out);

/// exp of 8 doubles in a vector, through exp8.
__attribute__((target("avx512f"), always_inline)) inline __m512d exp8(__m512d x) {
  alignas(64) double b[8];
  _mm512_store_pd(b, x);
  exp8(b, b);
  return _mm512_load_pd(b);
}

} // namespace moert::cpu
