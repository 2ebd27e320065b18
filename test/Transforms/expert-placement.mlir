// RUN: moe-opt %S/Inputs/moe-layer.mlir --pass-pipeline='builtin.module(moe.model(moe-expert-placement))' | FileCheck %s --check-prefix=BALANCED
// RUN: moe-opt %S/Inputs/moe-layer.mlir --pass-pipeline='builtin.module(moe.model(moe-expert-placement{strategy=round-robin}))' | FileCheck %s --check-prefix=RR
// RUN: moe-opt %S/Inputs/moe-layer.mlir --pass-pipeline='builtin.module(moe.model(moe-expert-placement{strategy=contiguous}))' | FileCheck %s --check-prefix=CONTIG
// RUN: moe-opt %S/Inputs/moe-layer.mlir --pass-pipeline='builtin.module(moe.model(moe-expert-placement{profile=%S/Inputs/profile.json}))' | FileCheck %s --check-prefix=PROFILE
// RUN: moe-opt %S/Inputs/moe-layer.mlir --pass-pipeline='builtin.module(moe.model(moe-expert-placement{profile=%S/Inputs/profile.json replicas=2}))' | FileCheck %s --check-prefix=REPLICAS
// A bad strategy is an option parsing error naming the choices, before the
// pass runs (the option is an enum, not a string the pass checks).
// RUN: not moe-opt %S/Inputs/moe-layer.mlir --pass-pipeline='builtin.module(moe.model(moe-expert-placement{strategy=random}))' 2>&1 | FileCheck %s --check-prefix=BADSTRATEGY
// RUN: not moe-opt %S/Inputs/moe-layer.mlir --moe-expert-placement='strategy=nonsense' 2>&1 | FileCheck %s --check-prefix=BADFLAG
// RUN: not moe-opt %S/Inputs/moe-layer.mlir --pass-pipeline='builtin.module(moe.model(moe-expert-placement{profile=%S/Inputs/missing.json}))' 2>&1 | FileCheck %s --check-prefix=NOPROFILE
// RUN: moe-opt %s --pass-pipeline='builtin.module(moe.model(moe-expert-placement))' | FileCheck %s --check-prefix=ONERANK
// Expert slicing: fewer experts (8) than ranks.
// RUN: sed 's/shape = 2x2/shape = 4x4/' %S/Inputs/moe-layer.mlir | moe-opt --pass-pipeline='builtin.module(moe.model(moe-expert-placement))' | FileCheck %s --check-prefix=SLICED
// RUN: sed 's/shape = 2x2/shape = 4x4/' %S/Inputs/moe-layer.mlir | moe-opt --pass-pipeline='builtin.module(moe.model(moe-expert-placement{slicing=false}))' | FileCheck %s --check-prefix=NOSLICING
// RUN: sed 's/shape = 2x2/shape = 3x4/' %S/Inputs/moe-layer.mlir | moe-opt --pass-pipeline='builtin.module(moe.model(moe-expert-placement))' | FileCheck %s --check-prefix=INDIVISIBLE
// RUN: sed 's/shape = 2x2/shape = 4x4/' %S/Inputs/moe-layer.mlir | moe-opt --pass-pipeline='builtin.module(moe.model(moe-expert-placement{replicas=1}))' | FileCheck %s --check-prefix=REPLICATED

// Uniform loads: every rank gets 2 of the 8 experts, and the exchanges wrap
// the experts over both grid axes.
// BALANCED: %[[D:.*]] = moe.dispatch
// BALANCED-NEXT: %[[X:.*]] = moe.all_to_all dispatch %[[D]], %{{.*}} on @devices axes [0, 1] placement <ranks = 4, experts = [0, 1, 2, 3, 0, 1, 2, 3]>
// BALANCED: %[[Y:.*]] = moe.experts %[[X]], {{.*}} placement <ranks = 4, experts = [0, 1, 2, 3, 0, 1, 2, 3]>
// BALANCED-NEXT: %[[C:.*]] = moe.all_to_all combine %[[Y]], %{{.*}} on @devices axes [0, 1]
// BALANCED-NEXT: moe.combine %[[C]]

// RR: moe.experts {{.*}} placement <ranks = 4, experts = [0, 1, 2, 3, 0, 1, 2, 3]>
// CONTIG: moe.experts {{.*}} placement <ranks = 4, experts = [0, 0, 1, 1, 2, 2, 3, 3]>

// Skewed loads (100, 90, 10, 10, 10, 10, 5, 5): the two hot experts get
// ranks of their own and the cold ones fill up the others; the busiest rank
// carries 105 tokens where contiguous placement would put 190 on rank 0.
// PROFILE: moe.experts {{.*}} placement <ranks = 4, experts = [0, 1, 2, 3, 2, 3, 1, 0]>

// Two replicas go to the experts with the most load per copy: expert 0
// (100 -> 2 x 50), then expert 1 (90 -> 2 x 45). The ten copies then balance
// exactly: every rank carries 60 tokens (r0: e0 + e4, r1: e0 + e5,
// r2: e1 + e2 + e6, r3: e1 + e3 + e7).
// REPLICAS: moe.experts {{.*}} placement <ranks = 4, experts = [0, 2, 2, 3, 0, 1, 2, 3], replicas = [0 : 1, 1 : 3]>

// BADSTRATEGY: moe-opt: for the --strategy option: 'random' is not supported (expected balanced, round-robin or contiguous)
// BADFLAG: moe-opt: for the --strategy option: 'nonsense' is not supported (expected balanced, round-robin or contiguous)
// NOPROFILE: missing.json: cannot read file: {{.*}} (expected the --expert-profile JSON of moe-run)

// Without a device grid there is one rank: nothing changes.
// ONERANK-NOT: placement
// ONERANK-NOT: all_to_all
moe.model @one attributes {architecture = "test", vocab_size = 16, hidden_size = 8, num_layers = 0, max_position_embeddings = 16} {
  moe.param @wte "wte" : tensor<16x8xf32> init normal std 0.02
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x16xf32> {
    %wte = moe.weight @wte : tensor<16x8xf32>
    %x = moe.embedding %ids, %wte : tensor<?xi32>, tensor<16x8xf32> -> tensor<?x8xf32>
    %lm = moe.lm_head %x, %wte tied : tensor<?x8xf32>, tensor<16x8xf32> -> tensor<?x16xf32>
    moe.return %lm : tensor<?x16xf32>
  }
}

// 8 experts on 16 ranks: S = 16 / gcd(8, 16) = 2 parts of the intermediate
// size 4, part q = 2e + s on rank q mod 16: one part per rank, the two parts
// of an expert on neighbouring ranks.
// SLICED: moe.experts {{.*}} placement <ranks = 16, experts = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15], slices = 2>
// SLICED: moe.all_to_all combine {{.*}} slices = 2>
// Without slicing, half the ranks hold no expert (as before expert slicing).
// NOSLICING: moe.experts {{.*}} placement <ranks = 16, experts = [0, 1, 2, 3, 4, 5, 6, 7]>
// 12 ranks would need S = 12 / gcd(8, 12) = 3 parts, which do not divide the
// intermediate size 4: the experts are placed whole.
// INDIVISIBLE: moe.experts {{.*}} placement <ranks = 12, experts = [0, 1, 2, 3, 4, 5, 6, 7]>
// Replicas are the user's choice over slicing.
// REPLICATED: moe.experts {{.*}} placement <ranks = 16, experts = [{{.*}}], replicas = [{{.*}}]>
