//===- Linear.cpp - Matrix products with on-the-fly weight conversion -----===//
//
// Shapes: Y[T, N] (+)= X[T, K] W^T with W [N, K] row-major (HF nn.Linear).
//
// Decode (small T) is memory-bound: gemvRows streams each weight row once,
// strictly sequentially (one row at a time: on Zen 4 interleaving several row
// streams costs up to half the bandwidth), with 64-byte loads, converting
// BF16/F16 to f32 in registers. BF16 rows are split into even/odd elements
// with a shift and a mask, so X is pre-arranged (de-interleaved) to match.
// Threads split the rows.
//
// Prefill (larger T) is compute-bound: 4x4 register tiles (4 weight rows x 4
// tokens) over K, with the next row block prefetched, either with AVX512-BF16
// dot products (activations rounded to bf16; plans with compute dtype BF16)
// or exact f32 FMAs. F32 weights go to OpenBLAS sgemm. Transposed weights
// (GPT-2 Conv1D) and CPUs without AVX-512 convert row panels to f32 and use
// sgemm.
//
//===----------------------------------------------------------------------===//
// GCC 12 reports its own _mm512_undefined_* placeholders inside the
// intrinsics headers as uninitialized (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wuninitialized"
#ifndef __clang__ // clang has no such group
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "moert/cpu/Kernels.h"

#include <cblas.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <immintrin.h>
#include <string_view>
#include <utility>

#define MOERT_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma,f16c")))
#define MOERT_AVX512BF16                                                                         \
  __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma,f16c,avx512bf16")))
#define MOERT_INLINE inline __attribute__((always_inline))

