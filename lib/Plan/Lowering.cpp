//===- Lowering.cpp - The moe graph as plan steps --------------------------===//
//
// Stage 2 of Program.h: walks the graph in program order (layers flattened)
// and hands each op to the lowering of its family, which appends Step
// descriptions reading the storage that moe-plan-memory recorded. Also the
// cross-stream dependencies of the steps.
//
//===----------------------------------------------------------------------===//

#include "Lowering.h"

#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace mlir::moe;
using namespace mlir::moe::plan;

Lowering::Lowering(ModelOp model, const CompileOptions &options,
                   Storage storage, Program &program)
    : model(model), options(options), storage(std::move(storage)),
      p(program) {
  for (auto param : model.getBodyBlock().getOps<ParamOp>())
    paramIndex[param.getSymNameAttr()] = int(paramIndex.size());
}

FailureOr<Slice> Lowering::sliceOf(Value v, Operation *user) {
  auto it = storage.slices.find(v);
  if (it != storage.slices.end())
    return it->second;
  return user->emitOpError("operand has no storage in the plan: run "
                           "moe-plan-memory after the last pass that changes "
                           "the graph");
}

int Lowering::bufferOf(Value v, Operation *user) {
  FailureOr<Slice> s = sliceOf(v, user);
  return failed(s) ? -1 : s->buffer;
}

int Lowering::weightOf(Value v) {
  auto w = v.getDefiningOp<WeightOp>();
  assert(w && "weights reach ops through moe.weight (verified)");
  return paramIndex.lookup(w.getParamAttr().getAttr());
}

std::string Lowering::stepName(StringRef what) const {
  std::string prefix =
      currentLayer >= 0 ? "layers." + std::to_string(currentLayer) + "." : "";
  return prefix + what.str();
}

void Lowering::addStep(Operation *op, std::string name, SmallVector<int> reads,
                       SmallVector<int> writes, StepOp step, Stream stream) {
  Step s;
  s.name = std::move(name);
  s.layer = int32_t(currentLayer);
  s.stream = stream;
  s.reads = std::move(reads);
  s.writes = std::move(writes);
  s.op = std::move(step);
  s.origin = op;
  p.steps.push_back(std::move(s));
}

LogicalResult Lowering::run() {
  GraphOp graph = model.getGraph();
  if (!graph)
    return model.emitOpError("has no moe.graph to lower");
  p.buffers = storage.buffers;
  p.maxTokens = storage.maxTokens;
  p.maxSeqLen = storage.maxSeqLen;
  p.arenaBytes = storage.arenaBytes;
  p.kvCaches = collectKVCaches(model);
  p.tensorParallel = getTensorParallel(model);
  p.dataParallel = getDataParallel(model);
  if (failed(lowerBlock(graph.getBody().front())))
    return failure();
  if (p.logitsBuffer < 0)
    return graph.emitOpError("must return the logits of a moe.lm_head");
  addStreamingSteps();
  return success();
}

LogicalResult Lowering::lowerBlock(Block &block) {
  for (Operation &op : block)
    if (failed(lower(&op)))
      return failure();
  return success();
}

LogicalResult Lowering::lower(Operation *op) {
  return llvm::TypeSwitch<Operation *, LogicalResult>(op)
      .Case<WeightOp, shard::GridOp, YieldOp, SplitOp, DispatchOp>(
          [](Operation *) { return success(); }) // no step of their own
      .Case([&](LayerOp layer) -> LogicalResult {
        currentLayer = layer.getIndex();
        layerOps.push_back(layer);
        if (failed(lowerBlock(layer.getBodyBlock())))
          return failure();
        currentLayer = -1;
        return success();
      })
      .Case([&](ReturnOp ret) -> LogicalResult {
        if (ret.getNumOperands() != 1)
          return ret.emitOpError("must return exactly the logits");
        p.logitsBuffer = bufferOf(ret.getOperand(0), ret);
        return success(p.logitsBuffer >= 0);
      })
      .Case([&](EmbeddingOp e) { return lowerEmbedding(e); })
      .Case([&](PositionEmbeddingOp e) { return lowerPositionEmbedding(e); })
      .Case<LayerNormOp, RMSNormOp>([&](Operation *n) { return lowerNorm(n); })
      .Case([&](LinearOp l) {
        return lowerLinear(l, l.getInput(), l.getWeight(), l.getBias(),
                           l.getTransposed());
      })
      .Case([&](RouterOp r) {
        return lowerLinear(r, r.getInput(), r.getWeight(), r.getBias(), false);
      })
      .Case([&](RotaryOp r) { return lowerRotary(r); })
      .Case([&](AttentionOp a) { return lowerAttention(a); })
      .Case([&](MLAAttentionOp a) { return lowerMLAAttention(a); })
      .Case([&](GatherColumnsOp g) { return lowerGatherColumns(g); })
      .Case([&](MLPOp m) { return lowerMLP(m); })
      .Case([&](AddOp a) { return lowerAdd(a); })
      .Case([&](SigmoidGateOp g) { return lowerSigmoidGate(g); })
      .Case([&](ResidualMixOp m) { return lowerResidualMix(m); })
      .Case([&](LMHeadOp h) { return lowerLMHead(h); })
      .Case([&](GateOp g) { return lowerGate(g); })
      .Case([&](ExpertsOp e) { return lowerExperts(e); })
      .Case([&](AllToAllOp x) { return lowerExchange(x); })
      .Case([&](CombineOp c) { return lowerCombine(c); })
      .Default([&](Operation *other) {
        // moe-verify-input-legality and the storage analysis reject these
        // first; this is the last line.
        return other->emitOpError("cannot be lowered to a plan step");
      });
}

FailureOr<Program> mlir::moe::plan::lowerToProgram(ModelOp model,
                                                   const CompileOptions &options,
                                                   Storage storage) {
  Program program;
  FailureOr<std::vector<Weight>> weights =
      buildWeightTable(model, options.dtype);
  if (failed(weights))
    return failure();
  program.weights = std::move(*weights);
  if (failed(Lowering(model, options, std::move(storage), program).run()))
    return failure();
  return program;
}

std::vector<std::vector<int>>
mlir::moe::plan::crossStreamDependencies(const Program &program) {
  std::vector<std::vector<int>> deps(program.steps.size());
  // Per buffer: the last step that wrote it and the steps that read it since.
  std::vector<int> lastWriter(program.buffers.size(), -1);
  std::vector<std::vector<int>> readersSince(program.buffers.size());
  for (auto [i, step] : llvm::enumerate(program.steps)) {
    auto depend = [&](int j) {
      if (j >= 0 && program.steps[j].stream != step.stream &&
          !llvm::is_contained(deps[i], j))
        deps[i].push_back(j);
    };
    for (int b : step.reads)
      depend(lastWriter[b]);
    for (int b : step.writes) {
      depend(lastWriter[b]);
      for (int r : readersSince[b])
        depend(r);
    }
    for (int b : step.reads)
      readersSince[b].push_back(int(i));
    for (int b : step.writes) {
      lastWriter[b] = int(i);
      readersSince[b].clear();
    }
    llvm::sort(deps[i]);
  }
  return deps;
}
