//===- KernelsTest.cpp - CPU kernels against naive references -------------===//
#include "TestUtil.h"

#include "moert/Error.h"
#include "moert/cpu/Kernels.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <optional>

using namespace moert;
using namespace moert::cpu;
using namespace moetest;

namespace {

/// Restores the ISA after a test forced one.
struct IsaGuard {
  Isa saved = activeIsa();
  ~IsaGuard() { setIsa(saved); }
};

std::vector<Isa> availableIsas() {
  std::vector<Isa> v{Isa::Scalar};
  if (detectIsa() >= Isa::Avx512)
    v.push_back(Isa::Avx512);
  if (detectIsa() >= Isa::Avx512Bf16)
    v.push_back(Isa::Avx512Bf16);
  return v;
}

struct LinearCase {
  int64_t T, N, K;
  DType wt;
  bool transposed, bias, accumulate;
  Precision prec;
  Layout layout = Layout::RowMajor;
};

/// W [N, K] bf16 (row-major bytes) in Layout::Packed16, 64-byte aligned.
struct PackedCopy {
  std::vector<uint16_t> mem;
  uint16_t *p = nullptr;
  PackedCopy(const std::vector<uint8_t> &w, int64_t N, int64_t K) {
    mem.assign(size_t(packedBytes(N, K)) / 2 + 32, 0xffff); // padding must be written
    p = reinterpret_cast<uint16_t *>((reinterpret_cast<uintptr_t>(mem.data()) + 63) & ~uintptr_t(63));
    const auto *src = reinterpret_cast<const uint16_t *>(w.data());
    // Two row ranges, as concurrent packing jobs would split it.
    int64_t mid = std::min<int64_t>(N, 16);
    packBf16(src, N, K, 0, mid, p);
    if (mid < N)
      packBf16(src + mid * K, N, K, mid, N, p);
  }
};

void checkLinear(const LinearCase &c, Isa isa, int threads) {
  SCOPED_TRACE(::testing::Message() << "isa=" << isaName(isa) << " threads=" << threads
                                    << " packed=" << (c.layout == Layout::Packed16)
                                    << " T=" << c.T << " N=" << c.N << " K=" << c.K
                                    << " w=" << dtypeName(c.wt) << " tr=" << c.transposed
                                    << " bias=" << c.bias << " acc=" << c.accumulate
                                    << " bf16=" << (c.prec == Precision::BF16));
  IsaGuard g;
  setIsa(isa);
  ThreadPool pool(threads);
  Workspace ws(threads);
  const int64_t ldx = c.K + 3, ldy = c.N + 5; // strides wider than the rows
  std::vector<float> X = randomFloats(size_t(c.T * ldx), 1);
  std::vector<uint8_t> wbytes, bbytes;
  std::vector<float> W = roundTo(c.wt, randomFloats(size_t(c.N * c.K), 2), wbytes);
  std::vector<float> B = roundTo(c.wt, randomFloats(size_t(c.N), 3), bbytes);
  std::vector<float> Y0 = randomFloats(size_t(c.T * ldy), 4), Y = Y0;
  WRef wref{wbytes.data(), c.wt};
  std::optional<PackedCopy> packed;
  if (c.layout == Layout::Packed16) {
    packed.emplace(wbytes, c.N, c.K);
    wref = {packed->p, c.wt, Layout::Packed16};
    for (int64_t n = 0; n < c.N; ++n)
      for (int64_t k = 0; k < c.K; ++k)
        ASSERT_EQ(weightAt(wref, c.K, n, k), W[size_t(n * c.K + k)]);
  }
  linear(pool, ws, X.data(), ldx, c.T, wref, c.N, c.K, c.transposed,
         c.bias ? WRef{bbytes.data(), c.wt} : WRef{}, Y.data(), ldy, c.accumulate, c.prec);
  // bf16 activations: each product is off by up to 2^-8 relative.
  bool roundsX = c.prec == Precision::BF16 && c.wt == DType::BF16;
  for (int64_t t = 0; t < c.T; ++t)
    for (int64_t n = 0; n < c.N; ++n) {
      double ref = c.accumulate ? Y0[size_t(t * ldy + n)] : 0.0, mag = std::abs(ref);
      for (int64_t k = 0; k < c.K; ++k) {
        double w = c.transposed ? W[size_t(k * c.N + n)] : W[size_t(n * c.K + k)];
        double p = double(X[size_t(t * ldx + k)]) * w;
        ref += p;
        mag += std::abs(p);
      }
      if (c.bias) {
        ref += B[size_t(n)];
        mag += std::abs(B[size_t(n)]);
      }
      double tol = (roundsX ? 8e-3 : 2e-6) * mag + 1e-6;
      ASSERT_NEAR(Y[size_t(t * ldy + n)], ref, tol) << "t=" << t << " n=" << n;
    }
  // Columns beyond N are untouched.
  for (int64_t t = 0; t < c.T; ++t)
    for (int64_t n = c.N; n < ldy; ++n)
      ASSERT_EQ(Y[size_t(t * ldy + n)], Y0[size_t(t * ldy + n)]);
}

} // namespace

TEST(Linear, AllDtypesShapesAndIsas) {
  const int64_t shapes[][2] = {{1, 1}, {5, 7}, {37, 61}, {16, 32}, {67, 100}, {130, 333}};
  for (Isa isa : availableIsas())
    for (DType wt : {DType::F32, DType::BF16, DType::F16})
      for (auto &s : shapes)
        for (int64_t T : {1, 2, 3, 4, 5, 9})
          checkLinear({T, s[0], s[1], wt, false, (T + s[0]) % 2 == 0, T % 3 == 1, Precision::F32},
                      isa, T % 2 ? 1 : 3);
}

