//===- PlanReader.cpp - Plan loading and semantic validation --------------===//
#include "moert/Plan.h"
#include "moert/Version.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <set>
#include <unordered_map>

namespace moert {

// Sanity bounds: a value beyond these is a corrupt plan, not a big model.
static constexpr int64_t kMaxTokens = int64_t(1) << 20;
static constexpr int64_t kMaxSeqLen = int64_t(1) << 24;
static constexpr int64_t kMaxRanks = 1 << 16;
static constexpr int64_t kMaxBatch = 1 << 16;
static constexpr int64_t kMaxPageTable = int64_t(1) << 24;
// Experts of one layer, and expert slices of all stacked weights together:
// far above real models (Switch-C: 2048 experts; 15 MoE layers x 3 stacked
// projections = 92k slices), low enough that slicing a hostile plan's
// weights stays fast (each slice is a WeightInfo with its own name).
static constexpr int64_t kMaxExperts = 1 << 16;
static constexpr int64_t kMaxExpertSlices = 1 << 18;
static constexpr uint64_t kMaxArenaBytes = uint64_t(1) << 40;
static constexpr int64_t kMaxDim = int64_t(1) << 40;

/// FlatBuffers' verifier checks a vector's length word (4-byte aligned), not
/// that 8-byte elements are 8-byte aligned; a hand-made plan can misalign them
/// and reading them would then be undefined behaviour. (Empty vectors are not
/// aligned by the builder and have nothing to read.)
template <typename T> static bool elementsAligned(const flatbuffers::Vector<T> *v) {
  return !v || v->size() == 0 || reinterpret_cast<uintptr_t>(v->Data()) % alignof(T) == 0;
}

const char *opName(plan::Op op) {
  const char *n = plan::EnumNameOp(op);
  return n && *n ? n : "unknown";
}

std::array<int32_t, kExpertRoles> expertRoles(const plan::Experts &op) {
  return {op.gate(), op.up(), op.down(), op.up_bias(), op.down_bias(), op.gate_bias()};
}

std::array<int32_t, kExpertRoles> expertWeights(const std::vector<WeightInfo> &weights,
                                                const plan::Experts &op,
                                                const plan::LocalExpert &e) {
  std::array<int32_t, kExpertRoles> r;
  std::array<int32_t, kExpertRoles> roles = expertRoles(op);
  for (size_t k = 0; k < kExpertRoles; ++k) {
    if (roles[k] < 0) {
      r[k] = -1;
      continue;
    }
    int32_t slice = weights[size_t(roles[k])].slices[size_t(e.expert())];
    const std::vector<int32_t> &parts = weights[size_t(slice)].parts;
    if (op.expert_slices() > 1 && k == 4) // the down bias: part 0 adds it
      r[k] = e.slice() == 0 ? slice : -1;
    else
      r[k] = parts.empty() ? slice : parts[size_t(e.slice())];
  }
  return r;
}

bool WeightInfo::usedBy(int rank) const {
  return ranks.empty() || std::find(ranks.begin(), ranks.end(), rank) != ranks.end();
}

int64_t PlanFile::kvPageSize() const {
  return root_->kv_page_size() > 0 ? root_->kv_page_size() : root_->max_seq_len();
}

int64_t PlanFile::kvPages() const {
  return root_->kv_pages() > 0 ? root_->kv_pages() : int64_t(root_->max_batch());
}

int64_t PlanFile::maxPositions() const {
  int64_t m = root_->max_seq_len();
  int64_t p = root_->model()->max_position_embeddings();
  return p > 0 ? std::min(m, p) : m;
}

PlanFile PlanFile::load(const std::string &path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in)
    fail("{}: cannot open plan file (expected a readable .plan file)", path);
  std::streamoff size = in.tellg();
  if (size < 0)
    fail("{}: cannot read plan file", path);
  if (size > (std::streamoff(1) << 31))
    fail("{}: plan file is {} bytes (expected at most 2 GiB)", path, int64_t(size));
  std::vector<uint8_t> bytes(static_cast<size_t>(size));
  in.seekg(0);
  if (size > 0 && !in.read(reinterpret_cast<char *>(bytes.data()), size))
    fail("{}: cannot read plan file", path);
  return fromBytes(std::move(bytes), path);
}

PlanFile PlanFile::fromBytes(std::vector<uint8_t> bytes, std::string name) {
  PlanFile pf;
  pf.bytes_ = std::move(bytes);
  pf.path_ = std::move(name);
  const uint8_t *buf = pf.bytes_.data();
  size_t len = pf.bytes_.size();
  const std::string &p = pf.path_;
  if (len < 8 || !plan::PlanBufferHasIdentifier(buf))
    fail("{}: not a moe plan (expected file identifier \"{}\")", p, plan::PlanIdentifier());

  // Read the version from a minimally verified root table first, so a plan of
  // another format version is reported as such rather than as corrupt.
  {
    flatbuffers::Verifier v(buf, len);
    auto *t = flatbuffers::GetRoot<flatbuffers::Table>(buf);
    if (!v.VerifyOffset(0) || !t->VerifyTableStart(v) ||
        !t->VerifyField<uint32_t>(v, plan::Plan::VT_VERSION_MAJOR, 4) ||
        !t->VerifyField<uint32_t>(v, plan::Plan::VT_VERSION_MINOR, 4))
      fail("{}: corrupt plan header (expected a FlatBuffers moe.plan.Plan)", p);
    uint32_t major = t->GetField<uint32_t>(plan::Plan::VT_VERSION_MAJOR, 0);
    uint32_t minor = t->GetField<uint32_t>(plan::Plan::VT_VERSION_MINOR, 0);
    if (major != kPlanVersionMajor || minor > kPlanVersionMinor)
      fail("{}: plan format {}.{} is not supported (expected {}.x with x <= {})", p, major,
           minor, kPlanVersionMajor, kPlanVersionMinor);
  }
  flatbuffers::Verifier verifier(buf, len);
  if (!plan::VerifyPlanBuffer(verifier))
    fail("{}: corrupt plan (FlatBuffers verification failed)", p);
  pf.root_ = plan::GetPlan(buf);
  pf.validate();
  return pf;
}

namespace {

/// Checks one rank's program; every message names the plan, rank and step.
class RankValidator {
public:
  RankValidator(const PlanFile &pf, const plan::Plan &root, const std::vector<WeightInfo> &weights,
                const plan::RankProgram &rp, int rank, RankInfo &info)
      : pf_(pf), root_(root), weights_(weights), rp_(rp), rank_(rank), info_(info) {
    maxT_ = root.max_tokens();
  }

  void run();

private:
  template <typename... Args>
  [[noreturn]] void err(fmt::format_string<Args...> f, Args &&...args) {
    std::string where = fmt::format("{}: rank {}", pf_.path(), rank_);
    if (step_ >= 0)
      where += fmt::format(" step {} ({} '{}')", step_, opName(opKind_), stepName_);
    throw Error(where + ": " + fmt::format(f, std::forward<Args>(args)...));
  }

  /// A step's group of ranks: ascending valid ranks that include this one.
  /// Returns this rank's index in it.
  int checkGroup(const flatbuffers::Vector<int32_t> *group, const char *what) {
    int prev = -1, index = -1;
    for (unsigned i = 0; i < group->size(); ++i) {
      int r = group->Get(i);
      if (r <= prev || r >= root_.num_ranks())
        err("group rank {} (expected ascending ranks in 0..{})", r, root_.num_ranks() - 1);
      if (r == rank_)
        index = int(i);
      prev = r;
    }
    if (index < 0)
      err("rank {} runs a {} of a group it is not in", rank_, what);
    return index;
  }

  const BufferInfo &buf(int32_t idx, const char *role, DType dt = DType::F32) {
    if (idx < 0 || size_t(idx) >= info_.buffers.size())
      err("{} buffer index {} out of range (expected 0..{})", role, idx,
          int64_t(info_.buffers.size()) - 1);
    const BufferInfo &b = info_.buffers[size_t(idx)];
    if (b.dtype != dt)
      err("{} buffer {} ('{}') has dtype {} (expected {})", role, idx, b.name, dtypeName(b.dtype),
          dtypeName(dt));
    return b;
  }
  const BufferInfo *optBuf(int32_t idx, const char *role, DType dt = DType::F32) {
    return idx == -1 ? nullptr : &buf(idx, role, dt);
  }

  /// `matrix`: the use is as W [N, K] of a product X W^T (Linear, Logits,
  /// Experts), which the runtime may store packed; any other use keeps the
  /// weight row-major.
  const WeightInfo &weight(int32_t idx, const char *role, size_t rank, bool matrix = false,
                           bool slice = false) {
    if (!slice) {
      checkIndex(idx, role);
      if (!weights_[size_t(idx)].slices.empty())
        err("{} weight '{}' is expert-stacked (expected a weight no Experts step reads)", role,
            weights_[size_t(idx)].name);
    }
    const WeightInfo &w = weights_[size_t(idx)];
    if (w.shape.size() != rank)
      err("{} weight '{}' has rank {} (expected rank {})", role, w.name, w.shape.size(), rank);
    if (!w.usedBy(rank_))
      err("{} weight '{}' is not loaded on rank {} (expected it in the weight's ranks)", role,
          w.name, rank_);
    info_.usesWeight[size_t(idx)] = true;
    if (step_ >= 0) {
      std::vector<int32_t> &mine = info_.stepWeights[size_t(step_)];
      if (std::find(mine.begin(), mine.end(), idx) == mine.end())
        mine.push_back(idx);
    }
    if (!matrix)
      info_.otherUse[size_t(idx)] = true;
    return w;
  }
  const WeightInfo *optWeight(int32_t idx, const char *role, size_t rank) {
    return idx == -1 ? nullptr : &weight(idx, role, rank);
  }
  void checkIndex(int32_t idx, const char *role) {
    if (idx < 0 || size_t(idx) >= pf_.numPlanWeights())
      err("{}{} index {} out of range (expected 0..{})", role,
          std::string_view(role) == "weight" ? "" : " weight", idx,
          int64_t(pf_.numPlanWeights()) - 1);
  }
  /// An expert-stacked weight of an Experts step: [E, dims...].
  const WeightInfo *stacked(int32_t idx, const char *role, int64_t numExperts,
                            std::initializer_list<int64_t> dims) {
    if (idx == -1)
      return nullptr;
    checkIndex(idx, role);
    const WeightInfo &w = weights_[size_t(idx)];
    std::vector<int64_t> want{numExperts};
    want.insert(want.end(), dims.begin(), dims.end());
    if (w.shape != want)
      err("{} weight '{}' has shape [{}] (expected [{}]: expert-stacked, {} experts)", role,
          w.name, fmt::join(w.shape, ", "), fmt::join(want, ", "), numExperts);
    return &w;
  }

