//===- Backend.h - The interface every runtime backend implements -*- C++ -*-===//
//
// Core (Session, WeightStore, generation) drives a plan through this
// interface only; a backend (runtime/backends/<name>/) owns device memory,
// the in-memory layout of weights, one kernel per plan op kind, and streams
// with events. The shape follows ggml-backend (a small vtable, weight layout
// chosen by the backend, a graph_optimize hook) and IREE's HAL (streams
// ordered by events), smaller than either.
//
// Streams. The plan's streams (plan.fbs Step.stream: 0 compute, 1
// communication, 2 weight streaming) map to backend streams. Work enqueued on
// one stream runs in order; different streams run concurrently; an event
// recorded on a stream completes when everything enqueued on it before the
// record has run, and waitEvent() makes later work on a stream wait for it.
// A backend may run the compute stream synchronously on the calling thread
// (the CPU backend does: its kernels already use every core), in which case
// launching a compute step returns when the step is done.
//
// Data-dependent routing (per-expert counts and offsets) stays in device
// buffers that kernels read; core never reads it to decide what to launch,
// except for expert streaming, where the weight store copies a step's expert
// offsets to the host once per MoE layer.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "moert/Comm.h"
#include "moert/DType.h"
#include "moert/ExpertSelection.h"
#include "moert/Plan.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace moert {

class Comm;
class ThreadPool;
class Trace;

/// The plan's streams.
enum class StreamKind : int { Compute = 0, Comm = 1, Weights = 2 };
inline constexpr int kNumStreams = 3;
inline StreamKind streamOf(const plan::Step &s) {
  int v = int(s.stream());
  return v >= 0 && v < kNumStreams ? StreamKind(v) : StreamKind::Compute;
}

/// An event recorded on a stream (index into the backend's event table).
using EventId = int32_t;

/// A weight as a backend holds it: device memory in the backend's layout, or
/// (host backends) the checkpoint mapping itself.
struct DeviceWeight {
  const void *data = nullptr; // null when no bound rank uses the weight
  DType dtype = DType::F32;
  Layout layout = Layout::RowMajor;
  uint64_t bytes = 0;
  /// Whether `data` is the checkpoint's mapping used in place (evicting
  /// drops its pages; nothing to free).
  bool mapped = false;
  /// A quantized weight (WeightInfo::format): `data` holds its stored rows
  /// (bytes - scaleBytes bytes), `scales` its scale grid (scaleBytes).
  const void *scales = nullptr;
  uint64_t scaleBytes = 0;
};

/// One weight handed to a backend for upload.
struct WeightSource {
  const WeightInfo *info = nullptr;
  /// The tensor's stored bytes in host memory (the checkpoint mapping),
  /// aligned for info->storedDtype; null for random weights and tensors that
  /// must be converted.
  const void *mapped = nullptr;
  /// Writes elements [b, e) row-major as info->dtype into dst (host memory).
  std::function<void(void *dst, uint64_t b, uint64_t e)> read;
  /// A quantized weight (info->format) instead, as stored: row n at
  /// qdata + n * qdataPitch (info->quantRowBytes() bytes), scale row m at
  /// qscales + m * qscalePitch (info->scaleRowBytes() bytes); `read` unused.
  const uint8_t *qdata = nullptr, *qscales = nullptr;
  uint64_t qdataPitch = 0, qscalePitch = 0;
};

/// Called with (done, total) bytes while weights load; may be empty.
using ProgressFn = std::function<void(uint64_t, uint64_t)>;

/// Weights uploaded together: their device views and the memory that holds
/// them (released when the last reference goes; empty for mapped weights).
struct UploadResult {
  std::vector<DeviceWeight> weights;
  std::shared_ptr<void> memory;
};

/// A layer's K/V cache in device memory: k [kvHeads, maxSeq, headDim] and v
/// [kvHeads, maxSeq, vHeadDim] (vHeadDim = headDim unless the plan says),
/// where maxSeq is the positions of the plan's page pool (kv_pages x
/// kv_page_size; max_seq_len for plans of one contiguous cache). Which rows
/// belong to which sequence is the step's page table (StepArgs).
struct KVCacheBuf {
  void *k = nullptr, *v = nullptr;
  DType dtype = DType::F32;
  int64_t maxSeq = 0;
  uint64_t bytes = 0;  // of k
  uint64_t vBytes = 0; // of v
};

