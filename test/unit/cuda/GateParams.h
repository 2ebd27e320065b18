//===- GateParams.h - The CUDA gate's parameters for the CPU ---*- C++ -*-===//
#pragma once

#include "DeviceMath.h"

#include "moert/cpu/Kernels.h"

namespace moetest {

/// The CPU reference gate's parameters equal to the CUDA gate's `p`.
inline moert::cpu::GateParams cpuGateParams(const moert::cuda::math::GateParams &p) {
  return {p.numExperts,     p.topK,        p.sigmoid,   p.softmaxBeforeTopk, p.normTopk,
          p.capacityFactor, p.minCapacity, p.dropTokens};
}

} // namespace moetest
