func.func @f(%l: tensor<?x8xf32>) {
  %e, %w, %o, %s = moe.gate %l routing <top_k = 0> : tensor<?x8xf32> -> tensor<?x1xi32>, tensor<?x1xf32>, tensor<9xi32>, tensor<?xi32>
  return
}
