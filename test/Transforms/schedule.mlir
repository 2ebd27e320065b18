// RUN: moe-opt %S/Inputs/moe-layer.mlir --pass-pipeline='builtin.module(moe.model(moe-expert-placement,moe-schedule))' | FileCheck %s
// RUN: moe-opt %S/Inputs/moe-layer.mlir --pass-pipeline='builtin.module(moe.model(moe-expert-placement,moe-comm-hierarchy,moe-schedule))' | FileCheck %s --check-prefix=STAGED

// The shared-expert MLP does not depend on the combine exchange: it moves
// between the exchange and the combine, to run while the collective is in
// flight. The combine and everything reading it stay after.
// CHECK: moe.graph @forward{{.*}} attributes {moe.decode_graph}
// CHECK: %[[X:.*]] = moe.all_to_all combine
// CHECK: %[[S:.*]] = moe.mlp
// CHECK: %[[C:.*]] = moe.combine %[[X]]
// CHECK: moe.add %[[C]], %[[S]]

// With two stages the overlap starts after the last one.
// STAGED: moe.all_to_all combine {{.*}} axes [0]
// STAGED-NEXT: %[[X:.*]] = moe.all_to_all combine {{.*}} axes [1]
// STAGED: moe.mlp
// STAGED: moe.combine %[[X]]
