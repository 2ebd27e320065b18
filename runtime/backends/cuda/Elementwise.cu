//===- Elementwise.cu - Embedding, norms, RoPE, activations, mixes --------===//
//
// Memory-bound ops: one block per row (norms) or a grid-stride loop over
// elements; per-element math from DeviceMath.h.
//
//===----------------------------------------------------------------------===//
#include "Common.cuh"

namespace moert::cuda {
using namespace detail;

int deviceCount() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError(); // clear the sticky "no driver" error
    return 0;
  }
  return n;
}

namespace {

/// Rows ids[t] - first of the `rows` rows w holds (rows < 0: all); an id
/// outside them (a vocabulary-parallel member's part) gives zeros.
template <WType W>
__global__ void embeddingKernel(const int64_t *ids, int64_t T, const void *w, int64_t D,
                                float scale, float *out, int64_t ldo, bool add, int64_t first,
                                int64_t rows) {
  for (int64_t t = blockIdx.y; t < T; t += gridDim.y) {
    const int64_t row = ids[t] - first;
    const bool held = rows < 0 || (row >= 0 && row < rows);
    float *o = out + t * ldo;
    for (int64_t d = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; d < D;
         d += int64_t(gridDim.x) * blockDim.x) {
      float v = held ? ldw<W>(w, row * D + d) * scale : 0.0f;
      o[d] = add ? o[d] + v : v;
    }
  }
}

cudaError_t rowsFromWeight(const int64_t *ids, int64_t T, DW W, int64_t D, float scale, float *out,
                           int64_t ldo, bool add, cudaStream_t s, int64_t first = 0,
                           int64_t rows = -1) {
  if (T <= 0 || D <= 0)
    return cudaSuccess;
  dim3 grid(gridFor(D, 256), unsigned(T < 65535 ? T : 65535));
  MOE_DISPATCH_WTYPE(W.type, WT,
                     embeddingKernel<WT><<<grid, 256, 0, s>>>(ids, T, W.data, D, scale, out, ldo,
                                                              add, first, rows));
  return launched();
}

/// One block per (row, group of dim columns).
template <bool Rms>
__global__ void normKernel(const float *in, int64_t ldi, float *out, int64_t ldo, int64_t colOffset,
                           int64_t groups, int64_t dim, const void *w, WType wt, const void *b,
                           WType bt, float eps, float weightOffset) {
  __shared__ double sh[32];
  const int64_t r = blockIdx.x / groups, g = colOffset + (blockIdx.x % groups) * dim;
  const float *x = in + r * ldi + g;
  float *y = out + r * ldo + g;
  if constexpr (Rms) {
    double ss = 0.0;
    for (int64_t d = threadIdx.x; d < dim; d += blockDim.x)
      ss += double(x[d]) * x[d];
    ss = blockSum(ss, sh);
    float inv = math::rmsInv(ss, dim, eps);
    for (int64_t d = threadIdx.x; d < dim; d += blockDim.x)
      y[d] =
          math::rmsApply(x[d], inv, w != nullptr, w ? math::loadW(w, wt, d) : 1.0f, weightOffset);
  } else {
    double s = 0.0;
    for (int64_t d = threadIdx.x; d < dim; d += blockDim.x)
      s += x[d];
    double mean = blockSum(s, sh) / double(dim);
    double v = 0.0;
    for (int64_t d = threadIdx.x; d < dim; d += blockDim.x)
      v += (x[d] - mean) * (x[d] - mean);
    double inv = math::layerInv(blockSum(v, sh), dim, eps);
    for (int64_t d = threadIdx.x; d < dim; d += blockDim.x)
      y[d] = math::layerApply(x[d], mean, inv, w ? math::loadW(w, wt, d) : 1.0f,
                              b ? math::loadW(b, bt, d) : 0.0f);
  }
}

int normThreads(int64_t dim) {
  int t = 32;
  while (t < 1024 && t < dim)
    t *= 2;
  return t;
}

__global__ void ropeKernel(float *buf, int64_t ld, int64_t T, const int64_t *pos, int heads,
                           int headDim, int half, const float *cosTab, const float *sinTab,
                           bool interleaved) {
  const int64_t n = T * heads * half;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    int pair = int(i % half);
    int64_t th = i / half;
    int h = int(th % heads);
    int64_t t = th / heads;
    float *v = buf + t * ld + int64_t(h) * headDim;
    int i1, i2;
    math::ropePair(pair, half, interleaved, i1, i2);
    int64_t c = pos[t] * half + pair;
    math::ropeRotate(v[i1], v[i2], cosTab[c], sinTab[c]);
  }
}

