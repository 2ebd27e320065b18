//===- Quant.cpp - Products with quantized weights, dequantized in registers ===//
//
// Weights stay as the checkpoint stores them: FP8 e4m3 with f32 block
// scales (HF integrations/finegrained_fp8.py) or MXFP4, e2m1 pairs with an
// e8m0 scale per 32 values of a row (integrations/mxfp4.py). The reference
// is HF's dequantized weight, w[n, k] = fp8[n, k] * scale[n / bn, k / bk]
// or e2m1[n, k] * 2^(scale[n, k / 32] - 127), with f32 activations and f32
// sums.
//
// Decode (few tokens) streams each row's bytes once. With the default
// MXCSR (no DAZ), 16 bytes at a time become f32 bit patterns with three
// integer steps (sign-extend to 32 bits, shift left by 20, mask): the sign
// in bit 31, exponent and mantissa in bits 20..26, i.e. the e4m3 value times
// 2^-120 exactly (e4m3 subnormals on f32 subnormals). Each token's x is
// scaled by a power of two 2^k first (its largest magnitude to 2^100), so
// that products and sums stay normal floats (subnormal results would be
// slow and inexact); the block's sum is scaled back by 2^(120 - k) and by
// the block's scale: the same roundings as summing value x x in f32. Four
// FMA chains per token. With DAZ set, and to dequantize rows (MLA's kv_b,
// the panels below), 16 bytes are widened to f16 bit patterns and
// converted with vcvtph2ps (value / 2^8, exact for every byte; two
// instructions per 32 values that cost more than the integer steps).
// Larger T and CPUs without AVX-512 dequantize 64-row panels to f32 and call
// sgemm.
//
// MXFP4 decode reads a group's 16 bytes as 16 32-bit lanes: the low nibbles
// index a 16-entry f32 table of the e2m1 values (vpermps uses the index's
// low 4 bits), the high nibbles, shifted, too. Low nibbles are the group's
// even elements and high ones its odd elements, so X is de-interleaved once
// per call to match; each group's sum is scaled by its 2^(s - 127). (The
// byte is zero-extended, so shifted right by 4 it is its high nibble.)
//
//===----------------------------------------------------------------------===//
#include "LinearKernels.h"

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <type_traits>



