//===- Linear.cpp - Matrix products: dispatch and the portable path -------===//
//
// Shapes: Y[T, N] (+)= X[T, K] W^T with W [N, K] row-major (HF nn.Linear).
//
// Decode (small T) is memory-bound: gemvRows streams each weight row once,
// strictly sequentially (one row at a time: on Zen 4 interleaving several row
// streams costs up to half the bandwidth), with 64-byte loads, converting
// BF16/F16 to f32 in registers. BF16 rows are split into even/odd elements
// with a shift and a mask, so X is pre-arranged (de-interleaved) to match.
// Threads split the rows.
//
// Prefill (larger T) is compute-bound: 4x4 register tiles (4 weight rows x 4
// tokens) over K, with the next row block prefetched, either with AVX512-BF16
// dot products (activations rounded to bf16; plans with compute dtype BF16)
// or exact f32 FMAs. F32 weights go to OpenBLAS sgemm. Transposed weights
// (GPT-2 Conv1D) and CPUs without AVX-512 convert row panels to f32 and use
// sgemm. The kernels of each family live in RowMajor.cpp and Packed.cpp;
// this file picks one per call and holds the portable panels.
//
//===----------------------------------------------------------------------===//
#include "LinearKernels.h"

#include <cblas.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <vector>

namespace moert::cpu {

//===----------------------------------------------------------------------===//
// Portable path: f32 panels + OpenBLAS
//===----------------------------------------------------------------------===//

// Rows of W converted per panel: 64 rows keep a K=4096 panel within 1 MiB.
static constexpr int64_t kPanelRows = 64;

/// Y[:, n0:n1] via sgemm, converting W to f32 in panels when it is not f32.
static void gemmPanels(WRef W, int64_t N, int64_t K, bool transposed, int64_t n0, int64_t n1,
                       const float *X, int64_t ldx, int64_t T, float *Y, int64_t ldy,
                       bool accumulate, float *panel) {
  float beta = accumulate ? 1.0f : 0.0f;
  // One sgemm per panel of kPanelRows columns at fixed offsets: OpenBLAS may
  // sum in another order for another N, and results must not depend on how
  // many threads or ranks share the work.
  for (int64_t p = n0; p < n1; p += kPanelRows) {
    int64_t pn = std::min(kPanelRows, n1 - p);
    if (W.format != QuantFormat::None) {
      dequantizeRows(W, K, p, p + pn, panel);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(T), int(pn), int(K), 1.0f, X,
                  int(ldx), panel, int(K), beta, Y + p, int(ldy));
      continue;
    }
    if (W.dtype == DType::F32) {
      const float *w = static_cast<const float *>(W.data);
      if (transposed)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(T), int(pn), int(K), 1.0f, X,
                    int(ldx), w + p, int(N), beta, Y + p, int(ldy));
      else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(T), int(pn), int(K), 1.0f, X,
                    int(ldx), w + p * K, int(K), beta, Y + p, int(ldy));
      continue;
    }
    if (transposed) { // panel [K, pn] from columns p..p+pn of W [K, N]
      for (int64_t k = 0; k < K; ++k)
        for (int64_t j = 0; j < pn; ++j)
          panel[k * pn + j] = loadAsF32(W.data, W.dtype, size_t(k * N + p + j));
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(T), int(pn), int(K), 1.0f, X,
                  int(ldx), panel, int(pn), beta, Y + p, int(ldy));
    } else {
      if (W.layout == Layout::Packed16) {
        for (int64_t j = 0; j < pn; ++j)
          for (int64_t k = 0; k < K; ++k)
            panel[j * K + k] = weightAt(W, K, p + j, k);
      } else {
        for (int64_t j = 0; j < pn * K; ++j)
          panel[j] = loadAsF32(W.data, W.dtype, size_t(p * K + j));
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(T), int(pn), int(K), 1.0f, X,
                  int(ldx), panel, int(K), beta, Y + p, int(ldy));
    }
  }
}

//===----------------------------------------------------------------------===//
// Dispatch
//===----------------------------------------------------------------------===//

// Up to this many tokens the row-streaming kernels win: the weight traffic
// dominates and the tiles' 4-row interleaved reads stream worse.
static constexpr int64_t kGemvMaxT = 3;   // exact f32 FMAs
static constexpr int64_t kDpRowsMaxT = 8; // bf16 dot products
// Rows of a quantized W per block when more than 4 tokens stream it: at most
// 64 x K bytes (FP8), well inside L2 for every K of today's models.
static constexpr int64_t kQuantRows = 64;
// Up to this many tokens a quantized W streams 4 tokens at a time; beyond,
// dequantized f32 panels and sgemm (equal for FP8 at 64, kernel-bench).
static constexpr int64_t kQuantChunkMaxT = 64;

