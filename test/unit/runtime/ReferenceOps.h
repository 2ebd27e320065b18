//===- ReferenceOps.h - Plain scalar reference of every plan op -*- C++ -*-===//
//
// The semantics of runtime/schema/plan.fbs written out for clarity, not
// speed: one loop nest per op, accumulations in double, no code shared with
// any backend (runtime/backends/*). BackendConformanceTest compares every
// backend's kernels against these. Matrices are row-major std::vector<float>
// with an explicit row stride (`ld`); weights are given as the float values
// the backend holds (already rounded to the weight's dtype).
//
//===----------------------------------------------------------------------===//
#pragma once

#include <cstdint>
#include <vector>

namespace moetest::ref {

using Vec = std::vector<float>;
using Ids = std::vector<int64_t>;

/// out[t, :D] = scale * W[ids[t], :D]   (W is [V, D]).
void embedding(const Ids &ids, const Vec &W, int64_t D, float scale, Vec &out, int64_t ldo);

/// io[t, :D] += W[pos[t], :D].
void positionEmbedding(const Ids &pos, const Vec &W, int64_t D, Vec &io, int64_t ldio);

/// Norm over `dim`-element groups of columns [colOffset, colOffset+cols) of
/// each of `rows` rows; columns outside the range of `out` are left alone.
/// w / b may be null (w = 1, b = 0); RMSNorm multiplies by weightOffset + w.
void norm(bool rms, const Vec &in, int64_t ldi, Vec &out, int64_t ldo, int64_t rows,
          int64_t colOffset, int64_t cols, int64_t dim, const Vec *w, const Vec *b, float eps,
          float weightOffset);

/// y[r, yCol : yCol+N] (+)= x[r, :K] W^T + bias for r < rows; W is [N, K] or
/// (transposed) [K, N].
void linear(const Vec &x, int64_t ldx, int64_t rows, const Vec &W, int64_t N, int64_t K,
            bool transposed, const Vec *bias, Vec &y, int64_t ldy, int64_t yCol,
            bool accumulate);

/// Rotary embedding in place of `heads` heads of headDim starting at column
/// colOffset; angle of pair i = pos * theta^(-2i/rotaryDim). NeoX pairs
/// (i, i + rotaryDim/2), Interleaved pairs (2i, 2i+1).
void rope(Vec &buf, int64_t ld, const Ids &pos, int64_t colOffset, int heads, int headDim,
          int rotaryDim, float theta, bool interleaved);

/// plan.fbs's ActKind order; SwigluOai only in experts() (its parameters).
enum class Act { Gelu, GeluTanh, Silu, Relu, Sigmoid, Identity, SwigluOai };
double activate(Act a, double x);
void activation(const Vec &in, int64_t ldi, Vec &out, int64_t ldo, int64_t rows, int64_t n,
                Act act, bool gated);

/// Causal attention of T queries at positions pos[t] over per-position keys
/// and values: k/v are [kvHeads][S][headDim] (S >= max pos + 1), already
/// holding every position (the cache prefix and the new tokens, rounded to
/// the cache dtype). q rows: qkv[t, qCol + h*headDim ..]. out[t, h*headDim..].
/// sinks (gpt-oss; [heads] or null): one more logit per head in the
/// softmax, with no value.
void attention(const Vec &qkv, int64_t ldqkv, int64_t qCol, const Ids &pos, const Vec &k,
               const Vec &v, int64_t S, int heads, int kvHeads, int headDim, float scale,
               int slidingWindow, Vec &out, int64_t ldo, const Vec *sinks = nullptr);

struct GateSpec {
  int numExperts = 0, topK = 0;
  bool sigmoid = false, softmaxBeforeTopk = true, normTopk = false;
  float capacityFactor = 0.0f;
  int minCapacity = 0;
  bool dropTokens = false;
  // DeepSeek-V3: numGroups groups of experts of which the topkGroups with
  // the highest sums of their two best choices stay eligible (scores +
  // selection bias rank; the others rank as 0), and the weights' scale.
  int numGroups = 1, topkGroups = 1;
  bool selectionBias = false; // gate() then takes the bias values
  float routedScalingFactor = 1.0f;
};
struct GateResult {
  std::vector<int32_t> slotExpert, expertOffsets, sortedSlots; // sortedSlots: admitted only
  Vec slotWeight;
};
GateResult gate(const Vec &logits, int64_t ld, int64_t T, const GateSpec &g,
                const Vec *selectionBias = nullptr);

struct Expert {
  int id = 0;
  const Vec *gate = nullptr, *up = nullptr, *down = nullptr; // [I, D], [I, D], [D, I]
  const Vec *upBias = nullptr, *downBias = nullptr, *gateBias = nullptr;
  int replica = 0, numReplicas = 1;
};
/// slotOut [T*topK, D]: for every admitted slot of a listed expert (this
/// copy's share of them), down(act(gate x) * up x); every other row 0.
/// SwigluOai (gpt-oss): g = min(gate x, L), u = clamp(up x, -L, L),
/// h = (u + 1) g sigmoid(alpha g) with L = swigluLimit.
void experts(const Vec &in, int64_t ldin, int64_t T, int topK, int64_t D, int64_t I, Act act,
             bool gated, const std::vector<Expert> &list, const GateResult &routing, Vec &slotOut,
             float swigluLimit = 0.0f, float swigluAlpha = 0.0f);

/// out[t, :D] (+)= sum_j slotWeight[t*topK+j] * slotOut[t*topK+j, :D] (j ascending).
void combine(const Vec &slotOut, const Vec &slotWeight, int64_t T, int topK, int64_t D, Vec &out,
             int64_t ldo, bool accumulate);

/// io[t, :n] *= sigmoid(g[t, 0]).
void sigmoidGate(const Vec &g, int64_t ldg, Vec &io, int64_t ldio, int64_t n, int64_t T);

/// c = softmax(coef[t, 0:2]); out[t, :D] = moe * c0 + mlp * c1.
void residualMix(const Vec &moe, const Vec &mlp, const Vec &coef, int64_t ldc, Vec &out,
                 int64_t D, int64_t T);

} // namespace moetest::ref
