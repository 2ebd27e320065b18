//===- CudaKernelsTest.cpp - CUDA kernels against the CPU reference -------===//
//
// Every test launches kernels of moert_cuda on random inputs (odd sizes,
// T = 1 and T > 1) and compares with runtime/cpu. Without a usable device
// (cudaGetDeviceCount fails, as it does without a driver, or returns 0)
// every test reports SKIPPED.
//
//===----------------------------------------------------------------------===//
#include "CudaKernels.h"

#include "CudaTestUtil.h"
#include "moert/DType.h"
#include "moert/Generate.h"
#include "moert/cpu/Kernels.h"

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <vector>

using namespace moert;
namespace mc = moert::cuda;
using mc::WType;
using moetest::randn;

namespace {

#define REQUIRE_GPU()                                                                              \
  do {                                                                                             \
    if (mc::deviceCount() == 0)                                                                    \
      GTEST_SKIP() << "no CUDA device (cudaGetDeviceCount failed or returned 0)";                  \
  } while (0)

#define CK(x) ASSERT_EQ(cudaError_t(x), cudaSuccess) << cudaGetErrorString(x)

/// A device copy of a host vector (or n zero bytes).
template <typename T> struct Dev {
  T *p = nullptr;
  size_t n = 0;
  explicit Dev(size_t count) : n(count) {
    if (cudaMalloc(reinterpret_cast<void **>(&p), std::max<size_t>(n, 1) * sizeof(T)) ==
        cudaSuccess)
      cudaMemset(p, 0, std::max<size_t>(n, 1) * sizeof(T));
  }
  explicit Dev(const std::vector<T> &v) : Dev(v.size()) {
    cudaMemcpy(p, v.data(), n * sizeof(T), cudaMemcpyHostToDevice);
  }
  ~Dev() { cudaFree(p); }
  Dev(const Dev &) = delete;
  std::vector<T> get() const {
    std::vector<T> v(n);
    cudaDeviceSynchronize();
    cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost);
    return v;
  }
};

/// Weights of a type as raw 16-bit or 32-bit words, and their f32 values.
struct HostW {
  WType type;
  std::vector<uint16_t> h;
  std::vector<float> f; // the values the kernels see (rounded)
  HostW(const std::vector<float> &v, WType t) : type(t), f(v) {
    if (t != WType::F32) {
      h.resize(v.size());
      for (size_t i = 0; i < v.size(); ++i) {
        h[i] = t == WType::BF16 ? f32ToBf16(v[i]) : f32ToF16(v[i]);
        f[i] = t == WType::BF16 ? bf16ToF32(h[i]) : f16ToF32(h[i]);
      }
    }
  }
  cpu::WRef ref() const { return {f.data(), DType::F32}; }
};

/// A device copy of HostW.
struct DevW {
  void *p = nullptr;
  WType type;
  explicit DevW(const HostW &w) : type(w.type) {
    size_t bytes = w.type == WType::F32 ? w.f.size() * 4 : w.h.size() * 2;
    cudaMalloc(&p, std::max<size_t>(bytes, 1));
    cudaMemcpy(p, w.type == WType::F32 ? static_cast<const void *>(w.f.data()) : w.h.data(), bytes,
               cudaMemcpyHostToDevice);
  }
  ~DevW() { cudaFree(p); }
  DevW(const DevW &) = delete;
  mc::DW dw() const { return {p, type}; }
};

void expectNear(const std::vector<float> &got, const std::vector<float> &want, float rel,
                const char *what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(got[i], want[i], rel * std::max(1.0f, std::fabs(want[i]))) << what << " at " << i;
}

const WType kTypes[] = {WType::F32, WType::BF16, WType::F16};

TEST(CudaKernels, DeviceCountIsSafe) {
  // Must not crash or leave a sticky error without a driver.
  int n = mc::deviceCount();
  EXPECT_GE(n, 0);
  if (n == 0)
    GTEST_SKIP() << "no CUDA device";
}

/// Prints the device's facts for scripts/gpu-check.sh ("device: ..." lines).
TEST(CudaKernels, DeviceProperties) {
  REQUIRE_GPU();
  int dev = 0;
  CK(cudaGetDevice(&dev));
  cudaDeviceProp p{};
  CK(cudaGetDeviceProperties(&p, dev));
  int rt = 0, drv = 0;
  cudaRuntimeGetVersion(&rt);
  cudaDriverGetVersion(&drv);
  std::printf("device: %s cc=%d.%d sms=%d mem=%zu MiB l2=%d KiB smem/block(optin)=%zu KiB "
              "runtime=%d driver=%d\n",
              p.name, p.major, p.minor, p.multiProcessorCount, p.totalGlobalMem >> 20,
              p.l2CacheSize >> 10, p.sharedMemPerBlockOptin >> 10, rt, drv);
  RecordProperty("device", p.name);
  EXPECT_GE(p.major, 7);
}

