//===- PlanBuilder.h - Building plans in tests and benchmarks ---*- C++ -*-===//
//
// A thin layer over the FlatBuffers object API (moe::plan::PlanT): tests add
// weights, buffers and steps, may then corrupt any field, and finish() lays
// out each rank's arena (64-byte aligned, no reuse) and serializes.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "moert/plan_generated.h"

#include <cstdint>
#include <string>
#include <vector>

namespace moetest {

namespace mp = moe::plan;

class PlanBuilder {
public:
  PlanBuilder(std::string arch, int64_t vocab, int64_t hidden, int numLayers, int64_t maxPos,
              int64_t maxTokens, int64_t maxSeqLen, int numRanks = 1);

  mp::PlanT &plan() { return plan_; }
  mp::RankProgramT &rank() { return *plan_.ranks[size_t(rank_)]; }
  void setRank(int r) { rank_ = r; }
  int currentRank() const { return rank_; }

  int weight(const std::string &name, std::vector<int64_t> shape, mp::DType stored,
             mp::DType dtype, mp::Init init = mp::Init::Normal, float std = 0.02f,
             std::vector<int> ranks = {});
  /// The index of an existing weight, -1 when absent.
  int findWeight(const std::string &name) const;
  int buffer(const std::string &name, int64_t rowElems, int64_t rowsPerToken = 1,
             int64_t fixedRows = 0, mp::DType dtype = mp::DType::F32);
  int kvCache(int layer, int kvHeads, int headDim, mp::DType dtype = mp::DType::F32);

  template <typename OpT> int step(OpT op, const std::string &name, int layer = -1,
                                             mp::Stream stream = mp::Stream::Compute) {
    auto s = std::make_unique<mp::StepT>();
    s->op.Set(std::move(op));
    s->name = name;
    s->layer = layer;
    s->stream = stream;
    rank().steps.push_back(std::move(s));
    return int(rank().steps.size()) - 1;
  }

  /// Step `step` of the current rank waits for step `on` (another stream's).
  void waitFor(int step, int on) { rank().steps[size_t(step)]->waits.push_back(on); }

  /// Assigns arena offsets/max_rows when `layout`, then serializes.
  std::vector<uint8_t> finish(bool layout = true);

private:
  mp::PlanT plan_;
  int rank_ = 0;
};

/// Serializes a plan (object API) with the MOEP identifier.
std::vector<uint8_t> packPlan(const mp::PlanT &plan);

/// The first step of `kind` on rank 0 (null when there is none).
template <typename T> T *firstOp(mp::PlanT &p, mp::Op kind) {
  for (auto &s : p.ranks[0]->steps)
    if (s->op.type == kind)
      return reinterpret_cast<T *>(s->op.value);
  return nullptr;
}

} // namespace moetest
