//===- Weights.cpp - Residency, streaming and the memory budget -----------===//
#include "moert/Weights.h"
#include "moert/Random.h"
#include "moert/Trace.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <memory>

namespace moert {

float randomWeightValue(uint64_t seed, const std::string &name, plan::Init init, float std,
                        uint64_t i) {
  switch (init) {
  case plan::Init::Ones:
    return 1.0f;
  case plan::Init::Zeros:
    return 0.0f;
  default:
    return irwinValue(tensorKey(seed, name), irwinScale(std), i);
  }
}

void Backend::fillNormal(uint64_t key, float scale, uint64_t b, uint64_t e, float *f32,
                         uint16_t *bf16) {
  for (uint64_t i = b; i < e; ++i) {
    float v = irwinValue(key, scale, i);
    if (f32)
      f32[i - b] = v;
    else
      bf16[i - b] = f32ToBf16(v);
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

WeightStore::~WeightStore() = default;

/// Checks a checkpoint tensor's dtype against what the plan records.
static void checkDtype(const TensorInfo &t, const std::string &name, DType want) {
  if (!t.dtype || *t.dtype != want)
    fail("{}: tensor '{}' is {} (expected {} as the plan records)", t.file, name, t.dtypeName,
         dtypeName(want));
}

/// Reads elements [b, e) of a tensor laid out contiguously at `data`.
static std::function<void(void *, uint64_t, uint64_t)> contiguousRead(const WeightInfo &w,
                                                                      const void *data) {
  return [&w, data](void *dst, uint64_t b, uint64_t e) {
    if (w.dtype == w.storedDtype) {
      std::memcpy(dst, static_cast<const uint8_t *>(data) + b * dtypeSize(w.dtype),
                  (e - b) * dtypeSize(w.dtype));
      return;
    }
    for (uint64_t k = b; k < e; ++k)
      storeFromF32(dst, w.dtype, k - b, loadAsF32(data, w.storedDtype, k));
  };
}

/// A source that maps `data` in place when it needs no conversion and its
/// mapped bytes are aligned for its dtype; safetensors does not promise
/// alignment (a header length that is not a multiple of 8 shifts every
/// tensor), so an unaligned tensor is copied instead.
static WeightSource contiguousSource(const WeightInfo &w, const void *data) {
  WeightSource s;
  s.info = &w;
  if (w.dtype == w.storedDtype && reinterpret_cast<uintptr_t>(data) % dtypeSize(w.dtype) == 0)
    s.mapped = data;
  s.read = contiguousRead(w, data);
  return s;
}

/// The checkpoint's dtype and shape of a quantized weight's values and of
/// its scales, for `lead` matrices of [N, K] (lead empty: one matrix): FP8
/// F8_E4M3 [N, K] with F32 [ceil(N / bn), ceil(K / bk)]; MXFP4 U8
/// [N, K / 32, 16] with U8 e8m0 [N, K / 32].
struct QuantTensors {
  const char *dtype, *scaleDtype;
  std::vector<int64_t> shape, scaleShape;
};
static QuantTensors quantTensors(const WeightInfo &w, std::vector<int64_t> lead, int64_t N) {
  const int64_t K = w.shape.back();
  QuantTensors q;
  q.shape = q.scaleShape = std::move(lead);
  if (w.format == plan::WeightFormat::MXFP4) {
    q.dtype = q.scaleDtype = "U8";
    q.shape.insert(q.shape.end(), {N, K / 32, 16});
    q.scaleShape.insert(q.scaleShape.end(), {N, K / 32});
  } else {
    q.dtype = "F8_E4M3";
    q.scaleDtype = "F32";
    q.shape.insert(q.shape.end(), {N, K});
    q.scaleShape.insert(q.scaleShape.end(), {int64_t(w.scaleRows()), int64_t(w.scaleRowBytes() / 4)});
  }
  return q;
}

/// The values tensor `values` and scale tensor of quantized weight `w`,
/// checked against `q`.
static std::pair<const TensorInfo *, const TensorInfo *>
findQuantTensors(const Checkpoint &ckpt, const PlanFile &plan, const WeightInfo &w,
                 const std::string &values, const QuantTensors &q) {
  const TensorInfo *t = ckpt.find(values);
  if (!t)
    fail("{}: tensor '{}' is missing (expected it for plan {})", ckpt.source(), values,
         plan.path());
  if (t->dtypeName != q.dtype || t->shape != q.shape)
    fail("{}: tensor '{}' is {} [{}] (expected {} [{}] as the plan records)", t->file, values,
         t->dtypeName, fmt::join(t->shape, ", "), q.dtype, fmt::join(q.shape, ", "));
  const TensorInfo *s = ckpt.find(w.scaleTensor);
  if (!s)
    fail("{}: tensor '{}' is missing (expected the block scales of '{}' for plan {})",
         ckpt.source(), w.scaleTensor, values, plan.path());
  if (s->dtypeName != q.scaleDtype || s->shape != q.scaleShape)
    fail("{}: tensor '{}' is {} [{}] (expected {} [{}]: the [{}, {}] blocks' scales of '{}')",
         s->file, w.scaleTensor, s->dtypeName, fmt::join(s->shape, ", "), q.scaleDtype,
         fmt::join(q.scaleShape, ", "), w.blockRows, w.blockCols, values);
  return {t, s};
}

/// A quantized weight [N, K] as its checkpoint stores it: the values tensor
/// `name` and its scale tensor (quantTensors), both mapped in place.
static WeightSource quantSource(const Checkpoint &ckpt, const PlanFile &plan,
                                const WeightInfo &w) {
  auto [t, s] = findQuantTensors(ckpt, plan, w, w.name, quantTensors(w, {}, w.shape[0]));
  WeightSource src;
  src.info = &w;
  src.qdata = static_cast<const uint8_t *>(t->data);
  src.qdataPitch = w.quantRowBytes();
  src.qscales = static_cast<const uint8_t *>(s->data);
  src.qscalePitch = w.scaleRowBytes();
  return src;
}

/// Expert slice `w` of quantized experts stored fused (gpt-oss's MXFP4
/// `*_blocks` [E, A, K / 32, 16] with `*_scales` [E, A, K / 32]): row n is
/// row offset + n * stride of block e in both, read in place by pitch.
static WeightSource fusedQuantSource(const Checkpoint &ckpt, const PlanFile &plan,
                                     const WeightInfo &w, const WeightInfo &parent,
                                     const std::string &values) {
  const TensorInfo *t = ckpt.find(values);
  if (!t)
    fail("{}: tensor '{}' is missing (expected it for the experts' weight '{}' of plan {})",
         ckpt.source(), values, parent.name, plan.path());
  const int64_t E = parent.shape[0], N = w.shape[0];
  const int64_t off = parent.sourceOffset, stride = parent.sourceStride;
  // A (rows per expert) from the tensor itself; the rest is checked below.
  const int64_t A = t->shape.size() >= 2 ? t->shape[1] : 0;
  if (A <= off + (N - 1) * stride)
    fail("{}: tensor '{}' has shape [{}] (expected [{}, A, ..] with A > {} for '{}': rows {} + "
         "n * {})",
         t->file, values, fmt::join(t->shape, ", "), E, off + (N - 1) * stride, parent.name, off,
         stride);
  auto [v, s] = findQuantTensors(ckpt, plan, w, values, quantTensors(w, {E}, A));
  const uint64_t e = uint64_t(w.expert);
  const uint64_t first = e * uint64_t(A) + uint64_t(off);
  WeightSource src;
  src.info = &w;
  src.qdata = static_cast<const uint8_t *>(v->data) + first * w.quantRowBytes();
  src.qdataPitch = uint64_t(stride) * w.quantRowBytes();
  src.qscales = static_cast<const uint8_t *>(s->data) + first * w.scaleRowBytes();
  src.qscalePitch = uint64_t(stride) * w.scaleRowBytes();
  return src;
}

WeightSource WeightStore::tensorSource(const Checkpoint &ckpt, const PlanFile &plan,
                                       const WeightInfo &w) {
  if (w.format != plan::WeightFormat::Plain)
    return quantSource(ckpt, plan, w);
  const TensorInfo *t = ckpt.find(w.name);
  if (!t)
    fail("{}: tensor '{}' is missing (expected it for plan {})", ckpt.source(), w.name,
         plan.path());
  if (t->shape != w.shape)
    fail("{}: tensor '{}' has shape [{}] (expected [{}])", t->file, w.name,
         fmt::join(t->shape, ", "), fmt::join(w.shape, ", "));
  checkDtype(*t, w.name, w.storedDtype);
  return contiguousSource(w, t->data);
}

WeightSource WeightStore::expertSliceSource(const PlanFile &plan, const Checkpoint &ckpt,
                                            const WeightInfo &w) {
  const WeightInfo &parent = plan.weights()[size_t(w.stacked)];
  const std::string &src = parent.sourceTensor.empty() ? parent.name : parent.sourceTensor;
  // Per-expert tensors: each slice is a checkpoint tensor of its own.
  if (src.find("{e}") != std::string::npos)
    return tensorSource(ckpt, plan, w);
  if (w.format != plan::WeightFormat::Plain)
    return fusedQuantSource(ckpt, plan, w, parent, src);
  const TensorInfo *t = ckpt.find(src);
  if (!t)
    fail("{}: tensor '{}' is missing (expected it for the experts' weight '{}' of plan {})",
         ckpt.source(), src, parent.name, plan.path());
  checkDtype(*t, src, w.storedDtype);
  // Without a source the tensor is the stacked weight itself.
  if (parent.sourceTensor.empty() && t->shape != parent.shape)
    fail("{}: tensor '{}' has shape [{}] (expected [{}])", t->file, src,
         fmt::join(t->shape, ", "), fmt::join(parent.shape, ", "));
  // The source is [E, A, K] (transposed: [E, K, A]) or, for vectors, [E, A];
  // slice e's row n is row (column) offset + n * stride of block e.
  const int64_t E = parent.shape[0], N = w.shape[0];
  const int64_t K = w.shape.size() == 2 ? w.shape[1] : 1;
  const bool tr = parent.sourceTransposed;
  const int64_t off = parent.sourceOffset, stride = parent.sourceStride;
  const int64_t A = t->shape.size() == parent.shape.size() ? t->shape[tr ? 2 : 1] : 0;
  bool ok = t->shape.size() == parent.shape.size() && t->shape[0] == E &&
            (w.shape.size() == 1 || t->shape[tr ? 1 : 2] == K) &&
            off + (N - 1) * stride < A;
  if (!ok)
    fail("{}: tensor '{}' has shape [{}] (expected [{}, A, {}] with A > {} for '{}': rows "
         "{} + n * {}{})",
         t->file, src, fmt::join(t->shape, ", "), E, K, off + (N - 1) * stride, parent.name,
         off, stride, tr ? ", transposed" : "");
  const uint64_t block = uint64_t(A) * uint64_t(K), e = uint64_t(w.expert);
  const size_t es = dtypeSize(w.storedDtype);
  const uint8_t *base = static_cast<const uint8_t *>(t->data);
  if (!tr && stride == 1) {
    // Contiguous rows of the expert's block: mapped like a tensor of its own.
    return contiguousSource(w, base + (e * block + uint64_t(off) * uint64_t(K)) * es);
  }
  // Strided or transposed (gpt-oss's interleaved [E, H, 2I]): gathered once
  // into the backend's layout at load.
  WeightSource s;
  s.info = &w;
  s.read = [&w, base, block, e, A, K, off, stride, tr](void *dst, uint64_t b, uint64_t end) {
    for (uint64_t k = b; k < end; ++k) {
      uint64_t n = k / uint64_t(K), c = k % uint64_t(K);
      uint64_t row = uint64_t(off) + n * uint64_t(stride);
      uint64_t at = e * block + (tr ? c * uint64_t(A) + row : row * uint64_t(K) + c);
      storeFromF32(dst, w.dtype, k - b, loadAsF32(base, w.storedDtype, at));
    }
  };
  return s;
}

/// A part of a sliced expert's slice (WeightInfo::partOf): rows map like the
/// whole slice, shifted; columns are gathered row by row at load.
static WeightSource partSource(const WeightInfo &part, const WeightInfo &whole,
                               WeightSource src) {
  WeightSource s;
  s.info = &part;
  if (whole.format != plan::WeightFormat::Plain) {
    // Whole blocks (PlanFile checks): rows or columns of values and scales.
    s.qdataPitch = src.qdataPitch;
    s.qscalePitch = src.qscalePitch;
    const uint64_t off = uint64_t(part.partOffset);
    if (part.partAxis == 0) {
      s.qdata = src.qdata + off * src.qdataPitch;
      s.qscales = src.qscales + off / uint64_t(whole.blockRows) * src.qscalePitch;
    } else {
      s.qdata = src.qdata + off * whole.quantRowBytes() / uint64_t(whole.shape[1]);
      const uint64_t scaleSize = whole.format == plan::WeightFormat::MXFP4 ? 1 : 4;
      s.qscales = src.qscales + off / uint64_t(whole.blockCols) * scaleSize;
    }
    return s;
  }
  const size_t es = dtypeSize(part.dtype);
  uint64_t K = 1;
  for (size_t d = 1; d < whole.shape.size(); ++d)
    K *= uint64_t(whole.shape[d]);
  auto read = std::make_shared<std::function<void(void *, uint64_t, uint64_t)>>(
      std::move(src.read));
  if (part.partAxis == 0) {
    const uint64_t off = uint64_t(part.partOffset) * K;
    if (src.mapped)
      s.mapped = static_cast<const uint8_t *>(src.mapped) + off * dtypeSize(whole.storedDtype);
    s.read = [read, off](void *dst, uint64_t b, uint64_t e) { (*read)(dst, b + off, e + off); };
    return s;
  }
  const uint64_t Kp = uint64_t(part.shape[1]), c0 = uint64_t(part.partOffset);
  s.read = [read, K, Kp, c0, es](void *dst, uint64_t b, uint64_t e) {
    for (uint64_t k = b; k < e;) {
      uint64_t row = k / Kp, col = k % Kp, n = std::min(e - k, Kp - col);
      (*read)(static_cast<uint8_t *>(dst) + (k - b) * es, row * K + c0 + col,
              row * K + c0 + col + n);
      k += n;
    }
  };
  return s;
}

/// Bytes of weights per start-up upload batch: large enough for one huge-page
/// mapping each and a parallel fill, small enough that a batch's gathered
/// checkpoint pages are a small part of the peak. MOERT_UPLOAD_BATCH_BYTES
/// overrides it (tests load tiny models in many batches with it).
static uint64_t uploadBatchBytes() {
  static const uint64_t bytes = [] {
    const char *e = std::getenv("MOERT_UPLOAD_BATCH_BYTES");
    char *end = nullptr;
    unsigned long long v = e ? std::strtoull(e, &end, 10) : 0;
    return e && *e && end && !*end && v > 0 ? uint64_t(v) : uint64_t(256) << 20;
  }();
  return bytes;
}

void WeightStore::bind(const std::vector<int> &ranks, std::vector<WeightSource> srcs,
                       const ProgressFn &progress, const std::function<void(size_t)> &loaded) {
  const PlanFile &plan = *plan_;
  const auto &infos = plan.weights();
  budget_ = plan.plan().memory_budget();
  views_.resize(infos.size());
  streamed_.resize(infos.size());
  std::vector<bool> used = weightsUsedBy(plan, ranks);
  std::vector<WeightSource> upfront;
  std::vector<Layout> layouts;
  std::vector<size_t> upfrontIdx;
  for (size_t i = 0; i < infos.size(); ++i) {
    if (!used[i])
      continue;
    // Decided over all ranks, so every rank's store (and a weight shared by
    // in-process ranks) agrees.
    bool anyUse = false, other = false;
    for (int r = 0; r < plan.numRanks(); ++r) {
      anyUse = anyUse || plan.rankInfo(r).usesWeight[i];
      other = other || plan.rankInfo(r).otherUse[i] || plan.rankInfo(r).rowsUse[i];
    }
    Layout layout = backend_->chooseLayout(infos[i], anyUse && !other);
    DeviceWeight &v = views_[i];
    v.dtype = infos[i].dtype;
    v.layout = layout;
    v.bytes = backend_->layoutBytes(infos[i], layout);
    boundBytes_ += v.bytes;
    if (infos[i].streamed) {
      streamed_[i] = std::make_unique<Streamed>();
      streamed_[i]->src = std::move(srcs[i]);
      continue;
    }
    fixedBytes_ += v.bytes;
    upfront.push_back(std::move(srcs[i]));
    layouts.push_back(layout);
    upfrontIdx.push_back(i);
  }
  // In batches, so that a checkpoint's pages gathered into backend memory
  // can be dropped as the load goes (`loaded`), not all at the end: gpt-oss
  // in bf16 gathers its transposed experts, and held their mapped pages
  // beside the copy until then (peak RSS twice the weights).
  uint64_t total = 0, done = 0;
  for (size_t i : upfrontIdx)
    total += views_[i].bytes;
  for (size_t b = 0; b < upfront.size();) {
    size_t e = b;
    uint64_t bytes = 0;
    while (e < upfront.size() && (e == b || bytes < uploadBatchBytes()))
      bytes += views_[upfrontIdx[e++]].bytes;
    ProgressFn batchProgress;
    if (progress)
      batchProgress = [&](uint64_t d, uint64_t w) {
        progress(done + (w ? uint64_t(double(d) / double(w) * double(bytes)) : 0), total);
      };
    UploadResult up = backend_->upload(std::span(upfront).subspan(b, e - b),
                                       std::span(layouts).subspan(b, e - b), batchProgress);
    for (size_t k = b; k < e; ++k) {
      views_[upfrontIdx[k]] = up.weights[k - b];
      if (!up.weights[k - b].mapped)
        ownedBytes_ += up.weights[k - b].bytes;
    }
    if (up.memory)
      fixedMemory_.push_back(std::move(up.memory));
    done += bytes;
    b = e;
    if (loaded)
      loaded(e < upfront.size() ? upfrontIdx[e] : infos.size());
  }
  if (progress)
    progress(total, total);
  notePeak();
}

std::unique_ptr<WeightStore> WeightStore::fromCheckpoint(const PlanFile &plan,
                                                         std::shared_ptr<Checkpoint> ckpt,
                                                         const std::vector<int> &ranks,
                                                         Backend &backend,
                                                         const ProgressFn &progress) {
  std::unique_ptr<WeightStore> ws(new WeightStore(plan, backend));
  ws->ckpt_ = ckpt;
  const auto &infos = plan.weights();
  std::vector<bool> used = weightsUsedBy(plan, ranks);
  std::vector<WeightSource> srcs(infos.size());
  for (size_t i = 0; i < infos.size(); ++i) {
    if (!used[i])
      continue;
    const WeightInfo &w = infos[i];
    // A part of a sliced expert reads from its expert's slice.
    const WeightInfo &src = w.partOf >= 0 ? infos[size_t(w.partOf)] : w;
    srcs[i] =
        src.stacked >= 0 ? expertSliceSource(plan, *ckpt, src) : tensorSource(*ckpt, plan, src);
    if (w.partOf >= 0)
      srcs[i] = partSource(w, src, std::move(srcs[i]));
  }
  // Each gathered tensor's pages go as soon as the upload has passed its
  // last use, batch by batch.
  auto gathered = gatheredSources(plan, *ckpt, used);
  size_t next = 0;
  ws->bind(ranks, std::move(srcs), progress, [&](size_t loaded) {
    for (; next < gathered.size() && gathered[next].first <= loaded; ++next)
      dropPages(*gathered[next].second);
  });
  return ws;
}

/// Fused expert tensors read by strides or transposed (gpt-oss's gate_up
/// and down, bf16 or MXFP4 with its scales) are gathered into the
/// backend's memory at load; their mapped pages would stay resident beside
/// the copy (twice the weights in RSS). Such tensors, each with the plan
/// weight index past its last used slice, in that order: once the upload
/// has passed it, no weight uses the tensor in place and its pages can go
/// (a later read, a streamed slice, faults them in again from the file).
std::vector<std::pair<size_t, const TensorInfo *>>
WeightStore::gatheredSources(const PlanFile &plan, const Checkpoint &ckpt,
                             const std::vector<bool> &used) {
  const auto &infos = plan.weights();
  struct Use {
    bool gathered = true; // every use gathers it
    size_t end = 0;       // past its last used slice
  };
  std::map<std::string, Use> uses;
  for (size_t i = 0; i < plan.numPlanWeights(); ++i) {
    const WeightInfo &w = infos[i];
    if (w.slices.empty() || w.sourceTensor.empty() ||
        w.sourceTensor.find("{e}") != std::string::npos)
      continue;
    bool anyUsed = false;
    size_t end = 0;
    for (int32_t s : w.slices)
      if (used[size_t(s)]) {
        anyUsed = true;
        end = std::max(end, size_t(s) + 1);
      }
    bool strided = w.sourceTransposed || w.sourceStride != 1;
    for (const std::string &t : {w.sourceTensor, w.scaleTensor}) {
      if (t.empty())
        continue;
      Use &u = uses[t];
      u.gathered = u.gathered && strided && anyUsed && !w.streamed;
      u.end = std::max(u.end, end);
    }
  }
  std::vector<std::pair<size_t, const TensorInfo *>> out;
  for (const auto &[name, u] : uses)
    if (const TensorInfo *t = u.gathered ? ckpt.find(name) : nullptr; t && t->data)
      out.push_back({u.end, t});
  std::sort(out.begin(), out.end(),
            [](const auto &a, const auto &b) { return a.first < b.first; });
  return out;
}

void WeightStore::dropPages(const TensorInfo &t) {
  const uintptr_t page = 4096, p = reinterpret_cast<uintptr_t>(t.data);
  uintptr_t b = (p + page - 1) & ~(page - 1), e = (p + t.bytes) & ~(page - 1);
  if (e > b)
    ::madvise(reinterpret_cast<void *>(b), e - b, MADV_DONTNEED);
}

std::unique_ptr<WeightStore> WeightStore::random(const PlanFile &plan, uint64_t seed,
                                                 const std::vector<int> &ranks, Backend &backend,
                                                 const ProgressFn &progress) {
  std::unique_ptr<WeightStore> ws(new WeightStore(plan, backend));
  ws->seed_ = seed;
  const auto &infos = plan.weights();
  std::vector<bool> used = weightsUsedBy(plan, ranks);
  std::vector<WeightSource> srcs(infos.size());
  Backend *be = &backend;
  for (size_t i = 0; i < infos.size(); ++i) {
    if (!used[i])
      continue;
    // A part of a sliced expert is generated as its part of the expert's
    // slice, so slicing does not change the values.
    const WeightInfo &w = infos[i].partOf >= 0 ? infos[size_t(infos[i].partOf)] : infos[i];
    if (w.format != plan::WeightFormat::Plain)
      fail("{}: weight '{}' is quantized (expected a checkpoint: --random-weights fills only "
           "plain weights)",
           plan.path(), w.name);
    srcs[i].info = &w;
    // A slice of per-expert tensors is generated as that tensor; one of a
    // fused weight as its block of the whole stacked tensor.
    uint64_t key = tensorKey(seed, w.name), shift = 0;
    if (w.stacked >= 0 && w.sourceTensor.find("{e}") == std::string::npos) {
      key = tensorKey(seed, infos[size_t(w.stacked)].name);
      shift = uint64_t(w.expert) * w.numel;
    }
    srcs[i].read = [&w, key, shift, be](void *dst, uint64_t b0, uint64_t e0) {
      uint64_t b = b0 + shift, e = e0 + shift;
      if (w.init != plan::Init::Normal) {
        float v = w.init == plan::Init::Ones ? 1.0f : 0.0f;
        for (uint64_t k = b; k < e; ++k)
          storeFromF32(dst, w.dtype, k - b, v);
        return;
      }
      float sc = irwinScale(w.initStd);
      if (w.dtype == DType::F32 || w.dtype == DType::BF16) {
        be->fillNormal(key, sc, b, e, w.dtype == DType::F32 ? static_cast<float *>(dst) : nullptr,
                       w.dtype == DType::BF16 ? static_cast<uint16_t *>(dst) : nullptr);
        return;
      }
      for (uint64_t k = b; k < e; ++k)
        storeFromF32(dst, w.dtype, k - b, irwinValue(key, sc, k));
    };
    if (infos[i].partOf >= 0)
      srcs[i] = partSource(infos[i], w, std::move(srcs[i]));
  }
  ws->bind(ranks, std::move(srcs), progress);
  return ws;
}

size_t WeightStore::packedCount() const {
  return size_t(std::count_if(views_.begin(), views_.end(), [](const DeviceWeight &v) {
    return v.data && v.layout == Layout::Packed16;
  }));
}

std::vector<std::span<const uint8_t>> WeightStore::regions() const {
  std::vector<std::span<const uint8_t>> r;
  for (size_t i = 0; i < views_.size(); ++i)
    if (views_[i].data && isResident(int32_t(i))) {
      const DeviceWeight &v = views_[i];
      r.emplace_back(static_cast<const uint8_t *>(v.data), v.bytes - v.scaleBytes);
      if (v.scales)
        r.emplace_back(static_cast<const uint8_t *>(v.scales), v.scaleBytes);
    }
  return r;
}

void WeightStore::notePeak() {
  uint64_t total = residentBytes() + uint64_t(std::max<int64_t>(0, buffers_.load()));
  uint64_t peak = totalPeak_.load();
  while (total > peak && !totalPeak_.compare_exchange_weak(peak, total)) {
  }
}

void WeightStore::reserveBuffers(int64_t bytes) {
  buffers_.fetch_add(bytes);
  notePeak();
}

void WeightStore::setSchedule(uint32_t steps, std::vector<std::vector<uint32_t>> uses) {
  std::lock_guard<std::mutex> lock(mutex_);
  steps_ = steps;
  uses_ = std::move(uses);
}

uint64_t WeightStore::nextUse(size_t i) const {
  if (i >= uses_.size() || uses_[i].empty() || steps_ == 0)
    return uint64_t(steps_) + 1;
  uint32_t c = cursor_.load(std::memory_order_relaxed);
  uint64_t best = uint64_t(steps_) + 1;
  for (uint32_t u : uses_[i])
    best = std::min<uint64_t>(best, (uint64_t(u) + steps_ - c % steps_) % steps_);
  return best;
}

void WeightStore::makeRoom(uint64_t need) {
  if (budget_ == 0)
    return;
  auto over = [&] {
    return residentBytes() + uint64_t(std::max<int64_t>(0, buffers_.load())) + need > budget_;
  };
  while (over()) {
    // The weight needed farthest ahead, least recently used among equals.
    size_t victim = SIZE_MAX;
    uint64_t victimNext = 0;
    for (size_t i = 0; i < streamed_.size(); ++i) {
      Streamed *s = streamed_[i].get();
      if (!s || !s->resident.load() || s->pins > 0)
        continue;
      uint64_t next = nextUse(i);
      if (victim == SIZE_MAX || next > victimNext ||
          (next == victimNext && s->lastUse < streamed_[victim]->lastUse)) {
        victim = i;
        victimNext = next;
      }
    }
    if (victim == SIZE_MAX)
      return; // everything left is in use: the step needs it
    evictLocked(victim);
  }
}

void WeightStore::load(int32_t idx) {
  Streamed *s = streamed_[size_t(idx)].get();
  if (!s)
    return;
  std::unique_lock<std::mutex> lock(mutex_);
  s->lastUse = ++tick_;
  // Another stream may be fetching it already: wait for that upload.
  loaded_.wait(lock, [&] { return !s->loading; });
  if (s->resident.load())
    return;
  DeviceWeight &v = views_[size_t(idx)];
  int64_t t0 = nowNs(); // a fetch includes making room for it
  makeRoom(v.bytes);
  // Counted as resident from now on, so concurrent fetches keep the budget;
  // the upload itself runs unlocked, beside the other stream's.
  s->loading = true;
  uint64_t now = streamedResident_.fetch_add(v.bytes) + v.bytes;
  uint64_t peak = streamedPeak_.load();
  while (now > peak && !streamedPeak_.compare_exchange_weak(peak, now)) {
  }
  ++s->pins;
  Layout layout = v.layout;
  lock.unlock();
  UploadResult up;
  try {
    up = backend_->upload({&s->src, 1}, {&layout, 1}, {});
    if (up.weights[0].mapped)
      backend_->touch(up.weights[0]);
  } catch (...) {
    lock.lock();
    streamedResident_.fetch_sub(v.bytes);
    --s->pins;
    s->loading = false;
    loaded_.notify_all();
    throw;
  }
  lock.lock();
  v = up.weights[0];
  s->memory = std::move(up.memory);
  --s->pins;
  s->loading = false;
  loads_.fetch_add(1);
  fetchNs_.fetch_add(nowNs() - t0);
  s->resident.store(true, std::memory_order_release);
  loaded_.notify_all();
  notePeak();
}

void WeightStore::evictLocked(size_t idx) {
  Streamed &s = *streamed_[idx];
  if (!s.resident.load())
    return;
  DeviceWeight &v = views_[idx];
  s.resident.store(false, std::memory_order_release);
  backend_->evict(v, s.memory);
  if (!v.mapped)
    v.data = nullptr;
  streamedResident_.fetch_sub(v.bytes);
  evictions_.fetch_add(1);
}

void WeightStore::evict(int32_t idx) {
  if (!streamed_[size_t(idx)])
    return;
  std::lock_guard<std::mutex> lock(mutex_);
  if (streamed_[size_t(idx)]->pins == 0 && !streamed_[size_t(idx)]->loading)
    evictLocked(size_t(idx));
}

void WeightStore::pin(std::span<const int32_t> idx) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (int32_t i : idx)
    if (Streamed *s = streamed_[size_t(i)].get()) {
      ++s->pins;
      s->lastUse = ++tick_;
    }
}

bool WeightStore::fits(uint64_t bytes) {
  if (budget_ == 0)
    return true;
  std::lock_guard<std::mutex> lock(mutex_);
  uint64_t kept = fixedBytes_ + uint64_t(std::max<int64_t>(0, buffers_.load()));
  for (size_t i = 0; i < streamed_.size(); ++i)
    if (streamed_[i] && (streamed_[i]->resident.load() || streamed_[i]->loading) &&
        streamed_[i]->pins > 0)
      kept += views_[i].bytes;
  return kept + bytes <= budget_;
}

void WeightStore::trim() {
  std::lock_guard<std::mutex> lock(mutex_);
  makeRoom(0);
}

void WeightStore::unpin(std::span<const int32_t> idx) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (int32_t i : idx)
    if (Streamed *s = streamed_[size_t(i)].get())
      --s->pins;
}

} // namespace moert
