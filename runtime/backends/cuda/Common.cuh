//===- Common.cuh - Helpers shared by the CUDA kernels ----------*- CUDA -*-===//
#pragma once

#include "CudaKernels.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace moert::cuda::detail {

inline unsigned gridFor(int64_t n, int threads) {
  int64_t g = (n + threads - 1) / threads;
  return unsigned(g < 1 ? 1 : (g > 1048576 ? 1048576 : g));
}

/// The launch's error (cudaGetLastError), for the wrappers' return values.
inline cudaError_t launched() { return cudaGetLastError(); }

template <typename T> __device__ __forceinline__ T warpSum(T v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1)
    v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <typename T> __device__ __forceinline__ T warpMax(T v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    T w = __shfl_xor_sync(0xffffffffu, v, o);
    v = w > v ? w : v;
  }
  return v;
}

/// Sum over the block (blockDim.x a multiple of 32, <= 1024); every thread
/// gets the result. `sh` holds 32 values.
template <typename T> __device__ T blockSum(T v, T *sh) {
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  v = warpSum(v);
  __syncthreads();
  if (lane == 0)
    sh[warp] = v;
  __syncthreads();
  T r = lane < warps ? sh[lane] : T(0);
  return warpSum(r);
}

// A warp's row of attention state: lane l holds columns l + 32 i, i < N.

/// q . row over `width` columns, summed over the warp.
template <int N>
__device__ __forceinline__ float laneDot(const float (&q)[N], const float *row, int64_t width) {
  const int lane = threadIdx.x & 31;
  float s = 0.0f;
#pragma unroll
  for (int i = 0; i < N; ++i) {
    int64_t c = lane + 32 * i;
    if (c < width)
      s = fmaf(q[i], row[c], s);
  }
  return warpSum(s);
}

/// acc += e * row over `width` columns.
template <int N>
__device__ __forceinline__ void laneAxpy(float (&acc)[N], float e, const float *row,
                                         int64_t width) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int i = 0; i < N; ++i) {
    int64_t c = lane + 32 * i;
    if (c < width)
      acc[i] = fmaf(e, row[c], acc[i]);
  }
}

/// A warp's end of one split of the positions: with one split its output
/// row acc / l (0 where no key was seen) to `out`; otherwise the split's
/// partial [m, l, acc[width]] to `partial`, which mergeSplitsAt reads.
template <int N>
__device__ __forceinline__ void storeSplit(const float (&acc)[N], float m, float l, int64_t width,
                                           int splits, float *out, float *partial) {
  const int lane = threadIdx.x & 31;
  const float inv = l > 0.0f ? 1.0f / l : 0.0f;
  if (splits > 1 && lane == 0) {
    partial[0] = m;
    partial[1] = l;
  }
#pragma unroll
  for (int i = 0; i < N; ++i) {
    int64_t c = lane + 32 * i;
    if (c >= width)
      continue;
    if (splits == 1)
      out[c] = acc[i] * inv;
    else
      partial[2 + c] = acc[i];
  }
}

/// One key's score `s` into a warp's online softmax (running max m, sum l):
/// rescales the output accumulator acc when the max moves (by 0 on the
/// first key, m = -inf) and returns the key's weight exp(s - m).
template <int N>
__device__ __forceinline__ float onlineSoftmaxAdd(float s, float &m, float &l, float (&acc)[N]) {
  if (s > m) {
    float c = expf(m - s);
    l *= c;
#pragma unroll
    for (int i = 0; i < N; ++i)
      acc[i] *= c;
    m = s;
  }
  float e = expf(s - m);
  l += e;
  return e;
}

/// Column c of an attention output from its split-K partials: `splits`
/// records [m, l, acc[width]] at `pp` (width + 2 floats apart) merged
/// (math::softmaxMerge), the sink logit joined when `hasSink`
/// (math::withSink), divided by the sum (0 where no key was seen).
__device__ __forceinline__ float mergeSplitsAt(const float *pp, int splits, int64_t width,
                                               int64_t c, bool hasSink, float sink) {
  math::SoftmaxState st{-INFINITY, 0.0f};
  float o = 0.0f;
  for (int s = 0; s < splits; ++s) {
    const float *x = pp + s * (width + 2);
    float fa, fb;
    st = math::softmaxMerge(st, {x[0], x[1]}, fa, fb);
    o = o * fa + x[2 + c] * fb;
  }
  if (hasSink) {
    float fa;
    st = math::withSink(st, sink, fa);
    o *= fa;
  }
  return st.l > 0.0f ? o / st.l : 0.0f;
}

