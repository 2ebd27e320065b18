// One MoE layer as the importers write it (unfused gating): RMSNorm, router,
// softmax top-2 with renormalization, 4 experts (SwiGLU) and a shared expert,
// on a device grid of 2 nodes x 2 ranks. docs/pipeline.md runs the default
// pipeline's passes over it one by one.
moe.model @tiny attributes {architecture = "mixtral", vocab_size = 32, hidden_size = 8, num_layers = 1, max_position_embeddings = 64} {
  shard.grid @devices(shape = 2x2)
  moe.param @embed "embed_tokens.weight" : tensor<32x8xf32> init normal std 0.02
  moe.param @norm "layers.0.norm.weight" : tensor<8xf32> init ones
  moe.param @router "layers.0.router.weight" : tensor<4x8xf32> init normal std 0.02
  moe.param @g "layers.0.experts.{e}.gate.weight" : tensor<4x16x8xf32> source <tensor = "layers.0.experts.{e}.gate.weight"> init normal std 0.02
  moe.param @u "layers.0.experts.{e}.up.weight" : tensor<4x16x8xf32> source <tensor = "layers.0.experts.{e}.up.weight"> init normal std 0.02
  moe.param @d "layers.0.experts.{e}.down.weight" : tensor<4x8x16xf32> source <tensor = "layers.0.experts.{e}.down.weight"> init normal std 0.02
  moe.param @su "layers.0.shared.up.weight" : tensor<16x8xf32> init normal std 0.02
  moe.param @sd "layers.0.shared.down.weight" : tensor<8x16xf32> init normal std 0.02
  moe.param @fnorm "norm.weight" : tensor<8xf32> init ones
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x32xf32> {
    %wte = moe.weight @embed : tensor<32x8xf32>
    %x = moe.embedding %ids, %wte : tensor<?xi32>, tensor<32x8xf32> -> tensor<?x8xf32>
    %l = moe.layer 0 (%h = %x) : tensor<?x8xf32> {
      %nw = moe.weight @norm : tensor<8xf32>
      %n = moe.rms_norm %h, %nw eps 1.0e-6 : tensor<?x8xf32>, tensor<8xf32>
      %wr = moe.weight @router : tensor<4x8xf32>
      %logits = moe.router %n, %wr : tensor<?x8xf32>, tensor<4x8xf32> -> tensor<?x4xf32>
      %p = moe.scores softmax %logits : tensor<?x4xf32>
      %w, %e = moe.top_k %p k 2 : tensor<?x4xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
      %wn = moe.renormalize %w : tensor<?x2xf32>
      %off, %slots = moe.expert_map %e : tensor<?x2xi32> -> tensor<5xi32>, tensor<?xi32>
      %d = moe.dispatch %n, %slots top_k 2 : tensor<?x8xf32>, tensor<?xi32> -> tensor<?x8xf32>
      %g = moe.weight @g : tensor<4x16x8xf32>
      %u = moe.weight @u : tensor<4x16x8xf32>
      %dw = moe.weight @d : tensor<4x8x16xf32>
      %y = moe.experts %d, %off top_k 2 act silu up %u : tensor<4x16x8xf32> gate %g : tensor<4x16x8xf32> down %dw : tensor<4x8x16xf32> : tensor<?x8xf32>, tensor<5xi32> -> tensor<?x8xf32>
      %c = moe.combine %y, %slots, %wn : tensor<?x8xf32>, tensor<?xi32>, tensor<?x2xf32> -> tensor<?x8xf32>
      %su = moe.weight @su : tensor<16x8xf32>
      %sd = moe.weight @sd : tensor<8x16xf32>
      %s = moe.mlp %n up %su down %sd act silu : (tensor<?x8xf32>, tensor<16x8xf32>, tensor<8x16xf32>) -> tensor<?x8xf32>
      %m = moe.add %c, %s : tensor<?x8xf32>
      %o = moe.add %h, %m : tensor<?x8xf32>
      moe.yield %o : tensor<?x8xf32>
    }
    %fw = moe.weight @fnorm : tensor<8xf32>
    %f = moe.rms_norm %l, %fw eps 1.0e-6 : tensor<?x8xf32>, tensor<8xf32>
    %lm = moe.lm_head %f, %wte tied : tensor<?x8xf32>, tensor<32x8xf32> -> tensor<?x32xf32>
    moe.return %lm : tensor<?x32xf32>
  }
}
