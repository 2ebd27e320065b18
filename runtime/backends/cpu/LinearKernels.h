//===- LinearKernels.h - The matrix-product kernels, by family --*- C++ -*-===//
//
// Internal to the CPU backend: the kernels of each family (row-major AVX-512
// rows and tiles in RowMajor.cpp, packed bf16 blocks in Packed.cpp, portable
// panels and the dispatch in Linear.cpp) and what they share. The hot loops
// stay inside their file; the dispatch calls them once per chunk of rows.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "moert/cpu/Kernels.h"

#include <immintrin.h>

#include <cstdint>
#include <cstdlib>

#define MOERT_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma,f16c")))
#define MOERT_AVX512BF16                                                                         \
  __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma,f16c,avx512bf16")))
#define MOERT_INLINE inline __attribute__((always_inline))

namespace moert::cpu {

inline int64_t roundUp(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

/// Software prefetch distance (bytes ahead in a weight stream, into L2).
/// Zen 4's hardware prefetchers fall behind once the core also computes
/// (5-token rows streamed at 16 GB/s without, 24 GB/s with;
/// bench/runtime/kernel-bench).
inline const int64_t kPrefetchDist = [] {
  const char *e = std::getenv("MOERT_PREFETCH_DIST");
  return e ? std::atoll(e) : int64_t(32) << 10;
}();

/// The strategy setLinearStrategy chose (Isa.cpp).
LinearStrategy linearStrategy();

// --- Row-major weights, AVX-512 (RowMajor.cpp) ---------------------------------

/// X rows converted for the row kernels of weight type `wt` (Kp floats each).
void packRowsF32(const float *X, int64_t ldx, int64_t T, int64_t K, DType wt, float *out);
using GemvFn = void (*)(const void *, int64_t, int64_t, int64_t, const float *, float *, int64_t,
                        bool);
/// Rows [n0, n1) streamed once for T <= 4 tokens.
GemvFn gemvFor(DType wt, int64_t T);
/// The scalar fallback of gemvFor.
void gemvRowsScalar(WRef W, int64_t K, int64_t n0, int64_t n1, const float *X, int64_t ldx,
                    int64_t T, float *Y, int64_t ldy, bool accumulate);
/// X packed for the 4x4 tiles ([K/32][Tp][32]), bf16 or f32.
void packXBf16(const float *X, int64_t ldx, int64_t T, int64_t K, int64_t Tp, uint16_t *out);
void packXF32(const float *X, int64_t ldx, int64_t T, int64_t K, int64_t Tp, DType wt,
              float *out);
using TilesFn = void (*)(const void *, int64_t, int64_t, int64_t, const void *, int64_t, int64_t,
                         float *, int64_t, bool);
/// Prefill tiles: bf16 dot products (dp) or exact FMAs for weights of `wt`.
TilesFn tilesFor(bool dp, DType wt);
/// X rows rounded to bf16 for the dot-product rows kernel.
void packRowsBf16(const float *X, int64_t ldx, int64_t T, int64_t K, uint16_t *out);
using DpRowsFn = void (*)(const uint16_t *, int64_t, int64_t, int64_t, const uint16_t *, float *,
                          int64_t, bool);
DpRowsFn dpRowsFor(int64_t T);

// --- Packed bf16 weights (Packed.cpp) -------------------------------------------

inline int64_t pairsOf(int64_t K) { return (K + 1) / 2; }
void packXPairsF32(const float *X, int64_t ldx, int64_t T, int64_t K, float *out);
void gemvPacked(const uint16_t *W, int64_t N, int64_t K2, int64_t b0, int64_t b1,
                const float *x, float *y, bool accumulate);
const void *packXPairs(Workspace &ws, const float *X, int64_t ldx, int64_t T, int64_t K, bool dp);
void packedBlocks(const uint16_t *W, int64_t N, int64_t K2, int64_t b0, int64_t b1, const void *Xp,
                  int64_t T, float *Y, int64_t ldy, bool accumulate, bool dp);
void linearPackedTiles(ThreadPool &pool, Workspace &ws, const float *X, int64_t ldx, int64_t T,
                       const uint16_t *W, int64_t N, int64_t K, float *Y, int64_t ldy,
                       bool accumulate, bool dp);

// --- Quantized weights (Quant.cpp) ------------------------------------------------

/// 16 e4m3 bytes as f32 / 2^8 (exact: f16 with the same bit fields). The
/// byte sign-extended and shifted left by 7 puts the sign in bit 15 (from
/// the extension) and exponent/mantissa in bits 7..13; bit 14 (the sign
/// again) is cleared.
MOERT_AVX512 MOERT_INLINE __m512 fp8x16(__m128i b) {
  __m256i h = _mm256_slli_epi16(_mm256_cvtepi8_epi16(b), 7);
  return _mm512_cvtph_ps(_mm256_and_si256(h, _mm256_set1_epi16(int16_t(0xbf80))));
}


/// X as gemvFp8Avx512 reads it: with `tiny`, each token's row times a power
/// of two 2^k (in scratch, T * K floats) and 2^(120 - k) per token; else
/// (MXCSR's DAZ set) X itself.
struct Fp8X {
  const float *x = nullptr;
  int64_t ldx = 0, T = 1;
  bool tiny = false;
  float unscale[4] = {1, 1, 1, 1};
};
/// Prepares X [T <= 4, K] once per product, before the rows are split.
Fp8X prepareFp8X(const float *X, int64_t ldx, int64_t T, int64_t K, float *scratch);
/// Y[t, n0:n1] (+)= X[t] W^T for T <= 4 tokens of FP8 block-scaled W.
void gemvFp8Avx512(WRef W, int64_t K, int64_t n0, int64_t n1, const Fp8X &x, float *Y,
                   int64_t ldy, bool accumulate);
/// X [T, K] with each group of 32 values as its 16 even then 16 odd ones
/// (the order of an MXFP4 group's low and high nibbles), rows K apart.
void deinterleaveMxfp4X(const float *X, int64_t ldx, int64_t T, int64_t K, float *out);
/// FP8 with AVX512-BF16 dot products (Precision::BF16): needs AVX512-VBMI
/// (vpermi2b) and scale blocks of 64-column multiples.
bool fp8Bf16Supported(WRef W);
/// The row stride of toBf16Fp8X's output: K rounded up to 64 values.
int64_t fp8XStride(int64_t K);
/// X [T, K] rounded to bf16 in gemvFp8Bf16's order, rows fp8XStride(K) apart.
void toBf16Fp8X(const float *X, int64_t ldx, int64_t T, int64_t K, uint16_t *out);
/// Y[t, n0:n1] (+)= X[t] W^T for T <= 4 tokens of FP8 block-scaled W with
/// AVX512-BF16 dot products (weights exact as bf16, X rounded).
void gemvFp8Bf16(WRef W, int64_t K, int64_t n0, int64_t n1, const uint16_t *Xb, int64_t T,
                 float *Y, int64_t ldy, bool accumulate);
/// The row stride of toBf16Mxfp4X's output: K rounded up to 128 values.
int64_t mxfp4XStride(int64_t K);
/// X [T, K] rounded to bf16 (nearest even) in the order of
/// gemvMxfp4Bf16's four-group chunks, zero-padded to rows
/// mxfp4XStride(K) apart: what it reads in plans that compute in bf16.
void toBf16Mxfp4X(const float *X, int64_t ldx, int64_t T, int64_t K, uint16_t *out);
/// Y[t, n0:n1] (+)= X[t] W^T for T <= 4 tokens of MXFP4 W with AVX512-BF16
/// dot products (weights exact as bf16, X rounded: Precision::BF16 only).
void gemvMxfp4Bf16(WRef W, int64_t K, int64_t n0, int64_t n1, const uint16_t *Xb, int64_t T,
                   float *Y, int64_t ldy, bool accumulate);
/// Y[t, n0:n1] (+)= X[t] W^T for T <= 4 tokens of MXFP4 W, with X
/// de-interleaved by deinterleaveMxfp4X.
void gemvMxfp4Avx512(WRef W, int64_t K, int64_t n0, int64_t n1, const float *Xd, int64_t T,
                     float *Y, int64_t ldy, bool accumulate);

} // namespace moert::cpu
