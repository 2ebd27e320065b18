//===- QuantKernelsTest.cpp - Products with FP8 block-scaled weights -------===//
//
// linear() with a quantized W against the naive product with W dequantized
// the way HF does (fp8 value x its block's scale), on every ISA, for decode
// and prefill row counts and for blocks that do not divide the matrix; the
// decode kernel's two ways (bytes as value x 2^-120 against x scaled by
// 2^k, and through f16 when MXCSR's DAZ is set) for activations of any
// magnitude; linearBatch with FP8 jobs; dequantized rows on every ISA.
//
//===----------------------------------------------------------------------===//
#include "TestUtil.h"

#include "moert/cpu/Kernels.h"

#include <xmmintrin.h>

#include <cmath>
#include <cstring>
#include <optional>

using namespace moert;
using namespace moert::cpu;
using namespace moetest;

namespace {

/// e4m3fn decoded from its definition (bias 7, subnormals at exponent 0).
double e4m3(uint8_t v) {
  int e = (v >> 3) & 15, m = v & 7;
  double mag = e == 0 ? std::ldexp(m / 8.0, -6) : std::ldexp(1.0 + m / 8.0, e - 7);
  return (v & 0x80) ? -mag : mag;
}

/// Restores the ISA after a test forced one.
struct IsaGuard {
  Isa saved = activeIsa();
  ~IsaGuard() { setIsa(saved); }
};

std::vector<Isa> availableIsas() {
  std::vector<Isa> v{Isa::Scalar};
  if (detectIsa() >= Isa::Avx512)
    v.push_back(Isa::Avx512);
  return v;
}

/// A random FP8 matrix [N, K] (every finite byte, subnormals included) with
/// scales of blocks bn x bk.
struct Fp8Matrix {
  int64_t N, K, bn, bk;
  std::vector<uint8_t> q;
  std::vector<float> scales;
  Fp8Matrix(int64_t n, int64_t k, int64_t bn_, int64_t bk_, uint32_t seed, float scale = 1e-2f)
      : N(n), K(k), bn(bn_), bk(bk_) {
    q.resize(size_t(N * K));
    std::vector<float> r = randomFloats(q.size(), seed);
    for (size_t i = 0; i < q.size(); ++i) {
      uint8_t v = uint8_t(int(std::abs(r[i]) * 1e4f) & 0xff);
      q[i] = (v & 0x7f) == 0x7f ? 0x38 : v; // no NaN
    }
    scales = randomFloats(size_t(((N + bn - 1) / bn) * ((K + bk - 1) / bk)), seed + 1);
    for (float &f : scales)
      f = std::abs(f) * scale + scale * 1e-2f;
  }
  WRef ref() const {
    WRef w{q.data(), DType::F32};
    w.format = QuantFormat::FP8E4M3Block;
    w.scales = scales.data();
    w.blockRows = bn;
    w.blockCols = bk;
    return w;
  }
  /// HF's dequantized weight: the f32 product value x scale.
  float at(int64_t n, int64_t k) const {
    const int64_t cols = (K + bk - 1) / bk;
    return float(e4m3(q[size_t(n * K + k)])) * scales[size_t((n / bn) * cols + k / bk)];
  }
};

/// Sets MXCSR's DAZ (denormal inputs read as zero) for its lifetime; threads
/// created meanwhile inherit it.
struct DazGuard {
  unsigned saved = _mm_getcsr();
  DazGuard() { _mm_setcsr(saved | 0x40); }
  ~DazGuard() { _mm_setcsr(saved); }
};

} // namespace

TEST(Fp8, DecodesEveryFiniteByte) {
  for (int v = 0; v < 256; ++v) {
    if ((v & 0x7f) == 0x7f) {
      EXPECT_TRUE(std::isnan(fp8e4m3ToF32(uint8_t(v))));
      continue;
    }
    EXPECT_EQ(double(fp8e4m3ToF32(uint8_t(v))), e4m3(uint8_t(v))) << v;
  }
  EXPECT_EQ(fp8e4m3ToF32(0x38), 1.0f);
  EXPECT_EQ(fp8e4m3ToF32(0x7e), 448.0f);
  EXPECT_EQ(fp8e4m3ToF32(0x01), std::ldexp(1.0f, -9));
}