  /// rows(b, T) >= perToken*T + fixed for every T in [1, max_tokens].
  void needRows(const BufferInfo &b, const char *role, int64_t perToken, int64_t fixed) {
    for (int64_t T : {int64_t(1), maxT_}) {
      // perToken may be a product of plan values (rows x group size).
      int64_t need;
      if (__builtin_mul_overflow(perToken, T, &need) ||
          __builtin_add_overflow(need, fixed, &need) || b.rows(T) < need)
        err("{} buffer '{}' has {} rows at T={} (expected at least {} x T + {})", role, b.name,
            b.rows(T), T, perToken, fixed);
    }
  }
  /// The buffer holds one row per token.
  void needTokenRows(const BufferInfo &b, const char *role) {
    if (b.rowsPerToken != 1 || b.fixedRows != 0)
      err("{} buffer '{}' has rows = T*{}+{} (expected one row per token)", role, b.name,
          b.rowsPerToken, b.fixedRows);
  }
  void needCols(const BufferInfo &b, const char *role, int64_t cols) {
    if (b.rowElems < cols)
      err("{} buffer '{}' has {} elements per row (expected at least {})", role, b.name, b.rowElems,
          cols);
  }
  /// rows(a, T) >= rows(b, T) for every T.
  void needRowsOf(const BufferInfo &a, const char *ra, const BufferInfo &b) {
    for (int64_t T : {int64_t(1), maxT_})
      if (a.rows(T) < b.rows(T))
        err("{} buffer '{}' has {} rows at T={} (expected at least {} like '{}')", ra, a.name,
            a.rows(T), T, b.rows(T), b.name);
  }
  /// Different buffers an op reads and writes must not share arena bytes.
  void needDisjoint(int32_t a, int32_t b) {
    if (a == b)
      err("buffers {} and {} are the same (expected distinct input and output)", a, b);
    needDisjointOrSame(a, b);
  }
  void needDisjointOrSame(int32_t a, int32_t b) {
    if (a == b)
      return;
    // Callers pass indices that buf() has checked, except where an op's
    // buffers are checked later; never index past the table.
    for (int32_t i : {a, b})
      if (i < 0 || size_t(i) >= info_.buffers.size())
        err("buffer index {} out of range (expected 0..{})", i,
            int64_t(info_.buffers.size()) - 1);
    const BufferInfo &x = info_.buffers[size_t(a)], &y = info_.buffers[size_t(b)];
    if (x.offset < y.offset + y.bytes && y.offset < x.offset + x.bytes)
      err("buffers '{}' and '{}' overlap in the arena (expected disjoint slots)", x.name, y.name);
  }
  void needPositive(int64_t v, const char *what) {
    if (v <= 0 || v > kMaxDim)
      err("{} is {} (expected a positive value)", what, v);
  }

  void validateBuffers();
  void validateCaches();
  void validateStep(const plan::Step &s);
  void validateExperts(const plan::Experts &op);
  void validateExchange(const plan::AllToAllV &op);

