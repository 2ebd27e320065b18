// RUN: moe-opt %s -split-input-file -verify-diagnostics -allow-unregistered-dialect
// One case per verifier message of the moe dialect (attributes, ops, symbol
// uses), plus the parser errors of the custom syntax.

func.func @f(%l: tensor<?x8xf32>) {
  // expected-error@+1 {{top_k must be at least 1 (got 0)}}
  %e, %w, %o, %s = moe.gate %l routing <top_k = 0> : tensor<?x8xf32> -> tensor<?x1xi32>, tensor<?x1xf32>, tensor<9xi32>, tensor<?xi32>
  return
}

// -----

func.func @f(%l: tensor<?x8xf32>) {
  // expected-error@+1 {{capacity_factor must be a finite number >= 0}}
  %e, %w, %o, %s = moe.gate %l routing <top_k = 1, capacity_factor = -1.0> : tensor<?x8xf32> -> tensor<?x1xi32>, tensor<?x1xf32>, tensor<9xi32>, tensor<?xi32>
  return
}

// -----

func.func @f(%l: tensor<?x8xf32>) {
  // expected-error@+1 {{min_capacity must be >= 0 (got -2)}}
  %e, %w, %o, %s = moe.gate %l routing <top_k = 1, capacity_factor = 1.0, min_capacity = -2> : tensor<?x8xf32> -> tensor<?x1xi32>, tensor<?x1xf32>, tensor<9xi32>, tensor<?xi32>
  return
}

// -----

func.func @f(%l: tensor<?x8xf32>) {
  // expected-error@+1 {{drop_tokens needs a capacity_factor > 0}}
  %e, %w, %o, %s = moe.gate %l routing <top_k = 1, drop_tokens = true> : tensor<?x8xf32> -> tensor<?x1xi32>, tensor<?x1xf32>, tensor<9xi32>, tensor<?xi32>
  return
}

// -----

func.func @f(%l: tensor<?x8xf32>) {
  // expected-error@+1 {{unknown routing parameter 'capacity' (expected top_k, score, score_before_topk, norm_topk_prob, capacity_factor, min_capacity, drop_tokens, n_group, topk_group or routed_scaling_factor)}}
  %e, %w, %o, %s = moe.gate %l routing <top_k = 1, capacity = 2.0> : tensor<?x8xf32> -> tensor<?x1xi32>, tensor<?x1xf32>, tensor<9xi32>, tensor<?xi32>
  return
}

// -----

func.func @f(%l: tensor<?x8xf32>) {
  // expected-error@+1 {{duplicate routing parameter 'top_k'}}
  %e, %w, %o, %s = moe.gate %l routing <top_k = 1, top_k = 2> : tensor<?x8xf32> -> tensor<?x1xi32>, tensor<?x1xf32>, tensor<9xi32>, tensor<?xi32>
  return
}

// -----

func.func @f(%l: tensor<?x8xf32>) {
  // expected-error@+1 {{#moe.routing needs top_k}}
  %e, %w, %o, %s = moe.gate %l routing <norm_topk_prob = true> : tensor<?x8xf32> -> tensor<?x1xi32>, tensor<?x1xf32>, tensor<9xi32>, tensor<?xi32>
  return
}

// -----

func.func @f(%l: tensor<?x8xf32>) {
  // expected-error@+1 {{unknown score function 'relu' (expected softmax or sigmoid)}}
  %e, %w, %o, %s = moe.gate %l routing <top_k = 1, score = relu> : tensor<?x8xf32> -> tensor<?x1xi32>, tensor<?x1xf32>, tensor<9xi32>, tensor<?xi32>
  return
}

// -----

func.func @f(%l: tensor<?x8xf32>) {
  // expected-error@+1 {{expected true or false}}
  %e, %w, %o, %s = moe.gate %l routing <top_k = 1, norm_topk_prob = yes> : tensor<?x8xf32> -> tensor<?x1xi32>, tensor<?x1xf32>, tensor<9xi32>, tensor<?xi32>
  return
}

// -----

func.func @f(%d: tensor<?x2xf32>, %off: tensor<3xi32>) {
  // expected-error@+1 {{placement needs at least one rank (got ranks = 0)}}
  %r = moe.all_to_all dispatch %d, %off on @devices axes [0] placement <ranks = 0, experts = [0, 0]> : tensor<?x2xf32>, tensor<3xi32>
  return
}

// -----

func.func @f(%d: tensor<?x2xf32>, %off: tensor<3xi32>) {
  // expected-error@+1 {{expert 1 is placed on rank 2 (expected a rank in [0, 2))}}
  %r = moe.all_to_all dispatch %d, %off on @devices axes [0] placement <ranks = 2, experts = [0, 2]> : tensor<?x2xf32>, tensor<3xi32>
  return
}

// -----

func.func @f(%d: tensor<?x2xf32>, %off: tensor<3xi32>) {
  // expected-error@+1 {{replica of expert 2 (expected an expert in [0, 2))}}
  %r = moe.all_to_all dispatch %d, %off on @devices axes [0] placement <ranks = 2, experts = [0, 1], replicas = [2 : 0]> : tensor<?x2xf32>, tensor<3xi32>
  return
}

// -----

func.func @f(%d: tensor<?x2xf32>, %off: tensor<3xi32>) {
  // expected-error@+1 {{replica of expert 0 is on rank 5 (expected a rank in [0, 2))}}
  %r = moe.all_to_all dispatch %d, %off on @devices axes [0] placement <ranks = 2, experts = [0, 1], replicas = [0 : 5]> : tensor<?x2xf32>, tensor<3xi32>
  return
}

// -----

func.func @f(%d: tensor<?x2xf32>, %off: tensor<3xi32>) {
  // expected-error@+1 {{expert 1 has two copies on rank 1 (expected each copy on its own rank)}}
  %r = moe.all_to_all dispatch %d, %off on @devices axes [0] placement <ranks = 2, experts = [0, 1], replicas = [1 : 1]> : tensor<?x2xf32>, tensor<3xi32>
  return
}

// -----

func.func @f(%d: tensor<?x2xf32>, %off: tensor<3xi32>) {
  // expected-error@+1 {{placement slices each expert in 3 parts (expected 1 to ranks = 2)}}
  %r = moe.all_to_all dispatch %d, %off on @devices axes [0] placement <ranks = 2, experts = [0, 1, 0, 1, 0, 1], slices = 3> : tensor<?x2xf32>, tensor<3xi32>
  return
}

// -----

func.func @f(%d: tensor<?x2xf32>, %off: tensor<3xi32>) {
  // expected-error@+1 {{placement lists 3 part ranks (expected experts x slices = a multiple of 2)}}
  %r = moe.all_to_all dispatch %d, %off on @devices axes [0] placement <ranks = 4, experts = [0, 1, 2], slices = 2> : tensor<?x2xf32>, tensor<3xi32>
  return
}

// -----

func.func @f(%d: tensor<?x2xf32>, %off: tensor<3xi32>) {
  // expected-error@+1 {{placement has both slices and replicas (expected one of them)}}
  %r = moe.all_to_all dispatch %d, %off on @devices axes [0] placement <ranks = 4, experts = [0, 1, 2, 3], slices = 2, replicas = [0 : 3]> : tensor<?x2xf32>, tensor<3xi32>
  return
}

// -----

func.func @f(%d: tensor<?x2xf32>, %off: tensor<3xi32>) {
  // expected-error@+1 {{expert 1 has two parts on rank 2 (expected each part on its own rank)}}
  %r = moe.all_to_all dispatch %d, %off on @devices axes [0] placement <ranks = 4, experts = [0, 1, 2, 2], slices = 2> : tensor<?x2xf32>, tensor<3xi32>
  return
}

// -----

func.func @f(%d: tensor<?x2xf32>, %off: tensor<3xi32>) {
  // expected-error@+1 {{expert 1 part 1 is placed on rank 7 (expected a rank in [0, 4))}}
  %r = moe.all_to_all dispatch %d, %off on @devices axes [0] placement <ranks = 4, experts = [0, 1, 2, 7], slices = 2> : tensor<?x2xf32>, tensor<3xi32>
  return
}

// -----

// expected-error@+1 {{'moe.model' op vocab_size must be positive (got 0)}}
moe.model @m attributes {architecture = "test", vocab_size = 0, hidden_size = 2, num_layers = 0, max_position_embeddings = 8} {
}

// -----

// expected-error@+1 {{'moe.model' op num_layers must be >= 0 (got -1)}}
moe.model @m attributes {architecture = "test", vocab_size = 4, hidden_size = 2, num_layers = -1, max_position_embeddings = 8} {
}

// -----

// expected-error@+1 {{'moe.model' op kv_cache_dtype must be f32, bf16 or f16 (got 'i8')}}
moe.model @m attributes {architecture = "test", vocab_size = 4, hidden_size = 2, num_layers = 0, max_position_embeddings = 8, kv_cache_dtype = i8} {
}

// -----

// expected-error@+1 {{'moe.model' op eos_token_id 4 is not a token (expected 0..3)}}
moe.model @m attributes {architecture = "test", vocab_size = 4, hidden_size = 2, num_layers = 0, max_position_embeddings = 8, eos_token_ids = array<i64: 1, 4>} {
}

// -----

// expected-error@+1 {{'moe.model' op bos_token_id -1 is not a token (expected 0..3)}}
moe.model @m attributes {architecture = "test", vocab_size = 4, hidden_size = 2, num_layers = 0, max_position_embeddings = 8, bos_token_id = -1} {
}

// -----

// expected-error@+1 {{'moe.model' op has no moe.graph (expected exactly one)}}
moe.model @m attributes {architecture = "test", vocab_size = 4, hidden_size = 2, num_layers = 0, max_position_embeddings = 8} {
  moe.param @emb "emb" : tensor<4x2xf32> init normal std 0.02
}

// -----

moe.model @m attributes {architecture = "test", vocab_size = 4, hidden_size = 2, num_layers = 0, max_position_embeddings = 8} {
  moe.param @emb "emb" : tensor<4x2xf32> init normal std 0.02
  // expected-error@+1 {{'func.func' op is not allowed in a moe.model body (expected moe.param, moe.graph or shard.grid)}}
  func.func @g() {
    return
  }
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x4xf32> {
    %w = moe.weight @emb : tensor<4x2xf32>
    %x = moe.embedding %ids, %w : tensor<?xi32>, tensor<4x2xf32> -> tensor<?x2xf32>
    %l = moe.lm_head %x, %w tied : tensor<?x2xf32>, tensor<4x2xf32> -> tensor<?x4xf32>
    moe.return %l : tensor<?x4xf32>
  }
}

// -----

moe.model @m attributes {architecture = "test", vocab_size = 4, hidden_size = 2, num_layers = 0, max_position_embeddings = 8} {
  moe.param @emb "emb" : tensor<4x2xf32> init normal std 0.02
  moe.graph @other(%ids: tensor<?xi32>) -> tensor<?x4xf32> {
    %w = moe.weight @emb : tensor<4x2xf32>
    %x = moe.embedding %ids, %w : tensor<?xi32>, tensor<4x2xf32> -> tensor<?x2xf32>
    %l = moe.lm_head %x, %w : tensor<?x2xf32>, tensor<4x2xf32> -> tensor<?x4xf32>
    moe.return %l : tensor<?x4xf32>
  }
  // expected-error@+1 {{'moe.graph' op is a second moe.graph (expected exactly one graph per model)}}
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x4xf32> {
    %w = moe.weight @emb : tensor<4x2xf32>
    %x = moe.embedding %ids, %w : tensor<?xi32>, tensor<4x2xf32> -> tensor<?x2xf32>
    %l = moe.lm_head %x, %w tied : tensor<?x2xf32>, tensor<4x2xf32> -> tensor<?x4xf32>
    moe.return %l : tensor<?x4xf32>
  }
}

// -----

moe.model @m attributes {architecture = "test", vocab_size = 4, hidden_size = 2, num_layers = 0, max_position_embeddings = 8} {
  moe.param @emb "emb" : tensor<4x2xf32> init normal std 0.02
  // expected-error@+1 {{'moe.graph' op returns logits of width 5 (expected vocab_size 4)}}
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x5xf32> {
    %w = moe.weight @emb : tensor<4x2xf32>
    %x = moe.embedding %ids, %w : tensor<?xi32>, tensor<4x2xf32> -> tensor<?x2xf32>
    %w5 = "test.w"() : () -> tensor<5x2xf32>
    %l = moe.lm_head %x, %w5 : tensor<?x2xf32>, tensor<5x2xf32> -> tensor<?x5xf32>
    moe.return %l : tensor<?x5xf32>
  }
}

// -----

moe.model @m attributes {architecture = "test", vocab_size = 4, hidden_size = 2, num_layers = 2, max_position_embeddings = 8} {
  moe.param @emb "emb" : tensor<4x2xf32> init normal std 0.02
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x4xf32> {
    %w = moe.weight @emb : tensor<4x2xf32>
    %x = moe.embedding %ids, %w : tensor<?xi32>, tensor<4x2xf32> -> tensor<?x2xf32>
    // expected-error@+1 {{'moe.layer' op has index 1 (expected 0: layers are numbered 0..num_layers-1 in order)}}
    %y = moe.layer 1 (%h = %x) : tensor<?x2xf32> {
      moe.yield %h : tensor<?x2xf32>
    }
    %l = moe.lm_head %x, %w tied : tensor<?x2xf32>, tensor<4x2xf32> -> tensor<?x4xf32>
    moe.return %l : tensor<?x4xf32>
  }
}

// -----

// expected-error@+1 {{'moe.model' op has 0 moe.layer ops (expected num_layers = 1)}}
moe.model @m attributes {architecture = "test", vocab_size = 4, hidden_size = 2, num_layers = 1, max_position_embeddings = 8} {
  moe.param @emb "emb" : tensor<4x2xf32> init normal std 0.02
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x4xf32> {
    %w = moe.weight @emb : tensor<4x2xf32>
    %x = moe.embedding %ids, %w : tensor<?xi32>, tensor<4x2xf32> -> tensor<?x2xf32>
    %l = moe.lm_head %x, %w tied : tensor<?x2xf32>, tensor<4x2xf32> -> tensor<?x4xf32>
    moe.return %l : tensor<?x4xf32>
  }
}

// -----

moe.model @m attributes {architecture = "test", vocab_size = 4, hidden_size = 2, num_layers = 1, max_position_embeddings = 8} {
  moe.param @emb "emb" : tensor<4x2xf32> init normal std 0.02
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x4xf32> {
    %w = moe.weight @emb : tensor<4x2xf32>
    %x = moe.embedding %ids, %w : tensor<?xi32>, tensor<4x2xf32> -> tensor<?x2xf32>
    %y = moe.layer 0 (%h = %x) : tensor<?x2xf32> {
      // expected-error@+1 {{'moe.attention' op uses KV cache layer 1 (expected < num_layers 1)}}
      %a = moe.attention %h, %h, %h heads 1 kv_heads 1 head_dim 2 scale 1.0 layer 1 causal : tensor<?x2xf32>, tensor<?x2xf32>, tensor<?x2xf32> -> tensor<?x2xf32>
      moe.yield %a : tensor<?x2xf32>
    }
    %l = moe.lm_head %x, %w tied : tensor<?x2xf32>, tensor<4x2xf32> -> tensor<?x4xf32>
    moe.return %l : tensor<?x4xf32>
  }
}

