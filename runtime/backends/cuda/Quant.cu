//===- Quant.cu - Quantized weights dequantized at upload -----------------===//
//
// The CUDA backend holds FP8-block (DeepSeek-V3) and MXFP4 (gpt-oss) weights
// as bf16: the stored bytes and scales are copied to the device as they are
// and expanded there, once, by this kernel (math::dequantAt, tested on the
// CPU against the CPU backend's dequantization). Products then read bf16:
// twice (FP8) or four times (MXFP4) the bytes the stored form would need.
//
//===----------------------------------------------------------------------===//
#include "Common.cuh"

namespace moert::cuda {
using namespace detail;

namespace {
__global__ void dequantKernel(math::QFormat f, const uint8_t *q, const void *scales, int64_t N,
                              int64_t K, int64_t bn, int64_t bk, uint16_t *out) {
  const int64_t n = N * K;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    out[i] = math::f32ToBf16(math::dequantAt(f, q, scales, K, bn, bk, i / K, i % K));
}
} // namespace

cudaError_t dequantizeToBf16(math::QFormat f, const uint8_t *q, const void *scales, int64_t N,
                             int64_t K, int64_t bn, int64_t bk, uint16_t *out, cudaStream_t s) {
  if (N < 0 || K < 1 || (f == math::QFormat::MXFP4 ? K % 32 != 0 : (bn < 1 || bk < 1)))
    return cudaErrorInvalidValue;
  if (N == 0)
    return cudaSuccess;
  dequantKernel<<<gridFor(N * K, 256), 256, 0, s>>>(f, q, scales, N, K, bn, bk, out);
  return launched();
}

} // namespace moert::cuda