TEST(Fp8, LinearMatchesDequantizedProduct) {
  const Isa saved = activeIsa();
  std::vector<Isa> isas{Isa::Scalar};
  if (detectIsa() >= Isa::Avx512)
    isas.push_back(Isa::Avx512);
  struct Shape {
    int64_t N, K, bn, bk;
  };
  for (Shape s : {Shape{37, 100, 16, 24}, Shape{40, 256, 128, 128}, Shape{5, 7, 2, 3},
                  Shape{70, 300, 32, 80}, Shape{19, 200, 128, 128}, Shape{150, 64, 128, 32}})
    for (Isa isa : isas)
      // 5..64 tokens stream 4 at a time over blocks of 64 rows; 70 takes panels.
      for (int64_t T : {1, 2, 3, 4, 5, 9, 13, 70})
        for (bool acc : {false, true}) {
          SCOPED_TRACE(::testing::Message() << isaName(isa) << " T=" << T << " N=" << s.N
                                            << " K=" << s.K << " block " << s.bn << "x"
                                            << s.bk << " acc=" << acc);
          setIsa(isa);
          ThreadPool pool(2);
          Workspace ws(2);
          const int64_t rows = (s.N + s.bn - 1) / s.bn, cols = (s.K + s.bk - 1) / s.bk;
          std::vector<uint8_t> q(size_t(s.N * s.K));
          std::vector<float> r = randomFloats(q.size(), 7);
          for (size_t i = 0; i < q.size(); ++i) {
            uint8_t v = uint8_t(int(std::abs(r[i]) * 1e4f) & 0xff);
            q[i] = (v & 0x7f) == 0x7f ? 0x38 : v; // no NaN
          }
          std::vector<float> scales = randomFloats(size_t(rows * cols), 8);
          for (float &f : scales)
            f = std::abs(f) * 1e-2f + 1e-4f;
          const int64_t ldx = s.K + 1, ldy = s.N + 2;
          std::vector<float> X = randomFloats(size_t(T * ldx), 9);
          std::vector<float> Y0 = randomFloats(size_t(T * ldy), 10), Y = Y0;
          WRef w{q.data(), DType::F32};
          w.format = QuantFormat::FP8E4M3Block;
          w.scales = scales.data();
          w.blockRows = s.bn;
          w.blockCols = s.bk;
          linear(pool, ws, X.data(), ldx, T, w, s.N, s.K, false, {}, Y.data(), ldy, acc,
                 Precision::F32);
          std::vector<float> deq(size_t(s.N * s.K));
          dequantizeRows(w, s.K, 0, s.N, deq.data());
          for (int64_t t = 0; t < T; ++t)
            for (int64_t n = 0; n < s.N; ++n) {
              double ref = acc ? Y0[size_t(t * ldy + n)] : 0.0, mag = std::abs(ref);
              for (int64_t k = 0; k < s.K; ++k) {
                // HF's dequantized weight: the f32 product value x scale.
                float wv = float(e4m3(q[size_t(n * s.K + k)])) *
                           scales[size_t((n / s.bn) * cols + k / s.bk)];
                ASSERT_EQ(deq[size_t(n * s.K + k)], wv);
                double p = double(X[size_t(t * ldx + k)]) * wv;
                ref += p;
                mag += std::abs(p);
              }
              ASSERT_NEAR(Y[size_t(t * ldy + n)], ref, 2e-6 * mag + 1e-7) << t << " " << n;
            }
        }
  setIsa(saved);
}

