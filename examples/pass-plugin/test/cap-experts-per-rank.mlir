// RUN: moe-opt %s --load-pass-plugin=%plugin --pass-pipeline='builtin.module(moe.model(moe-cap-experts-per-rank))' | FileCheck %s
// RUN: not moe-opt %s --load-pass-plugin=%plugin --pass-pipeline='builtin.module(moe.model(moe-cap-experts-per-rank{max-experts=1}))' 2>&1 | FileCheck %s --check-prefix=TOO-SMALL

// Four experts, all on rank 0 of 2: with the default cap of 2 per rank,
// experts 0 and 1 move to rank 1, and the exchanges follow the experts.
// CHECK: moe.all_to_all dispatch {{.*}} placement <ranks = 2, experts = [1, 1, 0, 0]>
// CHECK: moe.experts {{.*}} placement <ranks = 2, experts = [1, 1, 0, 0]>
// CHECK: moe.all_to_all combine {{.*}} placement <ranks = 2, experts = [1, 1, 0, 0]>

// TOO-SMALL: error: moe-cap-experts-per-rank: 4 experts do not fit on 2 ranks with at most 1 each (expected max-experts >= 2)

moe.model @m attributes {architecture = "test", vocab_size = 16, hidden_size = 8, num_layers = 1, max_position_embeddings = 16} {
  shard.grid @devices(shape = 1x2)
  moe.param @wte "wte" : tensor<16x8xf32> init normal std 0.02
  moe.param @router "router" : tensor<4x8xf32> init normal std 0.02
  moe.param @u "u" : tensor<4x4x8xf32> init normal std 0.02
  moe.param @d "d" : tensor<4x8x4xf32> init normal std 0.02
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x16xf32> {
    %wte = moe.weight @wte : tensor<16x8xf32>
    %x = moe.embedding %ids, %wte : tensor<?xi32>, tensor<16x8xf32> -> tensor<?x8xf32>
    %l = moe.layer 0 (%h = %x) : tensor<?x8xf32> {
      %wr = moe.weight @router : tensor<4x8xf32>
      %logits = moe.router %h, %wr : tensor<?x8xf32>, tensor<4x8xf32> -> tensor<?x4xf32>
      %e, %w, %off, %slots = moe.gate %logits routing <top_k = 1> : tensor<?x4xf32> -> tensor<?x1xi32>, tensor<?x1xf32>, tensor<5xi32>, tensor<?xi32>
      %dsp = moe.dispatch %h, %slots top_k 1 : tensor<?x8xf32>, tensor<?xi32> -> tensor<?x8xf32>
      %in = moe.all_to_all dispatch %dsp, %off on @devices axes [0, 1] placement <ranks = 2, experts = [0, 0, 0, 0]> : tensor<?x8xf32>, tensor<5xi32>
      %u = moe.weight @u : tensor<4x4x8xf32>
      %dw = moe.weight @d : tensor<4x8x4xf32>
      %y = moe.experts %in, %off top_k 1 act gelu up %u : tensor<4x4x8xf32> down %dw : tensor<4x8x4xf32> placement <ranks = 2, experts = [0, 0, 0, 0]> : tensor<?x8xf32>, tensor<5xi32> -> tensor<?x8xf32>
      %out = moe.all_to_all combine %y, %off on @devices axes [0, 1] placement <ranks = 2, experts = [0, 0, 0, 0]> : tensor<?x8xf32>, tensor<5xi32>
      %c = moe.combine %out, %slots, %w : tensor<?x8xf32>, tensor<?xi32>, tensor<?x1xf32> -> tensor<?x8xf32>
      moe.yield %c : tensor<?x8xf32>
    }
    %lm = moe.lm_head %l, %wte tied : tensor<?x8xf32>, tensor<16x8xf32> -> tensor<?x16xf32>
    moe.return %lm : tensor<?x16xf32>
  }
}
