//===- CpuBackend.cpp - Memory, weights, streams and events on the CPU ----===//
#include "CpuBackend.h"

#include "moert/Comm.h"
#include "moert/FileUtil.h"
#include "moert/Generate.h"
#include "moert/Trace.h"
#include "moert/cpu/Bandwidth.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <fstream>
#include <sys/mman.h>

extern "C" void openblas_set_num_threads(int);

namespace moert::cpu {

//===----------------------------------------------------------------------===//
// Backend
//===----------------------------------------------------------------------===//

CpuBackend::CpuBackend(const BackendOptions &opts)
    : pool_(std::max(1, opts.threads)), ws_(std::max(1, opts.threads)), pack_(opts.packWeights) {
  // Kernels call sgemm from inside the pool on disjoint slices: OpenBLAS
  // stays at one thread so the two never oversubscribe the cores.
  openblas_set_num_threads(1);
  static const bool envOff = [] {
    const char *e = std::getenv("MOERT_PACK");
    return e && std::string_view(e) == "0";
  }();
  if (envOff || activeIsa() == Isa::Scalar)
    pack_ = false;
}

CpuBackend::~CpuBackend() {
  // Workers finish what they hold before the memory they touch goes.
  for (auto &w : workers_)
    if (w) {
      try {
        w->drain();
      } catch (...) {
      }
      w.reset();
    }
}

std::string CpuBackend::description() const {
  std::string model;
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("model name", 0) == 0) {
      model = line.substr(line.find(':') + 2);
      break;
    }
  return fmt::format("{}{}{}, {} thread(s)", model, model.empty() ? "" : ", ",
                     isaName(activeIsa()), pool_.size());
}

void *CpuBackend::allocate(uint64_t bytes, const char *what) {
  return mapAnonymous(std::max<uint64_t>(bytes, 64), false, what);
}

void CpuBackend::deallocate(void *p, uint64_t bytes) {
  unmapAnonymous(p, std::max<uint64_t>(bytes, 64));
}

void CpuBackend::copyToDevice(StreamKind s, void *dst, const void *src, uint64_t bytes) {
  if (StreamWorker *w = worker(s))
    w->submit([=] { std::memcpy(dst, src, bytes); });
  else
    std::memcpy(dst, src, bytes);
}

void CpuBackend::copyToHost(StreamKind s, void *dst, const void *src, uint64_t bytes) {
  copyToDevice(s, dst, src, bytes);
}

StreamWorker *CpuBackend::worker(StreamKind s) {
  if (s == StreamKind::Compute)
    return nullptr;
  auto &w = workers_[int(s)];
  if (!w)
    w = std::make_unique<StreamWorker>();
  return w.get();
}

void CpuBackend::enqueueHost(StreamKind s, std::function<void()> fn) {
  if (StreamWorker *w = worker(s))
    w->submit(std::move(fn));
  else
    fn();
}

void CpuBackend::launch(StreamKind s, const plan::Step &step, const StepArgs &args) {
  if (StreamWorker *w = worker(s)) {
    StepArgs queued = args;
    if (queued.trace)
      queued.issuedNs = nowNs();
    w->submit([this, &step, queued] { runStep(step, queued); });
  } else {
    runStep(step, args);
  }
}

void CpuBackend::launchGroup(StreamKind s, const plan::RankProgram &prog, unsigned begin,
                             unsigned end, const StepArgs &args) {
  if (StreamWorker *w = worker(s))
    w->submit([this, &prog, begin, end, args] { runGroup(prog, begin, end, args); });
  else
    runGroup(prog, begin, end, args);
}

EventId CpuBackend::record(StreamKind s) {
  StreamWorker *w = worker(s);
  events_.push_back({s, w ? w->submitted() : 0});
  return EventId(events_.size() - 1);
}

void CpuBackend::waitEvent(StreamKind s, EventId e) {
  auto [from, ticket] = events_[size_t(e)];
  if (from == s || from == StreamKind::Compute)
    return; // in order on its own stream; compute events are complete
  StreamWorker *src = worker(from);
  if (StreamWorker *w = worker(s))
    w->submit([src, ticket = ticket] { src->waitFor(ticket); });
  else
    src->waitFor(ticket);
}