TEST(Fp8, DequantizedRowsSameOnEveryIsa) {
  // Every byte in every position of a block, scales from tiny (products in
  // f32's subnormal range) to large: the AVX-512 path (value / 2^8 through
  // f16, times 2^8 x scale) gives the same floats as the scalar table.
  IsaGuard g;
  for (float scale : {1e-40f, 1e-30f, 1e-3f, 1.0f, 1e30f}) {
    Fp8Matrix m(9, 300, 4, 80, 3, scale);
    for (size_t i = 0; i < m.q.size(); ++i)
      m.q[i] = (i % 256 & 0x7f) == 0x7f ? uint8_t(i % 7) : uint8_t(i % 256);
    std::vector<std::vector<float>> out;
    for (Isa isa : availableIsas()) {
      setIsa(isa);
      out.emplace_back(size_t(m.N * m.K), -1.0f);
      dequantizeRows(m.ref(), m.K, 2, m.N, out.back().data() + 2 * m.K);
      for (int64_t n = 2; n < m.N; ++n)
        for (int64_t k = 0; k < m.K; ++k)
          ASSERT_EQ(out.back()[size_t(n * m.K + k)], m.at(n, k))
              << isaName(isa) << " scale " << scale << " n " << n << " k " << k;
    }
  }
}

TEST(Fp8, DecodeExactForAnyActivationMagnitude) {
  // x of magnitude 1e-30 .. 1e30 (the decode kernel scales x by a power of
  // two so products stay normal floats), zeros, and DAZ set (the f16 way):
  // each within float rounding of the dequantized product.
  if (detectIsa() < Isa::Avx512)
    GTEST_SKIP() << "no AVX-512";
  IsaGuard g;
  setIsa(Isa::Avx512);
  Fp8Matrix m(48, 384, 16, 128, 11);
  for (bool daz : {false, true})
    for (float mag : {0.0f, 1e-30f, 1e-6f, 1.0f, 1e6f, 1e30f})
      for (int64_t T : {1, 3}) {
        SCOPED_TRACE(::testing::Message() << "daz " << daz << " |x| ~ " << mag << " T " << T);
        std::optional<DazGuard> dg;
        if (daz)
          dg.emplace();
        ThreadPool pool(2);
        Workspace ws(2);
        std::vector<float> X = randomFloats(size_t(T * m.K), 12);
        for (float &x : X)
          x *= mag;
        std::vector<float> Y(size_t(T * m.N), -1.0f);
        linear(pool, ws, X.data(), m.K, T, m.ref(), m.N, m.K, false, {}, Y.data(), m.N, false,
               Precision::F32);
        for (int64_t t = 0; t < T; ++t)
          for (int64_t n = 0; n < m.N; ++n) {
            double ref = 0.0, abs = 0.0;
            for (int64_t k = 0; k < m.K; ++k) {
              double p = double(X[size_t(t * m.K + k)]) * m.at(n, k);
              ref += p;
              abs += std::abs(p);
            }
            ASSERT_TRUE(std::isfinite(Y[size_t(t * m.N + n)])) << n;
            ASSERT_NEAR(Y[size_t(t * m.N + n)], ref, 2e-6 * abs) << t << " " << n;
          }
      }
}

