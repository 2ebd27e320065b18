//===- Comm.h - Collectives between ranks -----------------------*- C++ -*-===//
//
// Backends implement only data movement (all-gather, all-to-all, broadcast,
// gather to rank 0); the sums are computed here, in group order, so every
// rank gets bitwise the same result and a sum where one rank contributes x
// and the others zeros is exactly x — expert parallelism then reproduces the
// single-rank numbers bit for bit.
//
//===----------------------------------------------------------------------===//
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace moert {

class Comm {
public:
  virtual ~Comm() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual const char *name() const = 0;

  // Groups are ascending global ranks; empty means all ranks.

  /// out = concat over group members (in group order) of their `n` floats.
  virtual void allGather(const float *in, size_t n, float *out, std::span<const int> group) = 0;
  /// in holds one chunk of `n` floats per member (chunk j is for member j);
  /// out chunk j receives the chunk member j holds for this rank.
  virtual void allToAll(const float *in, size_t n, float *out, std::span<const int> group) = 0;
  /// Copies `bytes` from the group member at index `rootIndex` to the others.
  virtual void broadcast(void *buf, size_t bytes, int rootIndex, std::span<const int> group) = 0;
  /// Rank 0 receives every rank's string (in rank order); others get {}.
  virtual std::vector<std::string> gatherToRoot(const std::string &mine) = 0;
  virtual void barrier() = 0;
  /// Ends every rank's process after an error on this one (never returns).
  [[noreturn]] virtual void abort(int code) = 0;

  /// In place: buf = sum over members, added in group order.
  void allReduceSum(float *buf, size_t n, std::span<const int> group);
  /// out (n floats) = sum over members of their chunk for this rank.
  void reduceScatterSum(const float *in, size_t n, float *out, std::span<const int> group);

  int groupSize(std::span<const int> group) const {
    return group.empty() ? size() : int(group.size());
  }

private:
  std::vector<float> tmp_;
};

/// The single-rank backend: collectives are copies.
std::unique_ptr<Comm> makeLocalComm();

/// `n` ranks in one process (one thread each) exchanging through shared
/// memory: runs multi-rank plans without MPI, with the same results.
std::vector<std::unique_ptr<Comm>> makeInProcessComms(int n);

} // namespace moert
