//===- EmitPlan.cpp - Writing the FlatBuffers plan -------------------------===//
//
// Stage 3 of Program.h, and the only file of the compiler that knows the
// FlatBuffers types: reads the storage moe-plan-memory recorded, lowers the
// graph to Step descriptions and serializes them as runtime/schema/plan.fbs:
// the weight table, one program per rank (the same buffers and steps; each
// rank lists only the experts placed on it, its own collective groups and
// the streamed weights it holds), the expert placement and the model
// metadata the runtime needs (vocab, max positions, eos ids).
//
//===----------------------------------------------------------------------===//

#include "moe/Plan/EmitPlan.h"
#include "moe/Plan/Program.h"

#include "moert/Version.h"
#include "moert/plan_generated.h"

#include "mlir/IR/BuiltinOps.h"
#include "llvm/Support/Debug.h"

#define DEBUG_TYPE "moe-emit-plan"

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

static fb::ActKind toFb(Activation act) {
  switch (act) {
  case Activation::Gelu:
    return fb::ActKind::Gelu;
  case Activation::GeluTanh:
    return fb::ActKind::GeluTanh;
  case Activation::Relu:
    return fb::ActKind::Relu;
  case Activation::Silu:
    return fb::ActKind::Silu;
  case Activation::SwigluOai:
    return fb::ActKind::SwigluOai;
  }
  llvm_unreachable("unknown activation");
}

static fb::Stream toFb(Stream s) { return fb::Stream(uint8_t(s)); }

FailureOr<ModelOp> mlir::moe::plan::getSingleModel(ModuleOp module) {
  auto models = module.getOps<ModelOp>();
  if (models.empty())
    return module.emitError("no moe.model to compile");
  if (std::next(models.begin()) != models.end())
    return module.emitError("more than one moe.model; compile one at a time");
  return *models.begin();
}

namespace {

/// Serializes the steps of one rank. Steps that do nothing on a rank (a
/// collective over a group of one, a prefetch of weights it does not hold)
/// are left out.
struct StepSerializer {
  flatbuffers::FlatBufferBuilder &fbb;
  const Program &program;
  int32_t rank, numRanks;

  using Result = std::pair<fb::Op, flatbuffers::Offset<void>>;
  template <typename T>
  static Result make(fb::Op type, flatbuffers::Offset<T> table) {
    return {type, table.Union()};
  }
  static Result skip() { return {fb::Op::NONE, 0}; }

