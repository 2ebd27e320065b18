//===- EmitPlan.cpp - Writing the FlatBuffers plan -------------------------===//
//
// Serializes a lowered Program as runtime/schema/plan.fbs: the weight table,
// one program per rank (the same buffers and steps; each rank lists only the
// experts placed on it and its own collective groups), the expert placement
// and the model metadata the runtime needs (vocab, max positions, eos ids).
//
//===----------------------------------------------------------------------===//

#include "moe/Plan/EmitPlan.h"
#include "moe/Plan/Program.h"

#include "moert/Version.h"
#include "moert/plan_generated.h"

#include "mlir/IR/BuiltinOps.h"

using namespace mlir;
using namespace mlir::moe;
using namespace mlir::moe::plan;
namespace fb = ::moe::plan;

static fb::DType toFb(ElemType t) { return fb::DType(uint8_t(t)); }

static fb::Init toFb(InitKind init) {
  switch (init) {
  case InitKind::Normal:
    return fb::Init::Normal;
  case InitKind::Ones:
    return fb::Init::Ones;
  case InitKind::Zeros:
    return fb::Init::Zeros;
  }
  return fb::Init::Normal;
}

FailureOr<ModelOp> mlir::moe::plan::getSingleModel(ModuleOp module) {
  auto models = module.getOps<ModelOp>();
  if (models.empty())
    return module.emitError("no moe.model to compile");
  if (std::next(models.begin()) != models.end())
    return module.emitError("more than one moe.model; compile one at a time");
  return *models.begin();
}

LogicalResult mlir::moe::emitPlan(ModuleOp module, const CompileOptions &options,
                            llvm::raw_ostream &os) {
  FailureOr<ModelOp> model = getSingleModel(module);
  if (failed(model))
    return failure();
  Program program;
  if (failed(buildProgram(*model, options, program)))
    return failure();
  planMemory(program);

  flatbuffers::FlatBufferBuilder fbb(1 << 16);

  std::vector<flatbuffers::Offset<fb::Weight>> weights;
  for (const Weight &w : program.weights) {
    auto ranks = w.ranks.empty()
                     ? 0
                     : fbb.CreateVector(w.ranks.data(), w.ranks.size());
    weights.push_back(fb::CreateWeight(
        fbb, fbb.CreateString(w.name), toFb(w.storedType), toFb(w.type),
        fbb.CreateVector(w.shape.data(), w.shape.size()), toFb(w.init),
        w.initStd, ranks, w.streamed));
  }
  auto weightVec = fbb.CreateVector(weights);

  std::vector<std::vector<int>> deps = crossStreamDependencies(program);
  RankInfo info;
  info.numRanks = int32_t(options.devices);
  info.gpusPerNode = int32_t(options.gpusPerNode);
  std::vector<flatbuffers::Offset<fb::RankProgram>> ranks;
  for (int32_t r = 0; r < info.numRanks; ++r) {
    info.rank = r;
    std::vector<flatbuffers::Offset<fb::Buffer>> buffers;
    for (const plan::Buffer &b : program.buffers)
      buffers.push_back(fb::CreateBuffer(
          fbb, fbb.CreateString(b.name), toFb(b.type), b.rowElems,
          b.rowsPerToken, b.fixedRows, b.maxRows(program.maxTokens),
          b.offset));
    std::vector<flatbuffers::Offset<fb::KVCache>> caches;
    for (const KVCache &c : program.kvCaches)
      caches.push_back(fb::CreateKVCache(fbb, int(c.layer), int(c.numKVHeads),
                                         int(c.headDim), fb::DType::F32));
    // Steps a rank skips (a collective over a group of one, a prefetch of
    // weights it does not hold) drop out of its list and of its waits.
    std::vector<flatbuffers::Offset<fb::Step>> steps;
    std::vector<int32_t> rankIndex(program.steps.size(), -1);
    for (auto [i, s] : llvm::enumerate(program.steps)) {
      Waits waits;
      for (int j : deps[i])
        if (rankIndex[j] >= 0)
          waits.push_back(rankIndex[j]);
      if (uint32_t off = s.build(fbb, info, waits)) {
        rankIndex[i] = int32_t(steps.size());
        steps.push_back(flatbuffers::Offset<fb::Step>(off));
      }
    }
    auto bufVec = fbb.CreateVector(buffers);
    auto cacheVec = fbb.CreateVector(caches);
    auto stepVec = fbb.CreateVector(steps);
    ranks.push_back(fb::CreateRankProgram(
        fbb, r, r / info.gpusPerNode, r % info.gpusPerNode, program.arenaBytes,
        bufVec, cacheVec, stepVec, weightBytesOnRank(program, r)));
  }
  auto rankVec = fbb.CreateVector(ranks);

  std::vector<flatbuffers::Offset<fb::ExpertPlacement>> placement;
  model->walk([&](LayerOp layer) {
    layer.walk([&](ExpertsOp experts) {
      if (PlacementAttr p = experts.getPlacementAttr()) {
        std::vector<int32_t> map(p.getExpertRanks().begin(),
                                 p.getExpertRanks().end());
        std::vector<int32_t> replicas(p.getReplicas().begin(),
                                      p.getReplicas().end());
        auto mapVec = fbb.CreateVector(map);
        auto replicaVec = replicas.empty() ? 0 : fbb.CreateVector(replicas);
        placement.push_back(fb::CreateExpertPlacement(
            fbb, int(layer.getIndex()), mapVec, replicaVec));
      }
    });
  });
  auto placementVec = fbb.CreateVector(placement);

  std::vector<int64_t> eos(model->getEosTokenIds().begin(),
                           model->getEosTokenIds().end());
  auto info_ = fb::CreateModelInfo(
      fbb, fbb.CreateString(model->getSymName().str()),
      fbb.CreateString(model->getArchitecture().str()),
      model->getVocabSize(), model->getHiddenSize(),
      int(model->getNumLayers()), model->getMaxPositionEmbeddings(),
      model->getBosTokenId().value_or(-1), fbb.CreateVector(eos));
  std::string producer = std::string("moe-compile ") + moert::kProjectVersion;
  fb::DType compute = options.dtype == ComputeDType::F32    ? fb::DType::F32
                      : options.dtype == ComputeDType::BF16 ? fb::DType::BF16
                                                            : fb::DType::F16;
  auto root = fb::CreatePlan(
      fbb, moert::kPlanVersionMajor, moert::kPlanVersionMinor,
      fbb.CreateString(producer), info_,
      options.target == Target::CUDA ? fb::Target::CUDA : fb::Target::CPU,
      compute, int(options.devices), int(options.gpusPerNode),
      int(options.maxBatch), program.maxTokens, program.maxSeqLen,
      options.memoryBudget,
      fbb.CreateString(model->getCheckpoint().value_or("").str()), weightVec,
      rankVec, placementVec);
  fb::FinishPlanBuffer(fbb, root);
  os.write(reinterpret_cast<const char *>(fbb.GetBufferPointer()),
           fbb.GetSize());
  return success();
}