TEST(Linear, Bf16Precision) {
  for (Isa isa : availableIsas())
    for (int64_t T : {1, 4, 7, 17})
      for (auto s : {std::pair<int64_t, int64_t>{35, 64}, {64, 1000}, {9, 33}})
        checkLinear({T, s.first, s.second, DType::BF16, false, true, T == 7, Precision::BF16},
                    isa, 2);
}

TEST(Linear, PackedBf16EveryTileAndIsa) {
  // Token counts across the 24-token dot-product tiles and 12-token exact
  // tiles (one, two and three tiles, uneven splits); rows not a multiple of
  // 16, odd K.
  const int64_t shapes[][2] = {{1, 1}, {5, 7}, {37, 61}, {16, 32}, {130, 333}, {48, 1000}};
  for (Isa isa : availableIsas())
    for (auto &s : shapes)
      for (int64_t T : {1, 2, 3, 5, 12, 13, 20, 24, 25, 37, 50})
        for (Precision prec : {Precision::F32, Precision::BF16})
          checkLinear({T, s[0], s[1], DType::BF16, false, T % 2 == 0, T % 3 == 1, prec,
                       Layout::Packed16},
                      isa, T % 2 ? 1 : 3);
}

TEST(Linear, PackedSuperBlocksOverSeveralTiles) {
  // Rows of 1500 pairs: a few 16-row blocks at a time go through every token
  // tile (seven groups of four blocks here), with x packed per tile.
  for (Isa isa : availableIsas())
    for (int64_t T : {30, 50})
      for (Precision prec : {Precision::F32, Precision::BF16})
        checkLinear({T, 400, 3001, DType::BF16, false, T == 30, false, prec, Layout::Packed16},
                    isa, T == 30 ? 1 : 3);
}

TEST(Linear, PackedResultsDoNotDependOnThreads) {
  const int64_t N = 200, K = 301;
  std::vector<uint8_t> wbytes;
  roundTo(DType::BF16, randomFloats(size_t(N * K), 5), wbytes);
  PackedCopy pk(wbytes, N, K);
  for (int64_t T : {1, 7, 30})
    for (Precision prec : {Precision::F32, Precision::BF16}) {
      std::vector<float> X = randomFloats(size_t(T * K), 6);
      std::vector<std::vector<float>> ys;
      for (int threads : {1, 2, 3, 5}) {
        ThreadPool pool(threads);
        Workspace ws(threads);
        ys.emplace_back(size_t(T * N));
        linear(pool, ws, X.data(), K, T, {pk.p, DType::BF16, Layout::Packed16}, N, K, false, {},
               ys.back().data(), N, false, prec);
      }
      for (size_t i = 1; i < ys.size(); ++i)
        EXPECT_EQ(ys[i], ys[0]) << "T=" << T;
    }
}

TEST(Linear, TransposedWeights) {
  for (Isa isa : availableIsas())
    for (DType wt : {DType::F32, DType::BF16, DType::F16})
      for (int64_t T : {1, 6})
        checkLinear({T, 70, 65, wt, true, true, T == 6, Precision::F32}, isa, 2);
}

TEST(Linear, LargeRowsSplitAcrossThreads) {
  for (Isa isa : availableIsas())
    for (DType wt : {DType::BF16, DType::F32})
      checkLinear({1, 1000, 512, wt, false, false, false, Precision::F32}, isa, 4);
}

TEST(Norm, LayerNormAndRmsNormOverColumnGroups) {
  const int64_t rows = 3, ld = 40, col = 8, cols = 24, dim = 8;
  std::vector<float> in = randomFloats(size_t(rows * ld), 5);
  std::vector<float> w = randomFloats(size_t(dim), 6), b = randomFloats(size_t(dim), 7);
  std::vector<float> out(size_t(rows * ld), 123.0f);
  layerNorm(in.data(), ld, out.data(), ld, rows, col, cols, dim, {w.data(), DType::F32},
            {b.data(), DType::F32}, 1e-5f);
  std::vector<float> rms(size_t(rows * ld), 123.0f);
  rmsNorm(in.data(), ld, rms.data(), ld, rows, col, cols, dim, {w.data(), DType::F32}, 1e-6f,
          0.5f);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < ld; ++c) {
      size_t i = size_t(r * ld + c);
      if (c < col || c >= col + cols) {
        EXPECT_EQ(out[i], 123.0f);
        EXPECT_EQ(rms[i], 123.0f);
        continue;
      }
      int64_t g = col + (c - col) / dim * dim, d = (c - col) % dim;
      double mean = 0, var = 0, ss = 0;
      for (int64_t j = 0; j < dim; ++j)
        mean += in[size_t(r * ld + g + j)];
      mean /= dim;
      for (int64_t j = 0; j < dim; ++j) {
        double x = in[size_t(r * ld + g + j)];
        var += (x - mean) * (x - mean);
        ss += x * x;
      }
      var /= dim;
      double ln = (in[i] - mean) / std::sqrt(var + 1e-5) * w[size_t(d)] + b[size_t(d)];
      double rn = in[i] / std::sqrt(ss / dim + 1e-6) * (0.5 + w[size_t(d)]);
      EXPECT_NEAR(out[i], ln, 1e-5);
      EXPECT_NEAR(rms[i], rn, 1e-5);
    }
}