static void addBias(ThreadPool &, WRef bias, int64_t N, int64_t T, float *Y, int64_t ldy) {
  if (!bias)
    return;
  for (int64_t t = 0; t < T; ++t) {
    float *y = Y + t * ldy;
    if (bias.dtype == DType::F32) {
      const float *b = static_cast<const float *>(bias.data);
      for (int64_t n = 0; n < N; ++n)
        y[n] += b[n];
    } else {
      for (int64_t n = 0; n < N; ++n)
        y[n] += loadAsF32(bias.data, bias.dtype, size_t(n));
    }
  }
}

void linear(ThreadPool &pool, Workspace &ws, const float *X, int64_t ldx, int64_t T, WRef W,
            int64_t N, int64_t K, bool transposed, WRef bias, float *Y, int64_t ldy,
            bool accumulate, Precision prec) {
  if (T <= 0 || N <= 0)
    return;
  if (W.layout == Layout::Packed16 && (transposed || W.dtype != DType::BF16))
    throw std::logic_error("packed weights are BF16 and not transposed");
  Isa isa = activeIsa();
  bool panels = linearStrategy() == LinearStrategy::Panels;
  if (W.format != QuantFormat::None) {
    if (transposed)
      throw std::logic_error("quantized weights are not transposed");
    // The row-streaming kernels take up to 4 tokens; more run 4 at a time
    // over each block of kQuantRows rows, which stays in cache between the
    // chunks: the weights come from memory once for all T tokens and nothing
    // is dequantized to memory. (The f32 panels below were 20-25x slower
    // than 4 tokens from T = 5 on: kernel-bench, MXFP4 and FP8.)
    const int64_t chunks = (T + 3) / 4;
    auto eachChunk = [&](size_t n0, size_t n1, auto &&run) {
      for (int64_t nb = int64_t(n0); nb < int64_t(n1); nb += kQuantRows)
        for (int64_t c = 0; c < chunks; ++c)
          run(nb, std::min(int64_t(n1), nb + kQuantRows), c, std::min<int64_t>(4, T - 4 * c),
              Y + 4 * c * ldy);
    };
    const bool stream = T <= kQuantChunkMaxT && !panels;
    // MXFP4 and FP8 with AVX512-BF16 dot products where the plan computes
    // in bf16: X rounded and stored once in the kernel's order.
    const bool mxBf16 = isa == Isa::Avx512Bf16 && W.format == QuantFormat::MXFP4;
    if (prec == Precision::BF16 && stream && (mxBf16 || fp8Bf16Supported(W))) {
      const int64_t stride = mxBf16 ? mxfp4XStride(K) : fp8XStride(K);
      auto *Xb = static_cast<uint16_t *>(ws.shared(4, size_t(T * stride) * 2));
      (mxBf16 ? toBf16Mxfp4X : toBf16Fp8X)(X, ldx, T, K, Xb);
      auto kernel = mxBf16 ? gemvMxfp4Bf16 : gemvFp8Bf16;
      pool.parallelFor(size_t(N), 16, [&](size_t n0, size_t n1, int) {
        eachChunk(n0, n1, [&](int64_t a, int64_t b, int64_t c, int64_t Tc, float *Yc) {
          kernel(W, K, a, b, Xb + 4 * c * stride, Tc, Yc, ldy, accumulate);
        });
      });
    } else if (isa != Isa::Scalar && stream && W.format == QuantFormat::MXFP4) {
      auto *Xd = static_cast<float *>(ws.shared(4, size_t(T * K) * 4));
      deinterleaveMxfp4X(X, ldx, T, K, Xd);
      pool.parallelFor(size_t(N), 16, [&](size_t n0, size_t n1, int) {
        eachChunk(n0, n1, [&](int64_t a, int64_t b, int64_t c, int64_t Tc, float *Yc) {
          gemvMxfp4Avx512(W, K, a, b, Xd + 4 * c * K, Tc, Yc, ldy, accumulate);
        });
      });
    } else if (isa != Isa::Scalar && stream) {
      auto *scratch = static_cast<float *>(ws.shared(0, size_t(T * K) * 4));
      std::vector<Fp8X> fx(static_cast<size_t>(chunks));
      for (int64_t c = 0; c < chunks; ++c)
        fx[size_t(c)] = prepareFp8X(X + 4 * c * ldx, ldx, std::min<int64_t>(4, T - 4 * c), K,
                                    scratch + 4 * c * K);
      pool.parallelFor(size_t(N), 16, [&](size_t n0, size_t n1, int) {
        eachChunk(n0, n1, [&](int64_t a, int64_t b, int64_t c, int64_t, float *Yc) {
          gemvFp8Avx512(W, K, a, b, fx[size_t(c)], Yc, ldy, accumulate);
        });
      });
    } else {
      size_t panelBytes = size_t(kPanelRows * K) * 4;
      ws.reserveLocal(panelBytes);
      pool.parallelFor(size_t(N), size_t(kPanelRows), [&](size_t n0, size_t n1, int tid) {
        gemmPanels(W, N, K, false, int64_t(n0), int64_t(n1), X, ldx, T, Y, ldy, accumulate,
                   static_cast<float *>(ws.local(tid, panelBytes)));
      });
    }
    addBias(pool, bias, N, T, Y, ldy);
    return;
  }
  if (transposed || isa == Isa::Scalar || panels || (T > kGemvMaxT && W.dtype == DType::F32)) {
    if (T <= kGemvMaxT && !transposed && isa == Isa::Scalar && !panels) {
      pool.parallelFor(size_t(N), 16, [&](size_t n0, size_t n1, int) {
        gemvRowsScalar(W, K, int64_t(n0), int64_t(n1), X, ldx, T, Y, ldy,
                       accumulate);
      });
    } else {
      size_t panelBytes = size_t(kPanelRows * K) * 4;
      ws.reserveLocal(panelBytes);
      pool.parallelFor(size_t(N), size_t(kPanelRows), [&](size_t n0, size_t n1, int tid) {
        gemmPanels(W, N, K, transposed, int64_t(n0), int64_t(n1), X, ldx, T, Y, ldy,
                   accumulate, static_cast<float *>(ws.local(tid, panelBytes)));
      });
    }
    addBias(pool, bias, N, T, Y, ldy);
    return;
  }
  bool dp = W.dtype == DType::BF16 && prec == Precision::BF16 && isa == Isa::Avx512Bf16;
  if (W.layout == Layout::Packed16) {
    const auto *w = static_cast<const uint16_t *>(W.data);
    if (T == 1) {
      const int64_t K2 = pairsOf(K);
      auto *x = static_cast<float *>(ws.shared(0, size_t(2 * K2) * 4));
      packXPairsF32(X, ldx, 1, K, x);
      pool.parallelFor(size_t((N + 15) / 16), 1, [&](size_t b0, size_t b1, int) {
        gemvPacked(w, N, K2, int64_t(b0), int64_t(b1), x, Y, accumulate);
      });
    } else {
      linearPackedTiles(pool, ws, X, ldx, T, w, N, K, Y, ldy, accumulate, dp);
    }
    addBias(pool, bias, N, T, Y, ldy);
    return;
  }
  int64_t Kp = roundUp(K, 32);
  if (dp && T >= 2 && T <= kDpRowsMaxT) {
    auto *Xb = static_cast<uint16_t *>(ws.shared(0, size_t(T * Kp) * 2));
    packRowsBf16(X, ldx, T, K, Xb);
    DpRowsFn fn = dpRowsFor(T);
    pool.parallelFor(size_t(N), 16, [&](size_t n0, size_t n1, int) {
      fn(static_cast<const uint16_t *>(W.data), K, int64_t(n0), int64_t(n1), Xb, Y, ldy,
         accumulate);
    });
  } else if (T <= kGemvMaxT) {
    float *Xp = static_cast<float *>(ws.shared(0, size_t(T * Kp) * 4));
    packRowsF32(X, ldx, T, K, W.dtype, Xp);
    GemvFn fn = gemvFor(W.dtype, T);
    pool.parallelFor(size_t(N), 16, [&](size_t n0, size_t n1, int) {
      fn(W.data, K, int64_t(n0), int64_t(n1), Xp, Y, ldy, accumulate);
    });
  } else {
    int64_t Tp = roundUp(T, 4);
    const void *Xpk;
    if (dp) {
      auto *Xb = static_cast<uint16_t *>(ws.shared(0, size_t(Kp * Tp) * 2));
      packXBf16(X, ldx, T, K, Tp, Xb);
      Xpk = Xb;
    } else {
      auto *Xf = static_cast<float *>(ws.shared(0, size_t(Kp * Tp) * 4));
      packXF32(X, ldx, T, K, Tp, W.dtype, Xf);
      Xpk = Xf;
    }
    TilesFn fn = tilesFor(dp, W.dtype);
    pool.parallelFor(size_t(N), 4, [&](size_t n0, size_t n1, int) {
      fn(W.data, K, int64_t(n0), int64_t(n1), Xpk, T, Tp, Y, ldy, accumulate);
    });
  }
  addBias(pool, bias, N, T, Y, ldy);
}

