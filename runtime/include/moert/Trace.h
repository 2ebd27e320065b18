//===- Trace.h - Chrome trace events ----------------------------*- C++ -*-===//
#pragma once

#include "moert/Comm.h"

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace moert {

/// Nanoseconds on the system-wide monotonic clock (comparable across the
/// processes of one node).
inline int64_t nowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

class Trace {
public:
  struct Event {
    std::string name, cat;
    int stream;
    int64_t startNs, durNs;
    int64_t issuedNs = 0; // steps of asynchronous streams: when they were issued
  };
  /// Thread-safe: the streaming thread records its steps too.
  void add(std::string name, std::string cat, int stream, int64_t startNs, int64_t endNs) {
    std::lock_guard<std::mutex> l(mutex_);
    events_.push_back({std::move(name), std::move(cat), stream, startNs, endNs - startNs});
  }
  /// A step of an asynchronous stream, issued at issuedNs (in flight from
  /// then on, though it starts when its stream reaches it).
  void addIssued(std::string name, std::string cat, int stream, int64_t issuedNs, int64_t startNs,
                 int64_t endNs) {
    std::lock_guard<std::mutex> l(mutex_);
    events_.push_back(
        {std::move(name), std::move(cat), stream, startNs, endNs - startNs, issuedNs});
  }
  const std::vector<Event> &events() const { return events_; }
  void clear() { events_.clear(); }

  /// Gathers every rank's events and has rank 0 write one Chrome trace JSON
  /// (one process per rank, one thread per stream), atomically.
  void write(const std::string &path, Comm &comm) const;

private:
  std::mutex mutex_;
  std::vector<Event> events_;
};

} // namespace moert