namespace moert::cpu {

//===----------------------------------------------------------------------===//
// ISA selection and scratch memory
//===----------------------------------------------------------------------===//

Isa detectIsa() {
  static const Isa isa = [] {
    __builtin_cpu_init();
    Isa best = Isa::Scalar;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
      best = __builtin_cpu_supports("avx512bf16") ? Isa::Avx512Bf16 : Isa::Avx512;
    if (const char *env = std::getenv("MOERT_ISA")) {
      std::string_view e(env);
      Isa want = e == "scalar" ? Isa::Scalar : e == "avx512" ? Isa::Avx512 : best;
      best = std::min(best, want);
    }
    return best;
  }();
  return isa;
}

static std::atomic<int> gIsa{-1};
static std::atomic<int> gStrategy{int(LinearStrategy::Auto)};

void setLinearStrategy(LinearStrategy s) { gStrategy.store(int(s)); }

Isa activeIsa() {
  int v = gIsa.load(std::memory_order_relaxed);
  return v < 0 ? detectIsa() : Isa(v);
}

void setIsa(Isa isa) { gIsa.store(int(std::min(isa, detectIsa()))); }

const char *isaName(Isa isa) {
  switch (isa) {
  case Isa::Scalar:
    return "scalar";
  case Isa::Avx512:
    return "avx512";
  case Isa::Avx512Bf16:
    return "avx512-bf16";
  }
  return "?";
}

Workspace::Buf::~Buf() { std::free(p); }

void *Workspace::Buf::get(size_t bytes) {
  if (bytes > size) {
    std::free(p);
    size = (bytes + 63) & ~size_t(63);
    p = std::aligned_alloc(64, size);
    if (!p)
      throw std::bad_alloc();
  }
  return p;
}

void *Workspace::shared(size_t slot, size_t bytes) { return shared_[slot].get(bytes); }

void Workspace::reserveLocal(size_t bytes) {
  for (Buf &b : perThread_)
    b.get(bytes);
}

void *Workspace::local(int tid, size_t bytes) { return perThread_[size_t(tid)].get(bytes); }

static int64_t roundUp(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// Software prefetch distance (bytes ahead in a weight stream, into L2). Zen 4's
// hardware prefetchers fall behind once the core also computes (5-token rows
// streamed at 16 GB/s without, 24 GB/s with; bench/runtime/kernel-bench).
static const int64_t kPrefetchDist = [] {
  const char *e = std::getenv("MOERT_PREFETCH_DIST");
  return e ? std::atoll(e) : int64_t(32) << 10;
}();

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
static void packRowsF32(const float *X, int64_t ldx, int64_t T, int64_t K, DType wt, float *out) {
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

using GemvFn = void (*)(const void *, int64_t, int64_t, int64_t, const float *, float *, int64_t,
                        bool);

template <DType WT> static GemvFn gemvFor(int64_t T) {
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

static void gemvRowsScalar(WRef W, int64_t K, int64_t n0, int64_t n1, const float *X, int64_t ldx,
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
MOERT_AVX512BF16 static void packXBf16(const float *X, int64_t ldx, int64_t T, int64_t K,
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
static void packXF32(const float *X, int64_t ldx, int64_t T, int64_t K, int64_t Tp, DType wt,
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
MOERT_AVX512BF16 static void packRowsBf16(const float *X, int64_t ldx, int64_t T, int64_t K,
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

using DpRowsFn = void (*)(const uint16_t *, int64_t, int64_t, int64_t, const uint16_t *, float *,
                          int64_t, bool);
static DpRowsFn dpRowsFor(int64_t T) {
  static const DpRowsFn fns[] = {dpRowsBf16<1>, dpRowsBf16<2>, dpRowsBf16<3>, dpRowsBf16<4>,
                                 dpRowsBf16<5>, dpRowsBf16<6>, dpRowsBf16<7>, dpRowsBf16<8>};
  return fns[T - 1];
}

//===----------------------------------------------------------------------===//
// Packed bf16 weights (Layout::Packed16): broadcast products
//===----------------------------------------------------------------------===//

// A block of 16 rows times one token is a stream of 64-byte weight vectors,
// each multiplied by one broadcast pair of x: every lane accumulates its own
// output row, so there are no horizontal sums, and a block's vectors are read
// once, sequentially, for all the tokens of a tile (up to 24 accumulators in
// registers). With bf16 activations vdpbf16ps does 32 MACs per vector and
// token; the exact path splits the vector into the even and odd columns as
// f32 (a shift and a mask) and does two FMAs. A row's sum runs over k in the
// same order whatever the tile, the thread split or the rank.

static int64_t pairsOf(int64_t K) { return (K + 1) / 2; }

uint64_t packedBytes(int64_t N, int64_t K) {
  return uint64_t((N + 15) / 16) * uint64_t(pairsOf(K)) * 64;
}

/// Lane r of pair j of block b, element e, as an index into the packed array.
static size_t packedIndex(int64_t K2, int64_t n, int64_t k) {
  return size_t(((n / 16) * K2 + k / 2) * 32 + (n % 16) * 2 + (k & 1));
}

float weightAt(WRef w, int64_t K, int64_t n, int64_t k) {
  if (w.layout == Layout::Packed16)
    return bf16ToF32(static_cast<const uint16_t *>(w.data)[packedIndex(pairsOf(K), n, k)]);
  return loadAsF32(w.data, w.dtype, size_t(n * K + k));
}

/// One block: 16 rows (zero past `rows`) x K columns from `src` (row stride K).
static void packBlockScalar(const uint16_t *src, int64_t rows, int64_t K, uint16_t *blk) {
  const int64_t K2 = pairsOf(K);
  for (int64_t r = 0; r < 16; ++r)
    for (int64_t k = 0; k < 2 * K2; ++k)
      blk[(k >> 1) * 32 + r * 2 + (k & 1)] = r < rows && k < K ? src[r * K + k] : 0;
}

/// The same with 32-bit gathers: lane r of pair j is the 4 bytes at row r,
/// column 2j. Rows of odd K are not 4-byte aligned, which gathers allow; the
/// last pair of an odd K would read the next row's first element, so it is
/// done separately.
MOERT_AVX512 static void packBlockAvx512(const uint16_t *src, int64_t rows, int64_t K,
                                         uint16_t *blk) {
  const int64_t K2 = pairsOf(K), full = K / 2;
  __mmask16 m = __mmask16(rows >= 16 ? 0xffff : (1u << rows) - 1);
  __m512i idx = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2,
                                                    1, 0),
                                   _mm512_set1_epi32(int(K)));
  for (int64_t j = 0; j < full; ++j) {
    __m512i v = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), m, idx, src + 2 * j, 2);
    _mm512_store_si512(blk + j * 32, v);
  }
  if (K2 > full)
    for (int64_t r = 0; r < 16; ++r) {
      blk[full * 32 + r * 2] = r < rows ? src[r * K + K - 1] : 0;
      blk[full * 32 + r * 2 + 1] = 0;
    }
}

void packBf16(const uint16_t *src, int64_t N, int64_t K, int64_t n0, int64_t n1, uint16_t *dst) {
  const int64_t K2 = pairsOf(K);
  // Gathers index rows with 32-bit offsets in 16-bit units.
  bool avx = activeIsa() != Isa::Scalar && 16 * K < (int64_t(1) << 30) &&
             (reinterpret_cast<uintptr_t>(dst) & 63) == 0;
  for (int64_t n = n0; n < n1; n += 16) {
    int64_t rows = std::min<int64_t>(16, N - n);
    uint16_t *blk = dst + (n / 16) * K2 * 32;
    if (avx)
      packBlockAvx512(src + (n - n0) * K, rows, K, blk);
    else
      packBlockScalar(src + (n - n0) * K, rows, K, blk);
  }
}

/// X [T, K] as f32 pairs for the exact kernels: out[(j*T + t)*2 + e] =
/// X[t, 2j+e], zero past K.
static void packXPairsF32(const float *X, int64_t ldx, int64_t T, int64_t K, float *out) {
  const int64_t K2 = pairsOf(K);
  for (int64_t t = 0; t < T; ++t) {
    const float *x = X + t * ldx;
    for (int64_t k = 0; k < K; ++k)
      out[((k >> 1) * T + t) * 2 + (k & 1)] = x[k];
    if (K & 1)
      out[((K2 - 1) * T + t) * 2 + 1] = 0.0f;
  }
}

/// X [T, K] as bf16 pairs (round to nearest even) for the dot products:
/// out[j*T + t] = (X[t, 2j], X[t, 2j+1]), zero past K.
MOERT_AVX512BF16 static void packXPairsBf16(const float *X, int64_t ldx, int64_t T, int64_t K,
                                            uint32_t *out) {
  const int64_t K2 = pairsOf(K);
  const __m512i step = _mm512_mullo_epi32(
      _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
      _mm512_set1_epi32(int(T)));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t k = 0; k < 2 * K2; k += 32) {
      int64_t rem = std::min<int64_t>(32, K - k), pairs = std::min<int64_t>(16, K2 - k / 2);
      uint32_t bits = rem >= 32 ? 0xffffffffu : uint32_t((uint64_t(1) << rem) - 1);
      const float *x = X + t * ldx + k;
      __m512 lo = _mm512_maskz_loadu_ps(__mmask16(bits & 0xffff), x);
      __m512 hi = _mm512_maskz_loadu_ps(__mmask16(bits >> 16), x + 16);
      __m512i v = (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
      _mm512_mask_i32scatter_epi32(out + (k / 2) * T + t, __mmask16((1u << pairs) - 1), step, v,
                                   4);
    }
}

/// Writes 16 row sums (the first `rows`) of one token to y.
MOERT_AVX512 MOERT_INLINE static void storeRows(__m512 v, float *y, int64_t rows,
                                                bool accumulate) {
  __mmask16 m = __mmask16(rows >= 16 ? 0xffff : (1u << rows) - 1);
  if (accumulate)
    v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, y));
  _mm512_mask_storeu_ps(y, m, v);
}

/// Prefetches a weight stream `dist` bytes ahead, one line per call, up to `end`.
struct StreamPrefetch {
  const char *p, *end;
  MOERT_INLINE void next() {
    if (p < end)
      _mm_prefetch(p, _MM_HINT_T1);
    p += 64;
  }
};

/// One token, exact f32 (decode): blocks [b0, b1) against x pairs (f32,
/// zero padded to 2*K2). Four FMA chains: even/odd columns of even/odd pairs.
MOERT_AVX512 static void gemvPacked(const uint16_t *W, int64_t N, int64_t K2, int64_t b0,
                                    int64_t b1, const float *x, float *y, bool accumulate) {
  const __m512i hiMask = _mm512_set1_epi32(int(0xffff0000u));
  for (int64_t b = b0; b < b1; ++b) {
    const uint16_t *w = W + b * K2 * 32;
    __m512 e0 = _mm512_setzero_ps(), o0 = e0, e1 = e0, o1 = e0;
    int64_t j = 0;
    for (; j + 2 <= K2; j += 2) {
      __m512i v0 = _mm512_loadu_si512(w + j * 32), v1 = _mm512_loadu_si512(w + j * 32 + 32);
      e0 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(v0, 16)),
                           _mm512_set1_ps(x[2 * j]), e0);
      o0 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(v0, hiMask)),
                           _mm512_set1_ps(x[2 * j + 1]), o0);
      e1 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(v1, 16)),
                           _mm512_set1_ps(x[2 * j + 2]), e1);
      o1 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(v1, hiMask)),
                           _mm512_set1_ps(x[2 * j + 3]), o1);
    }
    if (j < K2) {
      __m512i v0 = _mm512_loadu_si512(w + j * 32);
      e0 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(v0, 16)),
                           _mm512_set1_ps(x[2 * j]), e0);
      o0 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(v0, hiMask)),
                           _mm512_set1_ps(x[2 * j + 1]), o0);
    }
    storeRows(_mm512_add_ps(_mm512_add_ps(e0, o0), _mm512_add_ps(e1, o1)), y + b * 16,
              N - b * 16, accumulate);
  }
}