  const PlanFile &pf_;
  const plan::Plan &root_;
  const std::vector<WeightInfo> &weights_;
  const plan::RankProgram &rp_;
  int rank_;
  RankInfo &info_;
  int64_t maxT_;
  int step_ = -1;
  plan::Op opKind_ = plan::Op::NONE;
  std::string stepName_;
  // Gate outputs seen so far: expert_offsets buffer -> (num_experts, top_k).
  std::unordered_map<int32_t, std::pair<int, int>> gates_;
  // AllToAllV dispatches seen so far: recv_offsets buffer -> (out,
  // recv_sorted); and the counts buffers they wrote.
  std::unordered_map<int32_t, std::pair<int32_t, int32_t>> dispatches_;
  std::unordered_map<int32_t, std::pair<int32_t, int32_t>> exchangeCounts_; // -> (out, send_slots)
  std::unordered_map<int32_t, std::pair<int32_t, int32_t>> exchangeRelay_; // -> (relay, per node)
};

void RankValidator::validateBuffers() {
  uint64_t arena = rp_.arena_bytes();
  if (arena > kMaxArenaBytes)
    err("arena_bytes {} is too large (expected at most {})", arena, kMaxArenaBytes);
  if (!rp_.buffers())
    return;
  for (unsigned i = 0; i < rp_.buffers()->size(); ++i) {
    const plan::Buffer *b = rp_.buffers()->Get(i);
    BufferInfo bi;
    bi.name = b->name() ? b->name()->str() : fmt::format("#{}", i);
    bi.dtype = b->dtype();
    bi.rowElems = b->row_elems();
    bi.rowsPerToken = b->rows_per_token();
    bi.fixedRows = b->fixed_rows();
    bi.maxRows = b->max_rows();
    bi.offset = b->offset();
    if (bi.dtype != DType::F32 && bi.dtype != DType::I32)
      err("buffer {} ('{}') has dtype {} (expected F32 or I32)", i, bi.name, dtypeName(bi.dtype));
    if (bi.rowElems <= 0 || bi.rowElems > kMaxDim)
      err("buffer {} ('{}') has row_elems {} (expected a positive count)", i, bi.name, bi.rowElems);
    if (bi.rowsPerToken < 0 || bi.fixedRows < 0 || bi.rowsPerToken > kMaxDim ||
        bi.fixedRows > kMaxDim)
      err("buffer {} ('{}') has rows_per_token {} and fixed_rows {} (expected non-negative)", i,
          bi.name, bi.rowsPerToken, bi.fixedRows);
    int64_t need = bi.rows(maxT_);
    if (need <= 0)
      err("buffer {} ('{}') has no rows (expected rows_per_token or fixed_rows > 0)", i, bi.name);
    if (bi.maxRows < need)
      err("buffer {} ('{}') has max_rows {} (expected at least {} rows at max_tokens {})", i,
          bi.name, bi.maxRows, need, maxT_);
    uint64_t bytes, end;
    if (mulOverflows(uint64_t(bi.maxRows), uint64_t(bi.rowElems), bytes) ||
        mulOverflows(bytes, 4, bytes) || addOverflows(bi.offset, bytes, end) || end > arena)
      err("buffer {} ('{}') at offset {} with {} x {} elements exceeds arena_bytes {} (expected "
          "offset + size <= arena_bytes)",
          i, bi.name, bi.offset, bi.maxRows, bi.rowElems, arena);
    if (bi.offset % 64 != 0)
      err("buffer {} ('{}') has offset {} (expected a multiple of 64)", i, bi.name, bi.offset);
    bi.bytes = bytes;
    info_.buffers.push_back(std::move(bi));
  }
}

void RankValidator::validateCaches() {
  if (!rp_.kv_caches())
    return;
  uint64_t total = 0;
  for (unsigned i = 0; i < rp_.kv_caches()->size(); ++i) {
    const plan::KVCache *c = rp_.kv_caches()->Get(i);
    if (c->num_kv_heads() <= 0 || c->head_dim() <= 0 || c->head_dim() > (1 << 20) ||
        c->num_kv_heads() > (1 << 20))
      err("kv_caches[{}] has {} heads of dim {} (expected positive sizes)", i, c->num_kv_heads(),
          c->head_dim());
    if (c->v_head_dim() < 0 || c->v_head_dim() > (1 << 20))
      err("kv_caches[{}] has v_head_dim {} (expected 0..{})", i, c->v_head_dim(), 1 << 20);
    int64_t vDim = c->v_head_dim() ? c->v_head_dim() : c->head_dim();
    if (c->kv_lora_rank() != 0) {
      // An MLA latent cache: one row of [c_kv | k_pe] per position, no v.
      if (c->kv_lora_rank() < 0 || c->kv_lora_rank() >= c->head_dim() ||
          c->num_kv_heads() != 1 || c->v_head_dim() != 0)
        err("kv_caches[{}] has kv_lora_rank {} with {} heads of dim {} and v_head_dim {} "
            "(expected a latent cache: 1 head, 0 < kv_lora_rank < head_dim, v_head_dim 0)",
            i, c->kv_lora_rank(), c->num_kv_heads(), c->head_dim(), c->v_head_dim());
      vDim = 0;
    }
    if (!isFloatWeightType(c->dtype()))
      err("kv_caches[{}] has dtype {} (expected F32, BF16 or F16)", i, dtypeName(c->dtype()));
    uint64_t bytes;
    if (mulOverflows(uint64_t(c->num_kv_heads()) * uint64_t(c->head_dim() + vDim),
                     uint64_t(pf_.kvPoolPositions()) * dtypeSize(c->dtype()), bytes) ||
        addOverflows(total, bytes, total) || total > kMaxArenaBytes)
      err("kv_caches need more than {} bytes (expected a sane max_seq_len)", kMaxArenaBytes);
  }
}

void RankValidator::validateExperts(const plan::Experts &op) {
  const BufferInfo &in = buf(op.in(), "in");
  const BufferInfo &slots = buf(op.sorted_slots(), "sorted_slots", DType::I32);
  buf(op.expert_offsets(), "expert_offsets", DType::I32);
  const BufferInfo &out = buf(op.slot_out(), "slot_out");
  auto g = gates_.find(op.expert_offsets());
  if (g == gates_.end())
    err("expert_offsets buffer {} is not written by an earlier Gate step (expected Gate before "
        "Experts)",
        op.expert_offsets());
  auto [numExperts, topK] = g->second;
  if (op.top_k() != topK)
    err("top_k {} differs from the Gate's top_k {}", op.top_k(), topK);
  auto d = dispatches_.find(op.expert_offsets());
  if (op.received() != (d != dispatches_.end()))
    err("received={} with expert_offsets from {} (expected received exactly for the "
        "recv_offsets of an AllToAllV dispatch)",
        op.received(), d != dispatches_.end() ? "an AllToAllV dispatch" : "a Gate");
  int64_t maxSlots = maxT_ * topK;
  if (op.received()) {
    // The rows the dispatch received: in, sorted_slots and slot_out have as
    // many rows as its `out`.
    if (op.in() != d->second.first || op.sorted_slots() != d->second.second)
      err("in {} and sorted_slots {} (expected the dispatch's out {} and recv_sorted {})",
          op.in(), op.sorted_slots(), d->second.first, d->second.second);
    needRowsOf(out, "slot_out", in);
    maxSlots = in.rows(maxT_);
  } else {
    needTokenRows(in, "in");
    needRows(slots, "sorted_slots", topK, 0);
    needRows(out, "slot_out", topK, 0);
  }
  needDisjoint(op.in(), op.slot_out());
  int64_t I = op.intermediate();
  needPositive(I, "intermediate");
  if (op.gated() != (op.gate() != -1))
    err("gate weight {} (expected {} since gated={})", op.gate(),
        op.gated() ? "one" : "none (-1)", op.gated());
  // The stacked weights: gate/up [E, I, D], down [E, D, I], biases [E, I], [E, D].
  checkIndex(op.down(), "down");
  const std::vector<int64_t> &downShape = weights_[size_t(op.down())].shape;
  int64_t D = downShape.size() == 3 ? downShape[1] : -1;
  if (op.gate_bias() != -1 && !op.gated())
    err("gate_bias weight {} without a gate (expected -1 since gated=false)", op.gate_bias());
  if (int(op.act()) > int(plan::ActKind::MAX))
    err("unknown activation kind {}", int(op.act()));
  if (op.act() == plan::ActKind::SwigluOai) {
    if (!op.gated())
      err("activation SwigluOai needs gated experts");
    if (!std::isfinite(op.swiglu_limit()) || !(op.swiglu_limit() > 0.0f) ||
        !std::isfinite(op.swiglu_alpha()))
      err("SwigluOai with swiglu_limit {} and swiglu_alpha {} (expected a positive finite limit "
          "and a finite alpha)",
          op.swiglu_limit(), op.swiglu_alpha());
  }
  const WeightInfo *roles[kExpertRoles] = {
      stacked(op.gate(), "gate", numExperts, {I, D}),
      stacked(op.up(), "up", numExperts, {I, D}),
      stacked(op.down(), "down", numExperts, {D, I}),
      stacked(op.up_bias(), "up_bias", numExperts, {I}),
      stacked(op.down_bias(), "down_bias", numExperts, {D}),
      stacked(op.gate_bias(), "gate_bias", numExperts, {I})};
  static const char *roleNames[kExpertRoles] = {"gate",    "up",        "down",
                                                "up_bias", "down_bias", "gate_bias"};
  std::set<int> seen;
  for (unsigned i = 0; op.experts() && i < op.experts()->size(); ++i) {
    const plan::LocalExpert *e = op.experts()->Get(i);
    if (e->expert() < 0 || e->expert() >= numExperts)
      err("expert id {} out of range (expected 0..{})", e->expert(), numExperts - 1);
    if (!seen.insert(e->expert()).second)
      err("expert {} is listed twice (expected unique expert ids)", e->expert());
    if (e->num_replicas() < 1 || e->replica() < 0 || e->replica() >= e->num_replicas())
      err("expert {} is copy {} of {} (expected 0 <= replica < num_replicas)", e->expert(),
          e->replica(), e->num_replicas());
    if (e->slice() < 0 || e->slice() >= op.expert_slices() ||
        (op.expert_slices() > 1 && e->num_replicas() != 1))
      err("expert {} is part {} of {} with {} copies (expected 0 <= slice < expert_slices, "
          "and no copies of sliced experts)",
          e->expert(), e->slice(), op.expert_slices(), e->num_replicas());
    // This rank reads only its experts' slices (or parts).
    std::array<int32_t, kExpertRoles> mine = expertWeights(weights_, op, *e);
    for (size_t k = 0; k < kExpertRoles; ++k)
      if (roles[k] && mine[k] >= 0)
        weight(mine[k], roleNames[k], k < 3 ? 2 : 1, k < 3, /*slice=*/true);
  }
  needCols(in, "in", D);
  if (out.rowElems != D)
    err("slot_out buffer '{}' has {} elements per row (expected {} like the experts' output)",
        out.name, out.rowElems, D);
  // Scratch: gathered inputs [n, D] + hidden [n, 2I] for up to T*top_k slots.
  int64_t n = maxSlots, scratch;
  if (__builtin_mul_overflow(n, D + 2 * I, &scratch) || scratch > kMaxDim)
    err("expert scratch of {} slots x ({} + 2 x {}) floats is too large (expected at most {})", n,
        D, I, kMaxDim);
  info_.maxExpertScratch = std::max(info_.maxExpertScratch, scratch);
}

void RankValidator::validateExchange(const plan::AllToAllV &op) {
  const int N = root_.num_ranks();
  if (root_.data_parallel() <= 1)
    err("an AllToAllV step in a plan with data_parallel {} (expected data-parallel groups)",
        root_.data_parallel());
  if (op.group() && op.group()->size() > 0)
    err("group of {} ranks (expected all ranks: an empty group)", op.group()->size());
  const int E = op.num_experts(), k = op.top_k(), S = op.slices(), T = op.tensor_parallel();
  if (E <= 0 || E > kMaxExperts)
    err("num_experts {} (expected 1..{})", E, kMaxExperts);
  if (k <= 0 || k > E)
    err("top_k {} with {} experts (expected 1 <= top_k <= num_experts)", k, E);
  if (T < 1 || N % T != 0 || N / T != root_.data_parallel())
    err("tensor_parallel {} with {} ranks in {} data-parallel groups (expected num_ranks / "
        "data_parallel)",
        T, N, root_.data_parallel());
  if (S < 1 || S > N)
    err("slices {} (expected 1..{} ranks)", S, N);
  if (op.kind() == plan::ExchangeKind::Combine) {
    // The combine retraces a dispatch: its record first.
    auto d = exchangeCounts_.find(op.counts());
    if (d == exchangeCounts_.end() || d->second.second != op.send_slots() ||
        exchangeRelay_[op.counts()] != std::pair<int32_t, int32_t>{op.relay(),
                                                                   op.ranks_per_node()})
      err("counts buffer {} and send_slots {} are not written by an earlier AllToAllV dispatch "
          "with the same relay and ranks_per_node (expected dispatch before combine)",
          op.counts(), op.send_slots());
  }
  const BufferInfo &in = buf(op.in(), "in");
  const BufferInfo &out = buf(op.out(), "out");
  const BufferInfo &slots = buf(op.send_slots(), "send_slots", DType::I32);
  const BufferInfo &counts = buf(op.counts(), "counts", DType::I32);
  const int P = op.ranks_per_node() > 0 ? op.ranks_per_node() : N;
  if (op.ranks_per_node() < 0 || P > N || N % P != 0)
    err("ranks_per_node {} with {} ranks (expected 0 or a divisor of num_ranks)",
        op.ranks_per_node(), N);
  needRows(counts, "counts", 0, 2 * (int64_t(P) + N / P));
  if (N / P > 1) {
    const BufferInfo &relay = buf(op.relay(), "relay", DType::I32);
    needRows(relay, "relay", int64_t(k) * S, 0);
    for (int32_t b : {op.in(), op.out(), op.send_slots(), op.counts()})
      needDisjoint(op.relay(), b);
  }
  needRows(slots, "send_slots", int64_t(k) * S, 0);
  needDisjoint(op.in(), op.out());
  for (int32_t b : {op.send_slots(), op.counts()}) {
    needDisjoint(op.in(), b);
    needDisjoint(op.out(), b);
  }
  needDisjoint(op.send_slots(), op.counts());
  if (op.kind() == plan::ExchangeKind::Dispatch) {
    buf(op.sorted_slots(), "sorted_slots", DType::I32);
    buf(op.expert_offsets(), "expert_offsets", DType::I32);
    auto g = gates_.find(op.expert_offsets());
    if (g == gates_.end() || g->second != std::pair<int, int>{E, k})
      err("expert_offsets buffer {} is not written by an earlier Gate of {} experts and top_k "
          "{} (expected Gate before AllToAllV)",
          op.expert_offsets(), E, k);
    needTokenRows(in, "in");
    needCols(in, "in", out.rowElems);
    const BufferInfo &rs = buf(op.recv_sorted(), "recv_sorted", DType::I32);
    const BufferInfo &ro = buf(op.recv_offsets(), "recv_offsets", DType::I32);
    needRowsOf(rs, "recv_sorted", out);
    needRows(ro, "recv_offsets", 0, int64_t(E) + 1);
    int32_t outs[] = {op.out(), op.recv_sorted(), op.recv_offsets(), op.send_slots(),
                      op.counts()};
    for (int i = 0; i < 5; ++i)
      for (int j = i + 1; j < 5; ++j)
        needDisjoint(outs[i], outs[j]);
    for (int32_t o : outs) {
      needDisjoint(op.sorted_slots(), o);
      needDisjoint(op.expert_offsets(), o);
    }
    const auto *t = op.targets();
    const auto *to = op.target_offsets();
    if (!t || !to || int64_t(to->size()) != int64_t(E) + 1 || (*to)[0] != 0 ||
        int64_t((*to)[unsigned(E)]) != int64_t(t->size()))
      err("target_offsets of {} entries for {} targets (expected num_experts + 1 prefix offsets "
          "from 0 to the number of targets)",
          to ? to->size() : 0u, t ? t->size() : 0u);
    for (int e = 0; e < E; ++e) {
      int32_t n = (*to)[unsigned(e) + 1] - (*to)[unsigned(e)];
      if (n < 1 || (S > 1 && n != S))
        err("expert {} has {} target ranks (expected {})", e, n,
            S > 1 ? fmt::format("{}, one per slice", S) : std::string("at least 1"));
    }
    for (int32_t r : *t)
      if (r < 0 || r >= N)
        err("target rank {} (expected 0..{})", r, N - 1);
    dispatches_[op.recv_offsets()] = {op.out(), op.recv_sorted()};
    gates_[op.recv_offsets()] = {E, 1};
    exchangeCounts_[op.counts()] = {op.out(), op.send_slots()};
    exchangeRelay_[op.counts()] = {op.relay(), op.ranks_per_node()};
  } else if (op.kind() == plan::ExchangeKind::Combine) {
    auto d = exchangeCounts_.find(op.counts());
    // The outputs of every row the dispatch received go back.
    needRowsOf(in, "in", info_.buffers[size_t(d->second.first)]);
    needRows(out, "out", k, 0);
    if (in.rowElems != out.rowElems)
      err("in has {} elements per row, out {} (expected equal)", in.rowElems, out.rowElems);
  } else {
    err("unknown exchange kind {}", int(op.kind()));
  }
}

void RankValidator::validateStep(const plan::Step &s) {
  using plan::Op;
  switch (s.op_type()) {
  case Op::Embedding: {
    auto *op = s.op_as_Embedding();
    const WeightInfo &w = weight(op->weight(), "weight", 2);
    const BufferInfo &out = buf(op->out(), "out");
    needTokenRows(out, "out");
    const int64_t vocab = root_.model()->vocab_size(), first = op->vocab_offset();
    if (first != 0 || w.partOf >= 0) {
      // A vocabulary-parallel member's part: its rows of the table.
      if (w.partOf < 0 || w.partAxis != 0 || first < 0 || first > vocab - w.shape[0])
        err("embedding '{}' with vocab_offset {} (expected a part of a table's rows within "
            "vocab_size {})",
            w.name, first, vocab);
    } else if (w.shape[0] < vocab) {
      err("embedding '{}' has {} rows (expected at least vocab_size {})", w.name, w.shape[0],
          vocab);
    }
    needCols(out, "out", w.shape[1]);
    break;
  }
  case Op::PositionEmbedding: {
    auto *op = s.op_as_PositionEmbedding();
    const WeightInfo &w = weight(op->weight(), "weight", 2);
    const BufferInfo &b = buf(op->inout(), "inout");
    needTokenRows(b, "inout");
    needCols(b, "inout", w.shape[1]);
    if (w.shape[0] < pf_.maxPositions())
      err("position embedding '{}' has {} rows (expected at least {} positions)", w.name,
          w.shape[0], pf_.maxPositions());
    break;
  }
  case Op::Norm: {
    auto *op = s.op_as_Norm();
    const BufferInfo &in = buf(op->in(), "in");
    const BufferInfo &out = buf(op->out(), "out");
    needPositive(op->dim(), "dim");
    int64_t cols = op->cols() ? op->cols() : in.rowElems - op->col_offset();
    if (op->col_offset() < 0 || cols <= 0 || op->col_offset() + cols > in.rowElems)
      err("columns [{}, {}) exceed in buffer '{}' of {} elements per row", op->col_offset(),
          op->col_offset() + cols, in.name, in.rowElems);
    if (cols % op->dim() != 0)
      err("{} columns are not a multiple of dim {}", cols, op->dim());
    needCols(out, "out", op->col_offset() + cols);
    needRowsOf(out, "out", in);
    needDisjointOrSame(op->in(), op->out());
    if (op->in() != op->out() && in.rowElems != out.rowElems && op->col_offset() != 0)
      err("a column range needs in and out with the same row size");
    if (op->kind() != plan::NormKind::LayerNorm && op->kind() != plan::NormKind::RMSNorm)
      err("unknown norm kind {}", int(op->kind()));
    if (!(op->eps() >= 0.0f) || !std::isfinite(op->eps()))
      err("eps {} (expected a finite non-negative value)", op->eps());
    if (const WeightInfo *w = optWeight(op->weight(), "weight", 1); w && w->shape[0] != op->dim())
      err("weight '{}' has {} elements (expected dim {})", w->name, w->shape[0], op->dim());
    if (const WeightInfo *b = optWeight(op->bias(), "bias", 1); b && b->shape[0] != op->dim())
      err("bias '{}' has {} elements (expected dim {})", b->name, b->shape[0], op->dim());
    break;
  }
  case Op::Linear: {
    auto *op = s.op_as_Linear();
    const BufferInfo &in = buf(op->in(), "in");
    const BufferInfo &out = buf(op->out(), "out");
    const WeightInfo &w = weight(op->weight(), "weight", 2, !op->weight_transposed());
    int64_t N = op->weight_transposed() ? w.shape[1] : w.shape[0];
    int64_t K = op->weight_transposed() ? w.shape[0] : w.shape[1];
    needCols(in, "in", K);
    if (op->out_col_offset() < 0)
      err("out_col_offset {} (expected >= 0)", op->out_col_offset());
    needCols(out, "out", op->out_col_offset() + N);
    if (op->last_row_only()) {
      if (out.rows(1) < 1)
        err("out buffer '{}' has no row", out.name);
    } else {
      needRowsOf(out, "out", in);
    }
    needDisjoint(op->in(), op->out());
    if (const WeightInfo *b = optWeight(op->bias(), "bias", 1); b && b->shape[0] != N)
      err("bias '{}' has {} elements (expected {})", b->name, b->shape[0], N);
    break;
  }
  case Op::Rope: {
    auto *op = s.op_as_Rope();
    const BufferInfo &b = buf(op->buf(), "buf");
    needTokenRows(b, "buf");
    if (op->num_heads() <= 0 || op->head_dim() <= 0 || op->rotary_dim() <= 0 ||
        op->rotary_dim() > op->head_dim() || op->rotary_dim() % 2 != 0)
      err("{} heads of dim {} with rotary_dim {} (expected positive sizes, even rotary_dim <= "
          "head_dim)",
          op->num_heads(), op->head_dim(), op->rotary_dim());
    if (op->col_offset() < 0)
      err("col_offset {} (expected >= 0)", op->col_offset());
    // Only the rotated columns must lie in buf (an offset rope of MLA).
    needCols(b, "buf",
             op->col_offset() + int64_t(op->num_heads() - 1) * op->head_dim() + op->rotary_dim());
    if (!(op->theta() > 0.0f) || !std::isfinite(op->theta()))
      err("theta {} (expected a positive value)", op->theta());
    if (op->style() != plan::RopeStyle::NeoX && op->style() != plan::RopeStyle::Interleaved)
      err("unknown rope style {}", int(op->style()));
    if (const auto *f = op->inv_freq()) {
      if (int64_t(f->size()) != op->rotary_dim() / 2)
        err("inv_freq has {} values (expected rotary_dim / 2 = {})", f->size(),
            op->rotary_dim() / 2);
      for (float x : *f)
        if (!std::isfinite(x) || !(x > 0.0f))
          err("inv_freq value {} (expected positive finite frequencies)", x);
    }
    if (!std::isfinite(op->attention_factor()) || !(op->attention_factor() > 0.0f))
      err("attention_factor {} (expected a positive finite scale)", op->attention_factor());
    break;
  }
  case Op::Attention: {
    auto *op = s.op_as_Attention();
    const BufferInfo &qkv = buf(op->qkv(), "qkv");
    const BufferInfo &out = buf(op->out(), "out");
    needTokenRows(qkv, "qkv");
    needTokenRows(out, "out");
    int64_t H = op->num_heads(), KV = op->num_kv_heads(), hd = op->head_dim();
    if (H <= 0 || KV <= 0 || hd <= 0 || H % KV != 0)
      err("{} heads, {} kv heads, head_dim {} (expected positive sizes, kv heads dividing heads)",
          H, KV, hd);
    if (op->v_head_dim() < 0 || op->v_head_dim() > (1 << 20))
      err("v_head_dim {} (expected 0..{})", op->v_head_dim(), 1 << 20);
    int64_t vd = op->v_head_dim() ? op->v_head_dim() : hd;
    if (op->q_col() < 0 || op->k_col() < 0 || op->v_col() < 0)
      err("negative q/k/v column");
    needCols(qkv, "qkv", op->q_col() + H * hd);
    needCols(qkv, "qkv", op->k_col() + KV * hd);
    needCols(qkv, "qkv", op->v_col() + KV * vd);
    needCols(out, "out", H * vd);
    needDisjoint(op->qkv(), op->out());
    if (!rp_.kv_caches() || op->cache() < 0 || unsigned(op->cache()) >= rp_.kv_caches()->size())
      err("cache index {} out of range (expected 0..{})", op->cache(),
          rp_.kv_caches() ? int64_t(rp_.kv_caches()->size()) - 1 : -1);
    const plan::KVCache *c = rp_.kv_caches()->Get(unsigned(op->cache()));
    if (c->kv_lora_rank())
      err("cache {} is an MLA latent cache (expected one of keys and values)", op->cache());
    int64_t cacheVd = c->v_head_dim() ? c->v_head_dim() : c->head_dim();
    if (c->num_kv_heads() != KV || c->head_dim() != hd || cacheVd != vd)
      err("cache {} holds {} heads of dim {} (v {}) (expected {} of dim {} (v {}))", op->cache(),
          c->num_kv_heads(), c->head_dim(), cacheVd, KV, hd, vd);
    if (!std::isfinite(op->scale()))
      err("scale {} (expected a finite value)", op->scale());
    if (op->sliding_window() < 0)
      err("sliding_window {} (expected >= 0)", op->sliding_window());
    if (const WeightInfo *sinks = optWeight(op->sinks(), "sinks", 1); sinks && sinks->shape[0] != H)
      err("sinks '{}' has {} elements (expected one per head, {})", sinks->name, sinks->shape[0],
          H);
    break;
  }
  case Op::Activation: {
    auto *op = s.op_as_Activation();
    const BufferInfo &in = buf(op->in(), "in");
    const BufferInfo &out = buf(op->out(), "out");
    needPositive(op->n(), "n");
    needCols(in, "in", op->gated() ? 2 * op->n() : op->n());
    needCols(out, "out", op->n());
    needRowsOf(out, "out", in);
    needDisjointOrSame(op->in(), op->out());
    if (op->in() == op->out() && op->gated() && in.rowElems < 2 * op->n())
      err("in-place gated activation needs 2n columns");
    if (int(op->kind()) > int(plan::ActKind::MAX))
      err("unknown activation kind {}", int(op->kind()));
    if (op->kind() == plan::ActKind::SwigluOai)
      err("activation kind SwigluOai (expected it in Experts steps only, which hold its "
          "parameters)");
    break;
  }
  case Op::Add: {
    auto *op = s.op_as_Add();
    const BufferInfo &a = buf(op->a(), "a");
    const BufferInfo &b = buf(op->b(), "b");
    const BufferInfo &out = buf(op->out(), "out");
    if (a.rowElems != b.rowElems || a.rowElems != out.rowElems)
      err("row sizes {}, {}, {} differ (expected a, b and out of the same shape)", a.rowElems,
          b.rowElems, out.rowElems);
    needRowsOf(b, "b", a);
    needRowsOf(out, "out", a);
    needDisjointOrSame(op->a(), op->out());
    needDisjointOrSame(op->b(), op->out());
    break;
  }
  case Op::Gate: {
    auto *op = s.op_as_Gate();
    const BufferInfo &logits = buf(op->logits(), "logits");
    int E = op->num_experts(), k = op->top_k();
    if (E <= 0 || E > kMaxExperts)
      err("num_experts {} (expected 1..{})", E, kMaxExperts);
    if (k <= 0 || k > E)
      err("top_k {} with {} experts (expected 1 <= top_k <= num_experts)", k, E);
    needTokenRows(logits, "logits");
    needCols(logits, "logits", E);
    const BufferInfo &se = buf(op->slot_expert(), "slot_expert", DType::I32);
    const BufferInfo &sw = buf(op->slot_weight(), "slot_weight");
    const BufferInfo &eo = buf(op->expert_offsets(), "expert_offsets", DType::I32);
    const BufferInfo &ss = buf(op->sorted_slots(), "sorted_slots", DType::I32);
    needRows(se, "slot_expert", k, 0);
    needRows(sw, "slot_weight", k, 0);
    needRows(ss, "sorted_slots", k, 0);
    needRows(eo, "expert_offsets", 0, E + 1);
    int32_t outs[] = {op->slot_expert(), op->slot_weight(), op->expert_offsets(),
                      op->sorted_slots()};
    for (int32_t o : outs)
      needDisjoint(op->logits(), o);
    for (int i = 0; i < 4; ++i)
      for (int j = i + 1; j < 4; ++j)
        needDisjoint(outs[i], outs[j]);
    if (op->score() != plan::ScoreFn::Softmax && op->score() != plan::ScoreFn::Sigmoid)
      err("unknown score function {}", int(op->score()));
    if (op->drop_tokens() && !(op->capacity_factor() > 0.0f) && op->min_capacity() <= 0)
      err("drop_tokens without capacity (expected capacity_factor > 0 or min_capacity > 0)");
    if (!std::isfinite(op->capacity_factor()) || op->capacity_factor() < 0.0f ||
        op->min_capacity() < 0)
      err("capacity_factor {} / min_capacity {} (expected non-negative values)",
          op->capacity_factor(), op->min_capacity());
    int G = op->num_groups(), keep = op->topk_groups();
    if (G < 1 || G > E || E % G != 0 || (G > 1 && E / G < 2))
      err("num_groups {} with {} experts (expected equal groups of at least 2 experts)", G, E);
    else if (keep < 1 || keep > G || k > keep * (E / G))
      err("topk_groups {} of {} groups with top_k {} (expected 1..num_groups groups holding at "
          "least top_k experts)",
          keep, G, k);
    if (const WeightInfo *b = optWeight(op->selection_bias(), "selection_bias", 1)) {
      if (b->shape[0] != E)
        err("selection_bias '{}' has {} elements (expected num_experts {})", b->name, b->shape[0],
            E);
      if (!op->softmax_before_topk())
        err("selection_bias without scores before top-k (expected softmax_before_topk)");
    }
    if (G > 1 && !op->softmax_before_topk())
      err("num_groups {} without scores before top-k (expected softmax_before_topk)", G);
    if (!std::isfinite(op->routed_scaling_factor()) || !(op->routed_scaling_factor() > 0.0f))
      err("routed_scaling_factor {} (expected a positive finite value)",
          op->routed_scaling_factor());
    gates_[op->expert_offsets()] = {E, k};
    break;
  }
  case Op::MlaAttention: {
    auto *op = s.op_as_MlaAttention();
    const BufferInfo &q = buf(op->q(), "q");
    const BufferInfo &lat = buf(op->latent(), "latent");
    const BufferInfo &kpe = buf(op->k_pe(), "k_pe");
    const BufferInfo &out = buf(op->out(), "out");
    needTokenRows(q, "q");
    needTokenRows(out, "out");
    needRowsOf(lat, "latent", q);
    needRowsOf(kpe, "k_pe", q);
    int64_t H = op->num_heads(), nope = op->nope_dim(), rope = op->rope_dim(),
            vd = op->v_head_dim(), L = op->kv_lora_rank();
    constexpr int64_t kMaxHeadDim = 1 << 20; // keeps the products below in range
    for (int64_t d : {H, nope, rope, vd, L})
      if (d <= 0 || d > kMaxHeadDim)
        err("{} heads, nope_dim {}, rope_dim {}, v_head_dim {}, kv_lora_rank {} (expected "
            "sizes in 1..{})",
            H, nope, rope, vd, L, kMaxHeadDim);
    if (op->q_col() < 0 || op->latent_col() < 0 || op->k_pe_col() < 0)
      err("negative q/latent/k_pe column");
    needCols(q, "q", op->q_col() + H * (nope + rope));
    needCols(lat, "latent", op->latent_col() + L);
    needCols(kpe, "k_pe", op->k_pe_col() + rope);
    needCols(out, "out", H * vd);
    for (int32_t in : {op->q(), op->latent(), op->k_pe()})
      needDisjoint(in, op->out());
    // kv_b is read a row at a time as stored (dequantized per row when FP8).
    const WeightInfo &kvB = weight(op->kv_b(), "kv_b", 2, /*matrix=*/true);
    info_.rowsUse[size_t(op->kv_b())] = true;
    if (kvB.shape[0] != H * (nope + vd) || kvB.shape[1] != L)
      err("kv_b '{}' is [{}, {}] (expected [num_heads * (nope_dim + v_head_dim), kv_lora_rank] "
          "= [{}, {}])",
          kvB.name, kvB.shape[0], kvB.shape[1], H * (nope + vd), L);
    if (!rp_.kv_caches() || op->cache() < 0 || unsigned(op->cache()) >= rp_.kv_caches()->size())
      err("cache index {} out of range (expected 0..{})", op->cache(),
          rp_.kv_caches() ? int64_t(rp_.kv_caches()->size()) - 1 : -1);
    const plan::KVCache *c = rp_.kv_caches()->Get(unsigned(op->cache()));
    if (c->kv_lora_rank() != L || c->head_dim() != L + rope)
      err("cache {} has kv_lora_rank {} and head_dim {} (expected a latent cache of "
          "kv_lora_rank {} and head_dim kv_lora_rank + rope_dim = {})",
          op->cache(), c->kv_lora_rank(), c->head_dim(), L, L + rope);
    if (!std::isfinite(op->scale()))
      err("scale {} (expected a finite value)", op->scale());
    break;
  }
  case Op::GatherColumns: {
    auto *op = s.op_as_GatherColumns();
    const BufferInfo &out = buf(op->out(), "out");
    needTokenRows(out, "out");
    const auto *ins = op->inputs();
    const auto *cols = op->input_cols();
    const auto *widths = op->input_widths();
    const auto *idx = op->indices();
    if (!ins || !cols || !widths || !idx || ins->size() == 0 || ins->size() != cols->size() ||
        ins->size() != widths->size()) {
      err("inputs, input_cols and input_widths must be non-empty lists of one length");
      break;
    }
    int64_t total = 0;
    for (unsigned i = 0; i < ins->size(); ++i) {
      const BufferInfo &in = buf(ins->Get(i), "inputs");
      int64_t c = cols->Get(i), w = widths->Get(i);
      if (c < 0 || w <= 0 || w > kMaxDim) {
        err("input {} columns [{}, {}+{}) (expected a non-empty range)", i, c, c, w);
        continue;
      }
      needCols(in, "inputs", c + w);
      needRowsOf(in, "inputs", out);
      needDisjoint(ins->Get(i), op->out());
      total += w;
    }
    if (idx->size() == 0)
      err("no indices (expected one per out column)");
    needCols(out, "out", int64_t(idx->size()));
    for (int32_t j : *idx)
      if (j < 0 || j >= total) {
        err("index {} outside the inputs' {} columns", j, total);
        break;
      }
    break;
  }
  case Op::Experts:
    validateExperts(*s.op_as_Experts());
    break;
  case Op::AllToAllV:
    validateExchange(*s.op_as_AllToAllV());
    break;
  case Op::Combine: {
    auto *op = s.op_as_Combine();
    const BufferInfo &so = buf(op->slot_out(), "slot_out");
    const BufferInfo &sw = buf(op->slot_weight(), "slot_weight");
    const BufferInfo &out = buf(op->out(), "out");
    if (op->top_k() <= 0)
      err("top_k {} (expected a positive value)", op->top_k());
    needRows(so, "slot_out", op->top_k(), 0);
    needRows(sw, "slot_weight", op->top_k(), 0);
    needTokenRows(out, "out");
    if (so.rowElems != out.rowElems)
      err("slot_out has {} elements per row, out {} (expected equal)", so.rowElems, out.rowElems);
    needDisjoint(op->slot_out(), op->out());
    needDisjoint(op->slot_weight(), op->out());
    break;
  }
  case Op::SigmoidGate: {
    auto *op = s.op_as_SigmoidGate();
    const BufferInfo &g = buf(op->gate_logit(), "gate_logit");
    const BufferInfo &b = buf(op->inout(), "inout");
    needTokenRows(g, "gate_logit");
    needTokenRows(b, "inout");
    needDisjoint(op->gate_logit(), op->inout());
    break;
  }
  case Op::ResidualMix: {
    auto *op = s.op_as_ResidualMix();
    const BufferInfo &m = buf(op->moe(), "moe");
    const BufferInfo &d = buf(op->mlp(), "mlp");
    const BufferInfo &c = buf(op->coef_logits(), "coef_logits");
    const BufferInfo &out = buf(op->out(), "out");
    for (const BufferInfo *b : {&m, &d, &c, &out})
      needTokenRows(*b, "operand");
    needCols(c, "coef_logits", 2);
    if (m.rowElems != d.rowElems || m.rowElems != out.rowElems)
      err("moe, mlp and out row sizes {}, {}, {} differ (expected equal)", m.rowElems, d.rowElems,
          out.rowElems);
    needDisjointOrSame(op->moe(), op->out());
    needDisjointOrSame(op->mlp(), op->out());
    needDisjoint(op->coef_logits(), op->out());
    break;
  }
  case Op::Logits: {
    auto *op = s.op_as_Logits();
    const BufferInfo &in = buf(op->in(), "in");
    const BufferInfo &out = buf(op->out(), "out");
    const WeightInfo &w = weight(op->weight(), "weight", 2, !op->weight_transposed());
    int64_t V = op->weight_transposed() ? w.shape[1] : w.shape[0];
    int64_t K = op->weight_transposed() ? w.shape[0] : w.shape[1];
    const int64_t vocab = root_.model()->vocab_size();
    if (op->group() && op->group()->size() > 1) {
      // Vocabulary-parallel: this member's equal share of the rows, at its
      // index in the group.
      int index = checkGroup(op->group(), "logits");
      int64_t G = int64_t(op->group()->size());
      if (op->weight_transposed() || w.partOf < 0 || V * G != vocab ||
          op->vocab_offset() != V * index)
        err("lm head '{}' computes {} logits from {} as member {} of {} (expected a part of "
            "vocab_size {} / {} rows from {})",
            w.name, V, op->vocab_offset(), index, G, vocab, G, vocab / G * index);
    } else if (V != vocab || op->vocab_offset() != 0) {
      err("lm head '{}' produces {} logits at {} (expected vocab_size {} at 0)", w.name, V,
          op->vocab_offset(), vocab);
    }
    needTokenRows(in, "in");
    needCols(in, "in", K);
    needCols(out, "out", vocab);
    needDisjoint(op->in(), op->out());
    if (const WeightInfo *b = optWeight(op->bias(), "bias", 1); b && b->shape[0] != V)
      err("bias '{}' has {} elements (expected {})", b->name, b->shape[0], V);
    if (info_.logitsStep >= 0)
      err("a second Logits step (expected one per rank; the first is step {})", info_.logitsStep);
    info_.logitsStep = step_;
    break;
  }
  case Op::Collective: {
    auto *op = s.op_as_Collective();
    const BufferInfo &b = buf(op->buf(), "buf");
    int groupSize = root_.num_ranks();
    if (op->group() && op->group()->size() > 0) {
      groupSize = int(op->group()->size());
      checkGroup(op->group(), "collective");
    }
    using K = plan::CollectiveKind;
    switch (op->kind()) {
    case K::AllReduceSum:
    case K::Broadcast:
      // Broadcast copies the whole of buf into out: out needs its rows and
      // row length (and a valid index: the fuzzer found one unchecked).
      if (op->out() != -1 && op->out() != op->buf()) {
        const BufferInfo &o = buf(op->out(), "out");
        if (o.rowElems != b.rowElems)
          err("out has {} elements per row (expected {} like buf)", o.rowElems, b.rowElems);
        needRowsOf(o, "out", b);
        needDisjoint(op->buf(), op->out());
      }
      break;
    case K::AllGather: {
      const BufferInfo &o = buf(op->out(), "out");
      if (o.rowElems != b.rowElems)
        err("out has {} elements per row (expected {} like buf)", o.rowElems, b.rowElems);
      needRows(o, "out", b.rowsPerToken * groupSize, b.fixedRows * groupSize);
      needDisjoint(op->buf(), op->out());
      break;
    }
    case K::AllToAll:
    case K::ReduceScatterSum: {
      const BufferInfo &o = buf(op->out(), "out");
      if (o.rowElems != b.rowElems)
        err("out has {} elements per row (expected {} like buf)", o.rowElems, b.rowElems);
      if (b.rowsPerToken % groupSize != 0 || b.fixedRows % groupSize != 0)
        err("buf '{}' has rows = T*{}+{} (expected both divisible by the group size {})", b.name,
            b.rowsPerToken, b.fixedRows, groupSize);
      if (op->kind() == K::AllToAll)
        needRowsOf(o, "out", b);
      else
        needRows(o, "out", b.rowsPerToken / groupSize, b.fixedRows / groupSize);
      needDisjoint(op->buf(), op->out());
      break;
    }
    default:
      err("unknown collective kind {}", int(op->kind()));
    }
    break;
  }
  case Op::Prefetch:
  case Op::Evict: {
    auto *ws = s.op_type() == Op::Prefetch ? s.op_as_Prefetch()->weights()
                                           : s.op_as_Evict()->weights();
    if (ws)
      for (int32_t w : *ws) {
        checkIndex(w, "weight");
        if (!weights_[size_t(w)].slices.empty())
          err("weight '{}' is expert-stacked (expected a dense weight: experts stream on "
              "demand)",
              weights_[size_t(w)].name);
      }
    break;
  }
  default:
    err("unknown op type {} (expected an op of plan format {}.{})", int(s.op_type()),
        kPlanVersionMajor, kPlanVersionMinor);
  }
}

void RankValidator::run() {
  info_.usesWeight.assign(weights_.size(), false);
  info_.otherUse.assign(weights_.size(), false);
  info_.rowsUse.assign(weights_.size(), false);
  validateBuffers();
  validateCaches();
  if (!rp_.steps())
    return;
  info_.stepWeights.assign(rp_.steps()->size(), {});
  for (unsigned i = 0; i < rp_.steps()->size(); ++i) {
    const plan::Step *s = rp_.steps()->Get(i);
    step_ = int(i);
    opKind_ = s->op_type();
    stepName_ = s->name() ? s->name()->str() : "";
    if (s->waits())
      for (int32_t w : *s->waits())
        if (w < 0 || w >= int32_t(i))
          err("waits on step {} (expected an earlier step)", w);
    if (s->stream() > plan::Stream::MAX)
      err("stream {} (expected 0 compute, 1 communication or 2 weights)", int(s->stream()));
    validateStep(*s);
  }
  step_ = -1;
}

} // namespace

