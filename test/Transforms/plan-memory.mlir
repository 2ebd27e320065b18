// RUN: moe-opt %s --split-input-file --pass-pipeline='builtin.module(moe.model(moe-plan-memory{max-seq-len=16}))' | FileCheck %s
// RUN: moe-opt %S/Inputs/moe-layer.mlir --pass-pipeline='builtin.module(moe.model(moe-plan-memory{max-seq-len=16}))' | FileCheck %s --check-prefix=MOE
// RUN: not moe-opt %s --split-input-file --pass-pipeline='builtin.module(moe.model(moe-plan-memory{dtype=f64}))' 2>&1 | FileCheck %s --check-prefix=BADDTYPE

// An attention layer: q, k and v are packed into one buffer (q at columns
// 0-15, k at 16-23, v at 24-31 of 32 f32 columns: byte offsets +0, +64, +96),
// RoPE and the q norm run in place on their columns, the output projection
// reuses the dead q/k/v bytes and the residual add overwrites the dying
// residual stream.
// CHECK-LABEL: moe.model @attn attributes
// KV cache: 2 (k, v) x 2 kv heads x 4 dims x 16 positions x 4 bytes = 1024;
// peak = 4176 weight bytes + 4096 arena + 1024 KV.
// CHECK-SAME: moe.memory = {arena_bytes = 4096 : i64, kv_cache_bytes = 1024 : i64, max_seq_len = 16 : i64, max_tokens = 16 : i64, unplanned_bytes = 6208 : i64}
// CHECK-SAME: moe.peak_bytes = array<i64: 9296>
// CHECK: moe.embedding {{.*}}moe.arena_offsets = array<i64: [[H:[0-9]+]]>
// CHECK: moe.rms_norm {{.*}}moe.arena_offsets = array<i64: [[N:[0-9]+]]>
// CHECK: moe.linear {{.*}}moe.arena_offsets = array<i64: [[Q:[0-9]+]]>
// CHECK-SAME: -> tensor<?x16xf32>
// CHECK: moe.linear {{.*}}moe.arena_offsets = array<i64: [[K:[0-9]+]]>
// CHECK-SAME: -> tensor<?x8xf32>
// CHECK: moe.linear {{.*}}moe.arena_offsets = array<i64: [[V:[0-9]+]]>
// CHECK-SAME: -> tensor<?x8xf32>
// CHECK: moe.rms_norm {{.*}}group 4 {moe.arena_offsets = array<i64: [[Q]]>
// CHECK: moe.rotary {{.*}}moe.arena_offsets = array<i64: [[Q]]>
// CHECK: moe.rotary {{.*}}moe.arena_offsets = array<i64: [[K]]>
// CHECK: moe.attention
// CHECK: moe.linear {{.*}}moe.arena_offsets = array<i64: [[Q]]>
// CHECK: moe.add {{.*}}moe.arena_offsets = array<i64: [[H]]>
moe.model @attn attributes {architecture = "test", vocab_size = 16, hidden_size = 16, num_layers = 1, max_position_embeddings = 16} {
  moe.param @wte "wte" : tensor<16x16xf32> init normal std 0.02
  moe.param @n "n" : tensor<16xf32> init ones
  moe.param @qn "qn" : tensor<4xf32> init ones
  moe.param @wq "wq" : tensor<16x16xf32> init normal std 0.02
  moe.param @wk "wk" : tensor<8x16xf32> init normal std 0.02
  moe.param @wv "wv" : tensor<8x16xf32> init normal std 0.02
  moe.param @wo "wo" : tensor<16x16xf32> init normal std 0.02
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x16xf32> {
    %wte = moe.weight @wte : tensor<16x16xf32>
    %x = moe.embedding %ids, %wte : tensor<?xi32>, tensor<16x16xf32> -> tensor<?x16xf32>
    %l = moe.layer 0 (%h = %x) : tensor<?x16xf32> {
      %nw = moe.weight @n : tensor<16xf32>
      %n = moe.rms_norm %h, %nw eps 1.0e-6 : tensor<?x16xf32>, tensor<16xf32>
      %wq = moe.weight @wq : tensor<16x16xf32>
      %q = moe.linear %n, %wq : tensor<?x16xf32>, tensor<16x16xf32> -> tensor<?x16xf32>
      %wk = moe.weight @wk : tensor<8x16xf32>
      %k = moe.linear %n, %wk : tensor<?x16xf32>, tensor<8x16xf32> -> tensor<?x8xf32>
      %wv = moe.weight @wv : tensor<8x16xf32>
      %v = moe.linear %n, %wv : tensor<?x16xf32>, tensor<8x16xf32> -> tensor<?x8xf32>
      %qnw = moe.weight @qn : tensor<4xf32>
      %qn = moe.rms_norm %q, %qnw eps 1.0e-6 group 4 : tensor<?x16xf32>, tensor<4xf32>
      %qr = moe.rotary %qn heads 4 head_dim 4 rotary_dim 4 theta 10000.0 style neox : tensor<?x16xf32>
      %kr = moe.rotary %k heads 2 head_dim 4 rotary_dim 4 theta 10000.0 style neox : tensor<?x8xf32>
      %a = moe.attention %qr, %kr, %v heads 4 kv_heads 2 head_dim 4 scale 0.5 layer 0 causal : tensor<?x16xf32>, tensor<?x8xf32>, tensor<?x8xf32> -> tensor<?x16xf32>
      %wo = moe.weight @wo : tensor<16x16xf32>
      %o = moe.linear %a, %wo : tensor<?x16xf32>, tensor<16x16xf32> -> tensor<?x16xf32>
      %r = moe.add %h, %o : tensor<?x16xf32>
      moe.yield %r : tensor<?x16xf32>
    }
    %lm = moe.lm_head %l, %wte tied : tensor<?x16xf32>, tensor<16x16xf32> -> tensor<?x16xf32>
    moe.return %lm : tensor<?x16xf32>
  }
}

// MoE layer on a 4-rank grid: the residual stream, per-slot tables and the
// expert outputs share 2176 bytes where separate buffers would take 3840; every
// rank holds the same (shared) weights here.
// MOE: moe.memory = {arena_bytes = 2176 : i64, kv_cache_bytes = 0 : i64, max_seq_len = 16 : i64, max_tokens = 16 : i64, unplanned_bytes = 3840 : i64}
// MOE-SAME: moe.peak_bytes = array<i64: [[P:[0-9]+]], [[P]], [[P]], [[P]]>

// BADDTYPE: dtype 'f64' is not supported (expected f32, bf16 or f16)