/// TT tokens, exact f32: blocks [b0, b1); Xf are the tile's x pairs with a
/// row of pairs every `xs` floats (2*T); Y is the tile's first row.
template <int TT>
MOERT_AVX512 static void fmaPacked(const uint16_t *W, int64_t N, int64_t K2, int64_t b0,
                                   int64_t b1, const float *Xf, int64_t xs, float *Y, int64_t ldy,
                                   bool accumulate, const char *end) {
  const __m512i hiMask = _mm512_set1_epi32(int(0xffff0000u));
  for (int64_t b = b0; b < b1; ++b) {
    const uint16_t *w = W + b * K2 * 32;
    StreamPrefetch pf{reinterpret_cast<const char *>(w) + kPrefetchDist, end};
    __m512 ae[TT], ao[TT];
#pragma GCC unroll 24
    for (int t = 0; t < TT; ++t)
      ae[t] = ao[t] = _mm512_setzero_ps();
    const float *x = Xf;
    for (int64_t j = 0; j < K2; ++j, x += xs) {
      pf.next();
      __m512i v = _mm512_loadu_si512(w + j * 32);
      __m512 we = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
      __m512 wo = _mm512_castsi512_ps(_mm512_and_si512(v, hiMask));
#pragma GCC unroll 24
      for (int t = 0; t < TT; ++t) {
        ae[t] = _mm512_fmadd_ps(we, _mm512_set1_ps(x[2 * t]), ae[t]);
        ao[t] = _mm512_fmadd_ps(wo, _mm512_set1_ps(x[2 * t + 1]), ao[t]);
      }
    }
#pragma GCC unroll 24
    for (int t = 0; t < TT; ++t)
      storeRows(_mm512_add_ps(ae[t], ao[t]), Y + t * ldy + b * 16, N - b * 16, accumulate);
  }
}

