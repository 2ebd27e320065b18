//===- LocalComm.cpp - Single-rank communication --------------------------===//
#include "moert/Comm.h"

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

namespace moert {

void Comm::allReduceSum(float *buf, size_t n, std::span<const int> group) {
  int g = groupSize(group);
  if (g == 1)
    return;
  tmp_.resize(n * size_t(g));
  allGather(buf, n, tmp_.data(), group);
  for (size_t i = 0; i < n; ++i) {
    float s = 0.0f;
    for (int r = 0; r < g; ++r)
      s += tmp_[size_t(r) * n + i];
    buf[i] = s;
  }
}

void Comm::reduceScatterSum(const float *in, size_t n, float *out, std::span<const int> group) {
  int g = groupSize(group);
  tmp_.resize(n * size_t(g));
  allToAll(in, n, tmp_.data(), group);
  for (size_t i = 0; i < n; ++i) {
    float s = 0.0f;
    for (int r = 0; r < g; ++r)
      s += tmp_[size_t(r) * n + i];
    out[i] = s;
  }
}

namespace {
class LocalComm final : public Comm {
public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  const char *name() const override { return "local"; }
  void allGather(const float *in, size_t n, float *out, std::span<const int>) override {
    if (in != out)
      std::memmove(out, in, n * sizeof(float));
  }
  void allToAll(const float *in, size_t n, float *out, std::span<const int>) override {
    if (in != out)
      std::memmove(out, in, n * sizeof(float));
  }
  void broadcast(void *, size_t, int, std::span<const int>) override {}
  std::vector<std::string> gatherToRoot(const std::string &mine) override { return {mine}; }
  void barrier() override {}
  [[noreturn]] void abort(int code) override { std::exit(code); }
};
} // namespace

std::unique_ptr<Comm> makeLocalComm() { return std::make_unique<LocalComm>(); }

namespace {

/// A reusable barrier for a fixed set of threads.
class Barrier {
public:
  explicit Barrier(int n) : n_(n) {}
  void wait() {
    std::unique_lock<std::mutex> l(m_);
    uint64_t gen = gen_;
    if (++count_ == n_) {
      count_ = 0;
      ++gen_;
      cv_.notify_all();
    } else {
      cv_.wait(l, [&] { return gen_ != gen; });
    }
  }

private:
  std::mutex m_;
  std::condition_variable cv_;
  int n_, count_ = 0;
  uint64_t gen_ = 0;
};

struct Shared {
  explicit Shared(int n) : size(n), posted(size_t(n)), world(n) {}
  int size;
  std::vector<const void *> posted; // per rank: the buffer it offers
  Barrier world;
  std::mutex m;
  std::map<std::vector<int>, std::unique_ptr<Barrier>> groups;
};

class InProcessComm final : public Comm {
public:
  InProcessComm(std::shared_ptr<Shared> s, int rank) : s_(std::move(s)), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return s_->size; }
  const char *name() const override { return "in-process"; }

  void allGather(const float *in, size_t n, float *out, std::span<const int> group) override {
    exchange(in, group, [&](int idx, int member) {
      std::memcpy(out + size_t(idx) * n, s_->posted[size_t(member)], n * sizeof(float));
    });
  }
  void allToAll(const float *in, size_t n, float *out, std::span<const int> group) override {
    int me = indexIn(group);
    exchange(in, group, [&](int idx, int member) {
      auto *src = static_cast<const float *>(s_->posted[size_t(member)]);
      std::memcpy(out + size_t(idx) * n, src + size_t(me) * n, n * sizeof(float));
    });
  }
  void broadcast(void *buf, size_t bytes, int rootIndex, std::span<const int> group) override {
    exchange(buf, group, [&](int idx, int member) {
      if (idx == rootIndex && member != rank_)
        std::memcpy(buf, s_->posted[size_t(member)], bytes);
    });
  }
  std::vector<std::string> gatherToRoot(const std::string &mine) override {
    std::vector<std::string> out;
    exchange(&mine, {}, [&](int, int member) {
      if (rank_ == 0)
        out.push_back(*static_cast<const std::string *>(s_->posted[size_t(member)]));
    });
    return out;
  }
  void barrier() override { s_->world.wait(); }
  [[noreturn]] void abort(int code) override { std::exit(code); }

private:
  int indexIn(std::span<const int> group) const {
    if (group.empty())
      return rank_;
    return int(std::find(group.begin(), group.end(), rank_) - group.begin());
  }
  Barrier &barrierFor(std::span<const int> group) {
    if (group.empty() || int(group.size()) == s_->size)
      return s_->world;
    std::lock_guard<std::mutex> l(s_->m);
    auto &b = s_->groups[std::vector<int>(group.begin(), group.end())];
    if (!b)
      b = std::make_unique<Barrier>(int(group.size()));
    return *b;
  }
  /// Posts `mine`, waits for the group, lets `copy(index, member)` read each
  /// member's buffer, and waits again so no buffer changes while read.
  template <typename F> void exchange(const void *mine, std::span<const int> group, F &&copy) {
    Barrier &b = barrierFor(group);
    s_->posted[size_t(rank_)] = mine;
    b.wait();
    int g = groupSize(group);
    for (int i = 0; i < g; ++i)
      copy(i, group.empty() ? i : group[size_t(i)]);
    b.wait();
  }

  std::shared_ptr<Shared> s_;
  int rank_;
};

} // namespace

std::vector<std::unique_ptr<Comm>> makeInProcessComms(int n) {
  auto shared = std::make_shared<Shared>(n);
  std::vector<std::unique_ptr<Comm>> v;
  for (int r = 0; r < n; ++r)
    v.push_back(std::make_unique<InProcessComm>(shared, r));
  return v;
}

} // namespace moert
