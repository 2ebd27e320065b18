//===- FileUtil.cpp -------------------------------------------------------===//
#include "moert/FileUtil.h"
#include "moert/Error.h"
#include "moert/Bench.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

namespace moert {

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  // A device or a pipe (/dev/null, /dev/stdout) is written in place:
  // renaming a temporary file over it would replace it (as root, /dev/null
  // itself, for the whole machine).
  struct stat st;
  if (::stat(path_.c_str(), &st) == 0 && !S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd_ < 0)
      fail("{}: cannot open output: {}", path_, std::strerror(errno));
    inPlace_ = true;
    return;
  }
  size_t slash = path_.rfind('/');
  std::string dir = slash == std::string::npos ? "" : path_.substr(0, slash + 1);
  std::string base = slash == std::string::npos ? path_ : path_.substr(slash + 1);
  if (base.empty())
    fail("{}: not a file name (expected an output file path)", path_);
  tmp_ = dir + "." + base + ".tmp.XXXXXX";
  fd_ = ::mkstemp(tmp_.data());
  if (fd_ < 0)
    fail("{}: cannot create output file: {}", path_, std::strerror(errno));
  ::fchmod(fd_, 0644);
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) {
    ::close(fd_);
    if (!inPlace_)
      ::unlink(tmp_.c_str());
  }
}

void AtomicFile::write(const void *data, size_t size) {
  const char *p = static_cast<const char *>(data);
  while (size > 0) {
    ssize_t n = ::write(fd_, p, size);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      fail("{}: write failed: {}", path_, std::strerror(errno));
    p += n;
    size -= size_t(n);
  }
}

void AtomicFile::commit() {
  if (inPlace_) {
    int r = ::close(fd_);
    fd_ = -1;
    if (r != 0)
      fail("{}: write failed: {}", path_, std::strerror(errno));
    return;
  }
  if (::close(fd_) != 0) {
    fd_ = -1;
    ::unlink(tmp_.c_str());
    fail("{}: write failed: {}", path_, std::strerror(errno));
  }
  fd_ = -1;
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp_.c_str());
    fail("{}: cannot rename output into place: {}", path_, std::strerror(e));
  }
}

void writeFileAtomic(const std::string &path, std::string_view contents) {
  AtomicFile f(path);
  f.write(contents);
  f.commit();
}

MappedFile::MappedFile(const std::string &path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    fail("{}: cannot open: {}", path, std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("{}: not a regular file", path);
  }
  size_ = size_t(st.st_size);
  if (size_ > 0) {
    void *p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      ::close(fd);
      fail("{}: cannot map: {}", path, std::strerror(errno));
    }
    data_ = static_cast<const uint8_t *>(p);
  }
  ::close(fd);
}

MappedFile::~MappedFile() {
  if (data_)
    ::munmap(const_cast<uint8_t *>(data_), size_);
}

void *mapAnonymous(uint64_t bytes, bool hugePages, const char *what) {
  if (bytes == 0)
    return nullptr;
  void *p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED)
    fail("cannot allocate {} bytes for the {}: {}", bytes, what, std::strerror(errno));
  if (hugePages)
    ::madvise(p, bytes, MADV_HUGEPAGE);
  return p;
}

void unmapAnonymous(void *p, uint64_t bytes) {
  if (p)
    ::munmap(p, bytes);
}

bool isDirectory(const std::string &path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool isRegularFile(const std::string &path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

uint64_t peakRssBytes() {
  struct rusage ru;
  if (::getrusage(RUSAGE_SELF, &ru) != 0)
    return 0;
  return uint64_t(ru.ru_maxrss) * 1024;
}

} // namespace moert
