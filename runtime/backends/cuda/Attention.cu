//===- Attention.cu - Causal GQA attention over the KV cache --------------===//
//
// A block serves one KV head and a tile of kItems (query token, head of the
// group) pairs, one per warp: decode puts the group's heads in one block,
// prefill tiles of queries. The block walks its positions in tiles of kBK
// keys that it stages once in shared memory (as f32) for all its warps;
// each warp keeps its query and output accumulator in registers (lane owns
// dims lane + 32 i) and an online softmax. blockIdx.z splits the positions
// (split-K); a second kernel merges the splits (math::softmaxMerge).
// In a batched step the block's tokens may belong to several sequences of a
// paged cache: it then makes one pass over its keys per sequence, staging
// that sequence's rows (math::KVPages); one sequence is one pass.
//
//===----------------------------------------------------------------------===//
#include "Common.cuh"

namespace moert::cuda {
using namespace detail;

namespace {

constexpr int kItems = 8; // warps per block
constexpr int kBK = 16;   // keys per shared-memory tile
constexpr int kDPL = kAttnMaxHeadDim / 32;

__global__ void storeKVKernel(AttentionArgs a) {
  const int hd = a.headDim;
  const int64_t n = a.T * a.kvHeads * hd;
  const KV &c = a.cache;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    int d = int(i % hd);
    int64_t tg = i / hd;
    int g = int(tg % a.kvHeads);
    int64_t t = tg / a.kvHeads;
    int64_t off = (g * c.maxSeq + c.pages.row(c.pages.slotOf(t), a.pos[t])) * hd + d;
    math::storeW(c.k, c.type, off, a.qkv[t * a.ldqkv + a.kCol + int64_t(g) * hd + d]);
    math::storeW(c.v, c.type, off, a.qkv[t * a.ldqkv + a.vCol + int64_t(g) * hd + d]);
  }
}

// (At least 2 blocks per SM: without the hint ptxas spilled a few bytes
// of this kernel at 64 registers; with it, 64 and no spills, sm_90a.)
template <WType KT>
__global__ void __launch_bounds__(kItems * 32, 2)
    attnKernel(AttentionArgs a, int splits, float *part) {
  __shared__ float Ks[kBK][kAttnMaxHeadDim];
  __shared__ float Vs[kBK][kAttnMaxHeadDim];
  __shared__ int slots[kItems];     // each warp's sequence slot (-1: idle)
  __shared__ int64_t range[2];
  __shared__ int64_t rowOf[kBK];    // a paged tile's pool rows
  const int group = a.heads / a.kvHeads, hd = a.headDim;
  const int g = blockIdx.y, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t items = a.T * group;
  const int64_t item = int64_t(blockIdx.x) * kItems + warp;
  const bool active = item < items;
  const int64_t t = active ? item / group : 0;
  const int h = g * group + int(active ? item % group : 0);
  const int64_t p = active ? a.pos[t] : -1;
  const int64_t myStart = active ? math::attnStart(p, a.slidingWindow) : 0;
  const math::KVPages &pages = a.cache.pages;
  const bool paged = pages.pageTable != nullptr;
  const int slot = active ? int(pages.slotOf(t)) : -1;
  if (lane == 0)
    slots[warp] = slot;
  int64_t sb, se;
  math::splitRange(maxPosOf(a) + 1, splits, blockIdx.z, sb, se);

  float q[kDPL], acc[kDPL];
#pragma unroll
  for (int i = 0; i < kDPL; ++i) {
    int d = lane + 32 * i;
    q[i] = active && d < hd ? a.qkv[t * a.ldqkv + a.qCol + int64_t(h) * hd + d] * a.scale : 0.0f;
    acc[i] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;
  const int64_t base = int64_t(g) * a.cache.maxSeq * hd;
  __syncthreads(); // slots[] is written
  for (int w = 0; w < kItems; ++w) {
    if (!math::firstOfSlot(slots, w)) // (uniform: slots[] is shared)
      continue;
    const int cur = slots[w];
    const bool mine = slot == cur;
    // The pass's key range: the union of its warps' ranges within the split.
    __syncthreads(); // the last pass has read range[]
    if (threadIdx.x == 0) {
      range[0] = INT64_MAX;
      range[1] = -1;
    }
    __syncthreads();
    if (mine && lane == 0) {
      atomicMin(reinterpret_cast<unsigned long long *>(&range[0]),
                static_cast<unsigned long long>(myStart > sb ? myStart : sb));
      atomicMax(reinterpret_cast<long long *>(&range[1]),
                static_cast<long long>(p + 1 < se ? p + 1 : se));
    }
    __syncthreads();
    const int64_t kb = range[0], ke = range[1];
    for (int64_t k0 = kb; k0 < ke; k0 += kBK) {
      __syncthreads();
      if (paged) { // (uniform) the tile's pool rows, looked up once
        if (threadIdx.x < kBK && k0 + threadIdx.x < ke)
          rowOf[threadIdx.x] = pages.row(cur, k0 + threadIdx.x);
        __syncthreads();
      }
      for (int i = threadIdx.x; i < kBK * hd; i += blockDim.x) {
        int r = i / hd, d = i % hd;
        int64_t j = k0 + r;
        bool in = j < ke;
        int64_t at = base + (in && paged ? rowOf[r] : j) * hd + d;
        Ks[r][d] = in ? ldw<KT>(a.cache.k, at) : 0.0f;
        Vs[r][d] = in ? ldw<KT>(a.cache.v, at) : 0.0f;
      }
      __syncthreads();
      if (!mine)
        continue;
      for (int r = 0; r < kBK; ++r) {
        int64_t j = k0 + r;
        if (j >= ke || j < myStart || j > p || j < sb)
          continue;
        laneAxpy(acc, onlineSoftmaxAdd(laneDot(q, Ks[r], hd), m, l, acc), Vs[r], hd);
      }
    }
  }
  if (!active)
    return;
  if (splits == 1 && a.sinks) { // (several splits: the merge joins it)
    float fa;
    l = math::withSink({m, l}, math::loadW(a.sinks.data, a.sinks.type, h), fa).l;
#pragma unroll
    for (int i = 0; i < kDPL; ++i)
      acc[i] *= fa;
  }
  const int64_t th = t * a.heads + h;
  storeSplit(acc, m, l, hd, splits, a.out + t * a.ldo + int64_t(h) * hd,
             part + (th * splits + blockIdx.z) * (hd + 2));
}

__global__ void mergeKernel(AttentionArgs a, int splits, const float *part) {
  const int64_t th = blockIdx.x; // t * heads + h
  const int64_t t = th / a.heads;
  const int h = int(th % a.heads), hd = a.headDim;
  const float *pp = part + th * splits * (hd + 2);
  const float sink = a.sinks ? math::loadW(a.sinks.data, a.sinks.type, h) : 0.0f;
  for (int d = threadIdx.x; d < hd; d += blockDim.x)
    a.out[t * a.ldo + int64_t(h) * hd + d] =
        mergeSplitsAt(pp, splits, hd, d, bool(a.sinks), sink);
}

} // namespace

int chooseAttentionSplits(const AttentionArgs &a) {
  if (a.splits > 0)
    return a.splits;
  int64_t group = a.heads / a.kvHeads;
  int64_t blocks = a.kvHeads * ((a.T * group + kItems - 1) / kItems);
  return math::attnSplits(a.maxPos + 1, blocks, smCount(), 32, 256);
}

size_t attentionWorkspaceBytes(const AttentionArgs &a) {
  int splits = chooseAttentionSplits(a);
  if (splits <= 1)
    return 256;
  return size_t(a.T * a.heads) * size_t(splits) * size_t(a.headDim + 2) * sizeof(float);
}

cudaError_t attention(const AttentionArgs &a, void *workspace, cudaStream_t s) {
  if (a.T <= 0)
    return cudaSuccess;
  if (a.headDim < 1 || a.headDim > kAttnMaxHeadDim || a.kvHeads < 1 || a.heads % a.kvHeads)
    return cudaErrorInvalidValue;
  int64_t n = a.T * a.kvHeads * a.headDim;
  storeKVKernel<<<gridFor(n, 256), 256, 0, s>>>(a);
  if (cudaError_t err = launched())
    return err;
  const int splits = chooseAttentionSplits(a);
  const int64_t group = a.heads / a.kvHeads;
  dim3 grid(unsigned((a.T * group + kItems - 1) / kItems), unsigned(a.kvHeads), unsigned(splits));
  float *part = static_cast<float *>(workspace);
  MOE_DISPATCH_WTYPE(a.cache.type, KT,
                     attnKernel<KT><<<grid, kItems * 32, 0, s>>>(a, splits, part));
  if (cudaError_t err = launched())
    return err;
  if (splits > 1) {
    mergeKernel<<<unsigned(a.T * a.heads), 128, 0, s>>>(a, splits, part);
    return launched();
  }
  return cudaSuccess;
}

} // namespace moert::cuda
