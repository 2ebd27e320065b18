//===- Mla.cu - DeepSeek-V3's multi-head latent attention -----------------===//
//
// Every head attends over the same latent cache rows [c_kv | k_pe], so the
// cache is read once per token for all of its heads (as one KV head of a
// very wide GQA group) and kv_b is absorbed instead of expanding keys and
// values: the query becomes [q_nope W_UK_h | q_pe] and the output
// (sum_j p_j c_j) W_UV_h^T. Five launches: store the new rows, absorb the
// queries, attend (split-K over positions, as Attention.cu), merge the
// splits, apply W_UV. The per-element index math is DeviceMath.h's mla*.
//
//===----------------------------------------------------------------------===//
#include "Common.cuh"

namespace moert::cuda {
using namespace detail;

namespace {

constexpr int kItems = 8; // heads (warps) per attention block
constexpr int kBK = 8;    // latent rows per shared-memory tile
constexpr int kQPL = kMlaMaxCols / 32, kVPL = kMlaMaxLatent / 32;

__global__ void storeLatentKernel(MlaArgs a) {
  const int64_t C = a.kvLoraRank + a.ropeDim, n = a.T * C;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t t = i / C, c = i % C;
    float v = *math::mlaCacheSource(a.latent, a.ldLatent, a.kPe, a.ldKPe, a.kvLoraRank, t, c);
    const math::KVPages &pg = a.cache.pages;
    math::storeW(a.cache.k, a.cache.type, pg.row(pg.slotOf(t), a.pos[t]) * C + c, v);
  }
}

/// qa[t, h] = [q_nope_h W_UK_h | q_pe_h] * scale: a block per (t, h), a
/// thread per latent column (kv_b's rows read across the threads).
template <WType W> __global__ void absorbKernel(MlaArgs a, float *qa) {
  const int64_t th = blockIdx.x, t = th / a.heads;
  const int h = int(th % a.heads);
  const int64_t L = a.kvLoraRank, C = L + a.ropeDim;
  const float *q = a.q + t * a.ldq + int64_t(h) * (a.nopeDim + a.ropeDim);
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    float v;
    if (c < L) {
      v = 0.0f;
      for (int64_t i = 0; i < a.nopeDim; ++i)
        v = fmaf(q[i], ldw<W>(a.kvB.data, math::mlaUkRow(h, i, a.nopeDim, a.vHeadDim) * L + c), v);
    } else {
      v = q[a.nopeDim + (c - L)];
    }
    qa[th * C + c] = v * a.scale;
  }
}

/// A block: token t, heads [h0, h0 + kItems) (a warp each), positions of
/// split blockIdx.z; lane l holds query columns l + 32 i and output columns
/// l + 32 i. Writes olat (one split) or the split's partial [m, l, acc].
/// The block's rows are its token's sequence's (a paged cache: looked up
/// once per tile).
template <WType KT> __global__ void __launch_bounds__(kItems * 32)
    mlaAttendKernel(MlaArgs a, const float *qa, float *olat, int splits, float *part) {
  __shared__ float Ks[kBK][kMlaMaxCols];
  __shared__ int64_t rowOf[kBK];
  const int64_t L = a.kvLoraRank, C = L + a.ropeDim;
  const int groups = (a.heads + kItems - 1) / kItems;
  const int64_t t = blockIdx.x / groups;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int h = int(blockIdx.x % groups) * kItems + warp;
  const bool active = h < a.heads;
  const int64_t p = a.pos[t];
  const math::KVPages &pages = a.cache.pages;
  const bool paged = pages.pageTable != nullptr;
  const int64_t slot = pages.slotOf(t);
  int64_t sb, se;
  math::splitRange(maxPosOf(a) + 1, splits, blockIdx.z, sb, se);
  const int64_t ke = p + 1 < se ? p + 1 : se;
  float q[kQPL], acc[kVPL];
  const float *qrow = qa + (t * a.heads + (active ? h : 0)) * C;
#pragma unroll
  for (int i = 0; i < kQPL; ++i) {
    int64_t c = lane + 32 * i;
    q[i] = active && c < C ? qrow[c] : 0.0f;
  }
#pragma unroll
  for (int i = 0; i < kVPL; ++i)
    acc[i] = 0.0f;
  float m = -INFINITY, l = 0.0f;
  for (int64_t k0 = sb; k0 < ke; k0 += kBK) {
    __syncthreads();
    if (paged) { // (uniform)
      if (threadIdx.x < kBK && k0 + threadIdx.x < ke)
        rowOf[threadIdx.x] = pages.row(slot, k0 + threadIdx.x);
      __syncthreads();
    }
    for (int64_t i = threadIdx.x; i < kBK * C; i += blockDim.x) {
      int64_t r = i / C, c = i % C, j = k0 + r;
      Ks[r][c] = j < ke ? ldw<KT>(a.cache.k, (paged ? rowOf[r] : j) * C + c) : 0.0f;
    }
    __syncthreads();
    if (!active)
      continue;
    for (int r = 0; r < kBK && k0 + r < ke; ++r) {
      // Keys are whole latent rows [c_kv | k_pe], values their c_kv.
      laneAxpy(acc, onlineSoftmaxAdd(laneDot(q, Ks[r], C), m, l, acc), Ks[r], L);
    }
  }
  if (!active)
    return;
  const int64_t th = t * a.heads + h;
  storeSplit(acc, m, l, L, splits, olat + th * L, part + (th * splits + blockIdx.z) * (L + 2));
}

