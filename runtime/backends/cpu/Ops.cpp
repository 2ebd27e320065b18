//===- Ops.cpp - Element-wise ops, attention, gating ----------------------===//
//
// Reductions (norm statistics, softmax sums) accumulate in double: they are a
// negligible share of the time and keep the runtime within ~1e-6 of a float64
// reference.
//
//===----------------------------------------------------------------------===//
#include "moert/cpu/Kernels.h"
#include "moert/Backend.h"
#ifdef MOERT_HAVE_MVEC
#include "VecMath.h"
#endif

#include <algorithm>
#include <cmath>
#include <cstring>
#include <immintrin.h>
#include <limits>

namespace moert::cpu {

float activate(Act a, float x) {
  switch (a) {
  case Act::Gelu:
    return float(0.5 * x * (1.0 + std::erf(double(x) * M_SQRT1_2)));
  case Act::GeluTanh: {
    double xd = x;
    return float(0.5 * xd * (1.0 + std::tanh(0.7978845608028654 * (xd + 0.044715 * xd * xd * xd))));
  }
  case Act::Silu:
    return float(double(x) / (1.0 + std::exp(-double(x))));
  case Act::Relu:
    return x > 0.0f ? x : 0.0f;
  case Act::Sigmoid:
    return float(1.0 / (1.0 + std::exp(-double(x))));
  case Act::Identity:
    return x;
  case Act::SwigluOai: // a function of (gate, up) pairs: swigluOai(), never per element
    return x;
  }
  return x;
}

static void rowFromWeight(WRef W, int64_t row, int64_t D, float scale, float *out, bool add) {
  size_t base = size_t(row * D);
  if (W.dtype == DType::F32) {
    const float *w = static_cast<const float *>(W.data) + base;
    for (int64_t d = 0; d < D; ++d)
      out[d] = add ? out[d] + w[d] * scale : w[d] * scale;
    return;
  }
  for (int64_t d = 0; d < D; ++d) {
    float v = loadAsF32(W.data, W.dtype, base + size_t(d)) * scale;
    out[d] = add ? out[d] + v : v;
  }
}

void embedding(const int64_t *ids, int64_t T, WRef W, int64_t D, float scale, float *out,
               int64_t ldo, int64_t first, int64_t rows) {
  for (int64_t t = 0; t < T; ++t) {
    int64_t row = ids[t] - first;
    if (rows >= 0 && (row < 0 || row >= rows))
      std::fill_n(out + t * ldo, D, 0.0f);
    else
      rowFromWeight(W, row, D, scale, out + t * ldo, false);
  }
}

void addRows(const int64_t *pos, int64_t T, WRef W, int64_t D, float *io, int64_t ldio) {
  for (int64_t t = 0; t < T; ++t)
    rowFromWeight(W, pos[t], D, 1.0f, io + t * ldio, true);
}

static inline float wAt(WRef w, int64_t i, float dflt) {
  return w ? loadAsF32(w.data, w.dtype, size_t(i)) : dflt;
}

void layerNorm(const float *in, int64_t ldi, float *out, int64_t ldo, int64_t rows,
               int64_t colOffset, int64_t cols, int64_t dim, WRef w, WRef b, float eps) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t g = colOffset; g < colOffset + cols; g += dim) {
      const float *x = in + r * ldi + g;
      float *y = out + r * ldo + g;
      double mean = 0.0, var = 0.0;
      for (int64_t d = 0; d < dim; ++d)
        mean += x[d];
      mean /= double(dim);
      for (int64_t d = 0; d < dim; ++d)
        var += (x[d] - mean) * (x[d] - mean);
      var /= double(dim);
      double inv = 1.0 / std::sqrt(var + double(eps));
      for (int64_t d = 0; d < dim; ++d)
        y[d] = float((x[d] - mean) * inv) * wAt(w, d, 1.0f) + wAt(b, d, 0.0f);
    }
}

void rmsNorm(const float *in, int64_t ldi, float *out, int64_t ldo, int64_t rows,
             int64_t colOffset, int64_t cols, int64_t dim, WRef w, float eps, float weightOffset) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t g = colOffset; g < colOffset + cols; g += dim) {
      const float *x = in + r * ldi + g;
      float *y = out + r * ldo + g;
      double ss = 0.0;
      for (int64_t d = 0; d < dim; ++d)
        ss += double(x[d]) * x[d];
      float inv = float(1.0 / std::sqrt(ss / double(dim) + double(eps)));
      if (!w) {
        for (int64_t d = 0; d < dim; ++d)
          y[d] = x[d] * inv;
      } else {
        for (int64_t d = 0; d < dim; ++d)
          y[d] = x[d] * inv * (weightOffset + wAt(w, d, 1.0f));
      }
    }
}