/// TT tokens, bf16 dot products: Xb are the tile's bf16 pairs with a row of
/// pairs every `xs` (T) elements.
template <int TT>
MOERT_AVX512BF16 static void dpPacked(const uint16_t *W, int64_t N, int64_t K2, int64_t b0,
                                      int64_t b1, const uint32_t *Xb, int64_t xs, float *Y,
                                      int64_t ldy, bool accumulate, const char *end) {
  for (int64_t b = b0; b < b1; ++b) {
    const uint16_t *w = W + b * K2 * 32;
    StreamPrefetch pf{reinterpret_cast<const char *>(w) + kPrefetchDist, end};
    __m512 acc[TT];
#pragma GCC unroll 24
    for (int t = 0; t < TT; ++t)
      acc[t] = _mm512_setzero_ps();
    const uint32_t *x = Xb;
    for (int64_t j = 0; j < K2; ++j, x += xs) {
      pf.next();
      __m512bh v = (__m512bh)_mm512_loadu_si512(w + j * 32);
#pragma GCC unroll 24
      for (int t = 0; t < TT; ++t)
        acc[t] = _mm512_dpbf16_ps(acc[t], v, (__m512bh)_mm512_set1_epi32(int(x[t])));
    }
#pragma GCC unroll 24
    for (int t = 0; t < TT; ++t)
      storeRows(acc[t], Y + t * ldy + b * 16, N - b * 16, accumulate);
  }
}

// Tokens per register tile: the dot products keep 24 accumulators, the exact
// path two per token.
static constexpr int kDpTile = 24, kFmaTile = 12;

/// (W, N, K2, b0, b1, X, xs, Y, ldy, accumulate, prefetch end): the
/// weight stream is prefetched up to `end` (the caller's last block), nothing
/// when end <= the blocks.
using PackedFn = void (*)(const uint16_t *, int64_t, int64_t, int64_t, int64_t, const void *,
                          int64_t, float *, int64_t, bool, const char *);

