// RUN: moe-opt %s -canonicalize -split-input-file -allow-unregistered-dialect | FileCheck %s

// A split into one piece is its input.
// CHECK-LABEL: func.func @split_one
// CHECK-SAME: (%[[X:.*]]: tensor<?x8xf32>)
// CHECK-NOT: moe.split
// CHECK: return %[[X]]
func.func @split_one(%x: tensor<?x8xf32>) -> tensor<?x8xf32> {
  %0 = moe.split %x : tensor<?x8xf32> -> tensor<?x8xf32>
  return %0 : tensor<?x8xf32>
}

// CHECK-LABEL: func.func @split_three
// CHECK: moe.split
func.func @split_three(%x: tensor<?x8xf32>) -> tensor<?x4xf32> {
  %a, %b, %c = moe.split %x : tensor<?x8xf32> -> tensor<?x4xf32>, tensor<?x2xf32>, tensor<?x2xf32>
  return %a : tensor<?x4xf32>
}

// -----

// Renormalizing twice is renormalizing once.
// CHECK-LABEL: func.func @renormalize_twice
// CHECK: %[[R:.*]] = moe.renormalize %{{.*}} : tensor<?x2xf32>
// CHECK-NOT: moe.renormalize
// CHECK: return %[[R]]
func.func @renormalize_twice(%w: tensor<?x2xf32>) -> tensor<?x2xf32> {
  %0 = moe.renormalize %w : tensor<?x2xf32>
  %1 = moe.renormalize %0 : tensor<?x2xf32>
  return %1 : tensor<?x2xf32>
}

// -----

// Exchanges within groups of one rank move nothing; others stay.
moe.model @m attributes {architecture = "test", vocab_size = 4, hidden_size = 2, num_layers = 1, max_position_embeddings = 8} {
  shard.grid @devices(shape = 1x4)
  moe.param @emb "emb" : tensor<4x2xf32> init normal std 0.02
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x4xf32> {
    %w = moe.weight @emb : tensor<4x2xf32>
    %x = moe.embedding %ids, %w : tensor<?xi32>, tensor<4x2xf32> -> tensor<?x2xf32>
    // CHECK: moe.layer 0 (%[[H:.*]] = %{{.*}})
    %y = moe.layer 0 (%h = %x) : tensor<?x2xf32> {
      %off = "test.offsets"() : () -> tensor<3xi32>
      // CHECK-NOT: axes [0] placement
      %a = moe.all_to_all dispatch %h, %off on @devices axes [0] placement <ranks = 4, experts = [0, 1]> : tensor<?x2xf32>, tensor<3xi32>
      %b = moe.all_to_all dispatch %a, %off on @devices axes [] placement <ranks = 4, experts = [0, 1]> : tensor<?x2xf32>, tensor<3xi32>
      // CHECK: %[[C:.*]] = moe.all_to_all dispatch %[[H]], %{{.*}} on @devices axes [0, 1]
      %c = moe.all_to_all dispatch %b, %off on @devices axes [0, 1] placement <ranks = 4, experts = [0, 1]> : tensor<?x2xf32>, tensor<3xi32>
      // CHECK: moe.yield %[[C]]
      moe.yield %c : tensor<?x2xf32>
    }
    %l = moe.lm_head %y, %w tied : tensor<?x2xf32>, tensor<4x2xf32> -> tensor<?x4xf32>
    moe.return %l : tensor<?x4xf32>
  }
}
