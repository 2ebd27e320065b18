//===- link-optional.cpp - links the installed optional runtime libraries -===//
//
// Built, not run: referring to one function of each optional library the
// runtime was built with makes the link pull it in, so its dependencies
// (MPI, the CUDA runtime, NCCL) must resolve through the package's targets.
//
//===----------------------------------------------------------------------===//

#include "moert/Comm.h"
#ifdef MOERT_LINKS_MPI
#include "moert/MpiComm.h"
#endif
#ifdef MOERT_LINKS_CUDA
#include "CudaKernels.h"
#endif
#ifdef MOERT_LINKS_NCCL
#include "NcclComm.h"
#endif

#include <cstdio>

int main() {
  const void *used[] = {
      reinterpret_cast<const void *>(&moert::makeLocalComm),
#ifdef MOERT_LINKS_MPI
      reinterpret_cast<const void *>(&moert::makeMpiComm),
#endif
#ifdef MOERT_LINKS_CUDA
      reinterpret_cast<const void *>(&moert::cuda::deviceCount),
#endif
#ifdef MOERT_LINKS_NCCL
      reinterpret_cast<const void *>(&moert::cuda::NcclComm::newUniqueId),
#endif
  };
  std::printf("%zu libraries\n", sizeof(used) / sizeof(used[0]));
  return 0;
}
