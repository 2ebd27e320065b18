//===- Weights.cpp --------------------------------------------------------===//
#include "moert/Weights.h"
#include "moert/cpu/Kernels.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <immintrin.h>
#include <sys/mman.h>

namespace moert {

static inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

static uint64_t tensorKey(uint64_t seed, const std::string &name) {
  uint64_t h = 0xcbf29ce484222325ull; // FNV-1a
  for (unsigned char c : name)
    h = (h ^ c) * 0x100000001b3ull;
  return splitmix64(seed ^ splitmix64(h));
}

// Approximately normal with exact mean 0 and variance 1: the sum of four
// independent 16-bit uniforms (Irwin-Hall, tails cut at 3.5 sigma), cheap to
// vectorize. The value is (float(sum) - 131070) * scale in float arithmetic
// (the sum is exact in float), so the AVX-512 and the scalar paths agree bit
// for bit and a seed gives the same weights on every machine.
static inline uint32_t irwinSum(uint64_t key, uint64_t i) {
  uint64_t h = splitmix64(key + i * 0xd1342543de82ef95ull);
  return uint32_t(h & 0xffff) + uint32_t((h >> 16) & 0xffff) + uint32_t((h >> 32) & 0xffff) +
         uint32_t(h >> 48);
}
static constexpr float kIrwinMean = 131070.0f;
/// The factor turning an Irwin-Hall sum into a value of standard deviation std.
static float irwinScale(float std) {
  return float(double(std) / std::sqrt(4 * (65536.0 * 65536.0 - 1) / 12.0));
}

float randomWeightValue(uint64_t seed, const std::string &name, plan::Init init, float std,
                        uint64_t i) {
  switch (init) {
  case plan::Init::Ones:
    return 1.0f;
  case plan::Init::Zeros:
    return 0.0f;
  default:
    return (float(irwinSum(tensorKey(seed, name), i)) - kIrwinMean) * irwinScale(std);
  }
}

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#ifndef __clang__ // clang has no such group
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
/// Elements [b, e) of a normal tensor as f32 (out != null) or bf16, 8 lanes
/// at a time: splitmix64 in 64-bit lanes (vpmullq), the four 16-bit fields
/// summed, converted and scaled like irwinSum/randomWeightValue.
__attribute__((target("avx512f,avx512dq,avx512vl,avx512bw"))) static void
fillNormalAvx512(uint64_t key, float scale, uint64_t b, uint64_t e, float *f32, uint16_t *bf16) {
  const __m512i lane = _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0);
  const __m512i mulIdx = _mm512_set1_epi64(int64_t(0xd1342543de82ef95ull));
  const __m512i golden = _mm512_set1_epi64(int64_t(0x9e3779b97f4a7c15ull));
  const __m512i m1 = _mm512_set1_epi64(int64_t(0xbf58476d1ce4e5b9ull));
  const __m512i m2 = _mm512_set1_epi64(int64_t(0x94d049bb133111ebull));
  const __m512i mask16 = _mm512_set1_epi64(0xffff);
  const __m256 mean = _mm256_set1_ps(kIrwinMean), sc = _mm256_set1_ps(scale);
  uint64_t i = b;
  for (; i + 8 <= e; i += 8) {
    __m512i idx = _mm512_add_epi64(_mm512_set1_epi64(int64_t(i)), lane);
    __m512i x = _mm512_add_epi64(_mm512_set1_epi64(int64_t(key)), _mm512_mullo_epi64(idx, mulIdx));
    x = _mm512_add_epi64(x, golden);
    x = _mm512_mullo_epi64(_mm512_xor_si512(x, _mm512_srli_epi64(x, 30)), m1);
    x = _mm512_mullo_epi64(_mm512_xor_si512(x, _mm512_srli_epi64(x, 27)), m2);
    x = _mm512_xor_si512(x, _mm512_srli_epi64(x, 31));
    __m512i sum = _mm512_add_epi64(
        _mm512_add_epi64(_mm512_and_si512(x, mask16),
                         _mm512_and_si512(_mm512_srli_epi64(x, 16), mask16)),
        _mm512_add_epi64(_mm512_and_si512(_mm512_srli_epi64(x, 32), mask16),
                         _mm512_srli_epi64(x, 48)));
    __m256 v = _mm256_mul_ps(_mm256_sub_ps(_mm512_cvtepi64_ps(sum), mean), sc);
    if (f32) {
      _mm256_storeu_ps(f32 + i, v);
    } else { // round to nearest even (no NaN can occur)
      __m256i u = _mm256_castps_si256(v);
      __m256i r = _mm256_add_epi32(
          u, _mm256_add_epi32(_mm256_set1_epi32(0x7fff),
                              _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1))));
      __m128i packed = _mm256_cvtepi32_epi16(_mm256_srli_epi32(r, 16));
      _mm_storeu_si128(reinterpret_cast<__m128i *>(bf16 + i), packed);
    }
  }
  for (; i < e; ++i) {
    float v = (float(irwinSum(key, i)) - kIrwinMean) * scale;
    if (f32)
      f32[i] = v;
    else
      bf16[i] = f32ToBf16(v);
  }
}
#pragma GCC diagnostic pop

