//===- CommTest.cpp - Collectives of the local and in-process communicators ===//
#include "TestUtil.h"

#include "moert/Comm.h"

#include <numeric>
#include <thread>

using namespace moert;

namespace {

/// Runs fn(comm) on n in-process ranks, one thread each.
template <typename F> void onRanks(int n, F &&fn) {
  auto comms = makeInProcessComms(n);
  std::vector<std::thread> th;
  for (int r = 0; r < n; ++r)
    th.emplace_back([&, r] { fn(*comms[size_t(r)]); });
  for (auto &t : th)
    t.join();
}

float value(int rank, size_t i) { return float(rank * 1000 + int(i)) * 0.25f; }

} // namespace

TEST(Comm, AllReduceSumsInGroupOrderOnEveryRank) {
  for (int n : {2, 3, 4}) {
    const size_t len = 37; // chunks of unequal size
    std::vector<std::vector<float>> got(static_cast<size_t>(n));
    onRanks(n, [&](Comm &c) {
      std::vector<float> buf(len);
      for (size_t i = 0; i < len; ++i)
        buf[i] = value(c.rank(), i);
      c.allReduceSum(buf.data(), len, {});
      got[size_t(c.rank())] = buf;
      EXPECT_GT(c.bytesMoved(), 0u);
      // O(n) bytes per rank, not O(ranks x n).
      EXPECT_LE(c.bytesMoved(), 2 * len * sizeof(float));
    });
    for (size_t i = 0; i < len; ++i) {
      float s = 0.0f;
      for (int r = 0; r < n; ++r)
        s += value(r, i);
      for (int r = 0; r < n; ++r)
        ASSERT_EQ(got[size_t(r)][i], s) << n << " ranks, element " << i;
    }
  }
}

TEST(Comm, OneContributorGivesExactlyItsValues) {
  // What expert parallelism relies on: x + zeros is x, bit for bit.
  // The values are made once (a compiler may contract a*b+c into an FMA in
  // one place and not another).
  std::vector<float> values(10);
  for (size_t i = 0; i < values.size(); ++i)
    values[i] = 0.1f * float(i) + 1e-7f;
  onRanks(3, [&](Comm &c) {
    std::vector<float> buf(values.size(), 0.0f);
    if (c.rank() == 1)
      buf = values;
    c.allReduceSum(buf.data(), buf.size(), {});
    EXPECT_EQ(buf, values);
  });
}

TEST(Comm, GroupsReduceSeparately) {
  onRanks(4, [&](Comm &c) {
    std::vector<int> group = c.rank() < 2 ? std::vector<int>{0, 1} : std::vector<int>{2, 3};
    std::vector<float> buf(5, float(c.rank() + 1));
    c.allReduceSum(buf.data(), buf.size(), group);
    float want = c.rank() < 2 ? 3.0f : 7.0f;
    for (float v : buf)
      EXPECT_EQ(v, want);
  });
}

TEST(Comm, ReduceScatterAllGatherAllToAll) {
  const int n = 3;
  const size_t len = 4;
  onRanks(n, [&](Comm &c) {
    std::vector<float> in(len * n), out(len);
    for (size_t i = 0; i < in.size(); ++i)
      in[i] = value(c.rank(), i);
    c.reduceScatterSum(in.data(), len, out.data(), {});
    for (size_t i = 0; i < len; ++i) {
      float s = 0.0f;
      for (int r = 0; r < n; ++r)
        s += value(r, size_t(c.rank()) * len + i);
      EXPECT_EQ(out[i], s);
    }
    std::vector<float> all(len * n);
    c.allGather(in.data(), len, all.data(), {});
    for (int r = 0; r < n; ++r)
      for (size_t i = 0; i < len; ++i)
        EXPECT_EQ(all[size_t(r) * len + i], value(r, i));
    std::vector<float> a2a(len * n);
    c.allToAll(in.data(), len, a2a.data(), {});
    for (int r = 0; r < n; ++r)
      for (size_t i = 0; i < len; ++i)
        EXPECT_EQ(a2a[size_t(r) * len + i], value(r, size_t(c.rank()) * len + i));
  });
}

TEST(Comm, AllToAllVMovesVariableCounts) {
  // Rank r sends (r + j + 1) values to rank j.
  const int n = 3;
  onRanks(n, [&](Comm &c) {
    int me = c.rank();
    std::vector<size_t> sc(n), so(n), rc(n), ro(n);
    for (int j = 0; j < n; ++j) {
      sc[size_t(j)] = size_t(me + j + 1);
      rc[size_t(j)] = size_t(j + me + 1);
    }
    std::exclusive_scan(sc.begin(), sc.end(), so.begin(), size_t(0));
    std::exclusive_scan(rc.begin(), rc.end(), ro.begin(), size_t(0));
    std::vector<float> in(so.back() + sc.back()), out(ro.back() + rc.back());
    for (int j = 0; j < n; ++j)
      for (size_t i = 0; i < sc[size_t(j)]; ++i)
        in[so[size_t(j)] + i] = float(me * 100 + j * 10 + int(i));
    c.allToAllV(in.data(), sc, so, out.data(), rc, ro, {});
    for (int j = 0; j < n; ++j)
      for (size_t i = 0; i < rc[size_t(j)]; ++i)
        EXPECT_EQ(out[ro[size_t(j)] + i], float(j * 100 + me * 10 + int(i)));
  });
}

TEST(Comm, SendRecvAndBroadcast) {
  onRanks(2, [&](Comm &c) {
    int64_t v = c.rank() == 0 ? 42 : 0;
    if (c.rank() == 0)
      c.send(&v, sizeof v, 1);
    else
      c.recv(&v, sizeof v, 0);
    EXPECT_EQ(v, 42);
    int64_t b = c.rank() == 1 ? 7 : 0;
    c.broadcast(&b, sizeof b, 1, {});
    EXPECT_EQ(b, 7);
  });
}

TEST(Comm, LocalIsTheIdentity) {
  auto c = makeLocalComm();
  std::vector<float> x{1, 2, 3}, y(3);
  c->allReduceSum(x.data(), 3, {});
  EXPECT_EQ(x, (std::vector<float>{1, 2, 3}));
  c->reduceScatterSum(x.data(), 3, y.data(), {});
  EXPECT_EQ(y, x);
  std::vector<size_t> n{3}, z{0};
  std::fill(y.begin(), y.end(), 0.0f);
  c->allToAllV(x.data(), n, z, y.data(), n, z, {});
  EXPECT_EQ(y, x);
}
