//===- Linear.cu - GEMV for decode, cuBLAS for T > 1 ----------------------===//
#include "Common.cuh"

#include <cublas_v2.h>

namespace moert::cuda {
using namespace detail;

namespace {

constexpr int kWarps = 8;

/// One warp per output row: y[n] (+)= dot(W[n, :], x) + bias[n].
template <WType W>
__global__ void __launch_bounds__(kWarps * 32)
    gemvKernel(const float *x, const void *w, int64_t N, int64_t K, const void *bias, float *y,
               bool accumulate, bool vec) {
  const int64_t n = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (n >= N)
    return;
  constexpr int64_t es = W == WType::F32 ? 4 : 2;
  float v = warpDot<W>(static_cast<const char *>(w) + n * K * es, x, K, vec);
  if ((threadIdx.x & 31) == 0) {
    if (bias)
      v += ldw<W>(bias, n);
    y[n] = accumulate ? y[n] + v : v;
  }
}

cudaDataType cudaType(WType t) {
  switch (t) {
  case WType::BF16:
    return CUDA_R_16BF;
  case WType::F16:
    return CUDA_R_16F;
  default:
    return CUDA_R_32F;
  }
}

} // namespace

cudaError_t gemv(const float *x, DW W, int64_t N, int64_t K, DW bias, float *y, bool accumulate,
                 cudaStream_t s) {
  if (N <= 0)
    return cudaSuccess;
  bool vec =
      math::gemvVectorizable(reinterpret_cast<uint64_t>(W.data), K, math::wtypeSize(W.type)) &&
      reinterpret_cast<uint64_t>(x) % 16 == 0;
  // The bias shares the weight's type in plans (one dtype per plan).
  if (bias && bias.type != W.type)
    return cudaErrorInvalidValue;
  MOE_DISPATCH_WTYPE(W.type, WT,
                     gemvKernel<WT><<<gridFor(N, kWarps), kWarps * 32, 0, s>>>(
                         x, W.data, N, K, bias.data, y, accumulate, vec));
  return launched();
}

Blas::Blas() {
  if (deviceCount() == 0)
    return;
  cublasHandle_t h = nullptr;
  if (cublasCreate(&h) == CUBLAS_STATUS_SUCCESS)
    handle_ = h;
}

Blas::~Blas() {
  if (handle_)
    cublasDestroy(static_cast<cublasHandle_t>(handle_));
}

cudaError_t Blas::linear(const float *X, int64_t ldx, int64_t T, DW W, int64_t N, int64_t K,
                         bool transposed, DW bias, float *Y, int64_t ldy, bool accumulate,
                         void *workspace, cudaStream_t s) {
  if (T <= 0 || N <= 0)
    return cudaSuccess;
  if (T == 1 && !transposed && (!bias || bias.type == W.type))
    return gemv(X, W, N, K, bias, Y, accumulate, s);
  if (!handle_)
    return cudaErrorNoDevice;
  auto h = static_cast<cublasHandle_t>(handle_);
  if (cublasSetStream(h, s) != CUBLAS_STATUS_SUCCESS)
    return cudaErrorUnknown;
  const void *B = X;
  int64_t ldb = ldx;
  if (W.type != WType::F32) {
    // Activations are rounded to the weights' 16-bit type (the plan's
    // compute dtype), products accumulate in f32.
    if (cudaError_t err = convertRows(X, ldx, T, K, workspace, W.type, s))
      return err;
    B = workspace;
    ldb = K;
  }
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  // Column-major view: Y^T [N, T] = op(W) [N, K] * X^T [K, T].
  cublasStatus_t st = cublasGemmEx(h, transposed ? CUBLAS_OP_N : CUBLAS_OP_T, CUBLAS_OP_N, int(N),
                                   int(T), int(K), &alpha, W.data, cudaType(W.type),
                                   int(transposed ? N : K), B, cudaType(W.type), int(ldb), &beta, Y,
                                   CUDA_R_32F, int(ldy), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  if (st != CUBLAS_STATUS_SUCCESS)
    return cudaErrorUnknown;
  return addBias(Y, ldy, T, N, bias, s);
}

} // namespace moert::cuda
