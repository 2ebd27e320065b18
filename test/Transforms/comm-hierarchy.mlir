// RUN: moe-opt %S/Inputs/moe-layer.mlir --pass-pipeline='builtin.module(moe.model(moe-expert-placement,moe-comm-hierarchy))' | FileCheck %s
// RUN: sed -e 's/shape = 2x2/shape = 1x4/' %S/Inputs/moe-layer.mlir | moe-opt --pass-pipeline='builtin.module(moe.model(moe-expert-placement,moe-comm-hierarchy))' | FileCheck %s --check-prefix=ONENODE
// RUN: sed -e 's/shape = 2x2/shape = 4x1/' %S/Inputs/moe-layer.mlir | moe-opt --pass-pipeline='builtin.module(moe.model(moe-expert-placement,moe-comm-hierarchy))' | FileCheck %s --check-prefix=ONEPERNODE

// On 2 nodes x 2 ranks each flat exchange becomes two stages: dispatch goes
// within the node (axis 1) first, then across nodes (axis 0); combine mirrors.
// CHECK: %[[D:.*]] = moe.dispatch
// CHECK-NEXT: %[[D1:.*]] = moe.all_to_all dispatch %[[D]], %{{.*}} on @devices axes [1]
// CHECK-NEXT: %[[D2:.*]] = moe.all_to_all dispatch %[[D1]], %{{.*}} on @devices axes [0]
// CHECK: %[[Y:.*]] = moe.experts %[[D2]]
// CHECK-NEXT: %[[C1:.*]] = moe.all_to_all combine %[[Y]], %{{.*}} on @devices axes [0]
// CHECK-NEXT: %[[C2:.*]] = moe.all_to_all combine %[[C1]], %{{.*}} on @devices axes [1]
// CHECK-NEXT: moe.combine %[[C2]]
// CHECK-NOT: axes [0, 1]

// One node, or one rank per node: nothing to split.
// ONENODE-COUNT-2: axes [0, 1]
// ONENODE-NOT: axes [1]
// ONEPERNODE-COUNT-2: axes [0, 1]
// ONEPERNODE-NOT: axes [0]
