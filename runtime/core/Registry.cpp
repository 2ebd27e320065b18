//===- Registry.cpp - --backend=NAME to a backend -------------------------===//
//
// The one file of core that names backends: each is built into its own
// library and registered here when the build has it.
//
//===----------------------------------------------------------------------===//
#include "moert/Backend.h"
#include "moert/Error.h"

namespace moert {

std::unique_ptr<Backend> makeCpuBackend(const BackendOptions &opts);
#ifdef MOERT_HAVE_CUDA
std::unique_ptr<Backend> makeCudaBackend(const BackendOptions &opts);
#endif

std::vector<std::string> availableBackends() {
  std::vector<std::string> names{"cpu"};
#ifdef MOERT_HAVE_CUDA
  names.push_back("cuda");
#endif
  return names;
}

std::unique_ptr<Backend> makeBackend(const std::string &name, const BackendOptions &opts) {
  if (name == "cpu")
    return makeCpuBackend(opts);
  if (name == "cuda") {
#ifdef MOERT_HAVE_CUDA
    return makeCudaBackend(opts);
#else
    fail("--backend=cuda: this moe-run was built without the CUDA backend (expected "
         "--backend=cpu, or a build configured with MOE_ENABLE_CUDA on a machine with nvcc)");
#endif
  }
  fail("--backend={}: unknown backend (expected one of: {})", name,
       fmt::join(availableBackends(), ", "));
}

} // namespace moert