TEST(Rope, NeoXAndInterleavedMatchTheRotation) {
  const int heads = 3, hd = 8, rd = 6;
  const int64_t T = 4, ld = heads * hd + 2;
  std::vector<int64_t> pos{0, 5, 17, 99};
  std::vector<float> cosT, sinT;
  ropeTables(100, rd, 10000.0, cosT, sinT);
  for (bool inter : {false, true}) {
    std::vector<float> buf = randomFloats(size_t(T * ld), 8), orig = buf;
    rope(buf.data(), ld, T, pos.data(), heads, hd, rd, cosT.data(), sinT.data(), inter);
    for (int64_t t = 0; t < T; ++t)
      for (int h = 0; h < heads; ++h)
        for (int i = 0; i < rd / 2; ++i) {
          double a = double(pos[size_t(t)]) * std::pow(10000.0, -2.0 * i / rd);
          int i1 = inter ? 2 * i : i, i2 = inter ? 2 * i + 1 : i + rd / 2;
          size_t b = size_t(t * ld + h * hd);
          double x1 = orig[b + size_t(i1)], x2 = orig[b + size_t(i2)];
          EXPECT_NEAR(buf[b + size_t(i1)], x1 * std::cos(a) - x2 * std::sin(a), 1e-5);
          EXPECT_NEAR(buf[b + size_t(i2)], x2 * std::cos(a) + x1 * std::sin(a), 1e-5);
        }
    // Dimensions past rotary_dim and the columns after the heads are untouched.
    for (int64_t t = 0; t < T; ++t) {
      for (int h = 0; h < heads; ++h)
        for (int d = rd; d < hd; ++d)
          EXPECT_EQ(buf[size_t(t * ld + h * hd + d)], orig[size_t(t * ld + h * hd + d)]);
      EXPECT_EQ(buf[size_t(t * ld + heads * hd)], orig[size_t(t * ld + heads * hd)]);
    }
  }
}

TEST(Activation, FormulasAndGating) {
  EXPECT_NEAR(activate(Act::Gelu, 1.0f), 0.8413447460685429, 1e-6);
  EXPECT_NEAR(activate(Act::GeluTanh, 1.0f), 0.8411919906082768, 1e-6);
  EXPECT_NEAR(activate(Act::Silu, -2.0f), -0.2384058440442351, 1e-6);
  EXPECT_NEAR(activate(Act::Sigmoid, 0.5f), 0.6224593312018546, 1e-6);
  EXPECT_EQ(activate(Act::Relu, -3.0f), 0.0f);
  EXPECT_EQ(activate(Act::Identity, -3.0f), -3.0f);
  std::vector<float> in{1.0f, -2.0f, 3.0f, 0.5f, 2.0f, -1.0f}; // [gate | up], n=3
  std::vector<float> out(3);
  activation(in.data(), 6, out.data(), 3, 1, 3, Act::Silu, true);
  for (int j = 0; j < 3; ++j)
    EXPECT_NEAR(out[size_t(j)], activate(Act::Silu, in[size_t(j)]) * in[size_t(j + 3)], 1e-6);
  activation(in.data(), 6, in.data(), 6, 1, 3, Act::Silu, true); // in place
  for (int j = 0; j < 3; ++j)
    EXPECT_EQ(in[size_t(j)], out[size_t(j)]);
}

namespace {
/// vd: the value head width (MLA's v_head_dim; 0 = hd).
/// The shape of a checkAttention case: H query and KV kv heads of hd (keys)
/// and vd (values; 0: hd) wide; `start` positions come from a first call,
/// T from a second.
struct AttnShape {
  int H = 4, KV = 2, hd = 16, vd = 0;
  int64_t start = 3, T = 6;
};

void checkAttention(DType kvType, int window, int threads, bool sinks = false, int vd = 0,
                    AttnShape shape = {}) {
  const int H = shape.H, KV = shape.KV, hd = shape.hd;
  if (vd == 0)
    vd = shape.vd;
  SCOPED_TRACE(::testing::Message() << "kv=" << dtypeName(kvType) << " window=" << window
                                    << " sinks=" << sinks << " vd=" << vd << " H=" << H
                                    << " KV=" << KV << " hd=" << hd << " start=" << shape.start
                                    << " T=" << shape.T);
  const int vdim = vd ? vd : hd;
  const int64_t T = shape.T, start = shape.start, S = start + T + 1,
                ld = (H + KV) * hd + KV * vdim + 1;
  const float scale = 0.25f;
  ThreadPool pool(threads);
  Workspace ws(threads);
  std::vector<uint8_t> k(size_t(KV * S * hd) * dtypeSize(kvType)),
      v(size_t(KV * S * vdim) * dtypeSize(kvType));
  KVView cache{k.data(), v.data(), kvType, S};
  // The first `start` positions come from an earlier call.
  std::vector<float> all = randomFloats(size_t((start + T) * ld), 9);
  std::vector<int64_t> pos(size_t(start + T));
  for (size_t i = 0; i < pos.size(); ++i)
    pos[i] = int64_t(i);
  std::vector<float> out(size_t((start + T) * H * vdim));
  const int64_t qc = 0, kc = H * hd, vc = (H + KV) * hd;
  // gpt-oss's sinks (bf16, as published): large enough to take most of the
  // probability from some heads, negative for others.
  std::vector<uint16_t> sinkBits;
  for (int h = 0; h < H; ++h)
    sinkBits.push_back(f32ToBf16(std::array{2.5f, -1.0f, 0.0f, 6.0f}[size_t(h % 4)]));
  WRef sinkRef = sinks ? WRef{sinkBits.data(), DType::BF16} : WRef{};
  attention(pool, ws, all.data(), ld, qc, kc, vc, out.data(), H * vdim, start, pos.data(),
            cache, H, KV, hd, scale, window, sinkRef, vd);
  attention(pool, ws, all.data() + start * ld, ld, qc, kc, vc, out.data() + start * H * vdim,
            H * vdim, T, pos.data() + start, cache, H, KV, hd, scale, window, sinkRef, vd);
  // Reference over the rounded K/V the cache holds.
  auto kvAt = [&](int64_t j, int g, int64_t col, int d) {
    float x = all[size_t(j * ld + col + g * (col == vc ? vdim : hd) + d)];
    return kvType == DType::F32 ? x : bf16ToF32(f32ToBf16(x));
  };
  for (int64_t t = 0; t < start + T; ++t)
    for (int h = 0; h < H; ++h) {
      int g = h / (H / KV);
      int64_t lo = window > 0 ? std::max<int64_t>(0, t - window + 1) : 0;
      std::vector<double> s;
      double mx = -1e30, sum = 0;
      for (int64_t j = lo; j <= t; ++j) {
        double d = 0;
        for (int e = 0; e < hd; ++e)
          d += double(all[size_t(t * ld + qc + h * hd + e)]) * kvAt(j, g, kc, e);
        s.push_back(d * scale);
        mx = std::max(mx, s.back());
      }
      // HF eager_attention_forward: the sink joins the row's softmax and its
      // column is dropped.
      double sink = sinks ? double(bf16ToF32(sinkBits[size_t(h)])) : 0.0;
      if (sinks)
        mx = std::max(mx, sink);
      for (double &x : s)
        sum += x = std::exp(x - mx);
      if (sinks)
        sum += std::exp(sink - mx);
      for (int e = 0; e < vdim; ++e) {
        double o = 0;
        for (int64_t j = lo; j <= t; ++j)
          o += s[size_t(j - lo)] / sum * kvAt(j, g, vc, e);
        ASSERT_NEAR(out[size_t(t * H * vdim + h * vdim + e)], o, 1e-5) << "t=" << t << " h=" << h;
      }
    }
}
} // namespace

