// RUN: moe-opt %s | FileCheck %s
// Round trip: print, parse again, print again; both prints must agree.
// RUN: moe-opt %s | moe-opt | FileCheck %s
// RUN: moe-opt %s -mlir-print-op-generic | moe-opt | FileCheck %s

// CHECK-LABEL: moe.model @every_op attributes {architecture = "test", bos_token_id = 1 : i64, checkpoint = "/ckpt", eos_token_ids = array<i64: 2, 3>, hidden_size = 8 : i64, kv_cache_dtype = bf16, max_position_embeddings = 16 : i64, num_layers = 2 : i64, vocab_size = 32 : i64} {
moe.model @every_op attributes {architecture = "test", vocab_size = 32, hidden_size = 8,
    num_layers = 2, max_position_embeddings = 16, bos_token_id = 1,
    eos_token_ids = array<i64: 2, 3>, checkpoint = "/ckpt", kv_cache_dtype = bf16} {
  // CHECK: shard.grid @devices(shape = 1x2)
  shard.grid @devices(shape = 1x2)
  // CHECK: moe.param @wte "wte.weight" : tensor<32x8xbf16> init normal std 2.000000e-02
  moe.param @wte "wte.weight" : tensor<32x8xbf16> init normal std 0.02
  // CHECK: moe.param @wpe "wpe.weight" : tensor<16x8xf32> init normal std 2.000000e-02
  moe.param @wpe "wpe.weight" : tensor<16x8xf32> init normal std 0.02
  // CHECK: moe.param @ln_w "ln.weight" : tensor<8xf32> init ones
  moe.param @ln_w "ln.weight" : tensor<8xf32> init ones
  // CHECK: moe.param @ln_b "ln.bias" : tensor<8xf32> init zeros
  moe.param @ln_b "ln.bias" : tensor<8xf32> init zeros
  moe.param @qkv "attn.qkv.weight" : tensor<8x16xf16> init normal std 0.02
  moe.param @qn "attn.q_norm.weight" : tensor<2xf32> init ones
  moe.param @o "attn.o.weight" : tensor<8x8xf32> init normal std 0.02
  moe.param @up "mlp.up.weight" : tensor<16x8xf32> init normal std 0.02
  moe.param @upb "mlp.up.bias" : tensor<16xf32> init zeros
  moe.param @down "mlp.down.weight" : tensor<8x16xf32> init normal std 0.02
  moe.param @router "moe.router.weight" : tensor<2x8xf32> init normal std 0.02
  // Expert-stacked parameters and their checkpoint sources: per-expert
  // tensors, rows of a fused tensor, interleaved columns (gpt-oss).
  // CHECK: moe.param @eu "moe.experts.{e}.up.weight" : tensor<2x4x8xf32> source <tensor = "moe.experts.{e}.up.weight"> init normal std 2.000000e-02
  moe.param @eu "moe.experts.{e}.up.weight" : tensor<2x4x8xf32> source <tensor = "moe.experts.{e}.up.weight"> init normal std 0.02
  // CHECK: moe.param @qd "q.weight" : tensor<8x8xf32> quant <format = fp8_e4m3, scale = "q.weight_scale_inv", block = 128, 128> init normal std 2.000000e-02
  moe.param @qd "q.weight" : tensor<8x8xf32> quant <format = fp8_e4m3, scale = "q.weight_scale_inv", block = 128, 128> init normal std 0.02
  // CHECK: moe.param @qe "e.{e}.w" : tensor<2x4x8xf32> source <tensor = "e.{e}.w"> quant <format = fp8_e4m3, scale = "e.{e}.w_scale_inv", block = 2, 3> init normal std 2.000000e-02
  moe.param @qe "e.{e}.w" : tensor<2x4x8xf32> source <tensor = "e.{e}.w"> quant <format = fp8_e4m3, scale = "e.{e}.w_scale_inv", block = 2, 3> init normal std 0.02
  // CHECK: moe.param @eg "moe.experts.gate_up_proj#gate" : tensor<2x4x8xf32> source <tensor = "moe.experts.gate_up_proj"> init normal std 2.000000e-02
  moe.param @eg "moe.experts.gate_up_proj#gate" : tensor<2x4x8xf32> source <tensor = "moe.experts.gate_up_proj", offset = 0, stride = 1> init normal std 0.02
  // CHECK: moe.param @eg2 "moe.experts.gate_up_proj#up" : tensor<2x4x8xf32> source <tensor = "moe.experts.gate_up_proj", offset = 1, stride = 2, transposed = true> init normal std 2.000000e-02
  moe.param @eg2 "moe.experts.gate_up_proj#up" : tensor<2x4x8xf32> source <tensor = "moe.experts.gate_up_proj", offset = 1, stride = 2, transposed = true> init normal std 0.02
  // CHECK: moe.param @ed "moe.experts.down_proj" : tensor<2x8x4xf32> init normal std 2.000000e-02
  moe.param @ed "moe.experts.down_proj" : tensor<2x8x4xf32> init normal std 0.02
  moe.param @eub "moe.experts.up_bias" : tensor<2x4xf32> init zeros
  moe.param @edb "moe.experts.down_bias" : tensor<2x8xf32> init zeros
  moe.param @sgate "moe.shared_gate.weight" : tensor<1x8xf32> init normal std 0.02
  moe.param @coef "moe.coef.weight" : tensor<2x8xf32> init normal std 0.02

  // CHECK: moe.graph @forward(%[[IDS:.*]]: tensor<?xi32>) -> tensor<?x32xf32> {
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x32xf32> {
    // CHECK: %[[WTE:.*]] = moe.weight @wte : tensor<32x8xbf16>
    %wte = moe.weight @wte : tensor<32x8xbf16>
    // CHECK: %[[X:.*]] = moe.embedding %[[IDS]], %[[WTE]] {scale = 2.000000e+00 : f32} : tensor<?xi32>, tensor<32x8xbf16> -> tensor<?x8xf32>
    %x = moe.embedding %ids, %wte {scale = 2.0 : f32} : tensor<?xi32>, tensor<32x8xbf16> -> tensor<?x8xf32>
    %wpe = moe.weight @wpe : tensor<16x8xf32>
    // CHECK: moe.position_embedding %[[X]], %{{.*}} : tensor<?x8xf32>, tensor<16x8xf32>
    %x1 = moe.position_embedding %x, %wpe : tensor<?x8xf32>, tensor<16x8xf32>

    // CHECK: %[[L0:.*]] = moe.layer 0 (%[[IN:.*]] = %{{.*}}) : tensor<?x8xf32> {
    %l0 = moe.layer 0 (%h = %x1) : tensor<?x8xf32> {
      %lnw = moe.weight @ln_w : tensor<8xf32>
      %lnb = moe.weight @ln_b : tensor<8xf32>
      // CHECK: moe.layer_norm %[[IN]], %{{.*}}, %{{.*}} eps 9.99999974E-6 : tensor<?x8xf32>, tensor<8xf32>, tensor<8xf32>
      %n = moe.layer_norm %h, %lnw, %lnb eps 1.0e-5 : tensor<?x8xf32>, tensor<8xf32>, tensor<8xf32>
      %wqkv = moe.weight @qkv : tensor<8x16xf16>
      // CHECK: moe.linear %{{.*}}, %{{.*}} {transposed} : tensor<?x8xf32>, tensor<8x16xf16> -> tensor<?x16xf32>
      %qkv = moe.linear %n, %wqkv {transposed} : tensor<?x8xf32>, tensor<8x16xf16> -> tensor<?x16xf32>
      // CHECK: moe.split %{{.*}} : tensor<?x16xf32> -> tensor<?x8xf32>, tensor<?x4xf32>, tensor<?x4xf32>
      %q, %k, %v = moe.split %qkv : tensor<?x16xf32> -> tensor<?x8xf32>, tensor<?x4xf32>, tensor<?x4xf32>
      %wqn = moe.weight @qn : tensor<2xf32>
      // CHECK: moe.rms_norm %{{.*}}, %{{.*}} eps 9.99999997E-7 group 2 {weight_offset = 1.000000e+00 : f32} : tensor<?x8xf32>, tensor<2xf32>
      %qn = moe.rms_norm %q, %wqn eps 1.0e-6 group 2 {weight_offset = 1.0 : f32} : tensor<?x8xf32>, tensor<2xf32>
      // CHECK: moe.rotary %{{.*}} heads 4 head_dim 2 rotary_dim 2 theta 1.000000e+04 style neox : tensor<?x8xf32>
      %qr = moe.rotary %qn heads 4 head_dim 2 rotary_dim 2 theta 10000.0 style neox : tensor<?x8xf32>
      // CHECK: moe.rotary %{{.*}} heads 2 head_dim 2 rotary_dim 2 theta 1.000000e+04 style interleaved : tensor<?x4xf32>
      %kr = moe.rotary %k heads 2 head_dim 2 rotary_dim 2 theta 10000.0 style interleaved : tensor<?x4xf32>
      // CHECK: moe.attention %{{.*}}, %{{.*}}, %{{.*}} heads 4 kv_heads 2 head_dim 2 scale 0.707106769 layer 0 causal window 8 : tensor<?x8xf32>, tensor<?x4xf32>, tensor<?x4xf32> -> tensor<?x8xf32>
      %a = moe.attention %qr, %kr, %v heads 4 kv_heads 2 head_dim 2 scale 0.70710677 layer 0 causal window 8 : tensor<?x8xf32>, tensor<?x4xf32>, tensor<?x4xf32> -> tensor<?x8xf32>
      %wo = moe.weight @o : tensor<8x8xf32>
      %o = moe.linear %a, %wo : tensor<?x8xf32>, tensor<8x8xf32> -> tensor<?x8xf32>
      // CHECK: moe.add %[[IN]], %{{.*}} : tensor<?x8xf32>
      %r = moe.add %h, %o : tensor<?x8xf32>
      %wu = moe.weight @up : tensor<16x8xf32>
      %wub = moe.weight @upb : tensor<16xf32>
      %wd = moe.weight @down : tensor<8x16xf32>
      // CHECK: moe.mlp %{{.*}} up %{{.*}} bias %{{.*}} down %{{.*}} act gelu_tanh : (tensor<?x8xf32>, tensor<16x8xf32>, tensor<16xf32>, tensor<8x16xf32>) -> tensor<?x8xf32>
      %m = moe.mlp %r up %wu bias %wub down %wd act gelu_tanh : (tensor<?x8xf32>, tensor<16x8xf32>, tensor<16xf32>, tensor<8x16xf32>) -> tensor<?x8xf32>
      %out = moe.add %r, %m : tensor<?x8xf32>
      // CHECK: moe.yield %{{.*}} : tensor<?x8xf32>
      moe.yield %out : tensor<?x8xf32>
    }

    // CHECK: moe.layer 1
    %l1 = moe.layer 1 (%h = %l0) : tensor<?x8xf32> {
      %wr = moe.weight @router : tensor<2x8xf32>
      // CHECK: %[[LOGITS:.*]] = moe.router %{{.*}}, %{{.*}} : tensor<?x8xf32>, tensor<2x8xf32> -> tensor<?x2xf32>
      %logits = moe.router %h, %wr : tensor<?x8xf32>, tensor<2x8xf32> -> tensor<?x2xf32>
      // CHECK: %[[P:.*]] = moe.scores softmax %[[LOGITS]] : tensor<?x2xf32>
      %p = moe.scores softmax %logits : tensor<?x2xf32>
      // CHECK: %{{.*}}, %{{.*}} = moe.top_k %[[P]] k 1 : tensor<?x2xf32> -> tensor<?x1xf32>, tensor<?x1xi32>
      %w, %e = moe.top_k %p k 1 : tensor<?x2xf32> -> tensor<?x1xf32>, tensor<?x1xi32>
      // CHECK: moe.renormalize %{{.*}} : tensor<?x1xf32>
      %wn = moe.renormalize %w : tensor<?x1xf32>
      // CHECK: moe.capacity %{{.*}}, %{{.*}} experts 2 factor 1.250000e+00 min 4 : tensor<?x1xi32>, tensor<?x1xf32> -> tensor<?x1xf32>, tensor<?x1xi1>
      %wc, %keep = moe.capacity %e, %wn experts 2 factor 1.25 min 4 : tensor<?x1xi32>, tensor<?x1xf32> -> tensor<?x1xf32>, tensor<?x1xi1>
      // CHECK: moe.expert_map %{{.*}} admitted %{{.*}} : tensor<?x1xi32>, tensor<?x1xi1> -> tensor<3xi32>, tensor<?xi32>
      %off, %slots = moe.expert_map %e admitted %keep : tensor<?x1xi32>, tensor<?x1xi1> -> tensor<3xi32>, tensor<?xi32>
      // CHECK: moe.expert_map %{{.*}} : tensor<?x1xi32> -> tensor<3xi32>, tensor<?xi32>
      %off2, %slots2 = moe.expert_map %e : tensor<?x1xi32> -> tensor<3xi32>, tensor<?xi32>
      // CHECK: moe.gate %[[LOGITS]] routing <top_k = 1, score = sigmoid, score_before_topk = false, norm_topk_prob = true, capacity_factor = 1.250000e+00, min_capacity = 4, drop_tokens = true> : tensor<?x2xf32> -> tensor<?x1xi32>, tensor<?x1xf32>, tensor<3xi32>, tensor<?xi32>
      %ge, %gw, %goff, %gslots = moe.gate %logits routing <top_k = 1, score = sigmoid, score_before_topk = false, norm_topk_prob = true, capacity_factor = 1.25, min_capacity = 4, drop_tokens = true> : tensor<?x2xf32> -> tensor<?x1xi32>, tensor<?x1xf32>, tensor<3xi32>, tensor<?xi32>
      // CHECK: moe.gate %[[LOGITS]] routing <top_k = 2> :
      %ge2, %gw2, %goff2, %gslots2 = moe.gate %logits routing <top_k = 2> : tensor<?x2xf32> -> tensor<?x2xi32>, tensor<?x2xf32>, tensor<3xi32>, tensor<?xi32>
      // CHECK: %[[D:.*]] = moe.dispatch %{{.*}}, %{{.*}} top_k 1 : tensor<?x8xf32>, tensor<?xi32> -> tensor<?x8xf32>
      %d = moe.dispatch %h, %slots top_k 1 : tensor<?x8xf32>, tensor<?xi32> -> tensor<?x8xf32>
      // CHECK: %[[R:.*]] = moe.all_to_all dispatch %[[D]], %{{.*}} on @devices axes [0, 1] placement <ranks = 2, experts = [0, 1]> : tensor<?x8xf32>, tensor<3xi32>
      %dr = moe.all_to_all dispatch %d, %off on @devices axes [0, 1] placement <ranks = 2, experts = [0, 1]> : tensor<?x8xf32>, tensor<3xi32>
      %u = moe.weight @eu : tensor<2x4x8xf32>
      %g = moe.weight @eg : tensor<2x4x8xf32>
      %dn = moe.weight @ed : tensor<2x8x4xf32>
      %ub = moe.weight @eub : tensor<2x4xf32>
      %db = moe.weight @edb : tensor<2x8xf32>
      // CHECK: %[[Y:.*]] = moe.experts %[[R]], %{{.*}} top_k 1 act silu up %{{.*}} : tensor<2x4x8xf32> gate %{{.*}} : tensor<2x4x8xf32> down %{{.*}} : tensor<2x8x4xf32> placement <ranks = 2, experts = [0, 1]> : tensor<?x8xf32>, tensor<3xi32> -> tensor<?x8xf32>
      %y = moe.experts %dr, %off top_k 1 act silu up %u : tensor<2x4x8xf32> gate %g : tensor<2x4x8xf32> down %dn : tensor<2x8x4xf32> placement <ranks = 2, experts = [0, 1]> : tensor<?x8xf32>, tensor<3xi32> -> tensor<?x8xf32>
      // Expert slicing: 2 parts of each expert's 4 hidden units, on both ranks.
      // CHECK: moe.experts %{{.*}}, %{{.*}} top_k 1 act silu up %{{.*}} : tensor<2x4x8xf32> down %{{.*}} : tensor<2x8x4xf32> placement <ranks = 2, experts = [0, 1, 1, 0], slices = 2> : tensor<?x8xf32>, tensor<3xi32> -> tensor<?x8xf32>
      %ysl = moe.experts %d, %off top_k 1 act silu up %u : tensor<2x4x8xf32> down %dn : tensor<2x8x4xf32> placement <ranks = 2, experts = [0, 1, 1, 0], slices = 2> : tensor<?x8xf32>, tensor<3xi32> -> tensor<?x8xf32>
      // CHECK: moe.experts %{{.*}}, %{{.*}} top_k 1 act gelu up %{{.*}} : tensor<2x4x8xf32> down %{{.*}} : tensor<2x8x4xf32> up_bias %{{.*}} : tensor<2x4xf32> down_bias %{{.*}} : tensor<2x8xf32> : tensor<?x8xf32>, tensor<3xi32> -> tensor<?x8xf32>
      %yb2 = moe.experts %d, %off top_k 1 act gelu down_bias %db : tensor<2x8xf32> up %u : tensor<2x4x8xf32> up_bias %ub : tensor<2x4xf32> down %dn : tensor<2x8x4xf32> : tensor<?x8xf32>, tensor<3xi32> -> tensor<?x8xf32>
      // CHECK: moe.all_to_all combine %[[Y]]
      %yb = moe.all_to_all combine %y, %off on @devices axes [0, 1] placement <ranks = 2, experts = [0, 1]> : tensor<?x8xf32>, tensor<3xi32>
      // CHECK: moe.combine %{{.*}}, %{{.*}}, %{{.*}} : tensor<?x8xf32>, tensor<?xi32>, tensor<?x1xf32> -> tensor<?x8xf32>
      %c = moe.combine %yb, %slots, %wc : tensor<?x8xf32>, tensor<?xi32>, tensor<?x1xf32> -> tensor<?x8xf32>
      %wsg = moe.weight @sgate : tensor<1x8xf32>
      %sg = moe.linear %h, %wsg : tensor<?x8xf32>, tensor<1x8xf32> -> tensor<?x1xf32>
      // CHECK: moe.sigmoid_gate %{{.*}}, %{{.*}} : tensor<?x8xf32>, tensor<?x1xf32>
      %gated = moe.sigmoid_gate %c, %sg : tensor<?x8xf32>, tensor<?x1xf32>
      %wcoef = moe.weight @coef : tensor<2x8xf32>
      %coef = moe.linear %h, %wcoef : tensor<?x8xf32>, tensor<2x8xf32> -> tensor<?x2xf32>
      // CHECK: moe.residual_mix %{{.*}}, %{{.*}}, %{{.*}} : tensor<?x8xf32>, tensor<?x2xf32>
      %mix = moe.residual_mix %gated, %c, %coef : tensor<?x8xf32>, tensor<?x2xf32>
      %out = moe.add %h, %mix : tensor<?x8xf32>
      moe.yield %out : tensor<?x8xf32>
    }
    %wte2 = moe.weight @wte : tensor<32x8xbf16>
    // CHECK: %[[LOGITS:.*]] = moe.lm_head %{{.*}}, %{{.*}} tied : tensor<?x8xf32>, tensor<32x8xbf16> -> tensor<?x32xf32>
    %logits = moe.lm_head %l1, %wte2 tied : tensor<?x8xf32>, tensor<32x8xbf16> -> tensor<?x32xf32>
    // CHECK: moe.return %[[LOGITS]] : tensor<?x32xf32>
    moe.return %logits : tensor<?x32xf32>
  }
}

