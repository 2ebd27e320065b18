//===- Session.cpp - The step scheduler -----------------------------------===//
#include "moert/Session.h"

#include <algorithm>
#include <fmt/format.h>
#include <cstring>

namespace moert {

using plan::Op;

KVCacheBuf allocateKVCache(Backend &backend, const plan::KVCache &c, int64_t maxSeq) {
  KVCacheBuf kc;
  kc.dtype = c.dtype();
  kc.maxSeq = maxSeq;
  kc.bytes = uint64_t(c.num_kv_heads()) * uint64_t(maxSeq) * uint64_t(c.head_dim()) *
             dtypeSize(kc.dtype);
  // An MLA latent cache (kv_lora_rank > 0) is its k alone: [c_kv | k_pe] rows.
  kc.vBytes = c.kv_lora_rank() ? 0
                               : uint64_t(c.num_kv_heads()) * uint64_t(maxSeq) *
                                     uint64_t(c.v_head_dim() ? c.v_head_dim() : c.head_dim()) *
                                     dtypeSize(kc.dtype);
  kc.k = backend.allocate(kc.bytes, "K cache");
  if (kc.vBytes)
    kc.v = backend.allocate(kc.vBytes, "V cache");
  return kc;
}

Session::Session(const PlanFile &plan, int rank, WeightStore &weights, Comm &comm,
                 Backend &backend, SessionOptions opts)
    : plan_(plan), prog_(plan.rankProgram(rank)), info_(plan.rankInfo(rank)), rank_(rank),
      weights_(weights), comm_(comm), backend_(backend), opts_(opts) {
  backend_.bindComm(comm_);
  // The KV caches are the plan's page pool (one page of max_seq_len per
  // slot for plans before 2.1).
  const int64_t S = plan.kvPoolPositions(), maxT = plan.maxTokens(), maxB = plan.maxBatch();
  arenaBytes_ = std::max<uint64_t>(prog_.arena_bytes(), 64);
  arena_ = static_cast<uint8_t *>(backend_.allocate(arenaBytes_, "activation arena"));
  bufferBytes_ = arenaBytes_;
  if (prog_.kv_caches())
    for (const plan::KVCache *c : *prog_.kv_caches()) {
      caches_.push_back(allocateKVCache(backend_, *c, S));
      bufferBytes_ += caches_.back().bytes + caches_.back().vBytes;
    }
  // ids, positions and sequence slots (maxT each), then the logit rows.
  tokenWords_ = 3 * maxT + maxB;
  deviceTokens_ = static_cast<int64_t *>(backend_.allocate(uint64_t(tokenWords_) * 8, "token ids"));
  hostTokens_.assign(size_t(tokenWords_), 0);
  // Page tables: slot 0 starts with pages 0.. (a single sequence), the
  // others with nothing until the batching scheduler gives them pages.
  pagesPerSeq_ = plan.kvPagesPerSeq();
  pageTable_.assign(size_t(maxB * pagesPerSeq_), -1);
  for (int64_t i = 0; i < pagesPerSeq_; ++i)
    pageTable_[size_t(i)] = int32_t(i);
  devicePages_ = static_cast<int32_t *>(
      backend_.allocate(uint64_t(pageTable_.size()) * 4, "KV page tables"));
  pagesDirty_ = true;
  weights_.reserveBuffers(int64_t(bufferBytes_));

  size_t nsteps = prog_.steps() ? prog_.steps()->size() : 0;
  profileIndex_.assign(nsteps, -1);
  needsEvent_.assign(nsteps, false);
  streamedWeights_.resize(nsteps);
  for (size_t i = 0; i < nsteps; ++i) {
    const plan::Step &s = *prog_.steps()->Get(unsigned(i));
    if (s.waits())
      for (int32_t w : *s.waits())
        needsEvent_[size_t(w)] = true;
    // On-demand experts are brought in by routing (launchStep), not all.
    const plan::Experts *ex = s.op_as_Experts();
    if (!(ex && ex->on_demand()))
      for (int32_t w : info_.stepWeights[i])
        if (weights_.isStreamed(w))
          streamedWeights_[i].push_back(w);
    streams_ = streams_ || !streamedWeights_[i].empty() || (ex && ex->on_demand()) ||
               s.op_type() == Op::Prefetch || s.op_type() == Op::Evict;
    if (s.op_type() == Op::Gate) {
      auto *op = s.op_as_Gate();
      profileIndex_[i] = int(profile_.size());
      profile_.push_back({int(i), s.layer(), s.name() ? s.name()->str() : "",
                          std::vector<uint64_t>(size_t(op->num_experts())),
                          std::vector<uint64_t>(size_t(op->num_experts()))});
    }
  }
  if (info_.logitsStep >= 0) {
    lastLogits_.resize(size_t(plan.vocabSize()));
    auto *op = prog_.steps()->Get(unsigned(info_.logitsStep))->op_as_Logits();
    deviceLogits_ = reinterpret_cast<float *>(arena_ + info_.buffers[size_t(op->out())].offset);
  }
  groupEnd_ = backend_.groupSteps(plan, rank);
  findPredictions();
  {
    std::vector<std::vector<uint32_t>> uses(plan.weights().size());
    for (size_t i = 0; i < nsteps; ++i)
      for (int32_t w : info_.stepWeights[i])
        uses[size_t(w)].push_back(uint32_t(i));
    weights_.setSchedule(uint32_t(nsteps), std::move(uses));
  }

  args_.arena = arena_;
  args_.buffers = &info_.buffers;
  args_.caches = caches_.data();
  args_.weights = weights_.views();
  args_.weightInfo = &plan.weights();
  args_.stats = &stats_;
  args_.computeDtype = plan.plan().compute_dtype();
  args_.ids = deviceTokens_;
  args_.pos = deviceTokens_ + maxT;
  args_.seq = deviceTokens_ + 2 * maxT;
  args_.hostSeq = hostTokens_.data() + 2 * maxT;
  args_.logitRows = deviceTokens_ + 3 * maxT;
  args_.hostLogitRows = hostTokens_.data() + 3 * maxT;
  args_.pageTable = devicePages_;
  args_.pagesPerSeq = pagesPerSeq_;
  args_.pageSize = plan.kvPageSize();
}

void Session::setPages(int64_t slot, std::span<const int32_t> pages) {
  if (slot < 0 || slot >= plan_.maxBatch())
    fail("sequence slot {} (expected 0..{})", slot, plan_.maxBatch() - 1);
  if (int64_t(pages.size()) > pagesPerSeq_)
    fail("{} KV pages for one sequence (expected at most {})", pages.size(), pagesPerSeq_);
  int32_t *row = pageTable_.data() + slot * pagesPerSeq_;
  for (size_t i = 0; i < size_t(pagesPerSeq_); ++i) {
    int32_t p = i < pages.size() ? pages[i] : -1;
    if (i < pages.size() && (p < 0 || p >= plan_.kvPages()))
      fail("KV page {} (expected 0..{})", p, plan_.kvPages() - 1);
    row[i] = p;
  }
  pagesDirty_ = true;
}

Session::~Session() {
  try {
    backend_.synchronizeAll();
  } catch (...) {
  }
  weights_.reserveBuffers(-int64_t(bufferBytes_));
  backend_.deallocate(arena_, arenaBytes_);
  for (KVCacheBuf &c : caches_) {
    backend_.deallocate(c.k, c.bytes);
    if (c.v)
      backend_.deallocate(c.v, c.vBytes);
  }
  backend_.deallocate(deviceTokens_, uint64_t(tokenWords_) * 8);
  backend_.deallocate(devicePages_, uint64_t(pageTable_.size()) * 4);
  if (deviceRowLogits_)
    backend_.deallocate(deviceRowLogits_,
                        uint64_t(plan_.maxBatch()) * uint64_t(plan_.vocabSize()) * 4);
  if (deviceAllLogits_)
    backend_.deallocate(deviceAllLogits_,
                        uint64_t(plan_.maxTokens()) * uint64_t(plan_.vocabSize()) * 4);
}

void Session::loadNow(std::span<const int32_t> list) {
  bool missing = false;
  for (int32_t w : list)
    missing |= !weights_.isResident(w);
  if (!missing)
    return;
  int64_t t0 = nowNs();
  for (int32_t w : list)
    weights_.load(w);
  streaming_.waitNs += nowNs() - t0;
}

void Session::acquireWeights(unsigned i) {
  const std::vector<int32_t> &list = streamedWeights_[i];
  if (list.empty())
    return;
  weights_.pin(list);
  loadNow(list);
  pinned_.insert(pinned_.end(), list.begin(), list.end());
}

void Session::findPredictions() {
  size_t nsteps = prog_.steps() ? prog_.steps()->size() : 0;
  predictAfter_.assign(nsteps, -1);
  predictionFor_.assign(nsteps, -1);
  if (!opts_.predictExperts)
    return;
  // MoE layers in program order: (router step, its input, router weight
  // and bias, Gate step, Experts step).
  struct Moe {
    unsigned router;
    int32_t input, weight, bias;
    unsigned gate, experts;
    bool onDemand;
  };
  std::vector<Moe> moes;
  for (unsigned g = 0; g < nsteps; ++g) {
    const plan::Gate *gate = prog_.steps()->Get(g)->op_as_Gate();
    if (!gate)
      continue;
    int router = -1, experts = -1;
    for (int k = int(g) - 1; k >= 0 && router < 0; --k) {
      const plan::Linear *l = prog_.steps()->Get(unsigned(k))->op_as_Linear();
      if (l && l->out() == gate->logits() && !l->accumulate() && l->out_col_offset() == 0 &&
          !l->weight_transposed() && !l->last_row_only())
        router = k;
    }
    for (unsigned k = g + 1; k < nsteps && experts < 0; ++k) {
      const plan::Experts *e = prog_.steps()->Get(k)->op_as_Experts();
      if (e && e->expert_offsets() == gate->expert_offsets())
        experts = int(k);
    }
    if (router < 0 || experts < 0)
      continue;
    const plan::Linear *l = prog_.steps()->Get(unsigned(router))->op_as_Linear();
    const plan::Experts *e = prog_.steps()->Get(unsigned(experts))->op_as_Experts();
    moes.push_back({unsigned(router), l->in(), l->weight(), l->bias(), g, unsigned(experts),
                    e->on_demand() && e->experts() != nullptr});
  }
  for (size_t m = 1; m < moes.size(); ++m) {
    const Moe &prev = moes[m - 1], &next = moes[m];
    const WeightInfo &w = plan_.weights()[size_t(next.weight)];
    // The next router must read rows as wide as the previous router's input.
    if (!next.onDemand || w.shape.size() != 2 ||
        w.shape[1] != info_.buffers[size_t(prev.input)].rowElems)
      continue;
    predictAfter_[prev.router] = int(predictions_.size());
    predictionFor_[next.experts] = int(predictions_.size());
    // The next gate's own choice (scores, groups; its selection bias is
    // read when first resident, see predict).
    const plan::Gate *gate = prog_.steps()->Get(next.gate)->op_as_Gate();
    predictions_.push_back({prev.router, prev.input, next.weight, next.bias,
                            gate->selection_bias(), next.experts, selectionOf(*gate), {}});
  }
}

void Session::predict(Prediction &p) {
  p.ids.clear();
  // A streamed router that is not here yet is not worth a fetch of its own.
  for (int32_t w : {p.router, p.routerBias, p.selectionBias})
    if (w >= 0 && !weights_.isResident(w))
      return;
  if (p.selectionBias >= 0 && p.sel.bias.empty()) {
    // Constant: read to the host once, not every step.
    const DeviceWeight &v = weights_.view(p.selectionBias);
    std::vector<uint8_t> raw(size_t(p.sel.numExperts) * dtypeSize(v.dtype));
    backend_.copyToHost(StreamKind::Compute, raw.data(), v.data, raw.size());
    backend_.synchronize(StreamKind::Compute);
    for (int e = 0; e < p.sel.numExperts; ++e)
      p.sel.bias.push_back(loadAsF32(raw.data(), v.dtype, size_t(e)));
  }
  const WeightInfo &w = plan_.weights()[size_t(p.router)];
  DeviceWeight bias = p.routerBias >= 0 ? weights_.view(p.routerBias) : DeviceWeight{};
  backend_.routeTopK(args_.f32(p.input), args_.ld(p.input), args_.rows(p.input),
                     weights_.view(p.router), p.routerBias >= 0 ? &bias : nullptr, w.shape[1],
                     p.sel, p.ids);
  const plan::Experts *ex = prog_.steps()->Get(p.experts)->op_as_Experts();
  std::vector<int32_t> fetch;
  for (const plan::LocalExpert *e : *ex->experts())
    if (std::binary_search(p.ids.begin(), p.ids.end(), e->expert()))
      for (int32_t wi : expertWeights(plan_.weights(), *ex, *e))
        if (wi >= 0 && weights_.isStreamed(wi) && !weights_.isResident(wi))
          fetch.push_back(wi);
  streaming_.predicted += p.ids.size();
  if (fetch.empty())
    return;
  Trace *trace = opts_.trace ? &trace_ : nullptr;
  std::string name = fmt::format("predicted experts for step {}", p.experts);
  backend_.enqueueHost(StreamKind::Weights, [this, fetch, trace, name] {
    int64_t t0 = trace ? nowNs() : 0;
    for (int32_t w : fetch)
      weights_.load(w);
    if (trace)
      trace->add(name, "Prefetch", int(StreamKind::Weights), t0, nowNs());
  });
}

void Session::launchOnDemandExperts(const plan::Step &s, const plan::Experts &ex) {
  // Expert streaming, the one place core reads routing: the experts the gate
  // chose (a copy of the offsets to the host) are fetched before they run.
  StreamKind stream = streamOf(s);
  int32_t rows = int32_t(info_.buffers[size_t(ex.expert_offsets())].rows(args_.T));
  std::vector<int32_t> offsets(static_cast<size_t>(rows));
  backend_.copyToHost(StreamKind::Compute, offsets.data(), args_.ptr(ex.expert_offsets()),
                      uint64_t(rows) * 4);
  backend_.synchronize(StreamKind::Compute);
  std::vector<int32_t> routed;                 // local expert indices
  std::vector<std::vector<int32_t>> weightsOf; // their streamed weights
  uint64_t need = 0;
  for (unsigned k = 0; k < ex.experts()->size(); ++k) {
    const plan::LocalExpert *e = ex.experts()->Get(k);
    int32_t id = e->expert();
    if (id + 1 >= rows || offsets[size_t(id) + 1] <= offsets[size_t(id)])
      continue;
    routed.push_back(int32_t(k));
    weightsOf.emplace_back();
    for (int32_t w : expertWeights(plan_.weights(), ex, *e))
      if (w >= 0 && weights_.isStreamed(w)) {
        weightsOf.back().push_back(w);
        if (!weights_.isResident(w))
          need += weights_.view(w).bytes;
      }
  }
  if (int pi = predictionFor_[size_t(args_.stepIndex)]; pi >= 0) {
    const std::vector<int32_t> &ids = predictions_[size_t(pi)].ids;
    for (int32_t k : routed) {
      int32_t id = ex.experts()->Get(unsigned(k))->expert();
      streaming_.hits += std::binary_search(ids.begin(), ids.end(), id);
    }
  }
  streaming_.chosen += routed.size();
  if (routed.empty() || weights_.fits(need)) {
    // Everything routed fits: fetch it all, one launch.
    for (const auto &ws : weightsOf) {
      weights_.pin(ws);
      pinned_.insert(pinned_.end(), ws.begin(), ws.end());
    }
    for (const auto &ws : weightsOf)
      loadNow(ws);
    backend_.launch(stream, s, args_);
    return;
  }
  // Over the budget: one expert at a time, each released after it ran.
  for (size_t r = 0; r < routed.size(); ++r) {
    weights_.pin(weightsOf[r]);
    loadNow(weightsOf[r]);
    args_.expertSubset = std::span<const int32_t>(&routed[r], 1);
    args_.expertsFirstPart = r == 0;
    backend_.launch(stream, s, args_);
    backend_.synchronize(stream);
    weights_.unpin(weightsOf[r]);
    weights_.trim();
  }
  args_.expertSubset = {};
  args_.expertsFirstPart = true;
}

void Session::launchStep(unsigned i, const plan::Step &s) {
  StreamKind stream = streamOf(s);
  switch (s.op_type()) {
  case Op::Prefetch: {
    std::vector<int32_t> list;
    if (s.op_as_Prefetch()->weights())
      list.assign(s.op_as_Prefetch()->weights()->begin(), s.op_as_Prefetch()->weights()->end());
    Trace *trace = opts_.trace ? &trace_ : nullptr;
    backend_.enqueueHost(stream, [this, list, trace, name = std::string(s.name() ? s.name()->str()
                                                                               : "prefetch"),
                                  st = int(s.stream())] {
      int64_t t0 = trace ? nowNs() : 0;
      for (int32_t w : list)
        weights_.load(w);
      if (trace)
        trace->add(name, "Prefetch", st, t0, nowNs());
    });
    return;
  }
  case Op::Evict: {
    // The compute before this point must be done with the weights.
    if (stream != StreamKind::Compute)
      backend_.waitEvent(stream, backend_.record(StreamKind::Compute));
    std::vector<int32_t> list;
    if (s.op_as_Evict()->weights())
      list.assign(s.op_as_Evict()->weights()->begin(), s.op_as_Evict()->weights()->end());
    Trace *trace = opts_.trace ? &trace_ : nullptr;
    backend_.enqueueHost(stream, [this, list, trace,
                                  name = std::string(s.name() ? s.name()->str() : "evict"),
                                  st = int(s.stream())] {
      int64_t t0 = trace ? nowNs() : 0;
      for (int32_t w : list)
        weights_.evict(w);
      if (trace)
        trace->add(name, "Evict", st, t0, nowNs());
    });
    return;
  }
  default:
    break;
  }
  args_.stepIndex = int(i);
  weights_.setCursor(i);
  args_.gateCounts = {};
  if (opts_.expertProfile && profileIndex_[i] >= 0) {
    GateProfile &p = profile_[size_t(profileIndex_[i])];
    args_.gateCounts = {p.routed.data(), p.dropped.data()};
  }
  if (const plan::Experts *ex = s.op_as_Experts(); ex && ex->on_demand() && ex->experts()) {
    launchOnDemandExperts(s, *ex);
    return;
  }
  acquireWeights(i);
  backend_.launch(stream, s, args_);
}

const float *Session::forward(const int64_t *ids, int64_t T, int64_t startPos,
                              float *allLogits) {
  if (T <= 0 || T > plan_.maxTokens())
    fail("forward call of {} tokens (expected 1..{})", T, plan_.maxTokens());
  if (startPos < 0 || startPos + T > plan_.maxPositions())
    fail("positions {}..{} exceed the plan's {} positions", startPos, startPos + T - 1,
         plan_.maxPositions());
  for (int64_t t = 0; t < T; ++t)
    if (ids[t] < 0 || ids[t] >= plan_.vocabSize())
      fail("token id {} out of range (expected 0..{})", ids[t], plan_.vocabSize() - 1);
  const int64_t maxT = plan_.maxTokens();
  std::copy(ids, ids + T, hostTokens_.begin());
  for (int64_t t = 0; t < T; ++t) {
    hostTokens_[size_t(maxT + t)] = startPos + t;
    hostTokens_[size_t(2 * maxT + t)] = 0; // sequence slot 0
  }
  // One sequence: slot 0 (its pages must be there).
  for (int64_t i = 0; i * plan_.kvPageSize() < startPos + T; ++i)
    if (pageTable_[size_t(i)] < 0)
      fail("sequence slot 0 has no KV page for positions from {} (expected pages from "
           "setPages)",
           i * plan_.kvPageSize());
  // With data-parallel groups one sequence is group 0's; the other groups
  // run the step with no rows (their ranks take part in the exchanges).
  return run(plan_.groupOf(rank_) == 0 ? T : 0, 0, allLogits);
}

const float *Session::forwardBatch(const BatchRows &b) {
  if (!backend_.supportsBatchedSteps())
    fail("--backend={}: batched generation is not supported by this backend yet (expected "
         "--backend=cpu, or one sequence at a time)",
         backend_.name());
  const int64_t T = int64_t(b.ids.size()), maxT = plan_.maxTokens(), maxB = plan_.maxBatch();
  const int64_t n = int64_t(b.logitRows.size());
  // A data-parallel group without rows in a step still runs it (0 rows).
  if (T < (plan_.dataParallel() > 1 ? 0 : 1) || T > maxT)
    fail("forward call of {} tokens (expected {}..{})", T, plan_.dataParallel() > 1 ? 0 : 1,
         maxT);
  if (int64_t(b.pos.size()) != T || int64_t(b.seq.size()) != T)
    fail("batched forward call of {} ids with {} positions and {} slots (expected one of each "
         "per row)",
         T, b.pos.size(), b.seq.size());
  if (n > maxB)
    fail("{} logit rows (expected at most max_batch {})", n, maxB);
  for (int64_t t = 0; t < T; ++t) {
    int64_t id = b.ids[size_t(t)], p = b.pos[size_t(t)], s = b.seq[size_t(t)];
    if (id < 0 || id >= plan_.vocabSize())
      fail("token id {} out of range (expected 0..{})", id, plan_.vocabSize() - 1);
    if (s < 0 || s >= maxB)
      fail("row {}: sequence slot {} (expected 0..{})", t, s, maxB - 1);
    if (p < 0 || p >= plan_.maxPositions())
      fail("row {}: position {} (expected 0..{})", t, p, plan_.maxPositions() - 1);
    if (pageTable_[size_t(s * pagesPerSeq_ + p / plan_.kvPageSize())] < 0)
      fail("row {}: sequence slot {} has no KV page for position {} (expected pages from "
           "setPages)",
           t, s, p);
    hostTokens_[size_t(t)] = id;
    hostTokens_[size_t(maxT + t)] = p;
    hostTokens_[size_t(2 * maxT + t)] = s;
  }
  for (int64_t i = 0; i < n; ++i) {
    int64_t r = b.logitRows[size_t(i)];
    if (r < 0 || r >= T)
      fail("logit row {} (expected 0..{})", r, T - 1);
    hostTokens_[size_t(3 * maxT + i)] = r;
  }
  if (info_.logitsStep >= 0 && !deviceRowLogits_)
    deviceRowLogits_ = static_cast<float *>(backend_.allocate(
        uint64_t(maxB) * uint64_t(plan_.vocabSize()) * 4, "batch logits"));
  int64_t t0 = opts_.trace ? nowNs() : 0;
  const float *logits = run(T, n, nullptr);
  // A batched step's rows, for traces (its own row: "stream" 3).
  if (opts_.trace)
    trace_.add(fmt::format("batch step ({} rows, {} sampled)", T, n), "Batch", 3, t0, nowNs());
  return logits;
}

void Session::launchSteps(int64_t T) {
  size_t nsteps = prog_.steps() ? prog_.steps()->size() : 0;
  events_.assign(nsteps, -1);
  // A rank without rows (a data-parallel group idle in this step) runs only
  // the steps whose results do not depend on its rows alone: the gate (its
  // empty routing feeds the exchange), the exchanges and collectives, the
  // experts over received rows, and weight streaming.
  auto skipped = [&](unsigned k) {
    if (T > 0)
      return false;
    switch (prog_.steps()->Get(k)->op_type()) {
    case plan::Op::Gate:
    case plan::Op::AllToAllV:
    case plan::Op::Collective:
    case plan::Op::Experts:
    case plan::Op::Prefetch:
    case plan::Op::Evict:
      return false;
    default:
      return true;
    }
  };
  const bool syncCompute = backend_.synchronousCompute();
  for (unsigned i = 0; i < nsteps; ++i) {
    const plan::Step &s = *prog_.steps()->Get(i);
    StreamKind stream = streamOf(s);
    unsigned end = std::max(groupEnd_[i], i + 1);
    bool skip = true;
    for (unsigned k = i; k < end; ++k)
      skip = skip && skipped(k);
    if (skip) {
      i = end - 1;
      continue;
    }
    for (unsigned k = i; k < end; ++k)
      if (const auto *w = prog_.steps()->Get(k)->waits())
        for (int32_t wt : *w)
          if (events_[size_t(wt)] >= 0)
            backend_.waitEvent(stream, events_[size_t(wt)]);
    if (end > i + 1) {
      weights_.setCursor(i);
      for (unsigned k = i; k < end; ++k)
        acquireWeights(k);
      args_.stepIndex = int(i);
      backend_.launchGroup(stream, prog_, i, end, args_);
    } else {
      launchStep(i, s);
    }
    for (unsigned k = i; k < end; ++k)
      if (predictAfter_[k] >= 0)
        predict(predictions_[size_t(predictAfter_[k])]);
    for (unsigned k = i; k < end; ++k)
      if (needsEvent_[k])
        events_[k] = backend_.record(stream);
    if (syncCompute && !pinned_.empty() && stream == StreamKind::Compute) {
      weights_.unpin(pinned_);
      pinned_.clear();
      weights_.trim();
    }
    i = end - 1;
  }
}

/// KV-cache bytes the attention steps of a forward call of T rows read (for
/// the bandwidth floor; also for a replayed graph, which launches nothing).
uint64_t Session::kvBytesRead(int64_t T) const {
  uint64_t bytes = 0;
  if (!prog_.steps())
    return 0;
  const int64_t *pos = args_.hostPos;
  for (const plan::Step *s : *prog_.steps()) {
    if (const plan::Attention *op = s->op_as_Attention()) {
      const uint64_t vd = uint64_t(op->v_head_dim() ? op->v_head_dim() : op->head_dim());
      const uint64_t row = uint64_t(op->num_kv_heads()) * (uint64_t(op->head_dim()) + vd) *
                           dtypeSize(caches_[size_t(op->cache())].dtype);
      for (int64_t t = 0; t < T; ++t) {
        int64_t span = pos[t] + 1;
        if (op->sliding_window() > 0)
          span = std::min<int64_t>(span, op->sliding_window());
        bytes += uint64_t(span) * row;
      }
    } else if (const plan::MlaAttention *op = s->op_as_MlaAttention()) {
      // The latent rows [c_kv | k_pe] each token reads.
      const uint64_t row = uint64_t(op->kv_lora_rank() + op->rope_dim()) *
                           dtypeSize(caches_[size_t(op->cache())].dtype);
      for (int64_t t = 0; t < T; ++t)
        bytes += uint64_t(pos[t] + 1) * row;
    }
  }
  return bytes;
}

const float *Session::run(int64_t T, int64_t numLogitRows, float *allLogits) {
  const int64_t maxT = plan_.maxTokens(), V = plan_.vocabSize();
  // Only the rows of this call: ids, positions and slots (and the logit rows).
  for (int64_t part = 0; part < 3; ++part)
    backend_.copyToDevice(StreamKind::Compute, deviceTokens_ + part * maxT,
                          hostTokens_.data() + part * maxT, uint64_t(T) * 8);
  if (numLogitRows > 0)
    backend_.copyToDevice(StreamKind::Compute, deviceTokens_ + 3 * maxT,
                          hostTokens_.data() + 3 * maxT, uint64_t(numLogitRows) * 8);
  if (pagesDirty_) {
    backend_.copyToDevice(StreamKind::Compute, devicePages_, pageTable_.data(),
                          uint64_t(pageTable_.size()) * 4);
    pagesDirty_ = false;
  }
  args_.numLogitRows = numLogitRows;
  args_.rowLogits = numLogitRows > 0 ? deviceRowLogits_ : nullptr;
  lastLogitRows_ = numLogitRows;
  if (allLogits && !deviceAllLogits_)
    deviceAllLogits_ = static_cast<float *>(
        backend_.allocate(uint64_t(maxT) * uint64_t(V) * 4, "prompt logits"));
  stats_ = {};
  args_.T = T;
  args_.hostPos = hostTokens_.data() + maxT;
  args_.allLogits = allLogits ? deviceAllLogits_ : nullptr;
  args_.trace = opts_.trace ? &trace_ : nullptr;

  backend_.resetEvents();
  // A decode step that may fetch nothing is the same launches every time:
  // a backend with graphs (CUDA) captures it once and replays it. That is a
  // single sequence's step (one row) or a batched step whose every row is a
  // sequence's next token (as many logit rows as rows): one graph per batch
  // size. The host work of streaming (reading routing, fetching) cannot be
  // captured. A bucket whose captures the backend refused twice is launched
  // directly from then on.
  const int64_t bucket = numLogitRows == 0 ? (T == 1 ? 0 : -1) : (numLogitRows == T ? T : -1);
  const int key = graphKey_ * kGraphBuckets + int(bucket);
  const bool graph = backend_.supportsGraphs() && bucket >= 0 && bucket < kGraphBuckets &&
                     !allLogits && !opts_.trace && !opts_.expertProfile && !streams_ &&
                     graphs_[key].failures < 2;
  try {
    if (graph && backend_.replay(key)) {
      // Nothing to launch; the weights it reads are the capture's.
      stats_.weightBytes = graphs_[key].weightBytes;
    } else if (graph) {
      backend_.beginCapture(key);
      launchSteps(T);
      if (backend_.endCapture(key)) {
        graphs_[key].weightBytes = stats_.weightBytes;
      } else {
        // A capture that failed ran nothing: launch the steps directly.
        ++graphs_[key].failures;
        stats_ = {};
        backend_.resetEvents();
        launchSteps(T);
      }
    } else {
      launchSteps(T);
    }
    stats_.kvBytes = kvBytesRead(T);
    // Nothing runs past the end of a forward call.
    backend_.synchronizeAll();
    backend_.collectStats(stats_);
  } catch (...) {
    try {
      backend_.synchronizeAll();
    } catch (...) {
    }
    weights_.unpin(pinned_);
    pinned_.clear();
    throw;
  }
  weights_.unpin(pinned_);
  pinned_.clear();
  weights_.trim();
  if (info_.logitsStep < 0)
    return nullptr;
  if (numLogitRows > 0) {
    rowLogits_.resize(size_t(numLogitRows * V));
    backend_.copyToHost(StreamKind::Compute, rowLogits_.data(), deviceRowLogits_,
                        uint64_t(numLogitRows) * uint64_t(V) * 4);
    backend_.synchronize(StreamKind::Compute);
    return rowLogits_.data();
  }
  backend_.copyToHost(StreamKind::Compute, lastLogits_.data(), deviceLogits_, uint64_t(V) * 4);
  if (allLogits)
    backend_.copyToHost(StreamKind::Compute, allLogits, deviceAllLogits_,
                        uint64_t(T) * uint64_t(V) * 4);
  backend_.synchronize(StreamKind::Compute);
  return lastLogits_.data();
}

int64_t Session::sample(float temperature, float topP, uint64_t &state) {
  if (info_.logitsStep < 0)
    fail("rank {} has no logits to sample from", rank_);
  return backend_.sample(deviceLogits_, plan_.vocabSize(), {temperature, topP, &state});
}

int64_t Session::sampleRow(int64_t i, float temperature, float topP, uint64_t &state) {
  if (info_.logitsStep < 0)
    fail("rank {} has no logits to sample from", rank_);
  if (i < 0 || i >= lastLogitRows_)
    fail("logit row {} of the last batched call (expected 0..{})", i, lastLogitRows_ - 1);
  const int64_t V = plan_.vocabSize();
  return backend_.sample(deviceRowLogits_ + i * V, V, {temperature, topP, &state});
}

} // namespace moert
