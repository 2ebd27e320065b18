//===- RowMajor.cpp - Products with row-major weights on AVX-512 ----------===//
//
// Decode rows (each weight row streamed once for up to 4 tokens, BF16/F16
// converted in registers), prefill 4x4 register tiles (exact f32 FMAs or
// AVX512-BF16 dot products) and the dot-product rows kernel for 2..8 tokens.
//
//===----------------------------------------------------------------------===//
// GCC 12 reports its own _mm512_undefined_* placeholders inside the
// intrinsics headers as uninitialized (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wuninitialized"
#ifndef __clang__ // clang has no such group
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "LinearKernels.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <immintrin.h>
#include <string_view>
#include <utility>

namespace moert::cpu {

//===----------------------------------------------------------------------===//
// AVX-512 helpers
//===----------------------------------------------------------------------===//

/// Sums each of 16 vectors: lane i of the result = sum of a[i].
MOERT_AVX512 MOERT_INLINE static __m512 reduce16(const __m512 *a) {
  __m512 t[8], u[4];
  for (int i = 0; i < 8; ++i)
    t[i] = _mm512_add_ps(_mm512_unpacklo_ps(a[2 * i], a[2 * i + 1]),
                         _mm512_unpackhi_ps(a[2 * i], a[2 * i + 1]));
  for (int i = 0; i < 4; ++i)
    u[i] = _mm512_add_ps(_mm512_shuffle_ps(t[2 * i], t[2 * i + 1], 0x44),
                         _mm512_shuffle_ps(t[2 * i], t[2 * i + 1], 0xEE));
  __m512 v0 = _mm512_add_ps(_mm512_shuffle_f32x4(u[0], u[1], 0x44),
                            _mm512_shuffle_f32x4(u[0], u[1], 0xEE));
  __m512 v1 = _mm512_add_ps(_mm512_shuffle_f32x4(u[2], u[3], 0x44),
                            _mm512_shuffle_f32x4(u[2], u[3], 0xEE));
  return _mm512_add_ps(_mm512_shuffle_f32x4(v0, v1, 0x88), _mm512_shuffle_f32x4(v0, v1, 0xDD));
}

/// Loads 32 weights at w (elements [k, k+32) of a row) as two f32 vectors.
/// BF16 gives (even, odd) elements, F16 and F32 give (first 16, last 16).
/// `rem` < 32 loads only that many elements (the row's tail), zeros after.
template <DType WT> struct Load32;

template <> struct Load32<DType::BF16> {
  MOERT_AVX512 MOERT_INLINE static void load(const void *w, int64_t k, __m512 &a, __m512 &b) {
    __m512i v = _mm512_loadu_si512(static_cast<const uint16_t *>(w) + k);
    a = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
    b = _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(int(0xffff0000u))));
  }
  MOERT_AVX512 MOERT_INLINE static void loadTail(const void *w, int64_t k, int64_t rem, __m512 &a,
                                                 __m512 &b) {
    __mmask32 m = _cvtu32_mask32(uint32_t((uint64_t(1) << rem) - 1));
    __m512i v = _mm512_maskz_loadu_epi16(m, static_cast<const uint16_t *>(w) + k);
    a = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
    b = _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(int(0xffff0000u))));
  }
};

template <> struct Load32<DType::F16> {
  MOERT_AVX512 MOERT_INLINE static void load(const void *w, int64_t k, __m512 &a, __m512 &b) {
    __m512i v = _mm512_loadu_si512(static_cast<const uint16_t *>(w) + k);
    a = _mm512_cvtph_ps(_mm512_castsi512_si256(v));
    b = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(v, 1));
  }
  MOERT_AVX512 MOERT_INLINE static void loadTail(const void *w, int64_t k, int64_t rem, __m512 &a,
                                                 __m512 &b) {
    __mmask32 m = _cvtu32_mask32(uint32_t((uint64_t(1) << rem) - 1));
    __m512i v = _mm512_maskz_loadu_epi16(m, static_cast<const uint16_t *>(w) + k);
    a = _mm512_cvtph_ps(_mm512_castsi512_si256(v));
    b = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(v, 1));
  }
};

