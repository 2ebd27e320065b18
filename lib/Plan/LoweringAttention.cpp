//===- LoweringAttention.cpp - Norms, projections, RoPE, attention --------===//
//
// The attention family of the plan lowering. Where the storage analysis
// packed q/k/v into one buffer, each projection writes its columns of it
// (LinearStep::col) and RoPE and norms work on those columns in place.
//
//===----------------------------------------------------------------------===//

#include "Lowering.h"

using namespace mlir;
using namespace mlir::moe;
using namespace mlir::moe::plan;

LogicalResult Lowering::lowerNorm(Operation *op) {
  Value input = op->getOperand(0);
  FailureOr<Slice> in = sliceOf(input, op), out = sliceOf(op->getResult(0), op);
  if (failed(in) || failed(out))
    return failure();
  NormStep step;
  step.in = in->buffer;
  step.out = out->buffer;
  step.bias = -1;
  if (auto n = dyn_cast<LayerNormOp>(op)) {
    step.kind = NormKind::LayerNorm;
    step.weight = weightOf(n.getWeight());
    step.bias = optWeightOf(n.getBias());
    step.eps = n.getEps().convertToFloat();
    step.groupSize = n.getGroupSizeOrWidth();
    step.weightOffset = 0.0f;
  } else {
    auto r = cast<RMSNormOp>(op);
    step.kind = NormKind::RMSNorm;
    step.weight = weightOf(r.getWeight());
    step.eps = r.getEps().convertToFloat();
    step.groupSize = r.getGroupSizeOrWidth();
    step.weightOffset = r.getWeightOffset().convertToFloat();
  }
  // In place (its input dies here) it normalizes just its columns; a copy
  // reads and writes whole rows.
  bool inPlace = in->buffer == out->buffer;
  step.col = inPlace ? in->col : 0;
  step.cols = inPlace ? in->width : 0;
  std::string name = stepName(
      step.kind == NormKind::LayerNorm ? "layer_norm" : "rms_norm");
  if (tensorSliceOf(op) == "heads") {
    // A per-head q/k norm under tensor parallelism: its member's heads.
    if (!inPlace)
      return op->emitOpError("is sliced by heads but not normalized in place "
                             "(expected its input to end here)");
    std::vector<StepOp> members;
    for (int64_t g = 0; g < p.tensorParallel; ++g) {
      HeadPart h = headPart(in->width / step.groupSize, p.tensorParallel, g);
      NormStep member = step;
      member.col += h.first * step.groupSize;
      member.cols = h.count * step.groupSize;
      members.push_back(std::move(member));
    }
    addStep(op, name, {step.in}, {step.out}, members.front());
    p.steps.back().perMember = std::move(members);
    return success();
  }
  addStep(op, name, {step.in}, {step.out}, step);
  return success();
}

LogicalResult Lowering::lowerLinear(Operation *op, Value input, Value weight,
                                    Value bias, bool transposed) {
  FailureOr<Slice> in = sliceOf(input, op), out = sliceOf(op->getResult(0), op);
  if (failed(in) || failed(out))
    return failure();
  if (StringRef kind = tensorSliceOf(op); !kind.empty())
    return lowerSlicedLinear(cast<LinearOp>(op), *in, *out, kind);
  LinearStep step{in->buffer, out->buffer, weightOf(weight), optWeightOf(bias),
                  transposed, out->col};
  // Named after the weight ("layers.0.attn.q_proj"): what a trace shows.
  std::string name = p.weights[step.weight].name;
  if (StringRef(name).ends_with(".weight"))
    name.resize(name.size() - strlen(".weight"));
  addStep(op, name, {step.in}, {step.out}, step);
  return success();
}