void PlanFile::sliceStackedWeights() {
  const plan::Plan &r = *root_;
  std::vector<bool> stacked(numPlanWeights_, false);
  // Expert slicing: the parts each stacked weight's expert slices are split
  // in, and along which axis of the slice (rows of gate/up/up_bias, columns
  // of down; the down bias is not split). Every Experts step reading a
  // weight must agree.
  std::vector<int> partsOf(numPlanWeights_, 1), axisOf(numPlanWeights_, 0);
  std::vector<bool> seenBy(numPlanWeights_, false);
  for (unsigned i = 0; r.ranks() && i < r.ranks()->size(); ++i) {
    const plan::RankProgram *rp = r.ranks()->Get(i);
    for (unsigned k = 0; rp->steps() && k < rp->steps()->size(); ++k) {
      const plan::Experts *op = rp->steps()->Get(k)->op_as_Experts();
      if (!op)
        continue;
      int S = op->expert_slices();
      if (S < 1 || S > kMaxRanks || op->intermediate() <= 0 || op->intermediate() % S)
        fail("{}: rank {} step {}: expert_slices {} with intermediate {} (expected 1..{} parts "
             "that divide the intermediate size)",
             path_, i, k, S, op->intermediate(), kMaxRanks);
      std::array<int32_t, kExpertRoles> roles = expertRoles(*op);
      for (size_t role = 0; role < kExpertRoles; ++role) {
        int32_t w = roles[role];
        if (w < 0 || size_t(w) >= numPlanWeights_)
          continue;
        stacked[size_t(w)] = true;
        // Rows of gate/up/up_bias/gate_bias, columns of down, the down bias
        // whole.
        int parts = role == 4 ? 1 : S;
        if (seenBy[size_t(w)] && partsOf[size_t(w)] != parts)
          fail("{}: weight '{}' is split in {} and in {} expert parts by two Experts steps "
               "(expected one expert_slices per weight)",
               path_, weights_[size_t(w)].name, partsOf[size_t(w)], parts);
        seenBy[size_t(w)] = true;
        partsOf[size_t(w)] = parts;
        axisOf[size_t(w)] = role == 2 ? 1 : 0;
      }
    }
  }
  // Adding `more` weights for stacked weight `stacked` keeps the slices (and
  // parts) of all stacked weights within kMaxExpertSlices.
  auto checkSliceBound = [&](int64_t more, size_t stacked) {
    if (int64_t(weights_.size() - numPlanWeights_) + more > kMaxExpertSlices)
      fail("{}: weight '{}' brings the expert slices of all stacked weights over {} (expected a "
           "plan of at most {} experts x stacked weights)",
           path_, weights_[stacked].name, kMaxExpertSlices, kMaxExpertSlices);
  };
  std::set<std::string> names;
  for (const WeightInfo &w : weights_)
    names.insert(w.name);
  for (size_t i = 0; i < numPlanWeights_; ++i) {
    // Not stacked, or not a valid stacked weight: reported by the Experts
    // step's validation, or after it (a source on a weight no Experts step
    // reads).
    if (!stacked[i] || weights_[i].shape.size() < 2)
      continue;
    int64_t E = weights_[i].shape[0];
    if (E > kMaxExperts)
      fail("{}: weight '{}' stacks {} experts (expected at most {})", path_, weights_[i].name, E,
           kMaxExperts);
    checkSliceBound(E, i);
    for (int64_t e = 0; e < E; ++e) {
      const WeightInfo &w = weights_[i];
      WeightInfo s;
      bool pattern = w.sourceTensor.find("{e}") != std::string::npos;
      if (pattern) {
        s.name = w.sourceTensor;
        s.name.replace(s.name.find("{e}"), 3, std::to_string(e));
      } else {
        s.name = fmt::format("{}[{}]", w.name, e);
      }
      if (!names.insert(s.name).second)
        fail("{}: expert {} of weight '{}' is named '{}' like another weight (expected unique "
             "names)",
             path_, e, w.name, s.name);
      s.storedDtype = w.storedDtype;
      s.dtype = w.dtype;
      s.shape.assign(w.shape.begin() + 1, w.shape.end());
      s.numel = w.numel / uint64_t(E);
      s.init = w.init;
      s.initStd = w.initStd;
      s.ranks = w.ranks;
      s.streamed = w.streamed;
      s.stacked = int32_t(i);
      s.expert = e;
      s.sourceTensor = w.sourceTensor;
      s.sourceOffset = w.sourceOffset;
      s.sourceStride = w.sourceStride;
      s.sourceTransposed = w.sourceTransposed;
      s.format = w.format;
      s.scaleTensor = w.scaleTensor;
      if (size_t at = s.scaleTensor.find("{e}"); at != std::string::npos)
        s.scaleTensor.replace(at, 3, std::to_string(e));
      s.blockRows = w.blockRows;
      s.blockCols = w.blockCols;
      weights_[i].slices.push_back(int32_t(weights_.size()));
      weights_.push_back(std::move(s));
    }
  }
  // Parts of sliced experts, appended after all expert slices.
  size_t numSlices = weights_.size();
  for (size_t i = numPlanWeights_; i < numSlices; ++i) {
    int S = partsOf[size_t(weights_[i].stacked)], axis = axisOf[size_t(weights_[i].stacked)];
    if (S == 1)
      continue;
    checkSliceBound(S, size_t(weights_[i].stacked));
    std::vector<int64_t> shape = weights_[i].shape;
    if (size_t(axis) >= shape.size() || shape[size_t(axis)] % S)
      fail("{}: expert slice '{}' of shape [{}] does not split in {} parts along axis {} "
           "(expected a multiple of {})",
           path_, weights_[i].name, fmt::join(shape, ", "), S, axis, S);
    shape[size_t(axis)] /= S;
    // A part of a quantized slice holds whole scale blocks.
    int64_t block = axis == 0 ? weights_[i].blockRows : weights_[i].blockCols;
    if (weights_[i].format != plan::WeightFormat::Plain && shape[size_t(axis)] % block)
      fail("{}: expert slice '{}' of shape [{}] splits in {} parts of {} along axis {}, not a "
           "multiple of its quantization block {} (expected parts of whole blocks)",
           path_, weights_[i].name, fmt::join(weights_[i].shape, ", "), S,
           shape[size_t(axis)], axis, block);
    for (int part = 0; part < S; ++part) {
      WeightInfo p = weights_[i];
      p.name = fmt::format("{} part {}/{}", weights_[i].name, part, S);
      p.shape = shape;
      p.numel = weights_[i].numel / uint64_t(S);
      p.partOf = int32_t(i);
      p.partAxis = axis;
      p.partOffset = int64_t(part) * shape[size_t(axis)];
      p.parts.clear();
      weights_[i].parts.push_back(int32_t(weights_.size()));
      weights_.push_back(std::move(p));
    }
  }
}

