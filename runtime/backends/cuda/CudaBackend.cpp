//===- CudaBackend.cpp - The CUDA backend ---------------------------------===//
//
// Host side of the CUDA backend: memory, streams and events, weight upload,
// and one case per plan op that calls the launchers of CudaKernels.h. It is
// plain C++ against the CUDA runtime API (the kernels are in the .cu files).
//
//===----------------------------------------------------------------------===//
#include "CudaBackend.h"
#include "StagedComm.h"
#ifdef MOERT_HAVE_NCCL
#include "NcclComm.h"
#endif

#include "moert/Comm.h"
#include "moert/Error.h"
#include "moert/RopeTables.h"

#include <algorithm>
#include <cstring>
#include <fmt/format.h>
#include <unistd.h>
#include <utility>

namespace moert::cuda {

using plan::Op;

static WType wtype(DType t) {
  switch (t) {
  case DType::BF16:
    return WType::BF16;
  case DType::F16:
    return WType::F16;
  default:
    return WType::F32;
  }
}

static DW dw(const StepArgs &a, int32_t idx) {
  const DeviceWeight *w = a.weight(idx);
  if (!w || !w->data)
    return {};
  return {w->data, wtype(w->dtype)};
}

/// Bytes the kernels read of weight idx: as held (quantized ones as bf16).
static uint64_t weightBytes(const StepArgs &a, int32_t idx) {
  if (idx < 0)
    return 0;
  if (const DeviceWeight *w = a.weight(idx); w && w->data)
    return w->bytes;
  const WeightInfo &wi = a.info(idx);
  return wi.numel * dtypeSize(wi.dtype);
}

/// The largest position of the call's rows.
static int64_t hostMaxPos(const StepArgs &a) {
  int64_t m = 0;
  for (int64_t t = 0; t < a.T; ++t)
    m = std::max(m, a.hostPos[t]);
  return m;
}

/// The positions an attention call (AttentionArgs, MlaArgs) sizes its
/// split-K from: the rows' largest; while capturing, a split count for the
/// cache's whole length (`choose`), the kernels then reading the positions
/// from the device (maxPos -1), since replays serve later positions.
template <typename Args>
static void sizeSplits(Args &x, const StepArgs &a, int64_t cacheLen, bool capturing,
                       int (*choose)(const Args &)) {
  if (!capturing) {
    x.maxPos = hostMaxPos(a);
    return;
  }
  x.maxPos = cacheLen - 1;
  x.splits = choose(x);
  x.maxPos = -1;
}

/// A layer's cache for the kernels: paged when the step's page table spans
/// a pool of several pages (a batched plan; as the CPU backend decides).
static KV kvOf(const KVCacheBuf &c, const StepArgs &a) {
  KV kv{c.k, c.v, wtype(c.dtype), c.maxSeq, {}};
  if (a.pageTable && a.pageSize < c.maxSeq)
    kv.pages = {a.pageTable, a.seq, a.pagesPerSeq, a.pageSize};
  return kv;
}

void CudaBackend::check(cudaError_t e, const std::string &what) const {
  if (e == cudaSuccess)
    return;
  abortCapture();
  fail("cuda: {}: {} ({})", what, cudaGetErrorString(e), cudaGetErrorName(e));
}

CudaBackend::CudaBackend(const BackendOptions &opts)
    : pool_(std::max(1, opts.threads)), graphsOn_(graphsFromEnv()) {
  int n = deviceCount();
  if (n <= 0)
    fail("--backend=cuda: no CUDA device is visible (expected a GPU with a driver; "
         "--backend=cpu runs the plan on the CPU)");
  if (opts.device < 0 || opts.device >= n)
    fail("--backend=cuda: device {} (the rank's local_rank in the plan) is not visible (expected "
         "0..{}: one GPU per rank of a node; compile with --gpus-per-node={} or fewer ranks)",
         opts.device, n - 1, n);
  device_ = opts.device;
  check(cudaSetDevice(device_), "cudaSetDevice");
  check(cudaGetDeviceProperties(&props_, device_), "cudaGetDeviceProperties");
  for (cudaStream_t &s : streams_)
    check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate");
  blas_ = std::make_unique<Blas>();
  if (!blas_->ok())
    fail("cuda: cuBLAS handle creation failed (expected a working cuBLAS)");
  check(cudaMalloc(reinterpret_cast<void **>(&sampleOut_), 64), "cudaMalloc (sampler)");
  check(cudaMalloc(reinterpret_cast<void **>(&rngState_), 64), "cudaMalloc (sampler)");
  check(cudaMalloc(reinterpret_cast<void **>(&routedBytes_), 64), "cudaMalloc (routed bytes)");
  check(cudaMemset(routedBytes_, 0, 64), "cudaMemset (routed bytes)");
  check(cudaHostAlloc(&routedMirror_, 64, cudaHostAllocMapped), "cudaHostAlloc (routed bytes)");
  *static_cast<volatile unsigned long long *>(routedMirror_) = 0;
  check(cudaHostGetDevicePointer(reinterpret_cast<void **>(&routedMirrorDev_), routedMirror_, 0),
        "cudaHostGetDevicePointer (routed bytes)");
}

CudaBackend::~CudaBackend() {
  if (weightsWorker_) {
    try {
      weightsWorker_->drain();
    } catch (...) {
    }
    weightsWorker_.reset();
  }
  cudaDeviceSynchronize();
  dropGraphs();
  for (auto &[op, t] : stepTables_)
    cudaFree(t.dev);
  for (cudaEvent_t e : forkJoin_)
    if (e)
      cudaEventDestroy(e);
  for (auto &[entry, r] : ropes_) {
    cudaFree(r.cos);
    cudaFree(r.sin);
  }
  cudaFree(ws_);
  cudaFree(expertTable_);
  cudaFree(sampleOut_);
  cudaFree(rngState_);
  cudaFree(routedBytes_);
  cudaFreeHost(routedMirror_);
  blas_.reset();
  for (cudaEvent_t e : events_)
    cudaEventDestroy(e);
  for (const PendingTraceEvent &p : pendingTrace_) {
    cudaEventDestroy(p.start);
    cudaEventDestroy(p.end);
  }
  for (cudaEvent_t e : freeTimingEvents_)
    cudaEventDestroy(e);
  if (traceBase_)
    cudaEventDestroy(traceBase_);
  for (cudaStream_t s : streams_)
    if (s)
      cudaStreamDestroy(s);
}

std::string CudaBackend::description() const {
  return fmt::format("{}, {} SMs, {:.1f} GiB, sm_{}{}", props_.name, props_.multiProcessorCount,
                     double(props_.totalGlobalMem) / double(1ull << 30), props_.major,
                     props_.minor);
}

std::string CudaBackend::isa() const { return fmt::format("sm_{}{}", props_.major, props_.minor); }

//===----------------------------------------------------------------------===//
// Memory and streams
//===----------------------------------------------------------------------===//

void *CudaBackend::allocate(uint64_t bytes, const char *what) {
  if (!capturing_)
    dropGraphs(); // a new session's buffers: graphs of earlier ones are stale
  void *p = nullptr;
  cudaError_t e = cudaMalloc(&p, std::max<uint64_t>(bytes, 256));
  if (e != cudaSuccess)
    fail("cuda: cannot allocate {} bytes for the {} ({}; expected the plan's memory to fit "
         "the device: compile with a smaller --memory-budget or --max-seq-len)",
         bytes, what, cudaGetErrorString(e));
  return p;
}

void CudaBackend::deallocate(void *p, uint64_t) {
  dropGraphs();
  if (p)
    cudaFree(p);
}

void CudaBackend::copyToDevice(StreamKind s, void *dst, const void *src, uint64_t bytes) {
  // From pageable memory the copy is staged before the call returns, so the
  // caller may reuse `src` (core passes host vectors it refills per call).
  // On the weights stream it follows the worker's queued work (core copies
  // nothing there: waiting for the worker costs nothing in practice).
  if (s == StreamKind::Weights && weightsWorker_)
    weightsWorker_->drain();
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream(s)), "copy to device");
}

