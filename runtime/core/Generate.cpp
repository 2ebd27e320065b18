//===- Generate.cpp -------------------------------------------------------===//
#include "moert/Generate.h"

#include <algorithm>
#include <cmath>

namespace moert {

int64_t Sampler::argmax(const float *logits, int64_t vocab) {
  int64_t best = 0;
  for (int64_t i = 1; i < vocab; ++i)
    if (logits[i] > logits[best])
      best = i;
  return best;
}

static double uniform(uint64_t &state) {
  uint64_t x = (state += 0x9e3779b97f4a7c15ull);
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  x ^= x >> 31;
  return double(x >> 11) * 0x1.0p-53;
}

int64_t sampleToken(const float *logits, int64_t vocab, float temperature, float topP,
                    uint64_t &state) {
  if (!(temperature > 0.0f))
    return Sampler::argmax(logits, vocab);
  thread_local std::vector<std::pair<double, int64_t>> probs;
  double mx = logits[Sampler::argmax(logits, vocab)], sum = 0.0;
  probs.resize(size_t(vocab));
  for (int64_t i = 0; i < vocab; ++i) {
    double p = std::exp((double(logits[i]) - mx) / temperature);
    probs[size_t(i)] = {p, i};
    sum += p;
  }
  std::sort(probs.begin(), probs.end(), [](const auto &a, const auto &b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  });
  // Nucleus: the shortest prefix whose probability reaches top_p.
  size_t keep = probs.size();
  double cum = 0.0;
  for (size_t i = 0; i < probs.size(); ++i) {
    cum += probs[i].first / sum;
    if (cum >= double(topP)) {
      keep = i + 1;
      break;
    }
  }
  double kept = 0.0;
  for (size_t i = 0; i < keep; ++i)
    kept += probs[i].first;
  double u = uniform(state) * kept, acc = 0.0;
  for (size_t i = 0; i < keep; ++i) {
    acc += probs[i].first;
    if (u < acc)
      return probs[i].second;
  }
  return probs[keep - 1].second;
}

static double msSince(int64_t t0) { return double(nowNs() - t0) / 1e6; }

GenerateResult generate(Session &session, Comm &comm, std::span<const int64_t> prompt,
                        const GenerateOptions &opts) {
  const PlanFile &plan = session.plan();
  const int64_t V = plan.vocabSize(), chunk = plan.maxTokens();
  const int64_t P = int64_t(prompt.size());
  if (P == 0)
    fail("empty prompt (expected at least one token id)");
  if (opts.maxNewTokens < 0)
    fail("max new tokens {} (expected >= 0)", opts.maxNewTokens);
  if (P + opts.maxNewTokens > plan.maxPositions())
    fail("prompt of {} tokens + {} new tokens exceeds the plan's {} positions (expected at most "
         "{} in total)",
         P, opts.maxNewTokens, plan.maxPositions(), plan.maxPositions());
  for (int64_t id : prompt)
    if (id < 0 || id >= V)
      fail("token id {} out of range (expected 0..{})", id, V - 1);
  const plan::ModelInfo &m = *plan.plan().model();
  std::vector<int64_t> eos = opts.eosIds;
  if (eos.empty() && m.eos_token_ids())
    eos.assign(m.eos_token_ids()->begin(), m.eos_token_ids()->end());

  GenerateResult res;
  res.tokens.assign(prompt.begin(), prompt.end());
  if (opts.promptLogits)
    res.promptLogits.resize(size_t(P * V));
  uint64_t state = opts.seed;

  // Rank 0 picks (on its backend, where the logits are); everyone continues
  // with its choice.
  auto pick = [&](const float *) {
    int64_t tok = 0;
    if (comm.rank() == 0)
      tok = session.sample(opts.temperature, opts.topP, state);
    if (comm.size() > 1)
      comm.broadcast(&tok, sizeof tok, 0, {});
    return tok;
  };

  int64_t t0 = nowNs();
  const float *logits = nullptr;
  for (int64_t s = 0; s < P; s += chunk) {
    int64_t T = std::min(chunk, P - s);
    float *all = opts.promptLogits ? res.promptLogits.data() + s * V : nullptr;
    logits = session.forward(prompt.data() + s, T, s, all);
  }
  int64_t next = opts.maxNewTokens > 0 ? pick(logits) : -1;
  res.prefillMs = msSince(t0);
  for (int64_t i = 0; i < opts.maxNewTokens; ++i) {
    res.tokens.push_back(next);
    if (opts.onTokenId)
      opts.onTokenId(next);
    if (opts.onToken)
      opts.onToken(i + 1, opts.maxNewTokens);
    if (i + 1 == opts.maxNewTokens ||
        (opts.stopAtEos && std::find(eos.begin(), eos.end(), next) != eos.end()))
      break;
    int64_t ts = nowNs();
    size_t moved = comm.bytesMoved();
    logits = session.forward(&next, 1, int64_t(res.tokens.size()) - 1);
    res.decodeCommBytes += comm.bytesMoved() - moved;
    next = pick(logits);
    res.decodeMs.push_back(msSince(ts));
    res.decodeWeightBytes += session.lastWeightBytes();
    res.decodeKVBytes += session.lastKVBytes();
  }
  return res;
}

} // namespace moert
