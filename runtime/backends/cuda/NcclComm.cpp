//===- NcclComm.cpp -------------------------------------------------------===//
#include "NcclComm.h"

#include <cstring>
#include <nccl.h>

namespace moert::cuda {

static ncclComm_t C(void *p) { return static_cast<ncclComm_t>(p); }

NcclComm::UniqueId NcclComm::newUniqueId() {
  ncclUniqueId id;
  std::memset(&id, 0, sizeof id);
  if (ncclGetUniqueId(&id) != ncclSuccess)
    return {};
  UniqueId out(sizeof id);
  std::memcpy(out.data(), &id, sizeof id);
  return out;
}

NcclComm::NcclComm(const UniqueId &id, int ranks, int rank) : ranks_(ranks), rank_(rank) {
  if (id.size() != sizeof(ncclUniqueId)) {
    error_ = "bad NCCL unique id";
    return;
  }
  ncclUniqueId uid;
  std::memcpy(&uid, id.data(), sizeof uid);
  ncclComm_t c = nullptr;
  if (check(ncclCommInitRank(&c, ranks, uid, rank), "ncclCommInitRank"))
    comm_ = c;
}

NcclComm::~NcclComm() {
  if (comm_)
    ncclCommDestroy(C(comm_));
}

bool NcclComm::check(int r, const char *what) {
  if (r == ncclSuccess)
    return true;
  error_ = std::string(what) + ": " + ncclGetErrorString(ncclResult_t(r));
  return false;
}

bool NcclComm::allReduceSum(float *buf, size_t count, cudaStream_t s) {
  return check(ncclAllReduce(buf, buf, count, ncclFloat32, ncclSum, C(comm_), s), "ncclAllReduce");
}

bool NcclComm::allGather(const float *in, float *out, size_t count, cudaStream_t s) {
  return check(ncclAllGather(in, out, count, ncclFloat32, C(comm_), s), "ncclAllGather");
}

bool NcclComm::reduceScatterSum(const float *in, float *out, size_t count, cudaStream_t s) {
  return check(ncclReduceScatter(in, out, count, ncclFloat32, ncclSum, C(comm_), s),
               "ncclReduceScatter");
}

bool NcclComm::broadcast(float *buf, size_t count, int root, cudaStream_t s) {
  return check(ncclBroadcast(buf, buf, count, ncclFloat32, root, C(comm_), s), "ncclBroadcast");
}

bool NcclComm::allToAllV(const float *send, const size_t *sendCounts, const size_t *sendOffsets,
                         float *recv, const size_t *recvCounts, const size_t *recvOffsets,
                         cudaStream_t s) {
  if (!check(ncclGroupStart(), "ncclGroupStart"))
    return false;
  bool good = true;
  for (int p = 0; p < ranks_ && good; ++p) {
    if (sendCounts[p])
      good = check(ncclSend(send + sendOffsets[p], sendCounts[p], ncclFloat32, p, C(comm_), s),
                   "ncclSend");
    if (good && recvCounts[p])
      good = check(ncclRecv(recv + recvOffsets[p], recvCounts[p], ncclFloat32, p, C(comm_), s),
                   "ncclRecv");
  }
  bool ended = check(ncclGroupEnd(), "ncclGroupEnd");
  return good && ended;
}

} // namespace moert::cuda