LogicalResult Lowering::lowerRotary(RotaryOp r) {
  FailureOr<Slice> in = sliceOf(r.getInput(), r);
  if (failed(in))
    return failure();
  // An offset rope starts at the rotated dims of head 0; the heads keep their
  // stride (the Rope step touches only the rotated columns).
  RopeStep step{in->buffer,
                in->col + r.getOffset().value_or(0),
                int(r.getNumHeads()),
                int(r.getHeadDim()),
                int(r.getRotaryDim()),
                r.getTheta().convertToFloat(),
                r.getStyle(),
                {},
                1.0f};
  if (DenseElementsAttr f = r.getInvFreqAttr())
    for (float x : f.getValues<float>())
      step.invFreq.push_back(x);
  if (std::optional<APFloat> a = r.getAttentionFactor())
    step.attentionFactor = a->convertToFloat();
  if (tensorSliceOf(r) == "heads")
    return lowerSlicedRotary(r, step);
  addStep(r, stepName("rope"), {step.buf}, {step.buf}, step);
  return success();
}

LogicalResult Lowering::lowerAttention(AttentionOp a) {
  FailureOr<Slice> q = sliceOf(a.getQ(), a), k = sliceOf(a.getK(), a),
                   v = sliceOf(a.getV(), a), out = sliceOf(a.getResult(), a);
  if (failed(q) || failed(k) || failed(v) || failed(out))
    return failure();
  // One cache per attention, in program order (collectKVCaches).
  AttentionStep step{q->buffer,
                     q->col,
                     k->col,
                     v->col,
                     out->buffer,
                     nextCache++,
                     int(a.getNumHeads()),
                     int(a.getNumKvHeads()),
                     int(a.getHeadDim()),
                     a.getScale().convertToFloat(),
                     int(a.getSlidingWindow().value_or(0)),
                     optWeightOf(a.getSinks()),
                     a.getVHeadDim() ? int(*a.getVHeadDim()) : 0};
  if (tensorSliceOf(a) == "heads")
    return lowerSlicedAttention(a, step);
  addStep(a, stepName("attention"), {step.qkv}, {step.out}, step);
  return success();
}

LogicalResult Lowering::lowerMLAAttention(MLAAttentionOp a) {
  FailureOr<Slice> q = sliceOf(a.getQ(), a), c = sliceOf(a.getCKv(), a),
                   kpe = sliceOf(a.getKPe(), a), out = sliceOf(a.getResult(), a);
  if (failed(q) || failed(c) || failed(kpe) || failed(out))
    return failure();
  // One cache per attention, in program order (collectKVCaches).
  MLAAttentionStep step{q->buffer,
                        q->col,
                        c->buffer,
                        c->col,
                        kpe->buffer,
                        kpe->col,
                        weightOf(a.getKvB()),
                        out->buffer,
                        nextCache++,
                        int(a.getNumHeads()),
                        int(a.getNopeDim()),
                        int(a.getRopeDim()),
                        int(a.getVHeadDim()),
                        int(a.getKvLoraRank()),
                        a.getScale().convertToFloat()};
  SmallVector<int> reads{step.q};
  for (int b : {step.latent, step.kPe})
    if (!llvm::is_contained(reads, b))
      reads.push_back(b);
  if (tensorSliceOf(a) == "heads")
    return lowerSlicedMLAAttention(a, step, reads);
  addStep(a, stepName("attention"), reads, {step.out}, step);
  return success();
}

LogicalResult Lowering::lowerGatherColumns(GatherColumnsOp g) {
  FailureOr<Slice> out = sliceOf(g.getResult(), g);
  if (failed(out))
    return failure();
  GatherColumnsStep step;
  step.out = out->buffer;
  SmallVector<int> reads;
  for (Value in : g.getInputs()) {
    FailureOr<Slice> slice = sliceOf(in, g);
    if (failed(slice))
      return failure();
    step.inputs.push_back(slice->buffer);
    step.inputCols.push_back(slice->col);
    step.inputWidths.push_back(slice->width);
    if (!llvm::is_contained(reads, slice->buffer))
      reads.push_back(slice->buffer);
  }
  step.indices.assign(g.getIndices().begin(), g.getIndices().end());
  addStep(g, stepName("gather_columns"), reads, {step.out}, step);
  return success();
}
