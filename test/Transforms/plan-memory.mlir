// RUN: moe-opt %s --split-input-file --pass-pipeline='builtin.module(moe.model(moe-plan-memory{max-seq-len=16}))' | FileCheck %s
// RUN: moe-opt %S/Inputs/moe-layer.mlir --pass-pipeline='builtin.module(moe.model(moe-plan-memory{max-seq-len=16}))' | FileCheck %s --check-prefix=MOE
// RUN: not moe-opt %s --split-input-file --pass-pipeline='builtin.module(moe.model(moe-plan-memory{dtype=f64}))' 2>&1 | FileCheck %s --check-prefix=BADDTYPE

// An attention layer: q, k and v are packed into one buffer (buffer 2: q at
// columns 0-15, k at 16-23, v at 24-31 of 32 f32 columns), RoPE and the q
// norm run in place on their columns, the output projection's buffer reuses
// the bytes of the dead q/k/v buffer and the residual add overwrites the
// dying residual stream (buffer 0).
// CHECK-LABEL: moe.model @attn attributes
// CHECK-SAME: moe.buffers = [#moe.buffer<name = "embedding", type = f32, row_elems = 16, rows_per_token = 1, fixed_rows = 0, offset = {{[0-9]+}}, first = 0, last = 11>,
// CHECK-SAME: #moe.buffer<name = "layers.0.attention.qkv", type = f32, row_elems = 32, rows_per_token = 1, fixed_rows = 0, offset = [[QKV:[0-9]+]], first = 2, last = 8>,
// CHECK-SAME: #moe.buffer<name = "layers.0.linear", type = f32, row_elems = 16, rows_per_token = 1, fixed_rows = 0, offset = [[QKV]], first = 9, last = 10>,
// CHECK-SAME: #moe.buffer<name = "logits", type = f32, row_elems = 16, rows_per_token = 0, fixed_rows = 1,
// KV cache: 2 (k, v) x 2 kv heads x 4 dims x 16 positions x 4 bytes = 1024;
// peak = 4176 weight bytes + 4096 arena + 1024 KV.
// CHECK-SAME: moe.memory = {arena_bytes = 4096 : i64, kv_cache_bytes = 1024 : i64, max_seq_len = 16 : i64, max_tokens = 16 : i64, unplanned_bytes = 6208 : i64}
// CHECK-SAME: moe.peak_bytes = array<i64: 9296>
// CHECK: moe.embedding {{.*}}moe.slices = array<i64: 0, 0, 16>
// CHECK: moe.rms_norm {{.*}}moe.slices = array<i64: 1, 0, 16>
// CHECK: moe.linear {{.*}}moe.slices = array<i64: 2, 0, 16>
// CHECK-SAME: -> tensor<?x16xf32>
// CHECK: moe.linear {{.*}}moe.slices = array<i64: 2, 16, 8>
// CHECK-SAME: -> tensor<?x8xf32>
// CHECK: moe.linear {{.*}}moe.slices = array<i64: 2, 24, 8>
// CHECK-SAME: -> tensor<?x8xf32>
// CHECK: moe.rms_norm {{.*}}group 4 {moe.slices = array<i64: 2, 0, 16>
// CHECK: moe.rotary {{.*}}moe.slices = array<i64: 2, 0, 16>
// CHECK: moe.rotary {{.*}}moe.slices = array<i64: 2, 16, 8>
// CHECK: moe.attention {{.*}}moe.slices = array<i64: 3, 0, 16>
// CHECK: moe.linear {{.*}}moe.slices = array<i64: 4, 0, 16>
// CHECK: moe.add {{.*}}moe.slices = array<i64: 0, 0, 16>
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

// BADDTYPE: for the --dtype option: 'f64' is not supported (expected f32, bf16 or f16)
