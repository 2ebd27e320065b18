// RUN: moe-opt %s --moe-default-pipeline | FileCheck %s
// The default pipeline (canonicalize, cse) merges repeated uses of a weight
// and folds trivial ops.

// CHECK-LABEL: moe.graph @forward
// CHECK: %[[W:.*]] = moe.weight @emb
// CHECK-NOT: moe.weight @emb
// CHECK-NOT: moe.split
// CHECK: moe.lm_head %{{.*}}, %[[W]] tied
moe.model @m attributes {architecture = "test", vocab_size = 4, hidden_size = 2, num_layers = 0, max_position_embeddings = 8} {
  moe.param @emb "emb" : tensor<4x2xf32> init normal std 0.02
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x4xf32> {
    %w = moe.weight @emb : tensor<4x2xf32>
    %x = moe.embedding %ids, %w : tensor<?xi32>, tensor<4x2xf32> -> tensor<?x2xf32>
    %s = moe.split %x : tensor<?x2xf32> -> tensor<?x2xf32>
    %w2 = moe.weight @emb : tensor<4x2xf32>
    %l = moe.lm_head %s, %w2 tied : tensor<?x2xf32>, tensor<4x2xf32> -> tensor<?x4xf32>
    moe.return %l : tensor<?x4xf32>
  }
}