void CudaBackend::copyToHost(StreamKind s, void *dst, const void *src, uint64_t bytes) {
  // To pageable memory cudaMemcpyAsync completes before returning: the host
  // reads the result right after (logits, expert offsets).
  if (s == StreamKind::Weights && weightsWorker_)
    weightsWorker_->drain();
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream(s)), "copy to host");
  check(cudaStreamSynchronize(stream(s)), "copy to host");
}

void CudaBackend::enqueueHost(StreamKind s, std::function<void()> fn) {
  if (s == StreamKind::Weights) {
    // Weight streaming's host work (filling pinned staging, the copies on
    // the weights stream, frees) runs in order on a worker thread, so the
    // session goes on launching compute meanwhile; each job starts once the
    // weights stream's earlier copies are done. Host work that calls CUDA
    // may not run in a stream callback.
    weightsWorker().submit([this, fn = std::move(fn)] {
      check(cudaSetDevice(device_), "cudaSetDevice (weights worker)");
      check(cudaStreamSynchronize(stream(StreamKind::Weights)), "weights stream");
      fn();
    });
    return;
  }
  // Other streams' host work runs here once the stream's earlier work is
  // done; kernels queued on the other streams keep running meanwhile. Its
  // error is the stream's, reported by synchronize() (as a worker's is).
  synchronize(s);
  try {
    fn();
  } catch (...) {
    if (!hostError_[int(s)])
      hostError_[int(s)] = std::current_exception();
  }
}

StreamWorker &CudaBackend::weightsWorker() {
  if (!weightsWorker_)
    weightsWorker_ = std::make_unique<StreamWorker>();
  return *weightsWorker_;
}

EventId CudaBackend::record(StreamKind s) {
  if (nextEvent_ == events_.size()) {
    cudaEvent_t e;
    check(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "cudaEventCreate");
    events_.push_back(e);
    recordJob_.push_back(0);
  }
  cudaEvent_t e = events_[nextEvent_];
  if (s == StreamKind::Weights && weightsWorker_) {
    // After the host work queued before it: its copies are on the stream
    // only once the worker has run it.
    weightsWorker_->submit(
        [this, e] { check(cudaEventRecord(e, stream(StreamKind::Weights)), "cudaEventRecord"); });
    recordJob_[nextEvent_] = weightsWorker_->submitted();
  } else {
    check(cudaEventRecord(e, stream(s)), "cudaEventRecord");
    recordJob_[nextEvent_] = 0;
  }
  return EventId(nextEvent_++);
}

void CudaBackend::waitEvent(StreamKind s, EventId id) {
  cudaEvent_t e = events_[size_t(id)];
  const uint64_t job = recordJob_[size_t(id)];
  if (s == StreamKind::Weights && weightsWorker_) {
    // The worker's later jobs wait: it blocks on the event (recorded by
    // now, on another stream), as a device-side wait issued from here could
    // land before copies of jobs still queued and deadlock with compute
    // waiting for those.
    if (!job)
      weightsWorker_->submit([this, e] { check(cudaEventSynchronize(e), "weights stream wait"); });
    return; // (a weights event: in order on its own stream)
  }
  if (job)
    weightsWorker_->waitFor(job); // recorded once the worker has run that far
  check(cudaStreamWaitEvent(stream(s), e, 0), "cudaStreamWaitEvent");
}

void CudaBackend::synchronize(StreamKind s) {
  if (s == StreamKind::Weights && weightsWorker_)
    weightsWorker_->drain(); // rethrows the first error of its jobs
  check(cudaStreamSynchronize(stream(s)), "stream synchronize");
  if (!pendingTrace_.empty())
    flushTrace(s);
  if (std::exception_ptr e = std::exchange(hostError_[int(s)], nullptr))
    std::rethrow_exception(e);
}

void *CudaBackend::workspace(size_t bytes) {
  if (bytes <= wsBytes_)
    return ws_;
  if (capturing_) {
    // Freeing waits for the device, which a capture may not: the old
    // scratch (which steps captured so far name) is kept until the capture
    // ends, and the capture is given up (the session then launches the
    // step directly, on the larger scratch).
    captureBroken_ = true;
    retired_.push_back(ws_);
    ws_ = nullptr;
    wsBytes_ = std::max(bytes, wsBytes_ * 2);
    check(cudaMalloc(&ws_, wsBytes_), fmt::format("cudaMalloc of {} workspace bytes", wsBytes_));
    return ws_;
  }
  // Growing frees the old scratch, which kernels still queued may read:
  // cudaFree waits for the device first. Graphs read the old one.
  dropGraphs();
  if (ws_)
    check(cudaFree(ws_), "cudaFree (workspace)");
  ws_ = nullptr;
  wsBytes_ = std::max(bytes, wsBytes_ * 2);
  check(cudaMalloc(&ws_, wsBytes_), fmt::format("cudaMalloc of {} workspace bytes", wsBytes_));
  return ws_;
}