TEST(CudaKernels, EmbeddingAndPositions) {
  REQUIRE_GPU();
  std::mt19937 rng(1);
  const int64_t V = 37, D = 19, T = 5, ldo = 23;
  std::vector<int64_t> ids = {3, 0, 36, 3, 17};
  for (WType t : kTypes) {
    HostW w(randn(size_t(V * D), rng), t);
    DevW dw(w);
    Dev<int64_t> dids(ids);
    Dev<float> out(size_t(T * ldo));
    CK(mc::embedding(dids.p, T, dw.dw(), D, 0.5f, out.p, ldo, nullptr));
    CK(mc::addRows(dids.p, T, dw.dw(), D, out.p, ldo, nullptr));
    std::vector<float> ref(size_t(T * ldo), 0.0f);
    cpu::embedding(ids.data(), T, w.ref(), D, 0.5f, ref.data(), ldo);
    cpu::addRows(ids.data(), T, w.ref(), D, ref.data(), ldo);
    expectNear(out.get(), ref, 0.0f, "embedding");
  }
}

TEST(CudaKernels, Norms) {
  REQUIRE_GPU();
  std::mt19937 rng(2);
  for (int64_t rows : {1, 7})
    for (int64_t dim : {5, 64, 1000, 4099}) {
      const int64_t ld = 2 * dim + 3;
      std::vector<float> x = randn(size_t(rows * ld), rng, 3.0f);
      HostW w(randn(size_t(dim), rng), WType::BF16), b(randn(size_t(dim), rng), WType::F32);
      DevW dw(w), db(b);
      Dev<float> dx(x), o1(x), o2(x);
      CK(mc::rmsNorm(dx.p, ld, o1.p, ld, rows, dim, dim, dim, dw.dw(), 1e-6f, 1.0f, nullptr));
      CK(mc::layerNorm(dx.p, ld, o2.p, ld, rows, 0, 2 * dim, dim, dw.dw(), db.dw(), 1e-5f,
                       nullptr));
      std::vector<float> r1 = x, r2 = x;
      cpu::rmsNorm(x.data(), ld, r1.data(), ld, rows, dim, dim, dim, w.ref(), 1e-6f, 1.0f);
      cpu::layerNorm(x.data(), ld, r2.data(), ld, rows, 0, 2 * dim, dim, w.ref(), b.ref(), 1e-5f);
      expectNear(o1.get(), r1, 1e-6f, "rmsNorm");
      expectNear(o2.get(), r2, 1e-6f, "layerNorm");
    }
}

TEST(CudaKernels, RopeAndActivations) {
  REQUIRE_GPU();
  std::mt19937 rng(3);
  const int heads = 5, headDim = 24, rotary = 16;
  const int64_t T = 6, ld = heads * headDim + 2;
  std::vector<int64_t> pos = {0, 1, 2, 9, 30, 31};
  std::vector<float> c, s;
  cpu::ropeTables(32, rotary, 10000.0, c, s);
  Dev<float> dc(c), ds(s);
  Dev<int64_t> dp(pos);
  for (bool inter : {false, true}) {
    std::vector<float> x = randn(size_t(T * ld), rng);
    Dev<float> dx(x);
    CK(mc::rope(dx.p, ld, T, dp.p, heads, headDim, rotary, dc.p, ds.p, inter, nullptr));
    cpu::rope(x.data(), ld, T, pos.data(), heads, headDim, rotary, c.data(), s.data(), inter);
    expectNear(dx.get(), x, 1e-6f, "rope");
  }
  const int64_t n = 77, rows = 3;
  for (int k = 0; k <= int(mc::ActKind::Identity); ++k)
    for (bool gated : {false, true}) {
      std::vector<float> x = randn(size_t(rows * 2 * n), rng, 3.0f);
      Dev<float> dx(x);
      CK(mc::activation(dx.p, 2 * n, dx.p, 2 * n, rows, n, mc::ActKind(k), gated, nullptr));
      cpu::activation(x.data(), 2 * n, x.data(), 2 * n, rows, n, cpu::Act(k), gated);
      expectNear(dx.get(), x, 1e-6f, "activation");
    }
}

TEST(CudaKernels, AddMixCombine) {
  REQUIRE_GPU();
  std::mt19937 rng(4);
  const int64_t T = 9, D = 33, K = 3;
  std::vector<float> a = randn(size_t(T * D), rng), b = randn(size_t(T * D), rng);
  std::vector<float> g = randn(size_t(T * 2), rng);
  Dev<float> da(a), db(b), dg(g), out(size_t(T * D));
  CK(mc::add(da.p, db.p, out.p, T * D, nullptr));
  std::vector<float> ref(size_t(T * D));
  for (size_t i = 0; i < ref.size(); ++i)
    ref[i] = a[i] + b[i];
  expectNear(out.get(), ref, 0.0f, "add");
  CK(mc::sigmoidGate(dg.p, 2, da.p, D, T, D, nullptr));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t d = 0; d < D; ++d)
      a[size_t(t * D + d)] *= cpu::activate(cpu::Act::Sigmoid, g[size_t(t * 2)]);
  expectNear(da.get(), a, 1e-6f, "sigmoidGate");
  CK(mc::residualMix(da.p, db.p, dg.p, 2, out.p, D, T, D, nullptr));
  for (int64_t t = 0; t < T; ++t) {
    double x0 = g[size_t(t * 2)], x1 = g[size_t(t * 2 + 1)], m = std::max(x0, x1);
    double e0 = std::exp(x0 - m), e1 = std::exp(x1 - m);
    for (int64_t d = 0; d < D; ++d)
      ref[size_t(t * D + d)] = a[size_t(t * D + d)] * float(e0 / (e0 + e1)) +
                               b[size_t(t * D + d)] * float(e1 / (e0 + e1));
  }
  expectNear(out.get(), ref, 1e-6f, "residualMix");
  std::vector<float> so = randn(size_t(T * K * D), rng), sw = randn(size_t(T * K), rng);
  Dev<float> dso(so), dsw(sw), dout(a);
  CK(mc::combine(dso.p, dsw.p, T, K, D, dout.p, D, true, nullptr));
  cpu::combine(so.data(), sw.data(), T, K, D, a.data(), D, true);
  expectNear(dout.get(), a, 1e-6f, "combine");
}

