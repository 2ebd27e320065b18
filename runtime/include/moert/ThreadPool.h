//===- ThreadPool.h - A small spin-then-sleep fork/join pool ----*- C++ -*-===//
//
// Decode issues a few hundred short kernels per token, so dispatch must cost
// microseconds: workers spin briefly on a generation counter before sleeping
// on a condition variable. The caller works too.
//
// parallelFor hands out chunks dynamically: on a shared machine a worker may
// not be scheduled for milliseconds, and the caller then simply takes its
// chunks instead of waiting for it.
//
//===----------------------------------------------------------------------===//
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
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

  /// Splits [0, n) into chunks whose bounds are multiples of `align` (except
  /// the end) and runs fn(begin, end, tid) on them, tid being the running
  /// thread's index in [0, size()) (for per-thread scratch).
  template <typename F> void parallelFor(size_t n, size_t align, F &&fn) {
    size_t blocks = (n + align - 1) / align;
    if (numThreads_ == 1 || blocks <= 1) {
      if (n > 0)
        fn(size_t(0), n, 0);
      return;
    }
    // A few chunks per thread balance a late or slow thread.
    size_t chunks = std::min(blocks, size_t(numThreads_) * chunksPerThread());
    struct Ctx {
      F *fn;
      size_t n, align, blocks, chunks;
    } ctx{&fn, n, align, blocks, chunks};
    dispatch(
        [](void *c, size_t chunk, int tid) {
          auto *x = static_cast<Ctx *>(c);
          size_t b0 = x->blocks * chunk / x->chunks, b1 = x->blocks * (chunk + 1) / x->chunks;
          size_t begin = b0 * x->align, end = std::min(x->n, b1 * x->align);
          if (begin < end)
            (*x->fn)(begin, end, tid);
        },
        &ctx, chunks);
  }

  /// Runs fn(tid) exactly once on every thread concurrently (for work that
  /// needs all threads, such as a bandwidth probe) and waits.
  template <typename F> void run(F &&fn) {
    runAll([](void *c, int tid) { (*static_cast<std::remove_reference_t<F> *>(c))(tid); },
           const_cast<void *>(static_cast<const void *>(&fn)));
  }

private:
  static size_t chunksPerThread();
  struct Job {
    void (*chunkFn)(void *, size_t, int) = nullptr;
    void (*allFn)(void *, int) = nullptr;
    void *ctx = nullptr;
    size_t chunks = 0;
    uint64_t id = 0; // the generation that published it (unique)
    alignas(64) std::atomic<size_t> next{0};
    alignas(64) std::atomic<size_t> done{0};
  };
  void dispatch(void (*fn)(void *, size_t, int), void *ctx, size_t chunks);
  void runAll(void (*fn)(void *, int), void *ctx);
  void publish(Job &job);
  void retire();
  void workerLoop(int tid);

  int numThreads_;
  std::vector<std::thread> workers_;
  alignas(64) std::atomic<uint64_t> generation_{0};
  alignas(64) std::atomic<Job *> job_{nullptr};
  alignas(64) std::atomic<int> active_{0};
  alignas(64) std::atomic<int> sleepers_{0};
  std::atomic<bool> stop_{false};
  std::mutex sleepMutex_;
  std::condition_variable wake_;
};

} // namespace moert