std::vector<std::span<const uint8_t>> WeightStore::regions() const {
  std::vector<std::span<const uint8_t>> r;
  for (size_t i = 0; i < views_.size(); ++i)
    if (views_[i].data && isResident(int32_t(i)))
      r.emplace_back(static_cast<const uint8_t *>(views_[i].data), views_[i].bytes);
  return r;
}

WeightStore::~WeightStore() {
  unmapAnonymous(owned_, ownedCap_);
  for (auto &s : streamed_)
    if (s && s->mem) {
      if (s->mapped)
        unmapAnonymous(s->mem, views_[size_t(&s - streamed_.data())].bytes);
      else
        std::free(s->mem);
    }
}

static uint64_t align64(uint64_t x) { return (x + 63) & ~uint64_t(63); }

void WeightStore::placeOwned(const std::vector<size_t> &which) {
  uint64_t total = 0;
  for (size_t i : which)
    total += align64(views_[i].bytes);
  if (total == 0)
    return;
  // Transparent huge pages cut TLB misses while decode streams the weights.
  owned_ = static_cast<uint8_t *>(mapAnonymous(total, true, "weights"));
  ownedCap_ = ownedBytes_ = total;
  uint64_t off = 0;
  for (size_t i : which) {
    views_[i].data = owned_ + off;
    off += align64(views_[i].bytes);
  }
}

static std::vector<bool> weightsUsedBy(const PlanFile &plan, const std::vector<int> &ranks) {
  std::vector<bool> used(plan.weights().size(), false);
  for (int r : ranks)
    for (size_t i = 0; i < used.size(); ++i)
      if (plan.rankInfo(r).usesWeight[i])
        used[i] = true;
  return used;
}

static bool haveAvx512Generator() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") &&
         cpu::activeIsa() != cpu::Isa::Scalar;
}

/// Elements [b, e) of a random tensor (dst holds the whole tensor).
static void fillRandom(const WeightInfo &w, uint64_t key, void *dst, uint64_t b, uint64_t e,
                       bool avx512) {
  if (w.init != plan::Init::Normal) {
    float v = w.init == plan::Init::Ones ? 1.0f : 0.0f;
    for (uint64_t i = b; i < e; ++i)
      storeFromF32(dst, w.dtype, i, v);
    return;
  }
  float sc = irwinScale(w.initStd);
  bool f32 = w.dtype == DType::F32, bf16 = w.dtype == DType::BF16;
  if (avx512 && (f32 || bf16)) {
    fillNormalAvx512(key, sc, b, e, f32 ? static_cast<float *>(dst) : nullptr,
                     bf16 ? static_cast<uint16_t *>(dst) : nullptr);
    return;
  }
  for (uint64_t i = b; i < e; ++i)
    storeFromF32(dst, w.dtype, i, (float(irwinSum(key, i)) - kIrwinMean) * sc);
}

/// Elements [b, e) of a tensor converted from its stored dtype.
static void convertRange(const WeightInfo &w, const void *src, void *dst, uint64_t b, uint64_t e) {
  for (uint64_t i = b; i < e; ++i)
    storeFromF32(dst, w.dtype, i, loadAsF32(src, w.storedDtype, i));
}

// Work is split into chunks of this many elements so the pool balances
// tensors of very different sizes and progress advances smoothly.
static constexpr uint64_t kChunk = uint64_t(1) << 20;

namespace {
struct FillJob {
  size_t weight;
  uint64_t begin, end; // element range
};
} // namespace