std::pair<const float *, const float *> CudaBackend::ropeTable(int64_t positions,
                                                               const plan::Rope &op) {
  // Every position the plan allows at once: a captured decode step keeps
  // the table's address for all later positions.
  const RopeTableCache::Entry &e = ropeHost_.get(std::max(positions, ropePositions_), op);
  DeviceRope &d = ropes_[&e];
  if (d.generation != e.generation) {
    if (d.cos)
      dropGraphs();
    cudaFree(d.cos); // waits for kernels still reading the old table
    cudaFree(d.sin);
    d.cos = static_cast<float *>(allocate(e.cosTab.size() * 4, "rope table"));
    d.sin = static_cast<float *>(allocate(e.sinTab.size() * 4, "rope table"));
    check(cudaMemcpy(d.cos, e.cosTab.data(), e.cosTab.size() * 4, cudaMemcpyHostToDevice),
          "rope table");
    check(cudaMemcpy(d.sin, e.sinTab.data(), e.sinTab.size() * 4, cudaMemcpyHostToDevice),
          "rope table");
    d.generation = e.generation;
  }
  return {d.cos, d.sin};
}

//===----------------------------------------------------------------------===//
// Weights
//===----------------------------------------------------------------------===//

Layout CudaBackend::chooseLayout(const WeightInfo &, bool) { return Layout::RowMajor; }

/// A quantized weight is held dequantized, as bf16 (Quant.cu).
static DType heldDtype(const WeightInfo &w) {
  return w.format != plan::WeightFormat::Plain ? DType::BF16 : w.dtype;
}

uint64_t CudaBackend::layoutBytes(const WeightInfo &w, Layout) {
  return w.numel * dtypeSize(heldDtype(w));
}

void CudaBackend::uploadQuantized(const WeightSource &src, uint8_t *dst) {
  const WeightInfo &w = *src.info;
  const int64_t K = w.shape.back(), N = int64_t(w.numel) / K;
  const uint64_t rb = w.quantRowBytes(), sb = w.scaleRowBytes(), sr = w.scaleRows();
  // The stored rows and scales as they are (pitched in a fused tensor),
  // then expanded on the device, all on the weights stream (stream-ordered
  // scratch: a cudaFree would wait for the whole device).
  cudaStream_t ws = stream(StreamKind::Weights);
  std::string what = fmt::format("upload of '{}'", w.name);
  uint8_t *raw = nullptr;
  check(cudaMallocAsync(reinterpret_cast<void **>(&raw), uint64_t(N) * rb + sr * sb + 16, ws),
        "cudaMallocAsync (quantized staging)");
  uint8_t *scales = raw + uint64_t(N) * rb;
  cudaError_t err = cudaMemcpy2DAsync(raw, rb, src.qdata, src.qdataPitch, rb, size_t(N),
                                      cudaMemcpyHostToDevice, ws);
  if (!err)
    err = cudaMemcpy2DAsync(scales, sb, src.qscales, src.qscalePitch, sb, sr,
                            cudaMemcpyHostToDevice, ws);
  math::QFormat f = w.format == plan::WeightFormat::MXFP4 ? math::QFormat::MXFP4
                                                           : math::QFormat::FP8E4M3Block;
  if (!err)
    err = dequantizeToBf16(f, raw, scales, N, K, w.blockRows, w.blockCols,
                           reinterpret_cast<uint16_t *>(dst), ws);
  cudaFreeAsync(raw, ws);
  check(err, what);
  check(cudaStreamSynchronize(ws), what);
}

static uint64_t align256(uint64_t x) { return (x + 255) & ~uint64_t(255); }

/// Two pinned host buffers used in turn for uploads: next() waits until the
/// buffer's last copy is done, send() copies it on the weights stream.
class CudaBackend::Staging {
public:
  explicit Staging(CudaBackend &be) : be_(be) {}
  ~Staging() {
    cudaStreamSynchronize(be_.stream(StreamKind::Weights));
    for (int k = 0; k < 2; ++k) {
      if (buf_[k])
        cudaFreeHost(buf_[k]);
      if (done_[k])
        cudaEventDestroy(done_[k]);
    }
  }
  void *next(uint64_t bytes) {
    k_ ^= 1;
    if (!buf_[k_]) {
      be_.check(cudaMallocHost(&buf_[k_], bytes), "cudaMallocHost (staging)");
      be_.check(cudaEventCreateWithFlags(&done_[k_], cudaEventDisableTiming), "cudaEventCreate");
    } else {
      be_.check(cudaEventSynchronize(done_[k_]), "upload");
    }
    return buf_[k_];
  }
  void send(void *dst, uint64_t bytes, const std::string &what) {
    cudaStream_t s = be_.stream(StreamKind::Weights);
    be_.check(cudaMemcpyAsync(dst, buf_[k_], bytes, cudaMemcpyHostToDevice, s), what);
    be_.check(cudaEventRecord(done_[k_], s), what);
  }
  /// Waits for the copies (the weights are resident when upload returns).
  void finish() { be_.check(cudaStreamSynchronize(be_.stream(StreamKind::Weights)), "upload"); }

private:
  CudaBackend &be_;
  void *buf_[2] = {nullptr, nullptr};
  cudaEvent_t done_[2] = {nullptr, nullptr};
  int k_ = 1;
};

