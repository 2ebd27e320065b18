//===- NcclComm.h - Stream-ordered NCCL collectives -------------*- C++ -*-===//
//
// The NCCL side of issue 14's communicator, on device f32 buffers, each
// call enqueued on a CUDA stream (all-reduce, all-gather, reduce-scatter,
// broadcast, all-to-all-v as grouped send/recv); makeNcclComm adapts it to
// moert::Comm. Built when nccl.h was found (MOERT_HAVE_NCCL); the library is
// opened at run time (available()). The unique id travels between processes
// by the caller (the host communicator's broadcast).
//
// Note: NCCL's sums are in its own order (ring/tree), not in rank order:
// results agree across ranks but are not bitwise those of the CPU
// communicators' ordered mode.
//
//===----------------------------------------------------------------------===//
#pragma once

#include <cstddef>
#include <cstdint>
#include <cuda_runtime_api.h>
#include <memory>
#include <string>
#include <vector>

namespace moert::cuda {

class NcclComm {
public:
  /// Whether libnccl could be opened (once per process).
  static bool available();
  /// 128 bytes: ncclUniqueId, made by rank 0 and broadcast to the others.
  using UniqueId = std::vector<char>;
  static UniqueId newUniqueId();
  /// Joins the communicator (blocking until every rank joined); check ok().
  NcclComm(const UniqueId &id, int ranks, int rank);
  ~NcclComm();
  NcclComm(const NcclComm &) = delete;
  NcclComm &operator=(const NcclComm &) = delete;

  bool ok() const { return comm_ != nullptr; }
  const std::string &error() const { return error_; }
  int ranks() const { return ranks_; }
  int rank() const { return rank_; }

  /// Each returns false (and sets error()) when NCCL refused the call.
  bool allReduceSum(float *buf, size_t count, cudaStream_t s);
  /// out[i * count : (i+1) * count] = rank i's in.
  bool allGather(const float *in, float *out, size_t count, cudaStream_t s);
  /// out[0:count] = sum over ranks of their in[rank * count : ...].
  bool reduceScatterSum(const float *in, float *out, size_t count, cudaStream_t s);
  bool broadcast(void *buf, size_t bytes, int root, cudaStream_t s);
  /// All-to-all-v: to peer p send sendCounts[p] floats from send +
  /// sendOffsets[p], receive recvCounts[p] floats into recv + recvOffsets[p]
  /// (counts and offsets on the host; one ncclGroupStart/End).
  bool allToAllV(const float *send, const size_t *sendCounts, const size_t *sendOffsets,
                 float *recv, const size_t *recvCounts, const size_t *recvOffsets, cudaStream_t s);

private:
  bool check(int result, const char *what);
  void *comm_ = nullptr;
  int ranks_ = 0, rank_ = 0;
  std::string error_;
};

} // namespace moert::cuda

namespace moert {
class Comm;
namespace cuda {
/// A device communicator (name "nccl") over the ranks of `host`: the plan's
/// collectives on device buffers go through NCCL on the stream setStream
/// names, one NCCL communicator per group (made on first use from a unique
/// id its first member sends the others over `host`); host buffers
/// (broadcast of sampled tokens) and the host calls (send/recv, gather,
/// barrier, abort) go to `host`, which must outlive it. Null with `error`
/// set when NCCL is missing or refuses.
std::unique_ptr<Comm> makeNcclComm(Comm &host, std::string &error);
} // namespace cuda
} // namespace moert