namespace moert::cpu {

/// f(std::integral_constant<int, T>) for T = 1, 2, 3 and 4 (T >= 4): the
/// decode kernels' token counts as template arguments.
template <class F> MOERT_INLINE static void byTokens(int64_t T, F &&f) {
  switch (T) {
  case 1:
    return f(std::integral_constant<int, 1>{});
  case 2:
    return f(std::integral_constant<int, 2>{});
  case 3:
    return f(std::integral_constant<int, 3>{});
  default:
    return f(std::integral_constant<int, 4>{});
  }
}

float fp8e4m3ToF32(uint8_t v) {
  // e4m3fn: exponent bias 7; exponent 0 holds the subnormals m/8 * 2^-6.
  // 0x7f/0xff are NaN.
  int e = (v >> 3) & 15, m = v & 7;
  float mag;
  if (e == 15 && m == 7)
    mag = __builtin_nanf("");
  else if (e == 0)
    mag = std::ldexp(float(m) / 8.0f, -6);
  else
    mag = std::ldexp(1.0f + float(m) / 8.0f, e - 7);
  return (v & 0x80) ? -mag : mag;
}

/// e2m1 (sign, 2 exponent bits with bias 1, 1 mantissa bit) as f32.
static constexpr float kE2M1[16] = {0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                                    -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

float e8m0ToF32(uint8_t s) {
  // 2^(s - 127) as HF's torch.ldexp computes it: s = 0 is 2^-127 (an f32
  // subnormal), s = 255 overflows to infinity.
  return std::ldexp(1.0f, int(s) - 127);
}

static const std::array<float, 256> &e8m0Table() {
  static const auto table = [] {
    std::array<float, 256> t{};
    for (int v = 0; v < 256; ++v)
      t[size_t(v)] = e8m0ToF32(uint8_t(v));
    return t;
  }();
  return table;
}

static float scaleAt(WRef W, int64_t K, int64_t n, int64_t k) {
  const int64_t cols = (K + W.blockCols - 1) / W.blockCols;
  if (W.format == QuantFormat::MXFP4)
    return e8m0Table()[static_cast<const uint8_t *>(W.scales)[n * cols + k / 32]];
  float s;
  std::memcpy(&s,
              static_cast<const uint8_t *>(W.scales) +
                  size_t((n / W.blockRows) * cols + k / W.blockCols) * 4,
              4);
  return s;
}

/// 16 e4m3 bytes as f32 x 2^-120 (exact; subnormal f32 for e4m3's
/// subnormals): sign-extended to 32 bits and shifted left by 20, the sign is
/// in bit 31 (and 27..30, cleared) and exponent/mantissa in bits 20..26.
MOERT_AVX512 MOERT_INLINE static __m512 fp8Tiny16(__m128i b) {
  __m512i d = _mm512_slli_epi32(_mm512_cvtepi8_epi32(b), 20);
  return _mm512_castsi512_ps(_mm512_and_si512(d, _mm512_set1_epi32(int32_t(0x87f00000u))));
}

MOERT_AVX512 static void dequantizeRowsAvx512(WRef W, int64_t K, int64_t n0, int64_t n1,
                                              float *out) {
  const auto *q = static_cast<const uint8_t *>(W.data);
  const int64_t bk = W.blockCols, cols = (K + bk - 1) / bk;
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t *row = q + n * K;
    const auto *srow = static_cast<const uint8_t *>(W.scales) + size_t((n / W.blockRows) * cols) * 4;
    float *o = out + (n - n0) * K;
    for (int64_t c = 0; c < cols; ++c) {
      float s;
      std::memcpy(&s, srow + c * 4, 4);
      const __m512 sv = _mm512_set1_ps(s * 256.0f);
      const int64_t k1 = std::min(K, (c + 1) * bk);
      for (int64_t k = c * bk; k < k1; k += 16) {
        __mmask16 m = k1 - k >= 16 ? __mmask16(0xffff) : __mmask16((1u << (k1 - k)) - 1);
        _mm512_mask_storeu_ps(o + k, m, _mm512_mul_ps(fp8x16(_mm_maskz_loadu_epi8(m, row + k)), sv));
      }
    }
  }
}

void dequantizeRows(WRef W, int64_t K, int64_t n0, int64_t n1, float *out) {
  if (W.format == QuantFormat::FP8E4M3Block && activeIsa() != Isa::Scalar)
    return dequantizeRowsAvx512(W, K, n0, n1, out);
  static const auto table = [] {
    std::array<float, 256> t{};
    for (int v = 0; v < 256; ++v)
      t[size_t(v)] = fp8e4m3ToF32(uint8_t(v));
    return t;
  }();
  const auto *q = static_cast<const uint8_t *>(W.data);
  if (W.format == QuantFormat::MXFP4) {
    // Byte j of a row holds elements 2j (low nibble) and 2j + 1.
    for (int64_t n = n0; n < n1; ++n)
      for (int64_t k = 0; k < K; k += 2) {
        uint8_t b = q[n * (K / 2) + k / 2];
        float s = scaleAt(W, K, n, k);
        out[(n - n0) * K + k] = kE2M1[b & 15] * s;
        out[(n - n0) * K + k + 1] = kE2M1[b >> 4] * s;
      }
    return;
  }
  for (int64_t n = n0; n < n1; ++n)
    for (int64_t k0 = 0; k0 < K; k0 += W.blockCols) {
      float s = scaleAt(W, K, n, k0);
      for (int64_t k = k0; k < std::min(K, k0 + W.blockCols); ++k)
        out[(n - n0) * K + k] = table[q[n * K + k]] * s;
    }
}

MOERT_AVX512 Fp8X prepareFp8X(const float *X, int64_t ldx, int64_t T, int64_t K,
                              float *scratch) {
  Fp8X r;
  r.T = T;
  if (T > 4 || (_mm_getcsr() & 0x40)) { // DAZ would read the subnormal weights as 0
    r.x = X;
    r.ldx = ldx;
    return r;
  }
  r.tiny = true;
  r.x = scratch;
  r.ldx = K;
  for (int64_t t = 0; t < T; ++t) {
    const float *x = X + t * ldx;
    __m512 mv = _mm512_setzero_ps();
    for (int64_t k = 0; k < K; k += 16) {
      __mmask16 m = K - k >= 16 ? __mmask16(0xffff) : __mmask16((1u << (K - k)) - 1);
      mv = _mm512_max_ps(mv, _mm512_abs_ps(_mm512_maskz_loadu_ps(m, x + k)));
    }
    float mx = _mm512_reduce_max_ps(mv);
    int e = 0;
    if (mx > 0.0f && std::isfinite(mx))
      std::frexp(mx, &e); // mx < 2^e
    // Largest magnitude below 2^100: sums of K products below 2^100 x 448
    // x 2^-120 x K. The clamp keeps both powers finite floats.
    int kk = std::clamp(100 - e, -7, 127);
    const __m512 up = _mm512_set1_ps(std::ldexp(1.0f, kk));
    r.unscale[t] = std::ldexp(1.0f, 120 - kk);
    float *o = scratch + t * K;
    for (int64_t k = 0; k < K; k += 16) {
      __mmask16 m = K - k >= 16 ? __mmask16(0xffff) : __mmask16((1u << (K - k)) - 1);
      _mm512_mask_storeu_ps(o + k, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + k), up));
    }
  }
  return r;
}