// -----

moe.model @m attributes {architecture = "test", vocab_size = 4, hidden_size = 2, num_layers = 1, max_position_embeddings = 8} {
  moe.param @emb "emb" : tensor<4x2xf32> init normal std 0.02
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x4xf32> {
    %w = moe.weight @emb : tensor<4x2xf32>
    %x = moe.embedding %ids, %w : tensor<?xi32>, tensor<4x2xf32> -> tensor<?x2xf32>
    %y = moe.layer 0 (%h = %x) : tensor<?x2xf32> {
      %a = moe.attention %h, %h, %h heads 1 kv_heads 1 head_dim 2 scale 1.0 layer 0 causal : tensor<?x2xf32>, tensor<?x2xf32>, tensor<?x2xf32> -> tensor<?x2xf32>
      // expected-error@+1 {{'moe.attention' op reuses KV cache layer 0 (expected one attention per KV cache layer)}}
      %b = moe.attention %a, %a, %a heads 1 kv_heads 1 head_dim 2 scale 1.0 layer 0 causal : tensor<?x2xf32>, tensor<?x2xf32>, tensor<?x2xf32> -> tensor<?x2xf32>
      moe.yield %b : tensor<?x2xf32>
    }
    %l = moe.lm_head %x, %w tied : tensor<?x2xf32>, tensor<4x2xf32> -> tensor<?x4xf32>
    moe.return %l : tensor<?x4xf32>
  }
}

// -----

moe.model @m attributes {architecture = "test", vocab_size = 4, hidden_size = 2, num_layers = 0, max_position_embeddings = 8} {
  moe.param @emb "emb" : tensor<4x2xf32> init normal std 0.02
  moe.param @head "head" : tensor<4x2xf32> init normal std 0.02
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x4xf32> {
    %w = moe.weight @emb : tensor<4x2xf32>
    %x = moe.embedding %ids, %w : tensor<?xi32>, tensor<4x2xf32> -> tensor<?x2xf32>
    %hw = moe.weight @head : tensor<4x2xf32>
    // expected-error@+1 {{'moe.lm_head' op is tied but its weight is not the token embedding table (expected a moe.weight of the embedding's parameter)}}
    %l = moe.lm_head %x, %hw tied : tensor<?x2xf32>, tensor<4x2xf32> -> tensor<?x4xf32>
    moe.return %l : tensor<?x4xf32>
  }
}

// -----

moe.model @m attributes {architecture = "test", vocab_size = 4, hidden_size = 2, num_layers = 1, max_position_embeddings = 8} {
  shard.grid @devices(shape = 1x2)
  moe.param @emb "emb" : tensor<4x2xf32> init normal std 0.02
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x4xf32> {
    %w = moe.weight @emb : tensor<4x2xf32>
    %x = moe.embedding %ids, %w : tensor<?xi32>, tensor<4x2xf32> -> tensor<?x2xf32>
    %y = moe.layer 0 (%h = %x) : tensor<?x2xf32> {
      %off = "test.offsets"() : () -> tensor<3xi32>
      %u = "test.w"() : () -> tensor<2x4x2xf32>
      %d = "test.w"() : () -> tensor<2x2x4xf32>
      // expected-error@+1 {{'moe.experts' op placement spans 4 ranks (expected the 2 ranks of the device grid @devices)}}
      %e = moe.experts %h, %off top_k 1 act gelu up %u : tensor<2x4x2xf32> down %d : tensor<2x2x4xf32> placement <ranks = 4, experts = [0, 3]> : tensor<?x2xf32>, tensor<3xi32> -> tensor<?x2xf32>
      moe.yield %h : tensor<?x2xf32>
    }
    %l = moe.lm_head %y, %w tied : tensor<?x2xf32>, tensor<4x2xf32> -> tensor<?x4xf32>
    moe.return %l : tensor<?x4xf32>
  }
}

// -----

moe.model @m attributes {architecture = "test", vocab_size = 4, hidden_size = 2, num_layers = 0, max_position_embeddings = 8} {
  moe.param @emb "emb" : tensor<4x2xf32> init normal std 0.02
  // expected-error@+1 {{type 'tensor<4x2xi32>' is not a statically shaped tensor of f32, bf16 or f16}}
  moe.param @p "p" : tensor<4x2xi32> init normal std 0.02
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x4xf32> {
    %w = moe.weight @emb : tensor<4x2xf32>
    %x = moe.embedding %ids, %w : tensor<?xi32>, tensor<4x2xf32> -> tensor<?x2xf32>
    %l = moe.lm_head %x, %w tied : tensor<?x2xf32>, tensor<4x2xf32> -> tensor<?x4xf32>
    moe.return %l : tensor<?x4xf32>
  }
}

// -----

moe.model @m attributes {architecture = "test", vocab_size = 4, hidden_size = 2, num_layers = 0, max_position_embeddings = 8} {
  moe.param @emb "emb" : tensor<4x2xf32> init normal std 0.02
  // expected-error@+1 {{type 'tensor<?x2xf32>' is not a statically shaped tensor of f32, bf16 or f16}}
  moe.param @p "p" : tensor<?x2xf32> init normal std 0.02
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x4xf32> {
    %w = moe.weight @emb : tensor<4x2xf32>
    %x = moe.embedding %ids, %w : tensor<?xi32>, tensor<4x2xf32> -> tensor<?x2xf32>
    %l = moe.lm_head %x, %w tied : tensor<?x2xf32>, tensor<4x2xf32> -> tensor<?x4xf32>
    moe.return %l : tensor<?x4xf32>
  }
}

// -----

moe.model @m attributes {architecture = "test", vocab_size = 4, hidden_size = 2, num_layers = 0, max_position_embeddings = 8} {
  moe.param @emb "emb" : tensor<4x2xf32> init normal std 0.02
  // expected-error@+1 {{type 'tensor<0x2xf32>' has an empty dimension (expected sizes >= 1)}}
  moe.param @p "p" : tensor<0x2xf32> init normal std 0.02
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x4xf32> {
    %w = moe.weight @emb : tensor<4x2xf32>
    %x = moe.embedding %ids, %w : tensor<?xi32>, tensor<4x2xf32> -> tensor<?x2xf32>
    %l = moe.lm_head %x, %w tied : tensor<?x2xf32>, tensor<4x2xf32> -> tensor<?x4xf32>
    moe.return %l : tensor<?x4xf32>
  }
}

// -----

moe.model @m attributes {architecture = "test", vocab_size = 4, hidden_size = 2, num_layers = 0, max_position_embeddings = 8} {
  moe.param @emb "emb" : tensor<4x2xf32> init normal std 0.02
  // expected-error@+1 {{'moe.param' op has an empty checkpoint tensor name}}
  moe.param @p "" : tensor<2xf32> init ones
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x4xf32> {
    %w = moe.weight @emb : tensor<4x2xf32>
    %x = moe.embedding %ids, %w : tensor<?xi32>, tensor<4x2xf32> -> tensor<?x2xf32>
    %l = moe.lm_head %x, %w tied : tensor<?x2xf32>, tensor<4x2xf32> -> tensor<?x4xf32>
    moe.return %l : tensor<?x4xf32>
  }
}

// -----

moe.model @m attributes {architecture = "test", vocab_size = 4, hidden_size = 2, num_layers = 0, max_position_embeddings = 8} {
  moe.param @emb "emb" : tensor<4x2xf32> init normal std 0.02
  // expected-error@+1 {{'moe.param' op init normal needs a positive std}}
  moe.param @p "p" : tensor<2xf32> init normal
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x4xf32> {
    %w = moe.weight @emb : tensor<4x2xf32>
    %x = moe.embedding %ids, %w : tensor<?xi32>, tensor<4x2xf32> -> tensor<?x2xf32>
    %l = moe.lm_head %x, %w tied : tensor<?x2xf32>, tensor<4x2xf32> -> tensor<?x4xf32>
    moe.return %l : tensor<?x4xf32>
  }
}

// -----

moe.model @m attributes {architecture = "test", vocab_size = 4, hidden_size = 2, num_layers = 0, max_position_embeddings = 8} {
  moe.param @emb "emb" : tensor<4x2xf32> init normal std 0.02
  // expected-error@+1 {{'moe.param' op init ones takes no std (only init normal does)}}
  moe.param @p "p" : tensor<2xf32> init ones std 0.5
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x4xf32> {
    %w = moe.weight @emb : tensor<4x2xf32>
    %x = moe.embedding %ids, %w : tensor<?xi32>, tensor<4x2xf32> -> tensor<?x2xf32>
    %l = moe.lm_head %x, %w tied : tensor<?x2xf32>, tensor<4x2xf32> -> tensor<?x4xf32>
    moe.return %l : tensor<?x4xf32>
  }
}

// -----

moe.model @m attributes {architecture = "test", vocab_size = 4, hidden_size = 2, num_layers = 0, max_position_embeddings = 8} {
  moe.param @emb "emb" : tensor<4x2xf32> init normal std 0.02
  // expected-error@+1 {{custom op 'moe.param' expected string or keyword containing one of the following enum values for attribute 'init' [normal, ones, zeros]}}
  moe.param @p "p" : tensor<2xf32> init uniform
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x4xf32> {
    %w = moe.weight @emb : tensor<4x2xf32>
    %x = moe.embedding %ids, %w : tensor<?xi32>, tensor<4x2xf32> -> tensor<?x2xf32>
    %l = moe.lm_head %x, %w tied : tensor<?x2xf32>, tensor<4x2xf32> -> tensor<?x4xf32>
    moe.return %l : tensor<?x4xf32>
  }
}

// -----

moe.model @m attributes {architecture = "test", vocab_size = 4, hidden_size = 2, num_layers = 0, max_position_embeddings = 8} {
  // expected-error@+1 {{'moe.graph' op expects one argument: the token ids (tensor<?xi32>)}}
  moe.graph @forward(%ids: tensor<?xi64>) -> tensor<?x4xf32> {
    %l = "test.logits"() : () -> tensor<?x4xf32>
    moe.return %l : tensor<?x4xf32>
  }
}

// -----

moe.model @m attributes {architecture = "test", vocab_size = 4, hidden_size = 2, num_layers = 0, max_position_embeddings = 8} {
  // expected-error@+1 {{'moe.graph' op expects one result: the logits (tensor<?xVOCABxf32>)}}
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x4xf16> {
    %l = "test.logits"() : () -> tensor<?x4xf16>
    moe.return %l : tensor<?x4xf16>
  }
}

// -----

moe.model @m attributes {architecture = "test", vocab_size = 4, hidden_size = 2, num_layers = 0, max_position_embeddings = 8} {
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x4xf32> {
    %l = "test.logits"() : () -> tensor<?x8xf32>
    // expected-error@+1 {{'moe.return' op returns 1 value(s) whose types do not match the graph's results '(tensor<?xi32>) -> tensor<?x4xf32>'}}
    moe.return %l : tensor<?x8xf32>
  }
}

// -----

moe.model @m attributes {architecture = "test", vocab_size = 4, hidden_size = 2, num_layers = 0, max_position_embeddings = 8} {
  moe.param @emb "emb" : tensor<4x2xf32> init normal std 0.02
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x4xf32> {
    // expected-error@+1 {{'moe.weight' op @nope does not name a moe.param of the enclosing moe.model}}
    %w = moe.weight @nope : tensor<4x2xf32>
    %x = moe.embedding %ids, %w : tensor<?xi32>, tensor<4x2xf32> -> tensor<?x2xf32>
    %l = moe.lm_head %x, %w tied : tensor<?x2xf32>, tensor<4x2xf32> -> tensor<?x4xf32>
    moe.return %l : tensor<?x4xf32>
  }
}

// -----

moe.model @m attributes {architecture = "test", vocab_size = 4, hidden_size = 2, num_layers = 0, max_position_embeddings = 8} {
  moe.param @emb "emb" : tensor<4x2xf32> init normal std 0.02
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x4xf32> {
    // expected-error@+1 {{'moe.weight' op has type 'tensor<4x2xbf16>' but parameter @emb is declared as 'tensor<4x2xf32>'}}
    %w = moe.weight @emb : tensor<4x2xbf16>
    %x = moe.embedding %ids, %w : tensor<?xi32>, tensor<4x2xbf16> -> tensor<?x2xf32>
    %l = moe.lm_head %x, %w tied : tensor<?x2xf32>, tensor<4x2xbf16> -> tensor<?x4xf32>
    moe.return %l : tensor<?x4xf32>
  }
}

// -----

moe.model @m attributes {architecture = "test", vocab_size = 4, hidden_size = 2, num_layers = 1, max_position_embeddings = 8} {
  moe.param @emb "emb" : tensor<4x2xf32> init normal std 0.02
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x4xf32> {
    %w = moe.weight @emb : tensor<4x2xf32>
    %x = moe.embedding %ids, %w : tensor<?xi32>, tensor<4x2xf32> -> tensor<?x2xf32>
    // expected-error@+1 {{'moe.layer' op index must be >= 0 (got -1)}}
    %y = moe.layer -1 (%h = %x) : tensor<?x2xf32> {
      moe.yield %h : tensor<?x2xf32>
    }
    %l = moe.lm_head %x, %w tied : tensor<?x2xf32>, tensor<4x2xf32> -> tensor<?x4xf32>
    moe.return %l : tensor<?x4xf32>
  }
}

// -----

func.func @f(%x: tensor<?x2xf32>) {
  // expected-error@+1 {{'moe.layer' op body must take one argument of the input type 'tensor<?x2xf32>'}}
  %y = "moe.layer"(%x) <{index = 0 : i64}> ({
  ^bb0(%h: tensor<?x3xf32>):
    %z = "test.z"() : () -> tensor<?x2xf32>
    moe.yield %z : tensor<?x2xf32>
  }) : (tensor<?x2xf32>) -> tensor<?x2xf32>
  return
}

// -----

func.func @f(%x: tensor<?x2xf32>) {
  // expected-error@+1 {{'moe.layer' op body must end with moe.yield}}
  %y = "moe.layer"(%x) <{index = 0 : i64}> ({
  ^bb0(%h: tensor<?x2xf32>):
    "test.end"() : () -> ()
  }) : (tensor<?x2xf32>) -> tensor<?x2xf32>
  return
}

// -----

func.func @f(%x: tensor<?x2xf32>) {
  %y = moe.layer 0 (%h = %x) : tensor<?x2xf32> {
    %z = "test.z"() : () -> tensor<?x3xf32>
    // expected-error@+1 {{'moe.yield' op yields 'tensor<?x3xf32>' (expected the layer's type 'tensor<?x2xf32>')}}
    moe.yield %z : tensor<?x3xf32>
  }
  return
}

