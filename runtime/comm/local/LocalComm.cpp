//===- LocalComm.cpp - One rank, and ranks as threads of one process ------===//
#include "moert/Comm.h"
#include "moert/Error.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

namespace moert {

namespace {

class LocalComm final : public Comm {
public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  const char *name() const override { return "local"; }
  void allReduceSum(float *, size_t, std::span<const int>) override {}
  void allGather(const float *in, size_t n, float *out, std::span<const int>) override {
    if (in != out)
      std::memmove(out, in, n * sizeof(float));
  }
  void reduceScatterSum(const float *in, size_t n, float *out, std::span<const int>) override {
    if (in != out)
      std::memmove(out, in, n * sizeof(float));
  }
  void allToAll(const float *in, size_t n, float *out, std::span<const int>) override {
    if (in != out)
      std::memmove(out, in, n * sizeof(float));
  }
  void allToAllV(const float *in, std::span<const size_t> sc, std::span<const size_t> so,
                 float *out, std::span<const size_t>, std::span<const size_t> ro,
                 std::span<const int>) override {
    std::memmove(out + ro[0], in + so[0], sc[0] * sizeof(float));
  }
  void broadcast(void *, size_t, int, std::span<const int>) override {}
  void send(const void *, size_t, int peer) override {
    fail("send to rank {} on a single-rank communicator (expected a peer)", peer);
  }
  void recv(void *, size_t, int peer) override {
    fail("receive from rank {} on a single-rank communicator (expected a peer)", peer);
  }
  std::vector<std::string> gatherToRoot(const std::string &mine) override { return {mine}; }
  void barrier() override {}
  [[noreturn]] void abort(int code) override { std::exit(code); }
};

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

/// What a member offers in an exchange.
struct Posted {
  const void *buf = nullptr;
  float *inout = nullptr; // all-reduce: the member's buffer, written back
  const size_t *counts = nullptr, *offsets = nullptr; // all-to-all-v: sends
};

struct Shared {
  explicit Shared(int n) : size(n), posted(size_t(n)), world(n) {}
  int size;
  std::vector<Posted> posted; // per rank
  Barrier world;
  std::mutex m;
  std::map<std::vector<int>, std::unique_ptr<Barrier>> groups;
  // Point to point: messages per (from, to), in order.
  std::mutex mailM;
  std::condition_variable mailCv;
  std::map<std::pair<int, int>, std::deque<std::vector<uint8_t>>> mail;
};

int commDelayUs() {
  static const int us = [] {
    const char *e = std::getenv("MOERT_COMM_DELAY_US");
    return e ? std::max(0, std::atoi(e)) : 0;
  }();
  return us;
}

class InProcessComm final : public Comm {
public:
  InProcessComm(std::shared_ptr<Shared> s, int rank) : s_(std::move(s)), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return s_->size; }
  const char *name() const override { return "in-process"; }

