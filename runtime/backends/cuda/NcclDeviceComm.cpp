//===- NcclDeviceComm.cpp - NCCL behind moert::Comm -----------------------===//
//
// The CUDA backend's communicator for several ranks (issue 14): the plan's
// collectives read and write device memory, which host communicators cannot
// touch, so they go through NCCL, stream-ordered on the stream the backend
// names (its comm stream). One NCCL communicator per group of ranks, made
// when the group is first used: its first member makes a unique id and sends
// it to the others over the host communicator (every member of a group
// reaches the group's first collective, and only members do, so no rank
// waits for one that never comes). Buffers in host memory (the token each
// decode step broadcasts, the data-parallel exchange's counts and its rows
// staged on the host) and the host-only calls go to the host communicator.
// Byte counts as the CPU communicators count them.
//
//===----------------------------------------------------------------------===//
#include "NcclComm.h"
#include "StagedComm.h"

#include "moert/Comm.h"
#include "moert/Error.h"

#include <cuda_runtime_api.h>
#include <map>

namespace moert::cuda {

namespace {

class NcclDeviceComm final : public HostFrontedComm {
public:
  NcclDeviceComm(Comm &host, std::unique_ptr<NcclComm> world)
      : HostFrontedComm(host), world_(std::move(world)) {}

  const char *name() const override { return "nccl"; }
  void setStream(void *s) override { stream_ = static_cast<cudaStream_t>(s); }

  void allReduceSum(float *buf, size_t n, std::span<const int> group) override {
    if (!isDevicePointer(buf))
      return host_.allReduceSum(buf, n, group);
    int G = groupSize(group);
    call(of(group).allReduceSum(buf, n, stream_), of(group));
    bytesMoved_ += 2 * n * sizeof(float) * size_t(G - 1) / size_t(G);
  }
  void allGather(const float *in, size_t n, float *out, std::span<const int> group) override {
    if (!isDevicePointer(in))
      return host_.allGather(in, n, out, group);
    call(of(group).allGather(in, out, n, stream_), of(group));
    bytesMoved_ += n * sizeof(float) * size_t(groupSize(group) - 1);
  }
  void reduceScatterSum(const float *in, size_t n, float *out,
                        std::span<const int> group) override {
    if (!isDevicePointer(in))
      return host_.reduceScatterSum(in, n, out, group);
    call(of(group).reduceScatterSum(in, out, n, stream_), of(group));
    bytesMoved_ += n * sizeof(float) * size_t(groupSize(group) - 1);
  }
  void allToAll(const float *in, size_t n, float *out, std::span<const int> group) override {
    if (!isDevicePointer(in))
      return host_.allToAll(in, n, out, group);
    size_t G = size_t(groupSize(group));
    std::vector<size_t> counts(G, n), offsets(G);
    for (size_t j = 0; j < G; ++j)
      offsets[j] = j * n;
    call(of(group).allToAllV(in, counts.data(), offsets.data(), out, counts.data(),
                             offsets.data(), stream_),
         of(group));
    bytesMoved_ += n * sizeof(float) * (G - 1);
  }
  void allToAllV(const float *in, std::span<const size_t> sc, std::span<const size_t> so,
                 float *out, std::span<const size_t> rc, std::span<const size_t> ro,
                 std::span<const int> group) override {
    if (!isDevicePointer(in))
      return host_.allToAllV(in, sc, so, out, rc, ro, group);
    NcclComm &c = of(group);
    call(c.allToAllV(in, sc.data(), so.data(), out, rc.data(), ro.data(), stream_), c);
    for (size_t j = 0; j < rc.size(); ++j)
      if (int(j) != c.rank())
        bytesMoved_ += rc[j] * sizeof(float);
  }
  void broadcast(void *buf, size_t bytes, int rootIndex, std::span<const int> group) override {
    if (!isDevicePointer(buf))
      return host_.broadcast(buf, bytes, rootIndex, group);
    call(of(group).broadcast(buf, bytes, rootIndex, stream_), of(group));
  }
  void send(const void *buf, size_t bytes, int peer) override { host_.send(buf, bytes, peer); }
  void recv(void *buf, size_t bytes, int peer) override { host_.recv(buf, bytes, peer); }

private:
  void call(bool ok, const NcclComm &c) const {
    if (!ok)
      fail("nccl: rank {}: {}", rank(), c.error());
  }

  /// The NCCL communicator of `group` (empty: every rank).
  NcclComm &of(std::span<const int> group) {
    if (group.empty() || int(group.size()) == size())
      return *world_;
    std::vector<int> key(group.begin(), group.end());
    auto it = groups_.find(key);
    if (it != groups_.end())
      return *it->second;
    int me = -1;
    for (size_t i = 0; i < key.size(); ++i)
      if (key[i] == rank())
        me = int(i);
    if (me < 0)
      fail("nccl: rank {} is not in the collective's group (expected a member)", rank());
    NcclComm::UniqueId id(128);
    if (me == 0) {
      id = NcclComm::newUniqueId();
      if (id.size() != 128)
        fail("nccl: rank {}: no unique id for a group of {} ranks", rank(), key.size());
      for (size_t i = 1; i < key.size(); ++i)
        host_.send(id.data(), id.size(), key[i]);
    } else {
      host_.recv(id.data(), id.size(), key[0]);
    }
    auto c = std::make_unique<NcclComm>(id, int(key.size()), me);
    if (!c->ok())
      fail("nccl: rank {}: a communicator for a group of {} ranks: {}", rank(), key.size(),
           c->error());
    return *(groups_[key] = std::move(c));
  }

  std::unique_ptr<NcclComm> world_;
  std::map<std::vector<int>, std::unique_ptr<NcclComm>> groups_;
  cudaStream_t stream_ = nullptr;
};

} // namespace

std::unique_ptr<Comm> makeNcclComm(Comm &host, std::string &error) {
  // Rank 0's unique id to every rank over the host communicator, after a
  // byte saying whether it has one (every rank takes part either way).
  std::vector<char> msg(129, 0);
  if (host.rank() == 0) {
    NcclComm::UniqueId id = NcclComm::newUniqueId();
    if (id.size() == 128) {
      msg[0] = 1;
      std::copy(id.begin(), id.end(), msg.begin() + 1);
    }
  }
  host.broadcast(msg.data(), msg.size(), 0, {});
  if (!msg[0]) {
    error = "rank 0 could not make an NCCL unique id";
    return nullptr;
  }
  NcclComm::UniqueId id(msg.begin() + 1, msg.end());
  auto world = std::make_unique<NcclComm>(id, host.size(), host.rank());
  if (!world->ok()) {
    error = world->error();
    return nullptr;
  }
  return std::make_unique<NcclDeviceComm>(host, std::move(world));
}

} // namespace moert::cuda
