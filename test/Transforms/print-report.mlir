// RUN: moe-opt %s --moe-print-report -o /dev/null | FileCheck %s
// RUN: moe-opt %s --moe-print-report='context-length=4 json=true' -o /dev/null | FileCheck %s --check-prefix=JSON
// RUN: not moe-opt %s --moe-print-report='context-length=-1' -o /dev/null 2>&1 | FileCheck %s --check-prefix=BAD

// One dense layer and one MoE layer with 4 experts, top-2: the counts below
// are worked out by hand from the shapes.
//   embedding 16x4 = 64 (tied head), norm 4
//   layer 0: linear 4x4 = 16
//   layer 1: router 4x4 = 16, 4 experts x (8x4 + 4x8) = 4 x 64 = 256
// total 64 + 4 + 16 + 16 + 256 = 356; active = 356 - 2 experts x 64 = 228;
// read per token: the tied table is read whole by the head, so also 228
// (bytes: 64 bf16 + 164 f32 = 784).
// matmul FLOPs/token: 2 x (16 + 16 + 2 x 64 + 64 [head]) = 448.
// CHECK: model tiny (test): 2 layers (1 MoE), hidden 4, vocab 16
// CHECK-NEXT: parameters: 356 total (356), 228 active per token (228), 228 read per token (228)
// CHECK-NEXT: weights: 1.27 KiB (bf16 128 bytes, f32 1,168 bytes), 784 B read per token
// CHECK-NEXT: FLOPs per token: 448 matmul + 0 attention at context 8 (448 + 0)
// CHECK-NEXT: ops: moe.add=1 moe.combine=1 moe.dispatch=1 moe.embedding=1 moe.expert_map=1 moe.experts=1 moe.graph=1 moe.layer=2 moe.linear=1 moe.lm_head=1 moe.return=1 moe.rms_norm=1 moe.router=1 moe.scores=1 moe.top_k=1 moe.weight=6 moe.yield=2
// CHECK-NEXT: layer  kind   experts  top_k     params     active   FLOPs/token
// CHECK-NEXT:     0  dense        -      -         16         16            32
// CHECK-NEXT:     1  moe          4      2        272        144           288
// CHECK-NEXT:     -  other        -      -         68

// JSON: "context_length": 4,
// JSON: "total_params": 356,

// BAD: error: moe-print-report: context-length must be >= 0 (got -1)

moe.model @tiny attributes {architecture = "test", vocab_size = 16, hidden_size = 4, num_layers = 2, max_position_embeddings = 8} {
  moe.param @emb "emb" : tensor<16x4xbf16> init normal std 0.02
  moe.param @norm "norm" : tensor<4xf32> init ones
  moe.param @lin "lin" : tensor<4x4xf32> init normal std 0.02
  moe.param @router "router" : tensor<4x4xf32> init normal std 0.02
  moe.param @u0 "u0" : tensor<4x8x4xf32> init normal std 0.02
  moe.param @d0 "d0" : tensor<4x4x8xf32> init normal std 0.02
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x16xf32> {
    %emb = moe.weight @emb : tensor<16x4xbf16>
    %x = moe.embedding %ids, %emb : tensor<?xi32>, tensor<16x4xbf16> -> tensor<?x4xf32>
    %h0 = moe.layer 0 (%a = %x) : tensor<?x4xf32> {
      %w = moe.weight @lin : tensor<4x4xf32>
      %y = moe.linear %a, %w : tensor<?x4xf32>, tensor<4x4xf32> -> tensor<?x4xf32>
      %z = moe.add %a, %y : tensor<?x4xf32>
      moe.yield %z : tensor<?x4xf32>
    }
    %h1 = moe.layer 1 (%b = %h0) : tensor<?x4xf32> {
      %wr = moe.weight @router : tensor<4x4xf32>
      %l = moe.router %b, %wr : tensor<?x4xf32>, tensor<4x4xf32> -> tensor<?x4xf32>
      %p = moe.scores softmax %l : tensor<?x4xf32>
      %w, %e = moe.top_k %p k 2 : tensor<?x4xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
      %off, %slots = moe.expert_map %e : tensor<?x2xi32> -> tensor<5xi32>, tensor<?xi32>
      %d = moe.dispatch %b, %slots top_k 2 : tensor<?x4xf32>, tensor<?xi32> -> tensor<?x4xf32>
      %u0 = moe.weight @u0 : tensor<4x8x4xf32>
      %d0 = moe.weight @d0 : tensor<4x4x8xf32>
      %y = moe.experts %d, %off top_k 2 act relu up %u0 : tensor<4x8x4xf32> down %d0 : tensor<4x4x8xf32> : tensor<?x4xf32>, tensor<5xi32> -> tensor<?x4xf32>
      %c = moe.combine %y, %slots, %w : tensor<?x4xf32>, tensor<?xi32>, tensor<?x2xf32> -> tensor<?x4xf32>
      moe.yield %c : tensor<?x4xf32>
    }
    %nw = moe.weight @norm : tensor<4xf32>
    %n = moe.rms_norm %h1, %nw eps 1.0e-5 : tensor<?x4xf32>, tensor<4xf32>
    %logits = moe.lm_head %n, %emb tied : tensor<?x4xf32>, tensor<16x4xbf16> -> tensor<?x16xf32>
    moe.return %logits : tensor<?x16xf32>
  }
}
