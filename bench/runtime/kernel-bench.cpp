//===- kernel-bench.cpp - Times cpu::linear on model shapes ---------------===//
//
// kernel-bench [--threads=N] [--reps=R]: for the Mixtral-bench shapes
// (attention and expert projections, lm_head) and token counts of decode,
// expert prefill (~5 tokens) and dense prefill (20), reports the best time of
// `reps` runs of the automatic kernel choice and of f32 panels + OpenBLAS
// sgemm, as GB/s of weights streamed and GMAC/s. Weights are distinct
// buffers per repetition so they come from DRAM, as in a forward pass.
//
// --experts=D,I,R times decode's routed experts instead: R experts' gate and
// up [I, D] in one linearBatch, then their down [D, I] in another (as the
// Experts step runs them for one token), bf16 packed against FP8 with
// 128x128 scales and MXFP4 (bf16 dot products); --small-pages leaves the
// weights on 4 KiB pages (as a checkpoint mapped in place is) instead of
// transparent huge pages; --scattered takes each pass's experts from a
// fixed shuffle of the copies (as a router picks them) instead of
// consecutive ones, which the hardware prefetchers stream as one.
//
// --mla=H,N,V,L times MLA's absorbed kv_b [H * (N + V), L] for one decode
// token instead: per head, N rows of W_UK combined (axpyRows) and V rows of
// W_UV dotted (dotRows), bf16 against FP8 with 128x128 scales, as GB/s of
// kv_b streamed (distinct copies, so from DRAM).
//
// --peak measures the machine's bf16 compute peak in the same run: the
// AVX512-BF16 dot product's throughput from registers (12 independent
// accumulators, no memory traffic) and a plain GEMM, `linear` on a packed
// bf16 [N, K] with many rows, the rate batched expert GEMMs are judged by.
//
//===----------------------------------------------------------------------===//
#include "moert/cpu/Bandwidth.h"
#include "moert/FileUtil.h"
#include "moert/Trace.h"
#include "moert/cpu/Kernels.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <random>
#include <cstdio>
#include <cstring>
#include <immintrin.h>
#include <string>
#include <tuple>
#include <vector>

using namespace moert;
using namespace moert::cpu;

/// `iters` x 12 vdpbf16ps (32 multiply-adds each) on registers only; the sum
/// is returned so the loop cannot be removed.
__attribute__((target("avx512f,avx512bf16"))) static float dotBf16Loop(int64_t iters) {
  __m512 c0 = _mm512_setzero_ps(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0,
         c7 = c0, c8 = c0, c9 = c0, c10 = c0, c11 = c0;
  __m512bh a = (__m512bh)_mm512_set1_epi32(0x3f803f80), b = (__m512bh)_mm512_set1_epi32(0x3c003c00);
  for (int64_t i = 0; i < iters; ++i) {
    c0 = _mm512_dpbf16_ps(c0, a, b), c1 = _mm512_dpbf16_ps(c1, a, b);
    c2 = _mm512_dpbf16_ps(c2, a, b), c3 = _mm512_dpbf16_ps(c3, a, b);
    c4 = _mm512_dpbf16_ps(c4, a, b), c5 = _mm512_dpbf16_ps(c5, a, b);
    c6 = _mm512_dpbf16_ps(c6, a, b), c7 = _mm512_dpbf16_ps(c7, a, b);
    c8 = _mm512_dpbf16_ps(c8, a, b), c9 = _mm512_dpbf16_ps(c9, a, b);
    c10 = _mm512_dpbf16_ps(c10, a, b), c11 = _mm512_dpbf16_ps(c11, a, b);
    // Registers only; keeps the compiler from folding the constant operands.
    asm volatile("" : "+v"(c0), "+v"(c1), "+v"(c2), "+v"(c3), "+v"(c4), "+v"(c5), "+v"(c6),
                 "+v"(c7), "+v"(c8), "+v"(c9), "+v"(c10), "+v"(c11));
  }
  __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(c0, c1), _mm512_add_ps(c2, c3)),
                           _mm512_add_ps(_mm512_add_ps(c4, c5), _mm512_add_ps(c6, c7)));
  s = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(c8, c9), _mm512_add_ps(c10, c11)));
  return _mm512_reduce_add_ps(s);
}