// Scaled RoPE: the frequencies and the cos/sin scale round-trip exactly.
// CHECK-LABEL: func.func @scaled_rope
func.func @scaled_rope(%x: tensor<?x8xf32>) -> tensor<?x8xf32> {
  // CHECK: moe.rotary %{{.*}} heads 2 head_dim 4 rotary_dim 4 theta 1.500000e+05 style neox inv_freq dense<[1.000000e+00, 0.00258198939]> : tensor<2xf32> attention_factor 1.34657359 : tensor<?x8xf32>
  %y = moe.rotary %x heads 2 head_dim 4 rotary_dim 4 theta 150000.0 style neox inv_freq dense<[1.0, 0.00258198939]> : tensor<2xf32> attention_factor 1.34657359 : tensor<?x8xf32>
  return %y : tensor<?x8xf32>
}

// gpt-oss: biased router, attention sinks on a sliding layer, experts with a
// gate bias and the clamped SwiGLU; everything round-trips.
// CHECK-LABEL: func.func @gpt_oss
func.func @gpt_oss(%h: tensor<?x8xf32>, %q: tensor<?x8xf32>, %k: tensor<?x4xf32>,
                   %v: tensor<?x4xf32>, %sinks: tensor<4xbf16>,
                   %wr: tensor<2x8xf32>, %br: tensor<2xbf16>,
                   %off: tensor<3xi32>, %u: tensor<2x4x8xf32>,
                   %g: tensor<2x4x8xf32>, %dn: tensor<2x8x4xf32>,
                   %ub: tensor<2x4xf32>, %db: tensor<2x8xf32>,
                   %gb: tensor<2x4xf32>) -> tensor<?x8xf32> {
  // CHECK: moe.router %{{.*}}, %{{.*}} bias %{{.*}} : tensor<?x8xf32>, tensor<2x8xf32>, tensor<2xbf16> -> tensor<?x2xf32>
  %logits = moe.router %h, %wr bias %br : tensor<?x8xf32>, tensor<2x8xf32>, tensor<2xbf16> -> tensor<?x2xf32>
  // CHECK: moe.attention %{{.*}}, %{{.*}}, %{{.*}} heads 4 kv_heads 2 head_dim 2 scale 0.707106769 layer 0 causal window 4 sinks %{{.*}} : tensor<4xbf16> : tensor<?x8xf32>, tensor<?x4xf32>, tensor<?x4xf32> -> tensor<?x8xf32>
  %a = moe.attention %q, %k, %v heads 4 kv_heads 2 head_dim 2 scale 0.70710677 layer 0 causal window 4 sinks %sinks : tensor<4xbf16> : tensor<?x8xf32>, tensor<?x4xf32>, tensor<?x4xf32> -> tensor<?x8xf32>
  // CHECK: moe.experts %{{.*}}, %{{.*}} top_k 1 act swiglu_oai limit 7.000000e+00 alpha 1.702000e+00 up %{{.*}} : tensor<2x4x8xf32> gate %{{.*}} : tensor<2x4x8xf32> down %{{.*}} : tensor<2x8x4xf32> up_bias %{{.*}} : tensor<2x4xf32> down_bias %{{.*}} : tensor<2x8xf32> gate_bias %{{.*}} : tensor<2x4xf32> : tensor<?x8xf32>, tensor<3xi32> -> tensor<?x8xf32>
  %y = moe.experts %h, %off top_k 1 act swiglu_oai limit 7.0 alpha 1.702 gate_bias %gb : tensor<2x4xf32> up %u : tensor<2x4x8xf32> gate %g : tensor<2x4x8xf32> down %dn : tensor<2x8x4xf32> up_bias %ub : tensor<2x4xf32> down_bias %db : tensor<2x8xf32> : tensor<?x8xf32>, tensor<3xi32> -> tensor<?x8xf32>
  return %y : tensor<?x8xf32>
}

