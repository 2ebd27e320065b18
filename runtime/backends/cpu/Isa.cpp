//===- Isa.cpp - ISA selection, product strategy, scratch memory ----------===//
#include "LinearKernels.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <string_view>

namespace moert::cpu {

Isa detectIsa() {
  static const Isa isa = [] {
    __builtin_cpu_init();
    Isa best = Isa::Scalar;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
      best = __builtin_cpu_supports("avx512bf16") ? Isa::Avx512Bf16 : Isa::Avx512;
    if (const char *env = std::getenv("MOERT_ISA")) {
      std::string_view e(env);
      Isa want = e == "scalar" ? Isa::Scalar : e == "avx512" ? Isa::Avx512 : best;
      best = std::min(best, want);
    }
    return best;
  }();
  return isa;
}

static std::atomic<int> gIsa{-1};
static std::atomic<int> gStrategy{int(LinearStrategy::Auto)};

void setLinearStrategy(LinearStrategy s) { gStrategy.store(int(s)); }

Isa activeIsa() {
  int v = gIsa.load(std::memory_order_relaxed);
  return v < 0 ? detectIsa() : Isa(v);
}

void setIsa(Isa isa) { gIsa.store(int(std::min(isa, detectIsa()))); }

const char *isaName(Isa isa) {
  switch (isa) {
  case Isa::Scalar:
    return "scalar";
  case Isa::Avx512:
    return "avx512";
  case Isa::Avx512Bf16:
    return "avx512-bf16";
  }
  return "?";
}

Workspace::Buf::~Buf() { std::free(p); }

void *Workspace::Buf::get(size_t bytes) {
  if (bytes > size) {
    std::free(p);
    // Grown by half at least: attention's scratch grows with the context,
    // a few bytes per decode step, and must not be reallocated every step.
    size = (std::max(bytes, size + size / 2) + 63) & ~size_t(63);
    p = std::aligned_alloc(64, size);
    if (!p)
      throw std::bad_alloc();
  }
  return p;
}

void *Workspace::shared(size_t slot, size_t bytes) { return shared_[slot].get(bytes); }

void Workspace::reserveLocal(size_t bytes) {
  for (Buf &b : perThread_)
    b.get(bytes);
}

void *Workspace::local(int tid, size_t bytes) { return perThread_[size_t(tid)].get(bytes); }

LinearStrategy linearStrategy() {
  return LinearStrategy(gStrategy.load(std::memory_order_relaxed));
}

} // namespace moert::cpu
