//===- Comm.h - Collectives between ranks -----------------------*- C++ -*-===//
//
// Collectives on device buffers, ordered on the communication stream: the
// backend that owns a rank's streams calls them when the stream reaches the
// step. Host communicators (local, in-process, MPI) complete before they
// return, and the CPU backend calls them from its communication stream's
// worker thread; a device communicator (NCCL) enqueues on the native stream
// given with setStream and returns (ncclGroupStart/End + Send/Recv for
// all-to-all-v).
//
// Sums: every implementation gives every member bitwise the same result, and
// a sum where one member contributes x and the others zeros is exactly x, so
// expert parallelism (each slot computed by one rank) reproduces one rank bit
// for bit. The in-process communicator adds in group order (a reduce-scatter
// then an all-gather: O(n) bytes per rank); MPI uses MPI_Allreduce (the
// library's algorithm and order) unless MOERT_COMM_ORDERED=1 asks for group
// order (an all-gather and a local sum: O(ranks x n) bytes, for comparing
// bitwise with one rank in general).
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
  /// The native stream a device communicator enqueues on (cudaStream_t for
  /// NCCL); host communicators ignore it.
  virtual void setStream(void * /*nativeStream*/) {}

  // Groups are ascending global ranks; empty means all ranks.

  /// In place: buf (n floats) = sum over members.
  virtual void allReduceSum(float *buf, size_t n, std::span<const int> group) = 0;
  /// out = concat over group members (in group order) of their `n` floats.
  virtual void allGather(const float *in, size_t n, float *out, std::span<const int> group) = 0;
  /// in holds one chunk of `n` floats per member; out (n floats) = sum over
  /// members of their chunk for this rank.
  virtual void reduceScatterSum(const float *in, size_t n, float *out,
                                std::span<const int> group) = 0;
  /// in holds one chunk of `n` floats per member (chunk j is for member j);
  /// out chunk j receives the chunk member j holds for this rank.
  virtual void allToAll(const float *in, size_t n, float *out, std::span<const int> group) = 0;
  /// Variable counts per peer (floats): member j gets in[sendOffsets[j] ..
  /// + sendCounts[j]); what member j sends this rank lands at out[recvOffsets[j]
  /// .. + recvCounts[j]). Counts must agree pairwise.
  virtual void allToAllV(const float *in, std::span<const size_t> sendCounts,
                         std::span<const size_t> sendOffsets, float *out,
                         std::span<const size_t> recvCounts, std::span<const size_t> recvOffsets,
                         std::span<const int> group) = 0;
  /// Copies `bytes` from the group member at index `rootIndex` to the others.
  virtual void broadcast(void *buf, size_t bytes, int rootIndex, std::span<const int> group) = 0;
  /// Point to point (global ranks).
  virtual void send(const void *buf, size_t bytes, int peer) = 0;
  virtual void recv(void *buf, size_t bytes, int peer) = 0;
  /// Rank 0 receives every rank's string (in rank order); others get {}.
  virtual std::vector<std::string> gatherToRoot(const std::string &mine) = 0;
  virtual void barrier() = 0;
  /// Ends every rank's process after an error on this one (never returns).
  [[noreturn]] virtual void abort(int code) = 0;

  int groupSize(std::span<const int> group) const {
    return group.empty() ? size() : int(group.size());
  }
  /// Bytes this rank sent to and received from others so far (statistics).
  size_t bytesMoved() const { return bytesMoved_; }

protected:
  size_t bytesMoved_ = 0;
};

/// The single-rank backend: collectives are copies.
std::unique_ptr<Comm> makeLocalComm();

/// `n` ranks in one process (one thread each) exchanging through shared
/// memory: runs multi-rank plans without MPI, with the same results.
/// MOERT_COMM_DELAY_US=N (a test knob) makes every collective take at least
/// N microseconds, so overlap of communication with compute shows in traces
/// of tiny models.
std::vector<std::unique_ptr<Comm>> makeInProcessComms(int n);

} // namespace moert