template <> struct Load32<DType::F32> {
  MOERT_AVX512 MOERT_INLINE static void load(const void *w, int64_t k, __m512 &a, __m512 &b) {
    const float *p = static_cast<const float *>(w) + k;
    a = _mm512_loadu_ps(p);
    b = _mm512_loadu_ps(p + 16);
  }
  MOERT_AVX512 MOERT_INLINE static void loadTail(const void *w, int64_t k, int64_t rem, __m512 &a,
                                                 __m512 &b) {
    const float *p = static_cast<const float *>(w) + k;
    uint32_t bits = uint32_t((uint64_t(1) << rem) - 1);
    a = _mm512_maskz_loadu_ps(__mmask16(bits & 0xffff), p);
    b = _mm512_maskz_loadu_ps(__mmask16(bits >> 16), p + 16);
  }
};

/// Arranges X [T, K] as f32 rows of Kp = roundUp(K, 32) (zero padded) in the
/// element order Load32<WT> produces: BF16 de-interleaves each 32-block into
/// its 16 even then 16 odd elements.
void packRowsF32(const float *X, int64_t ldx, int64_t T, int64_t K, DType wt, float *out) {
  int64_t Kp = roundUp(K, 32);
  for (int64_t t = 0; t < T; ++t) {
    const float *x = X + t * ldx;
    float *o = out + t * Kp;
    std::memset(o, 0, size_t(Kp) * 4);
    if (wt != DType::BF16) {
      std::memcpy(o, x, size_t(K) * 4);
      continue;
    }
    for (int64_t k = 0; k < K; ++k) {
      int64_t blk = k & ~int64_t(31), j = k & 31;
      o[blk + (j & 1) * 16 + (j >> 1)] = x[k];
    }
  }
}

//===----------------------------------------------------------------------===//
// Decode: rows streamed once for TT <= 4 tokens
//===----------------------------------------------------------------------===//

template <DType WT, int TT>
MOERT_AVX512 static void gemvRowsAvx512(const void *W, int64_t K, int64_t n0, int64_t n1,
                                        const float *Xp, float *Y, int64_t ldy, bool acc) {
  const int64_t es = int64_t(dtypeSize(WT));
  const int64_t Kp = roundUp(K, 32), Kfull = K / 32 * 32, rem = K - Kfull;
  const uint8_t *base = static_cast<const uint8_t *>(W);
  alignas(64) float out[TT][16];
  for (int64_t g = n0; g < n1; g += 16) {
    int64_t gn = std::min<int64_t>(16, n1 - g);
    __m512 sums[TT][16];
    for (int64_t r = 0; r < gn; ++r) {
      const void *w = base + (g + r) * K * es;
      __m512 a[TT][2];
      for (int t = 0; t < TT; ++t)
        a[t][0] = a[t][1] = _mm512_setzero_ps();
      int64_t k = 0;
      if constexpr (TT == 1) {
        // Two blocks per iteration: four independent FMA chains.
        __m512 c0 = _mm512_setzero_ps(), c1 = _mm512_setzero_ps();
        for (; k + 64 <= Kfull; k += 64) {
          __m512 w0, w1, w2, w3;
          Load32<WT>::load(w, k, w0, w1);
          Load32<WT>::load(w, k + 32, w2, w3);
          a[0][0] = _mm512_fmadd_ps(w0, _mm512_load_ps(Xp + k), a[0][0]);
          a[0][1] = _mm512_fmadd_ps(w1, _mm512_load_ps(Xp + k + 16), a[0][1]);
          c0 = _mm512_fmadd_ps(w2, _mm512_load_ps(Xp + k + 32), c0);
          c1 = _mm512_fmadd_ps(w3, _mm512_load_ps(Xp + k + 48), c1);
        }
        a[0][0] = _mm512_add_ps(a[0][0], c0);
        a[0][1] = _mm512_add_ps(a[0][1], c1);
      }
      for (; k < Kfull; k += 32) {
        __m512 w0, w1;
        Load32<WT>::load(w, k, w0, w1);
        for (int t = 0; t < TT; ++t) {
          a[t][0] = _mm512_fmadd_ps(w0, _mm512_load_ps(Xp + t * Kp + k), a[t][0]);
          a[t][1] = _mm512_fmadd_ps(w1, _mm512_load_ps(Xp + t * Kp + k + 16), a[t][1]);
        }
      }
      if (rem) {
        __m512 w0, w1;
        Load32<WT>::loadTail(w, k, rem, w0, w1);
        for (int t = 0; t < TT; ++t) {
          a[t][0] = _mm512_fmadd_ps(w0, _mm512_load_ps(Xp + t * Kp + k), a[t][0]);
          a[t][1] = _mm512_fmadd_ps(w1, _mm512_load_ps(Xp + t * Kp + k + 16), a[t][1]);
        }
      }
      for (int t = 0; t < TT; ++t)
        sums[t][r] = _mm512_add_ps(a[t][0], a[t][1]);
    }
    for (int64_t r = gn; r < 16; ++r)
      for (int t = 0; t < TT; ++t)
        sums[t][r] = _mm512_setzero_ps();
    for (int t = 0; t < TT; ++t) {
      _mm512_store_ps(out[t], reduce16(sums[t]));
      float *y = Y + t * ldy + g;
      for (int64_t r = 0; r < gn; ++r)
        y[r] = acc ? y[r] + out[t][r] : out[t][r];
    }
  }
}

