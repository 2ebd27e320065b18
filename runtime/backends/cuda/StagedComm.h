//===- StagedComm.h - Communicators in front of a host one ------*- C++ -*-===//
#pragma once

#include "moert/Comm.h"

#include <cstdlib>
#include <cuda_runtime_api.h>
#include <memory>
#include <string>
#include <vector>

namespace moert::cuda {

/// Whether p is device (or managed) memory of the current CUDA context.
inline bool isDevicePointer(const void *p) {
  cudaPointerAttributes a{};
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
}

/// A communicator in front of a host one (NCCL's adapter, the staged one):
/// rank, size and the host-only calls are the host's.
class HostFrontedComm : public Comm {
public:
  explicit HostFrontedComm(Comm &host) : host_(host) {}
  int rank() const override { return host_.rank(); }
  int size() const override { return host_.size(); }
  std::vector<std::string> gatherToRoot(const std::string &mine) override {
    return host_.gatherToRoot(mine);
  }
  void barrier() override { host_.barrier(); }
  [[noreturn]] void abort(int code) override {
    host_.abort(code);
    std::abort(); // (unreachable: the attribute is not part of the virtual's type)
  }

protected:
  Comm &host_;
};

/// `host` (in-process or MPI ranks) for collectives on device buffers: each
/// one's device buffers are copied to host scratch once the stream given
/// with setStream has run its earlier work, the host collective runs, and
/// the results are copied back. Host buffers pass through. Byte counts are
/// the host communicator's.
std::unique_ptr<Comm> makeStagedComm(Comm &host);

} // namespace moert::cuda