TEST(CudaKernels, GateMatchesCpu) {
  REQUIRE_GPU();
  std::mt19937 rng(5);
  for (int E : {4, 60, 128})
    for (int K : {1, 2, 8})
      for (int64_t T : {1, 37, 300})
        for (int variant = 0; variant < 5; ++variant) {
          if (K > E || (variant == 4 && E < 8))
            continue;
          mc::math::GateParams p;
          p.numExperts = E;
          p.topK = K;
          p.sigmoid = variant >= 3;
          p.softmaxBeforeTopk = variant != 1;
          p.normTopk = variant >= 1;
          p.dropTokens = variant == 2;
          p.capacityFactor = 1.0f;
          p.minCapacity = 1;
          std::vector<float> logits = randn(size_t(T * E), rng);
          if (variant == 2)
            for (auto &l : logits)
              l = std::round(l); // ties
          // Variant 4: DeepSeek-V3's routing (4 groups, 2 kept, a
          // selection bias, a routed scale).
          std::vector<float> bias = randn(size_t(E), rng, 0.3f);
          Dev<float> dbias(bias);
          if (variant == 4) {
            p.numGroups = 4;
            p.topkGroups = 2;
            p.selectionBias = dbias.p;
            p.routedScalingFactor = 2.5f;
          }
          Dev<float> dl(logits), sw(size_t(T * K));
          Dev<int32_t> se(size_t(T * K)), off(size_t(E + 1)), ss(size_t(T * K));
          Dev<char> ws(mc::gateWorkspaceBytes(T, E));
          CK(mc::gate(dl.p, E, T, p, se.p, sw.p, off.p, ss.p, ws.p, nullptr));
          cpu::GateParams cp = moetest::cpuGateParams(p, bias);
          std::vector<int32_t> rse(size_t(T * K)), roff(size_t(E + 1)), rss(size_t(T * K));
          std::vector<float> rsw(size_t(T * K));
          int64_t n = cpu::gate(logits.data(), E, T, cp, rse.data(), rsw.data(), roff.data(),
                                rss.data(), nullptr);
          SCOPED_TRACE(::testing::Message()
                       << "E=" << E << " K=" << K << " T=" << T << " variant=" << variant);
          ASSERT_EQ(se.get(), rse);
          ASSERT_EQ(off.get(), roff);
          std::vector<int32_t> gs = ss.get();
          ASSERT_TRUE(std::equal(rss.begin(), rss.begin() + n, gs.begin()));
          expectNear(sw.get(), rsw, 1e-6f, "slot weights");
        }
}

