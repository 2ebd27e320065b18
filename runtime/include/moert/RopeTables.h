//===- RopeTables.h - Rotary embedding tables -------------------*- C++ -*-===//
//
// The cos/sin tables every backend's RoPE kernel reads, computed once on the
// host in double so that all backends rotate by the same floats.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "moert/Plan.h"

#include <cstdint>
#include <deque>
#include <mutex>
#include <span>
#include <vector>

namespace moert {

/// cos/sin of position * theta^(-2i/rotaryDim) for positions [0, positions)
/// and i in [0, rotaryDim/2), row-major [position][i], computed in double.
void ropeTables(int64_t positions, int rotaryDim, double theta, std::vector<float> &cosTab,
                std::vector<float> &sinTab);

/// A plan Rope op's tables: with `invFreq` (rotaryDim/2 values, HF's scaled
/// RoPE) the angle is the f32 product position * invFreq[i] as transformers
/// computes it, and cos/sin are multiplied by `attentionFactor` in f32;
/// without, the plain tables above (times attentionFactor when it is not 1).
void ropeTables(int64_t positions, int rotaryDim, double theta, std::span<const float> invFreq,
                float attentionFactor, std::vector<float> &cosTab, std::vector<float> &sinTab);

/// The tables of every distinct rotary embedding of a plan (rotary dim,
/// theta, inv_freq, attention factor: q and k of every layer usually share
/// one), built on first use and regrown when a longer position is asked for.
/// Safe to share between threads; entries live as long as the cache.
class RopeTableCache {
public:
  struct Entry {
    int rotaryDim = 0;
    float theta = 0, attentionFactor = 1;
    std::vector<float> invFreq;
    int64_t positions = 0; // rows of the tables
    uint64_t generation = 0; // bumped each time the tables are rebuilt
    std::vector<float> cosTab, sinTab;
  };
  /// The entry of `op` covering positions [0, positions).
  const Entry &get(int64_t positions, const plan::Rope &op);

private:
  std::mutex mutex_;
  std::deque<Entry> entries_;
};

} // namespace moert
