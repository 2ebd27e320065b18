// RUN: moe-opt %s --split-input-file --pass-pipeline='builtin.module(moe.model(moe-fuse-gating))' | FileCheck %s

// Mixtral-style: softmax, top-2, renormalize.
// CHECK-LABEL: moe.model @renorm
moe.model @renorm attributes {architecture = "test", vocab_size = 16, hidden_size = 8, num_layers = 1, max_position_embeddings = 16} {
  moe.param @wte "wte" : tensor<16x8xf32> init normal std 0.02
  moe.param @router "router" : tensor<4x8xf32> init normal std 0.02
  moe.param @u "u" : tensor<4x4x8xf32> init normal std 0.02
  moe.param @d "d" : tensor<4x8x4xf32> init normal std 0.02
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x16xf32> {
    %wte = moe.weight @wte : tensor<16x8xf32>
    %x = moe.embedding %ids, %wte : tensor<?xi32>, tensor<16x8xf32> -> tensor<?x8xf32>
    %l = moe.layer 0 (%h = %x) : tensor<?x8xf32> {
      %wr = moe.weight @router : tensor<4x8xf32>
      // CHECK: %[[LOGITS:.*]] = moe.router
      %logits = moe.router %h, %wr : tensor<?x8xf32>, tensor<4x8xf32> -> tensor<?x4xf32>
      // CHECK-NOT: moe.scores
      // CHECK-NOT: moe.top_k
      // CHECK-NOT: moe.renormalize
      // CHECK-NOT: moe.expert_map
      // CHECK: %{{.*}}, %[[W:.*]], %[[OFF:.*]], %[[SLOTS:.*]] = moe.gate %[[LOGITS]] routing <top_k = 2, norm_topk_prob = true> : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>, tensor<5xi32>, tensor<?xi32>
      %p = moe.scores softmax %logits : tensor<?x4xf32>
      %w, %e = moe.top_k %p k 2 : tensor<?x4xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
      %wn = moe.renormalize %w : tensor<?x2xf32>
      %off, %slots = moe.expert_map %e : tensor<?x2xi32> -> tensor<5xi32>, tensor<?xi32>
      // CHECK: moe.dispatch %{{.*}}, %[[SLOTS]] top_k 2
      %dsp = moe.dispatch %h, %slots top_k 2 : tensor<?x8xf32>, tensor<?xi32> -> tensor<?x8xf32>
      %u = moe.weight @u : tensor<4x4x8xf32>
      %dw = moe.weight @d : tensor<4x8x4xf32>
      // CHECK: moe.experts %{{.*}}, %[[OFF]]
      %y = moe.experts %dsp, %off top_k 2 act gelu up %u : tensor<4x4x8xf32> down %dw : tensor<4x8x4xf32> : tensor<?x8xf32>, tensor<5xi32> -> tensor<?x8xf32>
      // CHECK: moe.combine %{{.*}}, %[[SLOTS]], %[[W]]
      %c = moe.combine %y, %slots, %wn : tensor<?x8xf32>, tensor<?xi32>, tensor<?x2xf32> -> tensor<?x8xf32>
      %o = moe.add %h, %c : tensor<?x8xf32>
      moe.yield %o : tensor<?x8xf32>
    }
    %lm = moe.lm_head %l, %wte tied : tensor<?x8xf32>, tensor<16x8xf32> -> tensor<?x16xf32>
    moe.return %lm : tensor<?x16xf32>
  }
}

// -----

// Switch-style: top-1 with capacity and token dropping.
// CHECK-LABEL: moe.model @capacity
moe.model @capacity attributes {architecture = "test", vocab_size = 16, hidden_size = 8, num_layers = 1, max_position_embeddings = 16} {
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
      // CHECK: moe.gate %{{.*}} routing <top_k = 1, capacity_factor = 1.250000e+00, min_capacity = 4, drop_tokens = true>
      // CHECK-NOT: moe.capacity
      %p = moe.scores softmax %logits : tensor<?x4xf32>
      %w, %e = moe.top_k %p k 1 : tensor<?x4xf32> -> tensor<?x1xf32>, tensor<?x1xi32>
      %wc, %keep = moe.capacity %e, %w experts 4 factor 1.25 min 4 : tensor<?x1xi32>, tensor<?x1xf32> -> tensor<?x1xf32>, tensor<?x1xi1>
      %off, %slots = moe.expert_map %e admitted %keep : tensor<?x1xi32>, tensor<?x1xi1> -> tensor<5xi32>, tensor<?xi32>
      %dsp = moe.dispatch %h, %slots top_k 1 : tensor<?x8xf32>, tensor<?xi32> -> tensor<?x8xf32>
      %u = moe.weight @u : tensor<4x4x8xf32>
      %dw = moe.weight @d : tensor<4x8x4xf32>
      %y = moe.experts %dsp, %off top_k 1 act gelu up %u : tensor<4x4x8xf32> down %dw : tensor<4x8x4xf32> : tensor<?x8xf32>, tensor<5xi32> -> tensor<?x8xf32>
      %c = moe.combine %y, %slots, %wc : tensor<?x8xf32>, tensor<?xi32>, tensor<?x1xf32> -> tensor<?x8xf32>
      %o = moe.add %h, %c : tensor<?x8xf32>
      moe.yield %o : tensor<?x8xf32>
    }
    %lm = moe.lm_head %l, %wte tied : tensor<?x8xf32>, tensor<16x8xf32> -> tensor<?x16xf32>
    moe.return %lm : tensor<?x16xf32>
  }
}