void rope(float *buf, int64_t ld, int64_t T, const int64_t *pos, int heads, int headDim,
          int rotaryDim, const float *cosTab, const float *sinTab, bool interleaved) {
  int half = rotaryDim / 2;
  for (int64_t t = 0; t < T; ++t) {
    const float *c = cosTab + pos[t] * half, *s = sinTab + pos[t] * half;
    for (int h = 0; h < heads; ++h) {
      float *v = buf + t * ld + int64_t(h) * headDim;
      for (int i = 0; i < half; ++i) {
        int i1 = interleaved ? 2 * i : i, i2 = interleaved ? 2 * i + 1 : i + half;
        float x1 = v[i1], x2 = v[i2];
        v[i1] = x1 * c[i] - x2 * s[i];
        v[i2] = x2 * c[i] + x1 * s[i];
      }
    }
  }
}

#ifdef MOERT_HAVE_MVEC
// glibc libmvec's AVX-512 exp of 8 doubles (exp8, VecMath.h): within 4 ulp
// of double, so silu rounded to float matches the scalar double formula
// except in the rarest ties.

// GCC 12 flags the intrinsics' own _mm512_undefined_* as uninitialized.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#ifndef __clang__ // clang has no such group
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
/// SiLU in double, like activate(Silu, x), 8 lanes at a time; gated rows
/// multiply the float result by the up half (x[n + j]) in float. The tail is
/// done in a masked vector, so each element's result does not depend on its
/// position.
__attribute__((target("avx512f,avx512vl"))) static void siluRowAvx512(const float *x, float *y,
                                                                      int64_t n, bool gated) {
  const __m512d one = _mm512_set1_pd(1.0);
  for (int64_t j = 0; j < n; j += 8) {
    __mmask8 m = __mmask8(n - j >= 8 ? 0xff : (1u << (n - j)) - 1);
    __m512d xd = _mm512_cvtps_pd(_mm256_maskz_loadu_ps(m, x + j));
    __m512d e = exp8(_mm512_sub_pd(_mm512_setzero_pd(), xd));
    __m256 v = _mm512_cvtpd_ps(_mm512_div_pd(xd, _mm512_add_pd(one, e)));
    if (gated)
      v = _mm256_mul_ps(v, _mm256_maskz_loadu_ps(m, x + n + j));
    _mm256_mask_storeu_ps(y + j, m, v);
  }
}

/// swigluOai's row (gate at g, up at g + n), 8 lanes at a time in double as
/// the scalar loop: the same clamps (a NaN passes through min/max as second
/// operand, as through std::min and std::clamp) and the same exp.
__attribute__((target("avx512f,avx512vl"))) static void swigluOaiRowAvx512(float *g, int64_t n,
                                                                          float limit,
                                                                          float alpha) {
  const __m512d one = _mm512_set1_pd(1.0), hi = _mm512_set1_pd(double(limit)),
                lo = _mm512_set1_pd(-double(limit)), negAlpha = _mm512_set1_pd(-double(alpha));
  float *u = g + n;
  for (int64_t j = 0; j < n; j += 8) {
    __mmask8 m = __mmask8(n - j >= 8 ? 0xff : (1u << (n - j)) - 1);
    __m512d gate = _mm512_min_pd(hi, _mm512_cvtps_pd(_mm256_maskz_loadu_ps(m, g + j)));
    __m512d up = _mm512_cvtps_pd(_mm256_maskz_loadu_ps(m, u + j));
    up = _mm512_min_pd(hi, _mm512_max_pd(lo, up));
    __m512d e = exp8(_mm512_mul_pd(negAlpha, gate));
    __m512d v = _mm512_div_pd(_mm512_mul_pd(_mm512_add_pd(up, one), gate), _mm512_add_pd(one, e));
    _mm256_mask_storeu_ps(g + j, m, _mm512_cvtpd_ps(v));
  }
}
#pragma GCC diagnostic pop
#endif

void activation(const float *in, int64_t ldi, float *out, int64_t ldo, int64_t rows, int64_t n,
                Act act, bool gated) {
#ifdef MOERT_HAVE_MVEC
  // In place (out == in) is fine: a vector reads its x (and up) before it
  // writes the same or lower columns.
  if (act == Act::Silu && activeIsa() != Isa::Scalar) {
    for (int64_t r = 0; r < rows; ++r)
      siluRowAvx512(in + r * ldi, out + r * ldo, n, gated);
    return;
  }
#endif
  for (int64_t r = 0; r < rows; ++r) {
    const float *x = in + r * ldi;
    float *y = out + r * ldo;
    if (gated) {
      for (int64_t j = 0; j < n; ++j)
        y[j] = activate(act, x[j]) * x[n + j];
    } else if (act == Act::Silu) {
      for (int64_t j = 0; j < n; ++j)
        y[j] = x[j] / (1.0f + std::exp(-x[j]));
    } else {
      for (int64_t j = 0; j < n; ++j)
        y[j] = activate(act, x[j]);
    }
  }
}

