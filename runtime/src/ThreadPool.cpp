//===- ThreadPool.cpp -----------------------------------------------------===//
#include "moert/ThreadPool.h"

#include <chrono>

#if defined(__x86_64__)
#include <immintrin.h>
#define MOERT_PAUSE() _mm_pause()
#else
#define MOERT_PAUSE() ((void)0)
#endif

extern "C" void openblas_set_num_threads(int);

namespace moert {

// How long an idle worker spins before sleeping: long enough to bridge the
// gap between two kernels of one token, short enough not to burn a core
// between requests.
static constexpr auto kSpin = std::chrono::microseconds(2000);

ThreadPool::ThreadPool(int numThreads) : numThreads_(numThreads < 1 ? 1 : numThreads) {
  openblas_set_num_threads(1);
  for (int t = 1; t < numThreads_; ++t)
    workers_.emplace_back([this, t] { workerLoop(t); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true);
  generation_.fetch_add(1);
  generation_.notify_all();
  for (auto &w : workers_)
    w.join();
}

void ThreadPool::dispatch(TaskFn fn, void *ctx) {
  task_ = fn;
  taskCtx_ = ctx;
  pending_.store(numThreads_ - 1, std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_seq_cst);
  if (sleepers_.load(std::memory_order_seq_cst) > 0)
    generation_.notify_all();
  fn(ctx, 0);
  while (pending_.load(std::memory_order_acquire) != 0)
    MOERT_PAUSE();
}

void ThreadPool::workerLoop(int tid) {
  uint64_t seen = generation_.load(std::memory_order_acquire);
  while (true) {
    auto start = std::chrono::steady_clock::now();
    uint64_t g;
    unsigned spins = 0;
    while ((g = generation_.load(std::memory_order_acquire)) == seen) {
      MOERT_PAUSE();
      if (++spins % 1024 == 0 && std::chrono::steady_clock::now() - start > kSpin) {
        sleepers_.fetch_add(1, std::memory_order_seq_cst);
        // Re-check after announcing ourselves so a dispatch in between is
        // not missed (it saw sleepers_ == 0 and did not notify).
        generation_.wait(seen, std::memory_order_seq_cst);
        sleepers_.fetch_sub(1, std::memory_order_relaxed);
        start = std::chrono::steady_clock::now();
      }
    }
    seen = g;
    if (stop_.load())
      return;
    task_(taskCtx_, tid);
    pending_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

} // namespace moert
