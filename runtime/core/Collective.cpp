//===- Collective.cpp - A plan Collective step on a communicator ----------===//
//
// Shared by every backend: which communicator call a Collective step makes
// and with which counts is the plan's semantics, not a backend's.
//
//===----------------------------------------------------------------------===//
#include "moert/Backend.h"
#include "moert/Comm.h"

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

} // namespace moert
