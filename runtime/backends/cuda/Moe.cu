//===- Moe.cu - Fused gate and the grouped expert FFN ---------------------===//
//
// Routing stays on the device: every launch is sized by T*topK (an upper
// bound of the admitted slots) and a block past expert_offsets[E] exits, so
// the host never reads the offsets and a decode step can be captured.
//
//===----------------------------------------------------------------------===//
#include "Common.cuh"

#include <cuda_bf16.h>
#include <mma.h>
#include <type_traits>

namespace moert::cuda {
using namespace detail;

namespace {

//===----------------------------------------------------------------------===//
// Gate: one block; scores/top-k per token (a thread per token), then per
// expert its admitted slots in token order (a warp per expert: the
// warp-parallel form of math::gateAdmit, math::chunkRank), prefix sums,
// sorted slots.
//===----------------------------------------------------------------------===//

__global__ void __launch_bounds__(512)
    gateKernel(const float *logits, int64_t ld, int64_t T, math::GateParams p, int64_t cap,
               int32_t *slotExpert, float *slotWeight, int32_t *offsets, int32_t *sortedSlots,
               double *scores) {
  __shared__ int32_t off[math::kGateMaxExperts + 1];
  const int E = p.numExperts, K = p.topK;
  const int64_t slots = T * K;
  for (int64_t t = threadIdx.x; t < T; t += blockDim.x) {
    int pick[math::kGateMaxTopK];
    float w[math::kGateMaxTopK];
    math::gateToken(logits + t * ld, p, scores + t * E, scores + (T + t) * E, pick, w);
    for (int j = 0; j < K; ++j) {
      slotExpert[t * K + j] = pick[j];
      slotWeight[t * K + j] = w[j];
    }
  }
  __syncthreads();
  // Per expert (one warp each, 32 slots per step; math::chunkRank): the
  // count it admits, zero weights for the slots it drops.
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  for (int e = warp; e < E; e += warps) {
    int64_t n = 0;
    for (int64_t base = 0; base < slots; base += 32) {
      int64_t s = base + lane;
      bool hit = s < slots && slotExpert[s] == e;
      uint32_t mask = __ballot_sync(0xffffffffu, hit);
      if (hit && math::chunkRank(mask, lane, n) >= cap)
        slotWeight[s] = 0.0f;
      n += math::popcount32(mask);
    }
    if (lane == 0)
      off[e + 1] = int32_t(n < cap ? n : cap);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    off[0] = 0;
    for (int e = 0; e < E; ++e)
      off[e + 1] += off[e];
  }
  __syncthreads();
  for (int e = threadIdx.x; e <= E; e += blockDim.x)
    offsets[e] = off[e];
  // Sorted slots: admitted slots of each expert in ascending slot order.
  for (int e = warp; e < E; e += warps) {
    int64_t n = 0;
    for (int64_t base = 0; base < slots && n < cap; base += 32) {
      int64_t s = base + lane;
      bool hit = s < slots && slotExpert[s] == e;
      uint32_t mask = __ballot_sync(0xffffffffu, hit);
      int64_t r = math::chunkRank(mask, lane, n);
      if (hit && r < cap)
        sortedSlots[off[e] + r] = int32_t(s);
      n += math::popcount32(mask);
    }
  }
}

//===----------------------------------------------------------------------===//
// Experts
//===----------------------------------------------------------------------===//

/// Where the rows of a product come from and go to.
struct Stage {
  bool first;      // gate/up (input: gathered token rows) or down (input: h)
  const float *in; // first: the op's input [T, D]; else h
  int64_t ldi;
  float *out; // first: h [T*topK, 2I]; else slot_out [T*topK, D]
  int64_t ldo;
  int64_t N, K; // output columns, reduction length
};

/// Weight row n of a stage's product for expert ew, and its bias (0 if none).
template <WType W> struct RowRef {
  const void *row;
  float bias;
};

/// Weight row n of a stage's product (no bias: the tile loads).
template <WType W>
__device__ __forceinline__ const void *weightRowPtr(const ExpertW &ew, const Stage &st, int64_t n,
                                                    int64_t I, bool gated) {
  constexpr int64_t es = W == WType::F32 ? 4 : 2;
  const void *base = !st.first ? ew.down.data : (gated && n < I ? ew.gate.data : ew.up.data);
  int64_t row = st.first && gated && n >= I ? n - I : n;
  return static_cast<const char *>(base) + row * st.K * es;
}

template <WType W>
__device__ __forceinline__ RowRef<W> weightRow(const ExpertW &ew, const Stage &st, int64_t n,
                                               int64_t I, bool gated) {
  constexpr int64_t es = W == WType::F32 ? 4 : 2;
  if (!st.first)
    return {static_cast<const char *>(ew.down.data) + n * st.K * es,
            ew.downBias ? ldw<W>(ew.downBias.data, n) : 0.0f};
  if (gated && n < I)
    return {static_cast<const char *>(ew.gate.data) + n * st.K * es,
            ew.gateBias ? ldw<W>(ew.gateBias.data, n) : 0.0f};
  int64_t u = gated ? n - I : n;
  return {static_cast<const char *>(ew.up.data) + u * st.K * es,
          ew.upBias ? ldw<W>(ew.upBias.data, u) : 0.0f};
}

/// Input row of sorted position j.
__device__ __forceinline__ const float *inputRow(const Stage &st, const int32_t *sorted, int topK,
                                                 int64_t j) {
  return st.first ? st.in + math::slotToken(sorted[j], topK) * st.ldi : st.in + j * st.ldi;
}

/// Output row of sorted position j (the scatter of un-permute in the down stage).
__device__ __forceinline__ float *outputRow(const Stage &st, const int32_t *sorted, int64_t j) {
  return st.first ? st.out + j * st.ldo : st.out + int64_t(sorted[j]) * st.ldo;
}

constexpr int kGemvWarps = 8;

/// GEMV stage over routed slots: blockIdx.y = sorted position j, each warp
/// one output column n.
template <WType W>
__global__ void __launch_bounds__(kGemvWarps * 32)
    expertsGemvKernel(Stage st, const int32_t *sorted, const int32_t *offsets, int E, int topK,
                      int64_t I, bool gated, const ExpertW *experts) {
  const int64_t j = blockIdx.y;
  const int e = math::expertOfSorted(offsets, E, j);
  if (e < 0)
    return;
  const ExpertW ew = experts[e];
  if (ew.numReplicas == 0 || !math::replicaOwns(offsets, e, j, ew.replica, ew.numReplicas))
    return;
  const int64_t n = int64_t(blockIdx.x) * kGemvWarps + (threadIdx.x >> 5);
  if (n >= st.N)
    return;
  RowRef<W> r = weightRow<W>(ew, st, n, I, gated);
  const float *x = inputRow(st, sorted, topK, j);
  bool vec = math::gemvVectorizable(reinterpret_cast<uint64_t>(r.row), st.K, math::wtypeSize(W)) &&
             reinterpret_cast<uint64_t>(x) % 16 == 0;
  float v = warpDot<W>(r.row, x, st.K, vec) + r.bias;
  if ((threadIdx.x & 31) == 0)
    outputRow(st, sorted, j)[n] = v;
}

/// Grouped GEMM stage: a block computes a kBM x kBN tile of one expert's
/// sorted rows [r0, r1) (math::groupedTileOf), gather fused into the A loads
/// and the scatter into the stores. SIMT f32 FMAs (tensor-core version: to
/// be measured against cuBLAS grouped GEMM on a GPU).
constexpr int kBM = 32, kBN = 64, kBK = 32, kTileThreads = 256;

template <WType W>
__global__ void __launch_bounds__(kTileThreads)
    expertsTileKernel(Stage st, const int32_t *sorted, const int32_t *offsets, int E, int topK,
                      int64_t I, bool gated, const ExpertW *experts) {
  __shared__ float As[kBM][kBK + 1];
  __shared__ float Bs[kBN][kBK + 1];
  int e;
  int64_t r0, r1;
  if (!math::groupedTileOf(offsets, E, kBM, blockIdx.x, e, r0, r1))
    return;
  const ExpertW ew = experts[e];
  if (ew.numReplicas == 0)
    return;
  const int64_t n0 = int64_t(blockIdx.y) * kBN;
  const int tid = threadIdx.x;
  // Each thread: tile rows 2*ty + {0, 1}, tile columns tx + 16*{0..3}.
  const int tx = tid % 16, ty = tid / 16;
  float acc[2][4] = {};
  for (int64_t k0 = 0; k0 < st.K; k0 += kBK) {
    for (int i = tid; i < kBM * kBK; i += kTileThreads) {
      int r = i / kBK, k = i % kBK;
      int64_t j = r0 + r;
      As[r][k] = (j < r1 && k0 + k < st.K) ? inputRow(st, sorted, topK, j)[k0 + k] : 0.0f;
    }
    for (int i = tid; i < kBN * kBK; i += kTileThreads) {
      int c = i / kBK, k = i % kBK;
      int64_t n = n0 + c;
      float v = 0.0f;
      if (n < st.N && k0 + k < st.K)
        v = ldw<W>(weightRowPtr<W>(ew, st, n, I, gated), k0 + k);
      Bs[c][k] = v;
    }
    __syncthreads();
#pragma unroll 8
    for (int k = 0; k < kBK; ++k) {
      float a0 = As[ty * 2][k], a1 = As[ty * 2 + 1][k];
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        float b = Bs[tx + 16 * c][k];
        acc[0][c] = fmaf(a0, b, acc[0][c]);
        acc[1][c] = fmaf(a1, b, acc[1][c]);
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    int64_t j = r0 + ty * 2 + r;
    if (j >= r1 || !math::replicaOwns(offsets, e, j, ew.replica, ew.numReplicas))
      continue;
    float *o = outputRow(st, sorted, j);
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      int64_t n = n0 + tx + 16 * c;
      if (n < st.N)
        o[n] = acc[r][c] + weightRow<W>(ew, st, n, I, gated).bias;
    }
  }
}

/// Tensor-core grouped GEMM stage for BF16/F16 weights (WMMA 16x16x16, f32
/// accumulation): a block of 4 warps computes a kWM x kWN tile of one
/// expert's sorted rows; activations are rounded to the weights' type as
/// they are staged (the plan's 16-bit compute dtype); the tile goes through
/// shared memory to the row-mapped, bias-adding, replica-masked stores.
constexpr int kWM = 64, kWN = 64, kWK = 32, kWPad = 8, kWThreads = 128;

template <WType W>
__global__ void __launch_bounds__(kWThreads)
    expertsWmmaKernel(Stage st, const int32_t *sorted, const int32_t *offsets, int E, int topK,
                      int64_t I, bool gated, const ExpertW *experts) {
  using namespace nvcuda;
  using T16 = std::conditional_t<W == WType::BF16, __nv_bfloat16, __half>;
  __shared__ __align__(32) T16 As[kWM][kWK + kWPad];
  __shared__ __align__(32) T16 Bs[kWN][kWK + kWPad];
  __shared__ __align__(32) float Cs[kWM][kWN + 4];
  int e;
  int64_t r0, r1;
  if (!math::groupedTileOf(offsets, E, kWM, blockIdx.x, e, r0, r1))
    return;
  const ExpertW ew = experts[e];
  if (ew.numReplicas == 0)
    return;
  const int64_t n0 = int64_t(blockIdx.y) * kWN;
  const int tid = threadIdx.x, warp = tid >> 5;
  const int wr = warp >> 1, wc = warp & 1; // the warp's 32x32 quarter
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j)
      wmma::fill_fragment(acc[i][j], 0.0f);
  for (int64_t k0 = 0; k0 < st.K; k0 += kWK) {
    for (int i = tid; i < kWM * kWK; i += kWThreads) {
      int r = i / kWK, k = i % kWK;
      int64_t j = r0 + r;
      float v = (j < r1 && k0 + k < st.K) ? inputRow(st, sorted, topK, j)[k0 + k] : 0.0f;
      if constexpr (W == WType::BF16)
        As[r][k] = __float2bfloat16_rn(v);
      else
        As[r][k] = __float2half_rn(v);
    }
    for (int i = tid; i < kWN * kWK; i += kWThreads) {
      int c = i / kWK, k = i % kWK;
      int64_t n = n0 + c;
      uint16_t bits = 0;
      if (n < st.N && k0 + k < st.K)
        bits = static_cast<const uint16_t *>(weightRowPtr<W>(ew, st, n, I, gated))[k0 + k];
      if constexpr (W == WType::BF16)
        Bs[c][k] = __ushort_as_bfloat16(bits);
      else
        Bs[c][k] = __ushort_as_half(bits);
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kWK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T16, wmma::row_major> a[2];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, T16, wmma::col_major> b[2];
#pragma unroll
      for (int i = 0; i < 2; ++i)
        wmma::load_matrix_sync(a[i], &As[wr * 32 + i * 16][kk], kWK + kWPad);
#pragma unroll
      for (int j = 0; j < 2; ++j) // B(k, n) = W[n][k]: column-major with ld kWK + kWPad
        wmma::load_matrix_sync(b[j], &Bs[wc * 32 + j * 16][kk], kWK + kWPad);
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j)
          wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j)
      wmma::store_matrix_sync(&Cs[wr * 32 + i * 16][wc * 32 + j * 16], acc[i][j], kWN + 4,
                              wmma::mem_row_major);
  __syncthreads();
  for (int i = tid; i < kWM * kWN; i += kWThreads) {
    int r = i / kWN, c = i % kWN;
    int64_t j = r0 + r, n = n0 + c;
    if (j >= r1 || n >= st.N || !math::replicaOwns(offsets, e, j, ew.replica, ew.numReplicas))
      continue;
    outputRow(st, sorted, j)[n] = Cs[r][c] + weightRow<W>(ew, st, n, I, gated).bias;
  }
}

/// h[j, 0:I] = act(h[j, 0:I]) (* h[j, I:2I]) for admitted positions j
/// (SwigluOai: math::swigluOai of the pair). One thread also adds the
/// routed local experts' bytes to the floor's count (ExpertsArgs).
__global__ void expertsActKernel(float *h, int64_t ldh, const int32_t *offsets, int E, int64_t I,
                                 ActKind act, bool gated, float limit, float alpha,
                                 const ExpertW *table, unsigned long long *routedBytes,
                                 volatile unsigned long long *routedMirror) {
  if (routedBytes && blockIdx.x == 0 && blockIdx.y == 0 && threadIdx.x == 0) {
    unsigned long long sum = 0;
    for (int e = 0; e < E; ++e)
      if (math::routedLocal(table[e].numReplicas, offsets, e))
        sum += table[e].bytes;
    *routedMirror = atomicAdd(routedBytes, sum) + sum;
    __threadfence_system();
  }
  for (int64_t j = blockIdx.y; j < offsets[E]; j += gridDim.y) {
    float *row = h + j * ldh;
    for (int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; n < I;
         n += int64_t(gridDim.x) * blockDim.x)
      row[n] = act == ActKind::SwigluOai ? math::swigluOai(row[n], row[I + n], limit, alpha)
                                         : math::activationAt(act, gated, row, I, n);
  }
}

template <WType W> cudaError_t runStage(const Stage &st, const ExpertsArgs &a, cudaStream_t s) {
  const int64_t rows = a.T * a.topK;
  if (rows <= kExpertsGemvMaxRows) {
    dim3 grid(gridFor(st.N, kGemvWarps), unsigned(rows));
    expertsGemvKernel<W><<<grid, kGemvWarps * 32, 0, s>>>(
        st, a.sortedSlots, a.expertOffsets, a.numExperts, a.topK, a.I, a.gated, a.experts);
  } else if constexpr (W != WType::F32) {
    int64_t tiles = math::groupedTileBound(rows, a.numExperts, kWM);
    dim3 grid(unsigned(tiles), unsigned((st.N + kWN - 1) / kWN));
    expertsWmmaKernel<W><<<grid, kWThreads, 0, s>>>(st, a.sortedSlots, a.expertOffsets,
                                                    a.numExperts, a.topK, a.I, a.gated, a.experts);
  } else {
    int64_t tiles = math::groupedTileBound(rows, a.numExperts, kBM);
    dim3 grid(unsigned(tiles), unsigned((st.N + kBN - 1) / kBN));
    expertsTileKernel<W><<<grid, kTileThreads, 0, s>>>(
        st, a.sortedSlots, a.expertOffsets, a.numExperts, a.topK, a.I, a.gated, a.experts);
  }
  return launched();
}

} // namespace