__global__ void mlaMergeKernel(MlaArgs a, int splits, const float *part, float *olat) {
  const int64_t th = blockIdx.x, L = a.kvLoraRank;
  const float *pp = part + th * splits * (L + 2);
  for (int64_t c = threadIdx.x; c < L; c += blockDim.x)
    olat[th * L + c] = mergeSplitsAt(pp, splits, L, c, false, 0.0f);
}

/// out[t, h*V + v] = olat[t, h] . W_UV_h[v]: a warp per output (8 per block).
template <WType W> __global__ void uvKernel(MlaArgs a, const float *olat) {
  const int64_t th = blockIdx.x, t = th / a.heads, L = a.kvLoraRank;
  const int h = int(th % a.heads), lane = threadIdx.x & 31;
  const int64_t v = int64_t(blockIdx.y) * 8 + (threadIdx.x >> 5);
  if (v >= a.vHeadDim)
    return;
  const int64_t row = math::mlaUvRow(h, v, a.nopeDim, a.vHeadDim) * L;
  const float *o = olat + th * L;
  float s = 0.0f;
  for (int64_t c = lane; c < L; c += 32)
    s = fmaf(o[c], ldw<W>(a.kvB.data, row + c), s);
  s = warpSum(s);
  if (lane == 0)
    a.out[t * a.ldo + int64_t(h) * a.vHeadDim + v] = s;
}

} // namespace

int chooseMlaSplits(const MlaArgs &a) {
  if (a.splits > 0)
    return a.splits;
  int64_t blocks = a.T * ((a.heads + kItems - 1) / kItems);
  return math::attnSplits(a.maxPos + 1, blocks, smCount(), 32, 256);
}

size_t mlaWorkspaceBytes(const MlaArgs &a) {
  const int64_t C = a.kvLoraRank + a.ropeDim, rows = a.T * a.heads;
  int splits = chooseMlaSplits(a);
  size_t partial = splits > 1 ? size_t(rows) * size_t(splits) * size_t(a.kvLoraRank + 2) : 0;
  return (size_t(rows) * size_t(C + a.kvLoraRank) + partial) * sizeof(float) + 256;
}

cudaError_t mlaAttention(const MlaArgs &a, void *workspace, cudaStream_t s) {
  if (a.T <= 0)
    return cudaSuccess;
  const int64_t L = a.kvLoraRank, C = L + a.ropeDim;
  if (a.heads < 1 || L < 1 || L > kMlaMaxLatent || C > kMlaMaxCols || a.vHeadDim < 1 ||
      a.nopeDim < 0 || !a.kvB)
    return cudaErrorInvalidValue;
  storeLatentKernel<<<gridFor(a.T * C, 256), 256, 0, s>>>(a);
  if (cudaError_t err = launched())
    return err;
  const int64_t rows = a.T * a.heads;
  float *qa = static_cast<float *>(workspace), *olat = qa + rows * C, *part = olat + rows * L;
  MOE_DISPATCH_WTYPE(a.kvB.type, W, absorbKernel<W><<<unsigned(rows), 256, 0, s>>>(a, qa));
  if (cudaError_t err = launched())
    return err;
  const int splits = chooseMlaSplits(a);
  dim3 grid(unsigned(a.T * ((a.heads + kItems - 1) / kItems)), 1, unsigned(splits));
  MOE_DISPATCH_WTYPE(a.cache.type, KT,
                     mlaAttendKernel<KT><<<grid, kItems * 32, 0, s>>>(a, qa, olat, splits, part));
  if (cudaError_t err = launched())
    return err;
  if (splits > 1) {
    mlaMergeKernel<<<unsigned(rows), 128, 0, s>>>(a, splits, part, olat);
    if (cudaError_t err = launched())
      return err;
  }
  dim3 vgrid(unsigned(rows), unsigned((a.vHeadDim + 7) / 8));
  MOE_DISPATCH_WTYPE(a.kvB.type, W, uvKernel<W><<<vgrid, 256, 0, s>>>(a, olat));
  return launched();
}

} // namespace moert::cuda
