//===- Steps.cpp - The CPU backend's kernel for every plan op kind --------===//
//
// One case per plan.fbs op, reading the op's table and the rank's buffers
// through StepArgs. Weight and KV bytes read go to StepArgs::stats (the
// bandwidth floor of --bench counts only the experts that were routed).
//
//===----------------------------------------------------------------------===//
#include "CpuBackend.h"

#include "moert/Comm.h"
#include "moert/Trace.h"

#include <cmath>
#include <cstring>

namespace moert::cpu {

using plan::Op;

static WRef wref(const StepArgs &a, int32_t idx) {
  const DeviceWeight *w = a.weight(idx);
  if (!w)
    return {};
  WRef r{w->data, w->dtype, w->layout};
  const WeightInfo &wi = a.info(idx);
  if (wi.format != plan::WeightFormat::Plain) {
    r.format = QuantFormat(wi.format);
    r.scales = w->scales;
    r.blockRows = wi.blockRows;
    r.blockCols = wi.blockCols;
  }
  return r;
}

static uint64_t weightBytes(const StepArgs &a, int32_t idx) {
  if (idx < 0)
    return 0;
  const WeightInfo &wi = a.info(idx);
  if (wi.format != plan::WeightFormat::Plain)
    return a.weights[idx].bytes; // as stored: values and scales
  return wi.numel * dtypeSize(wi.dtype);
}

static Precision precisionOf(const StepArgs &a) {
  return a.computeDtype == DType::BF16 ? Precision::BF16 : Precision::F32;
}

void CpuBackend::runStep(const plan::Step &s, const StepArgs &a) {
  const bool trace = a.trace && s.op_type() != Op::Experts;
  int64_t t0 = trace ? nowNs() : 0;
  const int64_t T = a.T;
  const Precision prec = precisionOf(a);
  switch (s.op_type()) {
  case Op::Embedding: {
    auto *op = s.op_as_Embedding();
    const WeightInfo &wi = a.info(op->weight());
    const bool part = wi.partOf >= 0;
    embedding(a.ids, T, wref(a, op->weight()), wi.shape[1], op->scale(), a.f32(op->out()),
              a.ld(op->out()), op->vocab_offset(), part ? wi.shape[0] : -1);
    a.stats->weightBytes += uint64_t(T * wi.shape[1]) * dtypeSize(wi.dtype);
    break;
  }
  case Op::PositionEmbedding: {
    auto *op = s.op_as_PositionEmbedding();
    const WeightInfo &wi = a.info(op->weight());
    addRows(a.pos, T, wref(a, op->weight()), wi.shape[1], a.f32(op->inout()), a.ld(op->inout()));
    a.stats->weightBytes += uint64_t(T * wi.shape[1]) * dtypeSize(wi.dtype);
    break;
  }
  case Op::Norm: {
    auto *op = s.op_as_Norm();
    int64_t cols = op->cols() ? op->cols() : a.ld(op->in()) - op->col_offset();
    int64_t r = a.rows(op->in());
    if (op->kind() == plan::NormKind::LayerNorm)
      layerNorm(a.f32(op->in()), a.ld(op->in()), a.f32(op->out()), a.ld(op->out()), r,
                op->col_offset(), cols, op->dim(), wref(a, op->weight()), wref(a, op->bias()),
                op->eps());
    else
      rmsNorm(a.f32(op->in()), a.ld(op->in()), a.f32(op->out()), a.ld(op->out()), r,
              op->col_offset(), cols, op->dim(), wref(a, op->weight()), op->eps(),
              op->weight_offset());
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
    linear(pool_, ws_, x, a.ld(op->in()), r, wref(a, op->weight()), N, K, tr,
           wref(a, op->bias()), a.f32(op->out()) + op->out_col_offset(), a.ld(op->out()),
           op->accumulate(), prec);
    a.stats->weightBytes += weightBytes(a, op->weight());
    break;
  }
  case Op::Rope: {
    auto *op = s.op_as_Rope();
    int64_t maxPos = 0;
    for (int64_t t = 0; t < T; ++t)
      maxPos = std::max(maxPos, a.hostPos[t]);
    const RopeTableCache::Entry &tab = ropes_.get(maxPos + 1, *op);
    rope(a.f32(op->buf()) + op->col_offset(), a.ld(op->buf()), T, a.pos, op->num_heads(),
         op->head_dim(), op->rotary_dim(), tab.cosTab.data(), tab.sinTab.data(),
         op->style() == plan::RopeStyle::Interleaved);
    break;
  }
  case Op::Attention: {
    auto *op = s.op_as_Attention();
    KVCacheBuf &c = a.caches[op->cache()];
    KVView kv{c.k, c.v, c.dtype, c.maxSeq};
    if (a.pageTable && a.pageSize < c.maxSeq) { // paged: several sequences share the pool
      kv.pageTable = a.pageTable;
      kv.seq = a.seq;
      kv.pagesPerSeq = a.pagesPerSeq;
      kv.pageSize = a.pageSize;
    }
    attention(pool_, ws_, a.f32(op->qkv()), a.ld(op->qkv()), op->q_col(), op->k_col(),
              op->v_col(), a.f32(op->out()), a.ld(op->out()), T, a.pos, kv, op->num_heads(),
              op->num_kv_heads(), op->head_dim(), op->scale(), op->sliding_window(),
              wref(a, op->sinks()), op->v_head_dim());
    break; // (the session counts the KV bytes read)
  }
  case Op::MlaAttention: {
    auto *op = s.op_as_MlaAttention();
    KVCacheBuf &c = a.caches[op->cache()];
    KVView kv{c.k, nullptr, c.dtype, c.maxSeq};
    if (a.pageTable && a.pageSize < c.maxSeq) { // paged: several sequences share the pool
      kv.pageTable = a.pageTable;
      kv.seq = a.seq;
      kv.pagesPerSeq = a.pagesPerSeq;
      kv.pageSize = a.pageSize;
    }
    MlaInputs in{a.f32(op->q()) + op->q_col(),           a.ld(op->q()),
                 a.f32(op->latent()) + op->latent_col(), a.ld(op->latent()),
                 a.f32(op->k_pe()) + op->k_pe_col(),     a.ld(op->k_pe())};
    MlaParams mp{op->num_heads(), op->nope_dim(), op->rope_dim(), op->v_head_dim(),
                 op->kv_lora_rank(), op->scale(), wref(a, op->kv_b())};
    mlaAttention(pool_, ws_, in, a.f32(op->out()), a.ld(op->out()), T, a.pos, kv, mp);
    // kv_b is read like a Linear's weight (the session counts the latent rows).
    a.stats->weightBytes += weightBytes(a, op->kv_b());
    break;
  }
  case Op::GatherColumns: {
    auto *op = s.op_as_GatherColumns();
    std::vector<ColumnRange> in;
    for (unsigned i = 0; i < op->inputs()->size(); ++i) {
      int32_t b = op->inputs()->Get(i);
      in.push_back({a.f32(b) + op->input_cols()->Get(i), a.ld(b), op->input_widths()->Get(i)});
    }
    gatherColumns(in.data(), in.size(), op->indices()->data(), op->indices()->size(),
                  a.f32(op->out()), a.ld(op->out()), T);
    break;
  }
  case Op::Activation: {
    auto *op = s.op_as_Activation();
    activation(a.f32(op->in()), a.ld(op->in()), a.f32(op->out()), a.ld(op->out()),
               a.rows(op->in()), op->n(), Act(int(op->kind())), op->gated());
    break;
  }
  case Op::Add: {
    auto *op = s.op_as_Add();
    add(a.f32(op->a()), a.f32(op->b()), a.f32(op->out()), size_t(a.rows(op->a()) * a.ld(op->a())));
    break;
  }
  case Op::Gate: {
    auto *op = s.op_as_Gate();
    GateParams p{selectionOf(*op),      op->norm_topk_prob(),
                 op->capacity_factor(),  op->min_capacity(),
                 op->drop_tokens(),      wref(a, op->selection_bias()),
                 op->routed_scaling_factor()};
    int32_t *se = a.i32(op->slot_expert());
    gate(a.f32(op->logits()), a.ld(op->logits()), T, p, se, a.f32(op->slot_weight()),
         a.i32(op->expert_offsets()), a.i32(op->sorted_slots()), a.gateCounts.routed);
    if (a.gateCounts.dropped && op->drop_tokens()) {
      // Dropped slots are the routed ones left out of expert_offsets.
      const int32_t *eo = a.i32(op->expert_offsets());
      std::vector<uint64_t> routed(size_t(p.sel.numExperts), 0);
      for (int64_t q = 0; q < T * p.sel.topK; ++q)
        ++routed[size_t(se[q])];
      for (int e = 0; e < p.sel.numExperts; ++e)
        a.gateCounts.dropped[e] += routed[size_t(e)] - uint64_t(eo[e + 1] - eo[e]);
    }
    break;
  }
  case Op::Experts:
    runExperts(s, *s.op_as_Experts(), a);
    break;
  case Op::Combine: {
    auto *op = s.op_as_Combine();
    combine(a.f32(op->slot_out()), a.f32(op->slot_weight()), T, op->top_k(), a.ld(op->out()),
            a.f32(op->out()), a.ld(op->out()), op->accumulate());
    break;
  }
  case Op::SigmoidGate: {
    auto *op = s.op_as_SigmoidGate();
    sigmoidGate(a.f32(op->gate_logit()), a.ld(op->gate_logit()), a.f32(op->inout()),
                a.ld(op->inout()), T);
    break;
  }
  case Op::ResidualMix: {
    auto *op = s.op_as_ResidualMix();
    residualMix(a.f32(op->moe()), a.f32(op->mlp()), a.f32(op->coef_logits()),
                a.ld(op->coef_logits()), a.f32(op->out()), a.ld(op->out()), T);
    break;
  }
  case Op::Logits: {
    auto *op = s.op_as_Logits();
    const WeightInfo &wi = a.info(op->weight());
    bool tr = op->weight_transposed();
    // V: this step's logits (a vocabulary-parallel member's part), ldv: the
    // whole vocabulary, the row length of every logits buffer.
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
      float *scratch =
          static_cast<float *>(ws_.shared(4, size_t(rows * (ldv + V)) * 4));
      gatherVocabulary(*comm_, *op->group(), logits, rows, ldv, scratch,
                       [](void *dst, const void *src, uint64_t bytes) { std::memcpy(dst, src, bytes); });
    };
    if (a.numLogitRows > 0) {
      // A batched step: the last row of each sequence that samples. Rows
      // are gathered into one product (each weight row read once).
      const int64_t n = a.numLogitRows;
      float *rows = static_cast<float *>(ws_.shared(3, size_t(n * K) * 4));
      for (int64_t i = 0; i < n; ++i)
        std::memcpy(rows + i * K, x + a.hostLogitRows[i] * lx, size_t(K) * 4);
      linear(pool_, ws_, rows, K, n, wref(a, op->weight()), V, K, tr, wref(a, op->bias()),
             a.rowLogits + first, ldv, false, prec);
      gather(a.rowLogits, n);
    } else if (a.allLogits) {
      linear(pool_, ws_, x, lx, T, wref(a, op->weight()), V, K, tr, wref(a, op->bias()),
             a.allLogits + first, ldv, false, prec);
      gather(a.allLogits, T);
      std::memcpy(out, a.allLogits + (T - 1) * ldv, size_t(ldv) * 4);
    } else {
      linear(pool_, ws_, x + (T - 1) * lx, lx, 1, wref(a, op->weight()), V, K, tr,
             wref(a, op->bias()), out + first, ldv, false, prec);
      gather(out, 1);
    }
    a.stats->weightBytes += weightBytes(a, op->weight());
    break;
  }
  case Op::Collective:
    if (!comm_)
      fail("collective step without a communicator (expected Backend::bindComm)");
    runCollective(*comm_, *s.op_as_Collective(), a,
                  [](void *dst, const void *src, uint64_t bytes) { std::memcpy(dst, src, bytes); });
    break;
  case Op::AllToAllV:
    if (!comm_)
      fail("all-to-all-v step without a communicator (expected Backend::bindComm)");
    runAllToAllV(*comm_, *s.op_as_AllToAllV(), a);
    break;
  default:
    // Prefetch and Evict are the weight store's (core); nothing else exists.
    break;
  }
  if (trace)
    a.trace->addIssued(s.name() ? s.name()->str() : opName(s.op_type()), opName(s.op_type()),
                       int(s.stream()), a.issuedNs, t0, nowNs());
}