size_t gateWorkspaceBytes(int64_t T, int numExperts) {
  // Per token: its scores, then what top-k ranks (bias / groups).
  return 2 * size_t(T > 0 ? T : 1) * size_t(numExperts) * sizeof(double);
}

cudaError_t gate(const float *logits, int64_t ld, int64_t T, const math::GateParams &p,
                 int32_t *slotExpert, float *slotWeight, int32_t *expertOffsets,
                 int32_t *sortedSlots, void *workspace, cudaStream_t s) {
  if (p.numExperts < 1 || p.numExperts > math::kGateMaxExperts || p.topK < 1 ||
      p.topK > math::kGateMaxTopK || p.topK > p.numExperts || T < 0 || p.numGroups < 1 ||
      p.numGroups > math::kGateMaxGroups || p.numExperts % p.numGroups != 0)
    return cudaErrorInvalidValue;
  gateKernel<<<1, 512, 0, s>>>(logits, ld, T, p, math::gateCapacity(p, T), slotExpert, slotWeight,
                               expertOffsets, sortedSlots, static_cast<double *>(workspace));
  return launched();
}

size_t expertsWorkspaceBytes(int64_t T, int topK, int64_t I) {
  return size_t(T * topK) * size_t(2 * I) * sizeof(float) + 256;
}