/// Runs fill(job) over all jobs on the pool, reporting progress in bytes.
template <typename F>
static void runJobs(const std::vector<FillJob> &jobs, const std::vector<WeightView> &views,
                    ThreadPool &pool, const ProgressFn &progress, F &&fill) {
  auto bytesOf = [&](const FillJob &j) { return (j.end - j.begin) * dtypeSize(views[j.weight].dtype); };
  uint64_t total = 0;
  for (const FillJob &j : jobs)
    total += bytesOf(j);
  std::atomic<size_t> next{0};
  std::atomic<uint64_t> done{0};
  pool.run([&](int tid) {
    for (size_t k; (k = next.fetch_add(1)) < jobs.size();) {
      fill(jobs[k]);
      uint64_t d = done.fetch_add(bytesOf(jobs[k])) + bytesOf(jobs[k]);
      if (tid == 0 && progress)
        progress(d, total);
    }
  });
  if (progress)
    progress(total, total);
}

static std::vector<FillJob> chunkJobs(const std::vector<size_t> &weights, const PlanFile &plan) {
  std::vector<FillJob> jobs;
  for (size_t w : weights) {
    uint64_t n = plan.weights()[w].numel;
    for (uint64_t b = 0; b < n; b += kChunk)
      jobs.push_back({w, b, std::min(n, b + kChunk)});
  }
  return jobs;
}

/// Kernels read a tensor in place when it needs no conversion and its mapped
/// bytes are aligned for its dtype; safetensors does not promise alignment
/// (a header length that is not a multiple of 8 shifts every tensor), so an
/// unaligned tensor is copied instead.
static bool mapsDirectly(const WeightInfo &w, const TensorInfo &t) {
  return w.dtype == w.storedDtype &&
         reinterpret_cast<uintptr_t>(t.data) % dtypeSize(w.dtype) == 0;
}

std::unique_ptr<WeightStore> WeightStore::fromCheckpoint(const PlanFile &plan,
                                                         std::shared_ptr<Checkpoint> ckpt,
                                                         const std::vector<int> &ranks,
                                                         ThreadPool &pool,
                                                         const ProgressFn &progress) {
  std::unique_ptr<WeightStore> ws(new WeightStore());
  ws->plan_ = &plan;
  ws->ckpt_ = ckpt;
  const auto &infos = plan.weights();
  ws->views_.resize(infos.size());
  ws->streamed_.resize(infos.size());
  std::vector<bool> used = weightsUsedBy(plan, ranks);
  std::vector<const TensorInfo *> src(infos.size(), nullptr);
  std::vector<size_t> convert;
  for (size_t i = 0; i < infos.size(); ++i) {
    if (!used[i])
      continue;
    const WeightInfo &w = infos[i];
    const TensorInfo *t = ckpt->find(w.name);
    if (!t)
      fail("{}: tensor '{}' is missing (expected it for plan {})", ckpt->source(), w.name,
           plan.path());
    if (t->shape != w.shape)
      fail("{}: tensor '{}' has shape [{}] (expected [{}])", t->file, w.name,
           fmt::join(t->shape, ", "), fmt::join(w.shape, ", "));
    if (!t->dtype || *t->dtype != w.storedDtype)
      fail("{}: tensor '{}' is {} (expected {} as the plan records)", t->file, w.name,
           t->dtypeName, dtypeName(w.storedDtype));
    src[i] = t;
    WeightView &v = ws->views_[i];
    v.dtype = w.dtype;
    v.bytes = w.numel * dtypeSize(w.dtype);
    ws->boundBytes_ += v.bytes;
    if (w.streamed) {
      ws->streamed_[i] = std::make_unique<Streamed>();
      ws->streamed_[i]->src = t;
      if (mapsDirectly(w, *t))
        v.data = t->data; // mapped, but not read until loaded
      continue;
    }
    ws->fixedBytes_ += v.bytes;
    if (mapsDirectly(w, *t))
      v.data = t->data;
    else
      convert.push_back(i);
  }
  ws->placeOwned(convert);
  runJobs(chunkJobs(convert, plan), ws->views_, pool, progress, [&](const FillJob &j) {
    convertRange(infos[j.weight], src[j.weight]->data, const_cast<void *>(ws->views_[j.weight].data),
                 j.begin, j.end);
  });
  return ws;
}