UploadResult CudaBackend::upload(std::span<const WeightSource> srcs, std::span<const Layout>,
                                 const ProgressFn &progress) {
  // The session's thread (start-up) and the weights worker (streaming) may
  // both upload; the host pool serves one at a time.
  std::lock_guard<std::mutex> lock(uploadMutex_);
  UploadResult res;
  res.weights.resize(srcs.size());
  uint64_t total = 0;
  for (size_t i = 0; i < srcs.size(); ++i) {
    const WeightInfo &w = *srcs[i].info;
    DeviceWeight &v = res.weights[i];
    v.dtype = heldDtype(w);
    v.layout = Layout::RowMajor;
    v.bytes = layoutBytes(w, v.layout);
    total += align256(v.bytes);
  }
  if (total == 0)
    return res;
  auto *mem = static_cast<uint8_t *>(allocate(total, "weights"));
  res.memory = std::shared_ptr<void>(mem, [](void *p) { cudaFree(p); });
  // Host chunks through two pinned staging buffers in turn: the host pool
  // fills one (converting, generating random values, or copying a mapped
  // tensor already in its compute dtype) while the other's copy runs on the
  // weights stream. One thread generating random weights was the bound:
  // about 2.8 ns a value, 75 s for seed 000's 27B-parameter model.
  constexpr uint64_t kChunkBytes = uint64_t(64) << 20;
  Staging st(*this);
  uint64_t off = 0, done = 0;
  for (size_t i = 0; i < srcs.size(); ++i) {
    const WeightSource &src = srcs[i];
    const WeightInfo &w = *src.info;
    DeviceWeight &v = res.weights[i];
    v.data = mem + off;
    uint8_t *dst = mem + off;
    off += align256(v.bytes);
    const uint64_t es = dtypeSize(w.dtype);
    if (w.format != plan::WeightFormat::Plain) {
      uploadQuantized(src, dst);
    } else {
      const bool copy = src.mapped && w.dtype == w.storedDtype;
      const uint64_t per = kChunkBytes / es;
      for (uint64_t b = 0; b < w.numel; b += per) {
        const uint64_t e = std::min(w.numel, b + per);
        auto *buf = static_cast<uint8_t *>(st.next(kChunkBytes));
        // Slices of whole cache lines per thread (16 Ki elements).
        pool_.parallelFor(size_t(e - b), 16384, [&](size_t s0, size_t s1, int) {
          if (copy)
            std::memcpy(buf + s0 * es, static_cast<const uint8_t *>(src.mapped) + (b + s0) * es,
                        (s1 - s0) * es);
          else
            src.read(buf + s0 * es, b + s0, b + s1);
        });
        st.send(dst + b * es, (e - b) * es, fmt::format("upload of '{}'", w.name));
      }
    }
    done += v.bytes;
    if (progress)
      progress(done, total);
  }
  st.finish();
  return res;
}

void CudaBackend::evict(const DeviceWeight &, std::shared_ptr<void> &memory) {
  dropGraphs();
  memory.reset();
}

//===----------------------------------------------------------------------===//
// Steps
//===----------------------------------------------------------------------===//

std::vector<unsigned> CudaBackend::groupSteps(const PlanFile &plan, int rank) {
  const plan::RankProgram &prog = plan.rankProgram(rank);
  size_t n = prog.steps() ? prog.steps()->size() : 0;
  std::vector<unsigned> end(n);
  for (size_t i = 0; i < n; ++i)
    end[i] = unsigned(i + 1);
  ropePositions_ = plan.maxPositions();
  // The experts kernels need the gate's expert count, which their op does
  // not repeat: remember it per expert_offsets buffer.
  for (size_t i = 0; i < n; ++i)
    if (const plan::Gate *g = prog.steps()->Get(unsigned(i))->op_as_Gate())
      gateExperts_[g->expert_offsets()] = g->num_experts();
  // Expanded MLA (plan 3.2's v_head_dim and GatherColumns; moe-compile
  // emits 3.3's MlaAttention, which runs) has no kernels here yet: refuse
  // the plan at load rather than compute something else.
  for (size_t i = 0; i < n; ++i) {
    const plan::Step &s = *prog.steps()->Get(unsigned(i));
    std::string name = s.name() ? s.name()->str() : opName(s.op_type());
    if (const plan::Attention *at = s.op_as_Attention();
        at && at->v_head_dim() != 0 && at->v_head_dim() != at->head_dim())
      fail("cuda: step '{}' has v_head_dim {} != head_dim {} (MLA), which the CUDA backend does "
           "not support yet (expected --backend=cpu)",
           name, at->v_head_dim(), at->head_dim());
    if (const plan::MlaAttention *m = s.op_as_MlaAttention();
        m && (m->kv_lora_rank() > kMlaMaxLatent ||
              m->kv_lora_rank() + m->rope_dim() > kMlaMaxCols))
      fail("cuda: step '{}': MLA with kv_lora_rank {} and rope_dim {} (expected kv_lora_rank <= "
           "{} and kv_lora_rank + rope_dim <= {})",
           name, m->kv_lora_rank(), m->rope_dim(), kMlaMaxLatent, kMlaMaxCols);
    // The exchange runs on the host (exchangeOnHost), which no graph holds.
    if (s.op_type() == Op::AllToAllV)
      hostExchange_ = true;
    if (s.op_type() == Op::GatherColumns)
      fail("cuda: step '{}' is a GatherColumns step (MLA), which the CUDA backend does not "
           "support yet (expected --backend=cpu)",
           name);
  }
  return end;
}

void CudaBackend::launch(StreamKind s, const plan::Step &step, const StepArgs &args) {
  if (args.trace)
    return launchTraced(s, step, args);
  runStep(stream(s), step, args);
}

void CudaBackend::launchGroup(StreamKind s, const plan::RankProgram &prog, unsigned begin,
                              unsigned end, const StepArgs &args) {
  for (unsigned k = begin; k < end; ++k)
    launch(s, *prog.steps()->Get(k), args);
}

bool CudaBackend::ranksShareGpus(Comm &host) const {
  // Every rank's GPU (host name and PCI bus id) to rank 0, which tells all
  // whether two are the same.
  char bus[64] = {}, name[256] = {};
  if (cudaDeviceGetPCIBusId(bus, sizeof bus, device_) != cudaSuccess)
    (void)cudaGetLastError();
  ::gethostname(name, sizeof name - 1);
  std::vector<std::string> all = host.gatherToRoot(fmt::format("{}/{}", name, bus));
  int32_t shared = 0;
  if (host.rank() == 0) {
    std::sort(all.begin(), all.end());
    shared = std::adjacent_find(all.begin(), all.end()) != all.end();
  }
  host.broadcast(&shared, sizeof shared, 0, {});
  return shared != 0;
}

std::unique_ptr<Comm> CudaBackend::deviceComm(Comm &host) {
  if (host.size() <= 1)
    return nullptr;
  // NCCL wants a GPU per rank: ranks sharing one (in-process ranks on one
  // GPU) keep the host communicator, which bindComm stages through host
  // memory.
  if (ranksShareGpus(host))
    return nullptr;
#ifdef MOERT_HAVE_NCCL
  std::string error;
  std::unique_ptr<Comm> c = makeNcclComm(host, error);
  if (!c)
    fail("--backend=cuda: {} ranks need NCCL: {}", host.size(), error);
  return c;
#else
  fail("--backend=cuda: {} ranks need NCCL, which this build lacks (expected nccl.h when it "
       "was configured: /usr/local/cuda/include or $NCCL_HOME/include)",
       host.size());
#endif
}

