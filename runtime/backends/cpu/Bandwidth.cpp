//===- Bench.cpp ----------------------------------------------------------===//
// GCC 12 flags its own AVX-512 intrinsics placeholders (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wuninitialized"
#ifndef __clang__ // clang has no such group
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include "moert/cpu/Bandwidth.h"
#include "moert/Error.h"
#include "moert/FileUtil.h"
#include "moert/Trace.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <immintrin.h>
#include <sys/resource.h>

namespace moert {

__attribute__((target("avx512f"))) static uint64_t sumAvx512(const uint8_t *p, size_t n) {
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
  size_t i = 0;
  for (; i + 256 <= n; i += 256) {
    a0 = _mm512_add_epi32(a0, _mm512_loadu_si512(p + i));
    a1 = _mm512_add_epi32(a1, _mm512_loadu_si512(p + i + 64));
    a2 = _mm512_add_epi32(a2, _mm512_loadu_si512(p + i + 128));
    a3 = _mm512_add_epi32(a3, _mm512_loadu_si512(p + i + 192));
  }
  // Sum the lanes as unsigned: the value only keeps the loads alive, and the
  // intrinsic reduction would overflow a signed int.
  alignas(64) uint32_t lanes[16];
  _mm512_store_si512(lanes, _mm512_add_epi32(_mm512_add_epi32(a0, a1), _mm512_add_epi32(a2, a3)));
  uint64_t s = 0;
  for (uint32_t v : lanes)
    s += v;
  for (; i < n; ++i)
    s += p[i];
  return s;
}

static uint64_t sumScalar(const uint8_t *p, size_t n) {
  uint64_t s = 0;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t v;
    std::memcpy(&v, p + i, 8);
    s += v;
  }
  for (; i < n; ++i)
    s += p[i];
  return s;
}

BandwidthResult measureReadBandwidth(ThreadPool &pool,
                                     const std::vector<std::span<const uint8_t>> &regions,
                                     int passes) {
  __builtin_cpu_init();
  bool avx = __builtin_cpu_supports("avx512f");
  uint64_t total = 0;
  for (auto &r : regions)
    total += r.size();
  BandwidthResult res;
  res.bytesPerPass = total;
  res.passes = passes;
  if (total == 0 || passes <= 0)
    return res;
  std::atomic<uint64_t> sink{0};
  std::vector<double> gbs;
  for (int pass = 0; pass < passes; ++pass) {
    int64_t t0 = nowNs();
    int nt = pool.size();
    pool.run([&](int tid) {
      uint64_t b = total * uint64_t(tid) / uint64_t(nt), e = total * uint64_t(tid + 1) / uint64_t(nt);
      uint64_t off = 0, s = 0;
      for (auto &r : regions) {
        uint64_t rb = std::max(b, off), re = std::min(e, off + r.size());
        if (rb < re)
          s += avx ? sumAvx512(r.data() + (rb - off), re - rb)
                   : sumScalar(r.data() + (rb - off), re - rb);
        off += r.size();
      }
      sink.fetch_add(s, std::memory_order_relaxed);
    });
    double sec = double(nowNs() - t0) / 1e9;
    gbs.push_back(double(total) / sec / 1e9);
  }
  std::sort(gbs.begin(), gbs.end());
  res.bestGBs = gbs.back();
  res.medianGBs = gbs[gbs.size() / 2];
  return res;
}

BandwidthResult measureReadBandwidth(ThreadPool &pool, uint64_t bytes, int passes) {
  void *p = mapAnonymous(bytes, true, "bandwidth probe");
  // Random contents: pages of one constant could be merged by the host and
  // read from cache.
  auto *b = static_cast<uint64_t *>(p);
  pool.parallelFor(bytes / 8, 512, [&](size_t s, size_t e, int) {
    uint64_t x = 0x9e3779b97f4a7c15ull * (s + 1);
    for (size_t i = s; i < e; ++i) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      b[i] = x;
    }
  });
  BandwidthResult r = measureReadBandwidth(
      pool, {std::span<const uint8_t>(reinterpret_cast<const uint8_t *>(b), bytes)}, passes);
  unmapAnonymous(p, bytes);
  return r;
}

} // namespace moert