/// Counters kernels may add to (bytes read, for the bandwidth floor). The
/// session counts kvBytes itself (from the plan's attention steps).
struct StepStats {
  uint64_t weightBytes = 0, kvBytes = 0;
};

/// Expert-routing counts of one Gate step (--expert-profile).
struct GateCounts {
  uint64_t *routed = nullptr, *dropped = nullptr; // num_experts each
};

/// Everything a kernel reads besides its op table: the rank's arena and
/// buffers, KV caches, weights, and the forward call's tokens. Device
/// pointers are the backend's own addresses.
struct StepArgs {
  int64_t T = 0;                  // tokens of this forward call
  const int64_t *ids = nullptr;   // device: T token ids
  const int64_t *pos = nullptr;   // device: T positions (each within its row's sequence)
  const int64_t *hostPos = nullptr; // the same positions on the host (sizes, statistics)
  // The step's batch: rows may belong to several sequences (batched
  // generation; a single sequence is slot 0 throughout). Row t is sequence
  // slot seq[t] at position pos[t]; slot s keeps position p of its K/V at
  // pool row pageTable[s * pagesPerSeq + p / pageSize] * pageSize +
  // p % pageSize of every KV cache (Attention).
  const int64_t *seq = nullptr;     // device: T sequence slots
  const int64_t *hostSeq = nullptr; // the same on the host
  const int32_t *pageTable = nullptr; // device: [max_batch, pagesPerSeq] page numbers
  int64_t pagesPerSeq = 1, pageSize = 0;
  // Logits of these rows only, one per sequence that samples after this
  // step (its last row), into rowLogits [numLogitRows, vocab]; when 0, the
  // Logits step computes the last row into its `out` buffer (one sequence).
  int64_t numLogitRows = 0;
  const int64_t *logitRows = nullptr;     // device: numLogitRows row indices
  const int64_t *hostLogitRows = nullptr; // the same on the host
  float *rowLogits = nullptr;             // device
  uint8_t *arena = nullptr;       // device: the rank's activation arena
  const std::vector<BufferInfo> *buffers = nullptr;
  KVCacheBuf *caches = nullptr;
  const DeviceWeight *weights = nullptr; // indexed like Plan.weights; resident before launch
  const std::vector<WeightInfo> *weightInfo = nullptr;
  float *allLogits = nullptr;     // device: T x vocab logits (--dump), or null
  StepStats *stats = nullptr;
  GateCounts gateCounts;          // for Gate steps under --expert-profile
  DType computeDtype = DType::F32; // the plan's compute dtype
  /// Experts steps: run only these local experts (indices into the op's
  /// `experts`), or all when empty; `expertsFirstPart` says this launch
  /// starts the step (it clears slot_out). Expert streaming under a tight
  /// budget launches a step once per routed expert, each fetched in turn.
  std::span<const int32_t> expertSubset;
  bool expertsFirstPart = true;
  Trace *trace = nullptr;         // record a trace event per step when set
  int64_t issuedNs = 0;           // set by a backend when it queues a step (traces)
  int stepIndex = -1;

  void *ptr(int32_t buf) const { return arena + (*buffers)[size_t(buf)].offset; }
  float *f32(int32_t buf) const { return static_cast<float *>(ptr(buf)); }
  int32_t *i32(int32_t buf) const { return static_cast<int32_t *>(ptr(buf)); }
  int64_t ld(int32_t buf) const { return (*buffers)[size_t(buf)].rowElems; }
  int64_t rows(int32_t buf) const { return (*buffers)[size_t(buf)].rows(T); }
  const DeviceWeight *weight(int32_t idx) const { return idx < 0 ? nullptr : &weights[idx]; }
  const WeightInfo &info(int32_t idx) const { return (*weightInfo)[size_t(idx)]; }
};

/// Sampling parameters (the algorithm is core's: moert::Sampler; a backend
/// runs it where the logits are and returns only the chosen id).
struct SamplingParams {
  float temperature = 0.0f, topP = 1.0f;
  uint64_t *state = nullptr; // the sampler's RNG state, advanced in place
};

