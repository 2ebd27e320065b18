//===- BatchCheck.h - Batched vs one-sequence generation --------*- C++ -*-===//
//
// The batching scheduler's end-to-end check, shared by BatchTest (the CPU)
// and the backend conformance suite (every backend): generateBatch over six
// requests equals generate() of each request alone.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "TestUtil.h"

#include "moert/Batch.h"
#include "moert/Generate.h"
#include "moert/Session.h"
#include "moert/Weights.h"

#include <gtest/gtest.h>

namespace moetest {

/// Six requests; `longer` more prompt tokens each.
inline std::vector<moert::SequenceRequest> requests(int64_t vocab, float temperature,
                                                    int64_t longer = 0) {
  const int64_t lens[] = {7, 1, 12, 3, 9, 2};
  const int64_t news[] = {6, 9, 3, 8, 1, 5};
  std::vector<moert::SequenceRequest> r;
  for (int k = 0; k < 6; ++k) {
    moert::SequenceRequest q;
    for (int64_t i = 0; i < lens[k] + longer; ++i)
      q.prompt.push_back((i * 37 + 5 + k * 11) % vocab);
    q.maxNewTokens = news[k];
    q.stopAtEos = false;
    q.temperature = temperature;
    q.topP = temperature > 0 ? 0.9f : 1.0f;
    q.seed = uint64_t(100 + k);
    r.push_back(std::move(q));
  }
  return r;
}

/// generateBatch on `batched` equals generate() of each request alone on `single`.
inline void checkBatchEqualsSingle(moert::Backend &be, const moert::PlanFile &batched,
                                   const moert::PlanFile &single, float temperature, int64_t chunk,
                                   moert::BatchStats *statsOut = nullptr, int64_t longer = 0) {
  using namespace moert;
  auto comm = makeLocalComm();
  auto wb = WeightStore::random(batched, 7, {0}, be);
  auto ws = WeightStore::random(single, 7, {0}, be);
  Session sb(batched, 0, *wb, *comm, be), ss(single, 0, *ws, *comm, be);
  std::vector<SequenceRequest> reqs = requests(batched.vocabSize(), temperature, longer);
  BatchOptions bo;
  bo.prefillChunk = chunk;
  BatchStats st;
  std::vector<SequenceResult> got = generateBatch(sb, *comm, reqs, bo, &st);
  ASSERT_EQ(got.size(), reqs.size());
  for (size_t k = 0; k < reqs.size(); ++k) {
    GenerateOptions g;
    g.maxNewTokens = reqs[k].maxNewTokens;
    g.temperature = reqs[k].temperature;
    g.topP = reqs[k].topP;
    g.seed = reqs[k].seed;
    g.stopAtEos = false;
    GenerateResult want = generate(ss, *comm, reqs[k].prompt, g);
    std::vector<int64_t> w(want.tokens.begin() + int64_t(reqs[k].prompt.size()), want.tokens.end());
    EXPECT_TRUE(got[k].error.empty()) << got[k].error;
    EXPECT_EQ(got[k].output, w) << "sequence " << k;
    EXPECT_EQ(got[k].finishReason, "length");
    EXPECT_EQ(got[k].tokenMs.size(), w.size());
  }
  EXPECT_GT(st.steps, 0);
  EXPECT_GT(st.occupancy(), 0.0);
  if (statsOut)
    *statsOut = st;
}

} // namespace moetest