template <DType WT> static GemvFn gemvForT(int64_t T) {
  switch (T) {
  case 1:
    return gemvRowsAvx512<WT, 1>;
  case 2:
    return gemvRowsAvx512<WT, 2>;
  case 3:
    return gemvRowsAvx512<WT, 3>;
  default:
    return gemvRowsAvx512<WT, 4>;
  }
}

void gemvRowsScalar(WRef W, int64_t K, int64_t n0, int64_t n1, const float *X, int64_t ldx,
                           int64_t T, float *Y, int64_t ldy, bool acc) {
  for (int64_t n = n0; n < n1; ++n)
    for (int64_t t = 0; t < T; ++t) {
      const float *x = X + t * ldx;
      float s = 0.0f;
      if (W.dtype == DType::F32) {
        const float *w = static_cast<const float *>(W.data) + n * K;
        for (int64_t k = 0; k < K; ++k)
          s += w[k] * x[k];
      } else {
        for (int64_t k = 0; k < K; ++k)
          s += weightAt(W, K, n, k) * x[k];
      }
      float &y = Y[t * ldy + n];
      y = acc ? y + s : s;
    }
}

//===----------------------------------------------------------------------===//
// Prefill: 4x4 register tiles
//===----------------------------------------------------------------------===//

// Tiles read X from a packed layout [K/32][Tp][32] (one 64-byte line per token
// and k-block) so a tile's loads come from one pointer with small offsets.

/// Packs X into [Kp/32][Tp][32] bf16 (round to nearest even).
MOERT_AVX512BF16 void packXBf16(const float *X, int64_t ldx, int64_t T, int64_t K,
                                       int64_t Tp, uint16_t *out) {
  int64_t Kb = roundUp(K, 32) / 32;
  for (int64_t kb = 0; kb < Kb; ++kb)
    for (int64_t t = 0; t < Tp; ++t) {
      uint16_t *o = out + (kb * Tp + t) * 32;
      int64_t k = kb * 32, rem = std::min<int64_t>(32, K - k);
      if (t >= T || rem <= 0) {
        std::memset(o, 0, 64);
        continue;
      }
      const float *x = X + t * ldx + k;
      uint32_t bits = uint32_t((uint64_t(1) << rem) - 1);
      __m512 lo = _mm512_maskz_loadu_ps(__mmask16(bits & 0xffff), x);
      __m512 hi = _mm512_maskz_loadu_ps(__mmask16(bits >> 16), x + 16);
      _mm512_storeu_si512(o, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
    }
}

/// Packs X into [Kp/32][Tp][32] f32 in Load32<wt> element order.
void packXF32(const float *X, int64_t ldx, int64_t T, int64_t K, int64_t Tp, DType wt,
                     float *out) {
  int64_t Kb = roundUp(K, 32) / 32;
  std::memset(out, 0, size_t(Kb * Tp * 32) * 4);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t k = 0; k < K; ++k) {
      int64_t kb = k / 32, j = k & 31;
      int64_t pos = wt == DType::BF16 ? (j & 1) * 16 + (j >> 1) : j;
      out[(kb * Tp + t) * 32 + pos] = X[t * ldx + k];
    }
}