/// Experts on the device vs a direct CPU computation per admitted slot.
/// oai: gpt-oss's experts (gate bias, SwigluOai with limit 7, alpha 1.702).
void checkExperts(int64_t T, int K, int E, int64_t D, int64_t I, WType wt, bool gated,
                  std::mt19937 &rng, bool oai = false) {
  SCOPED_TRACE(::testing::Message() << "T=" << T << " K=" << K << " E=" << E << " D=" << D
                                    << " I=" << I << " w=" << int(wt) << " gated=" << gated
                                    << " oai=" << oai);
  const float limit = 7.0f, alpha = 1.702f;
  std::vector<float> x = randn(size_t(T * D), rng), logits = randn(size_t(T * E), rng);
  mc::math::GateParams mp;
  mp.numExperts = E;
  mp.topK = K;
  mp.normTopk = true;
  mp.capacityFactor = 1.5f;
  mp.minCapacity = 1;
  mp.dropTokens = true;
  cpu::GateParams cp = moetest::cpuGateParams(mp);
  std::vector<int32_t> se(size_t(T * K)), off(size_t(E + 1)), ss(size_t(T * K), 0);
  std::vector<float> sw(size_t(T * K));
  cpu::gate(logits.data(), E, T, cp, se.data(), sw.data(), off.data(), ss.data(), nullptr);
  std::vector<HostW> g, u, d, ub, db, gb;
  for (int e = 0; e < E; ++e) {
    g.emplace_back(randn(size_t(I * D), rng, 0.2f), wt);
    u.emplace_back(randn(size_t(I * D), rng, 0.2f), wt);
    d.emplace_back(randn(size_t(D * I), rng, 0.2f), wt);
    ub.emplace_back(randn(size_t(I), rng), wt);
    db.emplace_back(randn(size_t(D), rng), wt);
    gb.emplace_back(randn(size_t(I), rng, 4.0f), wt); // some past the clamp
  }
  std::vector<std::unique_ptr<DevW>> keep;
  std::vector<mc::ExpertW> table(static_cast<size_t>(E));
  for (int e = 0; e < E; ++e) {
    if (e == 1) { // not local: numReplicas 0
      table[size_t(e)].numReplicas = 0;
      continue;
    }
    auto up = [&](const HostW &w) {
      keep.push_back(std::make_unique<DevW>(w));
      return keep.back()->dw();
    };
    mc::ExpertW &ew = table[size_t(e)];
    if (gated)
      ew.gate = up(g[size_t(e)]);
    ew.up = up(u[size_t(e)]);
    ew.down = up(d[size_t(e)]);
    ew.upBias = up(ub[size_t(e)]);
    if (oai)
      ew.gateBias = up(gb[size_t(e)]);
    if (e % 2 == 0)
      ew.downBias = up(db[size_t(e)]);
  }
  // The grouped path (T*K > kExpertsGemvMaxRows) runs 16-bit weights on
  // tensor cores: activations rounded to the weight type.
  const bool rounded = T * K > mc::kExpertsGemvMaxRows && wt != WType::F32;
  auto rnd = [&](float v) {
    if (!rounded)
      return v;
    return wt == WType::BF16 ? bf16ToF32(f32ToBf16(v)) : f16ToF32(f32ToF16(v));
  };
  std::vector<float> ref(size_t(T * K * D), 0.0f);
  for (int e = 0; e < E; ++e) {
    if (e == 1)
      continue;
    for (int32_t j = off[size_t(e)]; j < off[size_t(e + 1)]; ++j) {
      int32_t s = ss[size_t(j)];
      std::vector<float> xr(x.begin() + (s / K) * D, x.begin() + (s / K + 1) * D);
      for (auto &v : xr)
        v = rnd(v);
      const float *xi = xr.data();
      std::vector<float> h(static_cast<size_t>(I));
      for (int64_t i = 0; i < I; ++i) {
        double a = 0.0, b = ub[size_t(e)].f[size_t(i)];
        for (int64_t k = 0; k < D; ++k) {
          b += double(u[size_t(e)].f[size_t(i * D + k)]) * xi[k];
          if (gated)
            a += double(g[size_t(e)].f[size_t(i * D + k)]) * xi[k];
        }
        if (oai) {
          float gu[2] = {float(a + gb[size_t(e)].f[size_t(i)]), float(b)};
          cpu::swigluOai(gu, 2, 1, 1, limit, alpha);
          h[size_t(i)] = gu[0];
        } else {
          h[size_t(i)] = gated ? cpu::activate(cpu::Act::Silu, float(a)) * float(b)
                               : cpu::activate(cpu::Act::Gelu, float(b));
        }
      }
      for (int64_t n = 0; n < D; ++n) {
        double o = e % 2 == 0 ? db[size_t(e)].f[size_t(n)] : 0.0;
        for (int64_t i = 0; i < I; ++i)
          o += double(d[size_t(e)].f[size_t(n * I + i)]) * rnd(h[size_t(i)]);
        ref[size_t(s * D + n)] = float(o);
      }
    }
  }
  Dev<float> dx(x), out(size_t(T * K * D));
  Dev<int32_t> doff(off), dss(ss);
  Dev<mc::ExpertW> dtable(table);
  Dev<char> ws(mc::expertsWorkspaceBytes(T, K, I));
  mc::ExpertsArgs a;
  a.in = dx.p;
  a.ldi = D;
  a.sortedSlots = dss.p;
  a.expertOffsets = doff.p;
  a.slotOut = out.p;
  a.T = T;
  a.topK = K;
  a.numExperts = E;
  a.D = D;
  a.I = I;
  a.act = oai ? mc::ActKind::SwigluOai : gated ? mc::ActKind::Silu : mc::ActKind::Gelu;
  a.gated = gated;
  a.swigluLimit = limit;
  a.swigluAlpha = alpha;
  a.experts = dtable.p;
  a.weightType = wt;
  CK(mc::experts(a, ws.p, nullptr));
  // Rounded: an h element may round to the neighbouring 16-bit value.
  expectNear(out.get(), ref, rounded ? 1e-2f : 2e-4f, "experts");
}

TEST(CudaKernels, ExpertsGemvAndGrouped) {
  REQUIRE_GPU();
  std::mt19937 rng(6);
  for (WType wt : kTypes)
    for (bool gated : {true, false}) {
      checkExperts(1, 2, 8, 64, 40, wt, gated, rng);    // decode GEMV, vector loads
      checkExperts(3, 2, 5, 33, 17, wt, gated, rng);    // GEMV, scalar loads
      checkExperts(41, 2, 8, 72, 50, wt, gated, rng);   // grouped tiles
      checkExperts(200, 4, 16, 37, 29, wt, gated, rng); // odd sizes, drops
      checkExperts(300, 2, 4, 128, 96, wt, gated, rng); // several full tiles per expert
    }
  for (WType wt : kTypes) { // gpt-oss: gate bias and SwigluOai, GEMV and grouped
    checkExperts(1, 4, 8, 64, 40, wt, true, rng, true);
    checkExperts(41, 4, 8, 72, 50, wt, true, rng, true);
  }
}