struct BackendOptions {
  int threads = 1;   // host threads for kernels (CPU)
  int device = 0;    // device index (GPU backends)
  bool packWeights = true; // CPU: bf16 matrices in the packed dot-product layout
};

class Backend {
public:
  virtual ~Backend() = default;
  virtual const char *name() const = 0;
  /// The device in words ("AMD EPYC 9B14, avx512bf16, 2 threads").
  virtual std::string description() const = 0;
  /// Host threads the backend computes with (sizes per-thread scratch).
  virtual int threads() const = 0;
  /// The pool host-side work (weight conversion, random fills) may use.
  virtual ThreadPool &hostPool() = 0;

  // --- Memory ---------------------------------------------------------------
  virtual void *allocate(uint64_t bytes, const char *what) = 0;
  virtual void deallocate(void *p, uint64_t bytes) = 0;
  /// Stream-ordered copies between host and device memory.
  virtual void copyToDevice(StreamKind s, void *dst, const void *src, uint64_t bytes) = 0;
  virtual void copyToHost(StreamKind s, void *dst, const void *src, uint64_t bytes) = 0;

  // --- Weights --------------------------------------------------------------
  /// The layout a weight gets; `onlyProduct` says every use is as W of X W^T.
  virtual Layout chooseLayout(const WeightInfo &w, bool onlyProduct) = 0;
  /// Bytes a weight takes in `layout`.
  virtual uint64_t layoutBytes(const WeightInfo &w, Layout layout) = 0;
  /// Uploads weights in the given layouts (at start-up many at once, so the
  /// backend can place them in one allocation and fill them in parallel; a
  /// streamed weight alone, on the weight-streaming stream's thread).
  virtual UploadResult upload(std::span<const WeightSource> srcs, std::span<const Layout> layouts,
                              const ProgressFn &progress) = 0;
  /// Releases a weight's memory (`memory` from upload) or, for a mapped one,
  /// its pages.
  virtual void evict(const DeviceWeight &w, std::shared_ptr<void> &memory) = 0;
  /// Brings a mapped weight's pages in (a streamed weight used in place).
  virtual void touch(const DeviceWeight &w) = 0;

  // --- Steps ----------------------------------------------------------------
  /// Load-time optimization (ggml's graph_optimize): for every step of the
  /// rank's program, the index one past the last step it runs together with
  /// (i + 1 = alone). Grouped steps are consecutive, on one stream, and are
  /// launched with launchGroup.
  virtual std::vector<unsigned> groupSteps(const PlanFile &plan, int rank) = 0;
  /// Enqueues one step on its stream. Collective steps use the Comm bound
  /// with bindComm. The args (and what they point to) stay valid until the
  /// step has run.
  virtual void launch(StreamKind s, const plan::Step &step, const StepArgs &args) = 0;
  /// Enqueues steps [begin, end) of the rank's program as one launch.
  virtual void launchGroup(StreamKind s, const plan::RankProgram &prog, unsigned begin,
                           unsigned end, const StepArgs &args) = 0;
  /// The communicator collective steps run on (one per rank).
  virtual void bindComm(Comm &comm) = 0;
  /// A communicator over `host`'s ranks that moves this backend's memory
  /// (the CUDA backend's NCCL), or null where `host` itself does (the CPU).
  /// Every rank calls it (it may be collective); a failure is an Error.
  virtual std::unique_ptr<Comm> deviceComm(Comm & /*host*/) { return nullptr; }
  /// Runs host work in stream order (weight streaming, bookkeeping).
  virtual void enqueueHost(StreamKind s, std::function<void()> fn) = 0;
  /// Expert prediction for streaming: predictedExperts over rows [0, rows)
  /// of router(x) = x W^T (+ bias) for x on the device (`ldx` floats apart),
  /// W the router weight [E, H] (E = sel.numExperts), `bias` E values or
  /// null; sorted ids to the host.
  virtual void routeTopK(const float *x, int64_t ldx, int64_t rows, const DeviceWeight &router,
                         const DeviceWeight *bias, int64_t H, const ExpertSelection &sel,
                         std::vector<int32_t> &experts) = 0;
  /// Samples one token from `logits` (device, vocab floats) and returns it.
  virtual int64_t sample(const float *logits, int64_t vocab, const SamplingParams &p) = 0;

