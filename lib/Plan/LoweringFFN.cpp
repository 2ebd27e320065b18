//===- LoweringFFN.cpp - Dense FFN and the elementwise ops around it ------===//
//
// The feed-forward family of the plan lowering: moe.mlp as up to four steps
// through its scratch buffers, the residual add, and the elementwise ops of
// shared experts (Qwen2-MoE's sigmoid gate, DeepSpeed's residual mix).
//
//===----------------------------------------------------------------------===//

#include "Lowering.h"

using namespace mlir;
using namespace mlir::moe;
using namespace mlir::moe::plan;

LogicalResult Lowering::lowerMLP(MLPOp m) {
  FailureOr<Slice> in = sliceOf(m.getInput(), m),
                   out = sliceOf(m.getResult(), m);
  if (failed(in) || failed(out))
    return failure();
  bool gated = bool(m.getGate());
  auto scratch = storage.scratch.find(m);
  if (scratch == storage.scratch.end() ||
      scratch->second.size() != (gated ? 2u : 1u))
    return m.emitOpError("has no moe.scratch for its hidden activations: run "
                         "moe-plan-memory before lowering to a plan");
  // Gated: [gate | up] side by side in `hidden`, then act(gate) * up into
  // `act`; plain: the activation in place.
  int hidden = scratch->second.front(), act = scratch->second.back();
  int64_t inter = m.getIntermediateSize();
  bool transposed = m.getTransposed();
  std::string prefix = stepName("mlp");
  int x = in->buffer, y = out->buffer;
  // Tensor parallelism ("ffn"): member g computes I/T hidden units with its
  // parts of gate/up (rows) and down (columns); member 0 adds the down bias
  // and the group sums the partial outputs.
  int64_t T = tensorSliceOf(m) == "ffn" ? p.tensorParallel : 1;
  if (T > 1 && (out->col != 0 || out->width != p.buffers[y].rowElems))
    return m.emitOpError("is tensor-parallel but its output shares a buffer "
                         "(expected a buffer of its own to all-reduce)");
  auto part = [&](Value v, int64_t g) {
    int w = optWeightOf(v);
    return w < 0 || T == 1 ? w : p.weights[w].tpParts[size_t(g)];
  };
  int64_t n = inter / T;
  auto linear = [&](StringRef what, int src, int dst, Value w, Value b,
                    int64_t col, bool memberZeroBias = false) {
    std::vector<StepOp> members;
    for (int64_t g = 0; g < T; ++g) {
      int bias = memberZeroBias ? (g == 0 ? optWeightOf(b) : -1) : part(b, g);
      members.push_back(
          LinearStep{src, dst, part(w, g), bias, transposed, col});
    }
    addStep(m, prefix + what.str(), {src}, {dst}, members.front());
    if (T > 1)
      p.steps.back().perMember = std::move(members);
  };
  if (gated)
    linear(".gate_proj", x, hidden, m.getGate(), Value(), 0);
  linear(".up_proj", x, hidden, m.getUp(), m.getUpBias(), gated ? n : 0);
  addStep(m, prefix + ".act", {hidden}, {act},
          ActivationStep{hidden, act, m.getActivation(), gated, n});
  linear(".down_proj", act, y, m.getDown(), m.getDownBias(), 0,
         /*memberZeroBias=*/T > 1);
  if (T > 1)
    addTensorParallelAllReduce(m, y, prefix + ".down_proj");
  return success();
}

LogicalResult Lowering::lowerAdd(AddOp a) {
  int l = bufferOf(a.getLhs(), a), r = bufferOf(a.getRhs(), a),
      o = bufferOf(a.getResult(), a);
  if (l < 0 || r < 0 || o < 0)
    return failure();
  addStep(a, stepName("residual_add"), {l, r}, {o}, AddStep{l, r, o});
  return success();
}

LogicalResult Lowering::lowerSigmoidGate(SigmoidGateOp g) {
  int buf = bufferOf(g.getInput(), g), logit = bufferOf(g.getGateLogit(), g);
  if (buf < 0 || logit < 0)
    return failure();
  addStep(g, stepName("shared_expert.gate"), {buf, logit}, {buf},
          SigmoidGateStep{logit, buf});
  return success();
}

LogicalResult Lowering::lowerResidualMix(ResidualMixOp m) {
  int a = bufferOf(m.getMoe(), m), b = bufferOf(m.getMlp(), m),
      c = bufferOf(m.getCoefLogits(), m), o = bufferOf(m.getResult(), m);
  if (a < 0 || b < 0 || c < 0 || o < 0)
    return failure();
  addStep(m, stepName("residual_mix"), {a, b, c}, {o},
          ResidualMixStep{a, b, c, o});
  return success();
}
