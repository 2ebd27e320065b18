//===- Sampling.cu - Greedy and top-p sampling on the device --------------===//
//
// Same result as moert::Sampler::next for the same logits and RNG state:
// probabilities exp((l - max) / temperature) in double, sorted descending
// with ties to the lower id (a stable radix sort of ids in ascending order),
// the nucleus cut and the pick by one uniform draw (math::uniform01). The
// cut and the pick run in one block: per-thread chunk sums, a scan, then the
// thread whose chunk holds the boundary walks it (math::topPKeep/topPPick's
// arithmetic; the chunked summation may differ from the host's sequential
// one in the last bits).
//
//===----------------------------------------------------------------------===//
#include "Common.cuh"

#include <cub/device/device_radix_sort.cuh>

namespace moert::cuda {
using namespace detail;

namespace {

constexpr int kThreads = 1024;

/// Warp-wide argmax of each lane's (v, idx) (ties to the lower id; idx
/// INT64_MAX: no candidate); every lane gets it.
__device__ void warpArgmax(float &v, int64_t &idx) {
  for (int o = 16; o > 0; o >>= 1) {
    float ov = __shfl_xor_sync(0xffffffffu, v, o);
    int64_t oi = __shfl_xor_sync(0xffffffffu, idx, o);
    if (oi != INT64_MAX && (idx == INT64_MAX || math::argmaxBetter(ov, oi, v, idx))) {
      v = ov;
      idx = oi;
    }
  }
}

/// Block-wide argmax of logits (ties to the lower id); every thread gets it.
__device__ int64_t blockArgmax(const float *logits, int64_t vocab) {
  __shared__ float bv[kThreads / 32];
  __shared__ int64_t bi[kThreads / 32];
  float v = -INFINITY;
  int64_t idx = INT64_MAX;
  for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x)
    if (idx == INT64_MAX || math::argmaxBetter(logits[i], i, v, idx)) {
      v = logits[i];
      idx = i;
    }
  warpArgmax(v, idx);
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) {
    bv[warp] = v;
    bi[warp] = idx;
  }
  __syncthreads();
  if (warp == 0) {
    int warps = blockDim.x / 32;
    v = lane < warps ? bv[lane] : -INFINITY;
    idx = lane < warps ? bi[lane] : INT64_MAX;
    warpArgmax(v, idx);
    if (lane == 0)
      bi[0] = idx;
  }
  __syncthreads();
  return bi[0];
}

__global__ void __launch_bounds__(kThreads)
    argmaxKernel(const float *logits, int64_t vocab, int64_t *out) {
  int64_t i = blockArgmax(logits, vocab);
  if (threadIdx.x == 0)
    *out = i;
}

struct Scratch {
  double *keysIn, *keysOut;
  int32_t *idsIn, *idsOut;
  double *sum;
  void *cubTemp;
  size_t cubBytes;
};

__global__ void __launch_bounds__(kThreads)
    weightsKernel(const float *logits, int64_t vocab, float temperature, Scratch w) {
  __shared__ double sh[32];
  const float mx = logits[blockArgmax(logits, vocab)];
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
    double p = math::sampleWeight(logits[i], mx, temperature);
    w.keysIn[i] = p;
    w.idsIn[i] = int32_t(i);
    s += p;
  }
  s = blockSum(s, sh);
  if (threadIdx.x == 0)
    *w.sum = s;
}

/// Exclusive scan of per-thread values in shared memory (thread 0, serial:
/// 1024 adds); returns this thread's prefix.
__device__ double blockExclusive(double v, double *sh) {
  sh[threadIdx.x] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    double run = 0.0;
    for (unsigned i = 0; i < blockDim.x; ++i) {
      double x = sh[i];
      sh[i] = run;
      run += x;
    }
  }
  __syncthreads();
  double r = sh[threadIdx.x];
  __syncthreads();
  return r;
}