void PlanFile::checkTensorPart(size_t i) {
  WeightInfo &w = weights_[i];
  if (w.partOf == -1)
    return;
  if (w.partOf < 0 || size_t(w.partOf) >= numPlanWeights_ || size_t(w.partOf) == i ||
      weights_[size_t(w.partOf)].partOf != -1)
    fail("{}: weight '{}' has part_of {} (expected the index of another weight that is not a "
         "part, 0..{})",
         path_, w.name, w.partOf, numPlanWeights_ - 1);
  const WeightInfo &whole = weights_[size_t(w.partOf)];
  bool ok = (w.partAxis == 0 || w.partAxis == 1) && size_t(w.partAxis) < whole.shape.size() &&
            w.shape.size() == whole.shape.size() && w.partOffset >= 0 &&
            w.storedDtype == whole.storedDtype && whole.sourceTensor.empty() && w.sourceTensor.empty();
  for (size_t d = 0; ok && d < w.shape.size(); ++d)
    ok = d == size_t(w.partAxis)
             ? w.partOffset + w.shape[d] <= whole.shape[d]
             : w.shape[d] == whole.shape[d];
  if (!ok)
    fail("{}: weight '{}' of shape [{}] is part_axis {} at part_offset {} of '{}' [{}] (expected "
         "rows or columns inside the whole, the other dimensions and the stored dtype equal, no "
         "source)",
         path_, w.name, fmt::join(w.shape, ", "), w.partAxis, w.partOffset, whole.name,
         fmt::join(whole.shape, ", "));
  // A part of a quantized weight holds whole scale blocks (the last may be
  // the whole's partial edge block).
  if (whole.format == plan::WeightFormat::Plain && w.format == plan::WeightFormat::Plain)
    return;
  const int64_t block = w.partAxis == 0 ? whole.blockRows : whole.blockCols;
  const int64_t end = w.partOffset + w.shape[size_t(w.partAxis)];
  if (w.format != whole.format || w.scaleTensor != whole.scaleTensor ||
      w.blockRows != whole.blockRows || w.blockCols != whole.blockCols ||
      w.partOffset % block != 0 || (end % block != 0 && end != whole.shape[size_t(w.partAxis)]))
    fail("{}: weight '{}' is part_axis {} [{}, {}) of the quantized '{}' with block [{}, {}] "
         "(expected the whole's format, scale and block, and whole blocks)",
         path_, w.name, w.partAxis, w.partOffset, end, whole.name, whole.blockRows,
         whole.blockCols);
}