void linearBatch(ThreadPool &pool, Workspace &ws, const std::vector<GemvJob> &jobs,
                 Precision prec) {
  // Quantized jobs (FP8, MXFP4) join the pass, with x prepared for their
  // kernel, unless the panels strategy is forced.
  bool fp8 = false, quant = false;
  for (const GemvJob &j : jobs) {
    fp8 = fp8 || j.w.format == QuantFormat::FP8E4M3Block;
    quant = quant || j.w.format != QuantFormat::None;
  }
  if (activeIsa() == Isa::Scalar || jobs.size() == 1 ||
      (quant && linearStrategy() == LinearStrategy::Panels)) {
    for (const GemvJob &j : jobs)
      linear(pool, ws, j.x, j.K, 1, j.w, j.N, j.K, false, j.bias, j.y, j.N, j.accumulate, prec);
    return;
  }
  // Each job's x in its weight's order, and its rows at an offset of a
  // virtual row space (16-aligned, so chunks never split a reduce group or a
  // packed block).
  std::vector<int64_t> rowStart(jobs.size() + 1, 0), xOff(jobs.size() + 1, 0);
  for (size_t i = 0; i < jobs.size(); ++i) {
    rowStart[i + 1] = rowStart[i] + roundUp(jobs[i].N, 16);
    // (MXFP4's bf16 x pads K to 128 values: half as many floats' room.)
    xOff[i + 1] = xOff[i] + std::max(roundUp(jobs[i].K, 32), mxfp4XStride(jobs[i].K) / 2);
  }
  auto *xs = static_cast<float *>(ws.shared(0, size_t(xOff.back()) * 4));
  // Each job's kernel, decided once for the preparation of its x and for
  // its rows. FP8 and MXFP4 take AVX512-BF16 dot products where the plan
  // computes in bf16 and the CPU and blocks allow.
  enum class Kernel { Fp8Bf16, Fp8, Mxfp4Bf16, Mxfp4, Packed, Rows };
  const bool mxBf16 = prec == Precision::BF16 && activeIsa() == Isa::Avx512Bf16;
  std::vector<Kernel> kernel(jobs.size());
  for (size_t i = 0; i < jobs.size(); ++i) {
    const WRef &w = jobs[i].w;
    kernel[i] = w.format == QuantFormat::FP8E4M3Block
                    ? (prec == Precision::BF16 && fp8Bf16Supported(w) ? Kernel::Fp8Bf16
                                                                       : Kernel::Fp8)
                : w.format == QuantFormat::MXFP4 ? (mxBf16 ? Kernel::Mxfp4Bf16 : Kernel::Mxfp4)
                : w.layout == Layout::Packed16   ? Kernel::Packed
                                                 : Kernel::Rows;
  }
  std::vector<Fp8X> fx(fp8 ? jobs.size() : 0);
  // A job with the x, K and kernel of the one before (a token's routed
  // experts, gate and up) reads that job's prepared x.
  auto sameX = [&](size_t i) {
    const GemvJob &a = jobs[i - 1], &b = jobs[i];
    return a.x == b.x && a.K == b.K && kernel[i - 1] == kernel[i] && a.w.dtype == b.w.dtype &&
           a.w.blockCols == b.w.blockCols;
  };
  for (size_t i = 0; i < jobs.size(); ++i) {
    if (i > 0 && sameX(i)) {
      xOff[i] = xOff[i - 1];
      if (fp8)
        fx[i] = fx[i - 1];
      continue;
    }
    const GemvJob &j = jobs[i];
    float *x = xs + xOff[i];
    switch (kernel[i]) {
    case Kernel::Fp8Bf16: // bf16: half the room
      toBf16Fp8X(j.x, j.K, 1, j.K, reinterpret_cast<uint16_t *>(x));
      break;
    case Kernel::Fp8:
      fx[i] = prepareFp8X(j.x, j.K, 1, j.K, x);
      break;
    case Kernel::Mxfp4Bf16: // bf16 pairs: half the floats' room
      toBf16Mxfp4X(j.x, j.K, 1, j.K, reinterpret_cast<uint16_t *>(x));
      break;
    case Kernel::Mxfp4:
      deinterleaveMxfp4X(j.x, j.K, 1, j.K, x);
      break;
    case Kernel::Packed:
      packXPairsF32(j.x, j.K, 1, j.K, x);
      break;
    case Kernel::Rows:
      packRowsF32(j.x, j.K, 1, j.K, j.w.dtype, x);
      break;
    }
  }
  pool.parallelFor(size_t(rowStart.back()), 16, [&](size_t b, size_t e, int) {
    for (size_t i = 0; i < jobs.size(); ++i) {
      int64_t lo = std::max<int64_t>(int64_t(b), rowStart[i]);
      int64_t hi = std::min<int64_t>(int64_t(e), rowStart[i] + jobs[i].N);
      if (lo >= hi)
        continue;
      const GemvJob &j = jobs[i];
      const float *x = xs + xOff[i];
      const auto *xb = reinterpret_cast<const uint16_t *>(x);
      lo -= rowStart[i];
      hi -= rowStart[i];
      switch (kernel[i]) {
      case Kernel::Fp8Bf16:
        gemvFp8Bf16(j.w, j.K, lo, hi, xb, 1, j.y, j.N, j.accumulate);
        break;
      case Kernel::Fp8:
        gemvFp8Avx512(j.w, j.K, lo, hi, fx[i], j.y, j.N, j.accumulate);
        break;
      case Kernel::Mxfp4Bf16:
        gemvMxfp4Bf16(j.w, j.K, lo, hi, xb, 1, j.y, j.N, j.accumulate);
        break;
      case Kernel::Mxfp4:
        gemvMxfp4Avx512(j.w, j.K, lo, hi, x, 1, j.y, j.N, j.accumulate);
        break;
      case Kernel::Packed:
        gemvPacked(static_cast<const uint16_t *>(j.w.data), j.N, pairsOf(j.K), lo / 16,
                   (hi + 15) / 16, x, j.y, j.accumulate);
        break;
      case Kernel::Rows:
        gemvFor(j.w.dtype, 1)(j.w.data, j.K, lo, hi, x, j.y, j.N, j.accumulate);
        break;
      }
    }
  });
  for (const GemvJob &j : jobs)
    addBias(pool, j.bias, j.N, 1, j.y, j.N);
}

