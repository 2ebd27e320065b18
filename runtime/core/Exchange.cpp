//===- Exchange.cpp - AllToAllV steps of data-parallel expert layers ------===//
//
// Shared by host-memory backends: which rows go to which rank is the plan's
// semantics (plan.fbs AllToAllV), not a backend's. Each stage sends counts
// first (an all-to-all of one value per member), then the rows and their
// metadata (all-to-all-v), so a receiver sizes nothing in advance beyond the
// plan's buffers.
//
// Over nodes of P ranks (ranks_per_node, M = N / P nodes) the dispatch runs
// in two stages (DeepSpeed-MoE's hierarchical all-to-all): within the node
// every row goes to the relay with its destination's local index, then
// across nodes among the ranks with that local index to the destination;
// M - 1 inter-node messages per rank instead of N - P. The combine reverses
// both. One node (P = N) is the flat exchange: the relay is the destination.
//
//===----------------------------------------------------------------------===//
#include "moert/Backend.h"
#include "moert/Comm.h"
#include "moert/Error.h"

#include <cstring>
#include <numeric>

namespace moert {

namespace {

/// Rows a buffer holds (its size in the arena): exchanged row counts depend
/// on every group's rows, not on this rank's.
size_t capacity(const StepArgs &a, int32_t buf) {
  return size_t((*a.buffers)[size_t(buf)].maxRows);
}

size_t sum(std::span<const size_t> v) { return std::accumulate(v.begin(), v.end(), size_t(0)); }

/// Exclusive prefix sums of counts, times `width` values per row.
std::vector<size_t> offsetsOf(std::span<const size_t> counts, size_t width) {
  std::vector<size_t> o(counts.size(), 0);
  for (size_t i = 1; i < counts.size(); ++i)
    o[i] = o[i - 1] + counts[i - 1] * width;
  return o;
}

std::vector<size_t> scaled(std::span<const size_t> counts, size_t width) {
  std::vector<size_t> s(counts.begin(), counts.end());
  for (size_t &c : s)
    c *= width;
  return s;
}

/// The two groups of a rank: its node's ranks, and the ranks with its local
/// index on every node.
struct Topology {
  int N, P, M, node, local;
  Topology(int n, int me, int perNode)
      : N(n), P(perNode > 0 && n % perNode == 0 ? perNode : n), M(N / P), node(me / P),
        local(me % P) {}
  std::vector<int> nodeGroup() const {
    std::vector<int> g(static_cast<size_t>(P));
    std::iota(g.begin(), g.end(), node * P);
    return g;
  }
  std::vector<int> peerGroup() const {
    std::vector<int> g;
    for (int n = 0; n < M; ++n)
      g.push_back(n * P + local);
    return g;
  }
};

/// One stage: rows of `width` floats packed per member (sendCounts), to the
/// members of `group`; received rows land in `out` (at most `cap` rows) in
/// member order. Returns the counts received from each member.
/// With `grow`, the rows land there instead (sized to what arrives).
std::vector<size_t> exchange(Comm &comm, std::span<const int> group, const float *rows,
                             std::span<const size_t> sendCounts, size_t width, float *out,
                             size_t cap, const char *what, std::vector<float> *grow = nullptr) {
  const size_t G = sendCounts.size();
  std::vector<float> cs(G), cr(G);
  for (size_t j = 0; j < G; ++j)
    cs[j] = float(sendCounts[j]); // exact below 2^24 rows
  comm.allToAll(cs.data(), 1, cr.data(), group);
  std::vector<size_t> recvCounts(G);
  for (size_t j = 0; j < G; ++j)
    recvCounts[j] = size_t(cr[j]);
  if (sum(recvCounts) > cap)
    fail("all-to-all-v {}: {} rows to receive (expected at most the plan's {})", what,
         sum(recvCounts), cap);
  if (grow) {
    grow->resize(sum(recvCounts) * width + 1);
    out = grow->data();
  }
  comm.allToAllV(rows, scaled(sendCounts, width), offsetsOf(sendCounts, width), out,
                 scaled(recvCounts, width), offsetsOf(recvCounts, width), group);
  return recvCounts;
}

/// A stage whose counts are known (the combine retraces the dispatch).
void exchangeKnown(Comm &comm, std::span<const int> group, const float *rows,
                   std::span<const size_t> sendCounts, std::span<const size_t> recvCounts,
                   size_t width, float *out) {
  comm.allToAllV(rows, scaled(sendCounts, width), offsetsOf(sendCounts, width), out,
                 scaled(recvCounts, width), offsetsOf(recvCounts, width), group);
}

/// The record in the counts buffer: rows sent and received per member in
/// the node stage (P each), then in the cross-node stage (M each).
struct Record {
  std::vector<size_t> send1, recv1, send2, recv2;
  void store(int32_t *c) const {
    size_t k = 0;
    for (const auto *v : {&send1, &recv1, &send2, &recv2})
      for (size_t x : *v)
        c[k++] = int32_t(x);
  }
  void load(const int32_t *c, const Topology &t) {
    size_t k = 0;
    for (auto [v, n] : {std::pair{&send1, t.P}, {&recv1, t.P}, {&send2, t.M}, {&recv2, t.M}}) {
      v->assign(size_t(n), 0);
      for (size_t &x : *v)
        x = size_t(std::max(0, c[k++]));
    }
  }
};

void dispatch(Comm &comm, const plan::AllToAllV &op, const StepArgs &a) {
  const Topology t(comm.size(), comm.rank(), op.ranks_per_node());
  const int K = op.top_k(), E = op.num_experts(), T = std::max(1, op.tensor_parallel());
  const int member = comm.rank() % T;
  const size_t D = size_t(a.ld(op.out()));
  const float *x = a.f32(op.in());
  const int64_t ldx = a.ld(op.in());
  const int32_t *sorted = a.i32(op.sorted_slots());
  const int32_t *offsets = a.i32(op.expert_offsets());
  const auto &targets = *op.targets();
  const auto &toff = *op.target_offsets();
  const int S = std::max(1, op.slices());

  // Rows per destination rank, in sorted-slot order (grouped by expert).
  std::vector<std::vector<int32_t>> slotsTo(static_cast<size_t>(t.N)),
      expertTo(static_cast<size_t>(t.N));
  for (int e = 0; e < E; ++e) {
    const int32_t first = toff[unsigned(e)], n = toff[unsigned(e) + 1] - first;
    for (int32_t j = offsets[e]; j < offsets[e + 1]; ++j) {
      const int32_t slot = sorted[j];
      if ((slot / K) % T != member)
        continue;
      auto to = [&](int32_t r) {
        slotsTo[size_t(r)].push_back(slot);
        expertTo[size_t(r)].push_back(e);
      };
      if (S > 1)
        for (int32_t p = 0; p < n; ++p)
          to(targets[unsigned(first + p)]);
      else
        to(targets[unsigned(first + (j - offsets[e]) % n)]);
    }
  }
  // Node stage: to the relay with the destination's local index, ordered by
  // destination node (so the relay forwards contiguous runs). Metadata per
  // row: its expert, and across nodes its destination node.
  const size_t W = t.M > 1 ? 2 : 1;
  Record rec;
  rec.send1.assign(size_t(t.P), 0);
  size_t sent = 0;
  for (const auto &v : slotsTo)
    sent += v.size();
  if (sent > capacity(a, op.send_slots()))
    fail("all-to-all-v dispatch: {} rows to send (expected at most the plan's {})", sent,
         capacity(a, op.send_slots()));
  int32_t *sendSlots = a.i32(op.send_slots());
  // (At least one element each: no null buffers reach the communicator.)
  std::vector<float> rows(sent * D + 1), meta(sent * W + 1);
  size_t k = 0;
  for (int l = 0; l < t.P; ++l)
    for (int n = 0; n < t.M; ++n) {
      const size_t d = size_t(n * t.P + l);
      for (size_t i = 0; i < slotsTo[d].size(); ++i, ++k) {
        sendSlots[k] = slotsTo[d][i];
        std::memcpy(rows.data() + k * D, x + int64_t(slotsTo[d][i] / K) * ldx, D * 4);
        meta[k * W] = float(expertTo[d][i]);
        if (W == 2)
          meta[k * W + 1] = float(n);
      }
      rec.send1[size_t(l)] += slotsTo[d].size();
    }

  float *out = a.f32(op.out());
  const size_t cap = std::min(capacity(a, op.out()), capacity(a, op.recv_sorted()));
  std::vector<float> ids; // the expert of every row received
  if (t.M == 1) {
    // One node: the relay is the destination.
    const std::vector<int> g = t.P == t.N ? std::vector<int>{} : t.nodeGroup();
    rec.recv1 = exchange(comm, g, rows.data(), rec.send1, D, out, cap, "dispatch");
    ids.resize(sum(rec.recv1) + 1);
    exchangeKnown(comm, g, meta.data(), rec.send1, rec.recv1, W, ids.data());
    rec.send2 = rec.recv2 = {0};
  } else {
    // Node stage (a no-op with one rank per node), then the relay forwards
    // by destination node.
    std::vector<float> rows1, meta1;
    if (t.P > 1) {
      const std::vector<int> g = t.nodeGroup();
      rec.recv1 = exchange(comm, g, rows.data(), rec.send1, D, nullptr, capacity(a, op.relay()),
                           "dispatch (node stage)", &rows1);
      meta1.resize(sum(rec.recv1) * W + 1);
      exchangeKnown(comm, g, meta.data(), rec.send1, rec.recv1, W, meta1.data());
    } else {
      rec.recv1 = rec.send1;
      rows1 = std::move(rows);
      meta1 = std::move(meta);
    }
    const size_t R1 = sum(rec.recv1);
    if (R1 > capacity(a, op.relay()))
      fail("all-to-all-v dispatch: {} rows to relay (expected at most the plan's {})", R1,
           capacity(a, op.relay()));
    // Stable counting sort by destination node; perm[j] = the relayed row
    // sent j-th.
    int32_t *perm = a.i32(op.relay());
    rec.send2.assign(size_t(t.M), 0);
    for (size_t i = 0; i < R1; ++i) {
      const int n = int(meta1[i * W + 1]);
      if (n < 0 || n >= t.M)
        fail("all-to-all-v dispatch: a row for node {} (expected 0..{})", n, t.M - 1);
      ++rec.send2[size_t(n)];
    }
    std::vector<size_t> at = offsetsOf(rec.send2, 1);
    std::vector<float> rows2(R1 * D + 1), ids2(R1 + 1);
    for (size_t i = 0; i < R1; ++i) {
      const size_t j = at[size_t(meta1[i * W + 1])]++;
      perm[j] = int32_t(i);
      std::memcpy(rows2.data() + j * D, rows1.data() + i * D, D * 4);
      ids2[j] = meta1[i * W];
    }
    const std::vector<int> g = t.peerGroup();
    rec.recv2 = exchange(comm, g, rows2.data(), rec.send2, D, out, cap, "dispatch (node-to-node)");
    ids.resize(sum(rec.recv2) + 1);
    exchangeKnown(comm, g, ids2.data(), rec.send2, rec.recv2, 1, ids.data());
  }
  rec.store(a.i32(op.counts()));

  // The received rows grouped by expert (a counting sort, stable).
  const size_t received = t.M == 1 ? sum(rec.recv1) : sum(rec.recv2);
  int32_t *ro = a.i32(op.recv_offsets());
  int32_t *rs = a.i32(op.recv_sorted());
  std::vector<int32_t> fill(static_cast<size_t>(E) + 1, 0);
  for (size_t i = 0; i < received; ++i) {
    const int e = int(ids[i]);
    if (e < 0 || e >= E)
      fail("all-to-all-v dispatch: a row for expert {} (expected 0..{})", e, E - 1);
    ++fill[size_t(e) + 1];
  }
  for (int e = 0; e < E; ++e)
    fill[size_t(e) + 1] += fill[size_t(e)];
  std::copy(fill.begin(), fill.end(), ro);
  for (size_t i = 0; i < received; ++i)
    rs[fill[size_t(ids[i])]++] = int32_t(i);
}

void combine(Comm &comm, const plan::AllToAllV &op, const StepArgs &a) {
  const Topology t(comm.size(), comm.rank(), op.ranks_per_node());
  const size_t D = size_t(a.ld(op.out()));
  Record rec;
  rec.load(a.i32(op.counts()), t);
  const size_t R1 = sum(rec.recv1), back = sum(rec.send1);
  const size_t finalRows = t.M == 1 ? R1 : sum(rec.recv2);
  if (back > capacity(a, op.send_slots()) || finalRows > capacity(a, op.in()) ||
      (t.M > 1 && (R1 > capacity(a, op.relay()) || sum(rec.send2) != R1)))
    fail("all-to-all-v combine: a record of {} rows back, {} relayed and {} computed (expected "
         "the dispatch's, within the plan's buffers)",
         back, R1, finalRows);
  // The outputs in the node stage's receive order.
  std::vector<float> relayed;
  const float *r1 = a.f32(op.in());
  if (t.M > 1) {
    std::vector<float> tmp(R1 * D + 1);
    exchangeKnown(comm, t.peerGroup(), a.f32(op.in()), rec.recv2, rec.send2, D, tmp.data());
    relayed.resize(R1 * D + 1);
    const int32_t *perm = a.i32(op.relay());
    for (size_t j = 0; j < R1; ++j) {
      if (perm[j] < 0 || size_t(perm[j]) >= R1)
        fail("all-to-all-v combine: relayed row {} (expected 0..{})", perm[j], R1 - 1);
      std::memcpy(relayed.data() + size_t(perm[j]) * D, tmp.data() + j * D, D * 4);
    }
    r1 = relayed.data();
  }
  std::vector<float> rows(back * D + 1);
  if (t.P > 1 || t.M == 1) {
    const std::vector<int> g = t.M == 1 && t.P == t.N ? std::vector<int>{} : t.nodeGroup();
    exchangeKnown(comm, g, r1, rec.recv1, rec.send1, D, rows.data());
  } else {
    std::memcpy(rows.data(), r1, back * D * 4);
  }
  float *out = a.f32(op.out());
  std::memset(out, 0, size_t(a.rows(op.out())) * D * 4);
  const int32_t *sendSlots = a.i32(op.send_slots());
  const size_t slotsOut = size_t(a.rows(op.out()));
  for (size_t i = 0; i < back; ++i) {
    if (sendSlots[i] < 0 || size_t(sendSlots[i]) >= slotsOut)
      fail("all-to-all-v combine: slot {} (expected 0..{})", sendSlots[i], slotsOut - 1);
    float *o = out + size_t(sendSlots[i]) * D;
    const float *r = rows.data() + i * D;
    for (size_t c = 0; c < D; ++c)
      o[c] += r[c];
  }
}

} // namespace

void runAllToAllV(Comm &comm, const plan::AllToAllV &op, const StepArgs &a) {
  if (op.kind() == plan::ExchangeKind::Dispatch)
    dispatch(comm, op, a);
  else
    combine(comm, op, a);
}

} // namespace moert