void CpuBackend::synchronize(StreamKind s) {
  if (s != StreamKind::Compute && workers_[int(s)])
    workers_[int(s)]->drain();
}

void CpuBackend::resetEvents() { events_.clear(); }

void CpuBackend::routeTopK(const float *x, int64_t ldx, int64_t rows, const DeviceWeight &router,
                           const DeviceWeight *bias, int64_t H, const ExpertSelection &sel,
                           std::vector<int32_t> &experts) {
  const int64_t E = sel.numExperts;
  std::vector<float> logits(size_t(rows * E));
  WRef b = bias ? WRef{bias->data, bias->dtype, bias->layout} : WRef{};
  linear(pool_, ws_, x, ldx, rows, {router.data, router.dtype, router.layout}, E, H, false, b,
         logits.data(), E, false, Precision::F32);
  experts = predictedExperts(logits.data(), rows, sel);
}

int64_t CpuBackend::sample(const float *logits, int64_t vocab, const SamplingParams &p) {
  return sampleToken(logits, vocab, p.temperature, p.topP, *p.state);
}

std::pair<double, double>
CpuBackend::readBandwidth(std::span<const std::span<const uint8_t>> regions, uint64_t bytes,
                          int passes) {
  BandwidthResult r =
      regions.empty()
          ? measureReadBandwidth(pool_, bytes, passes)
          : measureReadBandwidth(pool_, std::vector<std::span<const uint8_t>>(regions.begin(),
                                                                              regions.end()),
                                 passes);
  return {r.bestGBs, r.medianGBs};
}

//===----------------------------------------------------------------------===//
// Weights
//===----------------------------------------------------------------------===//

Layout CpuBackend::chooseLayout(const WeightInfo &w, bool onlyProduct) {
  return pack_ && onlyProduct && w.dtype == DType::BF16 && w.shape.size() == 2 ? Layout::Packed16
                                                                                : Layout::RowMajor;
}

uint64_t CpuBackend::layoutBytes(const WeightInfo &w, Layout layout) {
  if (w.format != plan::WeightFormat::Plain)
    return uint64_t(w.shape[0]) * w.quantRowBytes() + w.scaleRows() * w.scaleRowBytes();
  return layout == Layout::Packed16 ? packedBytes(w.shape[0], w.shape[1])
                                    : w.numel * dtypeSize(w.dtype);
}

static uint64_t align64(uint64_t x) { return (x + 63) & ~uint64_t(63); }
/// Memory a weight filled at upload takes: a quantized one's scales start
/// 64-byte aligned after its rows.
static uint64_t allocBytes(const DeviceWeight &v) {
  return v.scaleBytes ? align64(v.bytes - v.scaleBytes) + v.scaleBytes : v.bytes;
}

// Page-aligned interior of [p, p + bytes): the pages that hold only this tensor.
static std::pair<uintptr_t, uintptr_t> ownPages(const void *p, uint64_t bytes) {
  const uintptr_t page = 4096;
  uintptr_t b = (reinterpret_cast<uintptr_t>(p) + page - 1) & ~(page - 1);
  uintptr_t e = (reinterpret_cast<uintptr_t>(p) + bytes) & ~(page - 1);
  return {b, std::max(b, e)};
}

/// Drops the pages that hold only [p, p + bytes) of a checkpoint mapping:
/// they fault in again from the file if read later.
static void dropOwnPages(const void *p, uint64_t bytes) {
  auto [b, e] = ownPages(p, bytes);
  if (e > b)
    ::madvise(reinterpret_cast<void *>(b), e - b, MADV_DONTNEED);
}

namespace {
// Work is split into chunks of this many elements so the pool balances
// tensors of very different sizes and progress advances smoothly.
constexpr uint64_t kChunk = uint64_t(1) << 20;

struct FillJob {
  size_t weight;
  uint64_t begin, end; // element range
};
} // namespace

