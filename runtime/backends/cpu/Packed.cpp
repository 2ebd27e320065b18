//===- Packed.cpp - Products with packed bf16 weights (Layout::Packed16) --===//
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
void packXPairsF32(const float *X, int64_t ldx, int64_t T, int64_t K, float *out) {
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
MOERT_AVX512 void gemvPacked(const uint16_t *W, int64_t N, int64_t K2, int64_t b0,
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

/// The token tiles of T tokens: balanced sizes of at most kDpTile (dp) or
/// kFmaTile; tile i starts at token t0 and holds tt tokens.
struct TokenTiles {
  int64_t T, count;
  TokenTiles(int64_t T, bool dp) : T(T) {
    const int64_t maxTile = dp ? kDpTile : kFmaTile;
    count = (T + maxTile - 1) / maxTile;
  }
  int64_t size(int64_t i) const { return T / count + (i < T % count ? 1 : 0); }
};

/// X [T, K] in the order of the packed kernels: bf16 pairs (dp) or f32 pairs
/// in shared slot 0, one panel per token tile (TokenTiles), [K2][tt] each,
/// the panels in tile order: a tile's x is contiguous (with all T tokens a
/// row of pairs, T = 512 put a tile's pairs 2 KiB apart, onto few cache
/// sets).
const void *packXPairs(Workspace &ws, const float *X, int64_t ldx, int64_t T, int64_t K,
                       bool dp) {
  const int64_t K2 = pairsOf(K);
  const TokenTiles tiles(T, dp);
  void *buf = ws.shared(0, size_t(K2 * T) * (dp ? 4 : 8));
  for (int64_t i = 0, t0 = 0; i < tiles.count; t0 += tiles.size(i), ++i) {
    const int64_t tt = tiles.size(i);
    if (dp)
      packXPairsBf16(X + t0 * ldx, ldx, tt, K, static_cast<uint32_t *>(buf) + t0 * K2);
    else
      packXPairsF32(X + t0 * ldx, ldx, tt, K, static_cast<float *>(buf) + 2 * t0 * K2);
  }
  return buf;
}

/// Weight bytes of the blocks that go through all the token tiles together:
/// they stay in L2 beside a tile's x.
static constexpr int64_t kSuperBlockBytes = 384 << 10;

/// Blocks [b0, b1) of packed W against all T >= 2 tokens of X packed by
/// packXPairs: a few blocks at a time (kSuperBlockBytes) go through every
/// token tile, so a block is fetched from DRAM once (prefetched by the first
/// tile) and the later tiles find it in L2, and each tile's x is read once
/// per few blocks. Each block and tile sums over all of K at once: the same
/// floats whatever the split.
void packedBlocks(const uint16_t *W, int64_t N, int64_t K2, int64_t b0, int64_t b1,
                  const void *Xp, int64_t T, float *Y, int64_t ldy, bool accumulate, bool dp) {
  const TokenTiles tiles(T, dp);
  const int64_t perSuper =
      tiles.count == 1 ? b1 - b0 : std::max<int64_t>(1, kSuperBlockBytes / (K2 * 64));
  for (int64_t s0 = b0; s0 < b1; s0 += perSuper) {
    const int64_t s1 = std::min(b1, s0 + perSuper);
    const char *end = reinterpret_cast<const char *>(W + s1 * K2 * 32);
    for (int64_t i = 0, t0 = 0; i < tiles.count; t0 += tiles.size(i), ++i) {
      const int64_t tt = tiles.size(i);
      const void *xt = dp ? static_cast<const void *>(static_cast<const uint32_t *>(Xp) + t0 * K2)
                          : static_cast<const void *>(static_cast<const float *>(Xp) + 2 * t0 * K2);
      packedFor(dp, tt)(W, N, K2, s0, s1, xt, dp ? tt : 2 * tt, Y + t0 * ldy, ldy, accumulate,
                        i == 0 ? end : nullptr);
    }
  }
}

/// Y = X W^T for packed W and T >= 2 tokens on AVX-512.
void linearPackedTiles(ThreadPool &pool, Workspace &ws, const float *X, int64_t ldx,
                              int64_t T, const uint16_t *W, int64_t N, int64_t K, float *Y,
                              int64_t ldy, bool accumulate, bool dp) {
  const void *Xp = packXPairs(ws, X, ldx, T, K, dp);
  pool.parallelFor(size_t((N + 15) / 16), 1, [&](size_t b0, size_t b1, int) {
    packedBlocks(W, N, pairsOf(K), int64_t(b0), int64_t(b1), Xp, T, Y, ldy, accumulate, dp);
  });
}


} // namespace moert::cpu