  // --- Streams and events -----------------------------------------------------
  virtual EventId record(StreamKind s) = 0;
  virtual void waitEvent(StreamKind s, EventId e) = 0;
  /// Blocks the host until everything enqueued on `s` has run; rethrows the
  /// first error a stream's work raised.
  virtual void synchronize(StreamKind s) = 0;
  void synchronizeAll() {
    for (int i = 0; i < kNumStreams; ++i)
      synchronize(StreamKind(i));
  }
  /// Forgets the events recorded so far (after a forward call synchronized).
  virtual void resetEvents() = 0;
  /// Adds to `stats` what the device counted during the forward call just
  /// synchronized (CUDA: the routed experts' bytes, counted without reading
  /// routing back); the counts restart.
  virtual void collectStats(StepStats & /*stats*/) {}
  /// Whether launching a compute-stream step returns when it has run (the
  /// session then releases the weights it pinned right away).
  virtual bool synchronousCompute() const { return false; }
  /// Whether the kernels honour the step's batch description (StepArgs seq,
  /// pageTable, logitRows): rows of several sequences in one call. A backend
  /// without it runs one sequence at a time (slot 0, whose pages map
  /// positions to pool rows one to one); Session::forwardBatch refuses.
  virtual bool supportsBatchedSteps() const { return false; }

  // --- Graphs (decode replay; no-ops where there is nothing to gain) ---------
  virtual bool supportsGraphs() const { return false; }
  virtual void beginCapture(int /*key*/) {}
  virtual bool endCapture(int /*key*/) { return false; }
  virtual bool replay(int /*key*/) { return false; }

  // --- Measurements -----------------------------------------------------------
  /// Read bandwidth of the device memory in GB/s (best and median of
  /// `passes`), over `regions` (device memory) or, when empty, a scratch
  /// buffer of `bytes`.
  virtual std::pair<double, double> readBandwidth(std::span<const std::span<const uint8_t>> regions,
                                                  uint64_t bytes, int passes) = 0;
  /// The kernels' instruction set or architecture, for reports.
  virtual std::string isa() const = 0;
  /// Fills n normal random values for --random-weights (key and scale per
  /// the weight store's generator) — a hook so a backend can vectorize it;
  /// the result must equal randomNormalScalar bit for bit.
  virtual void fillNormal(uint64_t key, float scale, uint64_t b, uint64_t e, float *f32,
                          uint16_t *bf16);
};

/// Runs a plan Collective step on `comm` over the step's buffers (device
/// pointers of the backend that calls it; `copy` copies bytes between two of
/// them on that backend). A group of one member is the identity (a copy when
/// out differs from buf), without calling the communicator.
void runCollective(Comm &comm, const plan::Collective &op, const StepArgs &a,
                   const std::function<void(void *dst, const void *src, uint64_t bytes)> &copy);

/// A vocabulary-parallel Logits step's gather (plan.fbs Logits.group): this
/// member computed columns [index * V / G, (index + 1) * V / G) of `rows`
/// logit rows of V floats at `logits`; afterwards every member holds every
/// column. `scratch` holds rows * (V + V / G) floats; `copy` copies bytes
/// between two device pointers of the calling backend.
void gatherVocabulary(Comm &comm, const flatbuffers::Vector<int32_t> &group, float *logits,
                      int64_t rows, int64_t V, float *scratch,
                      const std::function<void(void *dst, const void *src, uint64_t bytes)> &copy);

/// Runs a plan AllToAllV step (the token exchange between data-parallel
/// groups) on `comm` over the step's buffers, for backends whose buffers are
/// host memory.
void runAllToAllV(Comm &comm, const plan::AllToAllV &op, const StepArgs &a);

/// The backends this runtime was built with ("cpu", "cuda").
std::vector<std::string> availableBackends();
/// Creates backend `name`; throws Error("--backend=NAME: ...") when it was
/// not built or has no device.
std::unique_ptr<Backend> makeBackend(const std::string &name, const BackendOptions &opts);

} // namespace moert