template <int TT> static void dpPackedV(const uint16_t *W, int64_t N, int64_t K2, int64_t b0,
                                        int64_t b1, const void *X, int64_t xs, float *Y,
                                        int64_t ldy, bool acc, const char *end) {
  dpPacked<TT>(W, N, K2, b0, b1, static_cast<const uint32_t *>(X), xs, Y, ldy, acc, end);
}
template <int TT> static void fmaPackedV(const uint16_t *W, int64_t N, int64_t K2, int64_t b0,
                                         int64_t b1, const void *X, int64_t xs, float *Y,
                                         int64_t ldy, bool acc, const char *end) {
  fmaPacked<TT>(W, N, K2, b0, b1, static_cast<const float *>(X), xs, Y, ldy, acc, end);
}

template <template <int> class F, int... I>
static constexpr std::array<PackedFn, sizeof...(I)> fnTable(std::integer_sequence<int, I...>) {
  return {F<I + 1>::fn...};
}
template <int TT> struct DpFn { static constexpr PackedFn fn = dpPackedV<TT>; };
template <int TT> struct FmaFn { static constexpr PackedFn fn = fmaPackedV<TT>; };

static PackedFn packedFor(bool dp, int64_t tt) {
  static constexpr auto dps = fnTable<DpFn>(std::make_integer_sequence<int, kDpTile>{});
  static constexpr auto fmas = fnTable<FmaFn>(std::make_integer_sequence<int, kFmaTile>{});
  return dp ? dps[size_t(tt - 1)] : fmas[size_t(tt - 1)];
}

/// X [T, K] in the order of the packed kernels: bf16 pairs (dp) or f32 pairs
/// in shared slot 0; returns it and sets xs (elements per pair index).
static const void *packXPairs(Workspace &ws, const float *X, int64_t ldx, int64_t T, int64_t K,
                              bool dp, int64_t &xs) {
  const int64_t K2 = pairsOf(K);
  if (dp) {
    auto *xb = static_cast<uint32_t *>(ws.shared(0, size_t(K2 * T) * 4));
    packXPairsBf16(X, ldx, T, K, xb);
    xs = T;
    return xb;
  }
  auto *xf = static_cast<float *>(ws.shared(0, size_t(K2 * T) * 8));
  packXPairsF32(X, ldx, T, K, xf);
  xs = 2 * T;
  return xf;
}

/// Blocks [b0, b1) of packed W against all T >= 2 tokens of packed X: the
/// tokens go in tiles of balanced sizes, each block through every tile, so a
/// block is fetched from DRAM once (prefetched ahead up to b1 by the first
/// tile) and the later tiles find it in L1/L2.
static void packedBlocks(const uint16_t *W, int64_t N, int64_t K2, int64_t b0, int64_t b1,
                         const void *Xp, int64_t xs, int64_t T, float *Y, int64_t ldy,
                         bool accumulate, bool dp) {
  const char *end = reinterpret_cast<const char *>(W + b1 * K2 * 32);
  const int64_t maxTile = dp ? kDpTile : kFmaTile;
  const int64_t tiles = (T + maxTile - 1) / maxTile;
  if (tiles == 1) {
    packedFor(dp, T)(W, N, K2, b0, b1, Xp, xs, Y, ldy, accumulate, end);
    return;
  }
  for (int64_t b = b0; b < b1; ++b)
    for (int64_t i = 0, t0 = 0; i < tiles; ++i) {
      int64_t tt = T / tiles + (i < T % tiles ? 1 : 0);
      const void *xt = dp ? static_cast<const void *>(static_cast<const uint32_t *>(Xp) + t0)
                          : static_cast<const void *>(static_cast<const float *>(Xp) + 2 * t0);
      packedFor(dp, tt)(W, N, K2, b, b + 1, xt, xs, Y + t0 * ldy, ldy, accumulate,
                        i == 0 ? end : nullptr);
      t0 += tt;
    }
}

/// Y = X W^T for packed W and T >= 2 tokens on AVX-512.
static void linearPackedTiles(ThreadPool &pool, Workspace &ws, const float *X, int64_t ldx,
                              int64_t T, const uint16_t *W, int64_t N, int64_t K, float *Y,
                              int64_t ldy, bool accumulate, bool dp) {
  int64_t xs;
  const void *Xp = packXPairs(ws, X, ldx, T, K, dp, xs);
  pool.parallelFor(size_t((N + 15) / 16), 1, [&](size_t b0, size_t b1, int) {
    packedBlocks(W, N, pairsOf(K), int64_t(b0), int64_t(b1), Xp, xs, T, Y, ldy, accumulate, dp);
  });
}

