//===- LoweringMisc.cpp - Embeddings, LM head, weight streaming -----------===//
//
// The ends of the graph (token and position embeddings, the LM head) and the
// Prefetch/Evict steps that moe-layer-streaming's decisions become.
//
//===----------------------------------------------------------------------===//

#include "Lowering.h"

using namespace mlir;
using namespace mlir::moe;
using namespace mlir::moe::plan;

LogicalResult Lowering::lowerEmbedding(EmbeddingOp e) {
  FailureOr<Slice> out = sliceOf(e.getResult(), e);
  if (failed(out))
    return failure();
  int w = weightOf(e.getTable());
  EmbeddingStep whole{w, out->buffer, e.getScale().convertToFloat()};
  addStep(e, "embedding", {}, {out->buffer}, whole);
  if (tensorSliceOf(e) != "vocab")
    return success();
  // Vocabulary-parallel: member g looks up the ids in its rows of the table
  // (zeros for the others); the group's all-reduce sums the rows.
  if (out->col != 0 || out->width != p.buffers[out->buffer].rowElems)
    return e.emitOpError("is vocabulary-parallel but its output shares a "
                         "buffer (expected a buffer of its own to "
                         "all-reduce)");
  std::vector<StepOp> members;
  for (int64_t g = 0; g < p.tensorParallel; ++g) {
    EmbeddingStep step = whole;
    step.weight = p.weights[size_t(w)].tpParts[size_t(g)];
    step.vocabOffset = p.weights[size_t(step.weight)].partOffset;
    members.push_back(step);
  }
  p.steps.back().op = members.front();
  p.steps.back().perMember = std::move(members);
  addTensorParallelAllReduce(e, out->buffer, "embedding");
  return success();
}

LogicalResult Lowering::lowerPositionEmbedding(PositionEmbeddingOp pe) {
  int buf = bufferOf(pe.getInput(), pe);
  if (buf < 0)
    return failure();
  addStep(pe, "position_embedding", {buf}, {buf},
          PositionEmbeddingStep{weightOf(pe.getTable()), buf});
  return success();
}

LogicalResult Lowering::lowerLMHead(LMHeadOp h) {
  int in = bufferOf(h.getInput(), h), out = bufferOf(h.getResult(), h);
  if (in < 0 || out < 0)
    return failure();
  int w = weightOf(h.getWeight()), b = optWeightOf(h.getBias());
  addStep(h, "lm_head", {in}, {out}, LogitsStep{in, w, b, out});
  if (tensorSliceOf(h) != "vocab")
    return success();
  // Vocabulary-parallel: member g computes the logits of its rows of the
  // table; the runtime gathers the group's parts after the product.
  std::vector<StepOp> members;
  for (int64_t g = 0; g < p.tensorParallel; ++g) {
    LogitsStep step{in, p.weights[size_t(w)].tpParts[size_t(g)],
                    b < 0 ? -1 : p.weights[size_t(b)].tpParts[size_t(g)], out};
    step.vocabOffset = p.weights[size_t(step.weight)].partOffset;
    step.tensorParallel = int32_t(p.tensorParallel);
    members.push_back(step);
  }
  p.steps.back().op = members.front();
  p.steps.back().perMember = std::move(members);
  return success();
}

/// Turns moe-layer-streaming's `moe.prefetch_distance` on a layer into a
/// Prefetch of the layer's (non-expert) weights `distance` layers earlier and
/// an Evict after its last step, both on the weight stream.
void Lowering::addStreamingSteps() {
  struct Insert {
    size_t before; // step index to insert in front of
    bool prefetch;
    Step step;
  };
  std::vector<Insert> inserts;
  auto stepsOf = [&](int64_t layer) {
    size_t first = p.steps.size(), last = 0;
    for (auto [i, s] : llvm::enumerate(p.steps))
      if (s.layer == layer) {
        first = std::min(first, i);
        last = std::max(last, i);
      }
    return std::make_pair(first, last);
  };
  for (LayerOp layer : layerOps) {
    IntegerAttr distance = getMoEDialect(layer.getContext())
                               .getPrefetchDistanceAttrHelper()
                               .getAttr(layer);
    if (!distance)
      continue;
    // A sliced whole is held by no rank: its parts are prefetched and
    // evicted (each rank's list keeps those it holds).
    SmallVector<int32_t> weights = heldWeights(
        p.weights,
        layerDenseWeights(layer, [&](Value v) { return weightOf(v); }));
    if (weights.empty())
      continue;
    int64_t index = layer.getIndex();
    int64_t at = index - distance.getInt();
    size_t before = at < 0 ? 0 : stepsOf(at).first;
    size_t after = stepsOf(index).second + 1;
    std::string name = "layers." + std::to_string(index);
    std::vector<int32_t> list(weights.begin(), weights.end());
    auto make = [&](std::string stepName, StepOp op) {
      Step s;
      s.name = std::move(stepName);
      s.layer = int32_t(index);
      s.stream = Stream::Weights;
      s.origin = layer;
      s.op = std::move(op);
      return s;
    };
    inserts.push_back(
        {before, true, make(name + ".prefetch", PrefetchStep{list})});
    inserts.push_back({after, false, make(name + ".evict", EvictStep{list})});
  }
  // Insert back to front so earlier indices stay valid. At one index the
  // evicts must end up in front (memory is freed before it is refilled), so
  // they are inserted last.
  llvm::stable_sort(inserts, [](const Insert &a, const Insert &b) {
    if (a.before != b.before)
      return a.before > b.before;
    return a.prefetch && !b.prefetch;
  });
  for (Insert &ins : inserts)
    p.steps.insert(p.steps.begin() + ins.before, std::move(ins.step));
}