/// Stores a tile's sums (acc[r*TT+t], zero padded to 16) into Y.
template <int R, int TT>
MOERT_AVX512 MOERT_INLINE static void storeTile(__m512 *acc, float *Y, int64_t ldy, int nr,
                                                bool accumulate) {
  for (int i = R * TT; i < 16; ++i)
    acc[i] = _mm512_setzero_ps();
  alignas(64) float out[16];
  _mm512_store_ps(out, reduce16(acc));
  for (int r = 0; r < nr; ++r)
    for (int t = 0; t < TT; ++t) {
      float &y = Y[t * ldy + r];
      y = accumulate ? y + out[r * TT + t] : out[r * TT + t];
    }
}

/// Prefetches the next row block into L2, spread over a block's k-loops.
struct Prefetcher {
  const char *p = nullptr, *end = nullptr;
  int64_t step = 0;
  MOERT_INLINE void next() {
    if (p < end) {
      for (int64_t q = 0; q < step; q += 64)
        _mm_prefetch(p + q, _MM_HINT_T1);
      p += step;
    }
  }
};

/// R weight rows x TT tokens with bf16 dot products (out[r*TT+t]). The sums
/// live in a local array: __m512 may alias anything, so accumulating through
/// the out pointer would reload and store them every step.
template <int R, int TT>
MOERT_AVX512BF16 static void tileDpBf16(const uint16_t *w, int64_t K, const uint16_t *Xb,
                                        int64_t Tp, __m512 *out, Prefetcher &pf) {
  const int64_t Kfull = K / 32 * 32, rem = K - Kfull;
  __m512 acc[R * TT];
#pragma GCC unroll 16
  for (int i = 0; i < R * TT; ++i)
    acc[i] = _mm512_setzero_ps();
  const uint16_t *xp = Xb;
  int64_t k = 0;
  for (; k < Kfull; k += 32, xp += Tp * 32) {
    __m512bh wv[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r)
      wv[r] = (__m512bh)_mm512_loadu_si512(w + r * K + k);
    pf.next();
#pragma GCC unroll 4
    for (int t = 0; t < TT; ++t) {
      __m512bh xv = (__m512bh)_mm512_load_si512(xp + t * 32);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r)
        acc[r * TT + t] = _mm512_dpbf16_ps(acc[r * TT + t], wv[r], xv);
    }
  }
  if (rem) {
    __mmask32 m = _cvtu32_mask32(uint32_t((uint64_t(1) << rem) - 1));
    for (int r = 0; r < R; ++r) {
      __m512bh wv = (__m512bh)_mm512_maskz_loadu_epi16(m, w + r * K + k);
      for (int t = 0; t < TT; ++t)
        acc[r * TT + t] = _mm512_dpbf16_ps(acc[r * TT + t], wv,
                                           (__m512bh)_mm512_load_si512(xp + t * 32));
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < R * TT; ++i)
    out[i] = acc[i];
}

template <DType WT, int R, int TT>
MOERT_AVX512 static void tileFma(const void *w, int64_t K, const float *Xf, int64_t Tp,
                                 __m512 *out, Prefetcher &pf) {
  const int64_t es = int64_t(dtypeSize(WT));
  const int64_t Kfull = K / 32 * 32, rem = K - Kfull;
  const uint8_t *wb = static_cast<const uint8_t *>(w);
  __m512 acc[R * TT], a2[R * TT];
#pragma GCC unroll 16
  for (int i = 0; i < R * TT; ++i)
    acc[i] = a2[i] = _mm512_setzero_ps();
  const float *xp = Xf;
  for (int64_t k = 0; k < Kfull + (rem ? 32 : 0); k += 32, xp += Tp * 32) {
    __m512 w0[R], w1[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      if (k < Kfull)
        Load32<WT>::load(wb + r * K * es, k, w0[r], w1[r]);
      else
        Load32<WT>::loadTail(wb + r * K * es, k, rem, w0[r], w1[r]);
    }
    pf.next();
#pragma GCC unroll 4
    for (int t = 0; t < TT; ++t) {
      __m512 x0 = _mm512_load_ps(xp + t * 32), x1 = _mm512_load_ps(xp + t * 32 + 16);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        acc[r * TT + t] = _mm512_fmadd_ps(w0[r], x0, acc[r * TT + t]);
        a2[r * TT + t] = _mm512_fmadd_ps(w1[r], x1, a2[r * TT + t]);
      }
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < R * TT; ++i)
    out[i] = _mm512_add_ps(acc[i], a2[i]);
}

