// RUN: moe-opt %s -split-input-file -verify-diagnostics -allow-unregistered-dialect --pass-pipeline='builtin.module(moe.model(moe-verify-input-legality))'
// The input contract of the pipeline (moe-verify-input-legality runs first
// in the default pipeline): a diagnostic at the op for what later passes or
// the runtime cannot take.
// The importers' chain (scores, top_k, renormalize, expert_map) is legal
// pipeline input.
moe.model @legal attributes {architecture = "test", vocab_size = 16, hidden_size = 8, num_layers = 1, max_position_embeddings = 16} {
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
      %p = moe.scores softmax %logits : tensor<?x4xf32>
      %w, %e = moe.top_k %p k 2 : tensor<?x4xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
      %wn = moe.renormalize %w : tensor<?x2xf32>
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

// -----

// Scores that feed more than the top-k: moe-fuse-gating would skip the chain.
moe.model @shared_scores attributes {architecture = "test", vocab_size = 16, hidden_size = 8, num_layers = 1, max_position_embeddings = 16} {
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
      %p = moe.scores softmax %logits : tensor<?x4xf32>
      %w, %e = moe.top_k %p k 2 : tensor<?x4xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
      %wn = moe.renormalize %w : tensor<?x2xf32>
      // expected-error@+1 {{'moe.expert_map' op ends a gating chain moe-fuse-gating cannot fuse: scores used elsewhere (expected scores -> top_k -> [renormalize] -> [capacity] -> expert_map, each result used only by the next)}}
      %off, %slots = moe.expert_map %e : tensor<?x2xi32> -> tensor<5xi32>, tensor<?xi32>
      %dsp = moe.dispatch %h, %slots top_k 2 : tensor<?x8xf32>, tensor<?xi32> -> tensor<?x8xf32>
      %u = moe.weight @u : tensor<4x4x8xf32>
      %dw = moe.weight @d : tensor<4x8x4xf32>
      %y = moe.experts %dsp, %off top_k 2 act gelu up %u : tensor<4x4x8xf32> down %dw : tensor<4x8x4xf32> : tensor<?x8xf32>, tensor<5xi32> -> tensor<?x8xf32>
      %c = moe.combine %y, %slots, %wn : tensor<?x8xf32>, tensor<?xi32>, tensor<?x2xf32> -> tensor<?x8xf32>
      %twice = moe.add %p, %p : tensor<?x4xf32>
      %o = moe.add %h, %c : tensor<?x8xf32>
      moe.yield %o : tensor<?x8xf32>
    }
    %lm = moe.lm_head %l, %wte tied : tensor<?x8xf32>, tensor<16x8xf32> -> tensor<?x16xf32>
    moe.return %lm : tensor<?x16xf32>
  }
}

// -----

// A gating piece outside any chain.
moe.model @stray attributes {architecture = "test", vocab_size = 16, hidden_size = 8, num_layers = 1, max_position_embeddings = 16} {
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
      %p = moe.scores softmax %logits : tensor<?x4xf32>
      %w, %e = moe.top_k %p k 2 : tensor<?x4xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
      %wn = moe.renormalize %w : tensor<?x2xf32>
      %off, %slots = moe.expert_map %e : tensor<?x2xi32> -> tensor<5xi32>, tensor<?xi32>
      %dsp = moe.dispatch %h, %slots top_k 2 : tensor<?x8xf32>, tensor<?xi32> -> tensor<?x8xf32>
      %u = moe.weight @u : tensor<4x4x8xf32>
      %dw = moe.weight @d : tensor<4x8x4xf32>
      %y = moe.experts %dsp, %off top_k 2 act gelu up %u : tensor<4x4x8xf32> down %dw : tensor<4x8x4xf32> : tensor<?x8xf32>, tensor<5xi32> -> tensor<?x8xf32>
      %c = moe.combine %y, %slots, %wn : tensor<?x8xf32>, tensor<?xi32>, tensor<?x2xf32> -> tensor<?x8xf32>
      // expected-error@+1 {{'moe.scores' op is not part of a gating chain ending in moe.expert_map (moe-fuse-gating would leave it unfused, and the runtime cannot run it alone)}}
      %q = moe.scores sigmoid %logits : tensor<?x4xf32>
      %o = moe.add %h, %c : tensor<?x8xf32>
      moe.yield %o : tensor<?x8xf32>
    }
    %lm = moe.lm_head %l, %wte tied : tensor<?x8xf32>, tensor<16x8xf32> -> tensor<?x16xf32>
    moe.return %lm : tensor<?x16xf32>
  }
}

// -----

// An op of another dialect: no plan step lowers it.
moe.model @foreign attributes {architecture = "test", vocab_size = 16, hidden_size = 8, num_layers = 1, max_position_embeddings = 16} {
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
      %p = moe.scores softmax %logits : tensor<?x4xf32>
      %w, %e = moe.top_k %p k 2 : tensor<?x4xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
      %wn = moe.renormalize %w : tensor<?x2xf32>
      %off, %slots = moe.expert_map %e : tensor<?x2xi32> -> tensor<5xi32>, tensor<?xi32>
      %dsp = moe.dispatch %h, %slots top_k 2 : tensor<?x8xf32>, tensor<?xi32> -> tensor<?x8xf32>
      %u = moe.weight @u : tensor<4x4x8xf32>
      %dw = moe.weight @d : tensor<4x8x4xf32>
      %y = moe.experts %dsp, %off top_k 2 act gelu up %u : tensor<4x4x8xf32> down %dw : tensor<4x8x4xf32> : tensor<?x8xf32>, tensor<5xi32> -> tensor<?x8xf32>
      %c = moe.combine %y, %slots, %wn : tensor<?x8xf32>, tensor<?xi32>, tensor<?x2xf32> -> tensor<?x8xf32>
      // expected-error@+1 {{'test.op' op cannot be executed by the runtime (no plan step lowers it)}}
      %t = "test.op"(%h) : (tensor<?x8xf32>) -> tensor<?x8xf32>
      %o = moe.add %h, %c : tensor<?x8xf32>
      moe.yield %o : tensor<?x8xf32>
    }
    %lm = moe.lm_head %l, %wte tied : tensor<?x8xf32>, tensor<16x8xf32> -> tensor<?x16xf32>
    moe.return %lm : tensor<?x16xf32>
  }
}
