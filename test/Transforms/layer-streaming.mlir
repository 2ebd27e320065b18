// moe-layer-streaming on the tiny GPT-MoE (4 layers, MoE in layers 1 and 3,
// 3.60 MiB per rank unconstrained): the smaller the budget, the more is
// streamed, in the pass's order: experts on demand first (one MoE layer, then
// both), then dense layers prefetched a layer ahead, then an error.
// RUN: not moe-opt %s --split-input-file --pass-pipeline='builtin.module(moe.model(moe-layer-streaming{dtype=f64}))' 2>&1 | FileCheck %s --check-prefix=BADDTYPE
// BADDTYPE: for the --dtype option: 'f64' is not supported (expected f32, bf16 or f16)
// RUN: moe-compile %examples/tiny/gpt-moe-tiny.json --emit=mlir --pipeline=none -o %t.mlir
// RUN: moe-opt %t.mlir --pass-pipeline='builtin.module(moe.model(moe-fuse-gating,moe-plan-memory,moe-layer-streaming{memory-budget=4000000}))' | FileCheck %s --check-prefix=FITS
// RUN: moe-opt %t.mlir --pass-pipeline='builtin.module(moe.model(moe-fuse-gating,moe-plan-memory,moe-layer-streaming))' | FileCheck %s --check-prefix=FITS
// RUN: moe-opt %t.mlir --pass-pipeline='builtin.module(moe.model(moe-fuse-gating,moe-plan-memory,moe-layer-streaming{memory-budget=3000000}))' | FileCheck %s --check-prefix=ONE
// RUN: moe-opt %t.mlir --pass-pipeline='builtin.module(moe.model(moe-fuse-gating,moe-plan-memory,moe-layer-streaming{memory-budget=2000000}))' | FileCheck %s --check-prefix=BOTH
// RUN: moe-opt %t.mlir --pass-pipeline='builtin.module(moe.model(moe-fuse-gating,moe-plan-memory,moe-layer-streaming{memory-budget=1900000}))' | FileCheck %s --check-prefix=LAYERS
// RUN: moe-opt %t.mlir --pass-pipeline='builtin.module(moe.model(moe-fuse-gating,moe-plan-memory,moe-layer-streaming{memory-budget=1800000}))' | FileCheck %s --check-prefix=ALL
// RUN: not moe-opt %t.mlir --pass-pipeline='builtin.module(moe.model(moe-fuse-gating,moe-plan-memory,moe-layer-streaming{memory-budget=1800000 lookahead=2}))' 2>&1 | FileCheck %s --check-prefix=SMALL
// RUN: not moe-opt %t.mlir --pass-pipeline='builtin.module(moe.model(moe-fuse-gating,moe-plan-memory,moe-layer-streaming{memory-budget=1000000}))' 2>&1 | FileCheck %s --check-prefix=SMALL

// Unlimited or large enough: nothing is streamed or annotated.
// FITS-NOT: moe.streaming
// FITS-NOT: moe.on_demand
// FITS-NOT: moe.prefetch_distance

// ONE: moe.streaming = {budget_bytes = 3000000 : i64, peak_bytes = 2977280 : i64, streamed_weight_bytes = 1058816 : i64, unstreamed_bytes = 3771392 : i64}
// ONE-NOT: moe.prefetch_distance
// ONE: moe.layer 1
// ONE: moe.experts {{.*}} {moe.on_demand, moe.slices
// ONE: moe.layer 3
// ONE-NOT: moe.on_demand
// ONE: moe.lm_head

// BOTH: moe.streaming = {budget_bytes = 2000000 : i64, peak_bytes = 1918464 : i64, streamed_weight_bytes = 2117632 : i64, unstreamed_bytes = 3771392 : i64}
// BOTH-NOT: moe.prefetch_distance
// BOTH: moe.layer 1
// BOTH: moe.experts {{.*}} {moe.on_demand, moe.slices
// BOTH: moe.layer 3
// BOTH: moe.experts {{.*}} {moe.on_demand, moe.slices

// The dense weights of layers 0-2 are fetched one layer ahead; layer 3 fits.
// LAYERS: moe.streaming = {budget_bytes = 1900000 : i64, peak_bytes = 1848832 : i64, streamed_weight_bytes = 2587136 : i64, unstreamed_bytes = 3771392 : i64}
// LAYERS: moe.layer 0 ({{.*}}) : tensor<?x64xf32> attributes {moe.prefetch_distance = 1 : i64}
// LAYERS: moe.layer 1 ({{.*}}) : tensor<?x64xf32> attributes {moe.prefetch_distance = 1 : i64}
// LAYERS: moe.experts {{.*}} {moe.on_demand, moe.slices
// LAYERS: moe.layer 2 ({{.*}}) : tensor<?x64xf32> attributes {moe.prefetch_distance = 1 : i64}
// LAYERS: moe.layer 3 ({{.*}}) : tensor<?x64xf32> {
// LAYERS: moe.experts {{.*}} {moe.on_demand, moe.slices

// ALL: moe.streaming = {budget_bytes = 1800000 : i64, peak_bytes = 1779200 : i64, streamed_weight_bytes = 2656768 : i64, unstreamed_bytes = 3771392 : i64}
// ALL: moe.layer 3 ({{.*}}) : tensor<?x64xf32> attributes {moe.prefetch_distance = 1 : i64}

// Too small even with everything streamed (fetching two layers ahead needs
// more buffers than one):
// SMALL: error: memory budget of {{.*}} per rank is too small: with every layer streamed a rank still needs {{.*}} (resident weights, activations and KV cache, streaming buffers)