  Result operator()(const EmbeddingStep &s) {
    return make(fb::Op::Embedding,
                fb::CreateEmbedding(fbb, s.weight, s.out, s.scale,
                                    s.vocabOffset));
  }
  Result operator()(const PositionEmbeddingStep &s) {
    return make(fb::Op::PositionEmbedding,
                fb::CreatePositionEmbedding(fbb, s.weight, s.buf));
  }
  Result operator()(const NormStep &s) {
    fb::NormKind kind = s.kind == NormKind::LayerNorm ? fb::NormKind::LayerNorm
                                                      : fb::NormKind::RMSNorm;
    return make(fb::Op::Norm,
                fb::CreateNorm(fbb, kind, s.in, s.out, s.weight, s.bias, s.eps,
                               s.groupSize, s.weightOffset, s.col, s.cols));
  }
  Result operator()(const LinearStep &s) {
    return make(fb::Op::Linear,
                fb::CreateLinear(fbb, s.in, s.out, s.weight, s.bias,
                                 s.transposed, /*accumulate=*/false, s.col));
  }
  Result operator()(const RopeStep &s) {
    fb::RopeStyle style = s.style == RopeStyle::NeoX
                              ? fb::RopeStyle::NeoX
                              : fb::RopeStyle::Interleaved;
    auto invFreq = s.invFreq.empty() ? 0 : fbb.CreateVector(s.invFreq);
    return make(fb::Op::Rope,
                fb::CreateRope(fbb, s.buf, s.col, s.heads, s.headDim,
                               s.rotaryDim, s.theta, style, invFreq,
                               s.attentionFactor));
  }
  Result operator()(const AttentionStep &s) {
    return make(fb::Op::Attention,
                fb::CreateAttention(fbb, s.qkv, s.qCol, s.kCol, s.vCol, s.out,
                                    s.cache, s.heads, s.kvHeads, s.headDim,
                                    s.scale, s.window, s.sinks,
                                    s.valueHeadDim));
  }
  Result operator()(const MLAAttentionStep &s) {
    return make(fb::Op::MlaAttention,
                fb::CreateMlaAttention(fbb, s.q, s.qCol, s.latent, s.latentCol,
                                       s.kPe, s.kPeCol, s.kvB, s.out, s.cache,
                                       s.heads, s.nopeDim, s.ropeDim,
                                       s.valueHeadDim, s.kvLoraRank, s.scale));
  }
  Result operator()(const GatherColumnsStep &s) {
    std::vector<int32_t> indices(s.indices.begin(), s.indices.end());
    return make(fb::Op::GatherColumns,
                fb::CreateGatherColumns(fbb, fbb.CreateVector(s.inputs),
                                        fbb.CreateVector(s.inputCols),
                                        fbb.CreateVector(s.inputWidths), s.out,
                                        fbb.CreateVector(indices)));
  }
  Result operator()(const ActivationStep &s) {
    return make(fb::Op::Activation,
                fb::CreateActivation(fbb, s.in, s.out, toFb(s.act), s.gated,
                                     s.width));
  }
  Result operator()(const AddStep &s) {
    return make(fb::Op::Add, fb::CreateAdd(fbb, s.lhs, s.rhs, s.out));
  }
  Result operator()(const GateStep &s) {
    fb::ScoreFn score = s.score == ScoreFn::Softmax ? fb::ScoreFn::Softmax
                                                    : fb::ScoreFn::Sigmoid;
    return make(fb::Op::Gate,
                fb::CreateGate(fbb, s.in, s.numExperts, s.topK, score,
                               s.scoreBeforeTopK, s.normTopK, s.capacityFactor,
                               s.minCapacity, s.dropTokens, s.slotExpert,
                               s.slotWeight, s.offsets, s.sorted, s.nGroup,
                               s.topkGroup, s.selectionBias,
                               s.routedScalingFactor));
  }
  Result operator()(const ExpertsStep &s) {
    // The experts this rank holds a copy of (all when unplaced), with the
    // copy's index among the expert's copies.
    std::vector<flatbuffers::Offset<fb::LocalExpert>> local;
    for (auto [id, r] : llvm::enumerate(s.experts)) {
      if (r.copies.empty()) {
        local.push_back(fb::CreateLocalExpert(fbb, int(id)));
        continue;
      }
      auto it = llvm::find(r.copies, int64_t(rank));
      if (it == r.copies.end())
        continue;
      int index = int(it - r.copies.begin());
      // A part of a sliced expert, or a copy of a replicated one (which,
      // over received rows, computes all of them).
      if (s.slices > 1)
        local.push_back(fb::CreateLocalExpert(fbb, int(id), 0, 1, index));
      else if (s.received)
        local.push_back(fb::CreateLocalExpert(fbb, int(id)));
      else
        local.push_back(fb::CreateLocalExpert(fbb, int(id), index,
                                              int(r.copies.size())));
    }
    auto list = fbb.CreateVector(local);
    return make(fb::Op::Experts,
                fb::CreateExperts(fbb, s.in, s.sorted, s.offsets, s.out, s.topK,
                                  s.intermediate, toFb(s.act), s.gated, s.gate,
                                  s.up, s.down, s.upBias, s.downBias, list,
                                  s.onDemand, s.gateBias, s.swigluLimit,
                                  s.swigluAlpha, s.slices, s.received));
  }
  Result operator()(const AllToAllVStep &s) {
    auto targets = fbb.CreateVector(s.targets);
    auto offsets = fbb.CreateVector(s.targetOffsets);
    return make(fb::Op::AllToAllV,
                fb::CreateAllToAllV(
                    fbb,
                    s.dispatch ? fb::ExchangeKind::Dispatch
                               : fb::ExchangeKind::Combine,
                    s.in, s.out, s.sorted, s.offsets, s.recvSorted,
                    s.recvOffsets, s.sendSlots, s.counts, s.topK, s.numExperts,
                    targets, offsets, s.slices, s.tensorParallel,
                    /*group=*/0,
                    fbb.CreateString(s.ranksPerNode > 0 ? "hierarchical" : "flat"),
                    s.ranksPerNode, s.relay));
  }
  Result operator()(const CombineStep &s) {
    return make(fb::Op::Combine, fb::CreateCombine(fbb, s.slots, s.slotWeight,
                                                   s.out, s.topK));
  }
  Result operator()(const SigmoidGateStep &s) {
    return make(fb::Op::SigmoidGate,
                fb::CreateSigmoidGate(fbb, s.gateLogit, s.buf));
  }
  Result operator()(const ResidualMixStep &s) {
    return make(fb::Op::ResidualMix,
                fb::CreateResidualMix(fbb, s.moe, s.mlp, s.coefLogits, s.out));
  }
  Result operator()(const LogitsStep &s) {
    std::vector<int32_t> group;
    if (s.tensorParallel > 1)
      group = tensorParallelGroup(rank, s.tensorParallel, numRanks);
    return make(fb::Op::Logits,
                fb::CreateLogits(fbb, s.in, s.weight, s.bias, s.out,
                                 /*weight_transposed=*/false, s.vocabOffset,
                                 group.empty() ? 0 : fbb.CreateVector(group)));
  }
  Result operator()(const CollectiveStep &s) {
    std::vector<int32_t> group = s.groupOf(rank, numRanks);
    if (group.size() <= 1)
      return skip();
    auto groupVec = fbb.CreateVector(group);
    auto level = fbb.CreateString(s.level);
    return make(fb::Op::Collective,
                fb::CreateCollective(fbb, fb::CollectiveKind::AllReduceSum,
                                     s.buf, -1, groupVec, level));
  }
  std::vector<int32_t> mine(const std::vector<int32_t> &weights) {
    std::vector<int32_t> list;
    for (int32_t w : weights)
      if (program.weights[w].onRank(rank))
        list.push_back(w);
    return list;
  }
  Result operator()(const PrefetchStep &s) {
    std::vector<int32_t> list = mine(s.weights);
    if (list.empty())
      return skip();
    auto vec = fbb.CreateVector(list);
    return make(fb::Op::Prefetch, fb::CreatePrefetch(fbb, vec));
  }
  Result operator()(const EvictStep &s) {
    std::vector<int32_t> list = mine(s.weights);
    if (list.empty())
      return skip();
    auto vec = fbb.CreateVector(list);
    return make(fb::Op::Evict, fb::CreateEvict(fbb, vec));
  }
};

} // namespace