/// Routing stays on the device: gate + experts + combine of one decode
/// token captured once into a CUDA graph and replayed with new router logits
/// give what direct launches give (no host read of the offsets in between).
TEST(CudaKernels, MoeStepCapturesIntoGraph) {
  REQUIRE_GPU();
  std::mt19937 rng(11);
  const int E = 8, K = 2;
  const int64_t T = 1, D = 64, I = 48;
  std::vector<HostW> g, u, d;
  std::vector<std::unique_ptr<DevW>> keep;
  std::vector<mc::ExpertW> table(static_cast<size_t>(E));
  for (int e = 0; e < E; ++e) {
    for (auto *v : {&g, &u})
      v->emplace_back(randn(size_t(I * D), rng, 0.2f), WType::BF16);
    d.emplace_back(randn(size_t(D * I), rng, 0.2f), WType::BF16);
    keep.push_back(std::make_unique<DevW>(g.back()));
    table[size_t(e)].gate = keep.back()->dw();
    keep.push_back(std::make_unique<DevW>(u.back()));
    table[size_t(e)].up = keep.back()->dw();
    keep.push_back(std::make_unique<DevW>(d.back()));
    table[size_t(e)].down = keep.back()->dw();
  }
  Dev<mc::ExpertW> dtable(table);
  Dev<float> x(randn(size_t(T * D), rng)), logits(size_t(T * E)), sw(size_t(T * K)),
      slotOut(size_t(T * K * D)), out(size_t(T * D));
  Dev<int32_t> se(size_t(T * K)), off(size_t(E + 1)), ss(size_t(T * K));
  Dev<char> gws(mc::gateWorkspaceBytes(T, E)), ews(mc::expertsWorkspaceBytes(T, K, I));
  mc::math::GateParams p;
  p.numExperts = E;
  p.topK = K;
  p.normTopk = true;
  mc::ExpertsArgs a;
  a.in = x.p;
  a.ldi = D;
  a.sortedSlots = ss.p;
  a.expertOffsets = off.p;
  a.slotOut = slotOut.p;
  a.T = T;
  a.topK = K;
  a.numExperts = E;
  a.D = D;
  a.I = I;
  a.experts = dtable.p;
  a.weightType = WType::BF16;
  auto step = [&](cudaStream_t s) {
    EXPECT_EQ(mc::gate(logits.p, E, T, p, se.p, sw.p, off.p, ss.p, gws.p, s), cudaSuccess);
    EXPECT_EQ(mc::experts(a, ews.p, s), cudaSuccess);
    EXPECT_EQ(mc::combine(slotOut.p, sw.p, T, K, D, out.p, D, false, s), cudaSuccess);
  };
  cudaStream_t s;
  CK(cudaStreamCreate(&s));
  cudaGraph_t graph;
  CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  step(s);
  CK(cudaStreamEndCapture(s, &graph));
  cudaGraphExec_t exec;
  CK(cudaGraphInstantiate(&exec, graph, 0));
  for (int round = 0; round < 3; ++round) {
    std::vector<float> l = randn(size_t(T * E), rng);
    CK(cudaMemcpy(logits.p, l.data(), l.size() * 4, cudaMemcpyHostToDevice));
    CK(cudaGraphLaunch(exec, s));
    CK(cudaStreamSynchronize(s));
    std::vector<float> viaGraph = out.get();
    step(s);
    CK(cudaStreamSynchronize(s));
    EXPECT_EQ(out.get(), viaGraph) << "round " << round;
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(s);
}

TEST(CudaKernels, GemvAndLinear) {
  REQUIRE_GPU();
  std::mt19937 rng(7);
  mc::Blas blas;
  ASSERT_TRUE(blas.ok());
  for (WType wt : kTypes)
    for (int64_t T : {1, 7})
      for (int64_t K : {64, 45})
        for (bool tr : {false, true}) {
          const int64_t N = 70;
          SCOPED_TRACE(::testing::Message()
                       << "w=" << int(wt) << " T=" << T << " K=" << K << " transposed=" << tr);
          HostW w(randn(size_t(N * K), rng, 0.3f), wt), b(randn(size_t(N), rng), wt);
          DevW dw(w), db(b);
          std::vector<float> x = randn(size_t(T * K), rng), y0 = randn(size_t(T * N), rng);
          Dev<float> dx(x), dy(y0);
          Dev<char> ws(mc::Blas::linearWorkspaceBytes(T, K));
          CK(blas.linear(dx.p, K, T, dw.dw(), N, K, tr, db.dw(), dy.p, N, true, ws.p, nullptr));
          // Reference: T > 1 rounds activations to the weights' 16-bit type.
          std::vector<float> ref = y0;
          for (int64_t t = 0; t < T; ++t)
            for (int64_t n = 0; n < N; ++n) {
              double s = b.f[size_t(n)];
              for (int64_t k = 0; k < K; ++k) {
                float xv = x[size_t(t * K + k)];
                if (T > 1 || tr) {
                  if (wt == WType::BF16)
                    xv = bf16ToF32(f32ToBf16(xv));
                  else if (wt == WType::F16)
                    xv = f16ToF32(f32ToF16(xv));
                }
                float wv = tr ? w.f[size_t(k * N + n)] : w.f[size_t(n * K + k)];
                s += double(wv) * xv;
              }
              ref[size_t(t * N + n)] += float(s);
            }
          expectNear(dy.get(), ref, 1e-4f, "linear");
        }
}

TEST(CudaKernels, AttentionDecodeAndPrefill) {
  REQUIRE_GPU();
  std::mt19937 rng(8);
  struct Case {
    int heads, kvHeads, hd;
    int64_t T, start;
    int window, splits;
    WType kv;
    bool sinks = false;
  };
  const Case cases[] = {
      {8, 2, 64, 1, 0, 0, 0, WType::F32},     // first token
      {8, 2, 64, 1, 2000, 0, 0, WType::BF16}, // long decode, chosen splits
      {8, 8, 128, 1, 700, 0, 5, WType::F16},  // MHA, forced splits
      {6, 2, 40, 13, 0, 0, 1, WType::F32},    // prefill, odd head dim
      {4, 1, 256, 29, 5, 7, 0, WType::BF16},  // prefill after context, window
      {12, 4, 96, 3, 300, 64, 3, WType::F32}, // small batch of tokens, window, splits
      {8, 2, 64, 1, 2000, 128, 0, WType::BF16, true}, // gpt-oss: decode, window, sinks
      {8, 2, 64, 1, 900, 0, 4, WType::F32, true},     // sinks merged after the splits
      {8, 2, 64, 17, 0, 0, 1, WType::F32, true},      // prefill with sinks
  };
  for (const Case &c : cases) {
    SCOPED_TRACE(::testing::Message() << "heads=" << c.heads << "/" << c.kvHeads << " hd=" << c.hd
                                      << " T=" << c.T << " start=" << c.start);
    const int64_t S = c.start + c.T + 3, hd = c.hd;
    const int64_t ld = (c.heads + 2 * c.kvHeads) * hd + 1;
    std::vector<float> qkv = randn(size_t(c.T * ld), rng);
    std::vector<int64_t> pos(size_t(c.T));
    std::iota(pos.begin(), pos.end(), c.start);
    // Earlier positions' K/V: random, in the cache's type on both sides.
    size_t cacheN = size_t(c.kvHeads * S * hd);
    HostW k0(randn(cacheN, rng), c.kv), v0(randn(cacheN, rng), c.kv);
    DevW dk(k0), dv(v0);
    std::vector<uint8_t> hk(cacheN * (c.kv == WType::F32 ? 4 : 2)), hv(hk.size());
    std::memcpy(hk.data(), c.kv == WType::F32 ? (const void *)k0.f.data() : k0.h.data(), hk.size());
    std::memcpy(hv.data(), c.kv == WType::F32 ? (const void *)v0.f.data() : v0.h.data(), hv.size());
    Dev<float> dqkv(qkv), dout(size_t(c.T * c.heads * hd));
    Dev<int64_t> dpos(pos);
    mc::AttentionArgs a;
    a.qkv = dqkv.p;
    a.ldqkv = ld;
    a.qCol = 0;
    a.kCol = c.heads * hd;
    a.vCol = (c.heads + c.kvHeads) * hd;
    a.out = dout.p;
    a.ldo = c.heads * hd;
    a.T = c.T;
    a.pos = dpos.p;
    a.maxPos = c.start + c.T - 1;
    a.cache = {dk.p, dv.p, c.kv, S, {}};
    a.heads = c.heads;
    a.kvHeads = c.kvHeads;
    a.headDim = c.hd;
    a.scale = 1.0f / std::sqrt(float(hd));
    a.slidingWindow = c.window;
    a.splits = c.splits;
    std::vector<float> sinks = randn(size_t(c.heads), rng, 2.0f);
    Dev<float> dsinks(sinks);
    if (c.sinks)
      a.sinks = {dsinks.p, WType::F32};
    Dev<char> ws(mc::attentionWorkspaceBytes(a));
    CK(mc::attention(a, ws.p, nullptr));
    ThreadPool pool(2);
    cpu::Workspace cws(2);
    std::vector<float> ref(size_t(c.T * c.heads * hd));
    DType dt = c.kv == WType::F32 ? DType::F32 : c.kv == WType::BF16 ? DType::BF16 : DType::F16;
    cpu::attention(pool, cws, qkv.data(), ld, a.qCol, a.kCol, a.vCol, ref.data(), a.ldo, c.T,
                   pos.data(), {hk.data(), hv.data(), dt, S}, c.heads, c.kvHeads, c.hd, a.scale,
                   c.window, c.sinks ? cpu::WRef{sinks.data(), DType::F32} : cpu::WRef{});
    expectNear(dout.get(), ref, 2e-5f, "attention");
  }
}

TEST(CudaKernels, Sampling) {
  REQUIRE_GPU();
  std::mt19937 rng(9);
  for (int64_t V : {1, 50, 4097, 151936}) {
    std::vector<float> logits = randn(size_t(V), rng, 2.0f);
    if (V > 1)
      logits[size_t(V / 2)] = logits[size_t(V - 1)] = 50.0f; // tie: lower id wins
    Dev<float> dl(logits);
    Dev<int64_t> out(1);
    CK(mc::argmax(dl.p, V, out.p, nullptr));
    ASSERT_EQ(out.get()[0], Sampler::argmax(logits.data(), V));
    for (float topP : {0.5f, 0.95f, 1.0f}) {
      for (auto &l : logits)
        l = std::normal_distribution<float>(0.0f, 2.0f)(rng);
      Dev<float> dl2(logits);
      const uint64_t seed = 77;
      Dev<uint64_t> state(std::vector<uint64_t>{seed});
      size_t bytes = mc::sampleWorkspaceBytes(V);
      Dev<char> ws(bytes);
      Sampler ref(0.8f, topP, seed);
      for (int step = 0; step < 4; ++step) {
        CK(mc::sampleTopP(dl2.p, V, 0.8f, topP, state.p, out.p, ws.p, bytes, nullptr));
        ASSERT_EQ(out.get()[0], ref.next(logits.data(), V)) << "V=" << V << " p=" << topP;
      }
    }
  }
}

} // namespace

