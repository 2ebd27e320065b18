//===- ExpertSelection.cpp - A Gate step's choice of experts --------------===//
//
// The selection half of plan.fbs's Gate, on the host: the CPU backend's gate
// kernel ranks each token with it, and expert prediction (weight streaming)
// applies it to the next layer's router logits, so a prediction chooses as
// the gate will (router bias, sigmoid scores, DeepSeek-V3's selection bias
// and groups), not merely the top-k logits.
//
//===----------------------------------------------------------------------===//
#include "moert/ExpertSelection.h"
#include "moert/Plan.h"

#include <algorithm>
#include <cmath>

namespace moert {

ExpertSelection selectionOf(const plan::Gate &gate) {
  return {.numExperts = gate.num_experts(),
          .topK = gate.top_k(),
          .sigmoid = gate.score() == plan::ScoreFn::Sigmoid,
          .softmaxBeforeTopk = gate.softmax_before_topk(),
          .numGroups = gate.num_groups(),
          .topkGroups = gate.topk_groups(),
          .bias = {}};
}

void selectExperts(const float *row, const ExpertSelection &p, double *score, int *pick) {
  const int E = p.numExperts, K = std::min(p.topK, E), G = std::max(1, p.numGroups),
            perGroup = E / G;
  if (p.softmaxBeforeTopk) {
    if (p.sigmoid) {
      for (int e = 0; e < E; ++e)
        score[e] = 1.0 / (1.0 + std::exp(-double(row[e])));
    } else {
      double mx = row[0], sum = 0.0;
      for (int e = 1; e < E; ++e)
        mx = std::max(mx, double(row[e]));
      for (int e = 0; e < E; ++e)
        sum += score[e] = std::exp(double(row[e]) - mx);
      for (int e = 0; e < E; ++e)
        score[e] /= sum;
    }
  } else {
    for (int e = 0; e < E; ++e)
      score[e] = row[e];
  }
  // What top-k ranks: the scores, or with a selection bias or groups (HF
  // DeepseekV3MoE.route_tokens_to_experts) scores + bias, a group scoring
  // the sum of its two best, experts of the groups left out ranking as 0.0
  // (masked_fill with 0, not -inf).
  thread_local std::vector<double> choice, groupScore;
  thread_local std::vector<char> taken, keep;
  const double *rank = score;
  if (!p.bias.empty() || G > 1) {
    choice.assign(score, score + E);
    for (int e = 0; e < E && !p.bias.empty(); ++e)
      choice[size_t(e)] += double(p.bias[size_t(e)]);
    if (G > 1) {
      groupScore.assign(size_t(G), 0.0);
      keep.assign(size_t(G), 0);
      for (int g = 0; g < G; ++g) {
        double b1 = -INFINITY, b2 = -INFINITY;
        for (int e = g * perGroup; e < (g + 1) * perGroup; ++e) {
          double c = choice[size_t(e)];
          if (c > b1) {
            b2 = b1;
            b1 = c;
          } else if (c > b2) {
            b2 = c;
          }
        }
        groupScore[size_t(g)] = b1 + b2;
      }
      for (int j = 0; j < p.topkGroups; ++j) {
        int best = -1;
        for (int g = 0; g < G; ++g)
          if (!keep[size_t(g)] &&
              (best < 0 || groupScore[size_t(g)] > groupScore[size_t(best)]))
            best = g;
        if (best >= 0)
          keep[size_t(best)] = 1;
      }
      for (int e = 0; e < E; ++e)
        if (!keep[size_t(e / perGroup)])
          choice[size_t(e)] = 0.0;
    }
    rank = choice.data();
  }
  // Top-k, descending, ties to the lower expert id.
  taken.assign(size_t(E), 0);
  for (int j = 0; j < K; ++j) {
    int best = -1;
    for (int e = 0; e < E; ++e)
      if (!taken[size_t(e)] && (best < 0 || rank[e] > rank[best]))
        best = e;
    taken[size_t(best)] = 1;
    pick[j] = best;
  }
}

std::vector<int32_t> predictedExperts(const float *logits, int64_t rows,
                                      const ExpertSelection &s) {
  const int E = s.numExperts, K = std::min(s.topK, s.numExperts);
  std::vector<double> score(static_cast<size_t>(E));
  std::vector<int> pick(static_cast<size_t>(K));
  std::vector<char> chosen(static_cast<size_t>(E), 0);
  for (int64_t r = 0; r < rows; ++r) {
    selectExperts(logits + r * E, s, score.data(), pick.data());
    for (int e : pick)
      chosen[size_t(e)] = 1;
  }
  std::vector<int32_t> experts;
  for (int32_t e = 0; e < int32_t(E); ++e)
    if (chosen[size_t(e)])
      experts.push_back(e);
  return experts;
}

} // namespace moert
