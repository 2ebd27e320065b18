//===- QuantKernelsTest.cpp - Products with FP8 block-scaled weights -------===//
//
// linear() with a quantized W against the naive product with W dequantized
// the way HF does (fp8 value x its block's scale), on every ISA, for decode
// and prefill row counts and for blocks that do not divide the matrix.
//
//===----------------------------------------------------------------------===//
#include "TestUtil.h"

#include "moert/cpu/Kernels.h"

#include <cmath>
#include <cstring>

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
  for (Shape s : {Shape{37, 100, 16, 24}, Shape{40, 256, 128, 128}, Shape{5, 7, 2, 3}})
    for (Isa isa : isas)
      for (int64_t T : {1, 2, 3, 4, 5, 9})
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

namespace {

/// e2m1 decoded from its definition (bias 1, subnormal 0.5 at exponent 0).
double e2m1(uint8_t v) {
  int e = (v >> 1) & 3, m = v & 1;
  double mag = e == 0 ? m * 0.5 : std::ldexp(1.0 + m / 2.0, e - 1);
  return (v & 8) ? -mag : mag;
}

} // namespace

TEST(Mxfp4, DecodesScales) {
  EXPECT_EQ(e8m0ToF32(127), 1.0f);
  EXPECT_EQ(e8m0ToF32(0), std::ldexp(1.0f, -127));
  EXPECT_EQ(e8m0ToF32(254), std::ldexp(1.0f, 127));
  EXPECT_TRUE(std::isinf(e8m0ToF32(255)));
}

TEST(Mxfp4, LinearMatchesDequantizedProduct) {
  const Isa saved = activeIsa();
  std::vector<Isa> isas{Isa::Scalar};
  if (detectIsa() >= Isa::Avx512)
    isas.push_back(Isa::Avx512);
  for (int64_t N : {1, 17, 40})
    for (int64_t K : {32, 96, 256})
      for (Isa isa : isas)
        for (int64_t T : {1, 2, 3, 4, 5, 9})
          for (bool acc : {false, true}) {
            SCOPED_TRACE(::testing::Message() << isaName(isa) << " T=" << T << " N=" << N
                                              << " K=" << K << " acc=" << acc);
            setIsa(isa);
            ThreadPool pool(2);
            Workspace ws(2);
            // Every nibble and scales around 2^0 (x 2^-12 .. 2^8).
            std::vector<uint8_t> q(size_t(N * K / 2)), sc(size_t(N * K / 32));
            std::vector<float> r = randomFloats(q.size() + sc.size(), 11);
            for (size_t i = 0; i < q.size(); ++i)
              q[i] = uint8_t(int(std::abs(r[i]) * 1e4f) & 0xff);
            for (size_t i = 0; i < sc.size(); ++i)
              sc[i] = uint8_t(115 + int(std::abs(r[q.size() + i]) * 1e4f) % 20);
            const int64_t ldx = K + 3, ldy = N + 2;
            std::vector<float> X = randomFloats(size_t(T * ldx), 12);
            std::vector<float> Y0 = randomFloats(size_t(T * ldy), 13), Y = Y0;
            WRef w{q.data(), DType::F32};
            w.format = QuantFormat::MXFP4;
            w.scales = sc.data();
            w.blockRows = 1;
            w.blockCols = 32;
            linear(pool, ws, X.data(), ldx, T, w, N, K, false, {}, Y.data(), ldy, acc,
                   Precision::F32);
            std::vector<float> deq(size_t(N * K));
            dequantizeRows(w, K, 0, N, deq.data());
            for (int64_t t = 0; t < T; ++t)
              for (int64_t n = 0; n < N; ++n) {
                double ref = acc ? Y0[size_t(t * ldy + n)] : 0.0, mag = std::abs(ref);
                for (int64_t k = 0; k < K; ++k) {
                  // HF's convert_moe_packed_tensors: element 2j is byte j's
                  // low nibble, times 2^(scale - 127).
                  uint8_t b = q[size_t(n * K / 2 + k / 2)];
                  float wv = float(std::ldexp(e2m1(k % 2 ? b >> 4 : b & 15),
                                              int(sc[size_t(n * K / 32 + k / 32)]) - 127));
                  ASSERT_EQ(deq[size_t(n * K + k)], wv) << n << " " << k;
                  double p = double(X[size_t(t * ldx + k)]) * wv;
                  ref += p;
                  mag += std::abs(p);
                }
                ASSERT_NEAR(Y[size_t(t * ldy + n)], ref, 2e-6 * mag + 1e-7) << t << " " << n;
              }
          }
  setIsa(saved);
}