TEST(Attention, GqaCausalOverTheCache) {
  IsaGuard guard;
  for (Isa isa : availableIsas()) {
    SCOPED_TRACE(isaName(isa));
    setIsa(isa);
    checkAttention(DType::F32, 0, 1);
    checkAttention(DType::F32, 0, 3);
    checkAttention(DType::BF16, 0, 2);
    checkAttention(DType::F32, 3, 2);
    checkAttention(DType::F32, 0, 2, /*sinks=*/true);
    checkAttention(DType::BF16, 3, 1, /*sinks=*/true);
    // MLA: values narrower (and wider) than the q/k heads.
    checkAttention(DType::F32, 0, 2, false, /*vd=*/10);
    checkAttention(DType::BF16, 0, 1, false, /*vd=*/24);
    // Several blocks of keys, 6 query heads per kv head (a work item's heads
    // in fours), rows wider than 64 values with tails; decode after a long
    // prompt; one kv head split over the threads.
    checkAttention(DType::BF16, 0, 2, true, 0, {12, 2, 80, 72, 40, 45});
    checkAttention(DType::F32, 50, 1, false, 0, {12, 2, 24, 0, 90, 1});
    checkAttention(DType::BF16, 0, 3, false, 0, {8, 1, 16, 0, 70, 1});
  }
}

// gpt-oss's clamped SwiGLU against HF GptOssExperts' formula, in double, on
// values inside and beyond the clamps, on every ISA (the vector rows: two
// full vectors and a masked tail; a NaN gate stays NaN as through std::min).
TEST(Activation, SwigluOaiClampsAsHf) {
  IsaGuard guard;
  const float limit = 7.0f, alpha = 1.702f;
  const int64_t n = 21, ld = 2 * n + 1, rows = 2;
  const float edge[] = {-9.0f, -1.5f, 0.25f, 6.5f, 12.0f, -8.0f, 7.5f, -0.5f, 3.0f, -7.0f};
  std::vector<float> in(size_t(rows * ld));
  for (size_t i = 0; i < in.size(); ++i)
    in[i] = i < 10 ? edge[i] : float(int(i * 37 % 29) - 14) * 0.6f;
  in[size_t(ld + 3)] = std::nanf("");
  for (Isa isa : availableIsas()) {
    SCOPED_TRACE(isaName(isa));
    setIsa(isa);
    std::vector<float> io = in;
    swigluOai(io.data(), ld, rows, n, limit, alpha);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t j = 0; j < n; ++j) {
        double g = std::min<double>(in[size_t(r * ld + j)], limit);
        double u = std::clamp<double>(in[size_t(r * ld + n + j)], -limit, limit);
        double want = (u + 1.0) * g / (1.0 + std::exp(-alpha * g));
        if (std::isnan(want))
          EXPECT_TRUE(std::isnan(io[size_t(r * ld + j)])) << "r=" << r << " j=" << j;
        else
          EXPECT_NEAR(io[size_t(r * ld + j)], want, 1e-5 * std::max(1.0, std::abs(want)))
              << "r=" << r << " j=" << j;
      }
      for (int64_t j = n; j < ld; ++j) // the up half and the pad are not written
        EXPECT_EQ(io[size_t(r * ld + j)], in[size_t(r * ld + j)]);
    }
  }
}