//===----------------------------------------------------------------------===//
// Portable path: f32 panels + OpenBLAS
//===----------------------------------------------------------------------===//

// Rows of W converted per panel: 64 rows keep a K=4096 panel within 1 MiB.
static constexpr int64_t kPanelRows = 64;

/// Y[:, n0:n1] via sgemm, converting W to f32 in panels when it is not f32.
static void gemmPanels(WRef W, int64_t N, int64_t K, bool transposed, int64_t n0, int64_t n1,
                       const float *X, int64_t ldx, int64_t T, float *Y, int64_t ldy,
                       bool accumulate, float *panel) {
  float beta = accumulate ? 1.0f : 0.0f;
  // One sgemm per panel of kPanelRows columns at fixed offsets: OpenBLAS may
  // sum in another order for another N, and results must not depend on how
  // many threads or ranks share the work.
  for (int64_t p = n0; p < n1; p += kPanelRows) {
    int64_t pn = std::min(kPanelRows, n1 - p);
    if (W.dtype == DType::F32) {
      const float *w = static_cast<const float *>(W.data);
      if (transposed)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(T), int(pn), int(K), 1.0f, X,
                    int(ldx), w + p, int(N), beta, Y + p, int(ldy));
      else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(T), int(pn), int(K), 1.0f, X,
                    int(ldx), w + p * K, int(K), beta, Y + p, int(ldy));
      continue;
    }
    if (transposed) { // panel [K, pn] from columns p..p+pn of W [K, N]
      for (int64_t k = 0; k < K; ++k)
        for (int64_t j = 0; j < pn; ++j)
          panel[k * pn + j] = loadAsF32(W.data, W.dtype, size_t(k * N + p + j));
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(T), int(pn), int(K), 1.0f, X,
                  int(ldx), panel, int(pn), beta, Y + p, int(ldy));
    } else {
      if (W.layout == Layout::Packed16) {
        for (int64_t j = 0; j < pn; ++j)
          for (int64_t k = 0; k < K; ++k)
            panel[j * K + k] = weightAt(W, K, p + j, k);
      } else {
        for (int64_t j = 0; j < pn * K; ++j)
          panel[j] = loadAsF32(W.data, W.dtype, size_t(p * K + j));
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(T), int(pn), int(K), 1.0f, X,
                  int(ldx), panel, int(K), beta, Y + p, int(ldy));
    }
  }
}

//===----------------------------------------------------------------------===//
// Dispatch
//===----------------------------------------------------------------------===//

// Up to this many tokens the row-streaming kernels win: the weight traffic
// dominates and the tiles' 4-row interleaved reads stream worse.
static constexpr int64_t kGemvMaxT = 3;   // exact f32 FMAs
static constexpr int64_t kDpRowsMaxT = 8; // bf16 dot products

static void addBias(ThreadPool &, WRef bias, int64_t N, int64_t T, float *Y, int64_t ldy) {
  if (!bias)
    return;
  for (int64_t t = 0; t < T; ++t) {
    float *y = Y + t * ldy;
    if (bias.dtype == DType::F32) {
      const float *b = static_cast<const float *>(bias.data);
      for (int64_t n = 0; n < N; ++n)
        y[n] += b[n];
    } else {
      for (int64_t n = 0; n < N; ++n)
        y[n] += loadAsF32(bias.data, bias.dtype, size_t(n));
    }
  }
}

