//===- Weights.cpp --------------------------------------------------------===//
#include "moert/Weights.h"
#include "moert/cpu/Kernels.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <immintrin.h>
#include <string_view>
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
/// Elements [b, e) of a normal tensor as f32 (f32 != null) or bf16, element
/// i at [i - b], 8 lanes at a time: splitmix64 in 64-bit lanes (vpmullq), the four 16-bit fields
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
      _mm256_storeu_ps(f32 + (i - b), v);
    } else { // round to nearest even (no NaN can occur)
      __m256i u = _mm256_castps_si256(v);
      __m256i r = _mm256_add_epi32(
          u, _mm256_add_epi32(_mm256_set1_epi32(0x7fff),
                              _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1))));
      __m128i packed = _mm256_cvtepi32_epi16(_mm256_srli_epi32(r, 16));
      _mm_storeu_si128(reinterpret_cast<__m128i *>(bf16 + (i - b)), packed);
    }
  }
  for (; i < e; ++i) {
    float v = (float(irwinSum(key, i)) - kIrwinMean) * scale;
    if (f32)
      f32[i - b] = v;
    else
      bf16[i - b] = f32ToBf16(v);
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

/// Elements [b, e) of a random tensor, element i at dst[i - b].
static void fillRandom(const WeightInfo &w, uint64_t key, void *dst, uint64_t b, uint64_t e,
                       bool avx512) {
  if (w.init != plan::Init::Normal) {
    float v = w.init == plan::Init::Ones ? 1.0f : 0.0f;
    for (uint64_t i = b; i < e; ++i)
      storeFromF32(dst, w.dtype, i - b, v);
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
    storeFromF32(dst, w.dtype, i - b, (float(irwinSum(key, i)) - kIrwinMean) * sc);
}

// Page-aligned interior of [p, p + bytes): the pages that hold only this tensor.
static std::pair<uintptr_t, uintptr_t> ownPages(const void *p, uint64_t bytes) {
  const uintptr_t page = 4096;
  uintptr_t b = (reinterpret_cast<uintptr_t>(p) + page - 1) & ~(page - 1);
  uintptr_t e = (reinterpret_cast<uintptr_t>(p) + bytes) & ~(page - 1);
  return {b, std::max(b, e)};
}

/// Elements [b, e) of a tensor converted from its stored dtype (src holds
/// the whole tensor), element i at dst[i - b].
static void convertRange(const WeightInfo &w, const void *src, void *dst, uint64_t b, uint64_t e) {
  for (uint64_t i = b; i < e; ++i)
    storeFromF32(dst, w.dtype, i - b, loadAsF32(src, w.storedDtype, i));
}

/// Rows [n0, n1) of a packed matrix: its row-major BF16 elements come from
/// `rowMajor(buf, b, e)` (elements [b, e) into buf), or straight from `src`
/// when the tensor is stored as BF16 in a mapping; the mapping's pages of
/// those rows are dropped afterwards (the packed copy replaces them).
template <typename RowMajor>
static void packRows(const WeightInfo &w, int64_t n0, int64_t n1, const void *src, void *dst,
                     RowMajor &&rowMajor) {
  const int64_t N = w.shape[0], K = w.shape[1];
  const uint64_t b = uint64_t(n0 * K), e = uint64_t(n1 * K);
  auto *out = static_cast<uint16_t *>(dst);
  // Straight from the mapping when its bf16 elements are aligned (see
  // mapsDirectly), else through the converting copy.
  if (src && w.storedDtype == DType::BF16 && reinterpret_cast<uintptr_t>(src) % 2 == 0) {
    const uint16_t *rows = static_cast<const uint16_t *>(src) + b;
    cpu::packBf16(rows, N, K, n0, n1, out);
    auto [pb, pe] = ownPages(rows, (e - b) * 2);
    if (pe > pb)
      ::madvise(reinterpret_cast<void *>(pb), pe - pb, MADV_DONTNEED);
    return;
  }
  thread_local std::vector<uint16_t> tmp;
  tmp.resize(size_t(e - b));
  rowMajor(tmp.data(), b, e);
  cpu::packBf16(tmp.data(), N, K, n0, n1, out);
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

/// Element ranges of about kChunk; those of packed weights are whole blocks
/// of 16 rows.
static std::vector<FillJob> chunkJobs(const std::vector<size_t> &weights, const PlanFile &plan,
                                      const std::vector<WeightView> &views) {
  std::vector<FillJob> jobs;
  for (size_t w : weights) {
    uint64_t n = plan.weights()[w].numel, step = kChunk;
    if (views[w].layout == Layout::Packed16) {
      uint64_t K = uint64_t(plan.weights()[w].shape[1]);
      step = std::max<uint64_t>(16, kChunk / K / 16 * 16) * K;
    }
    for (uint64_t b = 0; b < n; b += step)
      jobs.push_back({w, b, std::min(n, b + step)});
  }
  return jobs;
}

void WeightStore::choosePacked(const PlanFile &plan, WeightOptions opts) {
  static const bool envOff = [] {
    const char *e = std::getenv("MOERT_PACK");
    return e && std::string_view(e) == "0";
  }();
  if (!opts.packMatrices || envOff || cpu::activeIsa() == cpu::Isa::Scalar)
    return;
  // Decided over all ranks, so every rank's store (and a weight shared by
  // in-process ranks) agrees.
  const auto &infos = plan.weights();
  for (size_t i = 0; i < infos.size(); ++i) {
    if (infos[i].dtype != DType::BF16 || infos[i].shape.size() != 2)
      continue;
    bool used = false, other = false;
    for (int r = 0; r < plan.plan().num_ranks(); ++r) {
      used = used || plan.rankInfo(r).usesWeight[i];
      other = other || plan.rankInfo(r).otherUse[i];
    }
    if (used && !other)
      views_[i].layout = Layout::Packed16;
  }
}

size_t WeightStore::packedCount() const {
  return size_t(std::count_if(views_.begin(), views_.end(), [](const WeightView &v) {
    return v.data && v.layout == Layout::Packed16;
  }));
}

/// Bytes of weight w in memory in the layout of v.
static uint64_t storedBytes(const WeightInfo &w, const WeightView &v) {
  return v.layout == Layout::Packed16 ? cpu::packedBytes(w.shape[0], w.shape[1])
                                      : w.numel * dtypeSize(w.dtype);
}

/// Fills job j of weight w (row-major elements, or whole packed blocks) into
/// dst, the weight's memory; rowMajor(buf, b, e) produces elements [b, e)
/// row-major; src is the checkpoint tensor's data (null for random weights).
template <typename RowMajor>
static void fillJob(const WeightInfo &w, const WeightView &v, const FillJob &j, const void *src,
                    void *dst, RowMajor &&rowMajor) {
  if (v.layout == Layout::Packed16) {
    int64_t K = w.shape[1];
    packRows(w, int64_t(j.begin) / K, int64_t(j.end) / K, src, dst, rowMajor);
    return;
  }
  rowMajor(static_cast<uint8_t *>(dst) + j.begin * dtypeSize(w.dtype), j.begin, j.end);
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
                                                         const ProgressFn &progress,
                                                         WeightOptions opts) {
  std::unique_ptr<WeightStore> ws(new WeightStore());
  ws->plan_ = &plan;
  ws->ckpt_ = ckpt;
  const auto &infos = plan.weights();
  ws->views_.resize(infos.size());
  ws->streamed_.resize(infos.size());
  ws->choosePacked(plan, opts);
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
    v.bytes = storedBytes(w, v);
    ws->boundBytes_ += v.bytes;
    bool inPlace = mapsDirectly(w, *t) && v.layout == Layout::RowMajor;
    if (w.streamed) {
      ws->streamed_[i] = std::make_unique<Streamed>();
      ws->streamed_[i]->src = t;
      if (inPlace)
        v.data = t->data; // mapped, but not read until loaded
      continue;
    }
    ws->fixedBytes_ += v.bytes;
    if (inPlace)
      v.data = t->data;
    else
      convert.push_back(i);
  }
  ws->placeOwned(convert);
  runJobs(chunkJobs(convert, plan, ws->views_), ws->views_, pool, progress, [&](const FillJob &j) {
    const WeightInfo &w = infos[j.weight];
    const void *s = src[j.weight]->data;
    fillJob(w, ws->views_[j.weight], j, s, const_cast<void *>(ws->views_[j.weight].data),
            [&](void *buf, uint64_t b, uint64_t e) { convertRange(w, s, buf, b, e); });
  });
  return ws;
}

std::unique_ptr<WeightStore> WeightStore::random(const PlanFile &plan, uint64_t seed,
                                                 const std::vector<int> &ranks, ThreadPool &pool,
                                                 const ProgressFn &progress, WeightOptions opts) {
  std::unique_ptr<WeightStore> ws(new WeightStore());
  ws->plan_ = &plan;
  ws->avx512_ = haveAvx512Generator();
  const auto &infos = plan.weights();
  ws->views_.resize(infos.size());
  ws->streamed_.resize(infos.size());
  ws->choosePacked(plan, opts);
  std::vector<bool> used = weightsUsedBy(plan, ranks);
  std::vector<size_t> fill;
  std::vector<uint64_t> keys(infos.size());
  for (size_t i = 0; i < infos.size(); ++i) {
    if (!used[i])
      continue;
    WeightView &v = ws->views_[i];
    v.dtype = infos[i].dtype;
    v.bytes = storedBytes(infos[i], v);
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
  runJobs(chunkJobs(fill, plan, ws->views_), ws->views_, pool, progress, [&](const FillJob &j) {
    const WeightInfo &w = infos[j.weight];
    uint64_t key = keys[j.weight];
    fillJob(w, ws->views_[j.weight], j, nullptr, const_cast<void *>(ws->views_[j.weight].data),
            [&](void *buf, uint64_t b, uint64_t e) { fillRandom(w, key, buf, b, e, ws->avx512_); });
  });
  return ws;
}

WeightView WeightStore::loadAndGet(int32_t idx) {
  std::lock_guard<std::mutex> lock(mutex_);
  Streamed &s = *streamed_[size_t(idx)];
  WeightView &v = views_[size_t(idx)];
  if (s.resident.load())
    return v;
  const WeightInfo &w = plan_->weights()[size_t(idx)];
  if (s.src && mapsDirectly(w, *s.src) && v.layout == Layout::RowMajor) {
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
    const void *src = s.src ? s.src->data : nullptr;
    bool avx = haveAvx512Generator();
    fillJob(w, v, FillJob{size_t(idx), 0, w.numel}, src, mem,
            [&](void *buf, uint64_t b, uint64_t e) {
              if (src)
                convertRange(w, src, buf, b, e);
              else
                fillRandom(w, s.key, buf, b, e, avx);
            });
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