/// Y[t, n0:n1] (+)= X[t] W^T for T tokens, FP8 rows streamed once (T a
/// constant, so the accumulators stay in registers), the bytes read as
/// value x 2^-120 against x x 2^k: 64 bytes per step into four chains per
/// token.
template <int T>
MOERT_AVX512 static void gemvFp8Tiny(WRef W, int64_t K, int64_t n0, int64_t n1, const Fp8X &x,
                                     float *Y, int64_t ldy, bool accumulate) {
  const auto *q = static_cast<const uint8_t *>(W.data);
  const int64_t bk = W.blockCols, cols = (K + bk - 1) / bk, ldx = x.ldx;
  const float *X = x.x;
  __m512 unscale[T];
  for (int t = 0; t < T; ++t)
    unscale[t] = _mm512_set1_ps(x.unscale[t]);
  // The rows are one stream: prefetched kPrefetchDist bytes ahead, up to the
  // last row of this chunk.
  const char *pf = reinterpret_cast<const char *>(q + n0 * K) + kPrefetchDist;
  const char *pfEnd = reinterpret_cast<const char *>(q + n1 * K);
  const bool prefetch = kPrefetchDist > 0;
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t *row = q + n * K;
    const auto *srow = static_cast<const uint8_t *>(W.scales) + size_t((n / W.blockRows) * cols) * 4;
    __m512 acc[T];
    for (int t = 0; t < T; ++t)
      acc[t] = _mm512_setzero_ps();
    for (int64_t c = 0; c < cols; ++c) {
      float s;
      std::memcpy(&s, srow + c * 4, 4);
      __m512 blk[T][4];
      for (int t = 0; t < T; ++t)
        blk[t][0] = blk[t][1] = blk[t][2] = blk[t][3] = _mm512_setzero_ps();
      const int64_t k1 = std::min(K, (c + 1) * bk);
      int64_t k = c * bk;
      for (; k + 64 <= k1; k += 64) {
        if (prefetch && pf < pfEnd)
          _mm_prefetch(pf, _MM_HINT_T1);
        pf += 64;
        __m512 w[4];
        for (int i = 0; i < 4; ++i)
          w[i] = fp8Tiny16(_mm_loadu_si128(reinterpret_cast<const __m128i *>(row + k + 16 * i)));
        for (int t = 0; t < T; ++t)
          for (int i = 0; i < 4; ++i)
            blk[t][i] = _mm512_fmadd_ps(w[i], _mm512_loadu_ps(X + t * ldx + k + 16 * i), blk[t][i]);
      }
      for (int i = 0; k < k1; k += 16, i = (i + 1) & 3) {
        __mmask16 m = k1 - k >= 16 ? __mmask16(0xffff) : __mmask16((1u << (k1 - k)) - 1);
        __m512 w = fp8Tiny16(_mm_maskz_loadu_epi8(m, row + k));
        for (int t = 0; t < T; ++t)
          blk[t][i] = _mm512_fmadd_ps(w, _mm512_maskz_loadu_ps(m, X + t * ldx + k), blk[t][i]);
      }
      const __m512 sv = _mm512_set1_ps(s);
      for (int t = 0; t < T; ++t) {
        __m512 b = _mm512_add_ps(_mm512_add_ps(blk[t][0], blk[t][1]),
                                 _mm512_add_ps(blk[t][2], blk[t][3]));
        acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(b, unscale[t]), sv, acc[t]);
      }
    }
    for (int64_t t = 0; t < T; ++t) {
      float v = _mm512_reduce_add_ps(acc[t]);
      float &y = Y[t * ldy + n];
      y = accumulate ? y + v : v;
    }
  }
}

/// 32 e4m3 bytes as two f32 vectors / 2^8 (the integer steps on 32 lanes).
MOERT_AVX512 MOERT_INLINE static void fp8x32(__m256i b, __m512 &lo, __m512 &hi) {
  __m512i h = _mm512_slli_epi16(_mm512_cvtepi8_epi16(b), 7);
  h = _mm512_and_si512(h, _mm512_set1_epi16(int16_t(0xbf80)));
  lo = _mm512_cvtph_ps(_mm512_castsi512_si256(h));
  hi = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(h, 1));
}