// Batched steps: rows of two sequences in one call, their K/V in pages of
// a shared pool (interleaved page numbers), give each sequence's outputs of
// a contiguous cache of its own, bit for bit.
TEST(Attention, PagedRowsOfSeveralSequences) {
  const int H = 4, KV = 2, hd = 16, threads = 2;
  const int64_t S = 24, ps = 4, pps = S / ps, ld = (H + 2 * KV) * hd;
  const int64_t qc = 0, kc = H * hd, vc = (H + KV) * hd;
  ThreadPool pool(threads);
  Workspace ws(threads);
  const int64_t lens[2] = {13, 7}; // positions of each sequence
  std::vector<float> x[2] = {randomFloats(size_t(lens[0] * ld), 21),
                             randomFloats(size_t(lens[1] * ld), 22)};
  // Reference: each sequence alone, one prefill call then one decode call.
  std::vector<float> want[2];
  for (int s = 0; s < 2; ++s) {
    std::vector<float> k(size_t(KV * S * hd)), v(k.size());
    KVView cache{k.data(), v.data(), DType::F32, S};
    want[s].resize(size_t(lens[s] * H * hd));
    std::vector<int64_t> pos(static_cast<size_t>(lens[s]));
    for (size_t i = 0; i < pos.size(); ++i)
      pos[i] = int64_t(i);
    attention(pool, ws, x[s].data(), ld, qc, kc, vc, want[s].data(), H * hd, lens[s] - 1,
              pos.data(), cache, H, KV, hd, 0.3f, 0);
    attention(pool, ws, x[s].data() + (lens[s] - 1) * ld, ld, qc, kc, vc,
              want[s].data() + (lens[s] - 1) * H * hd, H * hd, 1, pos.data() + lens[s] - 1,
              cache, H, KV, hd, 0.3f, 0);
  }
  // Batched: a pool of 2 x pps pages; sequence 0 gets the odd pages in
  // reverse, sequence 1 the even ones.
  std::vector<float> k(size_t(KV * 2 * S * hd)), v(k.size());
  std::vector<int32_t> table(size_t(2 * pps));
  for (int64_t i = 0; i < pps; ++i) {
    table[size_t(i)] = int32_t(2 * (pps - 1 - i) + 1);
    table[size_t(pps + i)] = int32_t(2 * i);
  }
  // Call 1: sequence 1's prompt but its last token, then sequence 0's.
  // Call 2: the last token of each (decode rows of both).
  std::vector<float> in, got[2];
  std::vector<int64_t> pos, seq;
  got[0].resize(want[0].size());
  got[1].resize(want[1].size());
  auto run = [&](std::vector<std::pair<int, int64_t>> rows) {
    in.clear(), pos.clear(), seq.clear();
    for (auto [s, p] : rows) {
      in.insert(in.end(), x[s].begin() + p * ld, x[s].begin() + (p + 1) * ld);
      pos.push_back(p);
      seq.push_back(s);
    }
    std::vector<float> out(rows.size() * size_t(H * hd));
    KVView cache{k.data(), v.data(), DType::F32, 2 * S, table.data(), seq.data(), pps, ps};
    attention(pool, ws, in.data(), ld, qc, kc, vc, out.data(), H * hd, int64_t(rows.size()),
              pos.data(), cache, H, KV, hd, 0.3f, 0);
    for (size_t r = 0; r < rows.size(); ++r)
      std::copy(out.begin() + int64_t(r) * H * hd, out.begin() + int64_t(r + 1) * H * hd,
                got[rows[r].first].begin() + rows[r].second * H * hd);
  };
  std::vector<std::pair<int, int64_t>> first;
  for (int64_t p = 0; p + 1 < lens[1]; ++p)
    first.push_back({1, p});
  for (int64_t p = 0; p + 1 < lens[0]; ++p)
    first.push_back({0, p});
  run(first);
  run({{0, lens[0] - 1}, {1, lens[1] - 1}});
  for (int s = 0; s < 2; ++s)
    for (size_t i = 0; i < want[s].size(); ++i)
      ASSERT_EQ(got[s][i], want[s][i]) << "sequence " << s << " element " << i;
}

TEST(Combine, WeightedSumInSlotOrder) {
  const int K = 2;
  const int64_t T = 3, D = 4;
  std::vector<float> so = randomFloats(size_t(T * K * D), 10), w = randomFloats(size_t(T * K), 11);
  std::vector<float> out = randomFloats(size_t(T * D), 12), base = out;
  combine(so.data(), w.data(), T, K, D, out.data(), D, true);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t d = 0; d < D; ++d) {
      float s = 0.0f;
      for (int j = 0; j < K; ++j)
        s += w[size_t(t * K + j)] * so[size_t((t * K + j) * D + d)];
      EXPECT_EQ(out[size_t(t * D + d)], base[size_t(t * D + d)] + s);
    }
}