void linearMulti(ThreadPool &pool, Workspace &ws, const float *X, int64_t ldx, int64_t T,
                 int64_t K, const std::vector<MatJob> &jobs, Precision prec) {
  if (T <= 0 || jobs.empty())
    return;
  Isa isa = activeIsa();
  bool together = jobs.size() > 1 && isa != Isa::Scalar &&
                  linearStrategy() == LinearStrategy::Auto;
  for (const MatJob &j : jobs)
    together = together && j.w.layout == Layout::Packed16;
  if (together && T == 1) {
    std::vector<GemvJob> g;
    for (const MatJob &j : jobs)
      g.push_back({X, j.w, j.N, K, j.bias, j.y, j.accumulate});
    linearBatch(pool, ws, g, prec);
    return;
  }
  if (!together) {
    for (const MatJob &j : jobs)
      linear(pool, ws, X, ldx, T, j.w, j.N, K, false, j.bias, j.y, j.ldy, j.accumulate, prec);
    return;
  }
  // One pass over the jobs' blocks laid end to end: one packing of X, one
  // split of the work and one synchronization.
  bool dp = prec == Precision::BF16 && isa == Isa::Avx512Bf16;
  const void *Xp = packXPairs(ws, X, ldx, T, K, dp);
  const int64_t K2 = pairsOf(K);
  std::vector<int64_t> start(jobs.size() + 1, 0);
  for (size_t i = 0; i < jobs.size(); ++i)
    start[i + 1] = start[i] + (jobs[i].N + 15) / 16;
  pool.parallelFor(size_t(start.back()), 1, [&](size_t b, size_t e, int) {
    for (size_t i = 0; i < jobs.size(); ++i) {
      int64_t lo = std::max<int64_t>(int64_t(b), start[i]) - start[i];
      int64_t hi = std::min<int64_t>(int64_t(e), start[i + 1]) - start[i];
      if (lo < hi)
        packedBlocks(static_cast<const uint16_t *>(jobs[i].w.data), jobs[i].N, K2, lo, hi, Xp, T,
                     jobs[i].y, jobs[i].ldy, jobs[i].accumulate, dp);
    }
  });
  for (const MatJob &j : jobs)
    addBias(pool, j.bias, j.N, T, j.y, j.ldy);
}

} // namespace moert::cpu