void PlanFile::validate() {
  const plan::Plan &r = *root_;
  const std::string &p = path_;
  const plan::ModelInfo &m = *r.model();
  if (m.vocab_size() <= 0 || m.vocab_size() > (int64_t(1) << 31))
    fail("{}: model.vocab_size {} (expected a positive count below 2^31)", p, m.vocab_size());
  if (m.max_position_embeddings() < 0)
    fail("{}: model.max_position_embeddings {} (expected >= 0)", p, m.max_position_embeddings());
  if (r.max_tokens() <= 0 || r.max_tokens() > kMaxTokens)
    fail("{}: max_tokens {} (expected 1..{})", p, r.max_tokens(), kMaxTokens);
  if (r.max_seq_len() <= 0 || r.max_seq_len() > kMaxSeqLen)
    fail("{}: max_seq_len {} (expected 1..{})", p, r.max_seq_len(), kMaxSeqLen);
  if (r.max_batch() <= 0 || r.max_batch() > kMaxBatch)
    fail("{}: max_batch {} (expected 1..{})", p, r.max_batch(), kMaxBatch);
  if (r.max_batch() > r.max_tokens())
    fail("{}: max_batch {} exceeds max_tokens {} (expected a forward call to hold one decode "
         "row per sequence)",
         p, r.max_batch(), r.max_tokens());
  if ((r.kv_page_size() == 0) != (r.kv_pages() == 0))
    fail("{}: kv_page_size {} with kv_pages {} (expected both 0 or both positive)", p,
         r.kv_page_size(), r.kv_pages());
  if (r.kv_page_size() < 0 || r.kv_page_size() > r.max_seq_len())
    fail("{}: kv_page_size {} (expected 1..max_seq_len {})", p, r.kv_page_size(),
         r.max_seq_len());
  if (r.kv_pages() < 0 || r.kv_pages() > kMaxSeqLen)
    fail("{}: kv_pages {} (expected 1..{})", p, r.kv_pages(), kMaxSeqLen);
  if (r.kv_page_size() > 0) {
    // One sequence of the plan's full length must fit in the pool.
    int64_t perSeq = (maxPositions() + r.kv_page_size() - 1) / r.kv_page_size();
    if (r.kv_pages() < perSeq)
      fail("{}: kv_pages {} of {} positions hold fewer than the plan's {} positions (expected at "
           "least {} pages)",
           p, r.kv_pages(), r.kv_page_size(), maxPositions(), perSeq);
    if (r.kv_pages() * r.kv_page_size() > kMaxSeqLen * int64_t(kMaxBatch))
      fail("{}: kv_pages {} x kv_page_size {} (expected at most {} positions in the pool)", p,
           r.kv_pages(), r.kv_page_size(), kMaxSeqLen * int64_t(kMaxBatch));
  }
  // The runtime's page tables: max_batch x pages per sequence entries.
  if (int64_t(r.max_batch()) * kvPagesPerSeq() > kMaxPageTable)
    fail("{}: max_batch {} x {} KV pages per sequence (expected page tables of at most {} "
         "entries: larger kv_page_size or fewer sequences)",
         p, r.max_batch(), kvPagesPerSeq(), kMaxPageTable);
  if (r.num_ranks() <= 0 || r.num_ranks() > kMaxRanks)
    fail("{}: num_ranks {} (expected 1..{})", p, r.num_ranks(), kMaxRanks);
  if (r.data_parallel() < 1 || r.num_ranks() % r.data_parallel() != 0)
    fail("{}: data_parallel {} with {} ranks (expected a divisor of num_ranks)", p,
         r.data_parallel(), r.num_ranks());
  if (!r.ranks() || int(r.ranks()->size()) != r.num_ranks())
    fail("{}: {} rank programs for num_ranks {} (expected one per rank)", p,
         r.ranks() ? r.ranks()->size() : 0u, r.num_ranks());
  if (!elementsAligned(m.eos_token_ids()))
    fail("{}: model.eos_token_ids is not 8-byte aligned (expected a plan written by moe-compile)",
         p);
  if (m.eos_token_ids())
    for (int64_t e : *m.eos_token_ids())
      if (e < 0 || e >= m.vocab_size())
        fail("{}: eos token id {} (expected 0..{})", p, e, m.vocab_size() - 1);

  std::set<std::string> names;
  if (r.weights()) {
    for (unsigned i = 0; i < r.weights()->size(); ++i) {
      const plan::Weight *w = r.weights()->Get(i);
      WeightInfo wi;
      wi.name = w->name()->str();
      wi.storedDtype = w->stored_dtype();
      wi.dtype = w->dtype();
      wi.init = w->init();
      wi.initStd = w->init_std();
      wi.streamed = w->streamed();
      if (wi.name.empty() || !names.insert(wi.name).second)
        fail("{}: weight {} has an empty or duplicate name '{}' (expected unique names)", p, i,
             wi.name);
      if (!isFloatWeightType(wi.storedDtype) || !isFloatWeightType(wi.dtype))
        fail("{}: weight '{}' has dtype {} stored as {} (expected F32, BF16 or F16)", p, wi.name,
             dtypeName(wi.dtype), dtypeName(wi.storedDtype));
      if (!elementsAligned(w->shape()))
        fail("{}: weight '{}' shape is not 8-byte aligned (expected a plan written by "
             "moe-compile)",
             p, wi.name);
      if (w->shape()->size() == 0 || w->shape()->size() > 8)
        fail("{}: weight '{}' has rank {} (expected 1..8)", p, wi.name, w->shape()->size());
      uint64_t numel = 1;
      for (int64_t d : *w->shape()) {
        if (d <= 0 || mulOverflows(numel, uint64_t(d), numel) || numel > (uint64_t(1) << 40))
          fail("{}: weight '{}' has a bad shape dimension {} (expected positive sizes)", p,
               wi.name, d);
        wi.shape.push_back(d);
      }
      wi.numel = numel;
      if (wi.init != plan::Init::Normal && wi.init != plan::Init::Ones &&
          wi.init != plan::Init::Zeros)
        fail("{}: weight '{}' has unknown init {}", p, wi.name, int(wi.init));
      if (!(wi.initStd >= 0.0f) || !std::isfinite(wi.initStd))
        fail("{}: weight '{}' has init_std {} (expected >= 0)", p, wi.name, wi.initStd);
      if (w->ranks())
        for (int rk : *w->ranks()) {
          if (rk < 0 || rk >= r.num_ranks())
            fail("{}: weight '{}' lists rank {} (expected 0..{})", p, wi.name, rk,
                 r.num_ranks() - 1);
          wi.ranks.push_back(rk);
        }
      if (const plan::WeightSource *src = w->source()) {
        wi.sourceTensor = src->tensor()->str();
        wi.sourceOffset = src->offset();
        wi.sourceStride = src->stride();
        wi.sourceTransposed = src->transposed();
        size_t at = wi.sourceTensor.find("{e}");
        if (wi.sourceTensor.empty())
          fail("{}: weight '{}' has a source with an empty tensor name", p, wi.name);
        if (at != std::string::npos &&
            (wi.sourceTensor.find("{e}", at + 1) != std::string::npos || wi.sourceOffset != 0 ||
             wi.sourceStride != 1 || wi.sourceTransposed))
          fail("{}: weight '{}' has source '{}' (expected one {{e}} and no offset, stride or "
               "transposed in a per-expert pattern)",
               p, wi.name, wi.sourceTensor);
        if (wi.sourceOffset < 0 || wi.sourceOffset > kMaxDim || wi.sourceStride < 1 ||
            wi.sourceStride > kMaxDim)
          fail("{}: weight '{}' has source offset {} and stride {} (expected 0 <= offset and "
               "1 <= stride, both below 2^40)",
               p, wi.name, wi.sourceOffset, wi.sourceStride);
        if (wi.sourceTransposed && wi.shape.size() != 3)
          fail("{}: weight '{}' has a transposed source but rank {} (expected an "
               "expert-stacked matrix [E, N, K])",
               p, wi.name, wi.shape.size());
      }
      // Tensor-parallel parts (3.3), checked against their whole below.
      wi.partOf = w->part_of();
      wi.partAxis = w->part_axis();
      wi.partOffset = w->part_offset();
      readFormat(*w, wi);
      weights_.push_back(std::move(wi));
    }
  }
  numPlanWeights_ = weights_.size();
  for (size_t i = 0; i < numPlanWeights_; ++i)
    checkTensorPart(i);
  sliceStackedWeights();

  for (size_t i = 0; i < numPlanWeights_; ++i)
    if (weights_[i].partOf >= 0 && (!weights_[size_t(weights_[i].partOf)].slices.empty() ||
                                    !weights_[i].slices.empty()))
      fail("{}: weight '{}' is a tensor part of, or is, an expert-stacked weight (expected parts "
           "of weights no Experts step reads)",
           p, weights_[i].name);
  ranks_.resize(size_t(r.num_ranks()));
  for (int i = 0; i < r.num_ranks(); ++i) {
    const plan::RankProgram &rp = *r.ranks()->Get(unsigned(i));
    if (rp.rank() != i)
      fail("{}: ranks[{}] has rank {} (expected {})", p, i, rp.rank(), i);
    RankValidator(*this, r, weights_, rp, i, ranks_[size_t(i)]).run();
  }
  for (size_t i = 0; i < numPlanWeights_; ++i)
    if (!weights_[i].sourceTensor.empty() && weights_[i].slices.empty())
      fail("{}: weight '{}' has a source but no Experts step reads it (expected sources on "
           "expert-stacked weights only)",
           p, weights_[i].name);
  if (ranks_[0].logitsStep < 0)
    fail("{}: rank 0 has no Logits step (expected one)", p);
  for (size_t i = 0; i < weights_.size(); ++i) {
    if (weights_[i].format == plan::WeightFormat::Plain)
      continue;
    for (const RankInfo &ri : ranks_)
      if (ri.otherUse[i])
        fail("{}: quantized weight '{}' is read other than as the matrix W of a product X W^T "
             "(expected quantized weights only in Linear, Logits and Experts matrices and "
             "MlaAttention's kv_b)",
             p, weights_[i].name);
  }
}