/// Quantized weights expanded at upload: the device's bf16 equals the CPU
/// backend's dequantization rounded to bf16 (FP8 blocks with partial edge
/// blocks, MXFP4), NaN bytes left out as in CudaMath.DequantMatchesCpu.
TEST(CudaKernels, DequantizeToBf16) {
  REQUIRE_GPU();
  std::mt19937 rng(17);
  for (bool mx : {false, true}) {
    const int64_t N = 45, K = mx ? 128 : 200, bn = mx ? 1 : 16, bk = mx ? 32 : 64;
    const int64_t rowBytes = mx ? K / 2 : K, cols = (K + bk - 1) / bk, rows = (N + bn - 1) / bn;
    std::vector<uint8_t> q(size_t(N * rowBytes)), s8(size_t(rows * cols));
    std::vector<float> s32(size_t(rows * cols));
    for (auto &b : q)
      b = uint8_t(rng());
    for (size_t i = 0; i < s8.size(); ++i) {
      s8[i] = uint8_t(100 + rng() % 50);
      s32[i] = std::normal_distribution<float>(0.0f, 0.01f)(rng);
    }
    const void *hs = mx ? static_cast<const void *>(s8.data()) : s32.data();
    size_t sbytes = mx ? s8.size() : s32.size() * 4;
    Dev<uint8_t> dq(q);
    Dev<char> ds(sbytes);
    cudaMemcpy(ds.p, hs, sbytes, cudaMemcpyHostToDevice);
    Dev<uint16_t> out(size_t(N * K));
    auto f = mx ? mc::math::QFormat::MXFP4 : mc::math::QFormat::FP8E4M3Block;
    CK(mc::dequantizeToBf16(f, dq.p, ds.p, N, K, bn, bk, out.p, nullptr));
    std::vector<uint16_t> got = out.get();
    cpu::WRef w{q.data(), DType::F32, Layout::RowMajor,
                mx ? cpu::QuantFormat::MXFP4 : cpu::QuantFormat::FP8E4M3Block, hs, bn, bk};
    std::vector<float> ref(size_t(N * K));
    cpu::dequantizeRows(w, K, 0, N, ref.data());
    for (int64_t i = 0; i < N * K; ++i) {
      if (!mx && (q[size_t(i)] & 0x7f) == 0x7f)
        continue;
      ASSERT_EQ(got[size_t(i)], f32ToBf16(ref[size_t(i)])) << "mx=" << mx << " at " << i;
    }
  }
}