TEST(Fp8, BatchEqualsSeparateProducts) {
  // Decode's routed experts: FP8 and MXFP4 jobs (one pass with bf16 and f32
  // jobs, rows split across threads) give the same floats as one linear()
  // each.
  for (Isa isa : availableIsas()) {
    IsaGuard g;
    setIsa(isa);
    for (int threads : {1, 3}) {
      ThreadPool pool(threads);
      Workspace ws(threads);
      std::vector<Fp8Matrix> q;
      q.emplace_back(37, 300, 16, 128, 20);
      q.emplace_back(130, 128, 128, 128, 22);
      q.emplace_back(64, 100, 32, 24, 24);
      std::vector<uint8_t> wb;
      roundTo(DType::BF16, randomFloats(size_t(50 * 300), 26), wb);
      std::vector<float> wf = randomFloats(size_t(20 * 128), 27);
      std::vector<float> x300 = randomFloats(300, 28), x128 = randomFloats(128, 29),
                         x100 = randomFloats(100, 30), bias = randomFloats(130, 31);
      // An MXFP4 matrix [45, 128]: nibbles and e8m0 scales near 2^0.
      std::vector<uint8_t> mq(size_t(45 * 128 / 2)), ms(size_t(45 * 128 / 32));
      std::vector<float> r = randomFloats(mq.size() + ms.size(), 32);
      for (size_t i = 0; i < mq.size(); ++i)
        mq[i] = uint8_t(int(std::abs(r[i]) * 1e4f) & 0xff);
      for (size_t i = 0; i < ms.size(); ++i)
        ms[i] = uint8_t(118 + int(std::abs(r[mq.size() + i]) * 1e4f) % 16);
      WRef mx{mq.data(), DType::F32};
      mx.format = QuantFormat::MXFP4;
      mx.scales = ms.data();
      mx.blockRows = 1;
      mx.blockCols = 32;
      struct J {
        const float *x;
        WRef w;
        int64_t N, K;
        WRef b;
      };
      // Consecutive jobs of one x and weight kind share its prepared x.
      std::vector<J> js = {{x300.data(), q[0].ref(), 37, 300, {}},
                           {x300.data(), q[0].ref(), 37, 300, {bias.data(), DType::F32}},
                           {x300.data(), WRef{wb.data(), DType::BF16}, 50, 300, {}},
                           {x128.data(), q[1].ref(), 130, 128, {bias.data(), DType::F32}},
                           {x128.data(), WRef{wf.data(), DType::F32}, 20, 128, {}},
                           {x100.data(), q[2].ref(), 64, 100, {}},
                           {x128.data(), mx, 45, 128, {bias.data(), DType::F32}},
                           {x128.data(), mx, 45, 128, {}}};
      std::vector<std::vector<float>> ref, got;
      std::vector<GemvJob> jobs;
      for (J &j : js) {
        ref.emplace_back(size_t(j.N), 0.5f);
        got.emplace_back(size_t(j.N), 0.5f);
        linear(pool, ws, j.x, j.K, 1, j.w, j.N, j.K, false, j.b, ref.back().data(), j.N, true,
               Precision::F32);
      }
      for (size_t i = 0; i < js.size(); ++i)
        jobs.push_back({js[i].x, js[i].w, js[i].N, js[i].K, js[i].b, got[i].data(), true});
      linearBatch(pool, ws, jobs, Precision::F32);
      for (size_t i = 0; i < js.size(); ++i)
        EXPECT_EQ(got[i], ref[i]) << isaName(isa) << " threads " << threads << " job " << i;
    }
  }
}

namespace {
/// axpyRows and dotRows on rows [r0, r0 + n) of W against `deq` (those rows
/// as f32): y += a x with one FMA per element, row after row, and one
/// 16-lane FMA chain per row then its sum, bit for bit.
void checkRowKernels(WRef W, int64_t K, int64_t r0, int64_t n, const std::vector<float> &deq) {
  std::vector<float> coef = randomFloats(size_t(n), 41), x = randomFloats(size_t(K), 42);
  std::vector<float> axRef = randomFloats(size_t(K), 43), ax = axRef;
  std::vector<float> dotRef(static_cast<size_t>(n)), dot(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t k = 0; k < K; ++k)
      axRef[size_t(k)] = std::fma(coef[size_t(i)], deq[size_t(i * K + k)], axRef[size_t(k)]);
  for (int64_t i = 0; i < n; ++i) {
    float lanes[16] = {};
    for (int64_t k = 0; k < K; ++k)
      lanes[k % 16] = std::fma(deq[size_t(i * K + k)], x[size_t(k)], lanes[k % 16]);
    // _mm512_reduce_add_ps: halves added pairwise (8, 4, 2, 1).
    for (int w = 8; w >= 1; w /= 2)
      for (int j = 0; j < w; ++j)
        lanes[j] += lanes[j + w];
    dotRef[size_t(i)] = lanes[0];
  }
  ASSERT_TRUE(rowKernelsSupported(W));
  axpyRows(W, K, r0, n, coef.data(), ax.data());
  dotRows(W, K, r0, n, x.data(), dot.data());
  EXPECT_EQ(ax, axRef);
  for (int64_t i = 0; i < n; ++i)
    EXPECT_EQ(dot[size_t(i)], dotRef[size_t(i)]) << i;
}
} // namespace

