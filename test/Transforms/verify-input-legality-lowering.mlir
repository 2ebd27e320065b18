// RUN: moe-opt %s -split-input-file -verify-diagnostics --pass-pipeline='builtin.module(moe.model(moe-verify-input-legality{before-lowering=true}))'
// The contract of the plan lowering (the default pipeline checks it again
// just before moe-plan-memory).
// Fused gating is what the plan lowering takes.
moe.model @fused attributes {architecture = "test", vocab_size = 16, hidden_size = 8, num_layers = 1, max_position_embeddings = 16} {
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
      %e, %wn, %off, %slots = moe.gate %logits routing <top_k = 2, norm_topk_prob = true> : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>, tensor<5xi32>, tensor<?xi32>
      %dsp = moe.dispatch %h, %slots top_k 2 : tensor<?x8xf32>, tensor<?xi32> -> tensor<?x8xf32>
      %u = moe.weight @u : tensor<4x4x8xf32>
      %dw = moe.weight @d : tensor<4x8x4xf32>
      %y = moe.experts %dsp, %off top_k 2 act gelu up %u : tensor<4x4x8xf32> down %dw : tensor<4x8x4xf32> : tensor<?x8xf32>, tensor<5xi32> -> tensor<?x8xf32>
      %c = moe.combine %y, %slots, %wn : tensor<?x8xf32>, tensor<?xi32>, tensor<?x2xf32> -> tensor<?x8xf32>

      %o = moe.add %h, %c : tensor<?x8xf32>
      moe.yield %o : tensor<?x8xf32>
    }
    %lm = moe.lm_head %l, %wte tied : tensor<?x8xf32>, tensor<16x8xf32> -> tensor<?x16xf32>
    moe.return %lm : tensor<?x16xf32>
  }
}

// -----

// Unfused gating reaching the lowering: every piece is reported.
moe.model @unfused attributes {architecture = "test", vocab_size = 16, hidden_size = 8, num_layers = 1, max_position_embeddings = 16} {
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
      // expected-error@+1 {{'moe.scores' op is an unfused gating piece: run moe-fuse-gating before lowering to a plan}}
      %p = moe.scores softmax %logits : tensor<?x4xf32>
      // expected-error@+1 {{'moe.top_k' op is an unfused gating piece: run moe-fuse-gating before lowering to a plan}}
      %w, %e = moe.top_k %p k 2 : tensor<?x4xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
      // expected-error@+1 {{'moe.renormalize' op is an unfused gating piece: run moe-fuse-gating before lowering to a plan}}
      %wn = moe.renormalize %w : tensor<?x2xf32>
      // expected-error@+1 {{'moe.expert_map' op is an unfused gating piece: run moe-fuse-gating before lowering to a plan}}
      %off, %slots = moe.expert_map %e : tensor<?x2xi32> -> tensor<5xi32>, tensor<?xi32>
      %dsp = moe.dispatch %h, %slots top_k 2 : tensor<?x8xf32>, tensor<?xi32> -> tensor<?x8xf32>
      %u = moe.weight @u : tensor<4x4x8xf32>
      %dw = moe.weight @d : tensor<4x8x4xf32>
      %y = moe.experts %dsp, %off top_k 2 act gelu up %u : tensor<4x4x8xf32> down %dw : tensor<4x8x4xf32> : tensor<?x8xf32>, tensor<5xi32> -> tensor<?x8xf32>
      %c = moe.combine %y, %slots, %wn : tensor<?x8xf32>, tensor<?xi32>, tensor<?x2xf32> -> tensor<?x8xf32>

      %o = moe.add %h, %c : tensor<?x8xf32>
      moe.yield %o : tensor<?x8xf32>
    }
    %lm = moe.lm_head %l, %wte tied : tensor<?x8xf32>, tensor<16x8xf32> -> tensor<?x16xf32>
    moe.return %lm : tensor<?x16xf32>
  }
}