uint64_t WeightInfo::quantRowBytes() const {
  uint64_t K = uint64_t(shape.back());
  return format == plan::WeightFormat::MXFP4 ? K / 2 : K;
}

uint64_t WeightInfo::scaleRowBytes() const {
  uint64_t cols = (uint64_t(shape.back()) + uint64_t(blockCols) - 1) / uint64_t(blockCols);
  return cols * (format == plan::WeightFormat::MXFP4 ? 1 : 4);
}

uint64_t WeightInfo::scaleRows() const {
  uint64_t N = uint64_t(shape[shape.size() - 2]);
  return (N + uint64_t(blockRows) - 1) / uint64_t(blockRows);
}

void PlanFile::readFormat(const plan::Weight &w, WeightInfo &wi) const {
  const std::string &p = path_;
  wi.format = w.format();
  if (wi.format == plan::WeightFormat::Plain)
    return;
  if (wi.format != plan::WeightFormat::FP8E4M3Block && wi.format != plan::WeightFormat::MXFP4)
    fail("{}: weight '{}' has unknown format {} (expected Plain, FP8E4M3Block or MXFP4)", p,
         wi.name, int(wi.format));
  if (!w.scale() || w.scale()->size() == 0)
    fail("{}: weight '{}' is quantized but names no scale tensor (expected Weight.scale)", p,
         wi.name);
  wi.scaleTensor = w.scale()->str();
  if (!w.block() || w.block()->size() != 2 || w.block()->Get(0) < 1 ||
      w.block()->Get(1) < 1 || w.block()->Get(0) > kMaxDim || w.block()->Get(1) > kMaxDim)
    fail("{}: weight '{}' has a bad quantization block (expected [rows, columns], each "
         "in 1..2^40)",
         p, wi.name);
  wi.blockRows = w.block()->Get(0);
  wi.blockCols = w.block()->Get(1);
  if (wi.dtype != DType::F32 || wi.storedDtype != DType::F32 ||
      (wi.shape.size() != 2 && wi.shape.size() != 3))
    fail("{}: weight '{}' is quantized with dtype {} and rank {} (expected F32 [N, K] or "
         "[E, N, K])",
         p, wi.name, dtypeName(wi.dtype), wi.shape.size());
  bool perExpert = wi.sourceTensor.find("{e}") != std::string::npos;
  if (perExpert != (wi.scaleTensor.find("{e}") != std::string::npos) ||
      (wi.shape.size() == 2 && perExpert))
    fail("{}: weight '{}' has scale '{}' (expected a per-expert pattern with {{e}} exactly for "
         "stacked weights of per-expert tensors)",
         p, wi.name, wi.scaleTensor);
  // A stacked weight of one fused tensor (gpt-oss's MXFP4 experts): its
  // scales are a fused tensor read with the same rows, which keeps a scale
  // with its row only when a block is one row.
  if (wi.shape.size() == 3 && !perExpert && (wi.blockRows != 1 || wi.sourceTransposed))
    fail("{}: weight '{}' is quantized in fused experts with block [{}, {}]{} (expected rows of "
         "blocks [1, K]: fused quantized experts are read row by row as stored)",
         p, wi.name, wi.blockRows, wi.blockCols, wi.sourceTransposed ? " and transposed" : "");
  if (wi.format == plan::WeightFormat::MXFP4 &&
      (wi.blockRows != 1 || wi.blockCols != 32 || wi.shape.back() % 32 != 0))
    fail("{}: weight '{}' is MXFP4 with block [{}, {}] and {} columns (expected block [1, 32] "
         "and columns a multiple of 32)",
         p, wi.name, wi.blockRows, wi.blockCols, wi.shape.back());
}

} // namespace moert
