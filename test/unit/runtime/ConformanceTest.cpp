//===- ConformanceTest.cpp - The fixtures' numerical contract -------------===//
//
// For each fixture: the reference plan (test/support/HFPlans) with the
// fixture's weights reproduces expected.safetensors — logits of the prompt
// within 1e-3 and the 16 greedy tokens exactly — on every kernel ISA.
//
//===----------------------------------------------------------------------===//
#include "TestUtil.h"

#include "HFPlans.h"
#include "moert/Generate.h"
#include "moert/cpu/Kernels.h"
#include "moert/Safetensors.h"

#include <cmath>

using namespace moert;
using namespace moetest;

namespace {

struct FixtureRun {
  GenerateResult res;
  double maxErr = 0.0;
};

FixtureRun runFixture(const std::string &name, cpu::Isa isa, int threads, int64_t maxTokens) {
  cpu::Isa saved = cpu::activeIsa();
  cpu::setIsa(isa);
  std::string dir = fixture(name);
  FixtureExpected exp = loadFixtureExpected(dir);
  HFPlanOptions o;
  o.maxTokens = maxTokens;
  PlanFile plan = PlanFile::fromBytes(buildHFPlan(dir, o), name + ".plan");
  TestBackend pool(threads);
  auto comm = makeLocalComm();
  auto weights = WeightStore::fromCheckpoint(plan, std::make_shared<Checkpoint>(dir), {0}, pool);
  Session s(plan, 0, *weights, *comm, pool);
  GenerateOptions g;
  g.maxNewTokens = int64_t(exp.generated.size() - exp.input.size());
  g.promptLogits = true;
  FixtureRun r;
  r.res = generate(s, *comm, exp.input, g);
  cpu::setIsa(saved);
  EXPECT_EQ(r.res.tokens, exp.generated) << name;
  EXPECT_EQ(r.res.promptLogits.size(), exp.logits.size());
  for (size_t i = 0; i < std::min(exp.logits.size(), r.res.promptLogits.size()); ++i)
    r.maxErr = std::max(r.maxErr, double(std::abs(r.res.promptLogits[i] - exp.logits[i])));
  EXPECT_LE(r.maxErr, 1e-3) << name;
  return r;
}

class Conformance : public ::testing::TestWithParam<std::string> {};

} // namespace

TEST_P(Conformance, MatchesExpectedOnEveryIsa) {
  if (!haveFixtures())
    GTEST_SKIP() << "no fixtures in " << fixturesDir();
  for (cpu::Isa isa : {cpu::Isa::Scalar, cpu::Isa::Avx512, cpu::Isa::Avx512Bf16}) {
    if (isa > cpu::detectIsa())
      continue;
    SCOPED_TRACE(cpu::isaName(isa));
    FixtureRun r = runFixture(GetParam(), isa, 2, 64);
    // The README promises ~1e-5 for an f32 runtime; hold the runtime to it.
    EXPECT_LE(r.maxErr, 2e-5) << GetParam();
  }
}

TEST_P(Conformance, ChunkedPrefillMatches) {
  if (!haveFixtures())
    GTEST_SKIP() << "no fixtures";
  // Prompts of 11 tokens in chunks of 4: positions and the cache carry over.
  FixtureRun r = runFixture(GetParam(), cpu::detectIsa(), 1, 4);
  EXPECT_LE(r.maxErr, 2e-5);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, Conformance,
                         ::testing::Values("gpt2-tiny", "mixtral-tiny", "qwen2moe-tiny"),
                         [](const auto &info) {
                           std::string n = info.param;
                           n.erase(std::remove(n.begin(), n.end(), '-'), n.end());
                           return n;
                         });
