//===- ThreadPool.h - A small spin-then-sleep fork/join pool ----*- C++ -*-===//
//
// Decode issues a few hundred short kernels per token, so dispatch must cost
// microseconds: workers spin briefly on a generation counter before sleeping
// on it (std::atomic::wait, a futex on Linux). The caller runs as thread 0.
// OpenBLAS is held at one thread: kernels call sgemm from inside the pool on
// disjoint slices, so the two never oversubscribe the cores.
//
//===----------------------------------------------------------------------===//
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <thread>
#include <vector>

namespace moert {

class ThreadPool {
public:
  explicit ThreadPool(int numThreads);
  ~ThreadPool();
  ThreadPool(const ThreadPool &) = delete;
  ThreadPool &operator=(const ThreadPool &) = delete;

  int size() const { return numThreads_; }

  /// Runs fn(tid) for tid in [0, size()) concurrently and waits for all.
  template <typename F> void run(F &&fn) {
    if (numThreads_ == 1) {
      fn(0);
      return;
    }
    using Fn = std::remove_reference_t<F>;
    dispatch([](void *ctx, int tid) { (*static_cast<Fn *>(ctx))(tid); },
             const_cast<void *>(static_cast<const void *>(&fn)));
  }

  /// Splits [0, n) into size() contiguous ranges whose bounds are multiples
  /// of `align` (except the end) and runs fn(begin, end, tid) on each.
  template <typename F> void parallelFor(size_t n, size_t align, F &&fn) {
    int nt = numThreads_;
    if (nt == 1 || n <= align) {
      fn(size_t(0), n, 0);
      return;
    }
    size_t blocks = (n + align - 1) / align;
    run([&](int tid) {
      size_t b0 = blocks * size_t(tid) / size_t(nt);
      size_t b1 = blocks * size_t(tid + 1) / size_t(nt);
      size_t begin = b0 * align, end = std::min(n, b1 * align);
      if (begin < end)
        fn(begin, end, tid);
    });
  }

private:
  using TaskFn = void (*)(void *, int);
  void dispatch(TaskFn fn, void *ctx);
  void workerLoop(int tid);

  int numThreads_;
  std::vector<std::thread> workers_;
  TaskFn task_ = nullptr;
  void *taskCtx_ = nullptr;
  alignas(64) std::atomic<uint64_t> generation_{0};
  alignas(64) std::atomic<int> pending_{0};
  alignas(64) std::atomic<int> sleepers_{0};
  std::atomic<bool> stop_{false};
};

} // namespace moert