/// --peak: GMAC/s of the bf16 dot product from registers on every thread, and
/// of plain GEMMs through `linear` (packed bf16, bf16 compute).
static nlohmann::json measurePeak(ThreadPool &pool, Workspace &ws, int reps) {
  nlohmann::json out = nlohmann::json::array();
  if (__builtin_cpu_supports("avx512bf16")) {
    const size_t chunks = size_t(pool.size()) * 64;
    const int64_t perChunk = 20000;
    std::vector<float> sink(chunks);
    double best = 1e30;
    for (int r = 0; r < reps; ++r) {
      int64_t t0 = nowNs();
      pool.parallelFor(chunks, 1, [&](size_t b, size_t e, int) {
        for (size_t c = b; c < e; ++c)
          sink[c] = dotBf16Loop(perChunk);
      });
      best = std::min(best, double(nowNs() - t0) / 1e6);
    }
    double gmac = double(chunks) * double(perChunk) * 12 * 32 / (best * 1e6);
    out.push_back({{"peak", "vdpbf16ps registers"}, {"GMACs", gmac}, {"threads", pool.size()}});
    std::fprintf(stderr, "peak vdpbf16ps from registers: %.1f GMAC/s (%d threads)\n", gmac,
                 pool.size());
  }
  struct G {
    int64_t T, N, K;
  } gemms[] = {{512, 2816, 1024}, {512, 1024, 2816}, {64, 2816, 1024},
               {64, 1024, 2816}, {16, 2816, 1024}, {16, 1024, 2816}};
  for (const G &g : gemms) {
    size_t bytes = size_t(packedBytes(g.N, g.K));
    void *p = mapAnonymous(bytes, true, "benchmark weights");
    auto *u16 = static_cast<uint16_t *>(p);
    std::vector<uint16_t> rows(size_t(g.N * g.K));
    uint64_t x = 88172645463325252ull;
    for (uint16_t &v : rows) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      v = uint16_t((x & 0x807f) | 0x3c00);
    }
    packBf16(rows.data(), g.N, g.K, 0, g.N, u16);
    std::vector<float> X(size_t(g.T * g.K), 0.01f), Y(size_t(g.T * g.N));
    WRef w{p, DType::BF16, Layout::Packed16};
    double best = 1e30;
    for (int r = 0; r < reps * 3; ++r) {
      int64_t t0 = nowNs();
      linear(pool, ws, X.data(), g.K, g.T, w, g.N, g.K, false, {}, Y.data(), g.N, false,
             Precision::BF16);
      best = std::min(best, double(nowNs() - t0) / 1e6);
    }
    unmapAnonymous(p, bytes);
    double gmac = double(g.T * g.N * g.K) / (best * 1e6);
    out.push_back({{"peak", "plain GEMM"}, {"T", g.T}, {"N", g.N}, {"K", g.K}, {"ms", best},
                   {"GMACs", gmac}, {"threads", pool.size()}});
    std::fprintf(stderr, "plain GEMM T=%ld N=%ld K=%ld bf16-packed: %.3f ms, %.1f GMAC/s\n",
                 long(g.T), long(g.N), long(g.K), best, gmac);
  }
  return out;
}

