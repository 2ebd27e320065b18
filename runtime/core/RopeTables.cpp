//===- RopeTables.cpp - Rotary embedding tables ---------------------------===//
#include "moert/RopeTables.h"

#include "moert/Plan.h"

#include <algorithm>

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

void ropeTables(int64_t positions, int rotaryDim, double theta, std::span<const float> invFreq,
                float attentionFactor, std::vector<float> &cosTab, std::vector<float> &sinTab) {
  if (invFreq.empty()) {
    ropeTables(positions, rotaryDim, theta, cosTab, sinTab);
  } else {
    int half = rotaryDim / 2;
    cosTab.resize(size_t(positions * half));
    sinTab.resize(size_t(positions * half));
    for (int64_t p = 0; p < positions; ++p)
      for (int i = 0; i < half; ++i) {
        float angle = float(p) * invFreq[size_t(i)];
        cosTab[size_t(p * half + i)] = float(std::cos(double(angle)));
        sinTab[size_t(p * half + i)] = float(std::sin(double(angle)));
      }
  }
  if (attentionFactor != 1.0f) {
    for (float &c : cosTab)
      c *= attentionFactor;
    for (float &s : sinTab)
      s *= attentionFactor;
  }
}

const RopeTableCache::Entry &RopeTableCache::get(int64_t positions, const plan::Rope &op) {
  std::span<const float> inv;
  if (op.inv_freq())
    inv = std::span<const float>(op.inv_freq()->data(), op.inv_freq()->size());
  std::lock_guard<std::mutex> lock(mutex_);
  Entry *e = nullptr;
  for (Entry &x : entries_)
    if (x.rotaryDim == op.rotary_dim() && x.theta == op.theta() &&
        x.attentionFactor == op.attention_factor() &&
        std::equal(x.invFreq.begin(), x.invFreq.end(), inv.begin(), inv.end()))
      e = &x;
  if (!e) {
    e = &entries_.emplace_back();
    e->rotaryDim = op.rotary_dim();
    e->theta = op.theta();
    e->attentionFactor = op.attention_factor();
    e->invFreq.assign(inv.begin(), inv.end());
  }
  if (e->positions < positions) {
    // Entries do not depend on the table's length: growing keeps them.
    e->positions = std::max({positions, 2 * e->positions, int64_t(256)});
    ropeTables(e->positions, e->rotaryDim, double(e->theta), e->invFreq, e->attentionFactor,
               e->cosTab, e->sinTab);
    ++e->generation;
  }
  return *e;
}

} // namespace moert
