//===- MpiComm.cpp - Collectives over MPI ---------------------------------===//
#include "moert/MpiComm.h"
#include "moert/Error.h"

#include <mpi.h>

#include <climits>
#include <cstdlib>
#include <map>

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
    MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
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

  void allGather(const float *in, size_t n, float *out, std::span<const int> group) override {
    MPI_Allgather(in, count(n), MPI_FLOAT, out, count(n), MPI_FLOAT, commFor(group));
  }
  void allToAll(const float *in, size_t n, float *out, std::span<const int> group) override {
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
  std::map<std::vector<int>, MPI_Comm> comms_;
};

} // namespace

std::unique_ptr<Comm> makeMpiComm() { return std::make_unique<MpiComm>(); }

} // namespace moert
