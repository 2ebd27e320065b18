//===- WeightBytesTest.cpp - the plan's bytes per rank ---------------------===//
//
// Weight::bytesPerRank (one pass over the experts' ranks, as moe-plan-memory,
// moe-layer-streaming and the emitter use it) agrees with bytesOnRank rank by
// rank for every kind of weight the table holds.
//
//===----------------------------------------------------------------------===//

#include "moe/Plan/Program.h"

#include <gtest/gtest.h>

using namespace mlir::moe::plan;

namespace {

void expectSameAsBytesOnRank(const Weight &w, int64_t ranks) {
  std::vector<uint64_t> all = w.bytesPerRank(ranks);
  ASSERT_EQ(int64_t(all.size()), ranks);
  for (int32_t r = 0; r < ranks; ++r)
    EXPECT_EQ(all[size_t(r)], w.bytesOnRank(r)) << w.name << " rank " << r;
}

Weight stacked(int64_t experts) {
  Weight w;
  w.name = "experts.up";
  w.type = ElemType::BF16;
  w.shape = {experts, 8, 4};
  return w;
}

TEST(WeightBytesPerRank, MatchesBytesOnRank) {
  Weight plain;
  plain.name = "norm";
  plain.shape = {16};
  expectSameAsBytesOnRank(plain, 4);

  Weight some = plain;
  some.name = "bias on member 0";
  some.ranks = {0, 2};
  expectSameAsBytesOnRank(some, 4);

  Weight whole = plain;
  whole.name = "sliced whole";
  whole.sliced = true;
  expectSameAsBytesOnRank(whole, 4);

  // Not placed: every rank holds every expert.
  Weight unplaced = stacked(4);
  unplaced.expertRanks.assign(4, {});
  expectSameAsBytesOnRank(unplaced, 3);

  // Placed, with a replica (expert 1 on ranks 1 and 3) and ranks that hold
  // nothing.
  Weight placed = stacked(4);
  placed.expertRanks = {{0}, {1, 3}, {2}, {0}};
  placed.ranks = {0, 1, 2, 3};
  expectSameAsBytesOnRank(placed, 6);

  // Sliced experts: each rank of an expert holds 1/parts of it.
  Weight parts = stacked(2);
  parts.expertParts = 2;
  parts.expertRanks = {{0, 1}, {2, 3}};
  parts.ranks = {0, 1, 2, 3};
  expectSameAsBytesOnRank(parts, 4);
  EXPECT_EQ(parts.bytesPerRank(4)[0], parts.bytes() / 4);

  // A rank listed twice for one expert counts once.
  Weight twice = stacked(2);
  twice.expertRanks = {{1, 1}, {0}};
  twice.ranks = {0, 1};
  expectSameAsBytesOnRank(twice, 2);

  std::vector<Weight> table = {plain, some, whole, unplaced, placed, parts};
  std::vector<uint64_t> total = weightBytesPerRank(table, 4);
  for (int32_t r = 0; r < 4; ++r)
    EXPECT_EQ(total[size_t(r)], weightBytesOnRank(table, r));
}

} // namespace