  void allReduceSum(float *buf, size_t n, std::span<const int> group) override {
    int G = groupSize(group);
    if (G == 1)
      return;
    delay();
    // Reduce-scatter then all-gather over shared memory: member i sums
    // chunk i of every member's buffer in group order and writes the sum
    // into every member's buffer. Each member reads and writes O(n) bytes.
    int me = indexIn(group);
    size_t b = n * size_t(me) / size_t(G), e = n * size_t(me + 1) / size_t(G);
    Barrier &bar = barrierFor(group);
    s_->posted[size_t(rank_)] = {buf, buf, nullptr, nullptr};
    bar.wait();
    sum_.assign(e - b, 0.0f);
    for (int j = 0; j < G; ++j) {
      const float *src = s_->posted[size_t(member(group, j))].inout;
      for (size_t i = b; i < e; ++i)
        sum_[i - b] += src[i];
    }
    bar.wait(); // everyone has read the inputs
    // (A member's chunk may be empty: a data-parallel group without rows
    // sums 0 values, and an empty vector's data() may be null.)
    for (int j = 0; j < G && e > b; ++j)
      std::memcpy(s_->posted[size_t(member(group, j))].inout + b, sum_.data(),
                  (e - b) * sizeof(float));
    bar.wait(); // every chunk is written
    bytesMoved_ += 2 * n * sizeof(float) * size_t(G - 1) / size_t(G);
  }
  void reduceScatterSum(const float *in, size_t n, float *out,
                        std::span<const int> group) override {
    int G = groupSize(group), me = indexIn(group);
    delay();
    // Every member's chunk for this rank, added in group order; the second
    // wait keeps the inputs unchanged until everyone has read them.
    Barrier &bar = barrierFor(group);
    s_->posted[size_t(rank_)] = {in, nullptr, nullptr, nullptr};
    bar.wait();
    std::vector<float> acc(n, 0.0f);
    for (int j = 0; j < G; ++j) {
      const float *src = static_cast<const float *>(s_->posted[size_t(member(group, j))].buf);
      for (size_t i = 0; i < n; ++i)
        acc[i] += src[size_t(me) * n + i];
    }
    bar.wait();
    if (n)
      std::memcpy(out, acc.data(), n * sizeof(float));
    bytesMoved_ += n * sizeof(float) * size_t(G - 1);
  }
  void allGather(const float *in, size_t n, float *out, std::span<const int> group) override {
    delay();
    exchange({in}, group, [&](int idx, int m) {
      std::memcpy(out + size_t(idx) * n, s_->posted[size_t(m)].buf, n * sizeof(float));
    });
    bytesMoved_ += n * sizeof(float) * size_t(groupSize(group) - 1);
  }
  void allToAll(const float *in, size_t n, float *out, std::span<const int> group) override {
    int me = indexIn(group);
    delay();
    exchange({in}, group, [&](int idx, int m) {
      auto *src = static_cast<const float *>(s_->posted[size_t(m)].buf);
      std::memcpy(out + size_t(idx) * n, src + size_t(me) * n, n * sizeof(float));
    });
    bytesMoved_ += n * sizeof(float) * size_t(groupSize(group) - 1);
  }
  void allToAllV(const float *in, std::span<const size_t> sc, std::span<const size_t> so,
                 float *out, std::span<const size_t> rc, std::span<const size_t> ro,
                 std::span<const int> group) override {
    int me = indexIn(group);
    delay();
    exchange({in, nullptr, sc.data(), so.data()}, group, [&](int idx, int m) {
      const Posted &p = s_->posted[size_t(m)];
      if (p.counts[me] != rc[size_t(idx)])
        fail("all-to-all-v: rank {} sends {} values to rank {}, which expects {}", m,
             p.counts[me], rank_, rc[size_t(idx)]);
      std::memcpy(out + ro[size_t(idx)], static_cast<const float *>(p.buf) + p.offsets[me],
                  rc[size_t(idx)] * sizeof(float));
      if (m != rank_)
        bytesMoved_ += rc[size_t(idx)] * sizeof(float);
    });
    (void)sc;
  }
  void broadcast(void *buf, size_t bytes, int rootIndex, std::span<const int> group) override {
    exchange({buf}, group, [&](int idx, int m) {
      if (idx == rootIndex && m != rank_)
        std::memcpy(buf, s_->posted[size_t(m)].buf, bytes);
    });
  }
  void send(const void *buf, size_t bytes, int peer) override {
    auto *p = static_cast<const uint8_t *>(buf);
    {
      std::lock_guard<std::mutex> l(s_->mailM);
      s_->mail[{rank_, peer}].emplace_back(p, p + bytes);
    }
    s_->mailCv.notify_all();
    bytesMoved_ += bytes;
  }
  void recv(void *buf, size_t bytes, int peer) override {
    std::unique_lock<std::mutex> l(s_->mailM);
    auto &q = s_->mail[{peer, rank_}];
    s_->mailCv.wait(l, [&] { return !q.empty(); });
    if (q.front().size() != bytes)
      fail("receive of {} bytes from rank {}, which sent {}", bytes, peer, q.front().size());
    std::memcpy(buf, q.front().data(), bytes);
    q.pop_front();
  }
  std::vector<std::string> gatherToRoot(const std::string &mine) override {
    std::vector<std::string> out;
    exchange({&mine}, {}, [&](int, int m) {
      if (rank_ == 0)
        out.push_back(*static_cast<const std::string *>(s_->posted[size_t(m)].buf));
    });
    return out;
  }
  void barrier() override { s_->world.wait(); }
  [[noreturn]] void abort(int code) override { std::exit(code); }

private:
  static void delay() {
    if (int us = commDelayUs())
      std::this_thread::sleep_for(std::chrono::microseconds(us));
  }
  int member(std::span<const int> group, int j) const {
    return group.empty() ? j : group[size_t(j)];
  }
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
  /// member's offer, and waits again so no buffer changes while read.
  template <typename F> void exchange(Posted mine, std::span<const int> group, F &&copy) {
    Barrier &b = barrierFor(group);
    s_->posted[size_t(rank_)] = mine;
    b.wait();
    int g = groupSize(group);
    for (int i = 0; i < g; ++i)
      copy(i, member(group, i));
    b.wait();
  }

  std::shared_ptr<Shared> s_;
  int rank_;
  std::vector<float> sum_;
};

} // namespace

std::unique_ptr<Comm> makeLocalComm() { return std::make_unique<LocalComm>(); }

std::vector<std::unique_ptr<Comm>> makeInProcessComms(int n) {
  auto shared = std::make_shared<Shared>(n);
  std::vector<std::unique_ptr<Comm>> v;
  for (int r = 0; r < n; ++r)
    v.push_back(std::make_unique<InProcessComm>(shared, r));
  return v;
}

} // namespace moert
