//===- AttentionFeed.h - The attention a projection feeds -------*- C++ -*-===//
//
// A q, k or v projection reaches its attention directly or through per-head
// work: moe.rotary, moe.rms_norm (a per-head q/k norm) and moe.split (a
// fused q/k/v projection). The cost model (a tensor-parallel rank's share
// of the projection) and the plan's weight slicing (whole heads per rank)
// both follow that path forward from the projection's result.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_DIALECT_ATTENTIONFEED_H
#define MOE_DIALECT_ATTENTIONFEED_H

#include "moe/Dialect/MoEOps.h"

#include <cstdint>

namespace mlir::moe {

/// The moe.attention that `v` (a projection's or a rotary's result) feeds,
/// through moe.rotary, moe.rms_norm and moe.split, or null.
AttentionOp attentionFed(Value v);
/// The width of one head's columns of the attention `v` feeds as q, k or v
/// (through moe.rotary, moe.rms_norm and moe.split): moe.attention's
/// head_dim, or moe.mla_attention's nope + rope dims for its q; 0 when none.
int64_t headWidthFed(Value v);

} // namespace mlir::moe

#endif // MOE_DIALECT_ATTENTIONFEED_H
