//===- RopeTables.cpp - Rotary embedding tables ---------------------------===//
#include "moert/RopeTables.h"

#include <cmath>

namespace moert {

void ropeTables(int64_t positions, int rotaryDim, double theta, std::vector<float> &cosTab,
                std::vector<float> &sinTab) {
  int half = rotaryDim / 2;
  cosTab.resize(size_t(positions * half));
  sinTab.resize(size_t(positions * half));
  for (int i = 0; i < half; ++i) {
    double invFreq = std::pow(theta, -2.0 * i / rotaryDim);
    for (int64_t p = 0; p < positions; ++p) {
      double a = double(p) * invFreq;
      cosTab[size_t(p * half + i)] = float(std::cos(a));
      sinTab[size_t(p * half + i)] = float(std::sin(a));
    }
  }
}

} // namespace moert