/// Rows [n0, n1) of a packed matrix, from the mapping when the source is
/// mapped BF16 (its pages are dropped afterwards: the packed copy replaces
/// them), else through the source's converting read.
static void packRows(const WeightSource &src, int64_t n0, int64_t n1, void *dst) {
  const WeightInfo &w = *src.info;
  const int64_t N = w.shape[0], K = w.shape[1];
  const uint64_t b = uint64_t(n0 * K), e = uint64_t(n1 * K);
  auto *out = static_cast<uint16_t *>(dst);
  if (src.mapped && w.storedDtype == DType::BF16) {
    const uint16_t *rows = static_cast<const uint16_t *>(src.mapped) + b;
    packBf16(rows, N, K, n0, n1, out);
    dropOwnPages(rows, (e - b) * 2);
    return;
  }
  thread_local std::vector<uint16_t> tmp;
  tmp.resize(size_t(e - b));
  src.read(tmp.data(), b, e);
  packBf16(tmp.data(), N, K, n0, n1, out);
}

static void fillJob(const WeightSource &src, const DeviceWeight &v, const FillJob &j, void *dst) {
  const WeightInfo &w = *src.info;
  if (w.format != plan::WeightFormat::Plain) {
    // Stored rows and scale rows, gathered from their pitches as they are.
    auto *out = static_cast<uint8_t *>(dst);
    const uint64_t rb = w.quantRowBytes(), sb = w.scaleRowBytes();
    for (int64_t n = 0; n < w.shape[0]; ++n)
      std::memcpy(out + uint64_t(n) * rb, src.qdata + uint64_t(n) * src.qdataPitch, rb);
    auto *scales = const_cast<uint8_t *>(static_cast<const uint8_t *>(v.scales));
    for (uint64_t m = 0; m < w.scaleRows(); ++m)
      std::memcpy(scales + m * sb, src.qscales + m * src.qscalePitch, sb);
    // Contiguous rows' pages go now (the copy replaces them; strided
    // sources are dropped by the weight store once every slice is read).
    if (src.qdataPitch == rb)
      dropOwnPages(src.qdata, uint64_t(w.shape[0]) * rb);
    if (src.qscalePitch == sb)
      dropOwnPages(src.qscales, w.scaleRows() * sb);
    return;
  }
  if (v.layout == Layout::Packed16) {
    int64_t K = w.shape[1];
    packRows(src, int64_t(j.begin) / K, int64_t(j.end) / K, dst);
    return;
  }
  src.read(static_cast<uint8_t *>(dst) + j.begin * dtypeSize(w.dtype), j.begin, j.end);
}

/// Reads the pages of [data, data + bytes) in now (from the page cache or
/// the file) and maps them: MADV_POPULATE_READ (Linux 5.14) in one call,
/// else a read per page.
static void touchRange(const void *data, uint64_t bytes) {
  void *b = reinterpret_cast<void *>(reinterpret_cast<uintptr_t>(data) & ~uintptr_t(4095));
  if (::madvise(b, bytes + 4096, MADV_POPULATE_READ) == 0)
    return;
  ::madvise(b, bytes + 4096, MADV_WILLNEED);
  const volatile uint8_t *p = static_cast<const uint8_t *>(data);
  uint8_t sink = 0;
  for (uint64_t o = 0; o < bytes; o += 4096)
    sink ^= p[o];
  (void)sink;
}