// DeepSeek-V3's selection against a reference written the way HF
// DeepseekV3MoE.route_tokens_to_experts computes it: sigmoid scores, biased
// copies for the choice, per-group top-2 sums, the kept groups' mask with
// 0.0 elsewhere, top-k of the masked choice, the plain scores gathered,
// renormalized (+1e-20) and scaled.
TEST(Gate, GroupLimitedBiasedSigmoidAsHf) {
  const int E = 8, K = 2, G = 4, keep = 2;
  const int64_t T = 16;
  const float scaling = 2.5f;
  std::vector<float> logits = randomFloats(size_t(T * E), 31), bias = randomFloats(size_t(E), 32);
  for (float &x : logits)
    x *= 40.0f; // spread the scores so ties are unlikely
  for (float &b : bias)
    b *= 5.0f; // large enough to change picks
  GateParams p{{.numExperts = E, .topK = K, .sigmoid = true, .numGroups = G, .topkGroups = keep},
               /*normTopk=*/true, 0.0f, 0, false,
               WRef{bias.data(), DType::F32, Layout::RowMajor}, scaling};
  std::vector<int32_t> se(size_t(T * K)), offsets(size_t(E + 1)), sorted(size_t(T * K));
  std::vector<float> sw(size_t(T * K));
  gate(logits.data(), E, T, p, se.data(), sw.data(), offsets.data(), sorted.data(), nullptr);
  int biasChangedPick = 0;
  for (int64_t t = 0; t < T; ++t) {
    std::vector<double> score(E), choice(E);
    for (int e = 0; e < E; ++e) {
      score[size_t(e)] = 1.0 / (1.0 + std::exp(-double(logits[size_t(t * E + e)])));
      choice[size_t(e)] = score[size_t(e)] + bias[size_t(e)];
    }
    std::vector<std::pair<double, int>> groups;
    for (int g = 0; g < G; ++g) {
      std::vector<double> members(choice.begin() + g * (E / G), choice.begin() + (g + 1) * (E / G));
      std::sort(members.rbegin(), members.rend());
      groups.push_back({-(members[0] + members[1]), g});
    }
    std::sort(groups.begin(), groups.end());
    std::vector<double> masked(E, 0.0);
    for (int j = 0; j < keep; ++j)
      for (int e = groups[size_t(j)].second * (E / G); e < (groups[size_t(j)].second + 1) * (E / G); ++e)
        masked[size_t(e)] = choice[size_t(e)];
    std::vector<std::pair<double, int>> order;
    for (int e = 0; e < E; ++e)
      order.push_back({-masked[size_t(e)], e});
    std::sort(order.begin(), order.end());
    double sum = 1e-20;
    for (int j = 0; j < K; ++j)
      sum += score[size_t(order[size_t(j)].second)];
    std::vector<std::pair<double, int>> plain;
    for (int e = 0; e < E; ++e)
      plain.push_back({-score[size_t(e)], e});
    std::sort(plain.begin(), plain.end());
    for (int j = 0; j < K; ++j) {
      int e = order[size_t(j)].second;
      ASSERT_EQ(se[size_t(t * K + j)], e) << "t=" << t << " j=" << j;
      EXPECT_NEAR(sw[size_t(t * K + j)], score[size_t(e)] / sum * scaling, 1e-6);
      biasChangedPick += plain[size_t(j)].second != e;
    }
  }
  EXPECT_GT(biasChangedPick, 0) << "the bias and groups never changed a pick: a weak test";
  EXPECT_EQ(offsets[E], T * K);
}

TEST(GatherColumns, ConcatenatesAndRepeatsColumns) {
  const int64_t T = 3;
  std::vector<float> a = randomFloats(size_t(T * 5), 41), b = randomFloats(size_t(T * 4), 42);
  // a's columns [1, 4) (ld 5) and b's [2, 4) (ld 4): 3 + 2 columns.
  ColumnRange in[] = {{a.data() + 1, 5, 3}, {b.data() + 2, 4, 2}};
  const int32_t idx[] = {0, 3, 4, 3, 2};
  std::vector<float> out(size_t(T * 6), -1.0f);
  gatherColumns(in, 2, idx, 5, out.data(), 6, T);
  for (int64_t t = 0; t < T; ++t) {
    EXPECT_EQ(out[size_t(t * 6 + 0)], a[size_t(t * 5 + 1)]);
    EXPECT_EQ(out[size_t(t * 6 + 1)], b[size_t(t * 4 + 2)]);
    EXPECT_EQ(out[size_t(t * 6 + 2)], b[size_t(t * 4 + 3)]);
    EXPECT_EQ(out[size_t(t * 6 + 3)], b[size_t(t * 4 + 2)]);
    EXPECT_EQ(out[size_t(t * 6 + 4)], a[size_t(t * 5 + 3)]);
    EXPECT_EQ(out[size_t(t * 6 + 5)], -1.0f); // beyond the indices: untouched
  }
}

TEST(DType, ConversionsRoundToNearestEven) {
  EXPECT_EQ(f32ToBf16(1.0f), 0x3f80);
  EXPECT_EQ(bf16ToF32(0x3f80), 1.0f);
  // 1 + 2^-8 is halfway between two bf16 values: ties to even (1.0).
  EXPECT_EQ(f32ToBf16(1.00390625f), 0x3f80);
  EXPECT_EQ(f32ToBf16(1.01171875f), 0x3f82);
  EXPECT_EQ(f32ToF16(1.0f), 0x3c00);
  EXPECT_EQ(f16ToF32(0x3c00), 1.0f);
  EXPECT_EQ(f16ToF32(0x0001), std::ldexp(1.0f, -24)); // smallest subnormal
  EXPECT_EQ(f32ToF16(std::ldexp(1.0f, -24)), 0x0001);
  EXPECT_EQ(f32ToF16(65504.0f), 0x7bff);
  EXPECT_EQ(f32ToF16(1e6f), 0x7c00);
  EXPECT_EQ(f32ToF16(-2.5f), 0xc100);
  for (float x : {0.1f, -3.75f, 1234.5f, 6.1e-5f})
    EXPECT_NEAR(f16ToF32(f32ToF16(x)), x, std::abs(x) * 1e-3);
}

