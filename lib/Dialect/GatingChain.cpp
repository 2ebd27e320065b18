//===- GatingChain.cpp - Matching the unfused gating chain ----------------===//

#include "moe/Dialect/GatingChain.h"

using namespace mlir;
using namespace mlir::moe;

/// True when every user of `v` is one of `allowed`.
static bool onlyUsedBy(Value v, ArrayRef<Operation *> allowed) {
  return llvm::all_of(v.getUsers(), [&](Operation *user) {
    return llvm::is_contained(allowed, user);
  });
}

FailureOr<GatingChain> mlir::moe::matchGatingChain(ExpertMapOp map,
                                                   std::string &why) {
  auto fail = [&](StringRef reason) {
    why = reason.str();
    return failure();
  };
  GatingChain c;
  c.map = map;
  // Walk up from the mapping table: expert ids come from top_k, either
  // directly or (with capacity) through the capacity op's admission mask.
  c.topK = map.getIndices().getDefiningOp<TopKOp>();
  if (!c.topK)
    return fail("expert ids not from moe.top_k");
  if (Value admitted = map.getAdmitted()) {
    c.capacity = admitted.getDefiningOp<CapacityOp>();
    if (!c.capacity || c.capacity.getIndices() != c.topK.getIndices())
      return fail("admission mask not from moe.capacity of the same ids");
  }

  c.selectionBias = c.topK.getSelectionBias();
  c.nGroup = c.topK.getNGroup().value_or(1);
  c.topkGroup = c.topK.getTopkGroup().value_or(c.nGroup);

  // Scores before or after the top-k.
  auto scores = c.topK.getInput().getDefiningOp<ScoresOp>();
  c.weights = c.topK.getValues();
  c.ops = {c.topK, map};
  if (scores) {
    c.logits = scores.getInput();
    c.score = scores.getFn();
    if (!onlyUsedBy(scores.getResult(), {c.topK}))
      return fail("scores used elsewhere");
    c.ops.push_back(scores);
  } else {
    // top_k on the raw logits, then scores over the k picked values.
    if (c.selectionBias || c.nGroup > 1)
      return fail("selection bias or groups on the logits (expected them on "
                  "the scores)");
    c.logits = c.topK.getInput();
    if (!c.weights.hasOneUse())
      return fail("top-k values used elsewhere");
    auto after = dyn_cast<ScoresOp>(*c.weights.getUsers().begin());
    if (!after)
      return fail("no score function");
    c.score = after.getFn();
    c.scoreBeforeTopk = false;
    c.weights = after.getResult();
    c.ops.push_back(after);
  }

  // Optional renormalization, then optional capacity, on the weights.
  if (c.weights.hasOneUse())
    if (auto renorm = dyn_cast<RenormalizeOp>(*c.weights.getUsers().begin())) {
      c.renormalize = true;
      c.weights = renorm.getResult();
      c.ops.push_back(renorm);
    }
  if (c.weights.hasOneUse())
    if (auto scale = dyn_cast<ScaleWeightsOp>(*c.weights.getUsers().begin())) {
      c.routedScalingFactor = scale.getFactor().convertToDouble();
      c.weights = scale.getResult();
      c.ops.push_back(scale);
    }
  if (c.capacity) {
    if (c.capacity.getWeights() != c.weights || !c.weights.hasOneUse())
      return fail("capacity does not take the final routing weights");
    c.ops.push_back(c.capacity);
    c.weights = c.capacity.getResult();
    if (!onlyUsedBy(c.capacity.getAdmitted(), {map}))
      return fail("admission mask used elsewhere");
  }
  // The expert ids may feed the capacity and the map only.
  if (!onlyUsedBy(c.topK.getIndices(), c.ops))
    return fail("expert ids used elsewhere");
  return c;
}
