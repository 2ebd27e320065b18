//===- ThreadPoolTest.cpp -------------------------------------------------===//
#include "moert/ThreadPool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <vector>

using namespace moert;

TEST(ThreadPool, ParallelForCoversEveryIndexOnce) {
  for (int threads : {1, 2, 3, 5}) {
    ThreadPool pool(threads);
    for (size_t n : {0ul, 1ul, 7ul, 16ul, 100ul, 1031ul})
      for (size_t align : {1ul, 4ul, 16ul}) {
        std::vector<std::atomic<int>> hits(n);
        std::atomic<int> badTid{0};
        pool.parallelFor(n, align, [&](size_t b, size_t e, int tid) {
          if (tid < 0 || tid >= threads)
            ++badTid;
          if (b % align != 0)
            ++badTid;
          for (size_t i = b; i < e; ++i)
            ++hits[i];
        });
        for (size_t i = 0; i < n; ++i)
          ASSERT_EQ(hits[i].load(), 1) << "threads=" << threads << " n=" << n << " i=" << i;
        EXPECT_EQ(badTid.load(), 0);
      }
  }
}

TEST(ThreadPool, RunCallsEveryThreadOnceManyTimes) {
  ThreadPool pool(4);
  for (int rep = 0; rep < 300; ++rep) {
    std::vector<std::atomic<int>> seen(4);
    pool.run([&](int tid) { ++seen[size_t(tid)]; });
    for (auto &s : seen)
      ASSERT_EQ(s.load(), 1);
    std::atomic<size_t> sum{0};
    pool.parallelFor(64, 1, [&](size_t b, size_t e, int) {
      for (size_t i = b; i < e; ++i)
        sum += i;
    });
    ASSERT_EQ(sum.load(), 64u * 63u / 2u);
  }
}
