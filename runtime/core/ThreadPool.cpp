//===- ThreadPool.cpp -----------------------------------------------------===//
#include "moert/ThreadPool.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>

#if defined(__x86_64__)
#define MOERT_PAUSE() __builtin_ia32_pause()
#else
#define MOERT_PAUSE() ((void)0)
#endif

namespace moert {

// How long an idle worker spins before sleeping: long enough to bridge the
// gap between two kernels of one token, short enough not to burn a core
// between requests.
static constexpr auto kSpin = std::chrono::microseconds(2000);

size_t ThreadPool::chunksPerThread() {
  static const size_t n = [] {
    const char *e = std::getenv("MOERT_CHUNKS_PER_THREAD");
    return e ? size_t(std::max(1, std::atoi(e))) : size_t(4);
  }();
  return n;
}

ThreadPool::ThreadPool(int numThreads) : numThreads_(numThreads < 1 ? 1 : numThreads) {
  for (int t = 1; t < numThreads_; ++t)
    workers_.emplace_back([this, t] { workerLoop(t); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true);
  generation_.fetch_add(1);
  {
    std::lock_guard<std::mutex> l(sleepMutex_);
  }
  wake_.notify_all();
  for (auto &w : workers_)
    w.join();
}

void ThreadPool::publish(Job &job) {
  job.id = generation_.load(std::memory_order_relaxed) + 1;
  job_.store(&job, std::memory_order_seq_cst);
  generation_.fetch_add(1, std::memory_order_seq_cst);
  // A worker counts itself in sleepers_ before re-checking the generation
  // under the mutex, so either it sees the new generation or we see it.
  if (sleepers_.load(std::memory_order_seq_cst) > 0) {
    { std::lock_guard<std::mutex> l(sleepMutex_); }
    wake_.notify_all();
  }
}

// Unpublishes the job and waits for workers still holding it. A worker
// announces itself in active_ before it loads job_, so after job_ is null
// and active_ is 0 no worker can reach the (stack-allocated) job.
void ThreadPool::retire() {
  job_.store(nullptr, std::memory_order_seq_cst);
  while (active_.load(std::memory_order_seq_cst) != 0)
    MOERT_PAUSE();
}

void ThreadPool::dispatch(void (*fn)(void *, size_t, int), void *ctx, size_t chunks) {
  Job job;
  job.chunkFn = fn;
  job.ctx = ctx;
  job.chunks = chunks;
  publish(job);
  for (size_t c; (c = job.next.fetch_add(1, std::memory_order_relaxed)) < chunks;) {
    fn(ctx, c, 0);
    job.done.fetch_add(1, std::memory_order_release);
  }
  while (job.done.load(std::memory_order_acquire) != chunks)
    MOERT_PAUSE();
  retire();
}

void ThreadPool::runAll(void (*fn)(void *, int), void *ctx) {
  if (numThreads_ == 1) {
    fn(ctx, 0);
    return;
  }
  Job job;
  job.allFn = fn;
  job.ctx = ctx;
  job.chunks = size_t(numThreads_);
  publish(job);
  fn(ctx, 0);
  job.done.fetch_add(1, std::memory_order_release);
  while (job.done.load(std::memory_order_acquire) != job.chunks)
    MOERT_PAUSE();
  retire();
}

void ThreadPool::workerLoop(int tid) {
  // Generation 0 is the constructor's: a dispatch may already have happened
  // before this thread got to run, and it must not be missed.
  uint64_t seen = 0;
  uint64_t lastAll = 0; // id of the last run() job this thread ran
  while (true) {
    auto start = std::chrono::steady_clock::now();
    uint64_t g;
    unsigned spins = 0;
    while ((g = generation_.load(std::memory_order_acquire)) == seen) {
      MOERT_PAUSE();
      // Yielding now and then lets the caller run when threads outnumber
      // free cores (a shared machine, or --threads above the core count).
      if (++spins % 64 == 0)
        std::this_thread::yield();
      if (spins % 1024 == 0 && std::chrono::steady_clock::now() - start > kSpin) {
        std::unique_lock<std::mutex> l(sleepMutex_);
        sleepers_.fetch_add(1, std::memory_order_seq_cst);
        wake_.wait(l, [&] { return generation_.load(std::memory_order_seq_cst) != seen; });
        sleepers_.fetch_sub(1, std::memory_order_relaxed);
        start = std::chrono::steady_clock::now();
      }
    }
    seen = g;
    if (stop_.load())
      return;
    active_.fetch_add(1, std::memory_order_seq_cst);
    Job *job = job_.load(std::memory_order_seq_cst);
    if (job) {
      if (job->allFn) {
        // run(): every thread exactly once. A late worker may see a newer
        // job than the generation it woke for, and then see it again.
        if (job->id != lastAll) {
          lastAll = job->id;
          job->allFn(job->ctx, tid);
          job->done.fetch_add(1, std::memory_order_release);
        }
      } else {
        for (size_t c; (c = job->next.fetch_add(1, std::memory_order_relaxed)) < job->chunks;) {
          job->chunkFn(job->ctx, c, tid);
          job->done.fetch_add(1, std::memory_order_release);
        }
      }
    }
    active_.fetch_sub(1, std::memory_order_seq_cst);
  }
}

} // namespace moert