/// MLA on the device vs the CPU backend: a prefill call then a decode call,
/// DeepSeek-V3's widths and odd small ones, kv_b and latent cache in f32 or
/// bf16, chosen, forced and graph-style (positions read on the device)
/// splits.
TEST(CudaKernels, MlaPrefillAndDecode) {
  REQUIRE_GPU();
  std::mt19937 rng(15);
  struct Case {
    int H, N, R, V, L;
    int64_t T;
    WType w, cache;
    int splits;
    bool devicePos;
  };
  const Case cases[] = {
      {16, 128, 64, 128, 512, 9, WType::BF16, WType::BF16, 0, false}, // DeepSeek-V3's widths
      {16, 128, 64, 128, 512, 300, WType::BF16, WType::F32, 0, false}, // long prefill: splits
      {5, 8, 4, 6, 12, 11, WType::F32, WType::F32, 3, false},          // odd widths
      {3, 16, 8, 10, 40, 33, WType::F32, WType::BF16, 4, true},        // as a replayed graph
  };
  for (const Case &c : cases) {
    SCOPED_TRACE(::testing::Message() << "H=" << c.H << " L=" << c.L << " T=" << c.T
                                      << " splits=" << c.splits << " devicePos=" << c.devicePos);
    const int64_t C = c.L + c.R, S = c.T + 5, ldq = c.H * (c.N + c.R) + 1;
    std::vector<float> q = randn(size_t(c.T * ldq), rng), lat = randn(size_t(c.T * c.L), rng),
                       pe = randn(size_t(c.T * c.R), rng);
    HostW kvb(randn(size_t(c.H * (c.N + c.V) * c.L), rng, 0.1f), c.w);
    DevW dkvb(kvb);
    std::vector<int64_t> pos(static_cast<size_t>(c.T));
    std::iota(pos.begin(), pos.end(), 0);
    const float scale = 1.0f / std::sqrt(float(c.N + c.R));
    // The CPU reference, its cache in the same type.
    ThreadPool pool(2);
    cpu::Workspace ws(2);
    DType cdt = c.cache == WType::F32 ? DType::F32 : DType::BF16;
    std::vector<uint8_t> hc(size_t(S * C) * (c.cache == WType::F32 ? 4 : 2));
    std::vector<float> ref(size_t(c.T * c.H * c.V));
    cpu::MlaParams mp{c.H, c.N, c.R, c.V, c.L, scale, kvb.ref()};
    auto cpuCall = [&](int64_t t0, int64_t n) {
      cpu::MlaInputs in{q.data() + t0 * ldq, ldq, lat.data() + t0 * c.L, c.L,
                        pe.data() + t0 * c.R, c.R};
      cpu::mlaAttention(pool, ws, in, ref.data() + t0 * c.H * c.V, c.H * c.V, n,
                        pos.data() + t0, {hc.data(), nullptr, cdt, S}, mp);
    };
    cpuCall(0, c.T - 1);
    cpuCall(c.T - 1, 1);
    Dev<float> dq(q), dlat(lat), dpe(pe), dout(size_t(c.T * c.H * c.V));
    Dev<int64_t> dpos(pos);
    Dev<char> dcache(hc.size());
    auto gpuCall = [&](int64_t t0, int64_t n) {
      mc::MlaArgs a;
      a.q = dq.p + t0 * ldq;
      a.ldq = ldq;
      a.latent = dlat.p + t0 * c.L;
      a.ldLatent = c.L;
      a.kPe = dpe.p + t0 * c.R;
      a.ldKPe = c.R;
      a.out = dout.p + t0 * c.H * c.V;
      a.ldo = c.H * c.V;
      a.T = n;
      a.pos = dpos.p + t0;
      a.maxPos = c.devicePos ? -1 : t0 + n - 1;
      a.cache = {dcache.p, nullptr, c.cache, S, {}};
      a.heads = c.H;
      a.nopeDim = c.N;
      a.ropeDim = c.R;
      a.vHeadDim = c.V;
      a.kvLoraRank = c.L;
      a.scale = scale;
      a.kvB = dkvb.dw();
      a.splits = c.splits;
      Dev<char> w(mc::mlaWorkspaceBytes(a));
      CK(mc::mlaAttention(a, w.p, nullptr));
      CK(cudaDeviceSynchronize());
    };
    gpuCall(0, c.T - 1);
    gpuCall(c.T - 1, 1);
    std::vector<uint8_t> gotCache(hc.size());
    cudaMemcpy(gotCache.data(), dcache.p, hc.size(), cudaMemcpyDeviceToHost);
    EXPECT_EQ(gotCache, hc) << "the latent rows";
    expectNear(dout.get(), ref, 1e-4f, "mla");
  }
}