TEST(Rows, KernelsEqualDequantizedLoops) {
  // MLA's absorbed kv_b: rows widened in registers give the same floats as
  // the rows as f32 followed by the plain loops: FP8 with blocks that are
  // and are not multiples of 16 wide, bf16 and f32; rows narrower than,
  // as wide as and wider than the 256 outputs held in registers, row counts
  // that are not multiples of 4.
  if (detectIsa() < Isa::Avx512)
    GTEST_SKIP() << "no AVX-512";
  IsaGuard g;
  setIsa(Isa::Avx512);
  const int64_t N = 40, r0 = 5, n = 30;
  for (int64_t K : {100, 256, 300}) {
    for (auto [bn, bk] : {std::pair<int64_t, int64_t>{128, 128}, {4, 6}, {16, 24}}) {
      SCOPED_TRACE(::testing::Message() << "FP8 K " << K << " block " << bn << "x" << bk);
      Fp8Matrix m(N, K, bn, bk, 40);
      std::vector<float> deq(size_t(n * K));
      dequantizeRows(m.ref(), K, r0, r0 + n, deq.data());
      checkRowKernels(m.ref(), K, r0, n, deq);
    }
    SCOPED_TRACE(::testing::Message() << "K " << K);
    std::vector<float> w = randomFloats(size_t(N * K), 44);
    std::vector<uint16_t> wb(w.size());
    for (size_t i = 0; i < w.size(); ++i)
      wb[i] = f32ToBf16(w[i]);
    std::vector<float> f32Rows(w.begin() + r0 * K, w.begin() + (r0 + n) * K), bf16Rows;
    for (int64_t i = r0 * K; i < (r0 + n) * K; ++i)
      bf16Rows.push_back(bf16ToF32(wb[size_t(i)]));
    checkRowKernels(WRef{w.data(), DType::F32}, K, r0, n, f32Rows);
    checkRowKernels(WRef{wb.data(), DType::BF16}, K, r0, n, bf16Rows);
  }
}

namespace {

/// e2m1 decoded from its definition (bias 1, subnormal 0.5 at exponent 0).
double e2m1(uint8_t v) {
  int e = (v >> 1) & 3, m = v & 1;
  double mag = e == 0 ? m * 0.5 : std::ldexp(1.0 + m / 2.0, e - 1);
  return (v & 8) ? -mag : mag;
}

/// A random MXFP4 matrix [N, K]: every nibble, and e8m0 scales around 2^0
/// (x 2^-12 .. 2^8), or all `scale`.
struct Mxfp4Matrix {
  int64_t N, K;
  std::vector<uint8_t> q, sc;
  Mxfp4Matrix(int64_t n, int64_t k, uint32_t seed, std::optional<uint8_t> scale = std::nullopt)
      : N(n), K(k), q(size_t(n * k / 2)), sc(size_t(n * k / 32)) {
    std::vector<float> r = randomFloats(q.size() + sc.size(), seed);
    for (size_t i = 0; i < q.size(); ++i)
      q[i] = uint8_t(int(std::abs(r[i]) * 1e4f) & 0xff);
    for (size_t i = 0; i < sc.size(); ++i)
      sc[i] = scale ? *scale : uint8_t(115 + int(std::abs(r[q.size() + i]) * 1e4f) % 20);
  }
  WRef ref() const {
    WRef w{q.data(), DType::F32};
    w.format = QuantFormat::MXFP4;
    w.scales = sc.data();
    w.blockRows = 1;
    w.blockCols = 32;
    return w;
  }
  /// HF's dequantized weight (convert_moe_packed_tensors): element 2j is
  /// byte j's low nibble, times 2^(scale - 127).
  float at(int64_t n, int64_t k) const {
    uint8_t b = q[size_t(n * K / 2 + k / 2)];
    return float(
        std::ldexp(e2m1(k % 2 ? b >> 4 : b & 15), int(sc[size_t(n * K / 32 + k / 32)]) - 127));
  }
};

/// Y[t, n] (ldy apart) against the f64 sum of x(t, k) * W[n, k] (W [N, K]
/// dense), plus Y0[t, n] when accumulating: to 2e-6 of the sum of the terms'
/// magnitudes.
template <class XAt>
void expectProduct(const std::vector<float> &Y, const std::vector<float> &Y0, int64_t ldy,
                   bool acc, int64_t T, int64_t N, int64_t K, XAt x,
                   const std::vector<float> &W) {
  for (int64_t t = 0; t < T; ++t)
    for (int64_t n = 0; n < N; ++n) {
      double ref = acc ? Y0[size_t(t * ldy + n)] : 0.0, mag = std::abs(ref);
      for (int64_t k = 0; k < K; ++k) {
        double p = double(x(t, k)) * W[size_t(n * K + k)];
        ref += p;
        mag += std::abs(p);
      }
      ASSERT_NEAR(Y[size_t(t * ldy + n)], ref, 2e-6 * mag + 1e-7) << t << " " << n;
    }
}

} // namespace