__global__ void __launch_bounds__(kThreads)
    pickKernel(int64_t vocab, float topP, uint64_t *rng, Scratch w, int64_t *out) {
  __shared__ double sh[kThreads];
  __shared__ int64_t keepSh, pickSh;
  __shared__ double uSh;
  const double *p = w.keysOut;
  const double sum = *w.sum;
  const int64_t chunk = (vocab + blockDim.x - 1) / blockDim.x;
  const int64_t b = threadIdx.x * chunk, e = b + chunk < vocab ? b + chunk : vocab;
  if (threadIdx.x == 0) {
    keepSh = vocab;
    pickSh = -1;
    uint64_t st = *rng;
    uSh = math::uniform01(st);
    *rng = st;
  }
  // Nucleus: the first i whose cumulative share reaches topP.
  double local = 0.0;
  for (int64_t i = b; i < e; ++i)
    local += p[i] / sum;
  double cum = blockExclusive(local, sh);
  if (b < e && (threadIdx.x == 0 || cum < double(topP)) && cum + local >= double(topP)) {
    for (int64_t i = b; i < e; ++i) {
      cum += p[i] / sum;
      if (cum >= double(topP)) {
        keepSh = i + 1;
        break;
      }
    }
  }
  __syncthreads();
  const int64_t keep = keepSh;
  // Pick: the first i < keep whose running mass exceeds u * kept.
  double mass = 0.0;
  for (int64_t i = b; i < e && i < keep; ++i)
    mass += p[i];
  double acc = blockExclusive(mass, sh);
  __shared__ double keptSh;
  if (threadIdx.x == blockDim.x - 1)
    keptSh = acc + mass;
  __syncthreads();
  const double x = uSh * keptSh;
  if (b < e && b < keep && acc <= x && acc + mass > x) {
    for (int64_t i = b; i < e && i < keep; ++i) {
      acc += p[i];
      if (x < acc) {
        pickSh = i;
        break;
      }
    }
  }
  __syncthreads();
  if (threadIdx.x == 0)
    *out = w.idsOut[pickSh >= 0 ? pickSh : keep - 1];
}

size_t align256(size_t n) { return (n + 255) & ~size_t(255); }

/// Byte offsets in the workspace: keys in/out, ids in/out, the sum, CUB's
/// temporary storage.
struct Offsets {
  size_t keysOut, idsIn, idsOut, sum, cub, cubBytes;
};

Offsets offsetsFor(int64_t vocab) {
  Offsets o{};
  size_t nd = align256(size_t(vocab) * 8), ni = align256(size_t(vocab) * 4);
  o.keysOut = nd;
  o.idsIn = 2 * nd;
  o.idsOut = 2 * nd + ni;
  o.sum = 2 * nd + 2 * ni;
  o.cub = o.sum + 256;
  cub::DeviceRadixSort::SortPairsDescending(
      nullptr, o.cubBytes, static_cast<double *>(nullptr), static_cast<double *>(nullptr),
      static_cast<int32_t *>(nullptr), static_cast<int32_t *>(nullptr), int(vocab));
  return o;
}

Scratch layout(void *ws, int64_t vocab) {
  Offsets o = offsetsFor(vocab);
  char *c = static_cast<char *>(ws);
  Scratch w{};
  w.keysIn = reinterpret_cast<double *>(c);
  w.keysOut = reinterpret_cast<double *>(c + o.keysOut);
  w.idsIn = reinterpret_cast<int32_t *>(c + o.idsIn);
  w.idsOut = reinterpret_cast<int32_t *>(c + o.idsOut);
  w.sum = reinterpret_cast<double *>(c + o.sum);
  w.cubTemp = c + o.cub;
  w.cubBytes = o.cubBytes;
  return w;
}

} // namespace

cudaError_t argmax(const float *logits, int64_t vocab, int64_t *out, cudaStream_t s) {
  if (vocab <= 0)
    return cudaErrorInvalidValue;
  argmaxKernel<<<1, kThreads, 0, s>>>(logits, vocab, out);
  return launched();
}

size_t sampleWorkspaceBytes(int64_t vocab) {
  Offsets o = offsetsFor(vocab);
  return o.cub + o.cubBytes;
}

cudaError_t sampleTopP(const float *logits, int64_t vocab, float temperature, float topP,
                       uint64_t *rngState, int64_t *out, void *workspace, size_t workspaceBytes,
                       cudaStream_t s) {
  if (!(temperature > 0.0f))
    return argmax(logits, vocab, out, s);
  if (vocab <= 0 || vocab > INT32_MAX || workspaceBytes < sampleWorkspaceBytes(vocab))
    return cudaErrorInvalidValue;
  Scratch w = layout(workspace, vocab);
  weightsKernel<<<1, kThreads, 0, s>>>(logits, vocab, temperature, w);
  if (cudaError_t err = launched())
    return err;
  if (cudaError_t err = cub::DeviceRadixSort::SortPairsDescending(
          w.cubTemp, w.cubBytes, w.keysIn, w.keysOut, w.idsIn, w.idsOut, int(vocab), 0,
          int(sizeof(double) * 8), s))
    return err;
  pickKernel<<<1, kThreads, 0, s>>>(vocab, topP, rngState, w, out);
  return launched();
}

} // namespace moert::cuda