void linear(ThreadPool &pool, Workspace &ws, const float *X, int64_t ldx, int64_t T, WRef W,
            int64_t N, int64_t K, bool transposed, WRef bias, float *Y, int64_t ldy,
            bool accumulate, Precision prec) {
  if (T <= 0 || N <= 0)
    return;
  if (W.layout == Layout::Packed16 && (transposed || W.dtype != DType::BF16))
    throw std::logic_error("packed weights are BF16 and not transposed");
  Isa isa = activeIsa();
  bool panels = gStrategy.load(std::memory_order_relaxed) == int(LinearStrategy::Panels);
  if (transposed || isa == Isa::Scalar || panels || (T > kGemvMaxT && W.dtype == DType::F32)) {
    if (T <= kGemvMaxT && !transposed && isa == Isa::Scalar && !panels) {
      pool.parallelFor(size_t(N), 16, [&](size_t n0, size_t n1, int) {
        gemvRowsScalar(W, K, int64_t(n0), int64_t(n1), X, ldx, T, Y, ldy,
                       accumulate);
      });
    } else {
      size_t panelBytes = size_t(kPanelRows * K) * 4;
      ws.reserveLocal(panelBytes);
      pool.parallelFor(size_t(N), size_t(kPanelRows), [&](size_t n0, size_t n1, int tid) {
        gemmPanels(W, N, K, transposed, int64_t(n0), int64_t(n1), X, ldx, T, Y, ldy,
                   accumulate, static_cast<float *>(ws.local(tid, panelBytes)));
      });
    }
    addBias(pool, bias, N, T, Y, ldy);
    return;
  }
  bool dp = W.dtype == DType::BF16 && prec == Precision::BF16 && isa == Isa::Avx512Bf16;
  if (W.layout == Layout::Packed16) {
    const auto *w = static_cast<const uint16_t *>(W.data);
    if (T == 1) {
      const int64_t K2 = pairsOf(K);
      auto *x = static_cast<float *>(ws.shared(0, size_t(2 * K2) * 4));
      packXPairsF32(X, ldx, 1, K, x);
      pool.parallelFor(size_t((N + 15) / 16), 1, [&](size_t b0, size_t b1, int) {
        gemvPacked(w, N, K2, int64_t(b0), int64_t(b1), x, Y, accumulate);
      });
    } else {
      linearPackedTiles(pool, ws, X, ldx, T, w, N, K, Y, ldy, accumulate, dp);
    }
    addBias(pool, bias, N, T, Y, ldy);
    return;
  }
  int64_t Kp = roundUp(K, 32);
  if (dp && T >= 2 && T <= kDpRowsMaxT) {
    auto *Xb = static_cast<uint16_t *>(ws.shared(0, size_t(T * Kp) * 2));
    packRowsBf16(X, ldx, T, K, Xb);
    DpRowsFn fn = dpRowsFor(T);
    pool.parallelFor(size_t(N), 16, [&](size_t n0, size_t n1, int) {
      fn(static_cast<const uint16_t *>(W.data), K, int64_t(n0), int64_t(n1), Xb, Y, ldy,
         accumulate);
    });
  } else if (T <= kGemvMaxT) {
    float *Xp = static_cast<float *>(ws.shared(0, size_t(T * Kp) * 4));
    packRowsF32(X, ldx, T, K, W.dtype, Xp);
    GemvFn fn = W.dtype == DType::BF16  ? gemvFor<DType::BF16>(T)
                : W.dtype == DType::F16 ? gemvFor<DType::F16>(T)
                                        : gemvFor<DType::F32>(T);
    pool.parallelFor(size_t(N), 16, [&](size_t n0, size_t n1, int) {
      fn(W.data, K, int64_t(n0), int64_t(n1), Xp, Y, ldy, accumulate);
    });
  } else {
    int64_t Tp = roundUp(T, 4);
    const void *Xpk;
    if (dp) {
      auto *Xb = static_cast<uint16_t *>(ws.shared(0, size_t(Kp * Tp) * 2));
      packXBf16(X, ldx, T, K, Tp, Xb);
      Xpk = Xb;
    } else {
      auto *Xf = static_cast<float *>(ws.shared(0, size_t(Kp * Tp) * 4));
      packXF32(X, ldx, T, K, Tp, W.dtype, Xf);
      Xpk = Xf;
    }
    auto fn = dp                        ? gemmTiles<true, DType::BF16>
              : W.dtype == DType::BF16 ? gemmTiles<false, DType::BF16>
                                       : gemmTiles<false, DType::F16>;
    pool.parallelFor(size_t(N), 4, [&](size_t n0, size_t n1, int) {
      fn(W.data, K, int64_t(n0), int64_t(n1), Xpk, T, Tp, Y, ldy, accumulate);
    });
  }
  addBias(pool, bias, N, T, Y, ldy);
}