TEST(Mxfp4, DecodesScales) {
  EXPECT_EQ(e8m0ToF32(127), 1.0f);
  EXPECT_EQ(e8m0ToF32(0), std::ldexp(1.0f, -127));
  EXPECT_EQ(e8m0ToF32(254), std::ldexp(1.0f, 127));
  EXPECT_TRUE(std::isinf(e8m0ToF32(255)));
}

TEST(Mxfp4, LinearMatchesDequantizedProduct) {
  IsaGuard guard;
  for (int64_t N : {1, 17, 40, 150})
    for (int64_t K : {32, 96, 256})
      for (Isa isa : availableIsas())
        for (int64_t T : {1, 2, 3, 4, 5, 9, 13, 70})
          for (bool acc : {false, true}) {
            SCOPED_TRACE(::testing::Message() << isaName(isa) << " T=" << T << " N=" << N
                                              << " K=" << K << " acc=" << acc);
            setIsa(isa);
            ThreadPool pool(2);
            Workspace ws(2);
            Mxfp4Matrix m(N, K, 11);
            const int64_t ldx = K + 3, ldy = N + 2;
            std::vector<float> X = randomFloats(size_t(T * ldx), 12);
            std::vector<float> Y0 = randomFloats(size_t(T * ldy), 13), Y = Y0;
            linear(pool, ws, X.data(), ldx, T, m.ref(), N, K, false, {}, Y.data(), ldy, acc,
                   Precision::F32);
            std::vector<float> deq(size_t(N * K));
            dequantizeRows(m.ref(), K, 0, N, deq.data());
            for (int64_t n = 0; n < N; ++n)
              for (int64_t k = 0; k < K; ++k)
                ASSERT_EQ(deq[size_t(n * K + k)], m.at(n, k)) << n << " " << k;
            ASSERT_NO_FATAL_FAILURE(expectProduct(
                Y, Y0, ldy, acc, T, N, K,
                [&](int64_t t, int64_t k) { return X[size_t(t * ldx + k)]; }, deq));
          }
}

/// f rounded to bf16 (nearest even), as the bf16 dot-product kernels round X.
static float roundedToBf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
  float r;
  std::memcpy(&r, &u, 4);
  return r;
}