std::unique_ptr<WeightStore> WeightStore::random(const PlanFile &plan, uint64_t seed,
                                                 const std::vector<int> &ranks, ThreadPool &pool,
                                                 const ProgressFn &progress) {
  std::unique_ptr<WeightStore> ws(new WeightStore());
  ws->plan_ = &plan;
  ws->avx512_ = haveAvx512Generator();
  const auto &infos = plan.weights();
  ws->views_.resize(infos.size());
  ws->streamed_.resize(infos.size());
  std::vector<bool> used = weightsUsedBy(plan, ranks);
  std::vector<size_t> fill;
  std::vector<uint64_t> keys(infos.size());
  for (size_t i = 0; i < infos.size(); ++i) {
    if (!used[i])
      continue;
    WeightView &v = ws->views_[i];
    v.dtype = infos[i].dtype;
    v.bytes = infos[i].numel * dtypeSize(v.dtype);
    ws->boundBytes_ += v.bytes;
    keys[i] = tensorKey(seed, infos[i].name);
    if (infos[i].streamed) {
      ws->streamed_[i] = std::make_unique<Streamed>();
      ws->streamed_[i]->key = keys[i];
      continue;
    }
    ws->fixedBytes_ += v.bytes;
    fill.push_back(i);
  }
  ws->placeOwned(fill);
  runJobs(chunkJobs(fill, plan), ws->views_, pool, progress, [&](const FillJob &j) {
    fillRandom(infos[j.weight], keys[j.weight], const_cast<void *>(ws->views_[j.weight].data),
               j.begin, j.end, ws->avx512_);
  });
  return ws;
}

// Page-aligned interior of [p, p + bytes): the pages that hold only this tensor.
static std::pair<uintptr_t, uintptr_t> ownPages(const void *p, uint64_t bytes) {
  const uintptr_t page = 4096;
  uintptr_t b = (reinterpret_cast<uintptr_t>(p) + page - 1) & ~(page - 1);
  uintptr_t e = (reinterpret_cast<uintptr_t>(p) + bytes) & ~(page - 1);
  return {b, std::max(b, e)};
}

WeightView WeightStore::loadAndGet(int32_t idx) {
  std::lock_guard<std::mutex> lock(mutex_);
  Streamed &s = *streamed_[size_t(idx)];
  WeightView &v = views_[size_t(idx)];
  if (s.resident.load())
    return v;
  const WeightInfo &w = plan_->weights()[size_t(idx)];
  if (s.src && mapsDirectly(w, *s.src)) {
    // Mapped: read the pages in now (from the page cache or the file).
    ::madvise(reinterpret_cast<void *>(reinterpret_cast<uintptr_t>(v.data) & ~uintptr_t(4095)),
              v.bytes + 4096, MADV_WILLNEED);
    const volatile uint8_t *p = static_cast<const uint8_t *>(v.data);
    uint8_t sink = 0;
    for (uint64_t o = 0; o < v.bytes; o += 4096)
      sink ^= p[o];
    (void)sink;
  } else {
    s.mapped = v.bytes >= (uint64_t(2) << 20);
    void *mem = s.mapped ? mapAnonymous(v.bytes, true, "weights")
                         : std::aligned_alloc(64, align64(v.bytes));
    if (!mem)
      throw std::bad_alloc();
    if (s.src)
      convertRange(w, s.src->data, mem, 0, w.numel);
    else
      fillRandom(w, s.key, mem, 0, w.numel, haveAvx512Generator());
    s.mem = mem;
    v.data = mem;
  }
  uint64_t now = streamedResident_.fetch_add(v.bytes) + v.bytes;
  uint64_t peak = streamedPeak_.load();
  while (now > peak && !streamedPeak_.compare_exchange_weak(peak, now)) {
  }
  s.resident.store(true, std::memory_order_release);
  return v;
}

void WeightStore::evict(int32_t idx) {
  if (!streamed_[size_t(idx)])
    return;
  std::lock_guard<std::mutex> lock(mutex_);
  Streamed &s = *streamed_[size_t(idx)];
  WeightView &v = views_[size_t(idx)];
  if (!s.resident.load())
    return;
  s.resident.store(false, std::memory_order_release);
  if (s.mem) {
    if (s.mapped)
      unmapAnonymous(s.mem, v.bytes);
    else
      std::free(s.mem);
    s.mem = nullptr;
    v.data = nullptr;
  } else {
    auto [b, e] = ownPages(v.data, v.bytes);
    if (e > b)
      ::madvise(reinterpret_cast<void *>(b), e - b, MADV_DONTNEED);
  }
  streamedResident_.fetch_sub(v.bytes);
}

} // namespace moert
