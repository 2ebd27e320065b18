//===- Session.cpp - The step executor ------------------------------------===//
#include "moert/Session.h"
#include "moert/FileUtil.h"

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <set>
#include <thread>
#include <cstring>

namespace moert {

using plan::Op;

/// Runs weight-streaming steps in order on a thread of their own, so loading
/// the next layer's weights overlaps the current layer's compute.
class StreamWorker {
public:
  StreamWorker() : thread_([this] { loop(); }) {}
  ~StreamWorker() {
    {
      std::lock_guard<std::mutex> l(m_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void submit(int step, std::function<void()> fn) {
    {
      std::lock_guard<std::mutex> l(m_);
      queue_.emplace_back(step, std::move(fn));
      pending_.insert(step);
    }
    cv_.notify_all();
  }
  /// Blocks until the job of `step` (if any) has run; rethrows its error.
  void wait(int step) {
    std::unique_lock<std::mutex> l(m_);
    doneCv_.wait(l, [&] { return !pending_.count(step) || error_; });
    if (error_)
      std::rethrow_exception(error_);
  }
  void drain() {
    std::unique_lock<std::mutex> l(m_);
    doneCv_.wait(l, [&] { return pending_.empty() || error_; });
    if (error_)
      std::rethrow_exception(error_);
  }

private:
  void loop() {
    std::unique_lock<std::mutex> l(m_);
    while (true) {
      cv_.wait(l, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty())
        return;
      auto [step, fn] = std::move(queue_.front());
      queue_.pop_front();
      l.unlock();
      std::exception_ptr err;
      try {
        fn();
      } catch (...) {
        err = std::current_exception();
      }
      l.lock();
      if (err && !error_)
        error_ = err;
      pending_.erase(step);
      doneCv_.notify_all();
    }
  }

  std::mutex m_;
  std::condition_variable cv_, doneCv_;
  std::deque<std::pair<int, std::function<void()>>> queue_;
  std::set<int> pending_;
  std::exception_ptr error_;
  bool stop_ = false;
  std::thread thread_;
};

Session::Session(const PlanFile &plan, int rank, WeightStore &weights, Comm &comm,
                 ThreadPool &pool, SessionOptions opts)
    : plan_(plan), prog_(plan.rankProgram(rank)), info_(plan.rankInfo(rank)), rank_(rank),
      weights_(weights), comm_(comm), pool_(pool), opts_(opts), ws_(pool.size()) {
  prec_ = plan.plan().compute_dtype() == DType::BF16 ? cpu::Precision::BF16 : cpu::Precision::F32;
  arenaBytes_ = std::max<size_t>(prog_.arena_bytes(), 64);
  arena_ = static_cast<uint8_t *>(mapAnonymous(arenaBytes_, false, "activation arena"));
  int64_t S = plan.maxSeqLen();
  if (prog_.kv_caches())
    for (const plan::KVCache *c : *prog_.kv_caches()) {
      Cache kc;
      kc.dtype = c->dtype();
      kc.bytes = size_t(c->num_kv_heads()) * size_t(S) * size_t(c->head_dim()) * dtypeSize(kc.dtype);
      kc.k = mapAnonymous(kc.bytes, false, "KV cache");
      kc.v = mapAnonymous(kc.bytes, false, "KV cache");
      caches_.push_back(kc);
    }
  size_t nsteps = prog_.steps() ? prog_.steps()->size() : 0;
  stepRope_.assign(nsteps, -1);
  profileIndex_.assign(nsteps, -1);
  groups_.resize(nsteps);
  for (size_t i = 0; i < nsteps; ++i) {
    const plan::Step &s = *prog_.steps()->Get(unsigned(i));
    if (s.op_type() == Op::Rope) {
      auto *op = s.op_as_Rope();
      auto it = std::find_if(ropeTables_.begin(), ropeTables_.end(), [&](const RopeTable &t) {
        return t.rotaryDim == op->rotary_dim() && t.theta == op->theta();
      });
      if (it == ropeTables_.end()) {
        RopeTable t{op->rotary_dim(), op->theta(), {}, {}};
        cpu::ropeTables(S, t.rotaryDim, double(t.theta), t.cos, t.sin);
        ropeTables_.push_back(std::move(t));
        it = ropeTables_.end() - 1;
      }
      stepRope_[i] = int(it - ropeTables_.begin());
    } else if (s.op_type() == Op::Gate) {
      auto *op = s.op_as_Gate();
      profileIndex_[i] = int(profile_.size());
      profile_.push_back({int(i), s.layer(), s.name() ? s.name()->str() : "",
                          std::vector<uint64_t>(size_t(op->num_experts())),
                          std::vector<uint64_t>(size_t(op->num_experts()))});
    } else if (s.op_type() == Op::Collective) {
      auto *op = s.op_as_Collective();
      if (op->group())
        groups_[i].assign(op->group()->begin(), op->group()->end());
    }
  }
  if (info_.logitsStep >= 0)
    lastLogits_.resize(size_t(plan.vocabSize()));
  computeLinearGroups();
  for (size_t i = 0; i < nsteps; ++i) {
    const plan::Step &s = *prog_.steps()->Get(unsigned(i));
    if (s.op_type() == Op::Prefetch && int(s.stream()) == 2) {
      streamer_ = std::make_unique<StreamWorker>();
      break;
    }
  }
}

void Session::computeLinearGroups() {
  size_t nsteps = prog_.steps() ? prog_.steps()->size() : 0;
  linearGroupEnd_.assign(nsteps, 0);
  for (size_t i = 0; i < nsteps; ++i) {
    auto batchable = [&](size_t k) -> const plan::Linear * {
      const plan::Step &st = *prog_.steps()->Get(unsigned(k));
      const plan::Linear *l = st.op_as_Linear();
      if (!l || l->weight_transposed() || l->last_row_only())
        return nullptr;
      const BufferInfo &in = info_.buffers[size_t(l->in())];
      return in.rowsPerToken == 1 && in.fixedRows == 0 ? l : nullptr;
    };
    const plan::Linear *first = batchable(i);
    size_t end = i + 1;
    if (first) {
      std::vector<const plan::Linear *> group{first};
      for (; end < nsteps; ++end) {
        const plan::Step &st = *prog_.steps()->Get(unsigned(end));
        const plan::Linear *l = batchable(end);
        if (!l || l->in() != first->in())
          break;
        bool waitsInside = false;
        if (st.waits())
          for (int32_t wt : *st.waits())
            waitsInside |= size_t(wt) >= i;
        // Outputs must not overlap: the batch writes them concurrently.
        auto cols = [&](const plan::Linear *x) {
          const WeightInfo &wi = plan_.weights()[size_t(x->weight())];
          return std::pair<int64_t, int64_t>{x->out_col_offset(), x->out_col_offset() + wi.shape[0]};
        };
        bool overlap = false;
        for (const plan::Linear *g : group)
          if (g->out() == l->out() && cols(g).first < cols(l).second &&
              cols(l).first < cols(g).second)
            overlap = true;
          else if (g->out() != l->out()) {
            const BufferInfo &a = info_.buffers[size_t(g->out())], &b = info_.buffers[size_t(l->out())];
            overlap |= a.offset < b.offset + b.bytes && b.offset < a.offset + a.bytes;
          }
        if (waitsInside || overlap)
          break;
        group.push_back(l);
      }
    }
    linearGroupEnd_[i] = unsigned(end);
  }
}

Session::~Session() {
  unmapAnonymous(arena_, arenaBytes_);
  for (Cache &c : caches_) {
    unmapAnonymous(c.k, c.bytes);
    unmapAnonymous(c.v, c.bytes);
  }
}

cpu::WRef Session::w(int32_t idx) {
  if (idx < 0)
    return {};
  WeightView v = weights_.acquire(idx);
  return {v.data, v.dtype, v.layout};
}

void Session::waitFor(const plan::Step &s) {
  if (streamer_ && s.waits())
    for (int32_t w : *s.waits())
      streamer_->wait(w);
}

const float *Session::forward(const int64_t *ids, int64_t T, int64_t startPos,
                              float *allLogits) {
  if (T <= 0 || T > plan_.maxTokens())
    fail("forward call of {} tokens (expected 1..{})", T, plan_.maxTokens());
  if (startPos < 0 || startPos + T > plan_.maxPositions())
    fail("positions {}..{} exceed the plan's {} positions", startPos, startPos + T - 1,
         plan_.maxPositions());
  ids_.assign(ids, ids + T);
  for (int64_t id : ids_)
    if (id < 0 || id >= plan_.vocabSize())
      fail("token id {} out of range (expected 0..{})", id, plan_.vocabSize() - 1);
  pos_.resize(size_t(T));
  for (int64_t t = 0; t < T; ++t)
    pos_[size_t(t)] = startPos + t;
  lastWeightBytes_ = lastKVBytes_ = 0;
  if (prog_.steps())
    for (unsigned i = 0; i < prog_.steps()->size(); ++i) {
      const plan::Step &s = *prog_.steps()->Get(i);
      waitFor(s);
      if (linearGroupEnd_[i] > i + 1) {
        runLinearGroup(i, linearGroupEnd_[i], T);
        i = linearGroupEnd_[i] - 1;
        continue;
      }
      int64_t t0 = opts_.trace ? nowNs() : 0;
      runStep(int(i), s, T, allLogits);
      bool async = s.op_type() == Op::Prefetch && streamer_;
      if (opts_.trace && s.op_type() != Op::Experts && !async)
        trace_.add(s.name() ? s.name()->str() : opName(s.op_type()), opName(s.op_type()),
                   int(s.stream()), t0, nowNs());
    }
  // Nothing streams past the end of a forward call.
  if (streamer_)
    streamer_->drain();
  return info_.logitsStep >= 0 ? lastLogits_.data() : nullptr;
}

void Session::runLinearGroup(unsigned begin, unsigned end, int64_t T) {
  int64_t t0 = opts_.trace ? nowNs() : 0;
  std::vector<cpu::MatJob> jobs;
  const plan::Linear *first = prog_.steps()->Get(begin)->op_as_Linear();
  int64_t K = 0;
  for (unsigned k = begin; k < end; ++k) {
    const plan::Step &st = *prog_.steps()->Get(k);
    if (k > begin)
      waitFor(st);
    auto *op = st.op_as_Linear();
    const WeightInfo &wi = plan_.weights()[size_t(op->weight())];
    K = wi.shape[1];
    jobs.push_back({w(op->weight()), wi.shape[0], w(op->bias()),
                    f32(op->out()) + op->out_col_offset(), ld(op->out()), op->accumulate()});
    lastWeightBytes_ += wi.numel * dtypeSize(wi.dtype);
  }
  if (T == 1) {
    // Decode: one pass even when the layouts differ.
    std::vector<cpu::GemvJob> g;
    for (const cpu::MatJob &j : jobs)
      g.push_back({f32(first->in()), j.w, j.N, K, j.bias, j.y, j.accumulate});
    cpu::linearBatch(pool_, ws_, g, prec_);
  } else {
    cpu::linearMulti(pool_, ws_, f32(first->in()), ld(first->in()), T, K, jobs, prec_);
  }
  if (opts_.trace) {
    int64_t t1 = nowNs();
    for (unsigned k = begin; k < end; ++k) {
      const plan::Step &st = *prog_.steps()->Get(k);
      trace_.add(st.name() ? st.name()->str() : "Linear", "Linear", int(st.stream()), t0, t1);
    }
  }
}

void Session::runStep(int idx, const plan::Step &s, int64_t T, float *allLogits) {
  switch (s.op_type()) {
  case Op::Embedding: {
    auto *op = s.op_as_Embedding();
    const WeightInfo &wi = plan_.weights()[size_t(op->weight())];
    cpu::embedding(ids_.data(), T, w(op->weight()), wi.shape[1], op->scale(), f32(op->out()),
                   ld(op->out()));
    lastWeightBytes_ += uint64_t(T * wi.shape[1]) * dtypeSize(wi.dtype);
    break;
  }
  case Op::PositionEmbedding: {
    auto *op = s.op_as_PositionEmbedding();
    const WeightInfo &wi = plan_.weights()[size_t(op->weight())];
    cpu::addRows(pos_.data(), T, w(op->weight()), wi.shape[1], f32(op->inout()), ld(op->inout()));
    lastWeightBytes_ += uint64_t(T * wi.shape[1]) * dtypeSize(wi.dtype);
    break;
  }
  case Op::Norm: {
    auto *op = s.op_as_Norm();
    int64_t cols = op->cols() ? op->cols() : ld(op->in()) - op->col_offset();
    int64_t r = rows(op->in(), T);
    if (op->kind() == plan::NormKind::LayerNorm)
      cpu::layerNorm(f32(op->in()), ld(op->in()), f32(op->out()), ld(op->out()), r,
                     op->col_offset(), cols, op->dim(), w(op->weight()), w(op->bias()), op->eps());
    else
      cpu::rmsNorm(f32(op->in()), ld(op->in()), f32(op->out()), ld(op->out()), r,
                   op->col_offset(), cols, op->dim(), w(op->weight()), op->eps(),
                   op->weight_offset());
    break;
  }
  case Op::Linear: {
    auto *op = s.op_as_Linear();
    const WeightInfo &wi = plan_.weights()[size_t(op->weight())];
    bool tr = op->weight_transposed();
    int64_t N = tr ? wi.shape[1] : wi.shape[0], K = tr ? wi.shape[0] : wi.shape[1];
    int64_t r = rows(op->in(), T);
    const float *x = f32(op->in());
    if (op->last_row_only()) {
      x += (r - 1) * ld(op->in());
      r = 1;
    }
    cpu::linear(pool_, ws_, x, ld(op->in()), r, w(op->weight()), N, K, tr, w(op->bias()),
                f32(op->out()) + op->out_col_offset(), ld(op->out()), op->accumulate(), prec_);
    lastWeightBytes_ += wi.numel * dtypeSize(wi.dtype);
    break;
  }
  case Op::Rope: {
    auto *op = s.op_as_Rope();
    const RopeTable &t = ropeTables_[size_t(stepRope_[size_t(idx)])];
    cpu::rope(f32(op->buf()) + op->col_offset(), ld(op->buf()), T, pos_.data(), op->num_heads(),
              op->head_dim(), op->rotary_dim(), t.cos.data(), t.sin.data(),
              op->style() == plan::RopeStyle::Interleaved);
    break;
  }
  case Op::Attention: {
    auto *op = s.op_as_Attention();
    Cache &c = caches_[size_t(op->cache())];
    cpu::KVView kv{c.k, c.v, c.dtype, plan_.maxSeqLen()};
    cpu::attention(pool_, ws_, f32(op->qkv()), ld(op->qkv()), op->q_col(), op->k_col(),
                   op->v_col(), f32(op->out()), ld(op->out()), T, pos_.data(), kv,
                   op->num_heads(), op->num_kv_heads(), op->head_dim(), op->scale(),
                   op->sliding_window());
    for (int64_t t = 0; t < T; ++t) {
      int64_t span = pos_[size_t(t)] + 1;
      if (op->sliding_window() > 0)
        span = std::min<int64_t>(span, op->sliding_window());
      lastKVBytes_ += uint64_t(span) * 2 * uint64_t(op->num_kv_heads()) *
                      uint64_t(op->head_dim()) * dtypeSize(c.dtype);
    }
    break;
  }
  case Op::Activation: {
    auto *op = s.op_as_Activation();
    cpu::activation(f32(op->in()), ld(op->in()), f32(op->out()), ld(op->out()), rows(op->in(), T),
                    op->n(), cpu::Act(int(op->kind())), op->gated());
    break;
  }
  case Op::Add: {
    auto *op = s.op_as_Add();
    size_t n = size_t(rows(op->a(), T) * ld(op->a()));
    const float *a = f32(op->a()), *b = f32(op->b());
    float *o = f32(op->out());
    for (size_t i = 0; i < n; ++i)
      o[i] = a[i] + b[i];
    break;
  }
  case Op::Gate: {
    auto *op = s.op_as_Gate();
    cpu::GateParams p{op->num_experts(),         op->top_k(),
                      op->score() == plan::ScoreFn::Sigmoid,
                      op->softmax_before_topk(), op->norm_topk_prob(),
                      op->capacity_factor(),     op->min_capacity(),
                      op->drop_tokens()};
    GateProfile *prof =
        opts_.expertProfile ? &profile_[size_t(profileIndex_[size_t(idx)])] : nullptr;
    float *sw = f32(op->slot_weight());
    int32_t *se = i32(op->slot_expert());
    cpu::gate(f32(op->logits()), ld(op->logits()), T, p, se, sw, i32(op->expert_offsets()),
              i32(op->sorted_slots()), prof ? prof->routed.data() : nullptr);
    if (prof && op->drop_tokens()) {
      // Dropped slots are the routed ones left out of expert_offsets.
      const int32_t *eo = i32(op->expert_offsets());
      std::vector<uint64_t> routed(size_t(p.numExperts), 0);
      for (int64_t q = 0; q < T * p.topK; ++q)
        ++routed[size_t(se[q])];
      for (int e = 0; e < p.numExperts; ++e)
        prof->dropped[size_t(e)] += routed[size_t(e)] - uint64_t(eo[e + 1] - eo[e]);
    }
    break;
  }
  case Op::Experts:
    runExperts(s, *s.op_as_Experts(), T);
    break;
  case Op::Combine: {
    auto *op = s.op_as_Combine();
    cpu::combine(f32(op->slot_out()), f32(op->slot_weight()), T, op->top_k(), ld(op->out()),
                 f32(op->out()), ld(op->out()), op->accumulate());
    break;
  }
  case Op::SigmoidGate: {
    auto *op = s.op_as_SigmoidGate();
    const float *g = f32(op->gate_logit());
    float *io = f32(op->inout());
    int64_t D = ld(op->inout()), lg = ld(op->gate_logit());
    for (int64_t t = 0; t < T; ++t) {
      float sg = cpu::activate(cpu::Act::Sigmoid, g[t * lg]);
      for (int64_t d = 0; d < D; ++d)
        io[t * D + d] *= sg;
    }
    break;
  }
  case Op::ResidualMix: {
    auto *op = s.op_as_ResidualMix();
    const float *m = f32(op->moe()), *d = f32(op->mlp()), *c = f32(op->coef_logits());
    float *o = f32(op->out());
    int64_t D = ld(op->out()), lc = ld(op->coef_logits());
    for (int64_t t = 0; t < T; ++t) {
      double c0 = c[t * lc], c1 = c[t * lc + 1], mx = std::max(c0, c1);
      double e0 = std::exp(c0 - mx), e1 = std::exp(c1 - mx);
      float w0 = float(e0 / (e0 + e1)), w1 = float(e1 / (e0 + e1));
      for (int64_t j = 0; j < D; ++j)
        o[t * D + j] = m[t * D + j] * w0 + d[t * D + j] * w1;
    }
    break;
  }
  case Op::Logits: {
    auto *op = s.op_as_Logits();
    const WeightInfo &wi = plan_.weights()[size_t(op->weight())];
    bool tr = op->weight_transposed();
    int64_t V = tr ? wi.shape[1] : wi.shape[0], K = tr ? wi.shape[0] : wi.shape[1];
    const float *x = f32(op->in());
    int64_t lx = ld(op->in());
    float *out = f32(op->out());
    if (allLogits) {
      cpu::linear(pool_, ws_, x, lx, T, w(op->weight()), V, K, tr, w(op->bias()), allLogits, V,
                  false, prec_);
      std::memcpy(out, allLogits + (T - 1) * V, size_t(V) * 4);
    } else {
      cpu::linear(pool_, ws_, x + (T - 1) * lx, lx, 1, w(op->weight()), V, K, tr, w(op->bias()),
                  out, ld(op->out()), false, prec_);
    }
    std::memcpy(lastLogits_.data(), out, size_t(V) * 4);
    lastWeightBytes_ += wi.numel * dtypeSize(wi.dtype);
    break;
  }
  case Op::Collective: {
    auto *op = s.op_as_Collective();
    std::span<const int> g(groups_[size_t(idx)]);
    size_t n = size_t(rows(op->buf(), T) * ld(op->buf()));
    int G = comm_.groupSize(g);
    float *b = f32(op->buf());
    using K = plan::CollectiveKind;
    switch (op->kind()) {
    case K::AllReduceSum:
      comm_.allReduceSum(b, n, g);
      break;
    case K::AllGather:
      comm_.allGather(b, n, f32(op->out()), g);
      break;
    case K::AllToAll:
      comm_.allToAll(b, n / size_t(G), f32(op->out()), g);
      break;
    case K::ReduceScatterSum:
      comm_.reduceScatterSum(b, n / size_t(G), f32(op->out()), g);
      break;
    case K::Broadcast:
      comm_.broadcast(b, n * 4, 0, g);
      if (op->out() != -1 && op->out() != op->buf())
        std::memcpy(f32(op->out()), b, n * 4);
      break;
    }
    break;
  }
  case Op::Prefetch: {
    std::vector<int32_t> list;
    if (s.op_as_Prefetch()->weights())
      list.assign(s.op_as_Prefetch()->weights()->begin(), s.op_as_Prefetch()->weights()->end());
    auto job = [this, list, name = std::string(s.name() ? s.name()->str() : "prefetch"),
                stream = int(s.stream())] {
      int64_t t0 = opts_.trace ? nowNs() : 0;
      for (int32_t wi : list)
        weights_.load(wi);
      if (opts_.trace)
        trace_.add(name, "Prefetch", stream, t0, nowNs());
    };
    if (streamer_)
      streamer_->submit(idx, std::move(job));
    else
      job();
    break;
  }
  case Op::Evict:
    // A weight being prefetched must land before it can leave.
    if (streamer_)
      streamer_->drain();
    if (s.op_as_Evict()->weights())
      for (int32_t wi : *s.op_as_Evict()->weights())
        weights_.evict(wi);
    break;
  default:
    break;
  }
}

void Session::runExperts(const plan::Step &s, const plan::Experts &op, int64_t T) {
  const int K = op.top_k();
  const int64_t D = ld(op.slot_out()), I = op.intermediate();
  const int64_t ldin = ld(op.in());
  const float *in = f32(op.in());
  float *slotOut = f32(op.slot_out());
  const int32_t *offsets = i32(op.expert_offsets());
  const int32_t *sorted = i32(op.sorted_slots());
  std::memset(slotOut, 0, size_t(T * K * D) * 4);
  if (!op.experts())
    return;
  cpu::Act act = cpu::Act(int(op.act()));
  std::string base = s.name() ? s.name()->str() : "experts";
  uint64_t budget = plan_.plan().memory_budget();
  auto release = [&](const plan::ExpertWeights *e) {
    // On-demand experts stay cached while the rank is within its memory
    // budget; past it, each is released right after use.
    if (op.on_demand() && budget > 0 && weights_.residentBytes() > budget)
      for (int32_t wi : {e->gate(), e->up(), e->down(), e->up_bias(), e->down_bias()})
        if (wi >= 0)
          weights_.evict(wi);
  };
  auto weightBytes = [&](const plan::ExpertWeights *e) {
    uint64_t b = 0;
    for (int32_t wi : {e->gate(), e->up(), e->down(), e->up_bias(), e->down_bias()})
      if (wi >= 0)
        b += plan_.weights()[size_t(wi)].numel * dtypeSize(plan_.weights()[size_t(wi)].dtype);
    return b;
  };
  if (T == 1) {
    // Decode: every routed expert sees one token. All their gate/up rows go
    // in one parallel pass and all down rows in another, instead of one
    // thread synchronization per matrix.
    std::vector<const plan::ExpertWeights *> routed;
    std::vector<int32_t> slot;
    // One token: an expert has at most one slot, its position 0, which the
    // first copy of a replicated expert computes.
    for (const plan::ExpertWeights *e : *op.experts())
      if (offsets[e->expert() + 1] > offsets[e->expert()] && e->replica() == 0) {
        routed.push_back(e);
        slot.push_back(sorted[offsets[e->expert()]]);
      }
    if (routed.empty())
      return;
    int64_t t0 = opts_.trace ? nowNs() : 0;
    size_t R = routed.size();
    auto *h = static_cast<float *>(ws_.shared(2, R * size_t(2 * I) * 4));
    std::vector<cpu::GemvJob> up, down;
    for (size_t i = 0; i < R; ++i) {
      const plan::ExpertWeights *e = routed[i];
      const float *x = in + (slot[i] / K) * ldin;
      float *hi = h + int64_t(i) * 2 * I;
      if (op.gated())
        up.push_back({x, w(e->gate()), I, D, {}, hi, false});
      up.push_back({x, w(e->up()), I, D, w(e->up_bias()), op.gated() ? hi + I : hi, false});
    }
    cpu::linearBatch(pool_, ws_, up, prec_);
    for (size_t i = 0; i < R; ++i) {
      float *hi = h + int64_t(i) * 2 * I;
      cpu::activation(hi, 2 * I, hi, 2 * I, 1, I, act, op.gated());
      down.push_back({hi, w(routed[i]->down()), D, I, w(routed[i]->down_bias()),
                      slotOut + int64_t(slot[i]) * D, false});
    }
    cpu::linearBatch(pool_, ws_, down, prec_);
    int64_t t1 = opts_.trace ? nowNs() : 0;
    for (const plan::ExpertWeights *e : routed) {
      lastWeightBytes_ += weightBytes(e);
      release(e);
      if (opts_.trace)
        trace_.add(fmt::format("{}.e{} (1 tok)", base, e->expert()), "Experts", int(s.stream()), t0,
                   t1);
    }
    return;
  }
  std::vector<int32_t> mine;
  for (const plan::ExpertWeights *e : *op.experts()) {
    // A copy of a replicated expert computes every num_replicas-th slot.
    int32_t s0 = offsets[e->expert()], s1 = offsets[e->expert() + 1];
    int32_t copies = std::max(1, e->num_replicas());
    mine.clear();
    for (int32_t j = s0 + e->replica(); j < s1; j += copies)
      mine.push_back(sorted[j]);
    int64_t n = int64_t(mine.size());
    if (n <= 0)
      continue;
    int64_t t0 = opts_.trace ? nowNs() : 0;
    auto *xg = static_cast<float *>(ws_.shared(1, size_t(n * D) * 4));
    auto *h = static_cast<float *>(ws_.shared(2, size_t(n * 2 * I) * 4));
    auto *yg = static_cast<float *>(ws_.shared(3, size_t(n * D) * 4));
    for (int64_t i = 0; i < n; ++i)
      std::memcpy(xg + i * D, in + (mine[i] / K) * ldin, size_t(D) * 4);
    uint64_t bytes = 0;
    auto lin = [&](const float *x, int64_t ldx, int32_t wIdx, int32_t bIdx, int64_t N, int64_t Kd,
                   float *y, int64_t ldy) {
      cpu::linear(pool_, ws_, x, ldx, n, w(wIdx), N, Kd, false, w(bIdx), y, ldy, false, prec_);
      const WeightInfo &wi = plan_.weights()[size_t(wIdx)];
      bytes += wi.numel * dtypeSize(wi.dtype);
    };
    if (op.gated()) {
      // gate and up read the same rows: one pass.
      cpu::linearMulti(pool_, ws_, xg, D, n, D,
                       {{w(e->gate()), I, {}, h, 2 * I, false},
                        {w(e->up()), I, w(e->up_bias()), h + I, 2 * I, false}},
                       prec_);
      for (int32_t wIdx : {e->gate(), e->up()}) {
        const WeightInfo &wi = plan_.weights()[size_t(wIdx)];
        bytes += wi.numel * dtypeSize(wi.dtype);
      }
    } else {
      lin(xg, D, e->up(), e->up_bias(), I, D, h, 2 * I);
    }
    cpu::activation(h, 2 * I, h, 2 * I, n, I, act, op.gated());
    lin(h, 2 * I, e->down(), e->down_bias(), D, I, yg, D);
    for (int64_t i = 0; i < n; ++i)
      std::memcpy(slotOut + int64_t(mine[i]) * D, yg + i * D, size_t(D) * 4);
    lastWeightBytes_ += bytes;
    release(e);
    if (opts_.trace)
      trace_.add(fmt::format("{}.e{} ({} tok)", base, e->expert(), n), "Experts", int(s.stream()), t0,
                 nowNs());
  }
}

} // namespace moert