TEST(Mxfp4, Bf16DotProductsRoundOnlyX) {
  // Plans computing in bf16 on AVX512-BF16 CPUs: the weights are exact as
  // bf16, X is rounded to bf16 (nearest even); the sums are f32.
  if (detectIsa() < Isa::Avx512Bf16)
    GTEST_SKIP() << "no AVX512-BF16";
  IsaGuard guard;
  setIsa(Isa::Avx512Bf16);
  for (int64_t N : {3, 40, 150})
    for (int64_t K : {32, 96, 160, 288, 512})
      for (int64_t T : {1, 2, 3, 4, 5, 9, 13})
        for (bool acc : {false, true}) {
          SCOPED_TRACE(::testing::Message() << "T=" << T << " N=" << N << " K=" << K);
          ThreadPool pool(2);
          Workspace ws(2);
          Mxfp4Matrix m(N, K, 21);
          const int64_t ldx = K + 3, ldy = N + 2;
          std::vector<float> X = randomFloats(size_t(T * ldx), 22);
          std::vector<float> Y0 = randomFloats(size_t(T * ldy), 23), Y = Y0;
          linear(pool, ws, X.data(), ldx, T, m.ref(), N, K, false, {}, Y.data(), ldy, acc,
                 Precision::BF16);
          std::vector<float> deq(size_t(N * K));
          dequantizeRows(m.ref(), K, 0, N, deq.data());
          ASSERT_NO_FATAL_FAILURE(expectProduct(
              Y, Y0, ldy, acc, T, N, K,
              [&](int64_t t, int64_t k) { return roundedToBf16(X[size_t(t * ldx + k)]); }, deq));
        }
  // Batched decode (linearBatch: routed experts in one pass) takes the same
  // path: the same floats as separate products.
  {
    ThreadPool pool(2);
    Workspace ws(2);
    const int64_t N = 40, K = 96;
    const Mxfp4Matrix m(N, K, 31, 127);
    const WRef w = m.ref();
    std::vector<float> x0 = randomFloats(size_t(K), 32), x1 = randomFloats(size_t(K), 33);
    const size_t n = static_cast<size_t>(N);
    std::vector<float> y0(n), y0b(n), y1(n), s0(n), s1(n);
    linearBatch(pool, ws, {GemvJob{x0.data(), w, N, K, {}, y0.data()},
                           GemvJob{x0.data(), w, N, K, {}, y0b.data()},
                           GemvJob{x1.data(), w, N, K, {}, y1.data()}},
                Precision::BF16);
    linear(pool, ws, x0.data(), K, 1, w, N, K, false, {}, s0.data(), N, false, Precision::BF16);
    linear(pool, ws, x1.data(), K, 1, w, N, K, false, {}, s1.data(), N, false, Precision::BF16);
    EXPECT_EQ(y0, s0);
    EXPECT_EQ(y0b, s0);
    EXPECT_EQ(y1, s1);
  }
}

TEST(Quant, Bf16XKeepsNaNAndTies) {
  // X rounded to bf16 for the FP8 and MXFP4 bf16 kernels, 64 and 128 values
  // at a time: a NaN whose payload is only in the low 16 bits stays NaN
  // (rounding its bits up would make it infinity), and ties round to even
  // (the dot products then equal the reference's).
  if (detectIsa() < Isa::Avx512Bf16 || !__builtin_cpu_supports("avx512vbmi"))
    GTEST_SKIP() << "no AVX512-BF16 with VBMI";
  IsaGuard guard;
  setIsa(Isa::Avx512Bf16);
  ThreadPool pool(1);
  Workspace ws(1);
  const int64_t N = 16, K = 256;
  Fp8Matrix f(N, K, 128, 128, 51);
  Mxfp4Matrix mx(N, K, 52);
  for (WRef w : {f.ref(), mx.ref()}) {
    SCOPED_TRACE(w.format == QuantFormat::MXFP4 ? "MXFP4" : "FP8");
    std::vector<float> X(2 * K);
    for (int64_t k = 0; k < K; ++k) { // ties: 1 + 2^-8 (down to 1), 1 + 3 * 2^-8 (up)
      uint32_t u = 0x3f800000u | (k % 2 ? 0x18000u : 0x8000u);
      std::memcpy(&X[size_t(k)], &u, 4);
      X[size_t(K + k)] = X[size_t(k)];
    }
    const uint32_t nan = 0x7f800001u;
    std::memcpy(&X[size_t(K + 77)], &nan, 4);
    std::vector<float> Y(2 * N), deq(size_t(N * K));
    linear(pool, ws, X.data(), K, 2, w, N, K, false, {}, Y.data(), N, false, Precision::BF16);
    dequantizeRows(w, K, 0, N, deq.data());
    for (int64_t n = 0; n < N; ++n) {
      double ref = 0;
      for (int64_t k = 0; k < K; ++k)
        ref += double(deq[size_t(n * K + k)]) * (k % 2 ? 1.0 + 2.0 / 128 : 1.0);
      EXPECT_NEAR(Y[size_t(n)], ref, 1e-4 * (1 + std::abs(ref))) << n;
      EXPECT_TRUE(std::isnan(Y[size_t(N + n)])) << n;
    }
  }
}