void CudaBackend::bindComm(Comm &comm) {
  // Host communicators move host memory and the arena is device memory:
  // several ranks without NCCL (in-process ranks sharing a GPU, MPI without
  // NCCL) stage each collective through the host. Their host calls cannot
  // be captured, so such a backend launches every step directly.
  staged_.reset();
  comm_ = &comm;
  if (comm.size() > 1 && std::string_view(comm.name()) != "nccl") {
    staged_ = makeStagedComm(comm);
    comm_ = staged_.get();
  }
  comm_->setStream(streams_[int(StreamKind::Comm)]);
}

void CudaBackend::exchangeOnHost(cudaStream_t st, const plan::AllToAllV &op, const StepArgs &a,
                                 const std::string &where) {
  // The data-parallel groups' token exchange (plan 3.4): its bookkeeping
  // (counts first, rows with their metadata, relays between nodes) is core's
  // runAllToAllV over host memory, so the step's buffers go through a host
  // mirror of their arena slots and the communicator gets host pointers
  // (NCCL's adapter and the staged one pass those to the host communicator).
  // An all-to-all-v of device rows over NCCL is not written yet.
  if (!comm_)
    fail("{}: an exchange without a communicator (expected Backend::bindComm)", where);
  std::vector<int32_t> bufs;
  for (int32_t b : {op.in(), op.out(), op.sorted_slots(), op.expert_offsets(), op.recv_sorted(),
                    op.recv_offsets(), op.send_slots(), op.counts(), op.relay()})
    if (b >= 0)
      bufs.push_back(b);
  uint64_t end = 0;
  for (int32_t b : bufs)
    end = std::max(end, (*a.buffers)[size_t(b)].offset + (*a.buffers)[size_t(b)].bytes);
  if (hostArena_.size() < end)
    hostArena_.resize(end);
  auto each = [&](cudaMemcpyKind kind) {
    for (int32_t b : bufs) {
      const BufferInfo &bi = (*a.buffers)[size_t(b)];
      uint8_t *h = hostArena_.data() + bi.offset, *d = a.arena + bi.offset;
      check(cudaMemcpyAsync(kind == cudaMemcpyDeviceToHost ? static_cast<void *>(h) : d,
                            kind == cudaMemcpyDeviceToHost ? static_cast<void *>(d) : h, bi.bytes,
                            kind, st),
            where);
    }
    check(cudaStreamSynchronize(st), where);
  };
  each(cudaMemcpyDeviceToHost);
  StepArgs h = a;
  h.arena = hostArena_.data();
  runAllToAllV(*comm_, op, h);
  each(cudaMemcpyHostToDevice);
}

