// RUN: sed 's/shape = 2x2/shape = 512x256/' %S/Inputs/moe-layer.mlir | not moe-opt --pass-pipeline='builtin.module(moe.model(moe-expert-placement))' 2>&1 | FileCheck %s --check-prefix=HUGE
// RUN: sed 's/shape = 2x2/shape = 512x256/' %S/Inputs/moe-layer.mlir | not moe-opt --load-pass-plugin=%moe_lib/MoECapExperts.so --pass-pipeline='builtin.module(moe.model(moe-cap-experts-per-rank))' 2>&1 | FileCheck %s --check-prefix=PLUGIN
// The grid checks of passes that place experts (getPlacementRankCount in
// MoEOps.h), shared by moe-expert-placement and the example pass plugin.
// HUGE: error: moe-expert-placement: device grid of shape [512, 256] (expected static sizes, at most 65536 ranks)
// PLUGIN: error: moe-cap-experts-per-rank: device grid of shape [512, 256] (expected static sizes, at most 65536 ranks)