TEST(Fp8, Bf16DotProductsRoundOnlyX) {
  // Plans computing in bf16 on AVX512-BF16 + VBMI CPUs, scale blocks of
  // 64-column multiples: every e4m3 value is exact as bf16, X is rounded to
  // bf16 (nearest even), the sums are f32. Other block widths keep the f32
  // path (X exact).
  if (detectIsa() < Isa::Avx512Bf16 || !__builtin_cpu_supports("avx512vbmi"))
    GTEST_SKIP() << "no AVX512-BF16 with VBMI";
  IsaGuard guard;
  setIsa(Isa::Avx512Bf16);
  struct Shape {
    int64_t N, K, bn, bk;
  };
  for (Shape s : {Shape{40, 256, 128, 128}, Shape{19, 200, 128, 128}, Shape{70, 300, 32, 64},
                  Shape{150, 64, 128, 64}, Shape{37, 100, 16, 24}})
    for (int64_t T : {1, 2, 3, 4, 5, 9, 13})
      for (bool acc : {false, true}) {
        SCOPED_TRACE(::testing::Message() << "T=" << T << " N=" << s.N << " K=" << s.K
                                          << " block " << s.bn << "x" << s.bk);
        ThreadPool pool(2);
        Workspace ws(2);
        Fp8Matrix m(s.N, s.K, s.bn, s.bk, 41);
        const int64_t ldx = s.K + 3, ldy = s.N + 2;
        std::vector<float> X = randomFloats(size_t(T * ldx), 42);
        std::vector<float> Y0 = randomFloats(size_t(T * ldy), 43), Y = Y0;
        linear(pool, ws, X.data(), ldx, T, m.ref(), s.N, s.K, false, {}, Y.data(), ldy, acc,
               Precision::BF16);
        std::vector<float> deq(size_t(s.N * s.K));
        dequantizeRows(m.ref(), s.K, 0, s.N, deq.data());
        const bool rounded = s.bk % 64 == 0;
        ASSERT_NO_FATAL_FAILURE(expectProduct(
            Y, Y0, ldy, acc, T, s.N, s.K,
            [&](int64_t t, int64_t k) {
              float x = X[size_t(t * ldx + k)];
              return rounded ? roundedToBf16(x) : x;
            },
            deq));
      }
  // Decode's routed experts (linearBatch) take the same path: the same
  // floats as separate products, a shared x prepared once.
  ThreadPool pool(2);
  Workspace ws(2);
  const Fp8Matrix m(40, 256, 128, 128, 44);
  std::vector<float> x0 = randomFloats(256, 45), x1 = randomFloats(256, 46);
  std::vector<float> y0(40), y0b(40), y1(40), s0(40), s1(40);
  linearBatch(pool, ws, {GemvJob{x0.data(), m.ref(), 40, 256, {}, y0.data()},
                         GemvJob{x0.data(), m.ref(), 40, 256, {}, y0b.data()},
                         GemvJob{x1.data(), m.ref(), 40, 256, {}, y1.data()}},
              Precision::BF16);
  linear(pool, ws, x0.data(), 256, 1, m.ref(), 40, 256, false, {}, s0.data(), 40, false,
         Precision::BF16);
  linear(pool, ws, x1.data(), 256, 1, m.ref(), 40, 256, false, {}, s1.data(), 40, false,
         Precision::BF16);
  EXPECT_EQ(y0, s0);
  EXPECT_EQ(y0b, s0);
  EXPECT_EQ(y1, s1);
}
