//===- Linear.cu - GEMV for decode, cuBLAS for T > 1 ----------------------===//
#include "Common.cuh"

#include <cublas_v2.h>
#include <cstdlib>
#include <dlfcn.h>
#include <string>
#include <vector>

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

namespace {
/// cuBLAS, opened when the first Blas is made rather than linked: the
/// library and cublasLt take most of a second to load, which every moe-run
/// (and every test) would pay on machines that never use the GPU.
struct CublasApi {
  decltype(&cublasCreate_v2) create = nullptr;
  decltype(&cublasDestroy_v2) destroy = nullptr;
  decltype(&cublasSetStream_v2) setStream = nullptr;
  // cublasGemmEx is overloaded in C++ (a wrapper taking cudaDataType): name
  // the library's own signature.
  using GemmEx = cublasStatus_t (*)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int,
                                    int, int, const void *, const void *, cudaDataType, int,
                                    const void *, cudaDataType, int, const void *, void *,
                                    cudaDataType, int, cublasComputeType_t, cublasGemmAlgo_t);
  GemmEx gemmEx = nullptr;

  static const CublasApi *get() {
    static const CublasApi api = load();
    return api.gemmEx ? &api : nullptr;
  }

private:
  static CublasApi load() {
    CublasApi api;
    void *lib = nullptr;
    // The loader's path first (LD_LIBRARY_PATH, ld.so.cache), then the
    // toolkit's usual places.
    std::vector<std::string> names{"libcublas.so.13", "libcublas.so"};
    if (const char *home = std::getenv("CUDA_HOME"))
      names.push_back(std::string(home) + "/lib64/libcublas.so.13");
    names.push_back("/usr/local/cuda/lib64/libcublas.so.13");
    names.push_back("/usr/local/cuda/lib/libcublas.so.13");
    for (const std::string &name : names)
      if ((lib = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL)))
        break;
    if (!lib)
      return api;
    api.create = reinterpret_cast<decltype(create)>(dlsym(lib, "cublasCreate_v2"));
    api.destroy = reinterpret_cast<decltype(destroy)>(dlsym(lib, "cublasDestroy_v2"));
    api.setStream = reinterpret_cast<decltype(setStream)>(dlsym(lib, "cublasSetStream_v2"));
    api.gemmEx = reinterpret_cast<decltype(gemmEx)>(dlsym(lib, "cublasGemmEx"));
    if (!api.create || !api.destroy || !api.setStream)
      api.gemmEx = nullptr;
    return api;
  }
};
} // namespace

Blas::Blas() {
  if (deviceCount() == 0)
    return;
  const CublasApi *api = CublasApi::get();
  cublasHandle_t h = nullptr;
  if (api && api->create(&h) == CUBLAS_STATUS_SUCCESS)
    handle_ = h;
}

Blas::~Blas() {
  if (handle_)
    CublasApi::get()->destroy(static_cast<cublasHandle_t>(handle_));
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
  const CublasApi &api = *CublasApi::get();
  auto h = static_cast<cublasHandle_t>(handle_);
  if (api.setStream(h, s) != CUBLAS_STATUS_SUCCESS)
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
  cublasStatus_t st = api.gemmEx(h, transposed ? CUBLAS_OP_N : CUBLAS_OP_T, CUBLAS_OP_N, int(N),
                                   int(T), int(K), &alpha, W.data, cudaType(W.type),
                                   int(transposed ? N : K), B, cudaType(W.type), int(ldb), &beta, Y,
                                   CUDA_R_32F, int(ldy), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  if (st != CUBLAS_STATUS_SUCCESS)
    return cudaErrorUnknown;
  return addBias(Y, ldy, T, N, bias, s);
}

} // namespace moert::cuda
