//===- StreamWorker.h - Host work run in order on a thread ------*- C++ -*-===//
//
// A backend stream whose work is host functions (the CPU backend's
// communication and weight-streaming streams, the CUDA backend's weight
// streaming) runs them on one of these: submitted in order, run in order on
// the worker's own thread, so the thread that submits goes on at once.
//
//===----------------------------------------------------------------------===//
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>

namespace moert {

class StreamWorker {
public:
  StreamWorker();
  /// Runs what was submitted, then joins the thread.
  ~StreamWorker();
  void submit(std::function<void()> fn);
  /// Blocks until everything submitted so far has run; rethrows the first
  /// error a job raised.
  void drain();
  /// Jobs submitted so far; the ticket of the last one.
  uint64_t submitted();
  /// Blocks until job number `ticket` (in submit order, from 1) has run;
  /// rethrows the first error a job raised.
  void waitFor(uint64_t ticket);

private:
  void loop();
  std::mutex m_;
  std::condition_variable cv_, doneCv_;
  std::deque<std::function<void()>> queue_;
  uint64_t submitted_ = 0, done_ = 0;
  std::exception_ptr error_;
  bool stop_ = false;
  std::thread thread_;
};

} // namespace moert