__global__ void activationKernel(const float *in, int64_t ldi, float *out, int64_t ldo,
                                 int64_t rows, int64_t n, ActKind act, bool gated) {
  // One block row per data row keeps in-place (out == in) safe: each
  // element reads its own x (and up) before writing its own column.
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y)
    for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < n;
         j += int64_t(gridDim.x) * blockDim.x)
      out[r * ldo + j] = math::activationAt(act, gated, in + r * ldi, n, j);
}

__global__ void addKernel(const float *a, const float *b, float *out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    out[i] = a[i] + b[i];
}

__global__ void sigmoidGateKernel(const float *g, int64_t ldg, float *io, int64_t ld, int64_t rows,
                                  int64_t cols) {
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    float s = math::activate(ActKind::Sigmoid, g[r * ldg]);
    for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < cols;
         j += int64_t(gridDim.x) * blockDim.x)
      io[r * ld + j] *= s;
  }
}

__global__ void residualMixKernel(const float *moe, const float *mlp, const float *coef,
                                  int64_t ldc, float *out, int64_t ld, int64_t rows, int64_t cols) {
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    // softmax of two logits, in double like the reference host loop.
    double a = coef[r * ldc], b = coef[r * ldc + 1], m = a > b ? a : b;
    double ea = exp(a - m), eb = exp(b - m), s = ea + eb;
    float c0 = float(ea / s), c1 = float(eb / s);
    for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < cols;
         j += int64_t(gridDim.x) * blockDim.x)
      out[r * ld + j] = moe[r * ld + j] * c0 + mlp[r * ld + j] * c1;
  }
}

__global__ void combineKernel(const float *slotOut, const float *slotWeight, int64_t T, int topK,
                              int64_t D, float *out, int64_t ldo, bool accumulate) {
  for (int64_t t = blockIdx.y; t < T; t += gridDim.y)
    for (int64_t d = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; d < D;
         d += int64_t(gridDim.x) * blockDim.x) {
      float s = 0.0f;
      for (int j = 0; j < topK; ++j)
        s += slotWeight[t * topK + j] * slotOut[(t * topK + j) * D + d];
      float *o = out + t * ldo + d;
      *o = accumulate ? *o + s : s;
    }
}

template <WType W>
__global__ void addBiasKernel(float *y, int64_t ldy, int64_t T, int64_t N, const void *b) {
  for (int64_t t = blockIdx.y; t < T; t += gridDim.y)
    for (int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; n < N;
         n += int64_t(gridDim.x) * blockDim.x)
      y[t * ldy + n] += ldw<W>(b, n);
}

__global__ void convertKernel(const float *src, int64_t lds, int64_t rows, int64_t cols, void *dst,
                              WType type) {
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y)
    for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < cols;
         c += int64_t(gridDim.x) * blockDim.x)
      math::storeW(dst, type, r * cols + c, src[r * lds + c]);
}

__global__ void gatherRowsKernel(const float *src, int64_t lds, const int64_t *rows, int64_t n,
                                 int64_t cols, float *dst) {
  for (int64_t i = blockIdx.y; i < n; i += gridDim.y)
    for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < cols;
         c += int64_t(gridDim.x) * blockDim.x)
      dst[i * cols + c] = src[rows[i] * lds + c];
}

