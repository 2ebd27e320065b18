//===- Rows.cpp - Rows of a weight combined and dotted in registers -------===//
//
// MLA's absorbed kv_b (modeling_deepseek_v3's kv_b_proj, folded into the
// query and the output): per head, the query's nope part combines N rows of
// W_UK into an L-wide vector, and the attended latent is dotted with V rows
// of W_UV. Both read each row once; DeepSeek-V3 streams 16 MB of them per
// layer and token (128 heads x 256 rows x 512, FP8).
//
// axpyRows keeps up to 256 outputs in 16 registers while the rows stream by
// (an axpy per row through memory stalled on its own stores: the bench
// model's kv_b ran at 4 GB/s); dotRows runs four rows' chains side by side.
// Each row is widened in registers: f32 as is, bf16 by a shift, FP8 e4m3 as
// f16 bit patterns (value / 2^8, exact) times its block's scale. The 2^8 is
// folded into the coefficient (axpy) or x (dot), both exact powers of two,
// so each product is the dequantized weight's (value x scale, rounded
// once, as HF's dequantization) with the other factor: the same floats as
// dequantizeRows followed by the plain loops, while |value x scale| stays
// above 2^-118 (below it the weight would round as an f32 subnormal /2^8).
//
//===----------------------------------------------------------------------===//
#include "LinearKernels.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <type_traits>