void CudaBackend::runStep(cudaStream_t st, const plan::Step &s, const StepArgs &a) {
  const int64_t T = a.T;
  const char *opName = plan::EnumNameOp(s.op_type());
  std::string where = fmt::format("step '{}' ({})", s.name() ? s.name()->c_str() : "", opName);
  switch (s.op_type()) {
  case Op::Embedding: {
    auto *op = s.op_as_Embedding();
    const WeightInfo &wi = a.info(op->weight());
    check(embedding(a.ids, T, dw(a, op->weight()), wi.shape[1], op->scale(), a.f32(op->out()),
                    a.ld(op->out()), st, op->vocab_offset(), wi.partOf >= 0 ? wi.shape[0] : -1),
          where);
    a.stats->weightBytes += uint64_t(T * wi.shape[1]) * dtypeSize(wi.dtype);
    break;
  }
  case Op::PositionEmbedding: {
    auto *op = s.op_as_PositionEmbedding();
    const WeightInfo &wi = a.info(op->weight());
    check(addRows(a.pos, T, dw(a, op->weight()), wi.shape[1], a.f32(op->inout()),
                  a.ld(op->inout()), st),
          where);
    a.stats->weightBytes += uint64_t(T * wi.shape[1]) * dtypeSize(wi.dtype);
    break;
  }
  case Op::Norm: {
    auto *op = s.op_as_Norm();
    int64_t cols = op->cols() ? op->cols() : a.ld(op->in()) - op->col_offset();
    int64_t r = a.rows(op->in());
    if (op->kind() == plan::NormKind::LayerNorm)
      check(layerNorm(a.f32(op->in()), a.ld(op->in()), a.f32(op->out()), a.ld(op->out()), r,
                      op->col_offset(), cols, op->dim(), dw(a, op->weight()), dw(a, op->bias()),
                      op->eps(), st),
            where);
    else
      check(rmsNorm(a.f32(op->in()), a.ld(op->in()), a.f32(op->out()), a.ld(op->out()), r,
                    op->col_offset(), cols, op->dim(), dw(a, op->weight()), op->eps(),
                    op->weight_offset(), st),
            where);
    break;
  }
  case Op::Linear: {
    auto *op = s.op_as_Linear();
    const WeightInfo &wi = a.info(op->weight());
    bool tr = op->weight_transposed();
    int64_t N = tr ? wi.shape[1] : wi.shape[0], K = tr ? wi.shape[0] : wi.shape[1];
    int64_t r = a.rows(op->in());
    const float *x = a.f32(op->in());
    if (op->last_row_only()) {
      x += (r - 1) * a.ld(op->in());
      r = 1;
    }
    void *ws = workspace(Blas::linearWorkspaceBytes(r, K));
    check(blas_->linear(x, a.ld(op->in()), r, dw(a, op->weight()), N, K, tr, dw(a, op->bias()),
                        a.f32(op->out()) + op->out_col_offset(), a.ld(op->out()),
                        op->accumulate(), ws, st),
          where);
    a.stats->weightBytes += weightBytes(a, op->weight());
    break;
  }
  case Op::Rope: {
    auto *op = s.op_as_Rope();
    auto [c, sn] = ropeTable(hostMaxPos(a) + 1, *op);
    check(rope(a.f32(op->buf()) + op->col_offset(), a.ld(op->buf()), T, a.pos, op->num_heads(),
               op->head_dim(), op->rotary_dim(), c, sn,
               op->style() == plan::RopeStyle::Interleaved, st),
          where);
    break;
  }
  case Op::Attention: {
    auto *op = s.op_as_Attention();
    const KVCacheBuf &c = a.caches[op->cache()];
    AttentionArgs aa;
    aa.qkv = a.f32(op->qkv());
    aa.ldqkv = a.ld(op->qkv());
    aa.qCol = op->q_col();
    aa.kCol = op->k_col();
    aa.vCol = op->v_col();
    aa.out = a.f32(op->out());
    aa.ldo = a.ld(op->out());
    aa.T = T;
    aa.pos = a.pos;
    aa.cache = kvOf(c, a);
    aa.heads = op->num_heads();
    aa.kvHeads = op->num_kv_heads();
    aa.headDim = op->head_dim();
    aa.scale = op->scale();
    aa.slidingWindow = op->sliding_window();
    aa.sinks = dw(a, op->sinks());
    sizeSplits(aa, a, c.maxSeq, capturing_, chooseAttentionSplits);
    if (aa.headDim > kAttnMaxHeadDim)
      fail("cuda: {}: head_dim {} (expected at most {})", where, aa.headDim, kAttnMaxHeadDim);
    check(attention(aa, workspace(attentionWorkspaceBytes(aa)), st), where);
    break; // (the session counts the KV bytes read)
  }
  case Op::MlaAttention: {
    auto *op = s.op_as_MlaAttention();
    const KVCacheBuf &c = a.caches[op->cache()];
    MlaArgs ma;
    ma.q = a.f32(op->q()) + op->q_col();
    ma.ldq = a.ld(op->q());
    ma.latent = a.f32(op->latent()) + op->latent_col();
    ma.ldLatent = a.ld(op->latent());
    ma.kPe = a.f32(op->k_pe()) + op->k_pe_col();
    ma.ldKPe = a.ld(op->k_pe());
    ma.out = a.f32(op->out());
    ma.ldo = a.ld(op->out());
    ma.T = T;
    ma.pos = a.pos;
    ma.cache = kvOf(c, a);
    ma.heads = op->num_heads();
    ma.nopeDim = op->nope_dim();
    ma.ropeDim = op->rope_dim();
    ma.vHeadDim = op->v_head_dim();
    ma.kvLoraRank = op->kv_lora_rank();
    ma.scale = op->scale();
    ma.kvB = dw(a, op->kv_b());
    sizeSplits(ma, a, c.maxSeq, capturing_, chooseMlaSplits);
    check(mlaAttention(ma, workspace(mlaWorkspaceBytes(ma)), st), where);
    a.stats->weightBytes += weightBytes(a, op->kv_b());
    break;
  }
  case Op::Activation: {
    auto *op = s.op_as_Activation();
    check(activation(a.f32(op->in()), a.ld(op->in()), a.f32(op->out()), a.ld(op->out()),
                     a.rows(op->in()), op->n(), ActKind(int(op->kind())), op->gated(), st),
          where);
    break;
  }
  case Op::Add: {
    auto *op = s.op_as_Add();
    check(add(a.f32(op->a()), a.f32(op->b()), a.f32(op->out()), a.rows(op->a()) * a.ld(op->a()),
              st),
          where);
    break;
  }
  case Op::Gate: {
    auto *op = s.op_as_Gate();
    const ExpertSelection sel = selectionOf(*op);
    math::GateParams p;
    p.numExperts = sel.numExperts;
    p.topK = sel.topK;
    p.sigmoid = sel.sigmoid;
    p.softmaxBeforeTopk = sel.softmaxBeforeTopk;
    p.normTopk = op->norm_topk_prob();
    p.capacityFactor = op->capacity_factor();
    p.minCapacity = op->min_capacity();
    p.dropTokens = op->drop_tokens();
    p.numGroups = sel.numGroups;
    p.topkGroups = sel.topkGroups;
    p.routedScalingFactor = op->routed_scaling_factor();
    DW bias = dw(a, op->selection_bias());
    p.selectionBias = bias.data;
    p.selectionBiasType = bias.type;
    if (p.numExperts > math::kGateMaxExperts || p.topK > math::kGateMaxTopK ||
        p.numGroups > math::kGateMaxGroups)
      fail("cuda: {}: {} experts, top_k {}, {} groups (expected at most {} experts, top_k {} "
           "and {} groups)",
           where, p.numExperts, p.topK, p.numGroups, math::kGateMaxExperts, math::kGateMaxTopK,
           math::kGateMaxGroups);
    check(gate(a.f32(op->logits()), a.ld(op->logits()), T, p, a.i32(op->slot_expert()),
               a.f32(op->slot_weight()), a.i32(op->expert_offsets()), a.i32(op->sorted_slots()),
               workspace(gateWorkspaceBytes(T, p.numExperts)), st),
          where);
    if (a.gateCounts.routed)
      countRouting(st, *op, a);
    break;
  }
  case Op::Experts:
    runExperts(st, *s.op_as_Experts(), a);
    break;
  case Op::Combine: {
    auto *op = s.op_as_Combine();
    check(combine(a.f32(op->slot_out()), a.f32(op->slot_weight()), T, op->top_k(),
                  a.ld(op->out()), a.f32(op->out()), a.ld(op->out()), op->accumulate(), st),
          where);
    break;
  }
  case Op::SigmoidGate: {
    auto *op = s.op_as_SigmoidGate();
    check(sigmoidGate(a.f32(op->gate_logit()), a.ld(op->gate_logit()), a.f32(op->inout()),
                      a.ld(op->inout()), T, a.ld(op->inout()), st),
          where);
    break;
  }
  case Op::ResidualMix: {
    auto *op = s.op_as_ResidualMix();
    check(residualMix(a.f32(op->moe()), a.f32(op->mlp()), a.f32(op->coef_logits()),
                      a.ld(op->coef_logits()), a.f32(op->out()), a.ld(op->out()), T,
                      a.ld(op->out()), st),
          where);
    break;
  }
  case Op::Logits: {
    auto *op = s.op_as_Logits();
    const WeightInfo &wi = a.info(op->weight());
    bool tr = op->weight_transposed();
    // V: this step's logits (a vocabulary-parallel member's part); ldv: the
    // whole vocabulary, every logits buffer's row length.
    int64_t V = tr ? wi.shape[1] : wi.shape[0], K = tr ? wi.shape[0] : wi.shape[1];
    const int64_t ldv = a.ld(op->out()), first = op->vocab_offset();
    const float *x = a.f32(op->in());
    int64_t lx = a.ld(op->in());
    float *out = a.f32(op->out());
    auto gather = [&](float *logits, int64_t rows) {
      if (!op->group())
        return;
      if (!comm_)
        fail("vocabulary-parallel logits without a communicator (expected Backend::bindComm)");
      auto *scratch = static_cast<float *>(workspace(uint64_t(rows * (ldv + V)) * 4));
      comm_->setStream(st); // after this step's product, on its stream
      gatherVocabulary(*comm_, *op->group(), logits, rows, ldv, scratch,
                       [&](void *dst, const void *src, uint64_t n) {
                         check(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, st), where);
                       });
    };
    if (a.numLogitRows > 0) {
      // A batched step: the last row of each sequence that samples,
      // gathered so that one product reads each weight row once.
      const int64_t n = a.numLogitRows;
      const size_t rowBytes = (size_t(n * K) * 4 + 255) / 256 * 256;
      auto *rows = static_cast<float *>(workspace(rowBytes + Blas::linearWorkspaceBytes(n, K)));
      check(gatherRows(x, lx, a.logitRows, n, K, rows, st), where);
      check(blas_->linear(rows, K, n, dw(a, op->weight()), V, K, tr, dw(a, op->bias()),
                          a.rowLogits + first, ldv, false,
                          reinterpret_cast<uint8_t *>(rows) + rowBytes, st),
            where);
      gather(a.rowLogits, n);
    } else if (a.allLogits) {
      check(blas_->linear(x, lx, T, dw(a, op->weight()), V, K, tr, dw(a, op->bias()),
                          a.allLogits + first, ldv, false,
                          workspace(Blas::linearWorkspaceBytes(T, K)), st),
            where);
      gather(a.allLogits, T);
      check(cudaMemcpyAsync(out, a.allLogits + (T - 1) * ldv, size_t(ldv) * 4,
                            cudaMemcpyDeviceToDevice, st),
            where);
    } else {
      check(blas_->linear(x + (T - 1) * lx, lx, 1, dw(a, op->weight()), V, K, tr,
                          dw(a, op->bias()), out + first, ldv, false,
                          workspace(Blas::linearWorkspaceBytes(1, K)), st),
            where);
      gather(out, 1);
    }
    a.stats->weightBytes += weightBytes(a, op->weight());
    break;
  }
  case Op::AllToAllV:
    exchangeOnHost(st, *s.op_as_AllToAllV(), a, where);
    break;
  case Op::Collective:
    if (!comm_)
      fail("collective step without a communicator (expected Backend::bindComm)");
    comm_->setStream(st);
    runCollective(*comm_, *s.op_as_Collective(), a, [&](void *dst, const void *src, uint64_t n) {
      check(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, st), where);
    });
    break;
  default:
    // Prefetch and Evict are the weight store's (core).
    break;
  }
}