/// The largest position of an attention call (AttentionArgs, MlaArgs): the
/// host's maxPos, or read from pos when it is -1 (a replayed graph; decode
/// has one row, so the loop is short).
template <typename Args> __device__ __forceinline__ int64_t maxPosOf(const Args &a) {
  if (a.maxPos >= 0)
    return a.maxPos;
  int64_t m = 0;
  for (int64_t t = 0; t < a.T; ++t)
    m = a.pos[t] > m ? a.pos[t] : m;
  return m;
}

/// The device's multiprocessors (1 when unknown), asked once.
inline int smCount() {
  static int n = [] {
    int dev = 0, c = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&c, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
      c = 1;
    return c;
  }();
  return n;
}

/// Element i of a typed weight array.
template <WType W> __device__ __forceinline__ float ldw(const void *p, int64_t i) {
  if constexpr (W == WType::F32)
    return static_cast<const float *>(p)[i];
  else if constexpr (W == WType::BF16)
    return math::bf16ToF32(static_cast<const uint16_t *>(p)[i]);
  else
    return math::f16ToF32(static_cast<const uint16_t *>(p)[i]);
}

/// Eight (bf16/f16) or four (f32) weights of one 16-byte vector, as floats.
template <WType W> __device__ __forceinline__ void unpack16(const uint4 &v, float *f) {
  if constexpr (W == WType::F32) {
    f[0] = __uint_as_float(v.x);
    f[1] = __uint_as_float(v.y);
    f[2] = __uint_as_float(v.z);
    f[3] = __uint_as_float(v.w);
  } else {
    const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      uint16_t lo = uint16_t(w[i] & 0xffffu), hi = uint16_t(w[i] >> 16);
      if constexpr (W == WType::BF16) {
        f[2 * i] = math::bf16ToF32(lo);
        f[2 * i + 1] = math::bf16ToF32(hi);
      } else {
        f[2 * i] = __half2float(__ushort_as_half(lo));
        f[2 * i + 1] = __half2float(__ushort_as_half(hi));
      }
    }
  }
}

template <WType W> __host__ __device__ constexpr int elemsPer16() {
  return W == WType::F32 ? 4 : 8;
}

/// dot(W row, x) by one warp: 16-byte loads when vec.
template <WType W>
__device__ __forceinline__ float warpDot(const void *row, const float *x, int64_t K, bool vec) {
  const int lane = threadIdx.x & 31;
  float acc = 0.0f;
  if (vec) {
    constexpr int per = elemsPer16<W>();
    const uint4 *r = static_cast<const uint4 *>(row);
    const int64_t nv = K / per;
    for (int64_t v = lane; v < nv; v += 32) {
      uint4 q = __ldg(r + v);
      float f[per];
      unpack16<W>(q, f);
      const float *xv = x + v * per;
#pragma unroll
      for (int i = 0; i < per; ++i)
        acc = fmaf(f[i], xv[i], acc);
    }
  } else {
    for (int64_t k = lane; k < K; k += 32)
      acc = fmaf(ldw<W>(row, k), x[k], acc);
  }
  return warpSum(acc);
}

/// Dispatches a functor templated on the weight type.
#define MOE_DISPATCH_WTYPE(t, W, ...)                                                              \
  switch (t) {                                                                                     \
  case WType::BF16: {                                                                              \
    constexpr WType W = WType::BF16;                                                               \
    __VA_ARGS__;                                                                                   \
  } break;                                                                                         \
  case WType::F16: {                                                                               \
    constexpr WType W = WType::F16;                                                                \
    __VA_ARGS__;                                                                                   \
  } break;                                                                                         \
  default: {                                                                                       \
    constexpr WType W = WType::F32;                                                                \
    __VA_ARGS__;                                                                                   \
  } break;                                                                                         \
  }

} // namespace moert::cuda::detail