namespace moert::cpu {

namespace {

enum class RowKind { F32, BF16, FP8 };

/// Rows prefetched ahead cover about this many bytes.
constexpr int64_t kRowPrefetchBytes = 2048;

MOERT_INLINE static __mmask16 tailMask(int64_t left) {
  return left >= 16 ? __mmask16(0xffff) : left <= 0 ? __mmask16(0) : __mmask16((1u << left) - 1);
}

/// 16 values of a row from column k (lanes outside m read as zero), as f32;
/// FP8 as value / 2^8, unscaled.
template <RowKind Kind>
MOERT_AVX512 MOERT_INLINE static __m512 load16(const void *row, int64_t k, __mmask16 m) {
  if constexpr (Kind == RowKind::F32) {
    return _mm512_maskz_loadu_ps(m, static_cast<const float *>(row) + k);
  } else if constexpr (Kind == RowKind::BF16) {
    __m256i h = _mm256_maskz_loadu_epi16(m, static_cast<const uint16_t *>(row) + k);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  } else {
    return fp8x16(_mm_maskz_loadu_epi8(m, static_cast<const uint8_t *>(row) + k));
  }
}

/// Row r's f32 block scales (FP8).
MOERT_INLINE static const float *scaleRow(WRef W, int64_t K, int64_t r) {
  const int64_t cols = (K + W.blockCols - 1) / W.blockCols;
  return static_cast<const float *>(W.scales) + (r / W.blockRows) * cols;
}

MOERT_INLINE static void prefetchRow(const uint8_t *row, int64_t bytes) {
  for (int64_t o = 0; o < bytes; o += 64)
    _mm_prefetch(reinterpret_cast<const char *>(row + o), _MM_HINT_T0);
}

template <RowKind Kind>
constexpr int64_t kElemBytes = Kind == RowKind::F32 ? 4 : Kind == RowKind::BF16 ? 2 : 1;

/// The per-lane scales of columns [c0, c0 + 256) of a block row (zero past
/// K): one vector per 16 columns, so blocks of any width cost one multiply.
MOERT_INLINE static void laneScales(const float *srow, int64_t c0, int64_t K, int64_t bk,
                                    float (*out)[16]) {
  for (int j = 0; j < 16; ++j)
    for (int l = 0; l < 16; ++l) {
      const int64_t k = c0 + 16 * j + l;
      out[j][l] = k < K ? srow[k / bk] : 0.0f;
    }
}

/// out[c0, c0 + 256) += coef[i] x row r0 + i, the 256 sums in registers.
/// Full: all 256 columns exist (no masks).
template <RowKind Kind, bool Full>
MOERT_AVX512 MOERT_INLINE static void axpyChunk(WRef W, int64_t K, int64_t c0, int64_t r0,
                                                int64_t n, const float *coef, float *out) {
  const auto *base = static_cast<const uint8_t *>(W.data);
  const int64_t rowBytes = K * kElemBytes<Kind>;
  const int64_t ahead = std::max<int64_t>(1, kRowPrefetchBytes / rowBytes);
  const float unit = Kind == RowKind::FP8 ? 256.0f : 1.0f;
  __mmask16 m[16];
  __m512 acc[16];
#pragma GCC unroll 16
  for (int j = 0; j < 16; ++j) {
    m[j] = Full ? __mmask16(0xffff) : tailMask(K - c0 - 16 * j);
    acc[j] = Full ? _mm512_loadu_ps(out + c0 + 16 * j)
                  : _mm512_maskz_loadu_ps(m[j], out + c0 + 16 * j);
  }
  alignas(64) float sc[Kind == RowKind::FP8 ? 16 : 1][16];
  int64_t scBlock = -1;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t r = r0 + i;
    if (c0 == 0 && i + ahead < n)
      prefetchRow(base + (r + ahead) * rowBytes, rowBytes);
    if constexpr (Kind == RowKind::FP8)
      if (r / W.blockRows != scBlock) {
        scBlock = r / W.blockRows;
        laneScales(scaleRow(W, K, r), c0, K, W.blockCols, sc);
      }
    const uint8_t *row = base + r * rowBytes;
    const __m512 a = _mm512_set1_ps(coef[i] * unit);
#pragma GCC unroll 16
    for (int j = 0; j < 16; ++j) {
      __m512 w = load16<Kind>(row, c0 + 16 * j, m[j]);
      if constexpr (Kind == RowKind::FP8)
        w = _mm512_mul_ps(w, _mm512_load_ps(sc[j]));
      acc[j] = _mm512_fmadd_ps(a, w, acc[j]);
    }
  }
#pragma GCC unroll 16
  for (int j = 0; j < 16; ++j)
    _mm512_mask_storeu_ps(out + c0 + 16 * j, m[j], acc[j]);
}

template <RowKind Kind>
MOERT_AVX512 static void axpyRowsAvx512(WRef W, int64_t K, int64_t r0, int64_t n,
                                        const float *coef, float *out) {
  int64_t c0 = 0;
  for (; c0 + 256 <= K; c0 += 256)
    axpyChunk<Kind, true>(W, K, c0, r0, n, coef, out);
  if (c0 < K)
    axpyChunk<Kind, false>(W, K, c0, r0, n, coef, out);
}

/// Rows r .. r + R - 1 dotted with x (times 2^8 for FP8), each one chain
/// in 16-column steps. FP8 scale blocks are 16-column multiples here (a
/// block's scale per row, broadcast) unless Lanes (a scale per lane).
template <RowKind Kind, int R, bool Lanes = false>
MOERT_AVX512 MOERT_INLINE static void dotRowsAvx512(WRef W, int64_t K, int64_t r,
                                                    const float *x, float *out) {
  const auto *base = static_cast<const uint8_t *>(W.data);
  const int64_t rowBytes = K * kElemBytes<Kind>, bk = W.blockCols;
  const __m512 unit = _mm512_set1_ps(Kind == RowKind::FP8 ? 256.0f : 1.0f);
  const uint8_t *row[R];
  const float *srow[R];
  __m512 acc[R], sv[R];
#pragma GCC unroll 4
  for (int i = 0; i < R; ++i) {
    row[i] = base + (r + i) * rowBytes;
    srow[i] = Kind == RowKind::FP8 ? scaleRow(W, K, r + i) : nullptr;
    acc[i] = _mm512_setzero_ps();
  }
  auto step = [&](int64_t k, __mmask16 m) MOERT_AVX512 {
    const __m512 xv = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + k), unit);
#pragma GCC unroll 4
    for (int i = 0; i < R; ++i) {
      __m512 w = load16<Kind>(row[i], k, m);
      if constexpr (Kind == RowKind::FP8) {
        if constexpr (Lanes) {
          alignas(64) float lane[16] = {};
          for (int64_t j = k; j < std::min(K, k + 16); ++j)
            lane[j - k] = srow[i][j / bk];
          sv[i] = _mm512_load_ps(lane);
        }
        w = _mm512_mul_ps(w, sv[i]);
      }
      acc[i] = _mm512_fmadd_ps(w, xv, acc[i]);
    }
  };
  // Scale blocks (the whole row for bf16, f32 and lane scales), then their
  // 16-column steps.
  const int64_t width = Kind == RowKind::FP8 && !Lanes ? bk : K;
  for (int64_t kb = 0; kb < K; kb += width) {
    if constexpr (Kind == RowKind::FP8 && !Lanes)
#pragma GCC unroll 4
      for (int i = 0; i < R; ++i)
        sv[i] = _mm512_set1_ps(srow[i][kb / bk]);
    const int64_t ke = std::min(K, kb + width);
    int64_t k = kb;
    for (; k + 16 <= ke; k += 16)
      step(k, __mmask16(0xffff));
    if (k < ke)
      step(k, tailMask(ke - k));
  }