/// The same through f16 (DAZ set): x as it is, value / 2^8 per byte.
template <int T>
MOERT_AVX512 static void gemvFp8F16(WRef W, int64_t K, int64_t n0, int64_t n1, const float *X,
                                    int64_t ldx, float *Y, int64_t ldy, bool accumulate) {
  const auto *q = static_cast<const uint8_t *>(W.data);
  const int64_t bk = W.blockCols, cols = (K + bk - 1) / bk;
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t *row = q + n * K;
    const auto *srow = static_cast<const uint8_t *>(W.scales) + size_t((n / W.blockRows) * cols) * 4;
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                     _mm512_setzero_ps()};
    for (int64_t c = 0; c < cols; ++c) {
      float s;
      std::memcpy(&s, srow + c * 4, 4);
      __m512 sv = _mm512_set1_ps(s * 256.0f);
      __m512 blk[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                       _mm512_setzero_ps()};
      const int64_t k1 = std::min(K, (c + 1) * bk);
      int64_t k = c * bk;
      for (; k + 32 <= k1; k += 32) {
        __m512 lo, hi;
        fp8x32(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(row + k)), lo, hi);
        for (int64_t t = 0; t < T; ++t) {
          blk[t] = _mm512_fmadd_ps(lo, _mm512_loadu_ps(X + t * ldx + k), blk[t]);
          blk[t] = _mm512_fmadd_ps(hi, _mm512_loadu_ps(X + t * ldx + k + 16), blk[t]);
        }
      }
      for (; k < k1; k += 16) {
        __mmask16 m = k1 - k >= 16 ? __mmask16(0xffff) : __mmask16((1u << (k1 - k)) - 1);
        __m512 w = fp8x16(_mm_maskz_loadu_epi8(m, row + k));
        for (int64_t t = 0; t < T; ++t)
          blk[t] = _mm512_fmadd_ps(w, _mm512_maskz_loadu_ps(m, X + t * ldx + k), blk[t]);
      }
      for (int64_t t = 0; t < T; ++t)
        acc[t] = _mm512_fmadd_ps(blk[t], sv, acc[t]);
    }
    for (int64_t t = 0; t < T; ++t) {
      float v = _mm512_reduce_add_ps(acc[t]);
      float &y = Y[t * ldy + n];
      y = accumulate ? y + v : v;
    }
  }
}

MOERT_AVX512 void gemvFp8Avx512(WRef W, int64_t K, int64_t n0, int64_t n1, const Fp8X &x,
                                float *Y, int64_t ldy, bool accumulate) {
  if (x.tiny) {
    return byTokens(x.T, [&](auto t) { gemvFp8Tiny<t()>(W, K, n0, n1, x, Y, ldy, accumulate); });
  }
  return byTokens(x.T, [&](auto t) {
    gemvFp8F16<t()>(W, K, n0, n1, x.x, x.ldx, Y, ldy, accumulate);
  });
}

void deinterleaveMxfp4X(const float *X, int64_t ldx, int64_t T, int64_t K, float *out) {
  for (int64_t t = 0; t < T; ++t)
    for (int64_t g = 0; g < K; g += 32)
      for (int64_t i = 0; i < 16; ++i) {
        out[t * K + g + i] = X[t * ldx + g + 2 * i];
        out[t * K + g + 16 + i] = X[t * ldx + g + 2 * i + 1];
      }
}

/// The row loop of the f32 MXFP4 kernel: Y[t, n0:n1] (+)= X[t] W^T for T
/// tokens, rows streamed once, `group(row, srow, g, acc, a)` adding group g
/// of a row (its 16 bytes at row, its e8m0 scale at srow[g]) into
/// accumulator `a` of each token. Each group's sum goes into one of two
/// accumulators per token, alternating, so consecutive groups do not wait
/// on each other's FMA latency.
template <int T, class Group>
MOERT_AVX512 MOERT_INLINE static void mxfp4Rows(const Group &group, WRef W, int64_t K, int64_t n0,
                                                int64_t n1, float *Y, int64_t ldy,
                                                bool accumulate) {
  const auto *q = static_cast<const uint8_t *>(W.data);
  const auto *sc = static_cast<const uint8_t *>(W.scales);
  const int64_t groups = K / 32;
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t *row = q + n * (K / 2), *srow = sc + n * groups;
    __m512 acc[T][2];
    for (int t = 0; t < T; ++t)
      acc[t][0] = acc[t][1] = _mm512_setzero_ps();
    int64_t g = 0;
    for (; g + 2 <= groups; g += 2) {
      group(row, srow, g, acc, 0);
      group(row, srow, g + 1, acc, 1);
    }
    if (g < groups)
      group(row, srow, g, acc, 0);
    for (int t = 0; t < T; ++t) {
      float v = _mm512_reduce_add_ps(_mm512_add_ps(acc[t][0], acc[t][1]));
      float &y = Y[t * ldy + n];
      y = accumulate ? y + v : v;
    }
  }
}

