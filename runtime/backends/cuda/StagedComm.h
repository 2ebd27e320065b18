//===- StagedComm.h - A host communicator over device buffers ---*- C++ -*-===//
#pragma once

#include "moert/Comm.h"

#include <cuda_runtime_api.h>
#include <memory>

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

/// `host` (in-process or MPI ranks) for collectives on device buffers: each
/// one's device buffers are copied to host scratch once the stream given
/// with setStream has run its earlier work, the host collective runs, and
/// the results are copied back. Host buffers pass through. Byte counts are
/// the host communicator's.
std::unique_ptr<Comm> makeStagedComm(Comm &host);

} // namespace moert::cuda