/// The plan is only as good as the storage moe-plan-memory recorded: a pass
/// that reordered or rewrote ops after it would make buffers whose live
/// ranges now overlap share bytes. The steps say which buffers they touch,
/// so check the recorded live ranges against them.
static LogicalResult checkLiveRanges(ModelOp model, const Program &program) {
  std::vector<std::pair<int64_t, int64_t>> live(program.buffers.size(),
                                                {-1, -1});
  int64_t index = 0;
  for (const Step &s : program.steps) {
    if (s.reads.empty() && s.writes.empty())
      continue; // weight streaming: no activations
    for (int b : llvm::concat<const int>(s.reads, s.writes)) {
      if (live[b].first < 0)
        live[b].first = index;
      live[b].second = index;
    }
    ++index;
  }
  for (auto [b, range] : llvm::enumerate(live)) {
    const Buffer &buf = program.buffers[b];
    if (range.first != buf.firstStep || range.second != buf.lastStep)
      return model.emitOpError("moe.buffers is stale: buffer '")
             << buf.name << "' is used by steps " << range.first << ".."
             << range.second << " but was planned for " << buf.firstStep
             << ".." << buf.lastStep
             << " (run moe-plan-memory after the last pass that changes the "
                "graph)";
  }
  return success();
}

LogicalResult mlir::moe::emitPlan(ModuleOp module, const CompileOptions &options,
                                  llvm::raw_ostream &os) {
  FailureOr<ModelOp> model = getSingleModel(module);
  if (failed(model))
    return failure();
  // A custom --pipeline may leave out moe-plan-memory: plan the storage here
  // then, as the pass would.
  if (!getMoEDialect(module.getContext())
           .getBuffersAttrHelper()
           .isAttrPresent(*model)) {
    FailureOr<Storage> storage = analyzeStorage(*model, options);
    if (failed(storage))
      return failure();
    writeStorage(*model, *storage);
  }
  FailureOr<Storage> storage = readStorage(*model);
  if (failed(storage))
    return failure();
  FailureOr<Program> lowered =
      lowerToProgram(*model, options, std::move(*storage));
  if (failed(lowered) || failed(checkLiveRanges(*model, *lowered)))
    return failure();
  const Program &program = *lowered;
  // Counted as the runtime counts them (kMaxExpertSlices): a plan beyond
  // the bound is refused here, not by moe-run. A sliced expert's weight has
  // its slice and its parts (the down bias, never split, has expertParts 1).
  int64_t slices = 0;
  for (const Weight &w : program.weights) {
    const int64_t experts = int64_t(w.expertRanks.size());
    slices += experts * (w.expertParts > 1 ? 1 + w.expertParts : 1);
  }
  if (slices > kMaxExpertSlices)
    return model->emitOpError()
           << "has " << slices
           << " expert slices over its stacked weights (experts x stacked "
              "weights over all MoE layers, with the parts of sliced "
              "experts), more than the runtime's "
           << kMaxExpertSlices << " (expected fewer MoE layers or experts)";

  flatbuffers::FlatBufferBuilder fbb(1 << 16);

  std::vector<flatbuffers::Offset<fb::Weight>> weights;
  for (const Weight &w : program.weights) {
    auto ranks = w.ranks.empty()
                     ? 0
                     : fbb.CreateVector(w.ranks.data(), w.ranks.size());
    auto source = w.sourceTensor.empty()
                      ? 0
                      : fb::CreateWeightSource(
                            fbb, fbb.CreateString(w.sourceTensor),
                            w.sourceOffset, w.sourceStride,
                            w.sourceTransposed);
    flatbuffers::Offset<flatbuffers::String> scale = 0;
    flatbuffers::Offset<flatbuffers::Vector<int64_t>> block = 0;
    if (w.format != 0) {
      scale = fbb.CreateString(w.scaleTensor);
      int64_t b[2] = {w.blockRows, w.blockCols};
      block = fbb.CreateVector(b, 2);
    }
    weights.push_back(fb::CreateWeight(
        fbb, fbb.CreateString(w.name), toFb(w.storedType), toFb(w.type),
        fbb.CreateVector(w.shape.data(), w.shape.size()), toFb(w.init),
        w.initStd, ranks, w.streamed, source, w.partOf, w.partAxis,
        w.partOffset, fb::WeightFormat(w.format), scale, block));
  }
  auto weightVec = fbb.CreateVector(weights);

  std::vector<std::vector<int>> deps = crossStreamDependencies(program);
  int32_t numRanks = int32_t(options.devices);
  int32_t gpusPerNode = int32_t(options.gpusPerNode);
  std::vector<flatbuffers::Offset<fb::RankProgram>> ranks;
  // RankProgram.weight_bytes: what a rank holds from load on; streamed
  // weights (and on-demand experts) come and go within the memory budget.
  std::vector<Weight> resident;
  llvm::copy_if(program.weights, std::back_inserter(resident),
                [](const Weight &w) { return !w.streamed; });
  std::vector<uint64_t> weightBytes = weightBytesPerRank(resident, numRanks);
  for (int32_t r = 0; r < numRanks; ++r) {
    std::vector<flatbuffers::Offset<fb::Buffer>> buffers;
    for (const Buffer &b : program.buffers)
      buffers.push_back(fb::CreateBuffer(
          fbb, fbb.CreateString(b.name), toFb(b.type), b.rowElems,
          b.rowsPerToken, b.fixedRows, b.maxRows(program.maxTokens),
          b.offset));
    std::vector<flatbuffers::Offset<fb::KVCache>> caches;
    for (const KVCache &c : program.kvCaches)
      caches.push_back(fb::CreateKVCache(fbb, int(c.layer), int(c.numKVHeads),
                                         int(c.headDim), toFb(c.type),
                                         c.valueHeadDim == c.headDim
                                             ? 0
                                             : int(c.valueHeadDim),
                                         int(c.kvLoraRank)));
    // Steps a rank skips drop out of its list and of its waits.
    StepSerializer serializer{fbb, program, r, numRanks};
    std::vector<flatbuffers::Offset<fb::Step>> steps;
    std::vector<int32_t> rankIndex(program.steps.size(), -1);
    for (auto [i, s] : llvm::enumerate(program.steps)) {
      // A tensor-parallel step runs as its group member's variant.
      const StepOp &op = s.perMember.empty()
                             ? s.op
                             : s.perMember[size_t(r % program.tensorParallel)];
      auto [type, table] = std::visit(serializer, op);
      if (type == fb::Op::NONE)
        continue;
      std::vector<int32_t> waits;
      for (int j : deps[i])
        if (rankIndex[j] >= 0)
          waits.push_back(rankIndex[j]);
      auto waitVec = waits.empty() ? 0 : fbb.CreateVector(waits);
      rankIndex[i] = int32_t(steps.size());
      steps.push_back(fb::CreateStep(fbb, type, table, fbb.CreateString(s.name),
                                     s.layer, toFb(s.stream), waitVec));
    }
    auto bufVec = fbb.CreateVector(buffers);
    auto cacheVec = fbb.CreateVector(caches);
    auto stepVec = fbb.CreateVector(steps);
    ranks.push_back(fb::CreateRankProgram(
        fbb, r, r / gpusPerNode, r % gpusPerNode, program.arenaBytes, bufVec,
        cacheVec, stepVec, weightBytes[size_t(r)]));
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
            fbb, int(layer.getIndex()), mapVec, replicaVec,
            int(p.getSlices())));
      }
    });
  });
  auto placementVec = fbb.CreateVector(placement);

  std::vector<int64_t> eos(model->getEosTokenIds().begin(),
                           model->getEosTokenIds().end());
  auto info = fb::CreateModelInfo(
      fbb, fbb.CreateString(model->getSymName().str()),
      fbb.CreateString(model->getArchitecture().str()),
      model->getVocabSize(), model->getHiddenSize(),
      int(model->getNumLayers()), model->getMaxPositionEmbeddings(),
      model->getBosTokenId().value_or(-1), fbb.CreateVector(eos));
  std::string producer = std::string("moe-compile ") + moert::kProjectVersion;
  fb::DType compute = options.dtype == ComputeDType::F32    ? fb::DType::F32
                      : options.dtype == ComputeDType::BF16 ? fb::DType::BF16
                                                            : fb::DType::F16;
  KVPaging paging = kvPaging(options, program.maxSeqLen);
  auto root = fb::CreatePlan(
      fbb, moert::kPlanVersionMajor, moert::kPlanVersionMinor,
      fbb.CreateString(producer), info,
      options.target == Target::CUDA ? fb::Target::CUDA : fb::Target::CPU,
      compute, int(options.devices), int(options.gpusPerNode),
      int(options.maxBatch), program.maxTokens, program.maxSeqLen,
      options.memoryBudget,
      fbb.CreateString(model->getCheckpoint().value_or("").str()), weightVec,
      rankVec, placementVec, paging.pageSize, paging.pages,
      int(program.dataParallel));
  fb::FinishPlanBuffer(fbb, root);
  os.write(reinterpret_cast<const char *>(fbb.GetBufferPointer()),
           fbb.GetSize());
  return success();
}