void CudaBackend::countRouting(cudaStream_t st, const plan::Gate &op, const StepArgs &a) {
  // --expert-profile only: the counts come to the host once per gate.
  const int E = op.num_experts(), K = op.top_k();
  std::vector<int32_t> se(size_t(a.T * K)), eo(size_t(E + 1));
  check(cudaMemcpyAsync(se.data(), a.i32(op.slot_expert()), se.size() * 4,
                        cudaMemcpyDeviceToHost, st),
        "expert profile");
  check(cudaMemcpyAsync(eo.data(), a.i32(op.expert_offsets()), eo.size() * 4,
                        cudaMemcpyDeviceToHost, st),
        "expert profile");
  check(cudaStreamSynchronize(st), "expert profile");
  std::vector<uint64_t> routed(size_t(E), 0);
  for (int32_t e : se)
    if (e >= 0 && e < E)
      ++routed[size_t(e)];
  for (int e = 0; e < E; ++e) {
    a.gateCounts.routed[e] += routed[size_t(e)];
    if (a.gateCounts.dropped && op.drop_tokens())
      a.gateCounts.dropped[e] += routed[size_t(e)] - uint64_t(eo[size_t(e) + 1] - eo[size_t(e)]);
  }
}

void CudaBackend::runExperts(cudaStream_t st, const plan::Experts &op, const StepArgs &a) {
  ExpertsArgs ea;
  ea.in = a.f32(op.in());
  ea.ldi = a.ld(op.in());
  ea.sortedSlots = a.i32(op.sorted_slots());
  ea.expertOffsets = a.i32(op.expert_offsets());
  ea.slotOut = a.f32(op.slot_out());
  ea.T = a.T;
  ea.topK = op.top_k();
  auto g = gateExperts_.find(op.expert_offsets());
  if (g == gateExperts_.end())
    fail("cuda: Experts step without its Gate (expected groupSteps to have seen the plan)");
  ea.numExperts = g->second;
  ea.D = a.ld(op.slot_out());
  // A part of a sliced expert computes I / expert_slices hidden units (the
  // kernels take the part's weights as a whole expert of that size).
  ea.I = op.intermediate() / op.expert_slices();
  ea.act = ActKind(int(op.act()));
  ea.gated = op.gated();
  ea.swigluLimit = op.swiglu_limit();
  ea.swigluAlpha = op.swiglu_alpha();
  ea.clearSlotOut = a.expertsFirstPart;
  // The table of this launch's local experts, indexed by global expert id.
  hostTable_.assign(size_t(ea.numExperts), ExpertW{});
  for (ExpertW &w : hostTable_)
    w.numReplicas = 0;
  auto add = [&](const plan::LocalExpert *e) {
    ExpertW &w = hostTable_[size_t(e->expert())];
    // The expert's slices of the stacked gate, up, down, up_bias, down_bias.
    std::array<int32_t, kExpertRoles> s = expertWeights(*a.weightInfo, op, *e);
    w.gate = dw(a, s[0]);
    w.up = dw(a, s[1]);
    w.down = dw(a, s[2]);
    w.upBias = dw(a, s[3]);
    w.downBias = dw(a, s[4]);
    w.gateBias = dw(a, s[5]);
    w.replica = e->replica();
    w.numReplicas = std::max(1, e->num_replicas());
    ea.weightType = w.up.type;
    w.bytes = weightBytes(a, s[1]) + weightBytes(a, s[0]) + weightBytes(a, s[2]);
    // A launch of chosen experts (expert streaming's parts: each routed)
    // counts them here; otherwise the device counts the routed ones.
    if (!a.expertSubset.empty())
      a.stats->weightBytes += w.bytes;
  };
  if (op.experts()) {
    if (a.expertSubset.empty())
      for (const plan::LocalExpert *e : *op.experts())
        add(e);
    else
      for (int32_t k : a.expertSubset)
        add(op.experts()->Get(unsigned(k)));
  }
  if (capturing_) {
    ea.experts = capturedExpertTable(op);
  } else {
    if (expertTableLen_ < hostTable_.size()) {
      cudaFree(expertTable_); // waits for kernels reading the old table
      expertTable_ = static_cast<ExpertW *>(allocate(hostTable_.size() * sizeof(ExpertW),
                                                     "expert table"));
      expertTableLen_ = hostTable_.size();
    }
    // Ordered on the stream after the previous Experts kernel read the table.
    check(cudaMemcpyAsync(expertTable_, hostTable_.data(), hostTable_.size() * sizeof(ExpertW),
                          cudaMemcpyHostToDevice, st),
          "expert table");
    ea.experts = expertTable_;
  }
  if (a.expertSubset.empty()) { // (else counted above, on the host)
    ea.routedBytes = routedBytes_;
    ea.routedMirror = routedMirrorDev_;
  }
  check(experts(ea, workspace(expertsWorkspaceBytes(ea.T, ea.topK, ea.I)), st), "Experts");
}