/// One MXFP4 group with f32 FMAs, Xd de-interleaved per group of 32
/// (deinterleaveMxfp4X).
template <int T> struct Mxfp4Group {
  __m512 lut; // the e2m1 values as f32
  const float *scale, *Xd;
  int64_t K;

  MOERT_AVX512 MOERT_INLINE void operator()(const uint8_t *row, const uint8_t *srow, int64_t g,
                                            __m512 (&acc)[T][2], int a) const {
    __m512i b =
        _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(row + g * 16)));
    __m512 even = _mm512_permutexvar_ps(b, lut);
    __m512 odd = _mm512_permutexvar_ps(_mm512_srli_epi32(b, 4), lut);
    __m512 sv = _mm512_set1_ps(scale[srow[g]]);
    if constexpr (T == 1) {
      // Three operations: the group's sum, scaled into the accumulator.
      __m512 blk = _mm512_mul_ps(even, _mm512_loadu_ps(Xd + g * 32));
      blk = _mm512_fmadd_ps(odd, _mm512_loadu_ps(Xd + g * 32 + 16), blk);
      acc[0][a] = _mm512_fmadd_ps(blk, sv, acc[0][a]);
    } else {
      // The weights scaled once (exact: a power of two), two FMAs a token.
      even = _mm512_mul_ps(even, sv);
      odd = _mm512_mul_ps(odd, sv);
      for (int t = 0; t < T; ++t) {
        const float *x = Xd + t * K + g * 32;
        acc[t][a] = _mm512_fmadd_ps(even, _mm512_loadu_ps(x), acc[t][a]);
        acc[t][a] = _mm512_fmadd_ps(odd, _mm512_loadu_ps(x + 16), acc[t][a]);
      }
    }
  }
};

template <int T>
MOERT_AVX512 static void gemvMxfp4T(WRef W, int64_t K, int64_t n0, int64_t n1, const float *Xd,
                                    float *Y, int64_t ldy, bool accumulate) {
  const Mxfp4Group<T> group{_mm512_loadu_ps(kE2M1), e8m0Table().data(), Xd, K};
  mxfp4Rows<T>(group, W, K, n0, n1, Y, ldy, accumulate);
}

int64_t mxfp4XStride(int64_t K) { return (K + 127) / 128 * 128; }

/// Where element e (0..31) of a group lands in its chunk's vector v and
/// word j of that group's 128-bit lane: gemvMxfp4Bf16's unpacks give the
/// low nibbles of bytes 0..7 (elements 0, 2, .., 14), of bytes 8..15
/// (16, .., 30), then the high nibbles of the same (1, .., 15; 17, .., 31).
static int64_t mxfp4Bf16Slot(int64_t e) {
  int64_t v = (e & 1) * 2 + (e & 31) / 16, j = (e % 16) / 2;
  return v * 32 + j;
}

/// x rounded to bf16, nearest even (NaN stays NaN: its mantissa keeps a bit).
static uint16_t roundToBf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  uint32_t r = (u & 0x7fffffffu) > 0x7f800000u ? (u | 0x00400000u)
                                              : u + 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(r >> 16);
}

/// 16 values rounded as roundToBf16.
MOERT_AVX512 MOERT_INLINE static __m256i roundToBf16x16(__m512 v) {
  const __m512i u = _mm512_castps_si512(v);
  __m512i r = _mm512_add_epi32(
      u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff),
                          _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1))));
  const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)),
                                                _mm512_set1_epi32(0x7f800000));
  r = _mm512_mask_or_epi32(r, nan, u, _mm512_set1_epi32(0x00400000));
  return _mm512_cvtepi32_epi16(_mm512_srli_epi32(r, 16));
}

/// 32 values of x rounded as roundToBf16, in order.
MOERT_AVX512 MOERT_INLINE static __m512i roundToBf16x32(const float *x) {
  return _mm512_inserti64x4(_mm512_castsi256_si512(roundToBf16x16(_mm512_loadu_ps(x))),
                            roundToBf16x16(_mm512_loadu_ps(x + 16)), 1);
}

/// Whole chunks of x, rounded and placed by src (toBf16Chunks).
template <int C>
MOERT_AVX512 static void permuteChunks(const float *x, int64_t whole, const uint16_t *src,
                                       uint16_t *o) {
  for (int64_t c = 0; c < whole; c += C) {
    __m512i a[C / 32];
    for (int i = 0; i < C / 32; ++i)
      a[i] = roundToBf16x32(x + c + 32 * i);
    for (int v = 0; v < C / 32; ++v) {
      const __m512i idx = _mm512_loadu_si512(src + 32 * v);
      __m512i w;
      if constexpr (C == 64) {
        w = _mm512_permutex2var_epi16(a[0], idx, a[1]);
      } else {
        // Words from elements 0..63 via a[0], a[1]; 64..127 via a[2], a[3].
        const __m512i lo = _mm512_permutex2var_epi16(a[0], idx, a[1]);
        const __m512i hi = _mm512_permutex2var_epi16(a[2], idx, a[3]);
        const __mmask32 fromHi = _mm512_cmpge_epu16_mask(idx, _mm512_set1_epi16(64));
        w = _mm512_mask_blend_epi16(fromHi, lo, hi);
      }
      _mm512_storeu_si512(o + c + 32 * v, w);
    }
  }
}