void CpuBackend::runExperts(const plan::Step &s, const plan::Experts &op, const StepArgs &a) {
  const int32_t *offsets = a.i32(op.expert_offsets());
  // Rows: this call's tokens, or the rows an AllToAllV dispatch received
  // (as many as the last of its per-expert offsets).
  const int64_t T =
      op.received() ? offsets[a.rows(op.expert_offsets()) - 1] : a.T;
  if (op.received() && (T < 0 || T > (*a.buffers)[size_t(op.slot_out())].maxRows ||
                        T > (*a.buffers)[size_t(op.in())].maxRows))
    fail("experts: {} received rows (expected at most the buffers' {} rows)", T,
         (*a.buffers)[size_t(op.in())].maxRows);
  const int K = op.top_k();
  // A part of a sliced expert computes I / expert_slices of its hidden units.
  const int64_t D = a.ld(op.slot_out()), I = op.intermediate() / op.expert_slices();
  const int64_t ldin = a.ld(op.in());
  const float *in = a.f32(op.in());
  float *slotOut = a.f32(op.slot_out());
  const int32_t *sorted = a.i32(op.sorted_slots());
  const Precision prec = precisionOf(a);
  if (a.expertsFirstPart)
    std::memset(slotOut, 0, size_t(T * K * D) * 4);
  if (!op.experts())
    return;
  // The local experts this launch runs.
  std::vector<const plan::LocalExpert *> list;
  if (a.expertSubset.empty())
    list.assign(op.experts()->begin(), op.experts()->end());
  else
    for (int32_t k : a.expertSubset)
      list.push_back(op.experts()->Get(unsigned(k)));
  Act act = Act(int(op.act()));
  std::string base = s.name() ? s.name()->str() : "experts";
  // Expert e's slices of the stacked gate, up, down, up_bias, down_bias,
  // gate_bias.
  auto slices = [&](const plan::LocalExpert *e) {
    return expertWeights(*a.weightInfo, op, *e);
  };
  enum { kGate, kUp, kDown, kUpBias, kDownBias, kGateBias };
  // The hidden activation of n rows of [gate | up] (gated) or [up], in place.
  auto hiddenAct = [&](float *hid, int64_t rows) {
    if (act == Act::SwigluOai)
      swigluOai(hid, 2 * I, rows, I, op.swiglu_limit(), op.swiglu_alpha());
    else
      activation(hid, 2 * I, hid, 2 * I, rows, I, act, op.gated());
  };
  auto expertBytes = [&](const plan::LocalExpert *e) {
    uint64_t b = 0;
    for (int32_t wi : slices(e))
      b += weightBytes(a, wi);
    return b;
  };
  if (T == 1) {
    // Decode: every routed expert sees one token. All their gate/up rows go
    // in one parallel pass and all down rows in another, instead of one
    // thread synchronization per matrix.
    std::vector<const plan::LocalExpert *> routed;
    std::vector<int32_t> slot;
    // One token: an expert has at most one slot, its position 0, which the
    // first copy of a replicated expert computes.
    for (const plan::LocalExpert *e : list)
      if (offsets[e->expert() + 1] > offsets[e->expert()] && e->replica() == 0) {
        routed.push_back(e);
        slot.push_back(sorted[offsets[e->expert()]]);
      }
    if (routed.empty())
      return;
    int64_t t0 = a.trace ? nowNs() : 0;
    size_t R = routed.size();
    auto *h = static_cast<float *>(ws_.shared(2, R * size_t(2 * I) * 4));
    std::vector<GemvJob> up, down;
    for (size_t i = 0; i < R; ++i) {
      auto w = slices(routed[i]);
      const float *x = in + (slot[i] / K) * ldin;
      float *hi = h + int64_t(i) * 2 * I;
      if (op.gated())
        up.push_back({x, wref(a, w[kGate]), I, D, wref(a, w[kGateBias]), hi, false});
      up.push_back(
          {x, wref(a, w[kUp]), I, D, wref(a, w[kUpBias]), op.gated() ? hi + I : hi, false});
    }
    linearBatch(pool_, ws_, up, prec);
    for (size_t i = 0; i < R; ++i) {
      auto w = slices(routed[i]);
      float *hi = h + int64_t(i) * 2 * I;
      hiddenAct(hi, 1);
      down.push_back({hi, wref(a, w[kDown]), D, I, wref(a, w[kDownBias]),
                      slotOut + int64_t(slot[i]) * D, false});
    }
    linearBatch(pool_, ws_, down, prec);
    int64_t t1 = a.trace ? nowNs() : 0;
    for (const plan::LocalExpert *e : routed) {
      a.stats->weightBytes += expertBytes(e);
      if (a.trace)
        a.trace->add(fmt::format("{}.e{} (1 tok)", base, e->expert()), "Experts", int(s.stream()),
                     t0, t1);
    }
    return;
  }
  std::vector<int32_t> mine;
  for (const plan::LocalExpert *e : list) {
    // A copy of a replicated expert computes every num_replicas-th slot.
    int32_t s0 = offsets[e->expert()], s1 = offsets[e->expert() + 1];
    int32_t copies = std::max(1, e->num_replicas());
    mine.clear();
    for (int32_t j = s0 + e->replica(); j < s1; j += copies)
      mine.push_back(sorted[j]);
    int64_t n = int64_t(mine.size());
    if (n <= 0)
      continue;
    int64_t t0 = a.trace ? nowNs() : 0;
    auto *xg = static_cast<float *>(ws_.shared(1, size_t(n * D) * 4));
    auto *h = static_cast<float *>(ws_.shared(2, size_t(n * 2 * I) * 4));
    auto *yg = static_cast<float *>(ws_.shared(3, size_t(n * D) * 4));
    for (int64_t i = 0; i < n; ++i)
      std::memcpy(xg + i * D, in + (mine[i] / K) * ldin, size_t(D) * 4);
    auto w = slices(e);
    if (op.gated()) {
      // gate and up read the same rows: one pass.
      linearMulti(pool_, ws_, xg, D, n, D,
                  {{wref(a, w[kGate]), I, wref(a, w[kGateBias]), h, 2 * I, false},
                   {wref(a, w[kUp]), I, wref(a, w[kUpBias]), h + I, 2 * I, false}},
                  prec);
    } else {
      linear(pool_, ws_, xg, D, n, wref(a, w[kUp]), I, D, false, wref(a, w[kUpBias]), h, 2 * I,
             false, prec);
    }
    hiddenAct(h, n);
    linear(pool_, ws_, h, 2 * I, n, wref(a, w[kDown]), D, I, false, wref(a, w[kDownBias]), yg, D,
           false, prec);
    for (int64_t i = 0; i < n; ++i)
      std::memcpy(slotOut + int64_t(mine[i]) * D, yg + i * D, size_t(D) * 4);
    a.stats->weightBytes += expertBytes(e);
    if (a.trace)
      a.trace->add(fmt::format("{}.e{} ({} tok)", base, e->expert(), n), "Experts",
                   int(s.stream()), t0, nowNs());
  }
}

