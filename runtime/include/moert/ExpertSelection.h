//===- ExpertSelection.h - A Gate step's choice of experts ------*- C++ -*-===//
//
// The selection half of plan.fbs's Gate on the host (ExpertSelection.cpp):
// the CPU gate kernel and expert prediction share it.
//
//===----------------------------------------------------------------------===//
#pragma once

#include <cstdint>
#include <vector>

namespace moe::plan {
struct Gate;
}

namespace moert {

/// A Gate step's choice of experts (plan.fbs Gate without capacity and
/// weights): its scores, DeepSeek-V3's selection-only bias and groups, top-k.
struct ExpertSelection {
  int numExperts = 0, topK = 1;
  bool sigmoid = false, softmaxBeforeTopk = true;
  int numGroups = 1, topkGroups = 1;
  std::vector<float> bias; // the selection bias: numExperts values, or none
};

/// The selection a Gate step describes (its bias not read: a weight).
ExpertSelection selectionOf(const moe::plan::Gate &gate);
/// Ranks one row of router logits as the Gate does: score[0..E) the scores
/// (probabilities, or the logits when the softmax follows top-k; the bias
/// and groups only rank) and pick[0..min(topK, E)) the chosen experts, best
/// first, ties to the lower id (ExpertSelection.cpp).
void selectExperts(const float *logits, const ExpertSelection &s, double *score, int *pick);
/// Expert prediction, shared by every backend's routeTopK: the sorted union
/// over `rows` rows of `logits` (numExperts floats each) of selectExperts.
std::vector<int32_t> predictedExperts(const float *logits, int64_t rows,
                                      const ExpertSelection &s);

} // namespace moert
