//===- CudaTestUtil.h - Helpers shared by the CUDA tests --------*- C++ -*-===//
#pragma once

#include "DeviceMath.h"

#include "moert/cpu/Kernels.h"

#include <random>
#include <vector>

namespace moetest {

/// n normal values N(0, scale^2) from `rng`.
inline std::vector<float> randn(size_t n, std::mt19937 &rng, float scale = 1.0f) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto &x : v)
    x = d(rng);
  return v;
}

/// The CPU reference gate's parameters equal to the CUDA gate's `p`, whose
/// selection bias (when it has one) is `hostBias` on the host.
inline moert::cpu::GateParams cpuGateParams(const moert::cuda::math::GateParams &p,
                                            const std::vector<float> &hostBias = {}) {
  return {{.numExperts = p.numExperts,
           .topK = p.topK,
           .sigmoid = p.sigmoid,
           .softmaxBeforeTopk = p.softmaxBeforeTopk,
           .numGroups = p.numGroups,
           .topkGroups = p.topkGroups,
           .bias = p.selectionBias ? hostBias : std::vector<float>{}},
          p.normTopk,
          p.capacityFactor,
          p.minCapacity,
          p.dropTokens,
          {},
          p.routedScalingFactor};
}

} // namespace moetest