/// X [T, K] rounded to bf16 with element k of each chunk of C values at
/// word slot(k % C) of its chunk, zero-padded to rows `stride` apart. Whole
/// chunks with AVX-512 go through word permutes (C = 64: one two-source
/// vpermt2w per 32 words; C = 128: two and a blend), the rest one value at a
/// time (the scalar loop with its index arithmetic took ~2 us per 1024
/// values, per product in decode).
template <int C, class Slot>
static void toBf16Chunks(const float *X, int64_t ldx, int64_t T, int64_t K, int64_t stride,
                         Slot slot, uint16_t *out) {
  static_assert(C == 64 || C == 128);
  // src[o]: the element of a chunk at word o.
  static const auto src = [&] {
    std::array<uint16_t, C> s{};
    for (int e = 0; e < C; ++e)
      s[size_t(slot(e))] = uint16_t(e);
    return s;
  }();
  const bool avx = activeIsa() != Isa::Scalar;
  const int64_t whole = avx ? K / C * C : 0;
  for (int64_t t = 0; t < T; ++t) {
    const float *x = X + t * ldx;
    uint16_t *o = out + t * stride;
    // A partial last chunk: its missing values' zero weights meet zeros.
    std::fill(o + K / C * C, o + stride, uint16_t(0));
    if (whole)
      permuteChunks<C>(x, whole, src.data(), o);
    for (int64_t k = whole; k < K; ++k)
      o[k / C * C + slot(k % C)] = roundToBf16(x[k]);
  }
}

void toBf16Mxfp4X(const float *X, int64_t ldx, int64_t T, int64_t K, uint16_t *out) {
  // Chunk of 4 groups, then the slot of the element in it; the group picks
  // the 128-bit lane (8 words) of each vector.
  toBf16Chunks<128>(X, ldx, T, K, mxfp4XStride(K),
                    [](int64_t e) { return mxfp4Bf16Slot(e % 32) + (e / 32) * 8; }, out);
}

/// MXFP4 with AVX512-BF16, four groups (64 bytes, one per 128-bit lane) at
/// a time, with in-lane shuffles only: the low and high nibbles (and,
/// shift) look up the high and low bytes of their e2m1 value as bf16 (exact)
/// in two vpshufb tables, and byte unpacks make them words: four vectors
/// of 32 bf16, whose lane i holds 8 values of group i, in the order
/// toBf16Mxfp4X stores X. Four vdpbf16ps leave group i's sum in lane i, so
/// one FMA applies the four scales: their e8m0 bytes shifted into the f32
/// exponent (2^(s - 127); s = 0 gives the subnormal 2^-127 by an integer
/// max, s = 255 infinity, as HF). Half the instructions of a vpermw table
/// per group, and none crosses lanes (a prototype on Zen 4: 43 -> 68
/// GMAC/s from cache, enough to stream at the read bandwidth).
template <int T> struct Mxfp4ChunkBf16 {
  __m512i hiLut, loLut, nibble, scaleLane, minScale;
  const uint16_t *Xb;
  int64_t stride;

  MOERT_AVX512BF16 explicit Mxfp4ChunkBf16(const uint16_t *Xb, int64_t K)
      : Xb(Xb), stride(mxfp4XStride(K)) {
    alignas(16) uint8_t hiT[16], loT[16];
    for (int i = 0; i < 16; ++i) {
      uint32_t u;
      std::memcpy(&u, &kE2M1[i], 4);
      hiT[i] = uint8_t(u >> 24);
      loT[i] = uint8_t(u >> 16);
    }
    hiLut = _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i *>(hiT)));
    loLut = _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i *>(loT)));
    nibble = _mm512_set1_epi8(0x0f);
    // Lane i takes scale byte i into the low byte of each of its dwords.
    alignas(64) uint32_t lanes[16];
    for (int i = 0; i < 16; ++i)
      lanes[i] = 0x80808000u | uint32_t(i / 4);
    scaleLane = _mm512_load_si512(lanes);
    minScale = _mm512_set1_epi32(0x00400000); // 2^-127
  }

  /// Adds groups g .. g + nGroups - 1 (nGroups <= 4; bytes and scales at
  /// their start) to acc[t] of each token.
  MOERT_AVX512BF16 MOERT_INLINE void operator()(const uint8_t *bytes, const uint8_t *scales,
                                                int64_t g, int nGroups, __m512 *acc) const {
    __m512i b = nGroups == 4
                    ? _mm512_loadu_si512(bytes)
                    : _mm512_maskz_loadu_epi8((uint64_t(1) << (16 * nGroups)) - 1, bytes);
    __m512i lo = _mm512_and_si512(b, nibble);
    __m512i hi = _mm512_and_si512(_mm512_srli_epi16(b, 4), nibble);
    __m512i loL = _mm512_shuffle_epi8(loLut, lo), loH = _mm512_shuffle_epi8(hiLut, lo);
    __m512i hiL = _mm512_shuffle_epi8(loLut, hi), hiH = _mm512_shuffle_epi8(hiLut, hi);
    __m512i w[4] = {_mm512_unpacklo_epi8(loL, loH), _mm512_unpackhi_epi8(loL, loH),
                    _mm512_unpacklo_epi8(hiL, hiH), _mm512_unpackhi_epi8(hiL, hiH)};
    uint32_t s4 = 0;
    std::memcpy(&s4, scales, size_t(nGroups));
    __m512i s = _mm512_shuffle_epi8(_mm512_set1_epi32(int(s4)), scaleLane);
    __m512 sv = _mm512_castsi512_ps(_mm512_max_epu32(_mm512_slli_epi32(s, 23), minScale));
    for (int t = 0; t < T; ++t) {
      const uint16_t *x = Xb + t * stride + g * 32;
      __m512 sum = _mm512_setzero_ps();
      for (int v = 0; v < 4; ++v)
        sum = _mm512_dpbf16_ps(sum, (__m512bh)w[v], (__m512bh)_mm512_loadu_si512(x + 32 * v));
      acc[t] = _mm512_fmadd_ps(sum, sv, acc[t]);
    }
  }
};