//===----------------------------------------------------------------------===//
// Grouping (the load-time optimize hook)
//===----------------------------------------------------------------------===//

std::vector<unsigned> CpuBackend::groupSteps(const PlanFile &plan, int rank) {
  // Consecutive Linear steps that read the same input and write disjoint
  // outputs (q/k/v, gate/up) run as one pass over their packed rows.
  const plan::RankProgram &prog = plan.rankProgram(rank);
  const RankInfo &info = plan.rankInfo(rank);
  size_t nsteps = prog.steps() ? prog.steps()->size() : 0;
  std::vector<unsigned> end(nsteps, 0);
  for (size_t i = 0; i < nsteps; ++i) {
    auto batchable = [&](size_t k) -> const plan::Linear * {
      const plan::Step &st = *prog.steps()->Get(unsigned(k));
      const plan::Linear *l = st.op_as_Linear();
      if (!l || l->weight_transposed() || l->last_row_only() || streamOf(st) != StreamKind::Compute)
        return nullptr;
      const BufferInfo &in = info.buffers[size_t(l->in())];
      return in.rowsPerToken == 1 && in.fixedRows == 0 ? l : nullptr;
    };
    const plan::Linear *first = batchable(i);
    size_t e = i + 1;
    if (first) {
      std::vector<const plan::Linear *> group{first};
      for (; e < nsteps; ++e) {
        const plan::Step &st = *prog.steps()->Get(unsigned(e));
        const plan::Linear *l = batchable(e);
        // One pass reads the same K columns of the input for every matrix.
        if (!l || l->in() != first->in() ||
            plan.weights()[size_t(l->weight())].shape[1] !=
                plan.weights()[size_t(first->weight())].shape[1])
          break;
        bool waitsInside = false;
        if (st.waits())
          for (int32_t wt : *st.waits())
            waitsInside |= size_t(wt) >= i;
        // Outputs must not overlap: the batch writes them concurrently.
        auto cols = [&](const plan::Linear *x) {
          const WeightInfo &wi = plan.weights()[size_t(x->weight())];
          return std::pair<int64_t, int64_t>{x->out_col_offset(), x->out_col_offset() + wi.shape[0]};
        };
        bool overlap = false;
        for (const plan::Linear *g : group)
          if (g->out() == l->out() && cols(g).first < cols(l).second &&
              cols(l).first < cols(g).second)
            overlap = true;
          else if (g->out() != l->out()) {
            const BufferInfo &x = info.buffers[size_t(g->out())], &y = info.buffers[size_t(l->out())];
            overlap |= x.offset < y.offset + y.bytes && y.offset < x.offset + x.bytes;
          }
        if (waitsInside || overlap)
          break;
        group.push_back(l);
      }
    }
    end[i] = unsigned(e);
  }
  return end;
}