__global__ void fillUniformKernel(void *dst, WType type, int64_t n, uint64_t seed, float scale) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    uint64_t x = seed + 0x9e3779b97f4a7c15ull * uint64_t(i + 1);
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    x ^= x >> 31;
    float u = float(x >> 40) * (1.0f / 16777216.0f); // [0, 1)
    math::storeW(dst, type, i, (2.0f * u - 1.0f) * scale);
  }
}

constexpr int kProbeBlocks = 1056, kProbeThreads = 512;

__global__ void __launch_bounds__(kProbeThreads)
    readProbeKernel(const uint4 *p, uint64_t n, float *sink) {
  __shared__ float sh[32];
  uint32_t acc = 0;
  for (uint64_t i = blockIdx.x * uint64_t(blockDim.x) + threadIdx.x; i < n;
       i += uint64_t(gridDim.x) * blockDim.x) {
    uint4 v = __ldcs(p + i); // streaming: no L2 reuse across passes
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  float r = blockSum(float(acc & 1u), sh);
  if (threadIdx.x == 0)
    sink[blockIdx.x] = r;
}

dim3 rowGrid(int64_t rows, int64_t cols, int threads) {
  return dim3(gridFor(cols, threads), unsigned(rows < 65535 ? (rows > 0 ? rows : 1) : 65535));
}

} // namespace

cudaError_t embedding(const int64_t *ids, int64_t T, DW W, int64_t D, float scale, float *out,
                      int64_t ldo, cudaStream_t s, int64_t first, int64_t rows) {
  return rowsFromWeight(ids, T, W, D, scale, out, ldo, false, s, first, rows);
}

cudaError_t addRows(const int64_t *pos, int64_t T, DW W, int64_t D, float *io, int64_t ldio,
                    cudaStream_t s) {
  return rowsFromWeight(pos, T, W, D, 1.0f, io, ldio, true, s);
}

cudaError_t rmsNorm(const float *in, int64_t ldi, float *out, int64_t ldo, int64_t rows,
                    int64_t colOffset, int64_t cols, int64_t dim, DW w, float eps,
                    float weightOffset, cudaStream_t s) {
  if (rows <= 0 || dim <= 0 || cols < dim)
    return rows <= 0 ? cudaSuccess : cudaErrorInvalidValue;
  int64_t groups = cols / dim;
  normKernel<true><<<unsigned(rows * groups), normThreads(dim), 0, s>>>(
      in, ldi, out, ldo, colOffset, groups, dim, w.data, w.type, nullptr, WType::F32, eps,
      weightOffset);
  return launched();
}

cudaError_t layerNorm(const float *in, int64_t ldi, float *out, int64_t ldo, int64_t rows,
                      int64_t colOffset, int64_t cols, int64_t dim, DW w, DW b, float eps,
                      cudaStream_t s) {
  if (rows <= 0 || dim <= 0 || cols < dim)
    return rows <= 0 ? cudaSuccess : cudaErrorInvalidValue;
  int64_t groups = cols / dim;
  normKernel<false><<<unsigned(rows * groups), normThreads(dim), 0, s>>>(
      in, ldi, out, ldo, colOffset, groups, dim, w.data, w.type, b.data, b.type, eps, 0.0f);
  return launched();
}

cudaError_t rope(float *buf, int64_t ld, int64_t T, const int64_t *pos, int heads, int headDim,
                 int rotaryDim, const float *cosTab, const float *sinTab, bool interleaved,
                 cudaStream_t s) {
  int half = rotaryDim / 2;
  int64_t n = T * heads * half;
  if (n <= 0)
    return cudaSuccess;
  ropeKernel<<<gridFor(n, 256), 256, 0, s>>>(buf, ld, T, pos, heads, headDim, half, cosTab, sinTab,
                                             interleaved);
  return launched();
}