// -----

// Top-k of the logits, then softmax over the picked ones (Mixtral's original
// code path): same routing, score_before_topk = false.
// CHECK-LABEL: moe.model @topk_first
moe.model @topk_first attributes {architecture = "test", vocab_size = 16, hidden_size = 8, num_layers = 1, max_position_embeddings = 16} {
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
      // CHECK: moe.gate %{{.*}} routing <top_k = 2, score_before_topk = false>
      %w, %e = moe.top_k %logits k 2 : tensor<?x4xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
      %p = moe.scores softmax %w : tensor<?x2xf32>
      %off, %slots = moe.expert_map %e : tensor<?x2xi32> -> tensor<5xi32>, tensor<?xi32>
      %dsp = moe.dispatch %h, %slots top_k 2 : tensor<?x8xf32>, tensor<?xi32> -> tensor<?x8xf32>
      %u = moe.weight @u : tensor<4x4x8xf32>
      %dw = moe.weight @d : tensor<4x8x4xf32>
      %y = moe.experts %dsp, %off top_k 2 act gelu up %u : tensor<4x4x8xf32> down %dw : tensor<4x8x4xf32> : tensor<?x8xf32>, tensor<5xi32> -> tensor<?x8xf32>
      %c = moe.combine %y, %slots, %p : tensor<?x8xf32>, tensor<?xi32>, tensor<?x2xf32> -> tensor<?x8xf32>
      %o = moe.add %h, %c : tensor<?x8xf32>
      moe.yield %o : tensor<?x8xf32>
    }
    %lm = moe.lm_head %l, %wte tied : tensor<?x8xf32>, tensor<16x8xf32> -> tensor<?x16xf32>
    moe.return %lm : tensor<?x16xf32>
  }
}

// -----

// DeepSeek-V3: sigmoid scores, top-k with a selection-only bias and groups,
// renormalization, then the routed scaling; one moe.gate with the bias as its
// operand and every parameter in the routing.
// CHECK-LABEL: moe.model @deepseek
moe.model @deepseek attributes {architecture = "test", vocab_size = 16, hidden_size = 8, num_layers = 1, max_position_embeddings = 16} {
  moe.param @wte "wte" : tensor<16x8xf32> init normal std 0.02
  moe.param @router "router" : tensor<4x8xf32> init normal std 0.02
  moe.param @bias "bias" : tensor<4xf32> init zeros
  moe.param @u "u" : tensor<4x4x8xf32> init normal std 0.02
  moe.param @d "d" : tensor<4x8x4xf32> init normal std 0.02
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x16xf32> {
    %wte = moe.weight @wte : tensor<16x8xf32>
    %x = moe.embedding %ids, %wte : tensor<?xi32>, tensor<16x8xf32> -> tensor<?x8xf32>
    %l = moe.layer 0 (%h = %x) : tensor<?x8xf32> {
      %wr = moe.weight @router : tensor<4x8xf32>
      %logits = moe.router %h, %wr : tensor<?x8xf32>, tensor<4x8xf32> -> tensor<?x4xf32>
      // CHECK: %[[B:.*]] = moe.weight @bias
      %b = moe.weight @bias : tensor<4xf32>
      // CHECK-NOT: moe.scores
      // CHECK-NOT: moe.top_k
      // CHECK: moe.gate %{{.*}} bias %[[B]] : tensor<4xf32> routing <top_k = 2, score = sigmoid, norm_topk_prob = true, n_group = 2, routed_scaling_factor = 2.500000e+00>
      // CHECK-NOT: moe.renormalize
      // CHECK-NOT: moe.scale_weights
      %p = moe.scores sigmoid %logits : tensor<?x4xf32>
      %w, %e = moe.top_k %p bias %b : tensor<4xf32> k 2 n_group 2 topk_group 1 : tensor<?x4xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
      %wn = moe.renormalize %w : tensor<?x2xf32>
      %ws = moe.scale_weights %wn factor 2.5 : tensor<?x2xf32>
      %off, %slots = moe.expert_map %e : tensor<?x2xi32> -> tensor<5xi32>, tensor<?xi32>
      %dsp = moe.dispatch %h, %slots top_k 2 : tensor<?x8xf32>, tensor<?xi32> -> tensor<?x8xf32>
      %u = moe.weight @u : tensor<4x4x8xf32>
      %dw = moe.weight @d : tensor<4x8x4xf32>
      %y = moe.experts %dsp, %off top_k 2 act gelu up %u : tensor<4x4x8xf32> down %dw : tensor<4x8x4xf32> : tensor<?x8xf32>, tensor<5xi32> -> tensor<?x8xf32>
      %c = moe.combine %y, %slots, %ws : tensor<?x8xf32>, tensor<?xi32>, tensor<?x2xf32> -> tensor<?x8xf32>
      %o = moe.add %h, %c : tensor<?x8xf32>
      moe.yield %o : tensor<?x8xf32>
    }
    %lm = moe.lm_head %l, %wte tied : tensor<?x8xf32>, tensor<16x8xf32> -> tensor<?x16xf32>
    moe.return %lm : tensor<?x16xf32>
  }
}

