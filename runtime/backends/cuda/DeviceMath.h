//===- DeviceMath.h - Per-thread math of the CUDA kernels -------*- C++ -*-===//
//
// Everything a CUDA kernel computes per thread that is not a memory access
// pattern: conversions, activations, norm statistics, RoPE pairs, the fused
// gate's top-k / capacity / mapping table, the grouped GEMM's tile bounds,
// attention's split ranges and softmax merges, and the top-p cut. The
// functions are `__host__ __device__` under nvcc and plain inline C++
// otherwise, so the unit tests (test/unit/cuda/DeviceMathTest.cpp) run them
// on the CPU against the reference kernels of runtime/cpu. No CUDA header
// is needed to include this file.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "moert/HalfFloat.h"

#include <math.h>
#include <stdint.h>

#if defined(__CUDACC__)
#define MOE_HD __host__ __device__ __forceinline__
#else
#define MOE_HD inline
#endif

namespace moert::cuda {

/// Weight element types; the values equal moe::plan::DType's.
enum class WType : uint8_t { F32 = 0, BF16 = 1, F16 = 2 };

/// Activation kinds; the values equal moe::plan::ActKind's and cpu::Act's order.
enum class ActKind : uint8_t {
  Gelu = 0,
  GeluTanh = 1,
  Silu = 2,
  Relu = 3,
  Sigmoid = 4,
  Identity = 5,
  SwigluOai = 6 // gpt-oss's clamped SwiGLU: Experts steps only (swigluOai)
};

namespace math {

//===----------------------------------------------------------------------===//
// Conversions
//===----------------------------------------------------------------------===//

// One definition for the host and the kernels (moert/HalfFloat.h).
using moert::bf16ToF32;
using moert::bitsToF32;
using moert::f16ToF32;
using moert::f32ToBf16;
using moert::f32ToBits;
using moert::f32ToF16;

/// Element i of a F32/BF16/F16 array as float.
MOE_HD float loadW(const void *p, WType t, int64_t i) {
  switch (t) {
  case WType::BF16:
    return bf16ToF32(static_cast<const uint16_t *>(p)[i]);
  case WType::F16:
    return f16ToF32(static_cast<const uint16_t *>(p)[i]);
  default:
    return static_cast<const float *>(p)[i];
  }
}

MOE_HD void storeW(void *p, WType t, int64_t i, float v) {
  switch (t) {
  case WType::BF16:
    static_cast<uint16_t *>(p)[i] = f32ToBf16(v);
    break;
  case WType::F16:
    static_cast<uint16_t *>(p)[i] = f32ToF16(v);
    break;
  default:
    static_cast<float *>(p)[i] = v;
    break;
  }
}

MOE_HD int wtypeSize(WType t) { return t == WType::F32 ? 4 : 2; }

//===----------------------------------------------------------------------===//
// Quantized weights (plan.fbs WeightFormat), dequantized at upload
//===----------------------------------------------------------------------===//

/// The values equal moe::plan::WeightFormat's.
enum class QFormat : uint8_t { FP8E4M3Block = 1, MXFP4 = 2 };

/// FP8 e4m3 ("fn": bias 7, no infinities, 0x7f/0xff NaN) as f32, exactly:
/// the f32 fields are built from e4m3's, subnormals m * 2^-9.
MOE_HD float fp8e4m3ToF32(uint8_t v) {
  const uint32_t e = (v >> 3) & 15u, m = v & 7u, sign = uint32_t(v & 0x80u) << 24;
  if (e == 15 && m == 7)
    return bitsToF32(sign | 0x7fc00000u);
  if (e == 0)
    return bitsToF32(sign | f32ToBits(float(m) * 0.001953125f));
  return bitsToF32(sign | ((e + 120u) << 23) | (m << 20));
}

/// e2m1 (sign, 2 exponent bits of bias 1, 1 mantissa bit) as f32.
MOE_HD float e2m1ToF32(uint8_t nibble) {
  const float mags[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  float m = mags[nibble & 7];
  return nibble & 8 ? -m : m;
}

/// e8m0 scale 2^(s - 127) as HF's ldexp gives it: s = 0 is the subnormal
/// 2^-127, s = 255 overflows to infinity.
MOE_HD float e8m0ToF32(uint8_t s) {
  if (s == 0)
    return bitsToF32(0x00400000u);
  return bitsToF32(uint32_t(s) << 23); // s = 255: 0x7f800000, infinity
}

/// Element (n, k) of a quantized [N, K] matrix: its stored rows `q`
/// (quantRowBytes each: K bytes, or K/2 for MXFP4) and its scale grid
/// (FP8: f32 [ceil(N/bn), ceil(K/bk)]; MXFP4: e8m0 [N, K/32]).
MOE_HD float dequantAt(QFormat f, const uint8_t *q, const void *scales, int64_t K, int64_t bn,
                       int64_t bk, int64_t n, int64_t k) {
  if (f == QFormat::MXFP4) {
    uint8_t b = q[n * (K / 2) + k / 2];
    uint8_t s = static_cast<const uint8_t *>(scales)[n * (K / 32) + k / 32];
    return e2m1ToF32(k & 1 ? uint8_t(b >> 4) : uint8_t(b & 15)) * e8m0ToF32(s);
  }
  const int64_t cols = (K + bk - 1) / bk;
  float s = static_cast<const float *>(scales)[(n / bn) * cols + k / bk];
  return fp8e4m3ToF32(q[n * K + k]) * s;
}

//===----------------------------------------------------------------------===//
// Activations (double inside, like cpu::activate)
//===----------------------------------------------------------------------===//

MOE_HD float activate(ActKind a, float x) {
  double xd = x;
  switch (a) {
  case ActKind::Gelu:
    return float(0.5 * xd * (1.0 + erf(xd * 0.70710678118654752440)));
  case ActKind::GeluTanh:
    return float(0.5 * xd * (1.0 + tanh(0.7978845608028654 * (xd + 0.044715 * xd * xd * xd))));
  case ActKind::Silu:
    return float(xd / (1.0 + exp(-xd)));
  case ActKind::Relu:
    return x > 0.0f ? x : 0.0f;
  case ActKind::Sigmoid:
    return float(1.0 / (1.0 + exp(-xd)));
  case ActKind::Identity:
  case ActKind::SwigluOai: // two operands and parameters: swigluOai below
    return x;
  }
  return x;
}

/// gpt-oss's clamped SwiGLU of one hidden unit (plan.fbs Experts 3.1), as
/// cpu::swigluOai: g = min(gate, limit), u = clamp(up, -limit, limit) in
/// std::min/std::clamp's order (a NaN passes through), then
/// (u + 1) * g * sigmoid(alpha * g) in double.
MOE_HD float swigluOai(float gate, float up, float limit, float alpha) {
  double g = limit < gate ? limit : gate;
  double u = up < -limit ? -limit : (limit < up ? limit : up);
  return float((u + 1.0) * g / (1.0 + exp(-double(alpha) * g)));
}

/// out[j] of an Activation op; `x` is the row (gated: [gate | up], n each).
MOE_HD float activationAt(ActKind a, bool gated, const float *x, int64_t n, int64_t j) {
  float v = activate(a, x[j]);
  return gated ? v * x[n + j] : v;
}

//===----------------------------------------------------------------------===//
// Norms: statistics accumulate in double (as the CPU reference)
//===----------------------------------------------------------------------===//

/// 1/rms from the sum of squares of `dim` elements.
MOE_HD float rmsInv(double sumSq, int64_t dim, float eps) {
  return float(1.0 / sqrt(sumSq / double(dim) + double(eps)));
}

/// y of RMSNorm for one element (w absent: hasW false).
MOE_HD float rmsApply(float x, float inv, bool hasW, float w, float weightOffset) {
  return hasW ? x * inv * (weightOffset + w) : x * inv;
}

/// 1/stddev of LayerNorm from the mean and the sum of squared deviations.
MOE_HD double layerInv(double sumDev2, int64_t dim, float eps) {
  return 1.0 / sqrt(sumDev2 / double(dim) + double(eps));
}

MOE_HD float layerApply(float x, double mean, double inv, float w, float b) {
  return float((double(x) - mean) * inv) * w + b;
}

//===----------------------------------------------------------------------===//
// RoPE
//===----------------------------------------------------------------------===//

/// The two dims rotated by pair i (i < rotaryDim/2) of a head.
MOE_HD void ropePair(int i, int half, bool interleaved, int &i1, int &i2) {
  i1 = interleaved ? 2 * i : i;
  i2 = interleaved ? 2 * i + 1 : i + half;
}

MOE_HD void ropeRotate(float &x1, float &x2, float c, float s) {
  float a = x1, b = x2;
  x1 = a * c - b * s;
  x2 = b * c + a * s;
}

//===----------------------------------------------------------------------===//
// Fused gate
//===----------------------------------------------------------------------===//

struct GateParams {
  int numExperts = 0, topK = 0;
  bool sigmoid = false, softmaxBeforeTopk = true, normTopk = false;
  float capacityFactor = 0.0f;
  int minCapacity = 0;
  bool dropTokens = false;
  // DeepSeek-V3's routing (plan 3.2): groups of numExperts / numGroups
  // experts of which the topkGroups best (by the sum of their two best
  // choices) stay eligible, a selection-only bias (numExperts values of
  // selectionBiasType, or null) and the weights' final scale.
  int numGroups = 1, topkGroups = 1;
  const void *selectionBias = nullptr;
  WType selectionBiasType = WType::F32;
  float routedScalingFactor = 1.0f;
};

/// The most experts, top_k and groups the one-kernel gate handles
/// (register/shared arrays); plans beyond this are refused by the host
/// wrapper.
constexpr int kGateMaxExperts = 512;
constexpr int kGateMaxTopK = 32;
constexpr int kGateMaxGroups = 64;

/// Group-limited routing: zeroes choice[e] of every expert outside the
/// topkGroups groups whose two best choices sum highest (ties to the lower
/// group). numGroups <= kGateMaxGroups, dividing numExperts.
MOE_HD void keepTopGroups(const GateParams &p, double *choice) {
  const int G = p.numGroups, per = p.numExperts / G;
  double groupScore[kGateMaxGroups];
  bool keep[kGateMaxGroups];
  for (int g = 0; g < G; ++g) {
    double b1 = -INFINITY, b2 = -INFINITY;
    for (int e = g * per; e < (g + 1) * per; ++e) {
      double c = choice[e];
      if (c > b1) {
        b2 = b1;
        b1 = c;
      } else if (c > b2) {
        b2 = c;
      }
    }
    groupScore[g] = b1 + b2;
    keep[g] = false;
  }
  for (int j = 0; j < p.topkGroups; ++j) {
    int best = -1;
    for (int g = 0; g < G; ++g)
      if (!keep[g] && (best < 0 || groupScore[g] > groupScore[best]))
        best = g;
    if (best >= 0)
      keep[best] = true;
  }
  for (int e = 0; e < p.numExperts; ++e)
    if (!keep[e / per])
      choice[e] = 0.0;
}

/// One token's routing: scores of `row` (numExperts logits) into `score`
/// (scratch, numExperts doubles), top-k picks (descending, ties to the lower
/// expert id) into pick[0..topK) and combine weights before capacity into
/// weight[0..topK). `choice` (numExperts doubles) is scratch for what top-k
/// ranks under a selection bias or groups. Same arithmetic as cpu::gate
/// (moert::selectExperts for the choice).
MOE_HD void gateToken(const float *row, const GateParams &p, double *score, double *choice,
                      int *pick, float *weight) {
  const int E = p.numExperts, K = p.topK;
  if (p.softmaxBeforeTopk) {
    if (p.sigmoid) {
      for (int e = 0; e < E; ++e)
        score[e] = 1.0 / (1.0 + exp(-double(row[e])));
    } else {
      double mx = row[0], sum = 0.0;
      for (int e = 1; e < E; ++e)
        mx = double(row[e]) > mx ? double(row[e]) : mx;
      for (int e = 0; e < E; ++e)
        sum += score[e] = exp(double(row[e]) - mx);
      for (int e = 0; e < E; ++e)
        score[e] /= sum;
    }
  } else {
    for (int e = 0; e < E; ++e)
      score[e] = row[e];
  }
  // What top-k ranks: the scores, or with a selection bias or groups (HF
  // DeepseekV3MoE) scores + bias, a group scoring the sum of its two best,
  // the experts of the groups left out ranking as 0.0 (masked_fill with 0).
  const double *rank = score;
  if (p.selectionBias || p.numGroups > 1) {
    for (int e = 0; e < E; ++e)
      choice[e] = score[e] + (p.selectionBias ? double(loadW(p.selectionBias,
                                                             p.selectionBiasType, e))
                                              : 0.0);
    if (p.numGroups > 1)
      keepTopGroups(p, choice);
    rank = choice;
  }
  // Top-k by repeated selection: strictly greater wins, so ties go to the
  // lower id. A picked expert is skipped by comparing against the picks.
  for (int j = 0; j < K; ++j) {
    int best = -1;
    for (int e = 0; e < E; ++e) {
      bool taken = false;
      for (int i = 0; i < j; ++i)
        taken = taken || pick[i] == e;
      if (!taken && (best < 0 || rank[e] > rank[best]))
        best = e;
    }
    pick[j] = best;
  }
  double w[kGateMaxTopK];
  if (p.softmaxBeforeTopk) {
    for (int j = 0; j < K; ++j)
      w[j] = score[pick[j]];
  } else if (p.sigmoid) {
    for (int j = 0; j < K; ++j)
      w[j] = 1.0 / (1.0 + exp(-score[pick[j]]));
  } else {
    double mx = score[pick[0]], s = 0.0;
    for (int j = 0; j < K; ++j)
      s += w[j] = exp(score[pick[j]] - mx);
    for (int j = 0; j < K; ++j)
      w[j] /= s;
  }
  double wsum = 0.0;
  for (int j = 0; j < K; ++j)
    wsum += w[j];
  for (int j = 0; j < K; ++j)
    weight[j] = float((p.normTopk ? w[j] / wsum : w[j]) * double(p.routedScalingFactor));
}

/// Slots an expert admits for T tokens (INT64_MAX without dropping).
MOE_HD int64_t gateCapacity(const GateParams &p, int64_t T) {
  if (!p.dropTokens)
    return INT64_MAX;
  double c = ceil(double(p.capacityFactor) * double(T) * p.topK / p.numExperts);
  int64_t cap = int64_t(c);
  return cap > p.minCapacity ? cap : int64_t(p.minCapacity);
}

/// Admitted slots of expert e: the first `cap` slots (ascending) routed to
/// it. Writes them, ascending, to out (when not null), sets the weight of
/// the slots it drops to 0 (when slotWeight is not null) and returns how
/// many it admits. Every expert's call is independent; the kernel runs the
/// warp-parallel form below (chunkRank), which the tests check against this.
MOE_HD int64_t gateAdmit(const int32_t *slotExpert, int64_t slots, int e, int64_t cap, int32_t *out,
                         float *slotWeight) {
  int64_t n = 0;
  for (int64_t s = 0; s < slots; ++s) {
    if (slotExpert[s] != e)
      continue;
    if (n < cap) {
      if (out)
        out[n] = int32_t(s);
      ++n;
    } else if (slotWeight) {
      slotWeight[s] = 0.0f;
    } else {
      break;
    }
  }
  return n;
}

MOE_HD int popcount32(uint32_t x) {
#if defined(__CUDA_ARCH__)
  return __popc(x);
#else
  return __builtin_popcount(x);
#endif
}

/// The warp-parallel form of gateAdmit that the gate kernel runs (one warp
/// per expert, 32 slots per step): in the chunk of slots [base, base+32),
/// `mask` has bit l set when slot base+l routes to the expert, and `before`
/// slots went to it in earlier chunks. Lane l's slot is the expert's
/// chunkRank-th (0-based): admitted when that is < cap, and written to
/// sorted position offsets[e] + rank.
MOE_HD int64_t chunkRank(uint32_t mask, int lane, int64_t before) {
  return before + popcount32(mask & ((1u << lane) - 1u));
}

/// Whether slot s (routed to slotExpert[s]) is admitted: fewer than `cap`
/// earlier slots went to the same expert.
MOE_HD bool gateSlotAdmitted(const int32_t *slotExpert, int64_t s, int64_t cap) {
  int e = slotExpert[s];
  int64_t before = 0;
  for (int64_t i = 0; i < s; ++i)
    before += slotExpert[i] == e;
  return before < cap;
}

//===----------------------------------------------------------------------===//
// Permute / un-permute and the grouped GEMM's tiles
//===----------------------------------------------------------------------===//

/// Token whose row slot s reads.
MOE_HD int64_t slotToken(int32_t slot, int topK) { return int64_t(slot) / topK; }

/// The expert whose range [offsets[e], offsets[e+1]) holds sorted position
/// j (binary search; -1 past offsets[E]). Empty experts are skipped.
MOE_HD int expertOfSorted(const int32_t *offsets, int E, int64_t j) {
  if (j < 0 || j >= offsets[E])
    return -1;
  int lo = 0, hi = E - 1; // first e with offsets[e+1] > j
  while (lo < hi) {
    int mid = (lo + hi) / 2;
    if (offsets[mid + 1] > j)
      hi = mid;
    else
      lo = mid + 1;
  }
  return lo;
}

/// Row tiles of bm rows over every expert's sorted range (empty experts
/// have none).
MOE_HD int64_t groupedTileCount(const int32_t *offsets, int E, int bm) {
  int64_t n = 0;
  for (int e = 0; e < E; ++e)
    n += (int64_t(offsets[e + 1] - offsets[e]) + bm - 1) / bm;
  return n;
}

/// An upper bound of groupedTileCount known without reading the offsets:
/// sum_e ceil(c_e / bm) <= (sum_e c_e) / bm + number of non-empty experts.
MOE_HD int64_t groupedTileBound(int64_t maxRows, int E, int bm) {
  int64_t nonEmpty = maxRows < E ? maxRows : E;
  return maxRows / bm + nonEmpty;
}

/// Tile `tile` of the enumeration above: expert e, sorted rows [r0, r1).
/// Returns false past the last tile (that block exits).
MOE_HD bool groupedTileOf(const int32_t *offsets, int E, int bm, int64_t tile, int &e, int64_t &r0,
                          int64_t &r1) {
  for (int x = 0; x < E; ++x) {
    int64_t c = offsets[x + 1] - offsets[x];
    int64_t tiles = (c + bm - 1) / bm;
    if (tile < tiles) {
      e = x;
      r0 = offsets[x] + tile * bm;
      r1 = r0 + bm < offsets[x + 1] ? r0 + bm : int64_t(offsets[x + 1]);
      return true;
    }
    tile -= tiles;
  }
  return false;
}

/// Whether this replica computes sorted position j of expert e (plan 1.2:
/// positions within the expert with j % numReplicas == replica).
MOE_HD bool replicaOwns(const int32_t *offsets, int e, int64_t j, int replica, int numReplicas) {
  return numReplicas <= 1 || (j - offsets[e]) % numReplicas == replica;
}

/// Whether expert e is this rank's (numReplicas > 0 in its table entry) and
/// got rows from the gate: its weights are read (the bandwidth floor).
MOE_HD bool routedLocal(int numReplicas, const int32_t *offsets, int e) {
  return numReplicas > 0 && offsets[e + 1] > offsets[e];
}

//===----------------------------------------------------------------------===//
// Attention
//===----------------------------------------------------------------------===//

/// First position a query at p attends to.
MOE_HD int64_t attnStart(int64_t p, int slidingWindow) {
  if (slidingWindow <= 0)
    return 0;
  int64_t s = p - slidingWindow + 1;
  return s > 0 ? s : 0;
}

/// Where K/V rows live in a layer's cache. Unpaged (no table: one
/// sequence), position p is row p. Paged (a batched step's pool shared by
/// several sequences), row t of the step belongs to sequence slot seq[t],
/// whose position p is pool row pageTable[slot * pagesPerSeq + p /
/// pageSize] * pageSize + p % pageSize (the CPU's KVView::poolRow).
struct KVPages {
  const int32_t *pageTable = nullptr; // [max_batch, pagesPerSeq]
  const int64_t *seq = nullptr;       // [T] slots
  int64_t pagesPerSeq = 1, pageSize = 0;

  MOE_HD int64_t slotOf(int64_t t) const { return pageTable ? seq[t] : 0; }
  MOE_HD int64_t row(int64_t slot, int64_t p) const {
    if (!pageTable)
      return p;
    return int64_t(pageTable[slot * pagesPerSeq + p / pageSize]) * pageSize + p % pageSize;
  }
};

/// Whether entry w of a block's per-warp sequence slots (-1: idle warp) is
/// the first of its slot: the block makes one pass over its keys for each
/// such entry (Attention.cu).
MOE_HD bool firstOfSlot(const int *slots, int w) {
  if (slots[w] < 0)
    return false;
  for (int u = 0; u < w; ++u)
    if (slots[u] == slots[w])
      return false;
  return true;
}

/// Split `split` of `splits` equal chunks of positions [0, len): [b, e).
MOE_HD void splitRange(int64_t len, int splits, int split, int64_t &b, int64_t &e) {
  int64_t chunk = (len + splits - 1) / splits;
  b = chunk * split;
  e = b + chunk < len ? b + chunk : len;
  if (b > len)
    b = len;
}

/// Online-softmax state of a partial attention: running max m, sum l
/// (of exp(s - m)); the output accumulator is scaled alongside.
struct SoftmaxState {
  float m, l;
};

/// Merges state b into a; returns the factors that scale a's and b's
/// accumulators (acc = acc_a * fa + acc_b * fb).
MOE_HD SoftmaxState softmaxMerge(SoftmaxState a, SoftmaxState b, float &fa, float &fb) {
  if (b.l == 0.0f) {
    fa = 1.0f;
    fb = 0.0f;
    return a;
  }
  if (a.l == 0.0f) {
    fa = 0.0f;
    fb = 1.0f;
    return b;
  }
  float m = a.m > b.m ? a.m : b.m;
  fa = expf(a.m - m);
  fb = expf(b.m - m);
  return {m, a.l * fa + b.l * fb};
}

/// Adds a head's attention sink (gpt-oss: one more logit in the softmax's
/// denominator, with no value) to the merged state of its keys; the output
/// accumulator is scaled by the returned factor fa. HF subtracts the max
/// over the scores and the sink, as this merge does.
MOE_HD SoftmaxState withSink(SoftmaxState st, float sink, float &fa) {
  float fb;
  return softmaxMerge(st, {sink, 1.0f}, fa, fb);
}

/// A good number of sequence splits for decode: enough blocks for the GPU,
/// at least `minChunk` positions each.
MOE_HD int attnSplits(int64_t ctx, int64_t blocksWithoutSplit, int smCount, int maxSplits,
                      int minChunk) {
  int64_t want = (2 * int64_t(smCount) + blocksWithoutSplit - 1) /
                 (blocksWithoutSplit > 0 ? blocksWithoutSplit : 1);
  int64_t byLen = (ctx + minChunk - 1) / minChunk;
  int64_t s = want < byLen ? want : byLen;
  s = s < maxSplits ? s : maxSplits;
  return s < 1 ? 1 : int(s);
}

//===----------------------------------------------------------------------===//
// Multi-head latent attention (DeepSeek-V3, plan.fbs MlaAttention)
//===----------------------------------------------------------------------===//

/// Row of kv_b [heads * (nope + vHeadDim), kvLoraRank] holding W_UK_h's
/// row i (i < nope): what q_nope_h[i] scales in the absorbed query.
MOE_HD int64_t mlaUkRow(int h, int64_t i, int64_t nope, int64_t vHeadDim) {
  return int64_t(h) * (nope + vHeadDim) + i;
}

/// Row of kv_b holding W_UV_h's row v (v < vHeadDim): out_h[v] = olat_h .
/// that row.
MOE_HD int64_t mlaUvRow(int h, int64_t v, int64_t nope, int64_t vHeadDim) {
  return int64_t(h) * (nope + vHeadDim) + nope + v;
}

/// Column c (< kvLoraRank + rope) of token t's cache row [c_kv | k_pe]:
/// where it comes from in the step's inputs (latent row, else k_pe row).
MOE_HD const float *mlaCacheSource(const float *latent, int64_t ldLatent, const float *kPe,
                                   int64_t ldKPe, int64_t kvLoraRank, int64_t t, int64_t c) {
  return c < kvLoraRank ? latent + t * ldLatent + c : kPe + t * ldKPe + (c - kvLoraRank);
}

//===----------------------------------------------------------------------===//
// Sampling (same arithmetic as moert::Sampler)
//===----------------------------------------------------------------------===//

/// splitmix64 step of Sampler::uniform: advances *state, returns [0, 1).
MOE_HD double uniform01(uint64_t &state) {
  uint64_t x = (state += 0x9e3779b97f4a7c15ull);
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  x ^= x >> 31;
  return double(x >> 11) * (1.0 / 9007199254740992.0);
}

/// (value, index) order of argmax: larger value, ties to the lower index.
MOE_HD bool argmaxBetter(float v, int64_t i, float bv, int64_t bi) {
  return v > bv || (v == bv && i < bi);
}

/// Unnormalized probability of a logit at temperature t (mx: the max logit).
MOE_HD double sampleWeight(float logit, float mx, float temperature) {
  return exp((double(logit) - double(mx)) / double(temperature));
}

/// Nucleus cut over probabilities sorted descending (unnormalized, total
/// `sum`): the length of the shortest prefix whose share reaches topP.
MOE_HD int64_t topPKeep(const double *sorted, int64_t n, double sum, float topP) {
  double cum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    cum += sorted[i] / sum;
    if (cum >= double(topP))
      return i + 1;
  }
  return n;
}

/// Position in the kept prefix chosen by u in [0, 1).
MOE_HD int64_t topPPick(const double *sorted, int64_t keep, double u) {
  double kept = 0.0;
  for (int64_t i = 0; i < keep; ++i)
    kept += sorted[i];
  double x = u * kept, acc = 0.0;
  for (int64_t i = 0; i < keep; ++i) {
    acc += sorted[i];
    if (x < acc)
      return i;
  }
  return keep - 1;
}

//===----------------------------------------------------------------------===//
// GEMV
//===----------------------------------------------------------------------===//

/// Whether rows of W [N, K] (element size esize, base address `addr`) can
/// be read with 16-byte vector loads.
MOE_HD bool gemvVectorizable(uint64_t addr, int64_t K, int esize) {
  return addr % 16 == 0 && (K * esize) % 16 == 0;
}

} // namespace math
} // namespace moert::cuda
