//===- NcclComm.cpp -------------------------------------------------------===//
//
// NCCL is opened with dlopen on first use (like cuBLAS in Linear.cu): linked,
// every moe-run would need libnccl to start, on machines without a GPU too.
// The header gives the types; the functions come from the library found.
//
//===----------------------------------------------------------------------===//
#include "NcclComm.h"

#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <nccl.h>

namespace moert::cuda {

namespace {
struct Api {
  decltype(&ncclGetUniqueId) getUniqueId = nullptr;
  decltype(&ncclCommInitRank) commInitRank = nullptr;
  decltype(&ncclCommDestroy) commDestroy = nullptr;
  decltype(&ncclGetErrorString) getErrorString = nullptr;
  decltype(&ncclAllReduce) allReduce = nullptr;
  decltype(&ncclAllGather) allGather = nullptr;
  decltype(&ncclReduceScatter) reduceScatter = nullptr;
  decltype(&ncclBroadcast) broadcast = nullptr;
  decltype(&ncclSend) send = nullptr;
  decltype(&ncclRecv) recv = nullptr;
  decltype(&ncclGroupStart) groupStart = nullptr;
  decltype(&ncclGroupEnd) groupEnd = nullptr;
  bool ok = false;

  static const Api &get() {
    static const Api api = load();
    return api;
  }
  static Api load() {
    Api a;
    std::vector<std::string> names = {"libnccl.so.2", "libnccl.so"};
    if (const char *home = std::getenv("NCCL_HOME"))
      names.push_back(std::string(home) + "/lib/libnccl.so.2");
    names.push_back("/usr/local/cuda/lib64/libnccl.so.2");
    names.push_back("/usr/local/cuda/lib/libnccl.so.2");
    void *lib = nullptr;
    for (const std::string &n : names)
      if ((lib = dlopen(n.c_str(), RTLD_NOW | RTLD_LOCAL)))
        break;
    if (!lib)
      return a;
    auto sym = [&](auto &fn, const char *name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(lib, name));
      return fn != nullptr;
    };
    a.ok = sym(a.getUniqueId, "ncclGetUniqueId") & sym(a.commInitRank, "ncclCommInitRank") &
           sym(a.commDestroy, "ncclCommDestroy") & sym(a.getErrorString, "ncclGetErrorString") &
           sym(a.allReduce, "ncclAllReduce") & sym(a.allGather, "ncclAllGather") &
           sym(a.reduceScatter, "ncclReduceScatter") & sym(a.broadcast, "ncclBroadcast") &
           sym(a.send, "ncclSend") & sym(a.recv, "ncclRecv") &
           sym(a.groupStart, "ncclGroupStart") & sym(a.groupEnd, "ncclGroupEnd");
    return a;
  }
};

ncclComm_t C(void *p) { return static_cast<ncclComm_t>(p); }
} // namespace

bool NcclComm::available() { return Api::get().ok; }

NcclComm::UniqueId NcclComm::newUniqueId() {
  if (!available())
    return {};
  ncclUniqueId id;
  std::memset(&id, 0, sizeof id);
  if (Api::get().getUniqueId(&id) != ncclSuccess)
    return {};
  UniqueId out(sizeof id);
  std::memcpy(out.data(), &id, sizeof id);
  return out;
}

NcclComm::NcclComm(const UniqueId &id, int ranks, int rank) : ranks_(ranks), rank_(rank) {
  if (!available()) {
    error_ = "libnccl.so.2 not found (expected NCCL in LD_LIBRARY_PATH, $NCCL_HOME/lib or "
             "/usr/local/cuda/lib64)";
    return;
  }
  if (id.size() != sizeof(ncclUniqueId)) {
    error_ = "bad NCCL unique id";
    return;
  }
  ncclUniqueId uid;
  std::memcpy(&uid, id.data(), sizeof uid);
  ncclComm_t c = nullptr;
  if (check(Api::get().commInitRank(&c, ranks, uid, rank), "ncclCommInitRank"))
    comm_ = c;
}

NcclComm::~NcclComm() {
  if (comm_)
    Api::get().commDestroy(C(comm_));
}

bool NcclComm::check(int r, const char *what) {
  if (r == ncclSuccess)
    return true;
  error_ = std::string(what) + ": " + Api::get().getErrorString(ncclResult_t(r));
  return false;
}

bool NcclComm::allReduceSum(float *buf, size_t count, cudaStream_t s) {
  return check(Api::get().allReduce(buf, buf, count, ncclFloat32, ncclSum, C(comm_), s),
               "ncclAllReduce");
}

bool NcclComm::allGather(const float *in, float *out, size_t count, cudaStream_t s) {
  return check(Api::get().allGather(in, out, count, ncclFloat32, C(comm_), s), "ncclAllGather");
}

bool NcclComm::reduceScatterSum(const float *in, float *out, size_t count, cudaStream_t s) {
  return check(Api::get().reduceScatter(in, out, count, ncclFloat32, ncclSum, C(comm_), s),
               "ncclReduceScatter");
}

bool NcclComm::broadcast(void *buf, size_t bytes, int root, cudaStream_t s) {
  return check(Api::get().broadcast(buf, buf, bytes, ncclInt8, root, C(comm_), s),
               "ncclBroadcast");
}

bool NcclComm::allToAllV(const float *send, const size_t *sendCounts, const size_t *sendOffsets,
                         float *recv, const size_t *recvCounts, const size_t *recvOffsets,
                         cudaStream_t s) {
  const Api &api = Api::get();
  if (!check(api.groupStart(), "ncclGroupStart"))
    return false;
  bool good = true;
  for (int p = 0; p < ranks_ && good; ++p) {
    if (sendCounts[p])
      good = check(api.send(send + sendOffsets[p], sendCounts[p], ncclFloat32, p, C(comm_), s),
                   "ncclSend");
    if (good && recvCounts[p])
      good = check(api.recv(recv + recvOffsets[p], recvCounts[p], ncclFloat32, p, C(comm_), s),
                   "ncclRecv");
  }
  bool ended = check(api.groupEnd(), "ncclGroupEnd");
  return good && ended;
}

} // namespace moert::cuda
