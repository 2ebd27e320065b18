//===- StreamWorker.cpp - A thread that runs queued host work in order ----===//
#include "moert/StreamWorker.h"

namespace moert {

StreamWorker::StreamWorker() : thread_([this] { loop(); }) {}

StreamWorker::~StreamWorker() {
  {
    std::lock_guard<std::mutex> l(m_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void StreamWorker::submit(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> l(m_);
    queue_.push_back(std::move(fn));
    ++submitted_;
  }
  cv_.notify_all();
}

uint64_t StreamWorker::submitted() {
  std::lock_guard<std::mutex> l(m_);
  return submitted_;
}

void StreamWorker::waitFor(uint64_t ticket) {
  std::unique_lock<std::mutex> l(m_);
  doneCv_.wait(l, [&] { return done_ >= ticket || error_; });
  if (error_)
    std::rethrow_exception(error_);
}

void StreamWorker::drain() {
  uint64_t t;
  {
    std::lock_guard<std::mutex> l(m_);
    t = submitted_;
  }
  waitFor(t);
}

void StreamWorker::loop() {
  std::unique_lock<std::mutex> l(m_);
  while (true) {
    cv_.wait(l, [&] { return stop_ || !queue_.empty(); });
    if (queue_.empty())
      return;
    std::function<void()> fn = std::move(queue_.front());
    queue_.pop_front();
    l.unlock();
    std::exception_ptr err;
    // After an error the stream's later work is skipped: it may depend on
    // what failed; synchronize() reports the first error.
    if (!error_) {
      try {
        fn();
      } catch (...) {
        err = std::current_exception();
      }
    }
    l.lock();
    if (err && !error_)
      error_ = err;
    ++done_;
    doneCv_.notify_all();
  }
}

} // namespace moert
