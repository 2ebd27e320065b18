//===- MpiComm.cpp - Collectives over MPI ---------------------------------===//
#include "moert/MpiComm.h"
#include "moert/Error.h"

#include <mpi.h>

#include <climits>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

namespace moert {

bool launchedByMpi() {
  for (const char *v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"})
    if (std::getenv(v))
      return true;
  return false;
}

namespace {

class MpiComm final : public Comm {
public:
  MpiComm() {
    int provided = 0;
    // The communication stream's worker thread makes the calls, one at a
    // time (generation's broadcasts happen while the streams are idle).
    MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
    if (provided < MPI_THREAD_SERIALIZED)
      fail("MPI provides thread level {} (expected MPI_THREAD_SERIALIZED: collectives run on a "
           "communication thread)",
           provided);
    const char *ordered = std::getenv("MOERT_COMM_ORDERED");
    ordered_ = ordered && std::string(ordered) == "1";
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
  }
  ~MpiComm() override {
    for (auto &[g, c] : comms_)
      MPI_Comm_free(&c);
    MPI_Finalize();
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char *name() const override { return "mpi"; }

  void allReduceSum(float *buf, size_t n, std::span<const int> group) override {
    int G = groupSize(group);
    if (G == 1)
      return;
    if (!ordered_) {
      // Counted as a reduce-scatter + all-gather, as the cost model does;
      // the MPI library picks its algorithm.
      bytesMoved_ += 2 * n * sizeof(float) * size_t(G - 1) / size_t(G);
      MPI_Allreduce(MPI_IN_PLACE, buf, count(n), MPI_FLOAT, MPI_SUM, commFor(group));
      return;
    }
    bytesMoved_ += n * sizeof(float) * size_t(G - 1);
    // Group order: everyone sums the gathered buffers the same way.
    tmp_.resize(n * size_t(G));
    MPI_Allgather(buf, count(n), MPI_FLOAT, tmp_.data(), count(n), MPI_FLOAT, commFor(group));
    for (size_t i = 0; i < n; ++i) {
      float s = 0.0f;
      for (int r = 0; r < G; ++r)
        s += tmp_[size_t(r) * n + i];
      buf[i] = s;
    }
  }
  void reduceScatterSum(const float *in, size_t n, float *out,
                        std::span<const int> group) override {
    int G = groupSize(group);
    bytesMoved_ += n * sizeof(float) * size_t(G - 1);
    if (!ordered_) {
      MPI_Reduce_scatter_block(in, out, count(n), MPI_FLOAT, MPI_SUM, commFor(group));
      return;
    }
    tmp_.resize(n * size_t(G));
    MPI_Alltoall(in, count(n), MPI_FLOAT, tmp_.data(), count(n), MPI_FLOAT, commFor(group));
    for (size_t i = 0; i < n; ++i) {
      float s = 0.0f;
      for (int r = 0; r < G; ++r)
        s += tmp_[size_t(r) * n + i];
      out[i] = s;
    }
  }
  void allGather(const float *in, size_t n, float *out, std::span<const int> group) override {
    bytesMoved_ += n * sizeof(float) * size_t(groupSize(group) - 1);
    MPI_Allgather(in, count(n), MPI_FLOAT, out, count(n), MPI_FLOAT, commFor(group));
  }
  void allToAllV(const float *in, std::span<const size_t> sc, std::span<const size_t> so,
                 float *out, std::span<const size_t> rc, std::span<const size_t> ro,
                 std::span<const int> group) override {
    size_t G = size_t(groupSize(group));
    std::vector<int> c[4];
    for (size_t j = 0; j < G; ++j) {
      // What the others send this rank (the in-process communicator counts
      // the same).
      if ((group.empty() ? int(j) : group[j]) != rank_)
        bytesMoved_ += rc[j] * sizeof(float);
      c[0].push_back(count(sc[j]));
      c[1].push_back(count(so[j]));
      c[2].push_back(count(rc[j]));
      c[3].push_back(count(ro[j]));
    }
    MPI_Alltoallv(in, c[0].data(), c[1].data(), MPI_FLOAT, out, c[2].data(), c[3].data(),
                  MPI_FLOAT, commFor(group));
  }
  void send(const void *buf, size_t bytes, int peer) override {
    bytesMoved_ += bytes;
    MPI_Send(buf, count(bytes), MPI_BYTE, peer, 0, MPI_COMM_WORLD);
  }
  void recv(void *buf, size_t bytes, int peer) override {
    MPI_Recv(buf, count(bytes), MPI_BYTE, peer, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  }
  void allToAll(const float *in, size_t n, float *out, std::span<const int> group) override {
    bytesMoved_ += n * sizeof(float) * size_t(groupSize(group) - 1);
    MPI_Alltoall(in, count(n), MPI_FLOAT, out, count(n), MPI_FLOAT, commFor(group));
  }
  void broadcast(void *buf, size_t bytes, int rootIndex, std::span<const int> group) override {
    MPI_Bcast(buf, count(bytes), MPI_BYTE, rootIndex, commFor(group));
  }
  std::vector<std::string> gatherToRoot(const std::string &mine) override {
    int len = count(mine.size());
    std::vector<int> lens(static_cast<size_t>(size_)), displs(static_cast<size_t>(size_));
    MPI_Gather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, 0, MPI_COMM_WORLD);
    std::string all;
    if (rank_ == 0) {
      size_t total = 0;
      for (int r = 0; r < size_; ++r) {
        displs[size_t(r)] = count(total);
        total += size_t(lens[size_t(r)]);
      }
      all.resize(total);
    }
    MPI_Gatherv(mine.data(), len, MPI_CHAR, all.data(), lens.data(), displs.data(), MPI_CHAR, 0,
                MPI_COMM_WORLD);
    std::vector<std::string> out;
    if (rank_ == 0)
      for (int r = 0; r < size_; ++r)
        out.push_back(all.substr(size_t(displs[size_t(r)]), size_t(lens[size_t(r)])));
    return out;
  }
  void barrier() override { MPI_Barrier(MPI_COMM_WORLD); }
  [[noreturn]] void abort(int code) override {
    MPI_Abort(MPI_COMM_WORLD, code);
    std::exit(code);
  }

private:
  static int count(size_t n) {
    if (n > size_t(INT_MAX))
      fail("a collective of {} elements exceeds MPI's int counts", n);
    return int(n);
  }
  /// A communicator per group, created collectively by its members on first use.
  MPI_Comm commFor(std::span<const int> group) {
    if (group.empty() || int(group.size()) == size_)
      return MPI_COMM_WORLD;
    std::vector<int> key(group.begin(), group.end());
    auto it = comms_.find(key);
    if (it != comms_.end())
      return it->second;
    MPI_Group world, g;
    MPI_Comm_group(MPI_COMM_WORLD, &world);
    MPI_Group_incl(world, int(key.size()), key.data(), &g);
    MPI_Comm c;
    MPI_Comm_create_group(MPI_COMM_WORLD, g, 0, &c);
    MPI_Group_free(&g);
    MPI_Group_free(&world);
    return comms_[key] = c;
  }

  int rank_ = 0, size_ = 1;
  bool ordered_ = false;
  std::vector<float> tmp_;
  std::map<std::vector<int>, MPI_Comm> comms_;
};

} // namespace

std::unique_ptr<Comm> makeMpiComm() { return std::make_unique<MpiComm>(); }

} // namespace moert
