//===- AttentionFeed.cpp - The attention a projection feeds ---------------===//

#include "moe/Dialect/AttentionFeed.h"

using namespace mlir;
using namespace mlir::moe;

/// The first use, depth first in the order of the uses, that `accept`
/// takes among v's uses and, through moe.rotary, moe.rms_norm and
/// moe.split, their results' uses; null when none.
static OpOperand *findUse(Value v, function_ref<bool(OpOperand &)> accept) {
  for (OpOperand &use : v.getUses()) {
    if (accept(use))
      return &use;
    Operation *user = use.getOwner();
    if (isa<RotaryOp, RMSNormOp, SplitOp>(user))
      for (Value r : user->getResults())
        if (OpOperand *found = findUse(r, accept))
          return found;
  }
  return nullptr;
}

AttentionOp mlir::moe::attentionFed(Value v) {
  OpOperand *use =
      findUse(v, [](OpOperand &u) { return isa<AttentionOp>(u.getOwner()); });
  return use ? cast<AttentionOp>(use->getOwner()) : nullptr;
}

/// The head width of the attention operand `use` is, 0 when none.
static int64_t headWidthOf(OpOperand &use) {
  Operation *user = use.getOwner();
  if (auto a = dyn_cast<AttentionOp>(user))
    return a.getHeadDim();
  if (auto m = dyn_cast<MLAAttentionOp>(user); m && use.get() == m.getQ())
    return m.getNopeDim() + m.getRopeDim();
  return 0;
}

int64_t mlir::moe::headWidthFed(Value v) {
  OpOperand *use =
      findUse(v, [](OpOperand &u) { return headWidthOf(u) != 0; });
  return use ? headWidthOf(*use) : 0;
}