void swigluOai(float *io, int64_t ld, int64_t rows, int64_t n, float limit, float alpha) {
#ifdef MOERT_HAVE_MVEC
  if (activeIsa() != Isa::Scalar) {
    for (int64_t r = 0; r < rows; ++r)
      swigluOaiRowAvx512(io + r * ld, n, limit, alpha);
    return;
  }
#endif
  for (int64_t r = 0; r < rows; ++r) {
    float *g = io + r * ld, *u = g + n;
    for (int64_t j = 0; j < n; ++j) {
      double gate = std::min(g[j], limit);
      double up = std::clamp(u[j], -limit, limit);
      g[j] = float((up + 1.0) * gate / (1.0 + std::exp(-double(alpha) * gate)));
    }
  }
}

//===----------------------------------------------------------------------===//
// Attention
//===----------------------------------------------------------------------===//

static void storeKV(void *dst, DType dt, size_t off, const float *src, int64_t n) {
  if (dt == DType::F32) {
    std::memcpy(static_cast<float *>(dst) + off, src, size_t(n) * 4);
    return;
  }
  for (int64_t i = 0; i < n; ++i)
    storeFromF32(dst, dt, off + size_t(i), src[i]);
}

/// n bf16 or f16 values at src + off (elements) as f32, 16 at a time (both
/// exact: bf16 shifted into the high half, f16 by vcvtph2ps).
__attribute__((target("avx512f,avx512bw,avx512vl"))) static void
widenAvx512(const void *src, DType dt, size_t off, float *dst, int64_t n) {
  const auto *p = static_cast<const uint16_t *>(src) + off;
  for (int64_t i = 0; i < n; i += 16) {
    __mmask16 m = __mmask16(n - i >= 16 ? 0xffff : (1u << (n - i)) - 1);
    __m256i h = _mm256_maskz_loadu_epi16(m, p + i);
    __m512 v = dt == DType::BF16
                   ? _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16))
                   : _mm512_cvtph_ps(h);
    _mm512_mask_storeu_ps(dst + i, m, v);
  }
}

static void loadKV(const void *src, DType dt, size_t off, float *dst, int64_t n) {
  if (dt == DType::F32) {
    std::memcpy(dst, static_cast<const float *>(src) + off, size_t(n) * 4);
    return;
  }
  // A cache row per head and position in attention: the scalar loop was
  // most of decode attention's time with bf16 caches.
  if ((dt == DType::BF16 || dt == DType::F16) && activeIsa() != Isa::Scalar)
    return widenAvx512(src, dt, off, dst, n);
  for (int64_t i = 0; i < n; ++i)
    dst[i] = loadAsF32(src, dt, off + size_t(i));
}

static float dotScalar(const float *a, const float *b, int64_t n) {
  float s = 0.0f;
  for (int64_t i = 0; i < n; ++i)
    s += a[i] * b[i];
  return s;
}

static void axpyScalar(float *y, float a, const float *x, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    y[i] += a * x[i];
}

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#ifndef __clang__ // clang has no such group
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
__attribute__((target("avx512f"))) static float dotAvx512(const float *a, const float *b,
                                                          int64_t n) {
  __m512 acc = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc);
  if (i < n) {
    __mmask16 m = __mmask16((1u << (n - i)) - 1);
    acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), acc);
  }
  return _mm512_reduce_add_ps(acc);
}