// -----

func.func @f(%ids: tensor<?xi32>, %t: tensor<4x2xf32>) {
  // expected-error@+1 {{'moe.embedding' op result width 3 does not match the table's hidden size 2 (table is [vocab, hidden])}}
  %x = moe.embedding %ids, %t : tensor<?xi32>, tensor<4x2xf32> -> tensor<?x3xf32>
  return
}

// -----

func.func @f(%ids: tensor<?xi32>, %t: tensor<4x2xf32>) {
  // expected-error@+1 {{'moe.embedding' op scale must be nonzero}}
  %x = moe.embedding %ids, %t {scale = 0.0 : f32} : tensor<?xi32>, tensor<4x2xf32> -> tensor<?x2xf32>
  return
}

// -----

func.func @f(%x: tensor<?x3xf32>, %t: tensor<8x2xf32>) {
  // expected-error@+1 {{'moe.position_embedding' op input width 3 (expected 2, the position table is [max_positions, hidden])}}
  %y = moe.position_embedding %x, %t : tensor<?x3xf32>, tensor<8x2xf32>
  return
}

// -----

func.func @f(%x: tensor<?x4xf32>, %w: tensor<4xf32>) {
  // expected-error@+1 {{'moe.layer_norm' op eps must be positive}}
  %y = moe.layer_norm %x, %w eps 0.0 : tensor<?x4xf32>, tensor<4xf32>
  return
}

// -----

func.func @f(%x: tensor<?x4xf32>, %w: tensor<3xf32>) {
  // expected-error@+1 {{'moe.rms_norm' op group_size 3 does not divide the row width 4}}
  %y = moe.rms_norm %x, %w eps 1.0e-5 group 3 : tensor<?x4xf32>, tensor<3xf32>
  return
}

// -----

func.func @f(%x: tensor<?x4xf32>, %w: tensor<2xf32>) {
  // expected-error@+1 {{'moe.rms_norm' op group_size must be positive (got 0)}}
  %y = moe.rms_norm %x, %w eps 1.0e-5 group 0 : tensor<?x4xf32>, tensor<2xf32>
  return
}

// -----

func.func @f(%x: tensor<?x4xf32>, %w: tensor<2xf32>) {
  // expected-error@+1 {{'moe.rms_norm' op weight has 2 elements (expected 4)}}
  %y = moe.rms_norm %x, %w eps 1.0e-5 : tensor<?x4xf32>, tensor<2xf32>
  return
}

// -----

func.func @f(%x: tensor<?x4xf32>, %w: tensor<4xf32>, %b: tensor<2xf32>) {
  // expected-error@+1 {{'moe.layer_norm' op bias has 2 elements (expected 4)}}
  %y = moe.layer_norm %x, %w, %b eps 1.0e-5 : tensor<?x4xf32>, tensor<4xf32>, tensor<2xf32>
  return
}

// -----

func.func @f(%x: tensor<?x4xf32>, %w: tensor<8x3xf32>) {
  // expected-error@+1 {{'moe.linear' op input width 4 does not match the weight [8, 3] ([N, K])}}
  %y = moe.linear %x, %w : tensor<?x4xf32>, tensor<8x3xf32> -> tensor<?x8xf32>
  return
}

// -----

func.func @f(%x: tensor<?x4xf32>, %w: tensor<4x8xf32>) {
  // expected-error@+1 {{'moe.linear' op result width 4 (expected 8, the weight's output size)}}
  %y = moe.linear %x, %w {transposed} : tensor<?x4xf32>, tensor<4x8xf32> -> tensor<?x4xf32>
  return
}

// -----

func.func @f(%x: tensor<?x4xf32>, %w: tensor<8x4xf32>, %b: tensor<4xf32>) {
  // expected-error@+1 {{'moe.linear' op bias has 4 elements (expected 8)}}
  %y = moe.linear %x, %w, %b : tensor<?x4xf32>, tensor<8x4xf32>, tensor<4xf32> -> tensor<?x8xf32>
  return
}

// -----

func.func @f(%x: tensor<?x4xf32>, %w: tensor<8x4xi8>) {
  // expected-error@+1 {{'moe.linear' op operand #1 must be 2D statically shaped tensor of f32, bf16 or f16}}
  %y = moe.linear %x, %w : tensor<?x4xf32>, tensor<8x4xi8> -> tensor<?x8xf32>
  return
}

// -----

func.func @f(%x: tensor<?x12xf32>) {
  // expected-error@+1 {{'moe.split' op result widths sum to 10 (expected the input width 12)}}
  %a, %b = moe.split %x : tensor<?x12xf32> -> tensor<?x4xf32>, tensor<?x6xf32>
  return
}

// -----

func.func @f(%x: tensor<?x12xf32>) {
  // expected-error@+1 {{'moe.split' op needs at least one result}}
  "moe.split"(%x) : (tensor<?x12xf32>) -> ()
  return
}

// -----

func.func @f(%x: tensor<?x12xf32>) {
  // expected-error@+1 {{'moe.split' op result widths must be static}}
  %a, %b = moe.split %x : tensor<?x12xf32> -> tensor<?x4xf32>, tensor<?x?xf32>
  return
}

// -----

func.func @f(%x: tensor<5x12xf32>) {
  // expected-error@+1 {{'moe.split' op results must have the input's number of rows}}
  %a, %b = moe.split %x : tensor<5x12xf32> -> tensor<5x4xf32>, tensor<3x8xf32>
  return
}

// -----

func.func @f(%x: tensor<?x48xf32>) {
  // expected-error@+1 {{'moe.rotary' op num_heads * head_dim = 4 * 16 = 64 does not match the input width 48}}
  %y = moe.rotary %x heads 4 head_dim 16 rotary_dim 16 theta 10000.0 style neox : tensor<?x48xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>) {
  // expected-error@+1 {{'moe.rotary' op rotary_dim 17 must be even and in [2, head_dim = 16]}}
  %y = moe.rotary %x heads 4 head_dim 16 rotary_dim 17 theta 10000.0 style neox : tensor<?x64xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>) {
  // expected-error@+1 {{'moe.rotary' op theta must be positive}}
  %y = moe.rotary %x heads 4 head_dim 16 rotary_dim 16 theta -1.0 style neox : tensor<?x64xf32>
  return
}

// -----

func.func @f(%x: tensor<?x16xf32>) {
  // expected-error@+1 {{'moe.rotary' op inv_freq has 3 values (expected rotary_dim / 2 = 2)}}
  %y = moe.rotary %x heads 4 head_dim 4 rotary_dim 4 theta 10000.0 style neox inv_freq dense<[1.0, 0.5, 0.25]> : tensor<3xf32> : tensor<?x16xf32>
  return
}

// -----

func.func @f(%x: tensor<?x16xf32>) {
  // expected-error@+1 {{'moe.rotary' op inv_freq value 0.000000e+00 is not a positive finite frequency}}
  %y = moe.rotary %x heads 4 head_dim 4 rotary_dim 4 theta 10000.0 style neox inv_freq dense<[1.0, 0.0]> : tensor<2xf32> : tensor<?x16xf32>
  return
}

// -----

func.func @f(%x: tensor<?x16xf32>) {
  // expected-error@+1 {{'moe.rotary' op attention_factor -1.000000e+00 is not a positive finite scale}}
  %y = moe.rotary %x heads 4 head_dim 4 rotary_dim 4 theta 10000.0 style neox attention_factor -1.0 : tensor<?x16xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>) {
  // expected-error@+1 {{'moe.rotary' op num_heads must be positive (got 0)}}
  %y = moe.rotary %x heads 0 head_dim 16 rotary_dim 16 theta 1.0 style neox : tensor<?x64xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>) {
  // expected-error@+1 {{custom op 'moe.rotary' expected string or keyword containing one of the following enum values for attribute 'style' [neox, interleaved]}}
  %y = moe.rotary %x heads 4 head_dim 16 rotary_dim 16 theta 1.0 style gptj : tensor<?x64xf32>
  return
}

// -----

func.func @f(%q: tensor<?x96xf32>, %k: tensor<?x64xf32>, %v: tensor<?x64xf32>) {
  // expected-error@+1 {{'moe.attention' op num_heads 6 is not a multiple of num_kv_heads 4 (expected whole groups of query heads per KV head)}}
  %o = moe.attention %q, %k, %v heads 6 kv_heads 4 head_dim 16 scale 0.25 layer 0 causal : tensor<?x96xf32>, tensor<?x64xf32>, tensor<?x64xf32> -> tensor<?x96xf32>
  return
}

// -----

func.func @f(%q: tensor<?x64xf32>, %k: tensor<?x32xf32>, %v: tensor<?x32xf32>) {
  // expected-error@+1 {{'moe.attention' op q width 64 (expected 96, num_heads * head_dim)}}
  %o = moe.attention %q, %k, %v heads 6 kv_heads 2 head_dim 16 scale 0.25 layer 0 causal : tensor<?x64xf32>, tensor<?x32xf32>, tensor<?x32xf32> -> tensor<?x96xf32>
  return
}

// -----

func.func @f(%q: tensor<?x96xf32>, %k: tensor<?x48xf32>, %v: tensor<?x32xf32>) {
  // expected-error@+1 {{'moe.attention' op k width 48 (expected 32, num_kv_heads * head_dim)}}
  %o = moe.attention %q, %k, %v heads 6 kv_heads 2 head_dim 16 scale 0.25 layer 0 causal : tensor<?x96xf32>, tensor<?x48xf32>, tensor<?x32xf32> -> tensor<?x96xf32>
  return
}

// -----

func.func @f(%q: tensor<?x96xf32>, %k: tensor<?x32xf32>, %v: tensor<?x16xf32>) {
  // expected-error@+1 {{'moe.attention' op v width 16 (expected 32, num_kv_heads * head_dim)}}
  %o = moe.attention %q, %k, %v heads 6 kv_heads 2 head_dim 16 scale 0.25 layer 0 causal : tensor<?x96xf32>, tensor<?x32xf32>, tensor<?x16xf32> -> tensor<?x96xf32>
  return
}

// -----

func.func @f(%q: tensor<?x96xf32>, %k: tensor<?x32xf32>, %v: tensor<?x32xf32>) {
  // expected-error@+1 {{'moe.attention' op result width 64 (expected 96, num_heads * head_dim)}}
  %o = moe.attention %q, %k, %v heads 6 kv_heads 2 head_dim 16 scale 0.25 layer 0 causal : tensor<?x96xf32>, tensor<?x32xf32>, tensor<?x32xf32> -> tensor<?x64xf32>
  return
}

// -----

func.func @f(%q: tensor<?x96xf32>, %k: tensor<?x32xf32>, %v: tensor<?x32xf32>) {
  // expected-error@+1 {{'moe.attention' op scale must be positive}}
  %o = moe.attention %q, %k, %v heads 6 kv_heads 2 head_dim 16 scale 0.0 layer 0 causal : tensor<?x96xf32>, tensor<?x32xf32>, tensor<?x32xf32> -> tensor<?x96xf32>
  return
}

// -----

func.func @f(%q: tensor<?x96xf32>, %k: tensor<?x32xf32>, %v: tensor<?x32xf32>) {
  // expected-error@+1 {{'moe.attention' op layer must be >= 0 (got -1)}}
  %o = moe.attention %q, %k, %v heads 6 kv_heads 2 head_dim 16 scale 0.25 layer -1 causal : tensor<?x96xf32>, tensor<?x32xf32>, tensor<?x32xf32> -> tensor<?x96xf32>
  return
}

// -----

func.func @f(%q: tensor<?x96xf32>, %k: tensor<?x32xf32>, %v: tensor<?x32xf32>) {
  // expected-error@+1 {{'moe.attention' op sliding window must be positive (got 0)}}
  %o = moe.attention %q, %k, %v heads 6 kv_heads 2 head_dim 16 scale 0.25 layer 0 causal window 0 : tensor<?x96xf32>, tensor<?x32xf32>, tensor<?x32xf32> -> tensor<?x96xf32>
  return
}

// -----

