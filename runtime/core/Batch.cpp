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
  // Per data-parallel group: B slots, max_tokens rows a step, its own pool
  // of KV pages. Slot s is group s / B's local slot s % B.
  const int64_t B = opts.maxBatch > 0 ? std::min(opts.maxBatch, plan.maxBatch()) : plan.maxBatch();
  const int G = plan.dataParallel();
  const int members = comm.size() / G;
  const int myGroup = comm.rank() / members;
  const int64_t chunk = opts.prefillChunk > 0 ? std::min(opts.prefillChunk, maxT) : maxT;
  const plan::ModelInfo &m = *plan.plan().model();
  std::vector<int64_t> planEos;
  if (m.eos_token_ids())
    planEos.assign(m.eos_token_ids()->begin(), m.eos_token_ids()->end());
  auto groupOf = [&](size_t slot) { return int(int64_t(slot) / B); };
  auto localSlot = [&](size_t slot) { return int64_t(slot) % B; };

  std::deque<Seq> queue;
  // Free pages per group, lowest number on top.
  std::vector<std::vector<int32_t>> freePages(static_cast<size_t>(G));
  for (auto &fp : freePages)
    for (int64_t p = plan.kvPages() - 1; p >= 0; --p)
      fp.push_back(int32_t(p));
  std::vector<std::optional<Seq>> slots(static_cast<size_t>(B * G));
  int64_t admissions = 0;
  BatchStats st;
  st.maxBatch = B * G;
  const int64_t t0 = nowNs();
  auto msSince = [](int64_t from) { return double(nowNs() - from) / 1e6; };

  // The session holds the page tables of this rank's group only.
  auto setPages = [&](size_t slot) {
    if (groupOf(slot) == myGroup)
      session.setPages(localSlot(slot), slots[slot]->pages);
  };
  auto releasePages = [&](size_t slot, Seq &a) {
    auto &fp = freePages[size_t(groupOf(slot))];
    fp.insert(fp.end(), a.pages.rbegin(), a.pages.rend());
    a.pages.clear();
  };
  auto finish = [&](size_t slot, const char *reason) {
    Seq &a = *slots[slot];
    a.res.finishReason = reason;
    releasePages(slot, a);
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
    releasePages(slot, a);
    a.prefilled = a.toPrefill = 0;
    queue.push_front(std::move(a));
    slots[slot].reset();
    ++st.preemptions;
    source.onPreempted(tag);
  };
  // The running sequence of group g admitted last (the lowest priority), or -1.
  auto newest = [&](int g) {
    int64_t v = -1;
    for (size_t s = size_t(g * B); s < size_t((g + 1) * B); ++s)
      if (slots[s] && (v < 0 || slots[s]->order > slots[size_t(v)]->order))
        v = int64_t(s);
    return v;
  };
  auto decoding = [](const Seq &a) { return a.prefilled == a.toPrefill; };
  auto runningIn = [&](int g) {
    return std::count_if(slots.begin() + g * B, slots.begin() + (g + 1) * B,
                         [](auto &a) { return a.has_value(); });
  };

  // Running sequences first: each one whose decode row of this step
  // crosses into a new page takes one of its group's, oldest first; when
  // none is free the newest running sequence of the group is preempted (it
  // may be the one that grows).
  auto growRunning = [&]() {
    std::vector<size_t> byOrder;
    for (size_t s = 0; s < slots.size(); ++s)
      if (slots[s])
        byOrder.push_back(s);
    std::sort(byOrder.begin(), byOrder.end(),
              [&](size_t x, size_t y) { return slots[x]->order < slots[y]->order; });
    for (size_t s : byOrder) {
      auto &fp = freePages[size_t(groupOf(s))];
      while (slots[s] && decoding(*slots[s]) &&
             int64_t(slots[s]->pages.size()) * ps < int64_t(slots[s]->tokens.size())) {
        if (!fp.empty()) {
          slots[s]->pages.push_back(fp.back());
          fp.pop_back();
          setPages(s);
          continue;
        }
        int64_t v = newest(groupOf(s));
        // Cannot happen: the pool holds one sequence of the plan's full
        // length (PlanReader), and a sequence alone has every page.
        if (v == int64_t(s) && runningIn(groupOf(s)) == 1)
          fail("sequence {} needs more KV pages than the plan has", slots[s]->tag);
        preempt(size_t(v));
      }
    }
  };
  // Pages the admissions of a step leave free in group g: one for every
  // running sequence whose decode row crosses into a new page at the next
  // step (a watermark, so that admitting never forces a preemption at once).
  auto pagesForNextStep = [&](int g) {
    int64_t n = 0;
    for (size_t s = size_t(g * B); s < size_t((g + 1) * B); ++s) {
      auto &a = slots[s];
      n += a && decoding(*a) && int64_t(a->res.output.size()) + 1 < a->req.maxNewTokens &&
           int64_t(a->pages.size()) * ps < int64_t(a->tokens.size()) + 1;
    }
    return n;
  };

  bool open = true;
  std::vector<std::pair<uint64_t, SequenceRequest>> incoming;
  // This step's rows per group; the logit rows of each group (indices into
  // its rows) and the slots they sample for.
  std::vector<std::vector<int64_t>> ids(static_cast<size_t>(G)), pos(static_cast<size_t>(G)), seq(static_cast<size_t>(G)),
      logitRows(static_cast<size_t>(G));
  std::vector<std::vector<size_t>> logitSlot(static_cast<size_t>(G));
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
    // Admit queued sequences, in order, while a group has a free slot and
    // the pages: each goes to the group running the fewest sequences (the
    // lower group on a tie) among those that can take it.
    std::vector<int64_t> reserve(static_cast<size_t>(G)), active(static_cast<size_t>(G));
    for (int g = 0; g < G; ++g) {
      reserve[size_t(g)] = pagesForNextStep(g);
      active[size_t(g)] = runningIn(g);
    }
    while (!queue.empty()) {
      Seq &q = queue.front();
      if (q.req.maxNewTokens == 0) { // nothing to generate: no step needed
        uint64_t tag = q.tag;
        queue.pop_front();
        SequenceResult res;
        res.finishReason = "length";
        source.onFinish(tag, std::move(res));
        continue;
      }
      int64_t need = admissionPages(q, ps);
      int best = -1;
      bool slotFree = false;
      for (int g = 0; g < G; ++g) {
        if (active[size_t(g)] == B)
          continue;
        slotFree = true;
        if (int64_t(freePages[size_t(g)].size()) >= need + reserve[size_t(g)] &&
            (best < 0 || active[size_t(g)] < active[size_t(best)]))
          best = g;
      }
      if (best < 0) {
        st.pageWaits += slotFree;
        break;
      }
      size_t s = size_t(best * B);
      while (slots[s])
        ++s;
      Seq a = std::move(q);
      queue.pop_front();
      if (a.order < 0)
        a.order = admissions++;
      a.toPrefill = int64_t(a.tokens.size());
      a.prefilled = 0;
      auto &fp = freePages[size_t(best)];
      for (int64_t k = 0; k < need; ++k) {
        a.pages.push_back(fp.back());
        fp.pop_back();
      }
      slots[s] = std::move(a);
      setPages(s);
      ++active[size_t(best)];
    }
    int64_t activeAll = 0;
    for (auto &a : slots)
      activeAll += a.has_value();
    if (activeAll == 0) {
      if (queue.empty()) {
        if (!open)
          break;
        continue; // the source is open: poll again (it may block while idle)
      }
      // Cannot happen: an empty pool holds any one sequence (PlanReader).
      fail("sequence {} needs more KV pages than the plan has", queue.front().tag);
    }
    st.peakRunning = std::max(st.peakRunning, activeAll);

    // The step of each group: a decode row per generating sequence, then
    // prompt chunks in admission order within max_tokens rows.
    for (int g = 0; g < G; ++g) {
      auto &gi = ids[size_t(g)], &gp = pos[size_t(g)], &gs = seq[size_t(g)],
           &gl = logitRows[size_t(g)];
      auto &gls = logitSlot[size_t(g)];
      gi.clear(), gp.clear(), gs.clear(), gl.clear(), gls.clear();
      for (size_t s = size_t(g * B); s < size_t((g + 1) * B); ++s) {
        Seq *a = slots[s] ? &*slots[s] : nullptr;
        if (!a || !decoding(*a))
          continue;
        gl.push_back(int64_t(gi.size()));
        gls.push_back(s);
        gi.push_back(a->tokens.back());
        gp.push_back(int64_t(a->tokens.size()) - 1);
        gs.push_back(localSlot(s));
        ++st.decodeRows;
      }
      std::vector<size_t> prefilling;
      for (size_t s = size_t(g * B); s < size_t((g + 1) * B); ++s)
        if (slots[s] && !decoding(*slots[s]))
          prefilling.push_back(s);
      std::sort(prefilling.begin(), prefilling.end(),
                [&](size_t x, size_t y) { return slots[x]->order < slots[y]->order; });
      for (size_t s : prefilling) {
        Seq &a = *slots[s];
        int64_t room = maxT - int64_t(gi.size());
        if (room <= 0)
          break;
        int64_t n = std::min({a.toPrefill - a.prefilled, chunk, room});
        for (int64_t k = 0; k < n; ++k) {
          gi.push_back(a.tokens[size_t(a.prefilled + k)]);
          gp.push_back(a.prefilled + k);
          gs.push_back(localSlot(s));
        }
        a.prefilled += n;
        st.prefillRows += n;
        if (a.prefilled == a.toPrefill) {
          gl.push_back(int64_t(gi.size()) - 1);
          gls.push_back(s);
        }
      }
    }
    const size_t me = size_t(myGroup);
    session.forwardBatch({ids[me], pos[me], seq[me], logitRows[me]});
    ++st.steps;
    st.occupancySum += double(activeAll) / double(B * G);

    // The first rank of each group samples the group's sequences and sends
    // every rank the tokens with the samplers' states (so the states stay
    // the same everywhere, whichever group a sequence runs in next).
    for (int g = 0; g < G; ++g) {
      const auto &gls = logitSlot[size_t(g)];
      if (gls.empty())
        continue;
      picked.assign(2 * gls.size(), 0);
      const int leader = g * members;
      if (comm.rank() == leader)
        for (size_t i = 0; i < gls.size(); ++i) {
          Seq &a = *slots[gls[i]];
          const SequenceRequest &r = a.req;
          picked[2 * i] = session.sampleRow(int64_t(i), r.temperature, r.topP, a.state);
          picked[2 * i + 1] = int64_t(a.state);
        }
      if (comm.size() > 1)
        comm.broadcast(picked.data(), picked.size() * sizeof(int64_t), leader, {});
      for (size_t i = 0; i < gls.size(); ++i) {
        size_t s = gls[i];
        Seq &a = *slots[s];
        const SequenceRequest &r = a.req;
        SequenceResult &res = a.res;
        int64_t tok = picked[2 * i];
        a.state = uint64_t(picked[2 * i + 1]);
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
    }
    int64_t left = 0;
    for (auto &a : slots)
      left += a.has_value();
    source.onStep(left, int64_t(queue.size()));
  }
  // Every page is back once every sequence has left (finished, cancelled,
  // or preempted and then finished).
  for (int g = 0; g < G; ++g)
    if (int64_t(freePages[size_t(g)].size()) != plan.kvPages())
      fail("internal: {} of {} KV pages of group {} not freed after the run",
           plan.kvPages() - int64_t(freePages[size_t(g)].size()), plan.kvPages(), g);
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