#pragma GCC unroll 4
  for (int i = 0; i < R; ++i)
    out[i] = _mm512_reduce_add_ps(acc[i]);
}

template <RowKind Kind>
MOERT_AVX512 static void dotRowsAvx512(WRef W, int64_t K, int64_t r0, int64_t n, const float *x,
                                       float *out) {
  const auto *base = static_cast<const uint8_t *>(W.data);
  const int64_t rowBytes = K * kElemBytes<Kind>;
  const int64_t ahead = std::max<int64_t>(4, kRowPrefetchBytes / rowBytes);
  int64_t i = 0;
  if (Kind == RowKind::FP8 && W.blockCols % 16 != 0) { // blocks split the steps
    for (; i < n; ++i)
      dotRowsAvx512<Kind, 1, true>(W, K, r0 + i, x, out + i);
    return;
  }
  for (; i + 4 <= n; i += 4) {
    for (int64_t p = std::max(i + 4, i + ahead); p < std::min(n, i + ahead + 4); ++p)
      prefetchRow(base + (r0 + p) * rowBytes, rowBytes);
    dotRowsAvx512<Kind, 4>(W, K, r0 + i, x, out + i);
  }
  for (; i < n; ++i)
    dotRowsAvx512<Kind, 1>(W, K, r0 + i, x, out + i);
}

/// f(std::integral_constant<RowKind, W's kind>).
template <class F> void byKind(WRef W, F &&f) {
  if (W.format == QuantFormat::FP8E4M3Block)
    f(std::integral_constant<RowKind, RowKind::FP8>{});
  else if (W.dtype == DType::BF16)
    f(std::integral_constant<RowKind, RowKind::BF16>{});
  else
    f(std::integral_constant<RowKind, RowKind::F32>{});
}

} // namespace

bool rowKernelsSupported(WRef W) {
  return activeIsa() != Isa::Scalar && W.layout == Layout::RowMajor &&
         (W.format == QuantFormat::FP8E4M3Block ||
          (W.format == QuantFormat::None && (W.dtype == DType::F32 || W.dtype == DType::BF16)));
}

void axpyRows(WRef W, int64_t K, int64_t r0, int64_t n, const float *coef, float *out) {
  byKind(W, [&](auto kind) { axpyRowsAvx512<kind()>(W, K, r0, n, coef, out); });
}

void dotRows(WRef W, int64_t K, int64_t r0, int64_t n, const float *x, float *out) {
  byKind(W, [&](auto kind) { dotRowsAvx512<kind()>(W, K, r0, n, x, out); });
}

} // namespace moert::cpu