cudaError_t experts(const ExpertsArgs &a, void *workspace, cudaStream_t s) {
  const int64_t rows = a.T * a.topK;
  if (rows <= 0)
    return cudaSuccess;
  if (a.clearSlotOut)
    if (cudaError_t err = cudaMemsetAsync(a.slotOut, 0, size_t(rows * a.D) * sizeof(float), s))
      return err;
  const WType wt = a.weightType;
  float *h = static_cast<float *>(workspace);
  const int64_t ldh = 2 * a.I;
  Stage up{true, a.in, a.ldi, h, ldh, a.gated ? 2 * a.I : a.I, a.D};
  Stage down{false, h, ldh, a.slotOut, a.D, a.D, a.I};
  cudaError_t err = cudaSuccess;
  MOE_DISPATCH_WTYPE(wt, WT, err = runStage<WT>(up, a, s));
  if (err)
    return err;
  expertsActKernel<<<dim3(gridFor(a.I, 256), unsigned(rows < 65535 ? rows : 65535)), 256, 0, s>>>(
      h, ldh, a.expertOffsets, a.numExperts, a.I, a.act, a.gated, a.swigluLimit, a.swigluAlpha,
      a.experts, a.routedBytes, a.routedMirror);
  if ((err = launched()))
    return err;
  MOE_DISPATCH_WTYPE(wt, WT, err = runStage<WT>(down, a, s));
  return err;
}

} // namespace moert::cuda
