//===- Collective.cpp - A plan Collective step on a communicator ----------===//
//
// Shared by every backend: which communicator call a Collective step makes
// and with which counts is the plan's semantics, not a backend's.
//
//===----------------------------------------------------------------------===//
#include "moert/Backend.h"
#include "moert/Comm.h"

#include <algorithm>

namespace moert {

void runCollective(Comm &comm, const plan::Collective &op, const StepArgs &a,
                   const std::function<void(void *dst, const void *src, uint64_t bytes)> &copy) {
  std::span<const int> g;
  if (op.group())
    g = std::span<const int>(op.group()->data(), op.group()->size());
  size_t n = size_t(a.rows(op.buf()) * a.ld(op.buf()));
  size_t G = size_t(comm.groupSize(g));
  float *b = a.f32(op.buf());
  const bool copyOut = op.out() != -1 && op.out() != op.buf();
  using K = plan::CollectiveKind;
  if (G == 1) {
    if (copyOut)
      copy(a.f32(op.out()), b, n * 4);
    return;
  }
  switch (op.kind()) {
  case K::AllReduceSum:
    comm.allReduceSum(b, n, g);
    break;
  case K::AllGather:
    comm.allGather(b, n, a.f32(op.out()), g);
    break;
  case K::AllToAll:
    comm.allToAll(b, n / G, a.f32(op.out()), g);
    break;
  case K::ReduceScatterSum:
    comm.reduceScatterSum(b, n / G, a.f32(op.out()), g);
    break;
  case K::Broadcast:
    comm.broadcast(b, n * 4, 0, g);
    if (copyOut)
      copy(a.f32(op.out()), b, n * 4);
    break;
  }
}

void gatherVocabulary(Comm &comm, const flatbuffers::Vector<int32_t> &group, float *logits,
                      int64_t rows, int64_t V, float *scratch,
                      const std::function<void(void *dst, const void *src, uint64_t bytes)> &copy) {
  std::span<const int> g(group.data(), group.size());
  const int64_t G = int64_t(g.size());
  if (G <= 1 || rows <= 0)
    return;
  const int64_t part = V / G;
  const int64_t index = std::find(g.begin(), g.end(), comm.rank()) - g.begin();
  // Pack this member's columns, gather every member's [rows, part] block in
  // group order, and put each block's rows back at its columns.
  float *mine = scratch, *all = scratch + rows * part;
  const uint64_t rowBytes = uint64_t(part) * 4;
  for (int64_t r = 0; r < rows; ++r)
    copy(mine + r * part, logits + r * V + index * part, rowBytes);
  comm.allGather(mine, size_t(rows * part), all, g);
  for (int64_t m = 0; m < G; ++m)
    if (m != index)
      for (int64_t r = 0; r < rows; ++r)
        copy(logits + r * V + m * part, all + (m * rows + r) * part, rowBytes);
}

} // namespace moert
