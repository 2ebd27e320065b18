//===- LocalComm.cpp - Single-rank communication --------------------------===//
#include "moert/Comm.h"

#include <cstdlib>
#include <cstring>

namespace moert {

void Comm::allReduceSum(float *buf, size_t n, std::span<const int> group) {
  int g = groupSize(group);
  if (g == 1)
    return;
  tmp_.resize(n * size_t(g));
  allGather(buf, n, tmp_.data(), group);
  for (size_t i = 0; i < n; ++i) {
    float s = 0.0f;
    for (int r = 0; r < g; ++r)
      s += tmp_[size_t(r) * n + i];
    buf[i] = s;
  }
}

void Comm::reduceScatterSum(const float *in, size_t n, float *out, std::span<const int> group) {
  int g = groupSize(group);
  tmp_.resize(n * size_t(g));
  allToAll(in, n, tmp_.data(), group);
  for (size_t i = 0; i < n; ++i) {
    float s = 0.0f;
    for (int r = 0; r < g; ++r)
      s += tmp_[size_t(r) * n + i];
    out[i] = s;
  }
}

namespace {
class LocalComm final : public Comm {
public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  const char *name() const override { return "local"; }
  void allGather(const float *in, size_t n, float *out, std::span<const int>) override {
    if (in != out)
      std::memmove(out, in, n * sizeof(float));
  }
  void allToAll(const float *in, size_t n, float *out, std::span<const int>) override {
    if (in != out)
      std::memmove(out, in, n * sizeof(float));
  }
  void broadcast(void *, size_t, int, std::span<const int>) override {}
  std::vector<std::string> gatherToRoot(const std::string &mine) override { return {mine}; }
  void barrier() override {}
  [[noreturn]] void abort(int code) override { std::exit(code); }
};
} // namespace

std::unique_ptr<Comm> makeLocalComm() { return std::make_unique<LocalComm>(); }

} // namespace moert