/// --mla: one decode token's pass over all heads' kv_b rows.
static nlohmann::json measureMlaRows(const std::vector<int64_t> &shape, int reps, bool smallPages,
                                     bool json) {
  const int64_t H = shape[0], N = shape[1], V = shape[2], L = shape[3], rows = H * (N + V);
  nlohmann::json out = nlohmann::json::array();
  for (bool fp8 : {false, true}) {
    const size_t bytes = size_t(rows * L) * (fp8 ? 1 : 2);
    const int copies = int((size_t(256) << 20) / bytes + 2);
    const size_t total = bytes * size_t(copies);
    void *p = mapAnonymous(total, !smallPages, "benchmark weights");
    uint64_t x = 88172645463325252ull;
    auto *u16 = static_cast<uint16_t *>(p);
    for (size_t i = 0; i < total / 2; ++i) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      u16[i] = fp8 ? uint16_t(x & 0xf7f7) : uint16_t((x & 0x807f) | 0x3c00);
    }
    std::vector<float> scales(size_t(((rows + 127) / 128) * ((L + 127) / 128)), 0.5f);
    std::vector<float> q(size_t(H * N), 0.01f), olat(size_t(L), 0.01f);
    std::vector<float> qa(static_cast<size_t>(L)), o(static_cast<size_t>(H * V));
    double best = 1e30;
    for (int r = 0; r < reps; ++r)
      for (int c = 0; c < copies; ++c) {
        WRef w{static_cast<uint8_t *>(p) + size_t(c) * bytes, fp8 ? DType::F32 : DType::BF16};
        if (fp8) {
          w.format = QuantFormat::FP8E4M3Block;
          w.scales = scales.data();
          w.blockRows = w.blockCols = 128;
        }
        int64_t t0 = nowNs();
        for (int64_t h = 0; h < H; ++h) {
          std::fill(qa.begin(), qa.end(), 0.0f);
          axpyRows(w, L, h * (N + V), N, q.data() + h * N, qa.data());
          dotRows(w, L, h * (N + V) + N, V, olat.data(), o.data() + h * V);
        }
        best = std::min(best, double(nowNs() - t0) / 1e6);
      }
    unmapAnonymous(p, total);
    const char *name = fp8 ? "fp8-block128" : "bf16";
    out.push_back({{"shape", "mla-kv_b"}, {"H", H}, {"N", N}, {"V", V}, {"L", L}, {"mode", name},
                   {"ms", best}, {"GBs", double(bytes) / (best * 1e6)}});
    if (!json)
      std::printf("mla kv_b H=%ld N=%ld V=%ld L=%ld %-14s %9.4f ms %8.1f GB/s\n", long(H),
                  long(N), long(V), long(L), name, best, double(bytes) / (best * 1e6));
  }
  return out;
}

