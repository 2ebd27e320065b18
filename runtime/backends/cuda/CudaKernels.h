//===- CudaKernels.h - Host wrappers of the CUDA kernels --------*- C++ -*-===//
//
// Plain-pointer launchers of the plan's ops on a CUDA stream (issue 14). All
// pointers are device pointers unless noted; activations are f32 rows `ld`
// floats apart (the plan's arena buffers), weights F32/BF16/F16 with f32
// accumulation. Every launcher is asynchronous on `stream` and returns the
// launch's cudaError_t (cudaSuccess, or the error of the launch). The
// backend class that wires these to runtime/include/moert/Backend.h comes
// when that interface lands; until then the tests call them directly.
//
// Semantics are those of runtime/schema/plan.fbs and of the CPU reference
// kernels (moert/cpu/Kernels.h) with the same names.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "DeviceMath.h"

#include <cstddef>
#include <cstdint>
#include <cuda_runtime_api.h>

namespace moert::cuda {

/// A device weight: data of a F32/BF16/F16 tensor, row-major.
struct DW {
  const void *data = nullptr;
  WType type = WType::F32;
  MOE_HD explicit operator bool() const { return data != nullptr; }
};

/// Number of CUDA devices, 0 on any error (no driver, no device).
int deviceCount();

//===----------------------------------------------------------------------===//
// Element-wise and small ops (Elementwise.cu)
//===----------------------------------------------------------------------===//

/// out[t, :] = scale * W[ids[t] - first, :] for the `rows` rows W holds
/// (rows < 0: all), zeros for ids outside them (a vocabulary-parallel part).
cudaError_t embedding(const int64_t *ids, int64_t T, DW W, int64_t D, float scale, float *out,
                      int64_t ldo, cudaStream_t stream, int64_t first = 0, int64_t rows = -1);
/// io[t, :] += W[pos[t], :]
cudaError_t addRows(const int64_t *pos, int64_t T, DW W, int64_t D, float *io, int64_t ldio,
                    cudaStream_t stream);
cudaError_t rmsNorm(const float *in, int64_t ldi, float *out, int64_t ldo, int64_t rows,
                    int64_t colOffset, int64_t cols, int64_t dim, DW w, float eps,
                    float weightOffset, cudaStream_t stream);
cudaError_t layerNorm(const float *in, int64_t ldi, float *out, int64_t ldo, int64_t rows,
                      int64_t colOffset, int64_t cols, int64_t dim, DW w, DW b, float eps,
                      cudaStream_t stream);
/// In-place RoPE; cosTab/sinTab [positions][rotaryDim/2] on the device.
cudaError_t rope(float *buf, int64_t ld, int64_t T, const int64_t *pos, int heads, int headDim,
                 int rotaryDim, const float *cosTab, const float *sinTab, bool interleaved,
                 cudaStream_t stream);
cudaError_t activation(const float *in, int64_t ldi, float *out, int64_t ldo, int64_t rows,
                       int64_t n, ActKind act, bool gated, cudaStream_t stream);
/// out = a + b over n floats (out may alias a or b).
cudaError_t add(const float *a, const float *b, float *out, int64_t n, cudaStream_t stream);
/// inout[t, :cols] *= sigmoid(gateLogit[t * ldg])
cudaError_t sigmoidGate(const float *gateLogit, int64_t ldg, float *inout, int64_t ld, int64_t rows,
                        int64_t cols, cudaStream_t stream);
/// out[t, :] = moe[t, :] * c0 + mlp[t, :] * c1, c = softmax(coef[t, 0:2])
cudaError_t residualMix(const float *moe, const float *mlp, const float *coef, int64_t ldc,
                        float *out, int64_t ld, int64_t rows, int64_t cols, cudaStream_t stream);
/// out[t, :] (+)= sum_j slotWeight[t*topK+j] * slotOut[(t*topK+j), :] (ascending j)
cudaError_t combine(const float *slotOut, const float *slotWeight, int64_t T, int topK, int64_t D,
                    float *out, int64_t ldo, bool accumulate, cudaStream_t stream);
/// y[t, :N] += bias (broadcast over rows).
cudaError_t addBias(float *y, int64_t ldy, int64_t T, int64_t N, DW bias, cudaStream_t stream);
/// dst[i, :cols] = src[rows[i], :cols] for i < n (a batched step's sampled
/// rows, gathered for the lm_head's one product).
cudaError_t gatherRows(const float *src, int64_t lds, const int64_t *rows, int64_t n, int64_t cols,
                       float *dst, cudaStream_t stream);
/// dst[i] = src[i] converted to `type` (activations to a GEMM's input type).
cudaError_t convertRows(const float *src, int64_t lds, int64_t rows, int64_t cols, void *dst,
                        WType type, cudaStream_t stream);

/// Fills n elements of dst (of `type`) with uniform values in [-scale,
/// scale) from a counter-based hash of (seed, i): benchmark and test data,
/// not the runtime's --random-weights generator.
cudaError_t fillUniform(void *dst, WType type, int64_t n, uint64_t seed, float scale,
                        cudaStream_t stream);
/// Reads `bytes` (a multiple of 16) of p with 16-byte loads and writes one
/// float per block to sink (so the reads cannot be elided): the HBM read
/// bandwidth probe. sink holds readProbeBlocks() floats.
cudaError_t readProbe(const void *p, uint64_t bytes, float *sink, cudaStream_t stream);
int readProbeBlocks();

//===----------------------------------------------------------------------===//
// Quantized weights (Quant.cu)
//===----------------------------------------------------------------------===//

/// out [N, K] bf16 = the quantized matrix (device copies of its stored rows
/// `q` and scale grid, as math::dequantAt reads them); bn/bk: the FP8 block.
cudaError_t dequantizeToBf16(math::QFormat f, const uint8_t *q, const void *scales, int64_t N,
                             int64_t K, int64_t bn, int64_t bk, uint16_t *out,
                             cudaStream_t stream);

//===----------------------------------------------------------------------===//
// Gating and experts (Moe.cu)
//===----------------------------------------------------------------------===//

/// Scratch bytes gate() needs (scores of every token, and what top-k ranks).
size_t gateWorkspaceBytes(int64_t T, int numExperts);
/// The fused gate of plan.fbs in one single-block kernel (small T; any T
/// works, time grows with T * numExperts). Outputs as plan.fbs's Gate table.
/// numExperts <= kGateMaxExperts, topK <= kGateMaxTopK, numGroups <=
/// kGateMaxGroups dividing numExperts (else cudaErrorInvalidValue).
cudaError_t gate(const float *logits, int64_t ld, int64_t T, const math::GateParams &p,
                 int32_t *slotExpert, float *slotWeight, int32_t *expertOffsets,
                 int32_t *sortedSlots, void *workspace, cudaStream_t stream);

/// One local expert's weights (device pointers): its slices of the Experts step's
/// stacked weights.
struct ExpertW {
  DW gate, up, down, upBias, downBias, gateBias;
  int replica = 0, numReplicas = 1;
  uint64_t bytes = 0; // of gate, up and down: what a routed expert reads
};

struct ExpertsArgs {
  const float *in = nullptr; // [T, D], ld = ldi
  int64_t ldi = 0;
  const int32_t *sortedSlots = nullptr, *expertOffsets = nullptr;
  float *slotOut = nullptr; // [T*topK, D] contiguous
  int64_t T = 0;
  int topK = 1, numExperts = 0; // numExperts: the gate's (global) count
  int64_t D = 0, I = 0;
  ActKind act = ActKind::Silu;
  bool gated = true;
  float swigluLimit = 0.0f, swigluAlpha = 0.0f; // act SwigluOai's parameters
  /// Device table [numExperts] of ExpertW (numReplicas 0: not local).
  const ExpertW *experts = nullptr;
  /// The type of every local expert's weights (one per op: the plan's dtype).
  WType weightType = WType::F32;
  /// Zero slot_out first (false: a later part of a step launched once per
  /// fetched expert under expert streaming; the table then lists only that
  /// part's experts, the others with numReplicas 0).
  bool clearSlotOut = true;
  /// The bandwidth floor's count, kept on the device so that routing is
  /// never read back: when set, the launch adds the bytes of every local
  /// expert that got rows (ExpertW::bytes) to *routedBytes and stores the
  /// new total in *routedMirror (mapped host memory the host reads after a
  /// synchronize, without a copy).
  unsigned long long *routedBytes = nullptr;
  unsigned long long *routedMirror = nullptr;
};
/// Scratch bytes of experts(): the gathered hidden rows [T*topK, 2I] f32.
size_t expertsWorkspaceBytes(int64_t T, int topK, int64_t I);
/// Grouped expert FFN over the routed slots (plan.fbs's Experts): rows of
/// non-local experts and dropped slots are 0. Routing stays on the device:
/// launches are sized by T*topK and blocks past expert_offsets[E] exit. For
/// T*topK <= kExpertsGemvMaxRows the products are GEMVs over the routed
/// experts (each routed expert's weights read once at T=1); otherwise a
/// grouped tiled GEMM with the gather fused into its loads and the scatter
/// into its stores.
constexpr int64_t kExpertsGemvMaxRows = 16;
cudaError_t experts(const ExpertsArgs &a, void *workspace, cudaStream_t stream);

//===----------------------------------------------------------------------===//
// Linear products (Linear.cu)
//===----------------------------------------------------------------------===//

/// y[0:N] (+)= W x + bias for one row (W [N, K] row-major): one warp per
/// row, 16-byte loads when rows are 16-byte aligned.
cudaError_t gemv(const float *x, DW W, int64_t N, int64_t K, DW bias, float *y, bool accumulate,
                 cudaStream_t stream);

/// cuBLAS state for T > 1 products (one per device and stream).
class Blas {
public:
  Blas();
  ~Blas();
  Blas(const Blas &) = delete;
  Blas &operator=(const Blas &) = delete;
  /// Whether the handle was created (false without a device).
  bool ok() const { return handle_ != nullptr; }
  /// Y[t, 0:N] (+)= X[t, 0:K] W^T + bias (W [N, K], or [K, N] when
  /// transposed). T == 1 and !transposed runs gemv(). Otherwise X is
  /// converted to W's type in `workspace` (linearWorkspaceBytes) and
  /// cublasGemmEx computes in f32.
  cudaError_t linear(const float *X, int64_t ldx, int64_t T, DW W, int64_t N, int64_t K,
                     bool transposed, DW bias, float *Y, int64_t ldy, bool accumulate,
                     void *workspace, cudaStream_t stream);
  static size_t linearWorkspaceBytes(int64_t T, int64_t K) { return size_t(T * K) * 4 + 256; }

private:
  void *handle_ = nullptr;
};

//===----------------------------------------------------------------------===//
// Attention (Attention.cu)
//===----------------------------------------------------------------------===//

/// A layer's device K/V cache: [kvHeads, maxSeq, headDim] each, of type;
/// `pages` says which rows hold a position (paged: the rows of a batched
/// step belong to several sequences).
struct KV {
  void *k = nullptr, *v = nullptr;
  WType type = WType::F32;
  int64_t maxSeq = 0;
  math::KVPages pages;
};

struct AttentionArgs {
  const float *qkv = nullptr;
  int64_t ldqkv = 0, qCol = 0, kCol = 0, vCol = 0;
  float *out = nullptr;
  int64_t ldo = 0, T = 0;
  const int64_t *pos = nullptr; // device [T]
  /// Host: max of pos (sizes the splits); -1: the kernels read it from pos
  /// (a captured step replayed at later positions; splits must then be set).
  int64_t maxPos = 0;
  KV cache;
  int heads = 0, kvHeads = 0, headDim = 0;
  float scale = 1.0f;
  int slidingWindow = 0;
  /// Sequence splits (split-K over positions), 0: chosen from the context.
  int splits = 0;
  /// Per-head sink logits [heads] (gpt-oss), or none.
  DW sinks;
};
/// headDim <= kAttnMaxHeadDim.
constexpr int kAttnMaxHeadDim = 256;
size_t attentionWorkspaceBytes(const AttentionArgs &a);
/// The split count attention() uses for `a` (a.splits when set).
int chooseAttentionSplits(const AttentionArgs &a);
/// Stores K/V of the T tokens at pos[t] (pool rows per cache.pages), then
/// causal GQA attention over each token's own sequence: blocks
/// of one KV head and a tile of (query, head) pairs share each K/V tile in
/// shared memory (decode: the group's heads; prefill: tiles of queries),
/// with online softmax per warp and split-K over positions merged in a
/// second kernel; a head's sink (if any) joins the softmax's denominator.
cudaError_t attention(const AttentionArgs &a, void *workspace, cudaStream_t stream);

/// DeepSeek-V3's multi-head latent attention (plan.fbs MlaAttention) over a
/// latent cache of [c_kv | k_pe] rows ([maxSeq, kvLoraRank + ropeDim] in
/// cache.k; cache.v unused), kv_b absorbed into the query and the output.
struct MlaArgs {
  const float *q = nullptr; // [T, heads * (nope + rope)], q_col applied
  int64_t ldq = 0;
  const float *latent = nullptr, *kPe = nullptr; // latent_col / k_pe_col applied
  int64_t ldLatent = 0, ldKPe = 0;
  float *out = nullptr; // [T, heads * vHeadDim]
  int64_t ldo = 0, T = 0;
  const int64_t *pos = nullptr; // device [T]
  int64_t maxPos = 0;           // as AttentionArgs::maxPos (-1: read from pos)
  KV cache;
  int heads = 0, nopeDim = 0, ropeDim = 0, vHeadDim = 0, kvLoraRank = 0;
  float scale = 1.0f;
  DW kvB; // [heads * (nope + vHeadDim), kvLoraRank]
  int splits = 0;
};
/// The widths the kernels hold in registers (larger plans are refused).
constexpr int kMlaMaxLatent = 512, kMlaMaxCols = 640;
int chooseMlaSplits(const MlaArgs &a);
size_t mlaWorkspaceBytes(const MlaArgs &a);
/// Stores the T latent rows, absorbs W_UK into each head's query, attends
/// over the latent rows (split-K over positions, merged), and applies W_UV.
cudaError_t mlaAttention(const MlaArgs &a, void *workspace, cudaStream_t stream);

//===----------------------------------------------------------------------===//
// Sampling (Sampling.cu)
//===----------------------------------------------------------------------===//

/// out[0] = argmax of logits[0:vocab] (ties to the lower id).
cudaError_t argmax(const float *logits, int64_t vocab, int64_t *out, cudaStream_t stream);
size_t sampleWorkspaceBytes(int64_t vocab);
/// moert::Sampler::next on the device: temperature + top-p over the
/// probabilities sorted descending (ties to the lower id); *rngState (device)
/// is the splitmix64 state, advanced once per call like the host sampler's.
/// temperature <= 0 is argmax.
cudaError_t sampleTopP(const float *logits, int64_t vocab, float temperature, float topP,
                       uint64_t *rngState, int64_t *out, void *workspace, size_t workspaceBytes,
                       cudaStream_t stream);

} // namespace moert::cuda
