// RUN: moe-opt %S/Inputs/moe-layer.mlir --pass-pipeline='builtin.module(moe.model(moe-data-parallel{max-batch=4}))' | FileCheck %s
// RUN: sed -e 's/num_layers = 1,/num_layers = 1, moe.tensor_parallel = 2 : i64,/' %S/Inputs/moe-layer.mlir | moe-opt --pass-pipeline='builtin.module(moe.model(moe-data-parallel{max-batch=4}))' | FileCheck %s --check-prefix=TP2
// RUN: moe-opt %S/Inputs/moe-layer.mlir --pass-pipeline='builtin.module(moe.model(moe-data-parallel{max-batch=1}))' | FileCheck %s --check-prefix=NONE
// RUN: sed -e 's/num_layers = 1,/num_layers = 1, moe.tensor_parallel = 4 : i64,/' %S/Inputs/moe-layer.mlir | moe-opt --pass-pipeline='builtin.module(moe.model(moe-data-parallel{max-batch=4}))' | FileCheck %s --check-prefix=NONE
// RUN: sed -e 's/num_layers = 1,/num_layers = 1, moe.data_parallel = 0 : i64,/' %S/Inputs/moe-layer.mlir | not moe-opt 2>&1 | FileCheck %s --check-prefix=BAD

// Four ranks, batched: each rank is a data-parallel group of its own; with
// tensor-parallel groups of 2, two groups.
// CHECK: moe.model @m attributes {{{.*}}moe.data_parallel = 4 : i64
// TP2: moe.data_parallel = 2 : i64
// One sequence at a time, or one group: nothing to record.
// NONE-NOT: moe.data_parallel
// BAD: 'moe.data_parallel' {{.*}}must be a group count >= 1