int main(int argc, char **argv) {
  int threads = 1, reps = 5;
  bool json = false, smallPages = false, peak = false, scattered = false;
  std::vector<int64_t> experts; // D, I, R
  std::vector<int64_t> mla;     // H, N, V, L
  std::vector<int64_t> tokens{1, 5, 20};
  std::vector<std::string> modeNames, shapeNames; // empty: all
  auto split = [](const std::string &v) {
    std::vector<std::string> out;
    for (size_t b = 0, e; b <= v.size(); b = e + 1) {
      e = v.find(',', b);
      if (e == std::string::npos)
        e = v.size();
      if (e > b)
        out.push_back(v.substr(b, e - b));
    }
    return out;
  };
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--threads=", 0) == 0)
      threads = std::stoi(a.substr(10));
    else if (a.rfind("--reps=", 0) == 0)
      reps = std::stoi(a.substr(7));
    else if (a == "--json")
      json = true;
    else if (a.rfind("--tokens=", 0) == 0) {
      tokens.clear();
      for (const std::string &t : split(a.substr(9)))
        tokens.push_back(std::stoll(t));
    } else if (a.rfind("--modes=", 0) == 0)
      modeNames = split(a.substr(8));
    else if (a.rfind("--shapes=", 0) == 0)
      shapeNames = split(a.substr(9));
    else if (a.rfind("--experts=", 0) == 0) {
      for (const std::string &t : split(a.substr(10)))
        experts.push_back(std::stoll(t));
    } else if (a.rfind("--mla=", 0) == 0) {
      for (const std::string &t : split(a.substr(6)))
        mla.push_back(std::stoll(t));
    } else if (a == "--scattered")
      scattered = true;
    else if (a == "--small-pages")
      smallPages = true;
    else if (a == "--peak")
      peak = true;
    else {
      std::fprintf(stderr, "error: %s: unknown flag (expected --threads=N --reps=R --json "
                   "--tokens=1,5,20 --modes=A,B --shapes=A,B --experts=D,I,R --mla=H,N,V,L "
                   "--scattered --small-pages --peak)\n", a.c_str());
      return 1;
    }
  }
  ThreadPool pool(threads);
  Workspace ws(threads);
  if (mla.size() == 4) {
    nlohmann::json out = measureMlaRows(mla, reps, smallPages, json);
    if (json)
      std::printf("%s\n", out.dump(1).c_str());
    return 0;
  }
  if (peak) {
    nlohmann::json out = measurePeak(pool, ws, reps);
    if (json)
      std::printf("%s\n", out.dump(1).c_str());
    return 0;
  }
  struct Shape {
    const char *name;
    int64_t N, K;
  } shapes[] = {{"q_proj", 1024, 1024}, {"kv_proj", 256, 1024}, {"expert.gate/up", 2816, 1024},
                {"expert.down", 1024, 2816}, {"lm_head", 32000, 1024}};
  struct Mode {
    const char *name;
    DType wt;
    Precision prec;
    LinearStrategy strat;
    Layout layout = Layout::RowMajor;
    // FP8: e4m3 bytes, 128x128 f32 scales; MXFP4: e2m1 pairs, an e8m0 scale per 32.
    QuantFormat format = QuantFormat::None;
  } modes[] = {{"bf16-auto", DType::BF16, Precision::BF16, LinearStrategy::Auto},
               {"bf16-exact", DType::BF16, Precision::F32, LinearStrategy::Auto},
               {"bf16-packed", DType::BF16, Precision::BF16, LinearStrategy::Auto, Layout::Packed16},
               {"bf16-packed-exact", DType::BF16, Precision::F32, LinearStrategy::Auto,
                Layout::Packed16},
               {"bf16-panels+sgemm", DType::BF16, Precision::F32, LinearStrategy::Panels},
               {"f32-auto", DType::F32, Precision::F32, LinearStrategy::Auto},
               {"fp8-block128", DType::F32, Precision::F32, LinearStrategy::Auto,
                Layout::RowMajor, QuantFormat::FP8E4M3Block},
               {"fp8-block128-bf16", DType::F32, Precision::BF16, LinearStrategy::Auto,
                Layout::RowMajor, QuantFormat::FP8E4M3Block},
               {"mxfp4", DType::F32, Precision::F32, LinearStrategy::Auto, Layout::RowMajor,
                QuantFormat::MXFP4},
               {"mxfp4-bf16", DType::F32, Precision::BF16, LinearStrategy::Auto,
                Layout::RowMajor, QuantFormat::MXFP4}};
  // The same-run read bandwidth, to judge the weight-streaming rates below.
  BandwidthResult bw = measureReadBandwidth(pool, uint64_t(1) << 30, 5);
  if (!json)
    std::printf("read bandwidth %.1f GB/s best, %.1f median (%d threads)\n", bw.bestGBs,
                bw.medianGBs, threads);
  nlohmann::json out = nlohmann::json::array();
  out.push_back({{"read_bandwidth_gbs", bw.bestGBs}, {"threads", threads}});
  if (!json)
    std::printf("%-16s %6s %6s %4s %-18s %9s %8s %8s\n", "shape", "N", "K", "T", "mode", "ms",
                "GB/s", "GMAC/s");
  auto wanted = [](const std::vector<std::string> &names, const char *n) {
    return names.empty() || std::find(names.begin(), names.end(), n) != names.end();
  };
  if (experts.size() == 3) {
    const int64_t D = experts[0], I = experts[1], R = experts[2];
    for (QuantFormat fmt : {QuantFormat::None, QuantFormat::FP8E4M3Block, QuantFormat::MXFP4}) {
      const bool fp8 = fmt == QuantFormat::FP8E4M3Block, mx = fmt == QuantFormat::MXFP4;
      const char *name = fp8 ? "fp8-block128" : mx ? "mxfp4-bf16" : "bf16-packed";
      if (!wanted(modeNames, name))
        continue;
      // One expert: gate, up [I, D] and down [D, I], each at its own offset
      // (MXFP4: the e2m1 pairs, then the e8m0 scales).
      auto matrixBytes = [&](int64_t N, int64_t K) {
        return fp8  ? size_t(N * K)
               : mx ? size_t(N * K / 2 + N * K / 32)
                    : size_t(packedBytes(N, K));
      };
      const size_t gateBytes = matrixBytes(I, D), downBytes = matrixBytes(D, I);
      const size_t expertBytes = 2 * gateBytes + downBytes;
      int copies = int(std::max<size_t>(2 * R, (size_t(256) << 20) / expertBytes + 1));
      size_t total = expertBytes * size_t(copies);
      void *p = mapAnonymous(total, !smallPages, "benchmark weights");
      uint64_t x = 88172645463325252ull;
      auto *u16 = static_cast<uint16_t *>(p);
      for (size_t i = 0; i < total / 2; ++i) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        u16[i] = fp8 ? uint16_t(x & 0xf7f7) : mx ? uint16_t(x) : uint16_t((x & 0x807f) | 0x3c00);
      }
      if (mx) // scales 2^-2 .. 2^1, as the shapes below
        for (int c = 0; c < copies; ++c)
          for (auto [off, N, K] : {std::tuple{size_t(0), I, D}, std::tuple{gateBytes, I, D},
                                   std::tuple{2 * gateBytes, D, I}}) {
            uint8_t *sc = static_cast<uint8_t *>(p) + size_t(c) * expertBytes + off + N * K / 2;
            for (int64_t i = 0; i < N * K / 32; ++i)
              sc[i] = uint8_t(125 + sc[i] % 4);
          }
      std::vector<float> gs(size_t(((I + 127) / 128) * ((D + 127) / 128)), 0.5f);
      std::vector<float> ds(size_t(((D + 127) / 128) * ((I + 127) / 128)), 0.5f);
      std::vector<float> X(size_t(D), 0.01f), H(size_t(R * 2 * I)), Y(size_t(R * D));
      auto ref = [&](size_t off, int64_t N, int64_t K, const std::vector<float> &sc) {
        auto *base = static_cast<uint8_t *>(p) + off;
        WRef w{base, fp8 || mx ? DType::F32 : DType::BF16,
               fp8 || mx ? Layout::RowMajor : Layout::Packed16};
        w.format = fmt;
        if (fp8) {
          w.scales = sc.data();
          w.blockRows = w.blockCols = 128;
        }
        if (mx) {
          w.scales = base + N * K / 2;
          w.blockRows = 1;
          w.blockCols = 32;
        }
        return w;
      };
      // Consecutive copies, or (--scattered) a fixed shuffle of them, as a
      // router picks experts.
      std::vector<int> order(static_cast<size_t>(copies));
      for (int c = 0; c < copies; ++c)
        order[size_t(c)] = c;
      if (scattered)
        std::shuffle(order.begin(), order.end(), std::mt19937(7));
      double best = 1e30;
      for (int r = 0; r < reps; ++r)
        for (int c = 0; c + R <= copies; c += int(R)) {
          std::vector<GemvJob> up, down;
          for (int64_t e = 0; e < R; ++e) {
            size_t base = size_t(order[size_t(c + e)]) * expertBytes;
            up.push_back({X.data(), ref(base, I, D, gs), I, D, {}, H.data() + e * 2 * I, false});
            up.push_back({X.data(), ref(base + gateBytes, I, D, gs), I, D, {},
                          H.data() + e * 2 * I + I, false});
            down.push_back({H.data() + e * 2 * I, ref(base + 2 * gateBytes, D, I, ds), D, I, {},
                            Y.data() + e * D, false});
          }
          int64_t t0 = nowNs();
          linearBatch(pool, ws, up, Precision::BF16);
          linearBatch(pool, ws, down, Precision::BF16);
          best = std::min(best, double(nowNs() - t0) / 1e6);
        }
      unmapAnonymous(p, total);
      double bytes = double(expertBytes * size_t(R));
      if (json)
        out.push_back({{"shape", "experts"}, {"D", D}, {"I", I}, {"R", R}, {"mode", name},
                       {"ms", best}, {"GBs", bytes / (best * 1e6)}, {"threads", threads},
                       {"small_pages", smallPages}});
      else
        std::printf("experts D=%ld I=%ld R=%ld %-14s %9.3f ms %8.1f GB/s%s\n", long(D), long(I),
                    long(R), name, best, bytes / (best * 1e6), smallPages ? " (4 KiB pages)" : "");
    }
    if (json)
      std::printf("%s\n", out.dump(1).c_str());
    return 0;
  }
  for (const Shape &sh : shapes)
    for (int64_t T : tokens) {
      if ((sh.N == 32000 && T != 1) || !wanted(shapeNames, sh.name))
        continue;
      std::vector<float> X(size_t(T * sh.K), 0.01f), Y(size_t(T * sh.N));
      for (const Mode &m : modes) {
        if (!wanted(modeNames, m.name))
          continue;
        bool packed = m.layout == Layout::Packed16;
        bool fp8 = m.format == QuantFormat::FP8E4M3Block;
        bool mx = m.format == QuantFormat::MXFP4;
        // MXFP4's e8m0 scales sit after the values, inside the streamed bytes.
        size_t mxValues = size_t(sh.N * sh.K / 2);
        size_t wbytes = packed ? size_t(packedBytes(sh.N, sh.K))
                        : fp8  ? size_t(sh.N * sh.K)
                        : mx   ? mxValues + size_t(sh.N * sh.K / 32)
                               : size_t(sh.N * sh.K) * dtypeSize(m.wt);
        std::vector<float> scales(size_t(((sh.N + 127) / 128) * ((sh.K + 127) / 128)), 0.5f);
        // Enough copies to exceed the last-level cache.
        int copies = int(std::max<size_t>(2, (size_t(256) << 20) / wbytes + 1));
        size_t total = wbytes * size_t(copies);
        void *p = mapAnonymous(total, true, "benchmark weights");
        // Random bf16/f16/f32 bit patterns of moderate magnitude: constant
        // pages could be merged by the hypervisor and read from cache.
        uint64_t x = 88172645463325252ull;
        auto *u16 = static_cast<uint16_t *>(p);
        for (size_t i = 0; i < total / 2; ++i) {
          x ^= x << 13, x ^= x >> 7, x ^= x << 17;
          u16[i] = fp8  ? uint16_t(x & 0xf7f7) // e4m3 pairs, never NaN
                   : mx ? uint16_t(x)          // any nibbles (scales: see below)
                        : uint16_t((x & 0x807f) | (m.wt == DType::F32 && i % 2 == 0 ? 0 : 0x3c00));
        }
        if (packed) // pack each copy in place through a row-major scratch copy
          for (int c = 0; c < copies; ++c) {
            uint16_t *dst = u16 + size_t(c) * wbytes / 2;
            std::vector<uint16_t> rows(dst, dst + sh.N * sh.K);
            packBf16(rows.data(), sh.N, sh.K, 0, sh.N, dst);
          }
        setLinearStrategy(m.strat);
        double best = 1e30;
        for (int r = 0; r < reps; ++r)
          for (int c = 0; c < copies; ++c) {
            WRef w{static_cast<uint8_t *>(p) + size_t(c) * wbytes, m.wt, m.layout};
            if (fp8) {
              w.format = m.format;
              w.scales = scales.data();
              w.blockRows = w.blockCols = 128;
            }
            if (mx) {
              // Scales 2^-2 .. 2^1: realistic magnitudes, no subnormals.
              std::memset(static_cast<uint8_t *>(p) + size_t(c) * wbytes + mxValues, 126, size_t(sh.N * sh.K / 32));
              w.format = m.format;
              w.scales = static_cast<const uint8_t *>(w.data) + mxValues;
              w.blockRows = 1;
              w.blockCols = 32;
            }
            int64_t t0 = nowNs();
            linear(pool, ws, X.data(), sh.K, T, w, sh.N, sh.K, false, {}, Y.data(), sh.N, false,
                   m.prec);
            best = std::min(best, double(nowNs() - t0) / 1e6);
          }
        unmapAnonymous(p, total);
        double gbs = double(wbytes) / (best * 1e6), gmac = double(sh.N * sh.K * T) / (best * 1e6);
        if (json)
          out.push_back({{"shape", sh.name}, {"N", sh.N}, {"K", sh.K}, {"T", T}, {"mode", m.name},
                         {"ms", best}, {"GBs", gbs}, {"GMACs", gmac}, {"threads", threads}});
        else
          std::printf("%-16s %6ld %6ld %4ld %-18s %9.3f %8.1f %8.1f\n", sh.name, long(sh.N),
                      long(sh.K), long(T), m.name, best, gbs, gmac);
      }
    }
  setLinearStrategy(LinearStrategy::Auto);
  if (json)
    std::printf("%s\n", out.dump(1).c_str());
  return 0;
}