#ifdef MOERT_HAVE_NCCL
#include "NcclComm.h"

namespace {

/// One rank (one GPU): every collective is an identity or a copy. Several
/// ranks need several GPUs (NCCL refuses two ranks on one device).
TEST(CudaNccl, OneRankCollectives) {
  REQUIRE_GPU();
  mc::NcclComm comm(mc::NcclComm::newUniqueId(), 1, 0);
  ASSERT_TRUE(comm.ok()) << comm.error();
  std::mt19937 rng(10);
  std::vector<float> x = randn(37, rng);
  Dev<float> a(x), b(x.size());
  cudaStream_t s = nullptr;
  ASSERT_TRUE(comm.allReduceSum(a.p, x.size(), s)) << comm.error();
  ASSERT_TRUE(comm.allGather(a.p, b.p, x.size(), s)) << comm.error();
  EXPECT_EQ(b.get(), x);
  size_t counts[1] = {x.size() - 5}, offs[1] = {5}, roffs[1] = {0};
  Dev<float> c(x.size());
  ASSERT_TRUE(comm.allToAllV(a.p, counts, offs, c.p, counts, roffs, s)) << comm.error();
  std::vector<float> got = c.get();
  EXPECT_TRUE(std::equal(x.begin() + 5, x.end(), got.begin()));
  ASSERT_TRUE(comm.reduceScatterSum(a.p, b.p, x.size(), s)) << comm.error();
  ASSERT_TRUE(comm.broadcast(b.p, x.size() * sizeof(float), 0, s)) << comm.error();
  EXPECT_EQ(b.get(), x);
}

/// The moert::Comm adapter on one rank over a local host communicator:
/// device buffers through NCCL, a host buffer's broadcast through the host.
TEST(CudaNccl, CommAdapterOneRank) {
  REQUIRE_GPU();
  std::unique_ptr<Comm> host = makeLocalComm();
  std::string error;
  std::unique_ptr<Comm> comm = mc::makeNcclComm(*host, error);
  ASSERT_TRUE(comm) << error;
  EXPECT_STREQ(comm->name(), "nccl");
  std::mt19937 rng(13);
  std::vector<float> x = randn(29, rng);
  Dev<float> a(x), b(x.size());
  comm->allReduceSum(a.p, x.size(), {});
  comm->allGather(a.p, x.size(), b.p, {});
  comm->allToAll(a.p, x.size(), b.p, {});
  std::vector<size_t> counts = {x.size()}, offs = {0};
  comm->allToAllV(a.p, counts, offs, b.p, counts, offs, {});
  comm->broadcast(b.p, x.size() * sizeof(float), 0, {});
  cudaDeviceSynchronize();
  EXPECT_EQ(b.get(), x);
  int64_t token = 42;
  comm->broadcast(&token, sizeof token, 0, {}); // host memory
  EXPECT_EQ(token, 42);
  EXPECT_EQ(comm->bytesMoved(), 0u); // one rank moves nothing
}

} // namespace
#endif
