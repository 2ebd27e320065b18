//===- FuzzUtil.h - Helpers shared by the libFuzzer targets -----*- C++ -*-===//
//
// The readers under test take paths; an in-memory file (memfd) gives them one
// without touching the disk on every run.
//
//===----------------------------------------------------------------------===//
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <sys/mman.h>
#include <unistd.h>

namespace moefuzz {

/// A file holding `data`, reachable as path(), closed on destruction.
class MemFile {
public:
  MemFile(const uint8_t *data, size_t size, const char *name = "fuzz") {
    fd_ = ::memfd_create(name, MFD_CLOEXEC);
    if (fd_ < 0) {
      std::perror("memfd_create");
      std::abort();
    }
    for (size_t done = 0; done < size;) {
      ssize_t n = ::write(fd_, data + done, size - done);
      if (n <= 0) {
        std::perror("write");
        std::abort();
      }
      done += size_t(n);
    }
    path_ = "/proc/self/fd/" + std::to_string(fd_);
  }
  ~MemFile() { ::close(fd_); }
  MemFile(const MemFile &) = delete;
  MemFile &operator=(const MemFile &) = delete;
  const std::string &path() const { return path_; }

private:
  int fd_ = -1;
  std::string path_;
};

/// Reads every byte of [p, p + n) so ASan sees any out-of-bounds view.
inline uint8_t touch(const uint8_t *p, size_t n) {
  volatile uint8_t sum = 0;
  for (size_t i = 0; i < n; ++i)
    sum = sum + p[i];
  return sum;
}

} // namespace moefuzz
