//===- Batch.cpp - The batching scheduler ---------------------------------===//
#include "moert/Batch.h"

#include "moert/Trace.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <optional>
#include <fmt/format.h>

namespace moert {

std::string checkRequest(const PlanFile &plan, const SequenceRequest &r) {
  const int64_t P = int64_t(r.prompt.size()), V = plan.vocabSize();
  if (P == 0)
    return "empty prompt (expected at least one token id)";
  for (int64_t id : r.prompt)
    if (id < 0 || id >= V)
      return fmt::format("token id {} out of range (expected 0..{})", id, V - 1);
  if (r.maxNewTokens < 0)
    return fmt::format("max_new_tokens {} (expected >= 0)", r.maxNewTokens);
  if (P + r.maxNewTokens > plan.maxPositions())
    return fmt::format("prompt of {} tokens + {} new tokens exceeds the plan's {} positions "
                       "(expected at most {} in total)",
                       P, r.maxNewTokens, plan.maxPositions(), plan.maxPositions());
  if (!(r.temperature >= 0.0f) || !std::isfinite(r.temperature))
    return fmt::format("temperature {} (expected a finite value >= 0)", r.temperature);
  if (!(r.topP > 0.0f && r.topP <= 1.0f))
    return fmt::format("top_p {} (expected 0 < p <= 1)", r.topP);
  for (const auto &s : r.stopIds) {
    if (s.empty())
      return "an empty stop sequence (expected at least one token id)";
    for (int64_t id : s)
      if (id < 0 || id >= V)
        return fmt::format("stop token id {} out of range (expected 0..{})", id, V - 1);
  }
  return "";
}

namespace {

/// A sequence the engine holds, queued or running. A preempted sequence goes
/// back to the queue as it is: its generated tokens, result so far, sampler
/// state and admission order stay with it.
struct Seq {
  uint64_t tag = 0;
  SequenceRequest req;
  int64_t arrivalNs = 0;
  SequenceResult res;
  int64_t order = -1;            // first admission's number (prefill and preemption order)
  std::vector<int64_t> tokens;   // prompt followed by the new tokens
  /// Tokens to prefill at this admission: the prompt, or after a preemption
  /// the prompt and every token generated before it (recomputed).
  int64_t toPrefill = 0, prefilled = 0;
  std::vector<int32_t> pages;
  uint64_t state = 0;            // the sampler's RNG
  std::vector<int64_t> eos;
};

bool endsWith(const std::vector<int64_t> &out, const std::vector<int64_t> &s) {
  return out.size() >= s.size() && std::equal(s.rbegin(), s.rend(), out.rbegin());
}

int64_t pagesFor(int64_t positions, int64_t pageSize) {
  return (positions + pageSize - 1) / pageSize;
}

/// Pages a sequence takes when admitted: its prefill, and the position of the
/// first token it generates then, unless that token is its last (a last
/// token is never fed back, so its K/V are never stored).
int64_t admissionPages(const Seq &q, int64_t pageSize) {
  const int64_t len = int64_t(q.tokens.size());
  const int64_t last = int64_t(q.req.prompt.size()) + q.req.maxNewTokens - 1;
  return pagesFor(std::max(len, std::min(len + 1, last)), pageSize);
}

} // namespace

void runBatchEngine(Session &session, Comm &comm, RequestSource &source,
                    const BatchOptions &opts, BatchStats *stats) {
  const PlanFile &plan = session.plan();
  const int64_t maxT = plan.maxTokens(), ps = plan.kvPageSize();
  const int64_t B = opts.maxBatch > 0 ? std::min(opts.maxBatch, plan.maxBatch()) : plan.maxBatch();
  const int64_t chunk = opts.prefillChunk > 0 ? std::min(opts.prefillChunk, maxT) : maxT;
  const plan::ModelInfo &m = *plan.plan().model();
  std::vector<int64_t> planEos;
  if (m.eos_token_ids())
    planEos.assign(m.eos_token_ids()->begin(), m.eos_token_ids()->end());

  std::deque<Seq> queue;
  // Free pages, lowest number on top.
  std::vector<int32_t> freePages;
  for (int64_t p = plan.kvPages() - 1; p >= 0; --p)
    freePages.push_back(int32_t(p));
  std::vector<std::optional<Seq>> slots(static_cast<size_t>(B));
  int64_t admissions = 0;
  BatchStats st;
  st.maxBatch = B;
  const int64_t t0 = nowNs();
  auto msSince = [](int64_t from) { return double(nowNs() - from) / 1e6; };

  auto releasePages = [&](Seq &a) {
    freePages.insert(freePages.end(), a.pages.rbegin(), a.pages.rend());
    a.pages.clear();
  };
  auto finish = [&](size_t slot, const char *reason) {
    Seq &a = *slots[slot];
    a.res.finishReason = reason;
    releasePages(a);
    uint64_t tag = a.tag;
    SequenceResult res = std::move(a.res);
    slots[slot].reset();
    source.onFinish(tag, std::move(res));
  };
  // Recompute preemption (vLLM's): the sequence gives back its slot and
  // pages and waits at the front of the queue; readmitted, it prefills its
  // prompt and generated tokens again and goes on sampling where it stopped
  // (its tokens were reported already and are not reported again).
  auto preempt = [&](size_t slot) {
    Seq &a = *slots[slot];
    uint64_t tag = a.tag;
    releasePages(a);
    a.prefilled = a.toPrefill = 0;
    queue.push_front(std::move(a));
    slots[slot].reset();
    ++st.preemptions;
    source.onPreempted(tag);
  };
  // The running sequence admitted last (the lowest priority), or -1.
  auto newest = [&]() {
    int64_t v = -1;
    for (size_t s = 0; s < slots.size(); ++s)
      if (slots[s] && (v < 0 || slots[s]->order > slots[size_t(v)]->order))
        v = int64_t(s);
    return v;
  };
  auto decoding = [](const Seq &a) { return a.prefilled == a.toPrefill; };
  auto runningNow = [&]() {
    return std::count_if(slots.begin(), slots.end(), [](auto &a) { return a.has_value(); });
  };

  // Running sequences first: each one whose decode row of this step
  // crosses into a new page takes one, oldest first; when none is free the
  // newest running sequence is preempted (it may be the one that grows).
  auto growRunning = [&]() {
    std::vector<size_t> byOrder;
    for (size_t s = 0; s < slots.size(); ++s)
      if (slots[s])
        byOrder.push_back(s);
    std::sort(byOrder.begin(), byOrder.end(),
              [&](size_t x, size_t y) { return slots[x]->order < slots[y]->order; });
    for (size_t s : byOrder) {
      while (slots[s] && decoding(*slots[s]) &&
             int64_t(slots[s]->pages.size()) * ps < int64_t(slots[s]->tokens.size())) {
        if (!freePages.empty()) {
          slots[s]->pages.push_back(freePages.back());
          freePages.pop_back();
          session.setPages(int64_t(s), slots[s]->pages);
          continue;
        }
        int64_t v = newest();
        // Cannot happen: the pool holds one sequence of the plan's full
        // length (PlanReader), and a sequence alone has every page.
        if (v == int64_t(s) && runningNow() == 1)
          fail("sequence {} needs more KV pages than the plan has", slots[s]->tag);
        preempt(size_t(v));
      }
    }
  };
  // Pages the admissions of a step leave free: one for every running
  // sequence whose decode row crosses into a new page at the next step (a
  // watermark, so that admitting never forces a preemption at once).
  auto pagesForNextStep = [&]() {
    int64_t n = 0;
    for (auto &a : slots)
      n += a && decoding(*a) && int64_t(a->res.output.size()) + 1 < a->req.maxNewTokens &&
           int64_t(a->pages.size()) * ps < int64_t(a->tokens.size()) + 1;
    return n;
  };

  bool open = true;
  std::vector<std::pair<uint64_t, SequenceRequest>> incoming;
  std::vector<int64_t> ids, pos, seq, logitRows;
  std::vector<size_t> logitSlot;
  std::vector<int64_t> picked;
  for (;;) {
    int64_t running = 0;
    for (auto &a : slots)
      running += a.has_value();
    if (open) {
      incoming.clear();
      open = source.poll(incoming, running == 0 && queue.empty());
      int64_t now = nowNs();
      for (auto &[tag, r] : incoming) {
        if (std::string why = checkRequest(plan, r); !why.empty()) {
          SequenceResult res;
          res.error = std::move(why);
          source.onFinish(tag, std::move(res));
          continue;
        }
        Seq q;
        q.tag = tag;
        q.req = std::move(r);
        q.arrivalNs = now;
        q.tokens = q.req.prompt;
        q.state = q.req.seed;
        q.eos = q.req.eosIds.empty() ? planEos : q.req.eosIds;
        queue.push_back(std::move(q));
      }
    }
    // Cancelled sequences leave before the step: their slots and pages are
    // free for the admissions below. A preempted one in the queue keeps the
    // tokens it generated.
    for (size_t s = 0; s < slots.size(); ++s)
      if (slots[s] && source.cancelled(slots[s]->tag))
        finish(s, "cancelled");
    for (auto it = queue.begin(); it != queue.end();) {
      if (!source.cancelled(it->tag)) {
        ++it;
        continue;
      }
      uint64_t tag = it->tag;
      SequenceResult res = std::move(it->res);
      it = queue.erase(it);
      res.finishReason = "cancelled";
      source.onFinish(tag, std::move(res));
    }
    growRunning(); // running sequences take their pages before admissions
    // Admit queued sequences into free slots, in order, while pages last.
    const int64_t reserve = pagesForNextStep();
    for (size_t s = 0; s < slots.size() && !queue.empty(); ++s) {
      if (slots[s])
        continue;
      Seq &q = queue.front();
      if (q.req.maxNewTokens == 0) { // nothing to generate: no step needed
        uint64_t tag = q.tag;
        queue.pop_front();
        SequenceResult res;
        res.finishReason = "length";
        source.onFinish(tag, std::move(res));
        --s;
        continue;
      }
      int64_t need = admissionPages(q, ps);
      if (int64_t(freePages.size()) < need + reserve) {
        ++st.pageWaits;
        break;
      }
      Seq a = std::move(q);
      queue.pop_front();
      if (a.order < 0)
        a.order = admissions++;
      a.toPrefill = int64_t(a.tokens.size());
      a.prefilled = 0;
      for (int64_t k = 0; k < need; ++k) {
        a.pages.push_back(freePages.back());
        freePages.pop_back();
      }
      session.setPages(int64_t(s), a.pages);
      slots[s] = std::move(a);
    }
    int64_t active = 0;
    for (auto &a : slots)
      active += a.has_value();
    if (active == 0) {
      if (queue.empty()) {
        if (!open)
          break;
        continue; // the source is open: poll again (it may block while idle)
      }
      // Cannot happen: an empty pool holds any one sequence (PlanReader).
      fail("sequence {} needs more KV pages than the plan has", queue.front().tag);
    }
    st.peakRunning = std::max(st.peakRunning, active);

    // The step: a decode row per generating sequence, then prompt chunks in
    // admission order within max_tokens rows.
    ids.clear(), pos.clear(), seq.clear(), logitRows.clear(), logitSlot.clear();
    for (size_t s = 0; s < slots.size(); ++s) {
      Seq *a = slots[s] ? &*slots[s] : nullptr;
      if (!a || !decoding(*a))
        continue;
      logitRows.push_back(int64_t(ids.size()));
      logitSlot.push_back(s);
      ids.push_back(a->tokens.back());
      pos.push_back(int64_t(a->tokens.size()) - 1);
      seq.push_back(int64_t(s));
      ++st.decodeRows;
    }
    std::vector<size_t> prefilling;
    for (size_t s = 0; s < slots.size(); ++s)
      if (slots[s] && !decoding(*slots[s]))
        prefilling.push_back(s);
    std::sort(prefilling.begin(), prefilling.end(),
              [&](size_t x, size_t y) { return slots[x]->order < slots[y]->order; });
    for (size_t s : prefilling) {
      Seq &a = *slots[s];
      int64_t room = maxT - int64_t(ids.size());
      if (room <= 0)
        break;
      int64_t n = std::min({a.toPrefill - a.prefilled, chunk, room});
      for (int64_t k = 0; k < n; ++k) {
        ids.push_back(a.tokens[size_t(a.prefilled + k)]);
        pos.push_back(a.prefilled + k);
        seq.push_back(int64_t(s));
      }
      a.prefilled += n;
      st.prefillRows += n;
      if (a.prefilled == a.toPrefill) {
        logitRows.push_back(int64_t(ids.size()) - 1);
        logitSlot.push_back(s);
      }
    }
    session.forwardBatch({ids, pos, seq, logitRows});
    ++st.steps;
    st.occupancySum += double(active) / double(B);

    // Rank 0 samples each sequence's token; every rank continues with them.
    picked.assign(logitRows.size(), 0);
    if (comm.rank() == 0)
      for (size_t i = 0; i < logitRows.size(); ++i) {
        Seq &a = *slots[logitSlot[i]];
        const SequenceRequest &r = a.req;
        picked[i] = session.sampleRow(int64_t(i), r.temperature, r.topP, a.state);
      }
    if (comm.size() > 1 && !picked.empty())
      comm.broadcast(picked.data(), picked.size() * sizeof(int64_t), 0, {});
    for (size_t i = 0; i < logitRows.size(); ++i) {
      size_t s = logitSlot[i];
      Seq &a = *slots[s];
      const SequenceRequest &r = a.req;
      SequenceResult &res = a.res;
      int64_t tok = picked[i];
      a.tokens.push_back(tok);
      res.output.push_back(tok);
      res.tokenMs.push_back(msSince(a.arrivalNs));
      source.onToken(a.tag, tok);
      bool stop = r.stopAtEos && std::find(a.eos.begin(), a.eos.end(), tok) != a.eos.end();
      for (const auto &sq : r.stopIds)
        stop = stop || endsWith(res.output, sq);
      if (!stop && r.stopCheck)
        stop = r.stopCheck(res.output);
      if (stop)
        finish(s, "stop");
      else if (int64_t(res.output.size()) == r.maxNewTokens)
        finish(s, "length");
    }
    int64_t left = 0;
    for (auto &a : slots)
      left += a.has_value();
    source.onStep(left, int64_t(queue.size()));
  }
  // Every page is back once every sequence has left (finished, cancelled,
  // or preempted and then finished).
  if (int64_t(freePages.size()) != plan.kvPages())
    fail("internal: {} of {} KV pages not freed after the run", plan.kvPages() -
         int64_t(freePages.size()), plan.kvPages());
  st.wallMs = msSince(t0);
  if (stats)
    *stats = st;
}

namespace {

/// generateBatch's source: every request at the first poll, then closed.
class ListSource final : public RequestSource {
public:
  ListSource(std::span<const SequenceRequest> requests, std::vector<SequenceResult> &results,
             const BatchOptions &opts)
      : requests_(requests), results_(results), opts_(opts) {}
  bool poll(std::vector<std::pair<uint64_t, SequenceRequest>> &out, bool) override {
    for (size_t i = 0; i < requests_.size(); ++i)
      out.emplace_back(uint64_t(i), requests_[i]);
    return false;
  }
  void onFinish(uint64_t tag, SequenceResult result) override {
    results_[tag] = std::move(result);
    // As before the engine streamed: a refused request never ran, no call.
    if (opts_.onFinish && results_[tag].error.empty())
      opts_.onFinish(size_t(tag), results_[tag]);
  }

private:
  std::span<const SequenceRequest> requests_;
  std::vector<SequenceResult> &results_;
  const BatchOptions &opts_;
};

} // namespace

std::vector<SequenceResult> generateBatch(Session &session, Comm &comm,
                                          std::span<const SequenceRequest> requests,
                                          const BatchOptions &opts, BatchStats *stats) {
  std::vector<SequenceResult> results(requests.size());
  ListSource source(requests, results, opts);
  runBatchEngine(session, comm, source, opts, stats);
  return results;
}

} // namespace moert
