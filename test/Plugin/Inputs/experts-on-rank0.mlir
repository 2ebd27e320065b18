// One MoE layer with 8 experts on a 2x2 device grid, all placed on rank 0
// (as a hand-made placement might leave them), with the exchanges around the
// experts.
moe.model @m attributes {architecture = "test", vocab_size = 16, hidden_size = 8, num_layers = 1, max_position_embeddings = 16} {
  shard.grid @devices(shape = 2x2)
  moe.param @wte "wte" : tensor<16x8xf32> init normal std 0.02
  moe.param @router "router" : tensor<8x8xf32> init normal std 0.02
  moe.param @u "u" : tensor<8x4x8xf32> init normal std 0.02
  moe.param @d "d" : tensor<8x8x4xf32> init normal std 0.02
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x16xf32> {
    %wte = moe.weight @wte : tensor<16x8xf32>
    %x = moe.embedding %ids, %wte : tensor<?xi32>, tensor<16x8xf32> -> tensor<?x8xf32>
    %l = moe.layer 0 (%h = %x) : tensor<?x8xf32> {
      %wr = moe.weight @router : tensor<8x8xf32>
      %logits = moe.router %h, %wr : tensor<?x8xf32>, tensor<8x8xf32> -> tensor<?x8xf32>
      %e, %w, %off, %slots = moe.gate %logits routing <top_k = 2> : tensor<?x8xf32> -> tensor<?x2xi32>, tensor<?x2xf32>, tensor<9xi32>, tensor<?xi32>
      %dsp = moe.dispatch %h, %slots top_k 2 : tensor<?x8xf32>, tensor<?xi32> -> tensor<?x8xf32>
      %in = moe.all_to_all dispatch %dsp, %off on @devices axes [0, 1] placement <ranks = 4, experts = [0, 0, 0, 0, 0, 0, 0, 0]> : tensor<?x8xf32>, tensor<9xi32>
      %u = moe.weight @u : tensor<8x4x8xf32>
      %dw = moe.weight @d : tensor<8x8x4xf32>
      %y = moe.experts %in, %off top_k 2 act gelu up %u : tensor<8x4x8xf32> down %dw : tensor<8x8x4xf32> placement <ranks = 4, experts = [0, 0, 0, 0, 0, 0, 0, 0]> : tensor<?x8xf32>, tensor<9xi32> -> tensor<?x8xf32>
      %out = moe.all_to_all combine %y, %off on @devices axes [0, 1] placement <ranks = 4, experts = [0, 0, 0, 0, 0, 0, 0, 0]> : tensor<?x8xf32>, tensor<9xi32>
      %c = moe.combine %out, %slots, %w : tensor<?x8xf32>, tensor<?xi32>, tensor<?x2xf32> -> tensor<?x8xf32>
      %o = moe.add %h, %c : tensor<?x8xf32>
      moe.yield %o : tensor<?x8xf32>
    }
    %lm = moe.lm_head %l, %wte tied : tensor<?x8xf32>, tensor<16x8xf32> -> tensor<?x16xf32>
    moe.return %lm : tensor<?x16xf32>
  }
}