cudaError_t activation(const float *in, int64_t ldi, float *out, int64_t ldo, int64_t rows,
                       int64_t n, ActKind act, bool gated, cudaStream_t s) {
  if (rows <= 0 || n <= 0)
    return cudaSuccess;
  activationKernel<<<rowGrid(rows, n, 256), 256, 0, s>>>(in, ldi, out, ldo, rows, n, act, gated);
  return launched();
}

cudaError_t add(const float *a, const float *b, float *out, int64_t n, cudaStream_t s) {
  if (n <= 0)
    return cudaSuccess;
  addKernel<<<gridFor(n, 256), 256, 0, s>>>(a, b, out, n);
  return launched();
}

cudaError_t sigmoidGate(const float *g, int64_t ldg, float *io, int64_t ld, int64_t rows,
                        int64_t cols, cudaStream_t s) {
  if (rows <= 0 || cols <= 0)
    return cudaSuccess;
  sigmoidGateKernel<<<rowGrid(rows, cols, 256), 256, 0, s>>>(g, ldg, io, ld, rows, cols);
  return launched();
}

cudaError_t residualMix(const float *moe, const float *mlp, const float *coef, int64_t ldc,
                        float *out, int64_t ld, int64_t rows, int64_t cols, cudaStream_t s) {
  if (rows <= 0 || cols <= 0)
    return cudaSuccess;
  residualMixKernel<<<rowGrid(rows, cols, 256), 256, 0, s>>>(moe, mlp, coef, ldc, out, ld, rows,
                                                             cols);
  return launched();
}

cudaError_t combine(const float *slotOut, const float *slotWeight, int64_t T, int topK, int64_t D,
                    float *out, int64_t ldo, bool accumulate, cudaStream_t s) {
  if (T <= 0 || D <= 0)
    return cudaSuccess;
  combineKernel<<<rowGrid(T, D, 256), 256, 0, s>>>(slotOut, slotWeight, T, topK, D, out, ldo,
                                                   accumulate);
  return launched();
}

cudaError_t addBias(float *y, int64_t ldy, int64_t T, int64_t N, DW bias, cudaStream_t s) {
  if (!bias || T <= 0 || N <= 0)
    return cudaSuccess;
  MOE_DISPATCH_WTYPE(bias.type, WT,
                     addBiasKernel<WT><<<rowGrid(T, N, 256), 256, 0, s>>>(y, ldy, T, N, bias.data));
  return launched();
}

cudaError_t gatherRows(const float *src, int64_t lds, const int64_t *rows, int64_t n, int64_t cols,
                       float *dst, cudaStream_t s) {
  if (n <= 0 || cols <= 0)
    return cudaSuccess;
  gatherRowsKernel<<<rowGrid(n, cols, 256), 256, 0, s>>>(src, lds, rows, n, cols, dst);
  return launched();
}

cudaError_t fillUniform(void *dst, WType type, int64_t n, uint64_t seed, float scale,
                        cudaStream_t s) {
  if (n <= 0)
    return cudaSuccess;
  fillUniformKernel<<<gridFor(n, 256), 256, 0, s>>>(dst, type, n, seed, scale);
  return launched();
}

int readProbeBlocks() { return kProbeBlocks; }

cudaError_t readProbe(const void *p, uint64_t bytes, float *sink, cudaStream_t s) {
  readProbeKernel<<<kProbeBlocks, kProbeThreads, 0, s>>>(static_cast<const uint4 *>(p), bytes / 16,
                                                         sink);
  return launched();
}

cudaError_t convertRows(const float *src, int64_t lds, int64_t rows, int64_t cols, void *dst,
                        WType type, cudaStream_t s) {
  if (rows <= 0 || cols <= 0)
    return cudaSuccess;
  convertKernel<<<rowGrid(rows, cols, 256), 256, 0, s>>>(src, lds, rows, cols, dst, type);
  return launched();
}

} // namespace moert::cuda