UploadResult CpuBackend::upload(std::span<const WeightSource> srcs,
                                std::span<const Layout> layouts, const ProgressFn &progress) {
  UploadResult res;
  res.weights.resize(srcs.size());
  std::vector<size_t> fill;
  uint64_t total = 0;
  for (size_t i = 0; i < srcs.size(); ++i) {
    const WeightInfo &w = *srcs[i].info;
    DeviceWeight &v = res.weights[i];
    v.dtype = w.dtype;
    v.layout = layouts[i];
    v.bytes = layoutBytes(w, v.layout);
    if (w.format != plan::WeightFormat::Plain) {
      // Held as stored. A streamed weight is used in place when its rows
      // and scale rows are contiguous; the others are copied (still
      // quantized) into the huge pages below: in place, decode paid the
      // mapping's 4 KiB pages (TLB misses and first-use faults, DeepSeek
      // FP8 bench decode 0.7-1 ms of 7.5 per token).
      const WeightSource &q = srcs[i];
      v.scaleBytes = w.scaleRows() * w.scaleRowBytes();
      if (w.streamed && q.qdataPitch == w.quantRowBytes() &&
          q.qscalePitch == w.scaleRowBytes()) {
        v.data = q.qdata;
        v.scales = q.qscales;
        v.mapped = true;
        continue;
      }
      fill.push_back(i);
      total += align64(allocBytes(v));
      continue;
    }
    if (srcs[i].mapped && v.layout == Layout::RowMajor && w.dtype == w.storedDtype) {
      v.data = srcs[i].mapped; // used in place
      v.mapped = true;
      // Mapped now, at load, not by the first token to read each page (an
      // embedding's rows faulted in one by one: 30-230 us per new row on
      // this VM in gpt-oss bench decode, one of 37 ms). A streamed weight
      // is touched when fetched.
      if (!w.streamed)
        touchRange(v.data, v.bytes);
      continue;
    }
    fill.push_back(i);
    total += align64(v.bytes);
  }
  if (total > 0) {
    // One mapping for all (transparent huge pages cut TLB misses while
    // decode streams the weights).
    auto *mem = static_cast<uint8_t *>(mapAnonymous(total, true, "weights"));
    res.memory = std::shared_ptr<void>(mem, [total](void *p) { unmapAnonymous(p, total); });
    uint64_t off = 0;
    for (size_t i : fill) {
      DeviceWeight &v = res.weights[i];
      v.data = mem + off;
      if (v.scaleBytes)
        v.scales = mem + off + align64(v.bytes - v.scaleBytes);
      off += align64(allocBytes(v));
    }
  }
  std::vector<FillJob> jobs;
  for (size_t i : fill) {
    const WeightInfo &w = *srcs[i].info;
    uint64_t n = w.numel, step = kChunk;
    if (w.format != plan::WeightFormat::Plain)
      step = n; // rows gathered in one job (fillJob)
    if (res.weights[i].layout == Layout::Packed16) {
      uint64_t K = uint64_t(w.shape[1]);
      step = std::max<uint64_t>(16, kChunk / K / 16 * 16) * K;
    }
    for (uint64_t b = 0; b < n; b += step)
      jobs.push_back({i, b, std::min(n, b + step)});
  }
  auto bytesOf = [&](const FillJob &j) {
    return (j.end - j.begin) * dtypeSize(res.weights[j.weight].dtype);
  };
  uint64_t work = 0;
  for (const FillJob &j : jobs)
    work += bytesOf(j);
  auto run = [&](const FillJob &j) {
    fillJob(srcs[j.weight], res.weights[j.weight], j, const_cast<void *>(res.weights[j.weight].data));
  };
  if (srcs.size() <= 1) {
    // One streamed weight: on the calling (streaming) thread. The pool is the
    // compute stream's and takes one caller at a time.
    for (const FillJob &j : jobs)
      run(j);
  } else {
    std::atomic<size_t> next{0};
    std::atomic<uint64_t> done{0};
    pool_.run([&](int tid) {
      for (size_t k; (k = next.fetch_add(1)) < jobs.size();) {
        run(jobs[k]);
        uint64_t d = done.fetch_add(bytesOf(jobs[k])) + bytesOf(jobs[k]);
        if (tid == 0 && progress)
          progress(d, work);
      }
    });
  }
  if (progress)
    progress(work, work);
  return res;
}

void CpuBackend::touch(const DeviceWeight &v) {
  touchRange(v.data, v.bytes - v.scaleBytes);
  if (v.scales)
    touchRange(v.scales, v.scaleBytes);
}

void CpuBackend::evict(const DeviceWeight &v, std::shared_ptr<void> &memory) {
  if (v.mapped)
    dropOwnPages(v.data, v.bytes - v.scaleBytes);
  memory.reset();
}

} // namespace moert::cpu

namespace moert {
std::unique_ptr<Backend> makeCpuBackend(const BackendOptions &opts) {
  return std::make_unique<cpu::CpuBackend>(opts);
}
} // namespace moert