TEST(Linear, BatchEqualsSeparateProducts) {
  for (Isa isa : availableIsas()) {
    IsaGuard g;
    setIsa(isa);
    ThreadPool pool(3);
    Workspace ws(3);
    struct M {
      int64_t N, K;
      DType dt;
      std::vector<uint8_t> w, b;
      std::vector<float> x, y, ref;
    };
    std::vector<M> ms = {{37, 61, DType::BF16, {}, {}, {}, {}, {}},
                         {130, 333, DType::F32, {}, {}, {}, {}, {}},
                         {5, 1000, DType::F16, {}, {}, {}, {}, {}},
                         {70, 129, DType::BF16, {}, {}, {}, {}, {}}};
    std::vector<GemvJob> jobs;
    uint32_t seed = 40;
    std::optional<PackedCopy> pk; // the last matrix, packed
    auto wref = [&](M &m) {
      return &m == &ms.back() ? WRef{pk->p, m.dt, Layout::Packed16} : WRef{m.w.data(), m.dt};
    };
    for (M &m : ms) {
      roundTo(m.dt, randomFloats(size_t(m.N * m.K), seed++), m.w);
      roundTo(m.dt, randomFloats(size_t(m.N), seed++), m.b);
      m.x = randomFloats(size_t(m.K), seed++);
      m.y.assign(size_t(m.N), 0.0f);
      m.ref.assign(size_t(m.N), 0.0f);
      if (&m == &ms.back())
        pk.emplace(m.w, m.N, m.K);
      linear(pool, ws, m.x.data(), m.K, 1, wref(m), m.N, m.K, false, {m.b.data(), m.dt},
             m.ref.data(), m.N, false, Precision::F32);
    }
    for (M &m : ms)
      jobs.push_back({m.x.data(), wref(m), m.N, m.K, {m.b.data(), m.dt}, m.y.data(), false});
    linearBatch(pool, ws, jobs, Precision::F32);
    for (M &m : ms)
      EXPECT_EQ(m.y, m.ref) << isaName(isa) << " N=" << m.N;
  }
}

TEST(Linear, MultiEqualsSeparateProducts) {
  // Products sharing X, as q/k/v or an expert's gate and up: all packed (one
  // pass) or mixed layouts (one linear() each), writing interleaved column
  // ranges of one output; bit-identical to separate linear() calls for every
  // thread count.
  const int64_t K = 301, ldx = K + 3;
  struct M {
    int64_t N;
    bool packed, bias;
    std::vector<uint8_t> w, b;
    std::optional<PackedCopy> pk;
  };
  std::vector<M> ms(3);
  ms[0] = {40, true, false, {}, {}, {}};
  ms[1] = {37, true, true, {}, {}, {}};
  ms[2] = {70, true, true, {}, {}, {}};
  uint32_t seed = 60;
  for (M &m : ms) {
    roundTo(DType::BF16, randomFloats(size_t(m.N * K), seed++), m.w);
    roundTo(DType::BF16, randomFloats(size_t(m.N), seed++), m.b);
    m.pk.emplace(m.w, m.N, K);
  }
  int64_t ldy = 0;
  for (M &m : ms)
    ldy += m.N;
  for (Isa isa : availableIsas())
    for (bool mixed : {false, true})
      for (int64_t T : {1, 2, 5, 20, 30})
        for (Precision prec : {Precision::F32, Precision::BF16})
          for (int threads : {1, 2, 3}) {
            SCOPED_TRACE(::testing::Message() << "isa=" << isaName(isa) << " mixed=" << mixed
                                              << " T=" << T << " threads=" << threads
                                              << " bf16=" << (prec == Precision::BF16));
            IsaGuard g;
            setIsa(isa);
            ThreadPool pool(threads);
            Workspace ws(threads);
            std::vector<float> X = randomFloats(size_t(T * ldx), 70);
            std::vector<float> Y0 = randomFloats(size_t(T * ldy), 71), Y = Y0, ref = Y0;
            std::vector<MatJob> jobs;
            int64_t col = 0;
            for (size_t i = 0; i < ms.size(); ++i) {
              M &m = ms[i];
              WRef w = mixed && i == 1 ? WRef{m.w.data(), DType::BF16}
                                       : WRef{m.pk->p, DType::BF16, Layout::Packed16};
              WRef b = m.bias ? WRef{m.b.data(), DType::BF16} : WRef{};
              bool acc = i == 2;
              linear(pool, ws, X.data(), ldx, T, w, m.N, K, false, b, ref.data() + col, ldy, acc,
                     prec);
              jobs.push_back({w, m.N, b, Y.data() + col, ldy, acc});
              col += m.N;
            }
            linearMulti(pool, ws, X.data(), ldx, T, K, jobs, prec);
            ASSERT_EQ(Y, ref);
          }
}

TEST(Activation, SiluEveryIsaMatchesTheScalarFormula) {
  // The AVX-512 path (libmvec's exp in double) against activate() per
  // element: equal up to one float ulp (the scalar ungated loop computes in
  // float: two, denormals more), wide range, widths with vector
  // tails, in place, gated and not.
  const int64_t n = 45, rows = 300, ld = 2 * n + 3;
  std::vector<float> in = randomFloats(size_t(rows * ld), 80);
  for (size_t i = 0; i < in.size(); ++i)
    in[i] *= float(1 + i % 97); // up to ~+-100: exp over- and underflows
  for (Isa isa : availableIsas())
    for (bool gated : {false, true})
      for (bool inPlace : {false, true}) {
        SCOPED_TRACE(::testing::Message() << isaName(isa) << " gated=" << gated
                                          << " inPlace=" << inPlace);
        IsaGuard g;
        setIsa(isa);
        std::vector<float> io = in, out(size_t(rows * ld), 7.0f);
        float *y = inPlace ? io.data() : out.data();
        activation(io.data(), ld, y, ld, rows, n, Act::Silu, gated);
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t j = 0; j < n; ++j) {
            float x = in[size_t(r * ld + j)];
            float ref = activate(Act::Silu, x) * (gated ? in[size_t(r * ld + n + j)] : 1.0f);
            float got = y[size_t(r * ld + j)];
            float ulps = isa == Isa::Scalar && !gated ? 2.0f : 1.0f;
            ASSERT_LE(std::abs(got - ref), std::abs(ref) * 1.2e-7f * ulps + 1e-35f)
                << "r=" << r << " j=" << j << " x=" << x;
          }
          for (int64_t j = n; j < ld; ++j) // beyond n: untouched
            ASSERT_EQ(y[size_t(r * ld + j)], inPlace ? in[size_t(r * ld + j)] : 7.0f);
        }
      }
}