/// One 4-row block (or up to 3 single rows at the end) against the TT
/// tokens starting at t. Tiles are called, not inlined: the bf16 ones need a
/// wider target than this AVX-512 code.
template <bool Dp, DType WT, int TT>
MOERT_AVX512 static void rowBlock(const uint8_t *w, int64_t K, int nr, const void *X, int64_t Tp,
                                  int64_t t, float *Y, int64_t ldy, bool accumulate,
                                  Prefetcher &pf) {
  const int64_t es = int64_t(dtypeSize(WT));
  __m512 acc[16];
  for (int r = 0; r < nr; r += (nr == 4 ? 4 : 1)) {
    if constexpr (Dp) {
      auto *xb = static_cast<const uint16_t *>(X) + t * 32;
      auto *wr = reinterpret_cast<const uint16_t *>(w + r * K * es);
      if (nr == 4)
        tileDpBf16<4, TT>(wr, K, xb, Tp, acc, pf);
      else
        tileDpBf16<1, TT>(wr, K, xb, Tp, acc, pf);
    } else {
      auto *xf = static_cast<const float *>(X) + t * 32;
      if (nr == 4)
        tileFma<WT, 4, TT>(w + r * K * es, K, xf, Tp, acc, pf);
      else
        tileFma<WT, 1, TT>(w + r * K * es, K, xf, Tp, acc, pf);
    }
    if (nr == 4)
      storeTile<4, TT>(acc, Y + t * ldy, ldy, 4, accumulate);
    else
      storeTile<1, TT>(acc, Y + t * ldy + r, ldy, 1, accumulate);
  }
}

/// Rows [n0, n1) of Y = X W^T: 4-row blocks, each over all token tiles of 4
/// (plus a 1..3-token tail tile), prefetching the next block meanwhile.
template <bool Dp, DType WT>
MOERT_AVX512 static void gemmTiles(const void *W, int64_t K, int64_t n0, int64_t n1,
                                   const void *X, int64_t T, int64_t Tp, float *Y, int64_t ldy,
                                   bool accumulate) {
  const int64_t es = int64_t(dtypeSize(WT));
  const uint8_t *wb = static_cast<const uint8_t *>(W);
  int64_t tiles = (T + 3) / 4, ksteps = roundUp(K, 32) / 32;
  int64_t step = roundUp((4 * K * es + tiles * ksteps - 1) / (tiles * ksteps), 64);
  const char *end = reinterpret_cast<const char *>(wb + n1 * K * es);
  const int64_t tFull = T / 4 * 4, tail = T - tFull;
  for (int64_t n = n0; n < n1; n += 4) {
    int nr = int(std::min<int64_t>(4, n1 - n));
    const uint8_t *w = wb + n * K * es;
    float *y = Y + n;
    Prefetcher pf{reinterpret_cast<const char *>(w) + std::max<int64_t>(kPrefetchDist, 4 * K * es),
                  end, step};
    for (int64_t t = 0; t < tFull; t += 4)
      rowBlock<Dp, WT, 4>(w, K, nr, X, Tp, t, y, ldy, accumulate, pf);
    if (tail == 1)
      rowBlock<Dp, WT, 1>(w, K, nr, X, Tp, tFull, y, ldy, accumulate, pf);
    else if (tail == 2)
      rowBlock<Dp, WT, 2>(w, K, nr, X, Tp, tFull, y, ldy, accumulate, pf);
    else if (tail == 3)
      rowBlock<Dp, WT, 3>(w, K, nr, X, Tp, tFull, y, ldy, accumulate, pf);
  }
}

/// Rows [n0, n1) for TT <= 8 tokens with bf16 dot products; the few-token
/// regime is memory-bound. Rows go in groups of 16; within a group, K is cut
/// into chunks of kDpChunk so the tokens' chunk (TT x 2 KiB) stays in L1
/// while 16 rows stream past it, partial sums parked on the stack. The next
/// group is prefetched linearly meanwhile (one 64-byte line per step: the
/// group's size), so DRAM sees one sequential stream.
static constexpr int64_t kDpChunk = 1024;