/// How far ahead of the chunks the row loop asks for the weights: one row
/// stream alone leaves DRAM idle between the hardware prefetcher's requests
/// (kernel-bench, expert.gate/up at T = 1 on Zen 4: 0.055 ms without, 0.046
/// with 4 KiB, 33 of 36-39 GB/s; 1 and 2 KiB in between).
constexpr int64_t kMxfp4PrefetchBytes = 4096;

/// The row loop: two chunks of four groups per step into alternating
/// accumulators (FMA latency), a last partial chunk masked.
template <int T>
MOERT_AVX512BF16 static void gemvMxfp4Bf16T(WRef W, int64_t K, int64_t n0, int64_t n1,
                                            const uint16_t *Xb, float *Y, int64_t ldy,
                                            bool accumulate) {
  const Mxfp4ChunkBf16<T> chunk(Xb, K);
  const auto *q = static_cast<const uint8_t *>(W.data);
  const auto *sc = static_cast<const uint8_t *>(W.scales);
  const int64_t groups = K / 32;
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t *row = q + n * (K / 2), *srow = sc + n * groups;
    __m512 acc[2][T];
    for (int t = 0; t < T; ++t)
      acc[0][t] = acc[1][t] = _mm512_setzero_ps();
    int64_t g = 0;
    for (; g + 8 <= groups; g += 8) {
      const uint8_t *ahead = row + g * 16 + kMxfp4PrefetchBytes;
      _mm_prefetch(reinterpret_cast<const char *>(ahead), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char *>(ahead + 64), _MM_HINT_T0);
      chunk(row + g * 16, srow + g, g, 4, acc[0]);
      chunk(row + g * 16 + 64, srow + g + 4, g + 4, 4, acc[1]);
    }
    for (; g < groups; g += 4)
      chunk(row + g * 16, srow + g, g, int(std::min<int64_t>(4, groups - g)), acc[0]);
    for (int t = 0; t < T; ++t) {
      float v = _mm512_reduce_add_ps(_mm512_add_ps(acc[0][t], acc[1][t]));
      float &y = Y[t * ldy + n];
      y = accumulate ? y + v : v;
    }
  }
}

MOERT_AVX512BF16 void gemvMxfp4Bf16(WRef W, int64_t K, int64_t n0, int64_t n1,
                                    const uint16_t *Xb, int64_t T, float *Y, int64_t ldy,
                                    bool accumulate) {
  return byTokens(T, [&](auto t) { gemvMxfp4Bf16T<t()>(W, K, n0, n1, Xb, Y, ldy, accumulate); });
}

MOERT_AVX512 void gemvMxfp4Avx512(WRef W, int64_t K, int64_t n0, int64_t n1, const float *Xd,
                                  int64_t T, float *Y, int64_t ldy, bool accumulate) {
  return byTokens(T, [&](auto t) { gemvMxfp4T<t()>(W, K, n0, n1, Xd, Y, ldy, accumulate); });
}

//===----------------------------------------------------------------------===//
// FP8 with AVX512-BF16 dot products
//===----------------------------------------------------------------------===//

#define MOERT_AVX512BF16_VBMI                                                                    \
  __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma,f16c,avx512bf16,avx512vbmi")))

bool fp8Bf16Supported(WRef W) {
  static const bool vbmi = __builtin_cpu_supports("avx512vbmi");
  return vbmi && activeIsa() == Isa::Avx512Bf16 && W.format == QuantFormat::FP8E4M3Block &&
         W.blockCols % 64 == 0;
}

int64_t fp8XStride(int64_t K) { return (K + 63) / 64 * 64; }

void toBf16Fp8X(const float *X, int64_t ldx, int64_t T, int64_t K, uint16_t *out) {
  // gemvFp8Bf16's order: in each 64-value chunk, 128-bit lane L holds values
  // 16L .. 16L + 15; the low-byte unpack takes 8 of them into vector 0, the
  // high one the other 8 into vector 1.
  toBf16Chunks<64>(X, ldx, T, K, fp8XStride(K),
                   [](int64_t e) { return (e % 16) / 8 * 32 + e / 16 * 8 + e % 8; }, out);
}

