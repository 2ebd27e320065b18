//===- RopeTables.h - Rotary embedding tables -------------------*- C++ -*-===//
//
// The cos/sin tables every backend's RoPE kernel reads, computed once on the
// host in double so that all backends rotate by the same floats.
//
//===----------------------------------------------------------------------===//
#pragma once

#include <cstdint>
#include <vector>

namespace moert {

/// cos/sin of position * theta^(-2i/rotaryDim) for positions [0, positions)
/// and i in [0, rotaryDim/2), row-major [position][i], computed in double.
void ropeTables(int64_t positions, int rotaryDim, double theta, std::vector<float> &cosTab,
                std::vector<float> &sinTab);

} // namespace moert
