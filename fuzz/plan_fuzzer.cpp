//===- plan_fuzzer.cpp - Plan verification, validation and execution -----===//
//
// A plan the reader accepts must be safe to execute: PlanFile's contract is
// that the executor indexes without further checks after validation. So
// every accepted plan small enough to run here (one rank, small weights,
// arena and caches) is run: random weights, one forward call of up to two
// tokens. ASan/UBSan turn any gap in the validation into a finding.
//
//===----------------------------------------------------------------------===//
#include "moert/Comm.h"
#include "moert/Error.h"
#include "moert/Plan.h"
#include "moert/Session.h"
#include "moert/ThreadPool.h"
#include "moert/Weights.h"

#include <algorithm>
#include <new>
#include <vector>

using namespace moert;

namespace {

/// Small enough to allocate and run in a few milliseconds.
bool smallEnough(const PlanFile &pf) {
  if (pf.numRanks() != 1 || pf.vocabSize() > (1 << 16))
    return false;
  uint64_t weightElems = 0;
  for (const WeightInfo &w : pf.weights())
    weightElems += w.numel;
  if (weightElems > (uint64_t(4) << 20))
    return false;
  const plan::RankProgram &rp = pf.rankProgram(0);
  if (rp.arena_bytes() > (uint64_t(64) << 20))
    return false;
  if (rp.kv_caches()) {
    uint64_t kv = 0;
    for (const plan::KVCache *c : *rp.kv_caches())
      kv += uint64_t(c->num_kv_heads()) * uint64_t(c->head_dim()) * 2 * 4;
    // The KV caches hold the page pool: kv_pages x kv_page_size positions,
    // which may be more than max_seq_len.
    if (kv * uint64_t(pf.kvPoolPositions()) > (uint64_t(64) << 20))
      return false;
  }
  return pf.rankInfo(0).maxExpertScratch < (int64_t(16) << 20);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::unique_ptr<PlanFile> pf;
  try {
    pf = std::make_unique<PlanFile>(
        PlanFile::fromBytes(std::vector<uint8_t>(data, data + size), "fuzz.plan"));
  } catch (const Error &) {
    return 0;
  }
  if (!smallEnough(*pf))
    return 0;
  static std::unique_ptr<Backend> backend = makeBackend("cpu", {.threads = 1});
  try {
    std::unique_ptr<WeightStore> weights = WeightStore::random(*pf, 1, {0}, *backend, {});
    std::unique_ptr<Comm> comm = makeLocalComm();
    Session session(*pf, 0, *weights, *comm, *backend);
    int64_t T = std::min<int64_t>({2, pf->maxTokens(), pf->maxPositions()});
    std::vector<int64_t> ids(static_cast<size_t>(T));
    for (int64_t i = 0; i < T; ++i)
      ids[size_t(i)] = (i * 7 + 1) % pf->vocabSize();
    std::vector<float> logits(static_cast<size_t>(T * pf->vocabSize()));
    session.forward(ids.data(), T, 0, logits.data());
  } catch (const Error &) {
  } catch (const std::bad_alloc &) {
  }
  return 0;
}