void CudaBackend::collectStats(StepStats &stats) {
  // The routed experts' bytes the device counted since the last call: the
  // running total its last Experts launch stored in mapped host memory (the
  // caller synchronized every stream; no copy, no CUDA call per step).
  const uint64_t total = *static_cast<volatile unsigned long long *>(routedMirror_);
  stats.weightBytes += total - routedSeen_;
  routedSeen_ = total;
}

//===----------------------------------------------------------------------===//
// Routing prediction, sampling, bandwidth
//===----------------------------------------------------------------------===//

void CudaBackend::routeTopK(const float *x, int64_t ldx, int64_t rows, const DeviceWeight &router,
                            const DeviceWeight *bias, int64_t H, const ExpertSelection &sel,
                            std::vector<int32_t> &experts) {
  // Expert prediction (off by default): small, so on the host.
  const int64_t E = sel.numExperts;
  std::vector<float> hx(size_t(rows * ldx));
  check(cudaMemcpy(hx.data(), x, hx.size() * 4, cudaMemcpyDeviceToHost), "routeTopK");
  auto toHost = [&](const DeviceWeight &d, int64_t n) {
    std::vector<uint8_t> raw(size_t(n) * dtypeSize(d.dtype));
    check(cudaMemcpy(raw.data(), d.data, raw.size(), cudaMemcpyDeviceToHost), "routeTopK");
    std::vector<float> f(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i)
      f[size_t(i)] = loadAsF32(raw.data(), d.dtype, size_t(i));
    return f;
  };
  std::vector<float> w = toHost(router, E * H);
  std::vector<float> b = bias ? toHost(*bias, E) : std::vector<float>(size_t(E), 0.0f);
  std::vector<float> l(size_t(rows * E));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t e = 0; e < E; ++e) {
      double acc = b[size_t(e)];
      for (int64_t k = 0; k < H; ++k)
        acc += double(hx[size_t(r * ldx + k)]) * double(w[size_t(e * H + k)]);
      l[size_t(r * E + e)] = float(acc);
    }
  experts = predictedExperts(l.data(), rows, sel);
}

int64_t CudaBackend::sample(const float *logits, int64_t vocab, const SamplingParams &p) {
  cudaStream_t st = stream(StreamKind::Compute);
  if (p.temperature <= 0.0f) {
    check(argmax(logits, vocab, sampleOut_, st), "argmax");
  } else {
    check(cudaMemcpyAsync(rngState_, p.state, 8, cudaMemcpyHostToDevice, st), "sampler state");
    size_t wb = sampleWorkspaceBytes(vocab);
    check(sampleTopP(logits, vocab, p.temperature, p.topP, rngState_, sampleOut_,
                     workspace(wb), wb, st),
          "top-p sampling");
    check(cudaMemcpyAsync(p.state, rngState_, 8, cudaMemcpyDeviceToHost, st), "sampler state");
  }
  int64_t id = 0;
  check(cudaMemcpyAsync(&id, sampleOut_, 8, cudaMemcpyDeviceToHost, st), "sampled id");
  check(cudaStreamSynchronize(st), "sampling");
  return id;
}

std::pair<double, double>
CudaBackend::readBandwidth(std::span<const std::span<const uint8_t>> regions, uint64_t bytes,
                           int passes) {
  cudaStream_t st = stream(StreamKind::Compute);
  std::vector<std::pair<const void *, uint64_t>> spans;
  void *scratch = nullptr;
  if (regions.empty()) {
    bytes = std::max<uint64_t>(bytes / 16 * 16, 1 << 20);
    scratch = allocate(bytes, "bandwidth probe");
    check(fillUniform(scratch, WType::F32, int64_t(bytes / 4), 1, 1.0f, st), "bandwidth probe");
    spans.push_back({scratch, bytes});
  } else {
    for (const auto &r : regions)
      if (r.size() >= 16)
        spans.push_back({r.data(), r.size() / 16 * 16});
  }
  uint64_t total = 0;
  for (auto &s : spans)
    total += s.second;
  auto *sink = static_cast<float *>(workspace(size_t(readProbeBlocks()) * 4));
  cudaEvent_t t0, t1;
  check(cudaEventCreate(&t0), "cudaEventCreate");
  check(cudaEventCreate(&t1), "cudaEventCreate");
  std::vector<double> gbs;
  for (int p = 0; p < std::max(1, passes) + 1; ++p) {
    check(cudaEventRecord(t0, st), "bandwidth probe");
    for (auto &s : spans)
      check(readProbe(s.first, s.second, sink, st), "bandwidth probe");
    check(cudaEventRecord(t1, st), "bandwidth probe");
    check(cudaEventSynchronize(t1), "bandwidth probe");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, t0, t1), "bandwidth probe");
    if (p > 0 && ms > 0) // the first pass warms up
      gbs.push_back(double(total) / (double(ms) * 1e6));
  }
  cudaEventDestroy(t0);
  cudaEventDestroy(t1);
  if (scratch)
    deallocate(scratch, bytes);
  if (gbs.empty())
    return {0, 0};
  std::sort(gbs.begin(), gbs.end());
  return {gbs.back(), gbs[gbs.size() / 2]};
}

} // namespace moert::cuda

namespace moert {
std::unique_ptr<Backend> makeCudaBackend(const BackendOptions &opts) {
  return std::make_unique<cuda::CudaBackend>(opts);
}
} // namespace moert
