//===- LoweringTensorParallel.cpp - Megatron-sliced steps -----------------===//
//
// The ops moe-tensor-parallel marked, as steps that differ per member of a
// tensor-parallel group (Step::perMember, rank r runs member r % T). Buffers
// keep the whole model's layout: a member writes its heads' columns of q/k/v
// where the whole projection would, rotates and attends over its heads, and
// writes its heads' attention output at column 0, where the row-parallel
// o_proj (its input-feature part) reads it. The partial products of o_proj
// and of the FFN's down projection are summed over the group by an
// AllReduceSum (member 0 adds the bias), which leaves every member with the
// whole activation again.
//
//===----------------------------------------------------------------------===//

#include "Lowering.h"

using namespace mlir;
using namespace mlir::moe;
using namespace mlir::moe::plan;

void Lowering::addTensorParallelAllReduce(Operation *op, int buf,
                                          StringRef what) {
  CollectiveStep step;
  step.buf = buf;
  step.tensorParallel = int32_t(p.tensorParallel);
  step.level = "tensor-parallel";
  addStep(op, what.str() + ".all_reduce", {buf}, {buf}, std::move(step),
          Stream::Comm);
}

LogicalResult Lowering::lowerSlicedLinear(LinearOp l, Slice in, Slice out,
                                          StringRef kind) {
  int64_t T = p.tensorParallel;
  int w = weightOf(l.getWeight()), b = optWeightOf(l.getBias());
  bool tr = l.getTransposed();
  std::string name = p.weights[w].name;
  if (StringRef(name).ends_with(".weight"))
    name.resize(name.size() - strlen(".weight"));
  if (kind == "row") {
    if (out.col != 0 || out.width != p.buffers[out.buffer].rowElems)
      return l.emitOpError("is row-parallel but its output shares a buffer "
                           "(expected a buffer of its own to all-reduce)");
    std::vector<StepOp> members;
    for (int64_t g = 0; g < T; ++g)
      members.push_back(LinearStep{in.buffer, out.buffer,
                                   p.weights[w].tpParts[size_t(g)],
                                   g == 0 ? b : -1, tr, out.col});
    addStep(l, name, {in.buffer}, {out.buffer}, members.front());
    p.steps.back().perMember = std::move(members);
    addTensorParallelAllReduce(l, out.buffer, name);
    return success();
  }
  // Column-parallel: q, k or v, or all three side by side (fused).
  AttentionOp a = attentionFed(l.getResult());
  if (!a)
    return l.emitOpError("is column-parallel but feeds no moe.attention");
  int64_t hd = a.getHeadDim();
  int64_t thirds = kind == "column_qkv" ? 3 : 1;
  int64_t width = out.width / thirds;
  for (int64_t t = 0; t < thirds; ++t) {
    std::vector<StepOp> members;
    for (int64_t g = 0; g < T; ++g) {
      HeadPart h = headPart(width / hd, T, g);
      size_t at = size_t(t * T + g);
      members.push_back(LinearStep{
          in.buffer, out.buffer, p.weights[w].tpParts[at],
          b < 0 ? -1 : p.weights[b].tpParts[at], tr,
          out.col + t * width + h.first * hd});
    }
    std::string suffix = thirds == 1 ? "" : t == 0 ? ".q" : t == 1 ? ".k" : ".v";
    addStep(l, name + suffix, {in.buffer}, {out.buffer}, members.front());
    p.steps.back().perMember = std::move(members);
  }
  return success();
}

LogicalResult Lowering::lowerSlicedRotary(RotaryOp r, const RopeStep &whole) {
  std::vector<StepOp> members;
  for (int64_t g = 0; g < p.tensorParallel; ++g) {
    HeadPart h = headPart(whole.heads, p.tensorParallel, g);
    RopeStep step = whole;
    step.col += h.first * whole.headDim;
    step.heads = int(h.count);
    members.push_back(std::move(step));
  }
  addStep(r, stepName("rope"), {whole.buf}, {whole.buf}, members.front());
  p.steps.back().perMember = std::move(members);
  return success();
}

LogicalResult Lowering::lowerSlicedAttention(AttentionOp a,
                                             const AttentionStep &whole) {
  std::vector<StepOp> members;
  int64_t T = p.tensorParallel;
  for (int64_t g = 0; g < T; ++g) {
    HeadPart q = headPart(whole.heads, T, g), kv = headPart(whole.kvHeads, T, g);
    AttentionStep step = whole;
    step.qCol += q.first * whole.headDim;
    step.kCol += kv.first * whole.headDim;
    step.vCol += kv.first * whole.headDim;
    step.heads = int(q.count);
    step.kvHeads = int(kv.count);
    if (whole.sinks >= 0)
      step.sinks = p.weights[size_t(whole.sinks)].tpParts[size_t(g)];
    members.push_back(std::move(step));
  }
  addStep(a, stepName("attention"), {whole.qkv}, {whole.out}, members.front());
  p.steps.back().perMember = std::move(members);
  return success();
}
