//===- Exchange.cpp - AllToAllV steps of data-parallel expert layers ------===//
//
// Shared by host-memory backends: which rows go to which rank is the plan's
// semantics (plan.fbs AllToAllV), not a backend's. Counts travel first (an
// all-to-all of one value per peer), then the rows and their experts (two
// all-to-all-v), so a receiver sizes nothing in advance beyond the plan's
// buffers. The combine sends the received rows' outputs back in the order
// they came, and the sender adds them at the slots it recorded.
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
size_t capacity(const StepArgs &a, int32_t buf) { return size_t((*a.buffers)[size_t(buf)].maxRows); }

/// Exclusive prefix sums of counts (times `width` values per row).
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

void dispatch(Comm &comm, const plan::AllToAllV &op, const StepArgs &a) {
  const int N = comm.size(), me = comm.rank();
  const int K = op.top_k(), E = op.num_experts(), T = std::max(1, op.tensor_parallel());
  const int member = me % T;
  const size_t D = size_t(a.ld(op.out()));
  const float *x = a.f32(op.in());
  const int64_t ldx = a.ld(op.in());
  const int32_t *sorted = a.i32(op.sorted_slots());
  const int32_t *offsets = a.i32(op.expert_offsets());
  const auto &targets = *op.targets();
  const auto &toff = *op.target_offsets();
  const int S = std::max(1, op.slices());

  // Rows per destination, in sorted-slot order (so grouped by expert).
  std::vector<std::vector<int32_t>> slotsTo(static_cast<size_t>(N)), expertTo(static_cast<size_t>(N));
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
  std::vector<size_t> sendCounts(static_cast<size_t>(N)), recvCounts(static_cast<size_t>(N));
  for (int r = 0; r < N; ++r)
    sendCounts[size_t(r)] = slotsTo[size_t(r)].size();
  const size_t sent = std::accumulate(sendCounts.begin(), sendCounts.end(), size_t(0));
  const size_t maxSend = capacity(a, op.send_slots());
  if (sent > maxSend)
    fail("all-to-all-v dispatch: {} rows to send (expected at most the plan's {})", sent,
         maxSend);
  // Counts: one value per peer (floats hold them exactly below 2^24 rows).
  std::vector<float> cs(static_cast<size_t>(N)), cr(static_cast<size_t>(N));
  for (int r = 0; r < N; ++r)
    cs[size_t(r)] = float(sendCounts[size_t(r)]);
  comm.allToAll(cs.data(), 1, cr.data(), {});
  for (int r = 0; r < N; ++r)
    recvCounts[size_t(r)] = size_t(cr[size_t(r)]);
  const size_t received = std::accumulate(recvCounts.begin(), recvCounts.end(), size_t(0));
  const size_t maxRecv = std::min(capacity(a, op.out()), capacity(a, op.recv_sorted()));
  if (received > maxRecv)
    fail("all-to-all-v dispatch: {} rows to receive (expected at most the plan's {})", received,
         maxRecv);

  // The record for the combine: slots sent in send order, counts.
  int32_t *sendSlots = a.i32(op.send_slots());
  int32_t *counts = a.i32(op.counts());
  // (At least one element each: no null buffers reach the communicator.)
  std::vector<float> rows(sent * D + 1), ids(sent + 1), recvIds(received + 1);
  size_t k = 0;
  for (int r = 0; r < N; ++r) {
    counts[r] = int32_t(sendCounts[size_t(r)]);
    counts[N + r] = int32_t(recvCounts[size_t(r)]);
    for (size_t i = 0; i < slotsTo[size_t(r)].size(); ++i, ++k) {
      const int32_t slot = slotsTo[size_t(r)][i];
      sendSlots[k] = slot;
      std::memcpy(rows.data() + k * D, x + int64_t(slot / K) * ldx, D * 4);
      ids[k] = float(expertTo[size_t(r)][i]);
    }
  }
  comm.allToAllV(rows.data(), scaled(sendCounts, D), offsetsOf(sendCounts, D), a.f32(op.out()),
                 scaled(recvCounts, D), offsetsOf(recvCounts, D), {});
  comm.allToAllV(ids.data(), sendCounts, offsetsOf(sendCounts, 1), recvIds.data(), recvCounts,
                 offsetsOf(recvCounts, 1), {});

  // The received rows grouped by expert (a counting sort, stable).
  int32_t *ro = a.i32(op.recv_offsets());
  int32_t *rs = a.i32(op.recv_sorted());
  std::vector<int32_t> fill(static_cast<size_t>(E) + 1, 0);
  for (size_t i = 0; i < received; ++i) {
    const int e = int(recvIds[i]);
    if (e < 0 || e >= E)
      fail("all-to-all-v dispatch: a row for expert {} (expected 0..{})", e, E - 1);
    ++fill[size_t(e) + 1];
  }
  for (int e = 0; e < E; ++e)
    fill[size_t(e) + 1] += fill[size_t(e)];
  std::copy(fill.begin(), fill.end(), ro);
  for (size_t i = 0; i < received; ++i)
    rs[fill[size_t(recvIds[i])]++] = int32_t(i);
}

void combine(Comm &comm, const plan::AllToAllV &op, const StepArgs &a) {
  const int N = comm.size();
  const size_t D = size_t(a.ld(op.out()));
  const int32_t *counts = a.i32(op.counts());
  std::vector<size_t> sendCounts(static_cast<size_t>(N)), recvCounts(static_cast<size_t>(N));
  for (int r = 0; r < N; ++r) {
    sendCounts[size_t(r)] = size_t(counts[N + r]); // back to where they came from
    recvCounts[size_t(r)] = size_t(counts[r]);
  }
  const size_t back = std::accumulate(recvCounts.begin(), recvCounts.end(), size_t(0));
  const size_t returned = std::accumulate(sendCounts.begin(), sendCounts.end(), size_t(0));
  if (back > capacity(a, op.send_slots()) || returned > capacity(a, op.in()))
    fail("all-to-all-v combine: {} rows back and {} returned (expected the dispatch's record, at "
         "most {} and {})",
         back, returned, capacity(a, op.send_slots()), capacity(a, op.in()));
  std::vector<float> rows(back * D + 1);
  comm.allToAllV(a.f32(op.in()), scaled(sendCounts, D), offsetsOf(sendCounts, D), rows.data(),
                 scaled(recvCounts, D), offsetsOf(recvCounts, D), {});
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