/// Y[t, n0:n1] (+)= X[t] W^T for T tokens of FP8 W whose scale blocks are
/// 64-column multiples: 64 bytes at a time, each e4m3 byte's magnitude
/// looks up its value's bf16 high and low bytes in two 128-entry vpermi2b
/// tables (exact: every e4m3 value is a normal bf16, the subnormals too),
/// the sign ORed in, byte unpacks make 2 x 32 words for two vdpbf16ps
/// against X in the matching order (toBf16Fp8X), and each block's sum is
/// scaled once. 8 instructions per 64 values where the f32 path takes 16.
template <int T>
MOERT_AVX512BF16_VBMI static void gemvFp8Bf16T(WRef W, int64_t K, int64_t n0, int64_t n1,
                                               const uint16_t *Xb, float *Y, int64_t ldy,
                                               bool accumulate) {
  // Built once: a call covers only a block of rows.
  struct Tables {
    alignas(64) uint8_t hi[128], lo[128];
  };
  static const Tables tables = [] {
    Tables t;
    for (int m = 0; m < 128; ++m) {
      float f = fp8e4m3ToF32(uint8_t(m));
      uint32_t u;
      std::memcpy(&u, &f, 4);
      u = m == 0x7f ? 0x7fc00000u : u; // NaN
      t.hi[m] = uint8_t(u >> 24);
      t.lo[m] = uint8_t(u >> 16);
    }
    return t;
  }();
  const __m512i hiA = _mm512_load_si512(tables.hi), hiB = _mm512_load_si512(tables.hi + 64);
  const __m512i loA = _mm512_load_si512(tables.lo), loB = _mm512_load_si512(tables.lo + 64);
  const __m512i sign = _mm512_set1_epi8(int8_t(0x80));
  const auto *q = static_cast<const uint8_t *>(W.data);
  const int64_t bk = W.blockCols, cols = (K + bk - 1) / bk, stride = fp8XStride(K);
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t *row = q + n * K;
    const auto *srow = static_cast<const uint8_t *>(W.scales) + (n / W.blockRows) * cols * 4;
    __m512 acc[T];
    for (int t = 0; t < T; ++t)
      acc[t] = _mm512_setzero_ps();
    for (int64_t c = 0; c < cols; ++c) {
      __m512 blk[T][2];
      for (int t = 0; t < T; ++t)
        blk[t][0] = blk[t][1] = _mm512_setzero_ps();
      const int64_t k1 = std::min(K, (c + 1) * bk);
      for (int64_t k = c * bk; k < k1; k += 64) {
        _mm_prefetch(reinterpret_cast<const char *>(row + k) + kPrefetchDist, _MM_HINT_T0);
        __m512i b = k1 - k >= 64 ? _mm512_loadu_si512(row + k)
                                 : _mm512_maskz_loadu_epi8(~uint64_t(0) >> (64 - (k1 - k)),
                                                           row + k);
        __m512i hi = _mm512_permutex2var_epi8(hiA, b, hiB);
        __m512i lo = _mm512_permutex2var_epi8(loA, b, loB);
        hi = _mm512_ternarylogic_epi32(hi, b, sign, 0xF8); // hi | (b & 0x80)
        __m512i w0 = _mm512_unpacklo_epi8(lo, hi), w1 = _mm512_unpackhi_epi8(lo, hi);
        for (int t = 0; t < T; ++t) {
          const uint16_t *x = Xb + t * stride + k;
          blk[t][0] = _mm512_dpbf16_ps(blk[t][0], (__m512bh)w0,
                                       (__m512bh)_mm512_loadu_si512(x));
          blk[t][1] = _mm512_dpbf16_ps(blk[t][1], (__m512bh)w1,
                                       (__m512bh)_mm512_loadu_si512(x + 32));
        }
      }
      float scale; // f32 scales need not be aligned in a mapped checkpoint
      std::memcpy(&scale, srow + c * 4, 4);
      const __m512 sv = _mm512_set1_ps(scale);
      for (int t = 0; t < T; ++t)
        acc[t] = _mm512_fmadd_ps(_mm512_add_ps(blk[t][0], blk[t][1]), sv, acc[t]);
    }
    for (int t = 0; t < T; ++t) {
      float v = _mm512_reduce_add_ps(acc[t]);
      float &y = Y[t * ldy + n];
      y = accumulate ? y + v : v;
    }
  }
}

MOERT_AVX512BF16_VBMI void gemvFp8Bf16(WRef W, int64_t K, int64_t n0, int64_t n1,
                                       const uint16_t *Xb, int64_t T, float *Y, int64_t ldy,
                                       bool accumulate) {
  return byTokens(T, [&](auto t) { gemvFp8Bf16T<t()>(W, K, n0, n1, Xb, Y, ldy, accumulate); });
}
#undef MOERT_AVX512BF16_VBMI

} // namespace moert::cpu
