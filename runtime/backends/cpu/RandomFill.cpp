//===- RandomFill.cpp - The --random-weights generator, vectorized --------===//
#include "CpuBackend.h"

#include "moert/Random.h"

#include <immintrin.h>

namespace moert::cpu {

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#ifndef __clang__ // clang has no such group
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
/// Elements [b, e) of a normal tensor as f32 (f32 != null) or bf16, element
/// i at [i - b], 8 lanes at a time: splitmix64 in 64-bit lanes (vpmullq), the
/// four 16-bit fields summed, converted and scaled like moert::irwinValue.
__attribute__((target("avx512f,avx512dq,avx512vl,avx512bw"))) static void
fillNormalAvx512(uint64_t key, float scale, uint64_t b, uint64_t e, float *f32, uint16_t *bf16) {
  const __m512i lane = _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0);
  const __m512i mulIdx = _mm512_set1_epi64(int64_t(kIrwinIndexMul));
  const __m512i golden = _mm512_set1_epi64(int64_t(0x9e3779b97f4a7c15ull));
  const __m512i m1 = _mm512_set1_epi64(int64_t(0xbf58476d1ce4e5b9ull));
  const __m512i m2 = _mm512_set1_epi64(int64_t(0x94d049bb133111ebull));
  const __m512i mask16 = _mm512_set1_epi64(0xffff);
  const __m256 mean = _mm256_set1_ps(kIrwinMean), sc = _mm256_set1_ps(scale);
  uint64_t i = b;
  for (; i + 8 <= e; i += 8) {
    __m512i idx = _mm512_add_epi64(_mm512_set1_epi64(int64_t(i)), lane);
    __m512i x = _mm512_add_epi64(_mm512_set1_epi64(int64_t(key)), _mm512_mullo_epi64(idx, mulIdx));
    x = _mm512_add_epi64(x, golden);
    x = _mm512_mullo_epi64(_mm512_xor_si512(x, _mm512_srli_epi64(x, 30)), m1);
    x = _mm512_mullo_epi64(_mm512_xor_si512(x, _mm512_srli_epi64(x, 27)), m2);
    x = _mm512_xor_si512(x, _mm512_srli_epi64(x, 31));
    __m512i sum = _mm512_add_epi64(
        _mm512_add_epi64(_mm512_and_si512(x, mask16),
                         _mm512_and_si512(_mm512_srli_epi64(x, 16), mask16)),
        _mm512_add_epi64(_mm512_and_si512(_mm512_srli_epi64(x, 32), mask16),
                         _mm512_srli_epi64(x, 48)));
    __m256 v = _mm256_mul_ps(_mm256_sub_ps(_mm512_cvtepi64_ps(sum), mean), sc);
    if (f32) {
      _mm256_storeu_ps(f32 + (i - b), v);
    } else { // round to nearest even (no NaN can occur)
      __m256i u = _mm256_castps_si256(v);
      __m256i r = _mm256_add_epi32(
          u, _mm256_add_epi32(_mm256_set1_epi32(0x7fff),
                              _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1))));
      __m128i packed = _mm256_cvtepi32_epi16(_mm256_srli_epi32(r, 16));
      _mm_storeu_si128(reinterpret_cast<__m128i *>(bf16 + (i - b)), packed);
    }
  }
  for (; i < e; ++i) {
    float v = irwinValue(key, scale, i);
    if (f32)
      f32[i - b] = v;
    else
      bf16[i - b] = f32ToBf16(v);
  }
}
#pragma GCC diagnostic pop

static bool haveAvx512Generator() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") &&
         activeIsa() != Isa::Scalar;
}

void CpuBackend::fillNormal(uint64_t key, float scale, uint64_t b, uint64_t e, float *f32,
                            uint16_t *bf16) {
  static const bool avx = haveAvx512Generator();
  if (avx)
    fillNormalAvx512(key, scale, b, e, f32, bf16);
  else
    Backend::fillNormal(key, scale, b, e, f32, bf16);
}

} // namespace moert::cpu