template <int TT>
MOERT_AVX512BF16 static void dpRowsBf16(const uint16_t *W, int64_t K, int64_t n0, int64_t n1,
                                        const uint16_t *Xb, float *Y, int64_t ldy, bool acc) {
  const int64_t Kp = roundUp(K, 32);
  const char *end = reinterpret_cast<const char *>(W + n1 * K);
  alignas(64) float out[16];
  __m512 part[16][TT];
  for (int64_t g = n0; g < n1; g += 16) {
    int64_t gn = std::min<int64_t>(16, n1 - g);
    const char *pf = reinterpret_cast<const char *>(W + (g + 16) * K);
    for (int64_t c0 = 0; c0 < K; c0 += kDpChunk) {
      const int64_t c1 = std::min(K, c0 + kDpChunk);
      const int64_t cFull = c0 + (c1 - c0) / 32 * 32, rem = c1 - cFull;
      for (int64_t r = 0; r < gn; ++r) {
        const uint16_t *w = W + (g + r) * K;
        __m512 a[TT];
#pragma GCC unroll 8
        for (int t = 0; t < TT; ++t)
          a[t] = c0 == 0 ? _mm512_setzero_ps() : part[r][t];
        int64_t k = c0;
        for (; k < cFull; k += 32) {
          if (pf < end)
            _mm_prefetch(pf, _MM_HINT_T1);
          pf += 64;
          __m512bh wv = (__m512bh)_mm512_loadu_si512(w + k);
#pragma GCC unroll 8
          for (int t = 0; t < TT; ++t)
            a[t] = _mm512_dpbf16_ps(a[t], wv, (__m512bh)_mm512_load_si512(Xb + t * Kp + k));
        }
        if (rem) {
          __mmask32 m = _cvtu32_mask32(uint32_t((uint64_t(1) << rem) - 1));
          __m512bh wv = (__m512bh)_mm512_maskz_loadu_epi16(m, w + k);
          for (int t = 0; t < TT; ++t)
            a[t] = _mm512_dpbf16_ps(a[t], wv, (__m512bh)_mm512_load_si512(Xb + t * Kp + k));
        }
#pragma GCC unroll 8
        for (int t = 0; t < TT; ++t)
          part[r][t] = a[t];
      }
    }
    for (int t = 0; t < TT; ++t) {
      __m512 sums[16];
      for (int64_t r = 0; r < 16; ++r)
        sums[r] = r < gn ? part[r][t] : _mm512_setzero_ps();
      _mm512_store_ps(out, reduce16(sums));
      float *y = Y + t * ldy + g;
      for (int64_t r = 0; r < gn; ++r)
        y[r] = acc ? y[r] + out[r] : out[r];
    }
  }
}

/// X as bf16 rows of roundUp(K, 32), zero padded.
MOERT_AVX512BF16 void packRowsBf16(const float *X, int64_t ldx, int64_t T, int64_t K,
                                          uint16_t *out) {
  int64_t Kp = roundUp(K, 32);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t k = 0; k < Kp; k += 32) {
      int64_t rem = std::clamp<int64_t>(K - k, 0, 32);
      uint32_t bits = rem >= 32 ? 0xffffffffu : uint32_t((uint64_t(1) << rem) - 1);
      const float *x = X + t * ldx + k;
      __m512 lo = _mm512_maskz_loadu_ps(__mmask16(bits & 0xffff), x);
      __m512 hi = _mm512_maskz_loadu_ps(__mmask16(bits >> 16), x + 16);
      _mm512_store_si512(out + t * Kp + k, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
    }
}

DpRowsFn dpRowsFor(int64_t T) {
  static const DpRowsFn fns[] = {dpRowsBf16<1>, dpRowsBf16<2>, dpRowsBf16<3>, dpRowsBf16<4>,
                                 dpRowsBf16<5>, dpRowsBf16<6>, dpRowsBf16<7>, dpRowsBf16<8>};
  return fns[T - 1];
}


GemvFn gemvFor(DType wt, int64_t T) {
  return wt == DType::BF16 ? gemvForT<DType::BF16>(T)
         : wt == DType::F16 ? gemvForT<DType::F16>(T)
                            : gemvForT<DType::F32>(T);
}

TilesFn tilesFor(bool dp, DType wt) {
  return dp                      ? gemmTiles<true, DType::BF16>
         : wt == DType::BF16 ? gemmTiles<false, DType::BF16>
                             : gemmTiles<false, DType::F16>;
}


} // namespace moert::cpu
