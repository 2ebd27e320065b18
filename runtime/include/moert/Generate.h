//===- Generate.h - Sampling and the generation loop ------------*- C++ -*-===//
#pragma once

#include "moert/Session.h"

#include <functional>
#include <span>
#include <vector>

namespace moert {

/// The sampling algorithm, defined here and run by backends where the
/// logits are (Backend::sample): greedy (temperature 0: argmax, ties to the
/// lowest id) or temperature + top-p sampling from a counter-based RNG whose
/// state advances in place, so a seed gives the same tokens on every run,
/// machine and backend.
int64_t sampleToken(const float *logits, int64_t vocab, float temperature, float topP,
                    uint64_t &state);

/// sampleToken with its parameters and state held together.
class Sampler {
public:
  Sampler(float temperature = 0.0f, float topP = 1.0f, uint64_t seed = 0)
      : temperature_(temperature), topP_(topP), state_(seed) {}
  int64_t next(const float *logits, int64_t vocab) {
    return sampleToken(logits, vocab, temperature_, topP_, state_);
  }
  static int64_t argmax(const float *logits, int64_t vocab);

private:
  float temperature_, topP_;
  uint64_t state_;
};

struct GenerateOptions {
  int64_t maxNewTokens = 16;
  float temperature = 0.0f, topP = 1.0f;
  uint64_t seed = 0;
  bool stopAtEos = true;
  bool promptLogits = false; // keep the logits of every prompt position
  /// Called after each new token with (generated, maxNewTokens).
  std::function<void(int64_t, int64_t)> onToken;
  /// Called with each new token id as soon as it is chosen (text streaming).
  std::function<void(int64_t)> onTokenId;
  /// Ids that end generation; empty: the plan's eos_token_ids.
  std::vector<int64_t> eosIds;
};

struct GenerateResult {
  std::vector<int64_t> tokens;     // prompt followed by the new tokens
  std::vector<float> promptLogits; // [prompt, vocab] when requested
  double prefillMs = 0.0;
  std::vector<double> decodeMs;    // one per decode forward call
  uint64_t decodeWeightBytes = 0;  // weight bytes read by all decode calls
  uint64_t decodeKVBytes = 0;
  /// Bytes this rank's communicator moved during the decode forward calls
  /// (the plan's collectives; the sampled token's broadcast is not counted,
  /// as the cost model does not count it).
  uint64_t decodeCommBytes = 0;
};

/// Prefills the prompt in chunks of max_tokens, then decodes one token per
/// step. Every rank calls this; rank 0 samples and broadcasts each token so
/// all ranks feed the same ids.
GenerateResult generate(Session &session, Comm &comm, std::span<const int64_t> prompt,
                        const GenerateOptions &opts);

} // namespace moert