void CpuBackend::runGroup(const plan::RankProgram &prog, unsigned begin, unsigned end,
                          const StepArgs &a) {
  int64_t t0 = a.trace ? nowNs() : 0;
  std::vector<MatJob> jobs;
  const plan::Linear *first = prog.steps()->Get(begin)->op_as_Linear();
  int64_t K = 0;
  for (unsigned k = begin; k < end; ++k) {
    auto *op = prog.steps()->Get(k)->op_as_Linear();
    const WeightInfo &wi = a.info(op->weight());
    K = wi.shape[1];
    jobs.push_back({wref(a, op->weight()), wi.shape[0], wref(a, op->bias()),
                    a.f32(op->out()) + op->out_col_offset(), a.ld(op->out()), op->accumulate()});
    a.stats->weightBytes += weightBytes(a, op->weight());
  }
  const Precision prec = precisionOf(a);
  if (a.T == 1) {
    // Decode: one pass even when the layouts differ.
    std::vector<GemvJob> g;
    for (const MatJob &j : jobs)
      g.push_back({a.f32(first->in()), j.w, j.N, K, j.bias, j.y, j.accumulate});
    linearBatch(pool_, ws_, g, prec);
  } else {
    linearMulti(pool_, ws_, a.f32(first->in()), a.ld(first->in()), a.T, K, jobs, prec);
  }
  if (a.trace) {
    int64_t t1 = nowNs();
    for (unsigned k = begin; k < end; ++k) {
      const plan::Step &st = *prog.steps()->Get(k);
      a.trace->add(st.name() ? st.name()->str() : "Linear", "Linear", int(st.stream()), t0, t1);
    }
  }
}

} // namespace moert::cpu
