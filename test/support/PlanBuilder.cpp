//===- PlanBuilder.cpp ----------------------------------------------------===//
#include "PlanBuilder.h"

#include "moert/Version.h"

namespace moetest {

PlanBuilder::PlanBuilder(std::string arch, int64_t vocab, int64_t hidden, int numLayers,
                         int64_t maxPos, int64_t maxTokens, int64_t maxSeqLen, int numRanks) {
  plan_.version_major = moert::kPlanVersionMajor;
  plan_.version_minor = moert::kPlanVersionMinor;
  plan_.producer = "moetest PlanBuilder";
  plan_.model = std::make_unique<mp::ModelInfoT>();
  plan_.model->name = arch + "-test";
  plan_.model->architecture = arch;
  plan_.model->vocab_size = vocab;
  plan_.model->hidden_size = hidden;
  plan_.model->num_layers = numLayers;
  plan_.model->max_position_embeddings = maxPos;
  plan_.target = mp::Target::CPU;
  plan_.compute_dtype = mp::DType::F32;
  plan_.num_ranks = numRanks;
  plan_.max_tokens = maxTokens;
  plan_.max_seq_len = maxSeqLen;
  for (int r = 0; r < numRanks; ++r) {
    auto rp = std::make_unique<mp::RankProgramT>();
    rp->rank = r;
    rp->local_rank = r;
    plan_.ranks.push_back(std::move(rp));
  }
}

int PlanBuilder::weight(const std::string &name, std::vector<int64_t> shape, mp::DType stored,
                        mp::DType dtype, mp::Init init, float std, std::vector<int> ranks) {
  auto w = std::make_unique<mp::WeightT>();
  w->name = name;
  w->shape = std::move(shape);
  w->stored_dtype = stored;
  w->dtype = dtype;
  w->init = init;
  w->init_std = std;
  w->ranks = std::move(ranks);
  plan_.weights.push_back(std::move(w));
  return int(plan_.weights.size()) - 1;
}

int PlanBuilder::findWeight(const std::string &name) const {
  for (size_t i = 0; i < plan_.weights.size(); ++i)
    if (plan_.weights[i]->name == name)
      return int(i);
  return -1;
}

int PlanBuilder::buffer(const std::string &name, int64_t rowElems, int64_t rowsPerToken,
                        int64_t fixedRows, mp::DType dtype) {
  auto b = std::make_unique<mp::BufferT>();
  b->name = name;
  b->row_elems = rowElems;
  b->rows_per_token = rowsPerToken;
  b->fixed_rows = fixedRows;
  b->dtype = dtype;
  rank().buffers.push_back(std::move(b));
  return int(rank().buffers.size()) - 1;
}

int PlanBuilder::kvCache(int layer, int kvHeads, int headDim, mp::DType dtype) {
  auto c = std::make_unique<mp::KVCacheT>();
  c->layer = layer;
  c->num_kv_heads = kvHeads;
  c->head_dim = headDim;
  c->dtype = dtype;
  rank().kv_caches.push_back(std::move(c));
  return int(rank().kv_caches.size()) - 1;
}

std::vector<uint8_t> PlanBuilder::finish(bool layout) {
  if (layout)
    for (auto &rp : plan_.ranks) {
      uint64_t off = 0;
      for (auto &b : rp->buffers) {
        b->max_rows = plan_.max_tokens * b->rows_per_token + b->fixed_rows;
        b->offset = off;
        off += (uint64_t(b->max_rows * b->row_elems) * 4 + 63) & ~uint64_t(63);
      }
      rp->arena_bytes = off;
    }
  return packPlan(plan_);
}

std::vector<uint8_t> packPlan(const mp::PlanT &plan) {
  flatbuffers::FlatBufferBuilder fbb;
  mp::FinishPlanBuffer(fbb, mp::Plan::Pack(fbb, &plan));
  return std::vector<uint8_t>(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
}

} // namespace moetest