// -----

// The scores feed something else too: the chain stays as it is.
// CHECK-LABEL: moe.model @shared_scores
moe.model @shared_scores attributes {architecture = "test", vocab_size = 16, hidden_size = 8, num_layers = 1, max_position_embeddings = 16} {
  moe.param @wte "wte" : tensor<16x8xf32> init normal std 0.02
  moe.param @router "router" : tensor<4x8xf32> init normal std 0.02
  moe.param @u "u" : tensor<4x4x8xf32> init normal std 0.02
  moe.param @d "d" : tensor<4x8x4xf32> init normal std 0.02
  moe.param @pd "pd" : tensor<8x4xf32> init normal std 0.02
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x16xf32> {
    %wte = moe.weight @wte : tensor<16x8xf32>
    %x = moe.embedding %ids, %wte : tensor<?xi32>, tensor<16x8xf32> -> tensor<?x8xf32>
    %l = moe.layer 0 (%h = %x) : tensor<?x8xf32> {
      %wr = moe.weight @router : tensor<4x8xf32>
      %logits = moe.router %h, %wr : tensor<?x8xf32>, tensor<4x8xf32> -> tensor<?x4xf32>
      // CHECK-NOT: moe.gate
      // CHECK: moe.scores softmax
      // CHECK: moe.top_k
      // CHECK: moe.expert_map
      %p = moe.scores softmax %logits : tensor<?x4xf32>
      %w, %e = moe.top_k %p k 1 : tensor<?x4xf32> -> tensor<?x1xf32>, tensor<?x1xi32>
      %off, %slots = moe.expert_map %e : tensor<?x1xi32> -> tensor<5xi32>, tensor<?xi32>
      %dsp = moe.dispatch %h, %slots top_k 1 : tensor<?x8xf32>, tensor<?xi32> -> tensor<?x8xf32>
      %u = moe.weight @u : tensor<4x4x8xf32>
      %dw = moe.weight @d : tensor<4x8x4xf32>
      %y = moe.experts %dsp, %off top_k 1 act gelu up %u : tensor<4x4x8xf32> down %dw : tensor<4x8x4xf32> : tensor<?x8xf32>, tensor<5xi32> -> tensor<?x8xf32>
      %c = moe.combine %y, %slots, %w : tensor<?x8xf32>, tensor<?xi32>, tensor<?x1xf32> -> tensor<?x8xf32>
      %o = moe.add %h, %c : tensor<?x8xf32>
      %pw = moe.weight @pd : tensor<8x4xf32>
      %pp = moe.linear %p, %pw : tensor<?x4xf32>, tensor<8x4xf32> -> tensor<?x8xf32>
      %o2 = moe.add %o, %pp : tensor<?x8xf32>
      moe.yield %o2 : tensor<?x8xf32>
    }
    %lm = moe.lm_head %l, %wte tied : tensor<?x8xf32>, tensor<16x8xf32> -> tensor<?x16xf32>
    moe.return %lm : tensor<?x16xf32>
  }
}