void linearBatch(ThreadPool &pool, Workspace &ws, const std::vector<GemvJob> &jobs,
                 Precision prec) {
  if (activeIsa() == Isa::Scalar || jobs.size() == 1) {
    for (const GemvJob &j : jobs)
      linear(pool, ws, j.x, j.K, 1, j.w, j.N, j.K, false, j.bias, j.y, j.N, j.accumulate, prec);
    return;
  }
  // Each job's x in its weight's order, and its rows at an offset of a
  // virtual row space (16-aligned, so chunks never split a reduce group or a
  // packed block).
  std::vector<int64_t> rowStart(jobs.size() + 1, 0), xOff(jobs.size() + 1, 0);
  for (size_t i = 0; i < jobs.size(); ++i) {
    rowStart[i + 1] = rowStart[i] + roundUp(jobs[i].N, 16);
    xOff[i + 1] = xOff[i] + roundUp(jobs[i].K, 32);
  }
  auto *xs = static_cast<float *>(ws.shared(0, size_t(xOff.back()) * 4));
  for (size_t i = 0; i < jobs.size(); ++i) {
    if (jobs[i].w.layout == Layout::Packed16)
      packXPairsF32(jobs[i].x, jobs[i].K, 1, jobs[i].K, xs + xOff[i]);
    else
      packRowsF32(jobs[i].x, jobs[i].K, 1, jobs[i].K, jobs[i].w.dtype, xs + xOff[i]);
  }
  pool.parallelFor(size_t(rowStart.back()), 16, [&](size_t b, size_t e, int) {
    for (size_t i = 0; i < jobs.size(); ++i) {
      int64_t lo = std::max<int64_t>(int64_t(b), rowStart[i]);
      int64_t hi = std::min<int64_t>(int64_t(e), rowStart[i] + jobs[i].N);
      if (lo >= hi)
        continue;
      const GemvJob &j = jobs[i];
      lo -= rowStart[i];
      hi -= rowStart[i];
      if (j.w.layout == Layout::Packed16) {
        gemvPacked(static_cast<const uint16_t *>(j.w.data), j.N, pairsOf(j.K), lo / 16,
                   (hi + 15) / 16, xs + xOff[i], j.y, j.accumulate);
        continue;
      }
      GemvFn fn = j.w.dtype == DType::BF16  ? gemvFor<DType::BF16>(1)
                  : j.w.dtype == DType::F16 ? gemvFor<DType::F16>(1)
                                            : gemvFor<DType::F32>(1);
      fn(j.w.data, j.K, lo, hi, xs + xOff[i], j.y, j.N, j.accumulate);
    }
  });
  for (const GemvJob &j : jobs)
    addBias(pool, j.bias, j.N, 1, j.y, j.N);
}

void linearMulti(ThreadPool &pool, Workspace &ws, const float *X, int64_t ldx, int64_t T,
                 int64_t K, const std::vector<MatJob> &jobs, Precision prec) {
  if (T <= 0 || jobs.empty())
    return;
  Isa isa = activeIsa();
  bool together = jobs.size() > 1 && isa != Isa::Scalar &&
                  gStrategy.load(std::memory_order_relaxed) == int(LinearStrategy::Auto);
  for (const MatJob &j : jobs)
    together = together && j.w.layout == Layout::Packed16;
  if (together && T == 1) {
    std::vector<GemvJob> g;
    for (const MatJob &j : jobs)
      g.push_back({X, j.w, j.N, K, j.bias, j.y, j.accumulate});
    linearBatch(pool, ws, g, prec);
    return;
  }
  if (!together) {
    for (const MatJob &j : jobs)
      linear(pool, ws, X, ldx, T, j.w, j.N, K, false, j.bias, j.y, j.ldy, j.accumulate, prec);
    return;
  }
  // One pass over the jobs' blocks laid end to end: one packing of X, one
  // split of the work and one synchronization.
  bool dp = prec == Precision::BF16 && isa == Isa::Avx512Bf16;
  int64_t xs;
  const void *Xp = packXPairs(ws, X, ldx, T, K, dp, xs);
  const int64_t K2 = pairsOf(K);
  std::vector<int64_t> start(jobs.size() + 1, 0);
  for (size_t i = 0; i < jobs.size(); ++i)
    start[i + 1] = start[i] + (jobs[i].N + 15) / 16;
  pool.parallelFor(size_t(start.back()), 1, [&](size_t b, size_t e, int) {
    for (size_t i = 0; i < jobs.size(); ++i) {
      int64_t lo = std::max<int64_t>(int64_t(b), start[i]) - start[i];
      int64_t hi = std::min<int64_t>(int64_t(e), start[i + 1]) - start[i];
      if (lo < hi)
        packedBlocks(static_cast<const uint16_t *>(jobs[i].w.data), jobs[i].N, K2, lo, hi, Xp, xs,
                     T, jobs[i].y, jobs[i].ldy, jobs[i].accumulate, dp);
    }
  });
  for (const MatJob &j : jobs)
    addBias(pool, j.bias, j.N, T, j.y, j.ldy);
}

} // namespace moert::cpu
