//===- Kernels.h - CPU kernels of the plan's ops ----------------*- C++ -*-===//
//
// Activations are f32; weights are F32, BF16 or F16 and are converted inside
// the kernels (never materialized as f32). Matrix products dispatch on the
// CPU at run time: AVX-512 kernels (with AVX512-BF16 dot products where the
// plan computes in bf16) or portable scalar/OpenBLAS code.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "moert/RopeTables.h"

#include "moert/DType.h"
#include "moert/ExpertSelection.h"
#include "moert/ThreadPool.h"

#include <cstdint>
#include <vector>

namespace moert::cpu {

enum class Isa { Scalar = 0, Avx512 = 1, Avx512Bf16 = 2 };

/// The best ISA this CPU supports, lowered by MOERT_ISA=scalar|avx512 for
/// testing the fallbacks.
Isa detectIsa();
/// The ISA kernels use (detectIsa() unless overridden by setIsa).
Isa activeIsa();
void setIsa(Isa isa);
const char *isaName(Isa isa);

/// A quantized matrix's storage (plan.fbs WeightFormat's values).
enum class QuantFormat : uint8_t { None = 0, FP8E4M3Block = 1, MXFP4 = 2 };

/// A weight operand: data of a F32/BF16/F16 tensor, row-major or (BF16
/// matrices) Layout::Packed16; or a quantized matrix [N, K] as stored:
/// `data` its rows of values (FP8: one byte each; MXFP4: e2m1 pairs),
/// `scales` the row-major [ceil(N / blockRows), ceil(K / blockCols)] grid
/// (FP8: f32; MXFP4: e8m0 bytes).
struct WRef {
  const void *data = nullptr;
  DType dtype = DType::F32;
  Layout layout = Layout::RowMajor;
  QuantFormat format = QuantFormat::None;
  const void *scales = nullptr;
  int64_t blockRows = 0, blockCols = 0;
  explicit operator bool() const { return data != nullptr; }
};

/// FP8 e4m3 (OCP "fn": bias 7, no infinities) to f32, exactly.
float fp8e4m3ToF32(uint8_t v);
/// An MXFP4 scale (e8m0) to f32: 2^(v - 127), as HF's torch.ldexp gives it.
float e8m0ToF32(uint8_t v);
/// Rows [n0, n1) of quantized W [N, K] dequantized to f32 (row n at
/// out + (n - n0) * K): HF's dequantized weight, value x its block's scale.
void dequantizeRows(WRef W, int64_t K, int64_t n0, int64_t n1, float *out);
/// Rows of W (f32, bf16 or FP8 block-scaled, row-major) widened in
/// registers (MLA's absorbed kv_b; Rows.cpp): rowKernelsSupported says
/// whether this CPU and W take them. axpyRows: out[0:K] += coef[i] x row
/// r0 + i for i < n, one FMA per element, row after row; dotRows: out[i] =
/// row r0 + i . x as one 16-lane FMA chain in 16-column steps (the tail
/// masked), then its sum. The same floats as dequantizeRows followed by
/// those loops.
bool rowKernelsSupported(WRef W);
void axpyRows(WRef W, int64_t K, int64_t r0, int64_t n, const float *coef, float *out);
void dotRows(WRef W, int64_t K, int64_t r0, int64_t n, const float *x, float *out);

/// Bytes of a BF16 matrix [N, K] in Layout::Packed16 (N rounded up to 16, K
/// to 2).
uint64_t packedBytes(int64_t N, int64_t K);
/// Packs rows [n0, n1) of a BF16 matrix [N, K] into `dst`, the whole packed
/// matrix; `src` holds those rows row-major (row n at src + (n - n0) * K).
/// n0 is a multiple of 16, n1 one too or N. Blocks are independent, so
/// threads may pack disjoint row ranges of one matrix concurrently.
void packBf16(const uint16_t *src, int64_t N, int64_t K, int64_t n0, int64_t n1, uint16_t *dst);
/// Element (n, k) of W [N, K] (not transposed) as float, in either layout.
float weightAt(WRef w, int64_t K, int64_t n, int64_t k);

/// Per-thread scratch memory reused across calls (64-byte aligned).
class Workspace {
public:
  explicit Workspace(int threads) : perThread_(size_t(threads)) {}
  /// A shared buffer of at least `bytes` (call outside parallel regions).
  void *shared(size_t slot, size_t bytes);
  /// Thread `tid`'s buffer of at least `bytes` (allocate with reserve first).
  void *local(int tid, size_t bytes);
  void reserveLocal(size_t bytes);

private:
  struct Buf {
    void *p = nullptr;
    size_t size = 0;
    ~Buf();
    void *get(size_t bytes);
  };
  std::vector<Buf> perThread_;
  // Slots: 0 the products' packed X, 1 and 2 the experts' gathered rows and
  // hidden, 3 Logits' rows, 4 MXFP4's and FP8's X for their kernels.
  Buf shared_[5];
};

/// How a product may round its activations.
enum class Precision {
  F32,  // exact f32 products (weights upcast exactly)
  BF16, // activations may be rounded to bf16 (plan compute dtype BF16)
};

/// Forces one product strategy (benchmarks and tests): Auto picks per shape.
/// Panels converts weight panels to f32 and calls OpenBLAS sgemm.
enum class LinearStrategy { Auto, Panels };
void setLinearStrategy(LinearStrategy s);

/// Y[t, 0:N] (+)= X[t, 0:K] W^T + bias for t < T, where W is [N, K] row-major
/// or, with `transposed`, [K, N]. Y rows are `ldy` floats apart.
void linear(ThreadPool &pool, Workspace &ws, const float *X, int64_t ldx, int64_t T, WRef W,
            int64_t N, int64_t K, bool transposed, WRef bias, float *Y, int64_t ldy,
            bool accumulate, Precision prec);

/// One matrix-vector product of a batch: y[0:N] (+)= W x[0:K] (+ bias).
struct GemvJob {
  const float *x;
  WRef w;
  int64_t N, K;
  WRef bias;
  float *y;
  bool accumulate = false;
};
/// Runs independent single-token products in one parallel pass (one
/// dispatch and one load-balanced split for all of them): decode's routed
/// experts would otherwise synchronize the threads per matrix.
void linearBatch(ThreadPool &pool, Workspace &ws, const std::vector<GemvJob> &jobs, Precision prec);

/// One product of a group sharing X: y[t, 0:N] (+)= X[t] W^T (+ bias).
struct MatJob {
  WRef w;
  int64_t N;
  WRef bias;
  float *y;
  int64_t ldy;
  bool accumulate = false;
};
/// Products of one X [T, K] with several (not transposed) matrices, such
/// as q/k/v or an expert's gate and up projections: with packed weights one
/// parallel pass over all their rows; otherwise one linear() each. The
/// results equal separate linear() calls bit for bit.
void linearMulti(ThreadPool &pool, Workspace &ws, const float *X, int64_t ldx, int64_t T,
                 int64_t K, const std::vector<MatJob> &jobs, Precision prec);

//===----------------------------------------------------------------------===//
// Element-wise and small ops (single-threaded unless noted)
//===----------------------------------------------------------------------===//

/// plan::ActKind's order. SwigluOai has parameters: swigluOai() computes it,
/// activate() and activation() do not take it.
enum class Act { Gelu, GeluTanh, Silu, Relu, Sigmoid, Identity, SwigluOai };
float activate(Act a, float x);

/// out[t] = scale * W[ids[t] - first] for the `rows` table rows W holds from
/// `first` on (a vocabulary-parallel part; rows < 0: all), zeros for ids
/// outside them.
void embedding(const int64_t *ids, int64_t T, WRef W, int64_t D, float scale, float *out,
               int64_t ldo, int64_t first = 0, int64_t rows = -1);
void addRows(const int64_t *pos, int64_t T, WRef W, int64_t D, float *io, int64_t ldio);

/// Normalizes groups of `dim` columns in [colOffset, colOffset+cols) of each row.
void layerNorm(const float *in, int64_t ldi, float *out, int64_t ldo, int64_t rows,
               int64_t colOffset, int64_t cols, int64_t dim, WRef w, WRef b, float eps);
void rmsNorm(const float *in, int64_t ldi, float *out, int64_t ldo, int64_t rows,
             int64_t colOffset, int64_t cols, int64_t dim, WRef w, float eps, float weightOffset);

/// In-place rotary embedding of `heads` heads of headDim starting at column 0
/// of each row of buf; rotates the first rotaryDim dims of each head using
/// tables [position][rotaryDim/2] from ropeTables.
void rope(float *buf, int64_t ld, int64_t T, const int64_t *pos, int heads, int headDim,
          int rotaryDim, const float *cosTab, const float *sinTab, bool interleaved);
/// The tables (shared with every backend).
using ::moert::ropeTables;

void activation(const float *in, int64_t ldi, float *out, int64_t ldo, int64_t rows, int64_t n,
                Act act, bool gated);
/// gpt-oss's clamped SwiGLU in place on rows of [gate (n) | up (n)]: with
/// g = min(gate, limit), u = clamp(up, -limit, limit), the first n columns
/// become (u + 1) * g * sigmoid(alpha * g) (HF GptOssExperts).
void swigluOai(float *io, int64_t ld, int64_t rows, int64_t n, float limit, float alpha);

/// A layer's K/V cache: [kvHeads, maxSeq, headDim] each, of dtype. Paged
/// (pageTable set): row t's position p is pool row
/// pageTable[seq[t] * pagesPerSeq + p / pageSize] * pageSize + p % pageSize;
/// otherwise row p.
struct KVView {
  void *k, *v;
  DType dtype;
  int64_t maxSeq;
  const int32_t *pageTable = nullptr;
  const int64_t *seq = nullptr;
  int64_t pagesPerSeq = 1, pageSize = 0;
  /// Pool row of position j of token t's sequence (j itself when unpaged).
  int64_t poolRow(int64_t t, int64_t j) const {
    if (!pageTable)
      return j;
    return int64_t(pageTable[seq[t] * pagesPerSeq + j / pageSize]) * pageSize + j % pageSize;
  }
};

/// Stores K/V of T tokens at pos[t] (of sequence seq[t] when paged), then
/// causal attention (parallel over heads).
void attention(ThreadPool &pool, Workspace &ws, const float *qkv, int64_t ldqkv, int64_t qCol,
               int64_t kCol, int64_t vCol, float *out, int64_t ldo, int64_t T,
               const int64_t *pos, KVView cache, int heads, int kvHeads, int headDim,
               float scale, int slidingWindow, WRef sinks = {}, int vHeadDim = 0);
/// DeepSeek-V3's multi-head latent attention over a latent cache (plan.fbs
/// MlaAttention): cache.k holds one [c_kv | k_pe] row per position (no v);
/// stores the T new rows, then attends with kv_b absorbed into the query
/// and the output (parallel over heads and rows).
struct MlaInputs {
  const float *q;
  int64_t ldq;
  const float *latent;
  int64_t ldLatent;
  const float *kPe;
  int64_t ldKPe;
};
struct MlaParams {
  int heads, nopeDim, ropeDim, vHeadDim, kvLoraRank;
  float scale;
  WRef kvB; // [heads * (nopeDim + vHeadDim), kvLoraRank], row-major
};
void mlaAttention(ThreadPool &pool, Workspace &ws, const MlaInputs &in, float *out, int64_t ldo,
                  int64_t T, const int64_t *pos, KVView cache, const MlaParams &p);
/// out[t, j] = X[t, indices[j]], X the inputs' column ranges side by side.
struct ColumnRange {
  const float *data;
  int64_t ld, width;
};
void gatherColumns(const ColumnRange *inputs, size_t numInputs, const int32_t *indices,
                   size_t numIndices, float *out, int64_t ldo, int64_t T);

struct GateParams {
  /// The choice (selectionOf; DeepSeek-V3's groups too), whose selection-only
  /// bias (numExperts values) is `selectionBias`.
  ExpertSelection sel;
  bool normTopk;
  float capacityFactor;
  int minCapacity;
  bool dropTokens;
  WRef selectionBias = {};
  float routedScalingFactor = 1.0f; // the weights' final scale
};
/// The fused gate of plan.fbs. Returns the number of admitted slots;
/// routedCounts (optional, numExperts) accumulates pre-capacity choices.
int64_t gate(const float *logits, int64_t ld, int64_t T, const GateParams &p,
             int32_t *slotExpert, float *slotWeight, int32_t *expertOffsets,
             int32_t *sortedSlots, uint64_t *routedCounts);

/// out[i] = a[i] + b[i] (out may alias a or b).
void add(const float *a, const float *b, float *out, size_t n);
/// io[t, :] *= sigmoid(gateLogit[t, 0]) (Qwen2-MoE's shared expert gate).
void sigmoidGate(const float *gateLogit, int64_t ldg, float *io, int64_t ldio, int64_t T);
/// DeepSpeed residual MoE: c = softmax(coef[t, 0:2]); out = moe * c0 + mlp * c1
/// (moe, mlp and out rows `ldo` floats apart).
void residualMix(const float *moe, const float *mlp, const float *coef, int64_t ldc, float *out,
                 int64_t ldo, int64_t T);

void combine(const float *slotOut, const float *slotWeight, int64_t T, int topK, int64_t D,
             float *out, int64_t ldo, bool accumulate);

} // namespace moert::cpu