func.func @f(%q: tensor<?x96xf32>, %k: tensor<?x32xf32>, %v: tensor<?x32xf32>) {
  // expected-error@+1 {{'moe.attention' op head_dim must be positive (got 0)}}
  %o = moe.attention %q, %k, %v heads 6 kv_heads 2 head_dim 0 scale 0.25 layer 0 causal : tensor<?x96xf32>, tensor<?x32xf32>, tensor<?x32xf32> -> tensor<?x96xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %u: tensor<128x64xf32>, %u2: tensor<128x32xf32>, %g: tensor<64x64xf32>, %d: tensor<64x128xf32>, %d2: tensor<128x64xf32>, %b: tensor<64xf32>, %b2: tensor<128xf32>) {
  // expected-error@+1 {{'moe.mlp' op up weight is [128, 32] (expected [128, 64], [I, D])}}
  %y = moe.mlp %x up %u2 down %d act gelu : (tensor<?x64xf32>, tensor<128x32xf32>, tensor<64x128xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %u: tensor<128x64xf32>, %u2: tensor<128x32xf32>, %g: tensor<64x64xf32>, %d: tensor<64x128xf32>, %d2: tensor<128x64xf32>, %b: tensor<64xf32>, %b2: tensor<128xf32>) {
  // expected-error@+1 {{'moe.mlp' op gate weight is [64, 64] (expected [128, 64], [I, D])}}
  %y = moe.mlp %x up %u gate %g down %d act silu : (tensor<?x64xf32>, tensor<128x64xf32>, tensor<64x64xf32>, tensor<64x128xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %u: tensor<128x64xf32>, %u2: tensor<128x32xf32>, %g: tensor<64x64xf32>, %d: tensor<64x128xf32>, %d2: tensor<128x64xf32>, %b: tensor<64xf32>, %b2: tensor<128xf32>) {
  // expected-error@+1 {{'moe.mlp' op down weight is [128, 64] (expected [64, 128], [D, I])}}
  %y = moe.mlp %x up %u down %d2 act gelu : (tensor<?x64xf32>, tensor<128x64xf32>, tensor<128x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %u: tensor<128x64xf32>, %u2: tensor<128x32xf32>, %g: tensor<64x64xf32>, %d: tensor<64x128xf32>, %d2: tensor<128x64xf32>, %b: tensor<64xf32>, %b2: tensor<128xf32>) {
  // expected-error@+1 {{'moe.mlp' op up bias has 64 elements (expected 128)}}
  %y = moe.mlp %x up %u bias %b down %d act gelu : (tensor<?x64xf32>, tensor<128x64xf32>, tensor<64xf32>, tensor<64x128xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %u: tensor<128x64xf32>, %u2: tensor<128x32xf32>, %g: tensor<64x64xf32>, %d: tensor<64x128xf32>, %d2: tensor<128x64xf32>, %b: tensor<64xf32>, %b2: tensor<128xf32>) {
  // expected-error@+1 {{'moe.mlp' op down bias has 128 elements (expected 64)}}
  %y = moe.mlp %x up %u down %d bias %b2 act gelu : (tensor<?x64xf32>, tensor<128x64xf32>, tensor<64x128xf32>, tensor<128xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %u: tensor<128x64xf32>, %u2: tensor<128x32xf32>, %g: tensor<64x64xf32>, %d: tensor<64x128xf32>, %d2: tensor<128x64xf32>, %b: tensor<64xf32>, %b2: tensor<128xf32>) {
  // expected-error@+1 {{'moe.mlp' op down weight is [64, 128] (expected [128, 64], [I, D], transposed)}}
  %y = moe.mlp %x up %d down %d act gelu {transposed} : (tensor<?x64xf32>, tensor<64x128xf32>, tensor<64x128xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @f(%x: tensor<?x64xf32>, %u: tensor<128x64xf32>, %u2: tensor<128x32xf32>, %g: tensor<64x64xf32>, %d: tensor<64x128xf32>, %d2: tensor<128x64xf32>, %b: tensor<64xf32>, %b2: tensor<128xf32>) {
  // expected-error@+1 {{custom op 'moe.mlp' expected string or keyword containing one of the following enum values for attribute 'activation' [gelu, gelu_tanh, relu, silu, swiglu_oai]}}
  %y = moe.mlp %x up %u down %d act swish : (tensor<?x64xf32>, tensor<128x64xf32>, tensor<64x128xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @f(%x: tensor<?x8xf32>, %w: tensor<16x4xf32>) {
  // expected-error@+1 {{'moe.lm_head' op input width 8 does not match the weight [16, 4] ([vocab, hidden])}}
  %y = moe.lm_head %x, %w : tensor<?x8xf32>, tensor<16x4xf32> -> tensor<?x16xf32>
  return
}

// -----

func.func @f(%x: tensor<?x4xf32>, %w: tensor<16x4xf32>) {
  // expected-error@+1 {{'moe.lm_head' op result width 8 (expected 16, the weight's vocab size)}}
  %y = moe.lm_head %x, %w : tensor<?x4xf32>, tensor<16x4xf32> -> tensor<?x8xf32>
  return
}

// -----

func.func @f(%x: tensor<?x4xf32>, %w: tensor<16x4xf32>, %b: tensor<4xf32>) {
  // expected-error@+1 {{'moe.lm_head' op bias has 4 elements (expected 16)}}
  %y = moe.lm_head %x, %w, %b : tensor<?x4xf32>, tensor<16x4xf32>, tensor<4xf32> -> tensor<?x16xf32>
  return
}

// -----

func.func @f(%x: tensor<?x4xf32>, %w: tensor<8x2xf32>) {
  // expected-error@+1 {{'moe.router' op input width 4 does not match the router weight [8, 2] ([num_experts, hidden])}}
  %y = moe.router %x, %w : tensor<?x4xf32>, tensor<8x2xf32> -> tensor<?x8xf32>
  return
}

// -----

func.func @f(%x: tensor<?x4xf32>, %w: tensor<8x4xf32>) {
  // expected-error@+1 {{'moe.router' op result width 4 (expected 8, one logit per expert)}}
  %y = moe.router %x, %w : tensor<?x4xf32>, tensor<8x4xf32> -> tensor<?x4xf32>
  return
}

// -----

func.func @f(%p: tensor<?x8xf32>) {
  // expected-error@+1 {{'moe.top_k' op top_k = 9 exceeds the number of experts 8}}
  %w, %e = moe.top_k %p k 9 : tensor<?x8xf32> -> tensor<?x9xf32>, tensor<?x9xi32>
  return
}

// -----

func.func @f(%p: tensor<?x8xf32>) {
  // expected-error@+1 {{'moe.top_k' op top_k must be at least 1 (got 0)}}
  %w, %e = moe.top_k %p k 0 : tensor<?x8xf32> -> tensor<?x0xf32>, tensor<?x0xi32>
  return
}

// -----

func.func @f(%p: tensor<?x8xf32>) {
  // expected-error@+1 {{'moe.top_k' op values has 1 columns (expected top_k = 2)}}
  %w, %e = moe.top_k %p k 2 : tensor<?x8xf32> -> tensor<?x1xf32>, tensor<?x2xi32>
  return
}

// -----

func.func @f(%p: tensor<5x8xf32>) {
  // expected-error@+1 {{'moe.top_k' op indices has 4 rows (expected one per token, 5)}}
  %w, %e = moe.top_k %p k 2 : tensor<5x8xf32> -> tensor<5x2xf32>, tensor<4x2xi32>
  return
}

// -----

func.func @f(%e: tensor<?x1xi32>, %w: tensor<?x1xf32>) {
  // expected-error@+1 {{'moe.capacity' op capacity factor must be positive}}
  %r, %k = moe.capacity %e, %w experts 8 factor 0.0 min 4 : tensor<?x1xi32>, tensor<?x1xf32> -> tensor<?x1xf32>, tensor<?x1xi1>
  return
}

// -----

func.func @f(%e: tensor<?x1xi32>, %w: tensor<?x1xf32>) {
  // expected-error@+1 {{'moe.capacity' op min capacity must be >= 0 (got -1)}}
  %r, %k = moe.capacity %e, %w experts 8 factor 1.0 min -1 : tensor<?x1xi32>, tensor<?x1xf32> -> tensor<?x1xf32>, tensor<?x1xi1>
  return
}

// -----

func.func @f(%e: tensor<?x1xi32>, %w: tensor<?x1xf32>) {
  // expected-error@+1 {{'moe.capacity' op num_experts must be positive (got 0)}}
  %r, %k = moe.capacity %e, %w experts 0 factor 1.0 min 4 : tensor<?x1xi32>, tensor<?x1xf32> -> tensor<?x1xf32>, tensor<?x1xi1>
  return
}

// -----

func.func @f(%e: tensor<?x1xi32>, %w: tensor<?x1xf32>) {
  // expected-error@+1 {{'moe.capacity' op result has 2 columns (expected top_k = 1)}}
  %r, %k = moe.capacity %e, %w experts 8 factor 1.0 min 4 : tensor<?x1xi32>, tensor<?x1xf32> -> tensor<?x2xf32>, tensor<?x1xi1>
  return
}

// -----

func.func @f(%e: tensor<?x2xi32>) {
  %w = "test.w"() : () -> tensor<?x2xf32>
  // expected-error@+1 {{'moe.capacity' op top_k = 2 exceeds the number of experts 1}}
  %r, %k = moe.capacity %e, %w experts 1 factor 1.0 min 4 : tensor<?x2xi32>, tensor<?x2xf32> -> tensor<?x2xf32>, tensor<?x2xi1>
  return
}

// -----

func.func @f(%e: tensor<?x2xi32>) {
  // expected-error@+1 {{'moe.expert_map' op expert_offsets needs num_experts + 1 >= 2 entries}}
  %o, %s = moe.expert_map %e : tensor<?x2xi32> -> tensor<1xi32>, tensor<?xi32>
  return
}

// -----

func.func @f(%e: tensor<?x2xi32>, %k: tensor<?x1xi1>) {
  // expected-error@+1 {{'moe.expert_map' op admitted is [?, 1] (expected the shape of indices [?, 2])}}
  %o, %s = moe.expert_map %e admitted %k : tensor<?x2xi32>, tensor<?x1xi1> -> tensor<9xi32>, tensor<?xi32>
  return
}

// -----

func.func @f(%e: tensor<?x2xi32>) {
  // expected-error@+1 {{'moe.expert_map' op top_k = 2 exceeds the number of experts 1}}
  %o, %s = moe.expert_map %e : tensor<?x2xi32> -> tensor<2xi32>, tensor<?xi32>
  return
}

// -----

func.func @f(%l: tensor<?x8xf32>) {
  // expected-error@+1 {{'moe.gate' op top_k = 9 exceeds the number of experts 8}}
  %e, %w, %o, %s = moe.gate %l routing <top_k = 9> : tensor<?x8xf32> -> tensor<?x9xi32>, tensor<?x9xf32>, tensor<9xi32>, tensor<?xi32>
  return
}

// -----

func.func @f(%l: tensor<?x8xf32>) {
  // expected-error@+1 {{'moe.gate' op slot_weight has 1 columns (expected top_k = 2)}}
  %e, %w, %o, %s = moe.gate %l routing <top_k = 2> : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x1xf32>, tensor<9xi32>, tensor<?xi32>
  return
}

// -----

func.func @f(%l: tensor<?x8xf32>) {
  // expected-error@+1 {{'moe.gate' op expert_offsets has 8 entries (expected num_experts + 1 = 9)}}
  %e, %w, %o, %s = moe.gate %l routing <top_k = 2> : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>, tensor<8xi32>, tensor<?xi32>
  return
}

// -----

func.func @f(%x: tensor<?x4xf32>, %s: tensor<?xi32>) {
  // expected-error@+1 {{'moe.dispatch' op top_k must be at least 1 (got 0)}}
  %d = moe.dispatch %x, %s top_k 0 : tensor<?x4xf32>, tensor<?xi32> -> tensor<?x4xf32>
  return
}

// -----

func.func @f(%x: tensor<?x4xf32>, %s: tensor<?xi32>) {
  // expected-error@+1 {{'moe.dispatch' op result width 8 (expected 4, rows are copies of input rows)}}
  %d = moe.dispatch %x, %s top_k 1 : tensor<?x4xf32>, tensor<?xi32> -> tensor<?x8xf32>
  return
}

// -----

func.func @f(%x: tensor<?x4xf32>, %off: tensor<3xi32>, %off1: tensor<1xi32>, %u: tensor<2x8x4xf32>, %u1: tensor<1x8x4xf32>, %u2: tensor<2x8x2xf32>, %ux: tensor<8x4xf32>, %d: tensor<2x4x8xf32>, %d1: tensor<1x4x8xf32>, %d2: tensor<2x2x8xf32>, %d3: tensor<3x4x8xf32>, %b: tensor<2x8xf32>, %b1: tensor<1x8xf32>, %b4: tensor<2x4xf32>, %s: tensor<?xi32>) {
  // expected-error@+1 {{'moe.experts' op up weight is [1, 8, 4] (expected [2, 8, 4], [E, I, D])}}
  %y = moe.experts %x, %off top_k 1 act gelu up %u1 : tensor<1x8x4xf32> down %d : tensor<2x4x8xf32> : tensor<?x4xf32>, tensor<3xi32> -> tensor<?x4xf32>
  return
}

// -----

func.func @f(%x: tensor<?x4xf32>, %off: tensor<3xi32>, %off1: tensor<1xi32>, %u: tensor<2x8x4xf32>, %u1: tensor<1x8x4xf32>, %u2: tensor<2x8x2xf32>, %ux: tensor<8x4xf32>, %d: tensor<2x4x8xf32>, %d1: tensor<1x4x8xf32>, %d2: tensor<2x2x8xf32>, %d3: tensor<3x4x8xf32>, %b: tensor<2x8xf32>, %b1: tensor<1x8xf32>, %b4: tensor<2x4xf32>, %s: tensor<?xi32>) {
  // expected-error@+1 {{'moe.experts' op gate weight is [1, 8, 4] (expected [2, 8, 4], [E, I, D])}}
  %y = moe.experts %x, %off top_k 1 act silu up %u : tensor<2x8x4xf32> gate %u1 : tensor<1x8x4xf32> down %d : tensor<2x4x8xf32> : tensor<?x4xf32>, tensor<3xi32> -> tensor<?x4xf32>
  return
}

// -----

func.func @f(%x: tensor<?x4xf32>, %off: tensor<3xi32>, %off1: tensor<1xi32>, %u: tensor<2x8x4xf32>, %u1: tensor<1x8x4xf32>, %u2: tensor<2x8x2xf32>, %ux: tensor<8x4xf32>, %d: tensor<2x4x8xf32>, %d1: tensor<1x4x8xf32>, %d2: tensor<2x2x8xf32>, %d3: tensor<3x4x8xf32>, %b: tensor<2x8xf32>, %b1: tensor<1x8xf32>, %b4: tensor<2x4xf32>, %s: tensor<?xi32>) {
  // expected-error@+1 {{'moe.experts' op down weight is [3, 4, 8] (expected [2, 4, 8], [E, D, I])}}
  %y = moe.experts %x, %off top_k 1 act gelu up %u : tensor<2x8x4xf32> down %d3 : tensor<3x4x8xf32> : tensor<?x4xf32>, tensor<3xi32> -> tensor<?x4xf32>
  return
}

// -----

func.func @f(%x: tensor<?x4xf32>, %off: tensor<3xi32>, %off1: tensor<1xi32>, %u: tensor<2x8x4xf32>, %u1: tensor<1x8x4xf32>, %u2: tensor<2x8x2xf32>, %ux: tensor<8x4xf32>, %d: tensor<2x4x8xf32>, %d1: tensor<1x4x8xf32>, %d2: tensor<2x2x8xf32>, %d3: tensor<3x4x8xf32>, %b: tensor<2x8xf32>, %b1: tensor<1x8xf32>, %b4: tensor<2x4xf32>, %s: tensor<?xi32>) {
  // expected-error@+1 {{'moe.experts' op up bias is [1, 8] (expected [2, 8], [E, I])}}
  %y = moe.experts %x, %off top_k 1 act gelu up %u : tensor<2x8x4xf32> down %d : tensor<2x4x8xf32> up_bias %b1 : tensor<1x8xf32> : tensor<?x4xf32>, tensor<3xi32> -> tensor<?x4xf32>
  return
}

// -----

func.func @f(%x: tensor<?x4xf32>, %off: tensor<3xi32>, %off1: tensor<1xi32>, %u: tensor<2x8x4xf32>, %u1: tensor<1x8x4xf32>, %u2: tensor<2x8x2xf32>, %ux: tensor<8x4xf32>, %d: tensor<2x4x8xf32>, %d1: tensor<1x4x8xf32>, %d2: tensor<2x2x8xf32>, %d3: tensor<3x4x8xf32>, %b: tensor<2x8xf32>, %b1: tensor<1x8xf32>, %b4: tensor<2x4xf32>, %s: tensor<?xi32>) {
  // expected-error@+1 {{'moe.experts' op operand #2 must be 3D statically shaped tensor of f32, bf16 or f16 (expert-stacked matrices)}}
  %y = "moe.experts"(%x, %off, %ux, %d) <{activation = 0 : i32, operandSegmentSizes = array<i32: 1, 1, 1, 0, 1, 0, 0, 0>, top_k = 1 : i64}> : (tensor<?x4xf32>, tensor<3xi32>, tensor<8x4xf32>, tensor<2x4x8xf32>) -> tensor<?x4xf32>
  return
}

// -----

func.func @f(%x: tensor<?x4xf32>, %off: tensor<3xi32>, %off1: tensor<1xi32>, %u: tensor<2x8x4xf32>, %u1: tensor<1x8x4xf32>, %u2: tensor<2x8x2xf32>, %ux: tensor<8x4xf32>, %d: tensor<2x4x8xf32>, %d1: tensor<1x4x8xf32>, %d2: tensor<2x2x8xf32>, %d3: tensor<3x4x8xf32>, %b: tensor<2x8xf32>, %b1: tensor<1x8xf32>, %b4: tensor<2x4xf32>, %s: tensor<?xi32>) {
  // expected-error@+1 {{'moe.experts' op up weight is [2, 8, 2] (expected [2, 8, 4], [E, I, D])}}
  %y = moe.experts %x, %off top_k 1 act gelu up %u2 : tensor<2x8x2xf32> down %d : tensor<2x4x8xf32> : tensor<?x4xf32>, tensor<3xi32> -> tensor<?x4xf32>
  return
}

// -----

func.func @f(%x: tensor<?x4xf32>, %off: tensor<3xi32>, %off1: tensor<1xi32>, %u: tensor<2x8x4xf32>, %u1: tensor<1x8x4xf32>, %u2: tensor<2x8x2xf32>, %ux: tensor<8x4xf32>, %d: tensor<2x4x8xf32>, %d1: tensor<1x4x8xf32>, %d2: tensor<2x2x8xf32>, %d3: tensor<3x4x8xf32>, %b: tensor<2x8xf32>, %b1: tensor<1x8xf32>, %b4: tensor<2x4xf32>, %s: tensor<?xi32>) {
  // expected-error@+1 {{'moe.experts' op down weight is [2, 2, 8] (expected [2, 4, 8], [E, D, I])}}
  %y = moe.experts %x, %off top_k 1 act gelu up %u : tensor<2x8x4xf32> down %d2 : tensor<2x2x8xf32> : tensor<?x4xf32>, tensor<3xi32> -> tensor<?x4xf32>
  return
}

// -----

func.func @f(%x: tensor<?x4xf32>, %off: tensor<3xi32>, %off1: tensor<1xi32>, %u: tensor<2x8x4xf32>, %u1: tensor<1x8x4xf32>, %u2: tensor<2x8x2xf32>, %ux: tensor<8x4xf32>, %d: tensor<2x4x8xf32>, %d1: tensor<1x4x8xf32>, %d2: tensor<2x2x8xf32>, %d3: tensor<3x4x8xf32>, %b: tensor<2x8xf32>, %b1: tensor<1x8xf32>, %b4: tensor<2x4xf32>, %s: tensor<?xi32>) {
  // expected-error@+1 {{'moe.experts' op down bias is [2, 8] (expected [2, 4], [E, D])}}
  %y = moe.experts %x, %off top_k 1 act gelu up %u : tensor<2x8x4xf32> down %d : tensor<2x4x8xf32> down_bias %b : tensor<2x8xf32> : tensor<?x4xf32>, tensor<3xi32> -> tensor<?x4xf32>
  return
}

// -----

func.func @f(%x: tensor<?x4xf32>, %off: tensor<3xi32>, %off1: tensor<1xi32>, %u: tensor<2x8x4xf32>, %u1: tensor<1x8x4xf32>, %u2: tensor<2x8x2xf32>, %ux: tensor<8x4xf32>, %d: tensor<2x4x8xf32>, %d1: tensor<1x4x8xf32>, %d2: tensor<2x2x8xf32>, %d3: tensor<3x4x8xf32>, %b: tensor<2x8xf32>, %b1: tensor<1x8xf32>, %b4: tensor<2x4xf32>, %s: tensor<?xi32>) {
  // expected-error@+1 {{'moe.experts' op top_k = 3 exceeds the number of experts 2}}
  %y = moe.experts %x, %off top_k 3 act gelu up %u : tensor<2x8x4xf32> down %d : tensor<2x4x8xf32> : tensor<?x4xf32>, tensor<3xi32> -> tensor<?x4xf32>
  return
}

// -----

func.func @f(%x: tensor<?x4xf32>, %off: tensor<3xi32>, %off1: tensor<1xi32>, %u: tensor<2x8x4xf32>, %u1: tensor<1x8x4xf32>, %u2: tensor<2x8x2xf32>, %ux: tensor<8x4xf32>, %d: tensor<2x4x8xf32>, %d1: tensor<1x4x8xf32>, %d2: tensor<2x2x8xf32>, %d3: tensor<3x4x8xf32>, %b: tensor<2x8xf32>, %b1: tensor<1x8xf32>, %b4: tensor<2x4xf32>, %s: tensor<?xi32>) {
  // expected-error@+1 {{'moe.experts' op placement lists 3 experts (expected 2)}}
  %y = moe.experts %x, %off top_k 1 act gelu up %u : tensor<2x8x4xf32> down %d : tensor<2x4x8xf32> placement <ranks = 2, experts = [0, 1, 1]> : tensor<?x4xf32>, tensor<3xi32> -> tensor<?x4xf32>
  return
}

// -----

func.func @f(%x: tensor<?x4xf32>, %off: tensor<3xi32>, %u: tensor<2x8x4xf32>, %d: tensor<2x4x8xf32>) {
  // expected-error@+1 {{'moe.experts' op placement slices intermediate size 8 in 3 parts (expected a divisor of it)}}
  %y = moe.experts %x, %off top_k 1 act gelu up %u : tensor<2x8x4xf32> down %d : tensor<2x4x8xf32> placement <ranks = 3, experts = [0, 1, 2, 0, 1, 2], slices = 3> : tensor<?x4xf32>, tensor<3xi32> -> tensor<?x4xf32>
  return
}

// -----

func.func @f(%x: tensor<?x4xf32>, %off: tensor<3xi32>, %off1: tensor<1xi32>, %u: tensor<2x8x4xf32>, %u1: tensor<1x8x4xf32>, %u2: tensor<2x8x2xf32>, %ux: tensor<8x4xf32>, %d: tensor<2x4x8xf32>, %d1: tensor<1x4x8xf32>, %d2: tensor<2x2x8xf32>, %d3: tensor<3x4x8xf32>, %b: tensor<2x8xf32>, %b1: tensor<1x8xf32>, %b4: tensor<2x4xf32>, %s: tensor<?xi32>) {
  // expected-error@+1 {{'moe.experts' op result width 8 (expected 4, the input width)}}
  %y = moe.experts %x, %off top_k 1 act gelu up %u : tensor<2x8x4xf32> down %d : tensor<2x4x8xf32> : tensor<?x4xf32>, tensor<3xi32> -> tensor<?x8xf32>
  return
}

// -----

func.func @f(%x: tensor<?x4xf32>, %off: tensor<3xi32>, %off1: tensor<1xi32>, %u: tensor<2x8x4xf32>, %u1: tensor<1x8x4xf32>, %u2: tensor<2x8x2xf32>, %ux: tensor<8x4xf32>, %d: tensor<2x4x8xf32>, %d1: tensor<1x4x8xf32>, %d2: tensor<2x2x8xf32>, %d3: tensor<3x4x8xf32>, %b: tensor<2x8xf32>, %b1: tensor<1x8xf32>, %b4: tensor<2x4xf32>, %s: tensor<?xi32>) {
  // expected-error@+1 {{'moe.experts' op expert_offsets needs num_experts + 1 >= 2 entries}}
  %y = moe.experts %x, %off1 top_k 1 act gelu up %u1 : tensor<1x8x4xf32> down %d1 : tensor<1x4x8xf32> : tensor<?x4xf32>, tensor<1xi32> -> tensor<?x4xf32>
  return
}

// -----

// The enclosing moe.layer checks that experts agree with the ops around
// them (the moe.experts verifier looks at its own op only).
moe.model @m attributes {architecture = "test", vocab_size = 4, hidden_size = 4, num_layers = 1, max_position_embeddings = 8} {
  moe.param @emb "emb" : tensor<4x4xf32> init normal std 0.02
  moe.param @u "u" : tensor<2x8x4xf32> init normal std 0.02
  moe.param @d "d" : tensor<2x4x8xf32> init normal std 0.02
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x4xf32> {
    %w = moe.weight @emb : tensor<4x4xf32>
    %x = moe.embedding %ids, %w : tensor<?xi32>, tensor<4x4xf32> -> tensor<?x4xf32>
    %y = moe.layer 0 (%h = %x) : tensor<?x4xf32> {
      %off = "test.offsets"() : () -> tensor<3xi32>
      %s = "test.slots"() : () -> tensor<?xi32>
      %u = moe.weight @u : tensor<2x8x4xf32>
      %d = moe.weight @d : tensor<2x4x8xf32>
      %dx = moe.dispatch %h, %s top_k 2 : tensor<?x4xf32>, tensor<?xi32> -> tensor<?x4xf32>
      // expected-error@+1 {{'moe.experts' op has top_k 1 but its input was dispatched with top_k 2}}
      %e = moe.experts %dx, %off top_k 1 act gelu up %u : tensor<2x8x4xf32> down %d : tensor<2x4x8xf32> : tensor<?x4xf32>, tensor<3xi32> -> tensor<?x4xf32>
      moe.yield %e : tensor<?x4xf32>
    }
    %l = moe.lm_head %y, %w tied : tensor<?x4xf32>, tensor<4x4xf32> -> tensor<?x4xf32>
    moe.return %l : tensor<?x4xf32>
  }
}

// -----

func.func @f(%x: tensor<?x4xf32>, %off: tensor<3xi32>, %off1: tensor<1xi32>, %u: tensor<2x8x4xf32>, %u1: tensor<1x8x4xf32>, %u2: tensor<2x8x2xf32>, %ux: tensor<8x4xf32>, %d: tensor<2x4x8xf32>, %d1: tensor<1x4x8xf32>, %d2: tensor<2x2x8xf32>, %d3: tensor<3x4x8xf32>, %b: tensor<2x8xf32>, %b1: tensor<1x8xf32>, %b4: tensor<2x4xf32>, %s: tensor<?xi32>) {
  // expected-error@+1 {{unknown activation 'swiglu' (expected gelu, gelu_tanh, relu, silu or swiglu_oai)}}
  %y = moe.experts %x, %off top_k 1 act swiglu up %u : tensor<2x8x4xf32> down %d : tensor<2x4x8xf32> : tensor<?x4xf32>, tensor<3xi32> -> tensor<?x4xf32>
  return
}

// -----

func.func @f(%x: tensor<?x4xf32>, %off: tensor<3xi32>, %off1: tensor<1xi32>, %u: tensor<2x8x4xf32>, %u1: tensor<1x8x4xf32>, %u2: tensor<2x8x2xf32>, %ux: tensor<8x4xf32>, %d: tensor<2x4x8xf32>, %d1: tensor<1x4x8xf32>, %d2: tensor<2x2x8xf32>, %d3: tensor<3x4x8xf32>, %b: tensor<2x8xf32>, %b1: tensor<1x8xf32>, %b4: tensor<2x4xf32>, %s: tensor<?xi32>) {
  // expected-error@+1 {{expected 'up %w : type' and 'down %w : type' stacked weights}}
  %y = moe.experts %x, %off top_k 1 act gelu up %u : tensor<2x8x4xf32> : tensor<?x4xf32>, tensor<3xi32> -> tensor<?x4xf32>
  return
}

// -----

func.func @f(%y: tensor<?x4xf32>, %s: tensor<?xi32>, %w: tensor<?x?xf32>) {
  // expected-error@+1 {{'moe.combine' op slot_weight must have a static top_k dimension}}
  %c = moe.combine %y, %s, %w : tensor<?x4xf32>, tensor<?xi32>, tensor<?x?xf32> -> tensor<?x4xf32>
  return
}

// -----

func.func @f(%y: tensor<?x4xf32>, %s: tensor<?xi32>, %w: tensor<?x2xf32>) {
  // expected-error@+1 {{'moe.combine' op result width 8 (expected 4, the expert output width)}}
  %c = moe.combine %y, %s, %w : tensor<?x4xf32>, tensor<?xi32>, tensor<?x2xf32> -> tensor<?x8xf32>
  return
}

// -----

func.func @f(%y: tensor<?x4xf32>, %g: tensor<?x2xf32>) {
  // expected-error@+1 {{'moe.sigmoid_gate' op gate_logit width 2 (expected 1, one gate logit per token)}}
  %s = moe.sigmoid_gate %y, %g : tensor<?x4xf32>, tensor<?x2xf32>
  return
}

// -----

func.func @f(%a: tensor<?x4xf32>, %b: tensor<?x4xf32>, %c: tensor<?x3xf32>) {
  // expected-error@+1 {{'moe.residual_mix' op coef_logits width 3 (expected 2, two mixing logits per token: MoE and dense MLP)}}
  %m = moe.residual_mix %a, %b, %c : tensor<?x4xf32>, tensor<?x3xf32>
  return
}

// -----

func.func @f(%d: tensor<?x2xf32>, %off: tensor<3xi32>) {
  // expected-error@+1 {{'moe.all_to_all' op grid axis -1 is negative}}
  %r = moe.all_to_all dispatch %d, %off on @devices axes [-1] placement <ranks = 2, experts = [0, 1]> : tensor<?x2xf32>, tensor<3xi32>
  return
}

// -----

func.func @f(%d: tensor<?x2xf32>, %off: tensor<3xi32>) {
  // expected-error@+1 {{'moe.all_to_all' op grid axis 1 appears twice (expected distinct axes)}}
  %r = moe.all_to_all dispatch %d, %off on @devices axes [1, 1] placement <ranks = 2, experts = [0, 1]> : tensor<?x2xf32>, tensor<3xi32>
  return
}

// -----

func.func @f(%d: tensor<?x2xf32>, %off: tensor<3xi32>) {
  // expected-error@+1 {{'moe.all_to_all' op placement lists 3 experts (expected 2 from expert_offsets)}}
  %r = moe.all_to_all dispatch %d, %off on @devices axes [0] placement <ranks = 2, experts = [0, 1, 1]> : tensor<?x2xf32>, tensor<3xi32>
  return
}

// -----

moe.model @m attributes {architecture = "test", vocab_size = 4, hidden_size = 2, num_layers = 1, max_position_embeddings = 8} {
  shard.grid @devices(shape = 1x2)
  moe.param @emb "emb" : tensor<4x2xf32> init normal std 0.02
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x4xf32> {
    %w = moe.weight @emb : tensor<4x2xf32>
    %x = moe.embedding %ids, %w : tensor<?xi32>, tensor<4x2xf32> -> tensor<?x2xf32>
    %y = moe.layer 0 (%h = %x) : tensor<?x2xf32> {
      %off = "test.offsets"() : () -> tensor<3xi32>
      // expected-error@+1 {{'moe.all_to_all' op @nowhere does not name a shard.grid of the enclosing moe.model}}
      %r = moe.all_to_all dispatch %h, %off on @nowhere axes [0] placement <ranks = 2, experts = [0, 1]> : tensor<?x2xf32>, tensor<3xi32>
      moe.yield %h : tensor<?x2xf32>
    }
    %l = moe.lm_head %y, %w tied : tensor<?x2xf32>, tensor<4x2xf32> -> tensor<?x4xf32>
    moe.return %l : tensor<?x4xf32>
  }
}

// -----

moe.model @m attributes {architecture = "test", vocab_size = 4, hidden_size = 2, num_layers = 1, max_position_embeddings = 8} {
  shard.grid @devices(shape = 1x2)
  moe.param @emb "emb" : tensor<4x2xf32> init normal std 0.02
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x4xf32> {
    %w = moe.weight @emb : tensor<4x2xf32>
    %x = moe.embedding %ids, %w : tensor<?xi32>, tensor<4x2xf32> -> tensor<?x2xf32>
    %y = moe.layer 0 (%h = %x) : tensor<?x2xf32> {
      %off = "test.offsets"() : () -> tensor<3xi32>
      // expected-error@+1 {{'moe.all_to_all' op grid axis 2 is out of range for @devices with 2 axes}}
      %r = moe.all_to_all dispatch %h, %off on @devices axes [2] placement <ranks = 2, experts = [0, 1]> : tensor<?x2xf32>, tensor<3xi32>
      moe.yield %h : tensor<?x2xf32>
    }
    %l = moe.lm_head %y, %w tied : tensor<?x2xf32>, tensor<4x2xf32> -> tensor<?x4xf32>
    moe.return %l : tensor<?x4xf32>
  }
}

// -----

moe.model @m attributes {architecture = "test", vocab_size = 4, hidden_size = 2, num_layers = 1, max_position_embeddings = 8} {
  shard.grid @devices(shape = 1x2)
  moe.param @emb "emb" : tensor<4x2xf32> init normal std 0.02
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x4xf32> {
    %w = moe.weight @emb : tensor<4x2xf32>
    %x = moe.embedding %ids, %w : tensor<?xi32>, tensor<4x2xf32> -> tensor<?x2xf32>
    %y = moe.layer 0 (%h = %x) : tensor<?x2xf32> {
      %off = "test.offsets"() : () -> tensor<3xi32>
      // expected-error@+1 {{'moe.all_to_all' op placement spans 4 ranks (expected the 2 ranks of grid @devices)}}
      %r = moe.all_to_all combine %h, %off on @devices axes [0, 1] placement <ranks = 4, experts = [0, 3]> : tensor<?x2xf32>, tensor<3xi32>
      moe.yield %h : tensor<?x2xf32>
    }
    %l = moe.lm_head %y, %w tied : tensor<?x2xf32>, tensor<4x2xf32> -> tensor<?x4xf32>
    moe.return %l : tensor<?x4xf32>
  }
}

// -----

moe.model @m attributes {architecture = "test", vocab_size = 4, hidden_size = 4, num_layers = 1, max_position_embeddings = 8} {
  shard.grid @devices(shape = 2)
  moe.param @emb "emb" : tensor<4x4xf32> init normal std 0.02
  moe.param @u "u" : tensor<2x8x4xf32> init normal std 0.02
  moe.param @d "d" : tensor<2x4x8xf32> init normal std 0.02
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x4xf32> {
    %w = moe.weight @emb : tensor<4x4xf32>
    %x = moe.embedding %ids, %w : tensor<?xi32>, tensor<4x4xf32> -> tensor<?x4xf32>
    %y = moe.layer 0 (%h = %x) : tensor<?x4xf32> {
      %off = "test.offsets"() : () -> tensor<3xi32>
      %s = "test.slots"() : () -> tensor<?xi32>
      %u = moe.weight @u : tensor<2x8x4xf32>
      %d = moe.weight @d : tensor<2x4x8xf32>
      %in = moe.all_to_all dispatch %h, %off on @devices axes [0] placement <ranks = 2, experts = [0, 1]> : tensor<?x4xf32>, tensor<3xi32>
      // expected-error@+1 {{'moe.experts' op placement #moe.placement<ranks = 2, experts = [1, 0]> differs from the placement #moe.placement<ranks = 2, experts = [0, 1]> of the exchange of its input (expected one placement for a layer's experts and exchanges)}}
      %e = moe.experts %in, %off top_k 1 act gelu up %u : tensor<2x8x4xf32> down %d : tensor<2x4x8xf32> placement <ranks = 2, experts = [1, 0]> : tensor<?x4xf32>, tensor<3xi32> -> tensor<?x4xf32>
      moe.yield %e : tensor<?x4xf32>
    }
    %l = moe.lm_head %y, %w tied : tensor<?x4xf32>, tensor<4x4xf32> -> tensor<?x4xf32>
    moe.return %l : tensor<?x4xf32>
  }
}

// -----

moe.model @m attributes {architecture = "test", vocab_size = 4, hidden_size = 4, num_layers = 1, max_position_embeddings = 8} {
  shard.grid @devices(shape = 2)
  moe.param @emb "emb" : tensor<4x4xf32> init normal std 0.02
  moe.param @u "u" : tensor<2x8x4xf32> init normal std 0.02
  moe.param @d "d" : tensor<2x4x8xf32> init normal std 0.02
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x4xf32> {
    %w = moe.weight @emb : tensor<4x4xf32>
    %x = moe.embedding %ids, %w : tensor<?xi32>, tensor<4x4xf32> -> tensor<?x4xf32>
    %y = moe.layer 0 (%h = %x) : tensor<?x4xf32> {
      %off = "test.offsets"() : () -> tensor<3xi32>
      %s = "test.slots"() : () -> tensor<?xi32>
      %u = moe.weight @u : tensor<2x8x4xf32>
      %d = moe.weight @d : tensor<2x4x8xf32>
      // expected-error@+1 {{'moe.experts' op placement (none) differs from the placement #moe.placement<ranks = 2, experts = [0, 1]> of the exchange of its output (expected one placement for a layer's experts and exchanges)}}
      %e = moe.experts %h, %off top_k 1 act gelu up %u : tensor<2x8x4xf32> down %d : tensor<2x4x8xf32> : tensor<?x4xf32>, tensor<3xi32> -> tensor<?x4xf32>
      %a = moe.all_to_all combine %e, %off on @devices axes [0] placement <ranks = 2, experts = [0, 1]> : tensor<?x4xf32>, tensor<3xi32>
      moe.yield %a : tensor<?x4xf32>
    }
    %l = moe.lm_head %y, %w tied : tensor<?x4xf32>, tensor<4x4xf32> -> tensor<?x4xf32>
    moe.return %l : tensor<?x4xf32>
  }
}

// -----

// The dialect attributes the passes record are verified where they appear.
func.func @f(%x: tensor<?x4xf32>) {
  // expected-error@+1 {{'moe.add' op attribute 'moe.on_demand' belongs on a moe.experts}}
  %y = moe.add %x, %x {moe.on_demand} : tensor<?x4xf32>
  return
}

// -----

func.func @f(%x: tensor<?x4xf32>) {
  // expected-error@+1 {{'moe.add' op attribute 'moe.slices' must hold (buffer, column, width) for each of the 1 results}}
  %y = moe.add %x, %x {moe.slices = array<i64: 0, 0>} : tensor<?x4xf32>
  return
}

// -----

func.func @f(%x: tensor<?x4xf32>) {
  // expected-error@+1 {{'moe.add' op attribute 'moe.slices' has result 0 at buffer 1, column 4, width 0 (expected buffer, column >= 0 and width >= 1)}}
  %y = moe.add %x, %x {moe.slices = array<i64: 1, 4, 0>} : tensor<?x4xf32>
  return
}

// -----

func.func @f(%x: tensor<?x4xf32>) {
  // expected-error@+1 {{'moe.add' op has unknown moe attribute 'moe.arena_offsets' (expected moe.buffers, moe.slices, moe.scratch, moe.memory, moe.peak_bytes, moe.streaming, moe.on_demand, moe.prefetch_distance, moe.decode_graph, moe.tensor_parallel, moe.data_parallel or moe.tensor_slice)}}
  %y = moe.add %x, %x {moe.arena_offsets = array<i64: 0>} : tensor<?x4xf32>
  return
}

// -----

// expected-error@+1 {{'func.func' op attribute 'moe.data_parallel' belongs on a moe.model}}
func.func @f() attributes {moe.data_parallel = 2 : i64} {
  return
}

// -----

func.func @f(%x: tensor<?x4xf32>) {
  // expected-error@+1 {{'moe.add' op attribute 'moe.scratch' belongs on a moe.mlp or moe.all_to_all}}
  %y = moe.add %x, %x {moe.scratch = array<i64: 1, 2, 3, 4, 5>} : tensor<?x4xf32>
  return
}

// -----

// expected-error@+1 {{'func.func' op attribute 'moe.memory' belongs on a moe.model}}
func.func @f() attributes {moe.memory = {arena_bytes = 0 : i64}} {
  return
}

// -----

// expected-error@+1 {{'moe.model' op attribute 'moe.memory' needs a non-negative integer 'kv_cache_bytes'}}
moe.model @m attributes {architecture = "test", vocab_size = 4, hidden_size = 2, num_layers = 1, max_position_embeddings = 8, moe.memory = {arena_bytes = 64 : i64}} {
  moe.param @emb "emb" : tensor<4x2xf32> init normal std 0.02
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x4xf32> {
    %w = moe.weight @emb : tensor<4x2xf32>
    %x = moe.embedding %ids, %w : tensor<?xi32>, tensor<4x2xf32> -> tensor<?x2xf32>
    %y = moe.layer 0 (%h = %x) : tensor<?x2xf32> {
      moe.yield %h : tensor<?x2xf32>
    }
    %l = moe.lm_head %y, %w tied : tensor<?x2xf32>, tensor<4x2xf32> -> tensor<?x4xf32>
    moe.return %l : tensor<?x4xf32>
  }
}

// -----

// expected-error@+1 {{'moe.model' op attribute 'moe.peak_bytes' must list non-negative bytes per rank}}
moe.model @m attributes {architecture = "test", vocab_size = 4, hidden_size = 2, num_layers = 1, max_position_embeddings = 8, moe.peak_bytes = array<i64: -1>} {
  moe.param @emb "emb" : tensor<4x2xf32> init normal std 0.02
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x4xf32> {
    %w = moe.weight @emb : tensor<4x2xf32>
    %x = moe.embedding %ids, %w : tensor<?xi32>, tensor<4x2xf32> -> tensor<?x2xf32>
    %y = moe.layer 0 (%h = %x) : tensor<?x2xf32> {
      moe.yield %h : tensor<?x2xf32>
    }
    %l = moe.lm_head %y, %w tied : tensor<?x2xf32>, tensor<4x2xf32> -> tensor<?x4xf32>
    moe.return %l : tensor<?x4xf32>
  }
}

// -----

// expected-error@+1 {{'moe.model' op attribute 'moe.buffers' must be an array of #moe.buffer}}
moe.model @m attributes {architecture = "test", vocab_size = 4, hidden_size = 2, num_layers = 1, max_position_embeddings = 8, moe.buffers = [1 : i64]} {
  moe.param @emb "emb" : tensor<4x2xf32> init normal std 0.02
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x4xf32> {
    %w = moe.weight @emb : tensor<4x2xf32>
    %x = moe.embedding %ids, %w : tensor<?xi32>, tensor<4x2xf32> -> tensor<?x2xf32>
    %y = moe.layer 0 (%h = %x) : tensor<?x2xf32> {
      moe.yield %h : tensor<?x2xf32>
    }
    %l = moe.lm_head %y, %w tied : tensor<?x2xf32>, tensor<4x2xf32> -> tensor<?x4xf32>
    moe.return %l : tensor<?x4xf32>
  }
}

// -----

// expected-error@+1 {{buffer 'b' at offset 32 (expected a non-negative multiple of 64)}}
moe.model @m attributes {architecture = "test", vocab_size = 4, hidden_size = 2, num_layers = 1, max_position_embeddings = 8, moe.buffers = [#moe.buffer<name = "b", type = f32, row_elems = 4, rows_per_token = 1, fixed_rows = 0, offset = 32, first = 0, last = 1>]} {
  moe.param @emb "emb" : tensor<4x2xf32> init normal std 0.02
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x4xf32> {
    %w = moe.weight @emb : tensor<4x2xf32>
    %x = moe.embedding %ids, %w : tensor<?xi32>, tensor<4x2xf32> -> tensor<?x2xf32>
    %y = moe.layer 0 (%h = %x) : tensor<?x2xf32> {
      moe.yield %h : tensor<?x2xf32>
    }
    %l = moe.lm_head %y, %w tied : tensor<?x2xf32>, tensor<4x2xf32> -> tensor<?x4xf32>
    moe.return %l : tensor<?x4xf32>
  }
}

// -----

// expected-error@+1 {{buffer 'b' has type 'f64' (expected f32, bf16, f16, i32 or i64)}}
moe.model @m attributes {architecture = "test", vocab_size = 4, hidden_size = 2, num_layers = 1, max_position_embeddings = 8, moe.buffers = [#moe.buffer<name = "b", type = f64, row_elems = 4, rows_per_token = 1, fixed_rows = 0, offset = 0, first = 0, last = 1>]} {
  moe.param @emb "emb" : tensor<4x2xf32> init normal std 0.02
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x4xf32> {
    %w = moe.weight @emb : tensor<4x2xf32>
    %x = moe.embedding %ids, %w : tensor<?xi32>, tensor<4x2xf32> -> tensor<?x2xf32>
    %y = moe.layer 0 (%h = %x) : tensor<?x2xf32> {
      moe.yield %h : tensor<?x2xf32>
    }
    %l = moe.lm_head %y, %w tied : tensor<?x2xf32>, tensor<4x2xf32> -> tensor<?x4xf32>
    moe.return %l : tensor<?x4xf32>
  }
}

// -----

// expected-error@+1 {{'moe.model' op attribute 'moe.streaming' has 5 fields (expected budget_bytes, peak_bytes, streamed_weight_bytes, unstreamed_bytes)}}
moe.model @m attributes {architecture = "test", vocab_size = 4, hidden_size = 2, num_layers = 1, max_position_embeddings = 8, moe.streaming = {budget_bytes = 1 : i64, peak_bytes = 1 : i64, streamed_weight_bytes = 0 : i64, unstreamed_bytes = 2 : i64, extra = 0 : i64}} {
  moe.param @emb "emb" : tensor<4x2xf32> init normal std 0.02
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x4xf32> {
    %w = moe.weight @emb : tensor<4x2xf32>
    %x = moe.embedding %ids, %w : tensor<?xi32>, tensor<4x2xf32> -> tensor<?x2xf32>
    %y = moe.layer 0 (%h = %x) : tensor<?x2xf32> {
      moe.yield %h : tensor<?x2xf32>
    }
    %l = moe.lm_head %y, %w tied : tensor<?x2xf32>, tensor<4x2xf32> -> tensor<?x4xf32>
    moe.return %l : tensor<?x4xf32>
  }
}

// -----

moe.model @m attributes {architecture = "test", vocab_size = 4, hidden_size = 2, num_layers = 1, max_position_embeddings = 8} {
  moe.param @emb "emb" : tensor<4x2xf32> init normal std 0.02
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x4xf32> {
    %w = moe.weight @emb : tensor<4x2xf32>
    %x = moe.embedding %ids, %w : tensor<?xi32>, tensor<4x2xf32> -> tensor<?x2xf32>
    // expected-error@+1 {{'moe.layer' op attribute 'moe.prefetch_distance' must be a layer count >= 0}}
    %y = moe.layer 0 (%h = %x) : tensor<?x2xf32> attributes {moe.prefetch_distance = -1 : i64} {
      moe.yield %h : tensor<?x2xf32>
    }
    %l = moe.lm_head %y, %w tied : tensor<?x2xf32>, tensor<4x2xf32> -> tensor<?x4xf32>
    moe.return %l : tensor<?x4xf32>
  }
}

// -----

moe.model @m attributes {architecture = "test", vocab_size = 4, hidden_size = 2, num_layers = 1, max_position_embeddings = 8} {
  moe.param @emb "emb" : tensor<4x2xf32> init normal std 0.02
  // expected-error@+1 {{'moe.graph' op attribute 'moe.decode_graph' must be a unit attribute}}
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x4xf32> attributes {moe.decode_graph = 1 : i64} {
    %w = moe.weight @emb : tensor<4x2xf32>
    %x = moe.embedding %ids, %w : tensor<?xi32>, tensor<4x2xf32> -> tensor<?x2xf32>
    %y = moe.layer 0 (%h = %x) : tensor<?x2xf32> {
      moe.yield %h : tensor<?x2xf32>
    }
    %l = moe.lm_head %y, %w tied : tensor<?x2xf32>, tensor<4x2xf32> -> tensor<?x4xf32>
    moe.return %l : tensor<?x4xf32>
  }
}

// -----

moe.model @m attributes {architecture = "test", vocab_size = 4, hidden_size = 2, num_layers = 0, max_position_embeddings = 8} {
  moe.param @emb "emb" : tensor<4x2xf32> init normal std 0.02
  // expected-error@+1 {{'moe.param' op has a source but type 'tensor<4xf32>' is not expert-stacked (expected [E, N, K] or [E, N])}}
  moe.param @u "u.{e}" : tensor<4xf32> source <tensor = "u.{e}"> init ones
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x4xf32> {
    %w = moe.weight @emb : tensor<4x2xf32>
    %x = moe.embedding %ids, %w : tensor<?xi32>, tensor<4x2xf32> -> tensor<?x2xf32>
    %l = moe.lm_head %x, %w tied : tensor<?x2xf32>, tensor<4x2xf32> -> tensor<?x4xf32>
    moe.return %l : tensor<?x4xf32>
  }
}

// -----

moe.model @m attributes {architecture = "test", vocab_size = 4, hidden_size = 2, num_layers = 0, max_position_embeddings = 8} {
  moe.param @emb "emb" : tensor<4x2xf32> init normal std 0.02
  // expected-error@+1 {{'moe.param' op has the per-expert source 'e.{e}.up' (expected its name 'u')}}
  moe.param @u "u" : tensor<2x8x4xf32> source <tensor = "e.{e}.up"> init ones
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x4xf32> {
    %w = moe.weight @emb : tensor<4x2xf32>
    %x = moe.embedding %ids, %w : tensor<?xi32>, tensor<4x2xf32> -> tensor<?x2xf32>
    %l = moe.lm_head %x, %w tied : tensor<?x2xf32>, tensor<4x2xf32> -> tensor<?x4xf32>
    moe.return %l : tensor<?x4xf32>
  }
}

// -----

moe.model @m attributes {architecture = "test", vocab_size = 4, hidden_size = 2, num_layers = 0, max_position_embeddings = 8} {
  moe.param @emb "emb" : tensor<4x2xf32> init normal std 0.02
  // expected-error@+1 {{'moe.param' op has a transposed source but type 'tensor<2x8xf32>' is not a stacked matrix (expected [E, N, K])}}
  moe.param @b "b" : tensor<2x8xf32> source <tensor = "gate_up_proj_bias", transposed = true> init zeros
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x4xf32> {
    %w = moe.weight @emb : tensor<4x2xf32>
    %x = moe.embedding %ids, %w : tensor<?xi32>, tensor<4x2xf32> -> tensor<?x2xf32>
    %l = moe.lm_head %x, %w tied : tensor<?x2xf32>, tensor<4x2xf32> -> tensor<?x4xf32>
    moe.return %l : tensor<?x4xf32>
  }
}

// -----

moe.model @m attributes {architecture = "test", vocab_size = 4, hidden_size = 2, num_layers = 0, max_position_embeddings = 8} {
  moe.param @emb "emb" : tensor<4x2xf32> init normal std 0.02
  // expected-error@+1 {{source pattern 'e.{e}.{e}' has {e} twice (expected once)}}
  moe.param @u "e.{e}.{e}" : tensor<2x8x4xf32> source <tensor = "e.{e}.{e}"> init ones
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x4xf32> {
    %w = moe.weight @emb : tensor<4x2xf32>
    %x = moe.embedding %ids, %w : tensor<?xi32>, tensor<4x2xf32> -> tensor<?x2xf32>
    %l = moe.lm_head %x, %w tied : tensor<?x2xf32>, tensor<4x2xf32> -> tensor<?x4xf32>
    moe.return %l : tensor<?x4xf32>
  }
}

// -----

moe.model @m attributes {architecture = "test", vocab_size = 4, hidden_size = 2, num_layers = 0, max_position_embeddings = 8} {
  moe.param @emb "emb" : tensor<4x2xf32> init normal std 0.02
  // expected-error@+1 {{source pattern 'e.{e}' names per-expert tensors (expected no offset, stride or transposed)}}
  moe.param @u "e.{e}" : tensor<2x8x4xf32> source <tensor = "e.{e}", offset = 4> init ones
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x4xf32> {
    %w = moe.weight @emb : tensor<4x2xf32>
    %x = moe.embedding %ids, %w : tensor<?xi32>, tensor<4x2xf32> -> tensor<?x2xf32>
    %l = moe.lm_head %x, %w tied : tensor<?x2xf32>, tensor<4x2xf32> -> tensor<?x4xf32>
    moe.return %l : tensor<?x4xf32>
  }
}

// -----

moe.model @m attributes {architecture = "test", vocab_size = 4, hidden_size = 2, num_layers = 0, max_position_embeddings = 8} {
  moe.param @emb "emb" : tensor<4x2xf32> init normal std 0.02
  // expected-error@+1 {{source 'gate_up_proj' has offset -1 and stride 0 (expected offset >= 0 and stride >= 1)}}
  moe.param @u "u" : tensor<2x8x4xf32> source <tensor = "gate_up_proj", offset = -1, stride = 0> init ones
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x4xf32> {
    %w = moe.weight @emb : tensor<4x2xf32>
    %x = moe.embedding %ids, %w : tensor<?xi32>, tensor<4x2xf32> -> tensor<?x2xf32>
    %l = moe.lm_head %x, %w tied : tensor<?x2xf32>, tensor<4x2xf32> -> tensor<?x4xf32>
    moe.return %l : tensor<?x4xf32>
  }
}

// -----

func.func @f(%q: tensor<?x8xf32>, %k: tensor<?x4xf32>, %s: tensor<2xf32>) {
  // expected-error@+1 {{'moe.attention' op sinks has 2 elements (expected 4)}}
  %a = moe.attention %q, %k, %k heads 4 kv_heads 2 head_dim 2 scale 1.0 layer 0 causal sinks %s : tensor<2xf32> : tensor<?x8xf32>, tensor<?x4xf32>, tensor<?x4xf32> -> tensor<?x8xf32>
  return
}

// -----

func.func @f(%h: tensor<?x8xf32>, %w: tensor<2x8xf32>, %b: tensor<3xf32>) {
  // expected-error@+1 {{'moe.router' op bias has 3 elements (expected 2)}}
  %l = moe.router %h, %w bias %b : tensor<?x8xf32>, tensor<2x8xf32>, tensor<3xf32> -> tensor<?x2xf32>
  return
}

// -----

func.func @f(%x: tensor<?x4xf32>, %off: tensor<3xi32>, %u: tensor<2x8x4xf32>, %d: tensor<2x4x8xf32>, %b: tensor<2x8xf32>, %b1: tensor<2x4xf32>) {
  // expected-error@+1 {{'moe.experts' op gate bias is [2, 4] (expected [2, 8], [E, I])}}
  %y = moe.experts %x, %off top_k 1 act silu up %u : tensor<2x8x4xf32> gate %u : tensor<2x8x4xf32> down %d : tensor<2x4x8xf32> gate_bias %b1 : tensor<2x4xf32> : tensor<?x4xf32>, tensor<3xi32> -> tensor<?x4xf32>
  return
}

// -----

func.func @f(%x: tensor<?x4xf32>, %off: tensor<3xi32>, %u: tensor<2x8x4xf32>, %d: tensor<2x4x8xf32>, %b: tensor<2x8xf32>) {
  // expected-error@+1 {{'moe.experts' op gate bias without a gate weight (expected gated experts)}}
  %y = moe.experts %x, %off top_k 1 act gelu up %u : tensor<2x8x4xf32> down %d : tensor<2x4x8xf32> gate_bias %b : tensor<2x8xf32> : tensor<?x4xf32>, tensor<3xi32> -> tensor<?x4xf32>
  return
}

// -----

func.func @f(%x: tensor<?x4xf32>, %off: tensor<3xi32>, %u: tensor<2x8x4xf32>, %d: tensor<2x4x8xf32>) {
  // expected-error@+1 {{'moe.experts' op activation swiglu_oai needs a gate weight}}
  %y = moe.experts %x, %off top_k 1 act swiglu_oai limit 7.0 alpha 1.702 up %u : tensor<2x8x4xf32> down %d : tensor<2x4x8xf32> : tensor<?x4xf32>, tensor<3xi32> -> tensor<?x4xf32>
  return
}

// -----

func.func @f(%x: tensor<?x4xf32>, %off: tensor<3xi32>, %u: tensor<2x8x4xf32>, %d: tensor<2x4x8xf32>) {
  // expected-error@+1 {{'moe.experts' op swiglu_limit and swiglu_alpha are required with activation swiglu_oai and only with it (got swiglu_oai)}}
  %y = moe.experts %x, %off top_k 1 act swiglu_oai limit 7.0 up %u : tensor<2x8x4xf32> gate %u : tensor<2x8x4xf32> down %d : tensor<2x4x8xf32> : tensor<?x4xf32>, tensor<3xi32> -> tensor<?x4xf32>
  return
}

// -----

func.func @f(%x: tensor<?x4xf32>, %off: tensor<3xi32>, %u: tensor<2x8x4xf32>, %d: tensor<2x4x8xf32>) {
  // expected-error@+1 {{'moe.experts' op swiglu_limit and swiglu_alpha are required with activation swiglu_oai and only with it (got silu)}}
  %y = moe.experts %x, %off top_k 1 act silu limit 7.0 alpha 1.702 up %u : tensor<2x8x4xf32> gate %u : tensor<2x8x4xf32> down %d : tensor<2x4x8xf32> : tensor<?x4xf32>, tensor<3xi32> -> tensor<?x4xf32>
  return
}

// -----

func.func @f(%x: tensor<?x4xf32>, %off: tensor<3xi32>, %u: tensor<2x8x4xf32>, %d: tensor<2x4x8xf32>) {
  // expected-error@+1 {{'moe.experts' op swiglu_limit -1.000000e+00 is not a positive finite clamp}}
  %y = moe.experts %x, %off top_k 1 act swiglu_oai limit -1.0 alpha 1.702 up %u : tensor<2x8x4xf32> gate %u : tensor<2x8x4xf32> down %d : tensor<2x4x8xf32> : tensor<?x4xf32>, tensor<3xi32> -> tensor<?x4xf32>
  return
}

// -----

func.func @f(%x: tensor<?x4xf32>, %u: tensor<8x4xf32>, %d: tensor<4x8xf32>) {
  // expected-error@+1 {{'moe.mlp' op activation swiglu_oai is for moe.experts only (its clamp parameters live there)}}
  %y = moe.mlp %x up %u gate %u down %d act swiglu_oai : (tensor<?x4xf32>, tensor<8x4xf32>, tensor<8x4xf32>, tensor<4x8xf32>) -> tensor<?x4xf32>
  return
}

// -----

// DeepSeek-V3's routing parameters, MLA's rope offset, value width and
// gathered columns.
func.func @f(%l: tensor<?x8xf32>) {
  // expected-error@+1 {{n_group must be at least 1 (got 0)}}
  %e, %w, %o, %s = moe.gate %l routing <top_k = 1, n_group = 0> : tensor<?x8xf32> -> tensor<?x1xi32>, tensor<?x1xf32>, tensor<9xi32>, tensor<?xi32>
  return
}

// -----

func.func @f(%l: tensor<?x8xf32>) {
  // expected-error@+1 {{topk_group must be in [1, n_group = 2] (got 3)}}
  %e, %w, %o, %s = moe.gate %l routing <top_k = 1, n_group = 2, topk_group = 3> : tensor<?x8xf32> -> tensor<?x1xi32>, tensor<?x1xf32>, tensor<9xi32>, tensor<?xi32>
  return
}

// -----

func.func @f(%l: tensor<?x8xf32>) {
  // expected-error@+1 {{n_group > 1 needs score_before_topk (expected the groups to rank scores, not logits)}}
  %e, %w, %o, %s = moe.gate %l routing <top_k = 1, score_before_topk = false, n_group = 2> : tensor<?x8xf32> -> tensor<?x1xi32>, tensor<?x1xf32>, tensor<9xi32>, tensor<?xi32>
  return
}

// -----

func.func @f(%l: tensor<?x8xf32>) {
  // expected-error@+1 {{routed_scaling_factor must be a finite number > 0 (got 0.000000e+00)}}
  %e, %w, %o, %s = moe.gate %l routing <top_k = 1, routed_scaling_factor = 0.0> : tensor<?x8xf32> -> tensor<?x1xi32>, tensor<?x1xf32>, tensor<9xi32>, tensor<?xi32>
  return
}

// -----

func.func @f(%l: tensor<?x6xf32>) {
  // expected-error@+1 {{'moe.gate' op n_group 4 does not split the 6 experts into equal groups of at least 2 (a group scores its two best experts)}}
  %e, %w, %o, %s = moe.gate %l routing <top_k = 1, n_group = 4> : tensor<?x6xf32> -> tensor<?x1xi32>, tensor<?x1xf32>, tensor<7xi32>, tensor<?xi32>
  return
}

// -----

func.func @f(%l: tensor<?x8xf32>) {
  // expected-error@+1 {{'moe.gate' op top_k = 3 exceeds the 2 experts of the topk_group = 1 kept groups}}
  %e, %w, %o, %s = moe.gate %l routing <top_k = 3, n_group = 4, topk_group = 1> : tensor<?x8xf32> -> tensor<?x3xi32>, tensor<?x3xf32>, tensor<9xi32>, tensor<?xi32>
  return
}

// -----

func.func @f(%l: tensor<?x8xf32>, %b: tensor<4xf32>) {
  // expected-error@+1 {{'moe.gate' op selection_bias has 4 elements (expected 8)}}
  %e, %w, %o, %s = moe.gate %l bias %b : tensor<4xf32> routing <top_k = 1> : tensor<?x8xf32> -> tensor<?x1xi32>, tensor<?x1xf32>, tensor<9xi32>, tensor<?xi32>
  return
}

// -----

func.func @f(%l: tensor<?x8xf32>, %b: tensor<8xf32>) {
  // expected-error@+1 {{'moe.gate' op selection_bias needs score_before_topk (expected a bias on the scores that top-k ranks)}}
  %e, %w, %o, %s = moe.gate %l bias %b : tensor<8xf32> routing <top_k = 1, score_before_topk = false> : tensor<?x8xf32> -> tensor<?x1xi32>, tensor<?x1xf32>, tensor<9xi32>, tensor<?xi32>
  return
}

// -----

func.func @f(%p: tensor<?x8xf32>, %b: tensor<8xf32>) {
  // expected-error@+1 {{'moe.top_k' op topk_group needs n_group}}
  %w, %e = moe.top_k %p bias %b : tensor<8xf32> k 2 topk_group 1 : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return
}

// -----

func.func @f(%p: tensor<?x8xf32>, %b: tensor<6xf32>) {
  // expected-error@+1 {{'moe.top_k' op selection_bias has 6 elements (expected 8)}}
  %w, %e = moe.top_k %p bias %b : tensor<6xf32> k 2 : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return
}

// -----

func.func @f(%p: tensor<?x8xf32>) {
  // expected-error@+1 {{'moe.top_k' op n_group 3 does not split the 8 experts into equal groups of at least 2 (a group scores its two best experts)}}
  %w, %e = moe.top_k %p k 2 n_group 3 topk_group 1 : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return
}

// -----

func.func @f(%w: tensor<?x2xf32>) {
  // expected-error@+1 {{'moe.scale_weights' op factor -1.000000e+00 is not a positive finite scale}}
  %ws = moe.scale_weights %w factor -1.0 : tensor<?x2xf32>
  return
}

// -----

func.func @f(%x: tensor<?x12xf32>) {
  // expected-error@+1 {{'moe.rotary' op offset 5 + rotary_dim 2 exceeds head_dim 6 (expected the rotated dims within each head)}}
  %y = moe.rotary %x heads 2 head_dim 6 rotary_dim 2 offset 5 theta 10000.0 style interleaved : tensor<?x12xf32>
  return
}

// -----

func.func @f(%q: tensor<?x12xf32>, %k: tensor<?x12xf32>, %v: tensor<?x12xf32>) {
  // expected-error@+1 {{'moe.attention' op v width 12 (expected 4, num_kv_heads * v_head_dim)}}
  %a = moe.attention %q, %k, %v heads 2 kv_heads 2 head_dim 6 v_head_dim 2 scale 0.4 layer 0 causal : tensor<?x12xf32>, tensor<?x12xf32>, tensor<?x12xf32> -> tensor<?x4xf32>
  return
}

// -----

func.func @f(%q: tensor<?x12xf32>, %v: tensor<?x4xf32>) {
  // expected-error@+1 {{'moe.attention' op v_head_dim must be positive (got 0)}}
  %a = moe.attention %q, %q, %v heads 2 kv_heads 2 head_dim 6 v_head_dim 0 scale 0.4 layer 0 causal : tensor<?x12xf32>, tensor<?x12xf32>, tensor<?x4xf32> -> tensor<?x4xf32>
  return
}

// -----

func.func @f(%q: tensor<?x12xf32>, %c: tensor<?x3xf32>, %k: tensor<?x2xf32>, %w: tensor<12x3xf32>) {
  // expected-error@+1 {{'moe.mla_attention' op kv_b weight is [12, 3] (expected 10 = num_heads * (nope_dim + v_head_dim) rows)}}
  %a = moe.mla_attention %q, %c, %k, %w heads 2 nope_dim 4 rope_dim 2 v_head_dim 1 scale 0.4 layer 0 : tensor<?x12xf32>, tensor<?x3xf32>, tensor<?x2xf32>, tensor<12x3xf32> -> tensor<?x2xf32>
  return
}

// -----

func.func @f(%q: tensor<?x10xf32>, %c: tensor<?x3xf32>, %k: tensor<?x2xf32>, %w: tensor<10x3xf32>) {
  // expected-error@+1 {{'moe.mla_attention' op q width 10 (expected 12, num_heads * (nope_dim + rope_dim))}}
  %a = moe.mla_attention %q, %c, %k, %w heads 2 nope_dim 4 rope_dim 2 v_head_dim 1 scale 0.4 layer 0 : tensor<?x10xf32>, tensor<?x3xf32>, tensor<?x2xf32>, tensor<10x3xf32> -> tensor<?x2xf32>
  return
}

// -----

func.func @f(%q: tensor<?x12xf32>, %c: tensor<?x4xf32>, %k: tensor<?x2xf32>, %w: tensor<10x3xf32>) {
  // expected-error@+1 {{'moe.mla_attention' op c_kv width 4 (expected 3, kv_lora_rank, the kv_b weight's columns)}}
  %a = moe.mla_attention %q, %c, %k, %w heads 2 nope_dim 4 rope_dim 2 v_head_dim 1 scale 0.4 layer 0 : tensor<?x12xf32>, tensor<?x4xf32>, tensor<?x2xf32>, tensor<10x3xf32> -> tensor<?x2xf32>
  return
}

// -----

func.func @f(%q: tensor<?x12xf32>, %c: tensor<?x3xf32>, %k: tensor<?x3xf32>, %w: tensor<10x3xf32>) {
  // expected-error@+1 {{'moe.mla_attention' op k_pe width 3 (expected 2, rope_dim)}}
  %a = moe.mla_attention %q, %c, %k, %w heads 2 nope_dim 4 rope_dim 2 v_head_dim 1 scale 0.4 layer 0 : tensor<?x12xf32>, tensor<?x3xf32>, tensor<?x3xf32>, tensor<10x3xf32> -> tensor<?x2xf32>
  return
}

// -----

func.func @f(%q: tensor<?x12xf32>, %c: tensor<?x3xf32>, %k: tensor<?x2xf32>, %w: tensor<10x3xf32>) {
  // expected-error@+1 {{'moe.mla_attention' op result width 4 (expected 2, num_heads * v_head_dim)}}
  %a = moe.mla_attention %q, %c, %k, %w heads 2 nope_dim 4 rope_dim 2 v_head_dim 1 scale 0.4 layer 0 : tensor<?x12xf32>, tensor<?x3xf32>, tensor<?x2xf32>, tensor<10x3xf32> -> tensor<?x4xf32>
  return
}

// -----

func.func @f(%q: tensor<?x8xf32>, %c: tensor<?x3xf32>, %k: tensor<?x2xf32>, %w: tensor<10x3xf32>) {
  // expected-error@+1 {{'moe.mla_attention' op rope_dim must be positive (got 0)}}
  %a = moe.mla_attention %q, %c, %k, %w heads 2 nope_dim 4 rope_dim 0 v_head_dim 1 scale 0.4 layer 0 : tensor<?x8xf32>, tensor<?x3xf32>, tensor<?x2xf32>, tensor<10x3xf32> -> tensor<?x2xf32>
  return
}

// -----

func.func @f(%q: tensor<?x12xf32>, %c: tensor<?x3xf32>, %k: tensor<?x2xf32>, %w: tensor<10x3xf32>) {
  // expected-error@+1 {{'moe.mla_attention' op scale must be positive}}
  %a = moe.mla_attention %q, %c, %k, %w heads 2 nope_dim 4 rope_dim 2 v_head_dim 1 scale 0.0 layer 0 : tensor<?x12xf32>, tensor<?x3xf32>, tensor<?x2xf32>, tensor<10x3xf32> -> tensor<?x2xf32>
  return
}

// -----

func.func @f(%q: tensor<?x12xf32>, %c: tensor<?x3xf32>, %k: tensor<?x2xf32>, %w: tensor<10x3xf32>) {
  // expected-error@+1 {{'moe.mla_attention' op layer must be >= 0 (got -1)}}
  %a = moe.mla_attention %q, %c, %k, %w heads 2 nope_dim 4 rope_dim 2 v_head_dim 1 scale 0.4 layer -1 : tensor<?x12xf32>, tensor<?x3xf32>, tensor<?x2xf32>, tensor<10x3xf32> -> tensor<?x2xf32>
  return
}

// -----

func.func @f(%a: tensor<?x4xf32>) {
  // expected-error@+1 {{'moe.gather_columns' op index 4 is outside the inputs' columns [0, 4)}}
  %g = moe.gather_columns %a indices [0, 4] : tensor<?x4xf32> -> tensor<?x2xf32>
  return
}

// -----

func.func @f(%a: tensor<?x4xf32>) {
  // expected-error@+1 {{'moe.gather_columns' op result width 3 does not match the 2 indices}}
  %g = moe.gather_columns %a indices [0, 1] : tensor<?x4xf32> -> tensor<?x3xf32>
  return
}

// -----

moe.model @m attributes {architecture = "test", vocab_size = 4, hidden_size = 2, num_layers = 0, max_position_embeddings = 8} {
  moe.param @emb "emb" : tensor<4x2xf32> init normal std 0.02
  // expected-error@+1 {{'moe.param' op is quantized but type 'tensor<4x8xbf16>' is not a matrix of f32 (expected [N, K] or [E, N, K])}}
  moe.param @q "q" : tensor<4x8xbf16> quant <format = fp8_e4m3, scale = "q_scale_inv", block = 2, 2> init ones
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x4xf32> {
    %w = moe.weight @emb : tensor<4x2xf32>
    %x = moe.embedding %ids, %w : tensor<?xi32>, tensor<4x2xf32> -> tensor<?x2xf32>
    %l = moe.lm_head %x, %w tied : tensor<?x2xf32>, tensor<4x2xf32> -> tensor<?x4xf32>
    moe.return %l : tensor<?x4xf32>
  }
}

// -----

moe.model @m attributes {architecture = "test", vocab_size = 4, hidden_size = 2, num_layers = 0, max_position_embeddings = 8} {
  moe.param @emb "emb" : tensor<4x2xf32> init normal std 0.02
  // expected-error@+1 {{'moe.param' op has the quant scale 'e.{e}.s' (expected {e} exactly when its source names per-expert tensors)}}
  moe.param @q "q" : tensor<4x8xf32> quant <format = fp8_e4m3, scale = "e.{e}.s", block = 2, 2> init ones
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x4xf32> {
    %w = moe.weight @emb : tensor<4x2xf32>
    %x = moe.embedding %ids, %w : tensor<?xi32>, tensor<4x2xf32> -> tensor<?x2xf32>
    %l = moe.lm_head %x, %w tied : tensor<?x2xf32>, tensor<4x2xf32> -> tensor<?x4xf32>
    moe.return %l : tensor<?x4xf32>
  }
}

// -----

moe.model @m attributes {architecture = "test", vocab_size = 4, hidden_size = 2, num_layers = 0, max_position_embeddings = 8} {
  moe.param @emb "emb" : tensor<4x2xf32> init normal std 0.02
  // expected-error@+1 {{'moe.param' op is a quantized stacked matrix without a source}}
  moe.param @q "q" : tensor<2x4x8xf32> quant <format = fp8_e4m3, scale = "s", block = 2, 2> init ones
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x4xf32> {
    %w = moe.weight @emb : tensor<4x2xf32>
    %x = moe.embedding %ids, %w : tensor<?xi32>, tensor<4x2xf32> -> tensor<?x2xf32>
    %l = moe.lm_head %x, %w tied : tensor<?x2xf32>, tensor<4x2xf32> -> tensor<?x4xf32>
    moe.return %l : tensor<?x4xf32>
  }
}

// -----

moe.model @m attributes {architecture = "test", vocab_size = 4, hidden_size = 2, num_layers = 0, max_position_embeddings = 8} {
  moe.param @emb "emb" : tensor<4x2xf32> init normal std 0.02
  // expected-error@+1 {{quant block has 1 sizes (expected [rows, columns], each >= 1)}}
  moe.param @q "q" : tensor<4x8xf32> quant <format = fp8_e4m3, scale = "s", block = 2> init ones
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x4xf32> {
    %w = moe.weight @emb : tensor<4x2xf32>
    %x = moe.embedding %ids, %w : tensor<?xi32>, tensor<4x2xf32> -> tensor<?x2xf32>
    %l = moe.lm_head %x, %w tied : tensor<?x2xf32>, tensor<4x2xf32> -> tensor<?x4xf32>
    moe.return %l : tensor<?x4xf32>
  }
}

// -----

moe.model @m attributes {architecture = "test", vocab_size = 4, hidden_size = 2, num_layers = 0, max_position_embeddings = 8} {
  moe.param @emb "emb" : tensor<4x2xf32> init normal std 0.02
  // expected-error@+1 {{quant has an empty scale tensor name}}
  moe.param @q "q" : tensor<4x8xf32> quant <format = fp8_e4m3, scale = "", block = 2, 2> init ones
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x4xf32> {
    %w = moe.weight @emb : tensor<4x2xf32>
    %x = moe.embedding %ids, %w : tensor<?xi32>, tensor<4x2xf32> -> tensor<?x2xf32>
    %l = moe.lm_head %x, %w tied : tensor<?x2xf32>, tensor<4x2xf32> -> tensor<?x4xf32>
    moe.return %l : tensor<?x4xf32>
  }
}

// -----

moe.model @m attributes {architecture = "test", vocab_size = 4, hidden_size = 2, num_layers = 0, max_position_embeddings = 8} {
  moe.param @emb "emb" : tensor<4x2xf32> init normal std 0.02
  // expected-error@+1 {{quant mxfp4 has block [2, 32] (expected [1, 32])}}
  moe.param @q "q" : tensor<4x64xf32> quant <format = mxfp4, scale = "s", block = 2, 32> init ones
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x4xf32> {
    %w = moe.weight @emb : tensor<4x2xf32>
    %x = moe.embedding %ids, %w : tensor<?xi32>, tensor<4x2xf32> -> tensor<?x2xf32>
    %l = moe.lm_head %x, %w tied : tensor<?x2xf32>, tensor<4x2xf32> -> tensor<?x4xf32>
    moe.return %l : tensor<?x4xf32>
  }
}

// -----

func.func @f(%x: tensor<?x4xf32>) {
  // expected-error@+1 {{'moe.add' op attribute 'moe.tensor_slice' must be "column", "column_qkv" or "row" on moe.linear, "heads" on moe.rotary, moe.rms_norm, moe.attention and moe.mla_attention, "ffn" on moe.mlp, "vocab" on moe.embedding and moe.lm_head}}
  %y = moe.add %x, %x {moe.tensor_slice = "vocab"} : tensor<?x4xf32>
  return
}
