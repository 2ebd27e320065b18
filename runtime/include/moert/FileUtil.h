//===- FileUtil.h - Atomic output files and mapped input files --*- C++ -*-===//
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace moert {

/// Writes to a temporary file beside `path` and renames it over `path` on
/// commit(); a file never committed (error, exception) is removed, so a
/// failed run leaves nothing half-written. Devices and pipes (/dev/null) are
/// written in place.
class AtomicFile {
public:
  explicit AtomicFile(std::string path);
  ~AtomicFile();
  AtomicFile(const AtomicFile &) = delete;
  AtomicFile &operator=(const AtomicFile &) = delete;

  void write(const void *data, size_t size);
  void write(std::string_view s) { write(s.data(), s.size()); }
  void commit();

private:
  std::string path_, tmp_;
  int fd_ = -1;
  bool inPlace_ = false; // a device or pipe, written directly
};

/// Writes `contents` to `path` atomically.
void writeFileAtomic(const std::string &path, std::string_view contents);

/// A read-only private mapping of a whole file.
class MappedFile {
public:
  explicit MappedFile(const std::string &path);
  ~MappedFile();
  MappedFile(const MappedFile &) = delete;
  MappedFile &operator=(const MappedFile &) = delete;

  const uint8_t *data() const { return data_; }
  size_t size() const { return size_; }
  const std::string &path() const { return path_; }

private:
  std::string path_;
  const uint8_t *data_ = nullptr;
  size_t size_ = 0;
};

/// Zero-filled pages from the kernel (RSS grows only as they are touched);
/// `hugePages` asks for transparent huge pages. `what` names the use in the
/// out-of-memory message. Release with unmapAnonymous.
void *mapAnonymous(uint64_t bytes, bool hugePages, const char *what);
void unmapAnonymous(void *p, uint64_t bytes);

bool isDirectory(const std::string &path);
bool isRegularFile(const std::string &path);

} // namespace moert