// DeepSeek-V3: MLA's offset rope, gathered keys and narrower values; the
// sigmoid router's biased, group-limited top-k and the routed scaling, both
// unfused and fused; everything round-trips.
// CHECK-LABEL: func.func @deepseek_v3
func.func @deepseek_v3(%q: tensor<?x12xf32>, %kv: tensor<?x10xf32>,
                       %kpe: tensor<?x2xf32>, %p: tensor<?x4xf32>,
                       %b: tensor<4xf32>) -> (tensor<?x2xf32>, tensor<?x2xf32>, tensor<?x2xf32>) {
  // CHECK: moe.rotary %{{.*}} heads 2 head_dim 6 rotary_dim 2 offset 4 theta 1.000000e+04 style interleaved : tensor<?x12xf32>
  %qr = moe.rotary %q heads 2 head_dim 6 rotary_dim 2 offset 4 theta 10000.0 style interleaved : tensor<?x12xf32>
  // CHECK: moe.gather_columns %{{.*}}, %{{.*}} indices [0, 1, 2, 3, 10, 11, 5, 6, 7, 8, 10, 11] : tensor<?x10xf32>, tensor<?x2xf32> -> tensor<?x12xf32>
  %k = moe.gather_columns %kv, %kpe indices [0, 1, 2, 3, 10, 11, 5, 6, 7, 8, 10, 11] : tensor<?x10xf32>, tensor<?x2xf32> -> tensor<?x12xf32>
  %v = moe.gather_columns %kv indices [4, 9] : tensor<?x10xf32> -> tensor<?x2xf32>
  // CHECK: moe.attention %{{.*}}, %{{.*}}, %{{.*}} heads 2 kv_heads 2 head_dim 6 v_head_dim 1 scale 0.408248305 layer 0 causal : tensor<?x12xf32>, tensor<?x12xf32>, tensor<?x2xf32> -> tensor<?x2xf32>
  %a = moe.attention %qr, %k, %v heads 2 kv_heads 2 head_dim 6 v_head_dim 1 scale 0.4082483 layer 0 causal : tensor<?x12xf32>, tensor<?x12xf32>, tensor<?x2xf32> -> tensor<?x2xf32>
  // CHECK: moe.top_k %{{.*}} bias %{{.*}} : tensor<4xf32> k 2 n_group 2 topk_group 1 : tensor<?x4xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  %w, %e = moe.top_k %p bias %b : tensor<4xf32> k 2 n_group 2 topk_group 1 : tensor<?x4xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  // CHECK: moe.scale_weights %{{.*}} factor 2.500000e+00 : tensor<?x2xf32>
  %ws = moe.scale_weights %w factor 2.5 : tensor<?x2xf32>
  // CHECK: moe.gate %{{.*}} bias %{{.*}} : tensor<4xf32> routing <top_k = 2, score = sigmoid, norm_topk_prob = true, n_group = 2, routed_scaling_factor = 2.500000e+00> : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>, tensor<5xi32>, tensor<?xi32>
  %ge, %gw, %go, %gs = moe.gate %p bias %b : tensor<4xf32> routing <top_k = 2, score = sigmoid, norm_topk_prob = true, n_group = 2, topk_group = 1, routed_scaling_factor = 2.5> : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>, tensor<5xi32>, tensor<?xi32>
  // CHECK: routing <top_k = 2, n_group = 2, topk_group = 2>
  %he, %hw, %ho, %hs = moe.gate %p routing <top_k = 2, n_group = 2, topk_group = 2> : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>, tensor<5xi32>, tensor<?xi32>
  return %a, %ws, %gw : tensor<?x2xf32>, tensor<?x2xf32>, tensor<?x2xf32>
}

// DeepSeek-V3's MLA over the latent cache: c_kv (3 wide) and the shared k_pe
// (2), kv_b [2 heads * (nope 4 + v 1), 3].
// CHECK-LABEL: func.func @mla_attention
func.func @mla_attention(%q: tensor<?x12xf32>, %c: tensor<?x3xf32>,
                         %kpe: tensor<?x2xf32>, %kvb: tensor<10x3xbf16>) -> tensor<?x2xf32> {
  // CHECK: moe.mla_attention %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} heads 2 nope_dim 4 rope_dim 2 v_head_dim 1 scale 0.408248305 layer 0 : tensor<?x12xf32>, tensor<?x3xf32>, tensor<?x2xf32>, tensor<10x3xbf16> -> tensor<?x2xf32>
  %a = moe.mla_attention %q, %c, %kpe, %kvb heads 2 nope_dim 4 rope_dim 2 v_head_dim 1 scale 0.4082483 layer 0 : tensor<?x12xf32>, tensor<?x3xf32>, tensor<?x2xf32>, tensor<10x3xbf16> -> tensor<?x2xf32>
  return %a : tensor<?x2xf32>
}