namespace {
/// MLA over a latent cache against HF's expanded form in double: keys
/// [c W_UK_h^T | k_pe], values c W_UV_h^T (modeling_deepseek_v3's kv_b_proj),
/// one prefill call then one decode call; paged (two sequences' rows in one
/// call, pages interleaved) when `paged` (T <= 16). L latent dims, T tokens.
void checkMla(DType kvbType, DType cacheType, int threads, bool paged, int L = 10,
              int64_t T = 9) {
  SCOPED_TRACE(::testing::Message() << "kv_b=" << dtypeName(kvbType) << " cache="
                                    << dtypeName(cacheType) << " paged=" << paged << " L=" << L
                                    << " T=" << T << " isa=" << isaName(activeIsa()));
  const int H = 3, N = 8, R = 4, V = 6;
  const int64_t S = std::max<int64_t>(16, T), ldq = H * (N + R) + 1, ldc = L + R + 2;
  const float scale = 0.3f;
  ThreadPool pool(threads);
  Workspace ws(threads);
  std::vector<float> q = randomFloats(size_t(T * ldq), 31), ckv = randomFloats(size_t(T * ldc), 32);
  std::vector<float> w = randomFloats(size_t(H * (N + V) * L), 33);
  std::vector<uint16_t> wBits(w.size());
  for (size_t i = 0; i < w.size(); ++i) {
    wBits[i] = f32ToBf16(w[i]);
    if (kvbType == DType::BF16)
      w[i] = bf16ToF32(wBits[i]);
  }
  WRef kvB = kvbType == DType::BF16 ? WRef{wBits.data(), DType::BF16} : WRef{w.data(), DType::F32};
  auto cached = [&](float x) {
    return cacheType == DType::F32 ? double(x) : double(bf16ToF32(f32ToBf16(x)));
  };
  // Row t's latent at ckv[t*ldc + 1 ..], its k_pe at ckv[t*ldc + 1 + L ..].
  MlaParams p{H, N, R, V, L, scale, kvB};
  std::vector<float> out(size_t(T * H * V));
  std::vector<int64_t> pos(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t)
    pos[size_t(t)] = t;
  std::vector<uint8_t> k(size_t(2 * S * (L + R)) * dtypeSize(cacheType));
  // Paged: this sequence is slot 1 and takes pool pages 3, 0, 2 of 4 rows.
  std::vector<int32_t> table{1, 1, 1, 1, 3, 0, 2, 1};
  std::vector<int64_t> seq(size_t(T), 1);
  KVView cache{k.data(), nullptr, cacheType, 2 * S};
  if (paged) {
    cache.pageTable = table.data();
    cache.seq = seq.data();
    cache.pagesPerSeq = 4;
    cache.pageSize = 4;
  }
  auto call = [&](int64_t t0, int64_t n) {
    MlaInputs in{q.data() + t0 * ldq, ldq, ckv.data() + t0 * ldc + 1, ldc,
                 ckv.data() + t0 * ldc + 1 + L, ldc};
    mlaAttention(pool, ws, in, out.data() + t0 * H * V, H * V, n, pos.data() + t0, cache, p);
  };
  call(0, T - 1);
  call(T - 1, 1);
  for (int64_t t = 0; t < T; ++t)
    for (int h = 0; h < H; ++h) {
      auto W = [&](int64_t row, int l) { return double(w[size_t((h * (N + V) + row) * L + l)]); };
      auto c = [&](int64_t j, int l) { return cached(ckv[size_t(j * ldc + 1 + l)]); };
      std::vector<double> s;
      double mx = -1e30, sum = 0;
      for (int64_t j = 0; j <= t; ++j) {
        double d = 0;
        for (int i = 0; i < N; ++i) {
          double kn = 0;
          for (int l = 0; l < L; ++l)
            kn += W(i, l) * c(j, l);
          d += double(q[size_t(t * ldq + h * (N + R) + i)]) * kn;
        }
        for (int i = 0; i < R; ++i)
          d += double(q[size_t(t * ldq + h * (N + R) + N + i)]) * cached(ckv[size_t(j * ldc + 1 + L + i)]);
        s.push_back(d * scale);
        mx = std::max(mx, s.back());
      }
      for (double &x : s)
        sum += x = std::exp(x - mx);
      for (int e = 0; e < V; ++e) {
        double o = 0;
        for (int64_t j = 0; j <= t; ++j) {
          double v = 0;
          for (int l = 0; l < L; ++l)
            v += W(N + e, l) * c(j, l);
          o += s[size_t(j)] / sum * v;
        }
        ASSERT_NEAR(out[size_t(t * H * V + h * V + e)], o, 1e-5) << "t=" << t << " h=" << h;
      }
    }
}
} // namespace

TEST(MlaAttention, AbsorbedEqualsExpandedKeysAndValues) {
  // Every ISA (the heads of an item share each row: attendItem), one and
  // several items per token, latents of 10 and of 40 dims (rows of more than
  // one 16-lane step), 9 and 70 positions (several blocks of 32 keys).
  for (Isa isa : availableIsas()) {
    IsaGuard g;
    setIsa(isa);
    checkMla(DType::F32, DType::F32, 1, false);
    checkMla(DType::F32, DType::F32, 3, false);
    checkMla(DType::BF16, DType::F32, 2, false);
    checkMla(DType::F32, DType::BF16, 2, false);
    checkMla(DType::BF16, DType::F32, 2, /*paged=*/true);
    checkMla(DType::BF16, DType::BF16, 1, false, 40, 70);
    checkMla(DType::F32, DType::F32, 2, false, 40, 70);
  }
}