__attribute__((target("avx512f"))) static void axpyAvx512(float *y, float a, const float *x,
                                                          int64_t n) {
  __m512 av = _mm512_set1_ps(a);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(y + i, _mm512_fmadd_ps(av, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
  if (i < n) {
    __mmask16 m = __mmask16((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(y + i, m,
                          _mm512_fmadd_ps(av, _mm512_maskz_loadu_ps(m, x + i),
                                          _mm512_maskz_loadu_ps(m, y + i)));
  }
}
#pragma GCC diagnostic pop

namespace {
/// One attention work item: query heads [h0, h1) of a token, all of one kv
/// head, over its keys [start, p]. Each head's scores row is L floats.
struct AttendItem {
  const float *q;   // head h0's query; heads hd apart
  float *o;         // head h0's output; heads vd apart
  float *scores;    // head h0's scores; heads L apart
  const float *sinks; // per head (from h0), or null
  int nh;
  int64_t hd, vd, start, p, L;
  float scale;
};
constexpr int64_t kAttendBlock = 32; // keys whose K or V rows are at hand at once

/// The largest of head h's scores and its sink (HF subtracts the max over
/// the row with the sink appended).
float scoresMax(const AttendItem &it, int h) {
  const float *sc = it.scores + h * it.L;
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t j = it.start; j <= it.p; ++j)
    mx = std::max(mx, sc[j]);
  return it.sinks ? std::max(mx, it.sinks[h]) : mx;
}
} // namespace

#ifdef MOERT_HAVE_MVEC
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#ifndef __clang__
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#define MOERT_ATTEND_TARGET __attribute__((target("avx512f,avx512bw,avx512vl")))

static MOERT_ATTEND_TARGET __mmask16 laneMask(int64_t n) {
  return __mmask16(n >= 16 ? 0xffff : n <= 0 ? 0 : (1u << n) - 1);
}

/// The 16 horizontal sums of acc[0..15] as one vector (element i: acc[i]'s
/// sum): pairs combined within 128-bit lanes twice, then across lanes twice,
/// 45 instructions instead of 16 reductions of 10 dependent ones.
static MOERT_ATTEND_TARGET __m512 sum16(const __m512 (&acc)[16]) {
  __m512 s1[8], s2[4];
  for (int k = 0; k < 8; ++k) // lane: [a0+a2, b0+b2, a1+a3, b1+b3]
    s1[k] = _mm512_add_ps(_mm512_unpacklo_ps(acc[2 * k], acc[2 * k + 1]),
                          _mm512_unpackhi_ps(acc[2 * k], acc[2 * k + 1]));
  for (int k = 0; k < 4; ++k) // lane L: the lane-L sums of acc[4k .. 4k+3]
    s2[k] = _mm512_add_ps(_mm512_shuffle_ps(s1[2 * k], s1[2 * k + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                          _mm512_shuffle_ps(s1[2 * k], s1[2 * k + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  auto pairLanes = [](__m512 a, __m512 b) MOERT_ATTEND_TARGET {
    return _mm512_add_ps(_mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(3, 1, 3, 1)));
  };
  // [s2[0] L0+L1, L2+L3, s2[1] L0+L1, L2+L3], then lane m: s2[m]'s total.
  return pairLanes(pairLanes(s2[0], s2[1]), pairLanes(s2[2], s2[3]));
}

/// Scores of up to 16 keys (rows[0 .. nb)) for one query head q of hd.
static MOERT_ATTEND_TARGET void scores16(const float *q, const float *const *rows, int64_t nb,
                                         int64_t hd, float scale, float *out) {
  __m512 acc[16];
  for (int b = 0; b < 16; ++b)
    acc[b] = _mm512_setzero_ps();
  for (int64_t i = 0; i < hd; i += 16) {
    const __mmask16 m = laneMask(hd - i);
    const __m512 qv = _mm512_maskz_loadu_ps(m, q + i);
    for (int b = 0; b < 16; ++b) // missing keys read key 0's row, unused
      acc[b] = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(m, rows[b < nb ? b : 0] + i), acc[b]);
  }
  _mm512_mask_storeu_ps(out, laneMask(nb), _mm512_mul_ps(sum16(acc), _mm512_set1_ps(scale)));
}

/// o[h] += sum over the block's keys b of w[h][b] * rows[b], for NH heads
/// and 64 values from column c, in registers across the keys (the same
/// order as one axpy per key).
template <int NH>
static MOERT_ATTEND_TARGET void weightedRows(const float *const *rows, int64_t nb,
                                             const float *w, int64_t ldw, float *o, int64_t vd,
                                             int64_t c) {
  __m512 acc[NH][4];
  __mmask16 m[4];
  for (int v = 0; v < 4; ++v)
    m[v] = laneMask(vd - c - 16 * v);
  for (int h = 0; h < NH; ++h)
    for (int v = 0; v < 4; ++v)
      acc[h][v] = _mm512_maskz_loadu_ps(m[v], o + h * vd + c + 16 * v);
  for (int64_t b = 0; b < nb; ++b) {
    __m512 x[4];
    for (int v = 0; v < 4; ++v)
      x[v] = _mm512_maskz_loadu_ps(m[v], rows[b] + c + 16 * v);
    for (int h = 0; h < NH; ++h) {
      const __m512 wv = _mm512_set1_ps(w[h * ldw + b]);
      for (int v = 0; v < 4; ++v)
        acc[h][v] = _mm512_fmadd_ps(wv, x[v], acc[h][v]);
    }
  }
  for (int h = 0; h < NH; ++h)
    for (int v = 0; v < 4; ++v)
      _mm512_mask_storeu_ps(o + h * vd + c + 16 * v, m[v], acc[h][v]);
}

/// An attention item with AVX-512: K and V rows fetched (converted) once per
/// block of keys for all the item's heads; the scores of 16 keys at a time
/// with their sums reduced together (sum16); exp 8 lanes at a time in
/// double (libmvec); the weighted V sums in registers across the block's
/// keys. row(half, j, tmp) gives key j's row of a cache half (0: K, 1: V) as
/// f32, converted into tmp if needed.
template <class Row>
MOERT_ATTEND_TARGET static void attendAvx512(const AttendItem &it, Row &&row, float *kbuf,
                                             float *vbuf) {
  const float *rows[kAttendBlock];
  for (int64_t j0 = it.start; j0 <= it.p; j0 += kAttendBlock) {
    const int64_t nb = std::min(kAttendBlock, it.p + 1 - j0);
    for (int64_t b = 0; b < nb; ++b)
      rows[b] = row(0, j0 + b, kbuf + b * it.hd);
    for (int h = 0; h < it.nh; ++h)
      for (int64_t b = 0; b < nb; b += 16)
        scores16(it.q + h * it.hd, rows + b, std::min<int64_t>(16, nb - b), it.hd, it.scale,
                 it.scores + h * it.L + j0 + b);
  }
  for (int h = 0; h < it.nh; ++h) {
    float *sc = it.scores + h * it.L;
    const float mx = scoresMax(it, h);
    __m512d sum = _mm512_setzero_pd();
    const __m256 mxv = _mm256_set1_ps(mx);
    for (int64_t j = it.start; j <= it.p; j += 8) {
      __mmask8 m = __mmask8(laneMask(it.p + 1 - j) & 0xff);
      __m256 d = _mm256_sub_ps(_mm256_maskz_loadu_ps(m, sc + j), mxv);
      __m256 e = _mm512_cvtpd_ps(exp8(_mm512_cvtps_pd(d)));
      _mm256_mask_storeu_ps(sc + j, m, e);
      sum = _mm512_mask_add_pd(sum, m, sum, _mm512_cvtps_pd(e));
    }
    double total = _mm512_reduce_add_pd(sum);
    if (it.sinks)
      total += std::exp(double(it.sinks[h]) - double(mx));
    const float inv = float(1.0 / total);
    for (int64_t j = it.start; j <= it.p; ++j)
      sc[j] *= inv;
  }
  for (int64_t j0 = it.start; j0 <= it.p; j0 += kAttendBlock) {
    const int64_t nb = std::min(kAttendBlock, it.p + 1 - j0);
    for (int64_t b = 0; b < nb; ++b)
      rows[b] = row(1, j0 + b, vbuf + b * it.vd);
    for (int h = 0; h < it.nh; h += 4)
      for (int64_t c = 0; c < it.vd; c += 64) {
        const float *w = it.scores + h * it.L + j0;
        float *o = it.o + h * it.vd;
        switch (std::min(4, it.nh - h)) {
        case 1:
          weightedRows<1>(rows, nb, w, it.L, o, it.vd, c);
          break;
        case 2:
          weightedRows<2>(rows, nb, w, it.L, o, it.vd, c);
          break;
        case 3:
          weightedRows<3>(rows, nb, w, it.L, o, it.vd, c);
          break;
        default:
          weightedRows<4>(rows, nb, w, it.L, o, it.vd, c);
        }
      }
  }
}
#undef MOERT_ATTEND_TARGET
#pragma GCC diagnostic pop
#endif

/// An attention item (AttendItem) with attendAvx512 where the CPU has
/// AVX-512 and libmvec, else one head at a time: the scores of each key row,
/// a softmax per head (a sink, if any, one more logit in the denominator and
/// the max, as HF subtracts the max over the concatenated row, with no value
/// row), and the weighted sum of the value rows. The outputs start at zero.
template <class Row>
static void attendItem(const AttendItem &it, Row &&row, float *kbuf, float *vbuf) {
  for (int h = 0; h < it.nh; ++h)
    std::memset(it.o + h * it.vd, 0, size_t(it.vd) * 4);
  const bool avx = activeIsa() != Isa::Scalar;
#ifdef MOERT_HAVE_MVEC
  if (avx)
    return attendAvx512(it, row, kbuf, vbuf);
#endif
  auto dot = avx ? dotAvx512 : dotScalar;
  auto axpy = avx ? axpyAvx512 : axpyScalar;
  for (int64_t j = it.start; j <= it.p; ++j) {
    const float *k = row(0, j, kbuf);
    for (int h = 0; h < it.nh; ++h)
      it.scores[h * it.L + j] = dot(it.q + h * it.hd, k, it.hd) * it.scale;
  }
  for (int h = 0; h < it.nh; ++h) {
    float *sc = it.scores + h * it.L;
    const float mx = scoresMax(it, h);
    double sum = it.sinks ? std::exp(double(it.sinks[h]) - double(mx)) : 0.0;
    for (int64_t j = it.start; j <= it.p; ++j) {
      sc[j] = std::exp(sc[j] - mx);
      sum += sc[j];
    }
    float inv = float(1.0 / sum);
    for (int64_t j = it.start; j <= it.p; ++j)
      sc[j] *= inv;
  }
  for (int64_t j = it.start; j <= it.p; ++j) {
    const float *v = row(1, j, vbuf);
    for (int h = 0; h < it.nh; ++h)
      axpy(it.o + h * it.vd, it.scores[h * it.L + j], v, it.vd);
  }
}

void attention(ThreadPool &pool, Workspace &ws, const float *qkv, int64_t ldqkv, int64_t qCol,
               int64_t kCol, int64_t vCol, float *out, int64_t ldo, int64_t T,
               const int64_t *pos, KVView cache, int heads, int kvHeads, int headDim,
               float scale, int slidingWindow, WRef sinks, int vHeadDim) {
  // Keys are hd wide, values (and each head's output) vd (MLA: vd < hd).
  const int64_t hd = headDim, vd = vHeadDim > 0 ? vHeadDim : headDim, S = cache.maxSeq;
  for (int64_t t = 0; t < T; ++t)
    for (int g = 0; g < kvHeads; ++g) {
      int64_t r = g * S + cache.poolRow(t, pos[t]);
      storeKV(cache.k, cache.dtype, size_t(r * hd), qkv + t * ldqkv + kCol + g * hd, hd);
      storeKV(cache.v, cache.dtype, size_t(r * vd), qkv + t * ldqkv + vCol + g * vd, vd);
    }
  int64_t maxPos = 0;
  for (int64_t t = 0; t < T; ++t)
    maxPos = std::max(maxPos, pos[t]);
  // A work item is a token's kv head with some of the query heads that
  // share it (all of them unless that leaves too few items for the
  // threads): each K/V row is found and converted once for those heads, not
  // once per head. Per head the arithmetic is the same as one head at a time.
  const int group = heads / kvHeads;
  int perItem = group;
  while (perItem > 1 && T * kvHeads * ((group + perItem - 1) / perItem) < 2 * pool.size())
    perItem = (perItem + 1) / 2;
  const int64_t splits = (group + perItem - 1) / perItem;
  // Per thread: each head's scores over positions, f32 rows of a block of
  // keys' K and V for non-f32 caches, the heads' sink logits.
  const int64_t L = maxPos + 1;
  size_t scratch = size_t(perItem * (L + 1) + kAttendBlock * (hd + vd)) * 4 + 64;
  ws.reserveLocal(scratch);
  const int64_t work = T * kvHeads * splits;
  pool.parallelFor(size_t(work), 1, [&](size_t w0, size_t w1, int tid) {
    float *scoreRows = static_cast<float *>(ws.local(tid, scratch));
    float *kbuf = scoreRows + perItem * L, *vbuf = kbuf + kAttendBlock * hd;
    float *sinkVals = vbuf + kAttendBlock * vd;
    for (size_t w = w0; w < w1; ++w) {
      const int64_t t = int64_t(w) / (kvHeads * splits), p = pos[t];
      const int g = int(int64_t(w) / splits % kvHeads);
      const int h0 = g * group + int(int64_t(w) % splits) * perItem;
      const int h1 = std::min(h0 + perItem, (g + 1) * group);
      int64_t start = slidingWindow > 0 ? std::max<int64_t>(0, p - slidingWindow + 1) : 0;
      auto q = [&](int h) { return qkv + t * ldqkv + qCol + int64_t(h) * hd; };
      auto o = [&](int h) { return out + t * ldo + int64_t(h) * vd; };
      // Row j of head g of a cache half, as f32 (converted into `tmp` if needed).
      auto row = [&](const void *half, int64_t j, float *tmp, int64_t dim) -> const float * {
        size_t off = size_t((g * S + cache.poolRow(t, j)) * dim);
        if (cache.dtype == DType::F32)
          return static_cast<const float *>(half) + off;
        loadKV(half, cache.dtype, off, tmp, dim);
        return tmp;
      };
      for (int h = h0; h < h1; ++h)
        sinkVals[h - h0] = sinks ? loadAsF32(sinks.data, sinks.dtype, size_t(h)) : 0.0f;
      AttendItem it{q(h0), o(h0), scoreRows, sinks ? sinkVals : nullptr, h1 - h0, hd, vd, start,
                    p, L, scale};
      attendItem(
          it,
          [&](int half, int64_t j, float *tmp) {
            return half == 0 ? row(cache.k, j, tmp, hd) : row(cache.v, j, tmp, vd);
          },
          kbuf, vbuf);
    }
  });
}

void mlaAttention(ThreadPool &pool, Workspace &ws, const MlaInputs &in, float *out, int64_t ldo,
                  int64_t T, const int64_t *pos, KVView cache, const MlaParams &p) {
  // Cache rows are [c_kv (L) | k_pe (R)], one per position, shared by all
  // heads; kv_b rows are per head [W_UK_h (N rows) | W_UV_h (V rows)], each
  // L wide (row-major views of the weight, widened in registers by
  // axpyRows/dotRows, or a row at a time without AVX-512).
  const int64_t N = p.nopeDim, R = p.ropeDim, V = p.vHeadDim, L = p.kvLoraRank, C = L + R;
  for (int64_t t = 0; t < T; ++t) {
    size_t off = size_t(cache.poolRow(t, pos[t]) * C);
    storeKV(cache.k, cache.dtype, off, in.latent + t * in.ldLatent, L);
    storeKV(cache.k, cache.dtype, off + size_t(L), in.kPe + t * in.ldKPe, R);
  }
  int64_t maxPos = 0;
  for (int64_t t = 0; t < T; ++t)
    maxPos = std::max(maxPos, pos[t]);
  // Every head reads the same latent rows, like a single kv head: a work
  // item is a token with a group of heads (all unless that leaves too few
  // items for the threads), each row fetched and converted once for them.
  const int H = p.heads;
  int perItem = H;
  while (perItem > 1 && T * ((H + perItem - 1) / perItem) < 2 * pool.size())
    perItem = (perItem + 1) / 2;
  const int64_t splits = (H + perItem - 1) / perItem, P = maxPos + 1;
  // Per thread: the heads' scores, absorbed queries [q_nope W_UK | q_pe]
  // and weighted latent sums, f32 rows of a block of positions (as keys
  // and as values) and a weight row, as f32.
  size_t scratch = size_t(perItem * (P + C + L) + kAttendBlock * (C + L) + L) * 4 + 64;
  ws.reserveLocal(scratch);
  const bool rows = rowKernelsSupported(p.kvB);
  auto dot = activeIsa() != Isa::Scalar ? dotAvx512 : dotScalar;
  auto axpy = activeIsa() != Isa::Scalar ? axpyAvx512 : axpyScalar;
  // Row r of kv_b as f32 (without the row kernels).
  auto wRow = [&](int64_t r, float *tmp) -> const float * {
    if (p.kvB.format != QuantFormat::None) { // FP8 as published: one row dequantized
      dequantizeRows(p.kvB, L, r, r + 1, tmp);
      return tmp;
    }
    if (p.kvB.dtype == DType::F32)
      return static_cast<const float *>(p.kvB.data) + r * L;
    loadKV(p.kvB.data, p.kvB.dtype, size_t(r * L), tmp, L);
    return tmp;
  };
  pool.parallelFor(size_t(T * splits), 1, [&](size_t w0, size_t w1, int tid) {
    float *scores = static_cast<float *>(ws.local(tid, scratch));
    float *qa = scores + perItem * P, *olat = qa + perItem * C;
    float *kbuf = olat + perItem * L, *vbuf = kbuf + kAttendBlock * C;
    float *wtmp = vbuf + kAttendBlock * L;
    for (size_t w = w0; w < w1; ++w) {
      const int64_t t = int64_t(w) / splits, pt = pos[t];
      const int h0 = int(int64_t(w) % splits) * perItem, h1 = std::min(H, h0 + perItem);
      for (int h = h0; h < h1; ++h) {
        // qa_h[0:L] = q_nope_h W_UK_h (a sum of W_UK's rows), qa_h[L:] = q_pe_h.
        const float *q = in.q + t * in.ldq + h * (N + R);
        float *qah = qa + (h - h0) * C;
        const int64_t ukRow = h * (N + V);
        std::memset(qah, 0, size_t(L) * 4);
        if (rows)
          axpyRows(p.kvB, L, ukRow, N, q, qah);
        else
          for (int64_t i = 0; i < N; ++i)
            axpy(qah, q[i], wRow(ukRow + i, wtmp), L);
        std::memcpy(qah + L, q + N, size_t(R) * 4);
      }
      // Keys are whole cache rows [c_kv | k_pe], values their c_kv.
      AttendItem it{qa, olat, scores, nullptr, h1 - h0, C, L, 0, pt, P, p.scale};
      attendItem(
          it,
          [&](int half, int64_t j, float *tmp) -> const float * {
            size_t off = size_t(cache.poolRow(t, j) * C);
            if (cache.dtype == DType::F32)
              return static_cast<const float *>(cache.k) + off;
            loadKV(cache.k, cache.dtype, off, tmp, half == 0 ? C : L);
            return tmp;
          },
          kbuf, vbuf);
      for (int h = h0; h < h1; ++h) {
        // out_h = olat_h W_UV_h^T: one dot per value dim.
        const float *ol = olat + (h - h0) * L;
        float *o = out + t * ldo + h * V;
        const int64_t uvRow = h * (N + V) + N;
        if (rows)
          dotRows(p.kvB, L, uvRow, V, ol, o);
        else
          for (int64_t v = 0; v < V; ++v)
            o[v] = dot(wRow(uvRow + v, wtmp), ol, L);
      }
    }
  });
}

void gatherColumns(const ColumnRange *inputs, size_t numInputs, const int32_t *indices,
                   size_t numIndices, float *out, int64_t ldo, int64_t T) {
  // Resolve each index to (input, column) once, then copy row by row.
  std::vector<std::pair<const float *, int64_t>> src(numIndices);
  for (size_t j = 0; j < numIndices; ++j) {
    int64_t c = indices[j];
    size_t i = 0;
    while (i + 1 < numInputs && c >= inputs[i].width)
      c -= inputs[i++].width;
    src[j] = {inputs[i].data + c, inputs[i].ld};
  }
  for (int64_t t = 0; t < T; ++t) {
    float *o = out + t * ldo;
    for (size_t j = 0; j < numIndices; ++j)
      o[j] = src[j].first[t * src[j].second];
  }
}

//===----------------------------------------------------------------------===//
// Gating
//===----------------------------------------------------------------------===//

int64_t gate(const float *logits, int64_t ld, int64_t T, const GateParams &p, int32_t *slotExpert,
             float *slotWeight, int32_t *expertOffsets, int32_t *sortedSlots,
             uint64_t *routedCounts) {
  const int E = p.sel.numExperts, K = p.sel.topK;
  ExpertSelection sel = p.sel;
  if (p.selectionBias && sel.bias.empty())
    for (int e = 0; e < E; ++e)
      sel.bias.push_back(loadAsF32(p.selectionBias.data, p.selectionBias.dtype, size_t(e)));
  std::vector<double> score(static_cast<size_t>(E));
  std::vector<int> pick(static_cast<size_t>(K));
  for (int64_t t = 0; t < T; ++t) {
    // The scores and the choice (moert::selectExperts, which expert
    // prediction shares); the weights come from the scores.
    selectExperts(logits + t * ld, sel, score.data(), pick.data());
    double w[64], wsum = 0.0;
    std::vector<double> wv(static_cast<size_t>(K));
    double *wp = K <= 64 ? w : wv.data();
    if (sel.softmaxBeforeTopk) {
      for (int j = 0; j < K; ++j)
        wp[j] = score[size_t(pick[size_t(j)])];
    } else if (sel.sigmoid) {
      for (int j = 0; j < K; ++j)
        wp[j] = 1.0 / (1.0 + std::exp(-score[size_t(pick[size_t(j)])]));
    } else {
      double mx = score[size_t(pick[0])], s = 0.0;
      for (int j = 0; j < K; ++j)
        s += wp[j] = std::exp(score[size_t(pick[size_t(j)])] - mx);
      for (int j = 0; j < K; ++j)
        wp[j] /= s;
    }
    for (int j = 0; j < K; ++j)
      wsum += wp[j];
    for (int j = 0; j < K; ++j) {
      slotExpert[t * K + j] = pick[size_t(j)];
      slotWeight[t * K + j] =
          float((p.normTopk ? wp[j] / wsum : wp[j]) * double(p.routedScalingFactor));
      if (routedCounts)
        ++routedCounts[pick[size_t(j)]];
    }
  }
  // Capacity: slots admitted in slot (token-major) order.
  int64_t slots = T * K;
  int64_t cap = std::numeric_limits<int64_t>::max();
  if (p.dropTokens)
    cap = std::max<int64_t>(p.minCapacity,
                            int64_t(std::ceil(double(p.capacityFactor) * double(T) * K / E)));
  std::vector<int64_t> count(size_t(E), 0);
  for (int64_t s = 0; s < slots; ++s) {
    int e = slotExpert[s];
    if (count[size_t(e)] < cap)
      ++count[size_t(e)];
    else
      slotWeight[s] = 0.0f;
  }
  expertOffsets[0] = 0;
  for (int e = 0; e < E; ++e)
    expertOffsets[e + 1] = expertOffsets[e] + int32_t(count[size_t(e)]);
  std::vector<int32_t> fill(expertOffsets, expertOffsets + E);
  std::fill(count.begin(), count.end(), 0);
  for (int64_t s = 0; s < slots; ++s) {
    int e = slotExpert[s];
    if (count[size_t(e)]++ < cap)
      sortedSlots[fill[size_t(e)]++] = int32_t(s);
  }
  return expertOffsets[E];
}

void combine(const float *slotOut, const float *slotWeight, int64_t T, int topK, int64_t D,
             float *out, int64_t ldo, bool accumulate) {
  for (int64_t t = 0; t < T; ++t) {
    float *o = out + t * ldo;
    for (int64_t d = 0; d < D; ++d) {
      float s = 0.0f;
      for (int j = 0; j < topK; ++j)
        s += slotWeight[t * topK + j] * slotOut[(t * topK + j) * D + d];
      o[d] = accumulate ? o[d] + s : s;
    }
  }
}

} // namespace moert::cpu

namespace moert::cpu {

void add(const float *a, const float *b, float *out, size_t n) {
  for (size_t i = 0; i < n; ++i)
    out[i] = a[i] + b[i];
}

void sigmoidGate(const float *g, int64_t ldg, float *io, int64_t ldio, int64_t T) {
  for (int64_t t = 0; t < T; ++t) {
    float sg = activate(Act::Sigmoid, g[t * ldg]);
    for (int64_t d = 0; d < ldio; ++d)
      io[t * ldio + d] *= sg;
  }
}

void residualMix(const float *m, const float *d, const float *c, int64_t lc, float *o, int64_t D,
                 int64_t T) {
  for (int64_t t = 0; t < T; ++t) {
    double c0 = c[t * lc], c1 = c[t * lc + 1], mx = std::max(c0, c1);
    double e0 = std::exp(c0 - mx), e1 = std::exp(c1 - mx);
    float w0 = float(e0 / (e0 + e1)), w1 = float(e1 / (e0 + e1));
    for (int64_t j = 0; j < D; ++j)
      o[t * D + j] = m[t * D + j] * w0 + d[t * D + j] * w1;
  }
}

} // namespace moert::cpu
