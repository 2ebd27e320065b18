//===- Program.cpp - Lowering the moe graph to runtime steps --------------===//
//
// Walks the graph in program order (layers flattened) and turns each op into
// the plan.fbs steps the runtime executes, deciding where every activation
// lives. The rules that keep the arena small and the steps few:
//  - elementwise ops (norms, rotary, residual add, position embedding, gates)
//    overwrite an input that dies at them;
//  - `moe.split` results are column views of their input;
//  - the q, k and v projections of an attention write into one packed buffer
//    (the runtime's Attention reads q/k/v as columns of one buffer);
//  - `moe.dispatch` costs nothing: the Experts step gathers the token rows
//    itself through the mapping table;
//  - at batch 1 tokens are replicated on every rank (attention and dense
//    layers run everywhere, as DeepSpeed-MoE inference does for small
//    batches), so a dispatch exchange moves nothing and a combine exchange
//    is a sum over the group of per-slot expert outputs, each computed by
//    exactly one rank: an AllReduceSum that is bitwise equal to one rank.
//
//===----------------------------------------------------------------------===//

#include "moe/Plan/Program.h"

#include "moert/plan_generated.h"

#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "mlir/IR/SymbolTable.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/Debug.h"
#include "llvm/Support/MathExtras.h"

#include <algorithm>

#define DEBUG_TYPE "moe-plan"

using namespace mlir;
using namespace mlir::moe;
using namespace mlir::moe::plan;
namespace fb = ::moe::plan;

namespace {

int64_t elemSize(ElemType type) {
  switch (type) {
  case ElemType::BF16:
  case ElemType::F16:
    return 2;
  case ElemType::I64:
    return 8;
  default:
    return 4;
  }
}

std::optional<ElemType> toElemType(Type type) {
  if (type.isF32())
    return ElemType::F32;
  if (type.isBF16())
    return ElemType::BF16;
  if (type.isF16())
    return ElemType::F16;
  if (type.isInteger(32))
    return ElemType::I32;
  if (type.isInteger(64))
    return ElemType::I64;
  return std::nullopt;
}

fb::ActKind toActKind(Activation act) {
  switch (act) {
  case Activation::Gelu:
    return fb::ActKind::Gelu;
  case Activation::GeluTanh:
    return fb::ActKind::GeluTanh;
  case Activation::Relu:
    return fb::ActKind::Relu;
  case Activation::Silu:
    return fb::ActKind::Silu;
  }
  llvm_unreachable("unknown activation");
}

int64_t widthOf(Value v) {
  return cast<RankedTensorType>(v.getType()).getDimSize(1);
}

/// The dtype a weight is held in at run time: matrices in the compute dtype
/// unless the checkpoint already stores a 16-bit type (converting bf16 <->
/// f16 would lose bits; bf16 and f16 weights are exact in f32 kernels);
/// vectors (norms, biases) in f32.
ElemType memoryType(ElemType stored, int64_t rank, ComputeDType compute) {
  if (rank < 2)
    return ElemType::F32;
  if (stored != ElemType::F32)
    return stored;
  switch (compute) {
  case ComputeDType::F32:
    return ElemType::F32;
  case ComputeDType::BF16:
    return ElemType::BF16;
  case ComputeDType::F16:
    return ElemType::F16;
  }
  return stored;
}

class ProgramBuilder {
public:
  ProgramBuilder(ModelOp model, const CompileOptions &options, Program &program)
      : model(model), options(options), p(program) {}

  LogicalResult run();

private:
  LogicalResult collectWeights();
  void computeLiveness(GraphOp graph);
  void findPackedProjections(GraphOp graph);
  LogicalResult lowerBlock(Block &block);
  LogicalResult lower(Operation *op);

  // Weights.
  int weightOf(Value v);
  int optWeightOf(Value v) { return v ? weightOf(v) : -1; }
  /// A weight every rank holds (not an expert's): weightOf + sharedWeights.
  int sharedWeightOf(Value v) {
    int w = weightOf(v);
    sharedWeights.insert(w);
    return w;
  }
  int optSharedWeightOf(Value v) { return v ? sharedWeightOf(v) : -1; }

  // Buffers and regions.
  int newBuffer(std::string name, ElemType type, int64_t rowElems,
                int64_t rowsPerToken = 1, int64_t fixedRows = 0);
  Slice full(int buffer) {
    return Slice{buffer, 0, p.buffers[buffer].rowElems};
  }
  bool isFull(const Slice &r) {
    return r.col == 0 && r.width == p.buffers[r.buffer].rowElems;
  }
  FailureOr<Slice> regionOf(Value v, Operation *user);
  FailureOr<Slice> fullRegionOf(Value v, Operation *user, StringRef what);
  /// True when nothing after `op` reads `v`.
  bool diesAt(Value v, Operation *op) {
    auto it = lastUse.find(v);
    return it == lastUse.end() || it->second <= order.lookup(op);
  }
  /// The region an elementwise op's result takes: its dying input's, or a
  /// fresh buffer.
  FailureOr<Slice> inPlaceOrNew(Value input, Operation *op, StringRef name);

  void addStep(Operation *op, std::string name, SmallVector<int> reads,
               SmallVector<int> writes, StepBuilderFn build, int stream = 0);
  std::string stepName(Operation *op, StringRef what);

  // Per-op lowering.
  LogicalResult lowerLinearLike(Operation *op, Value input, Value weight,
                                Value bias, bool transposed, StringRef what);
  LogicalResult lowerNorm(Operation *op, fb::NormKind kind, Value input,
                          Value weight, Value bias, float eps,
                          int64_t groupSize, float weightOffset);
  LogicalResult lowerMLP(MLPOp op);
  LogicalResult lowerExperts(ExpertsOp op);
  LogicalResult lowerExchange(AllToAllOp op);

  ModelOp model;
  const CompileOptions &options;
  Program &p;

  llvm::DenseMap<StringAttr, int> paramIndex;
  llvm::DenseMap<Operation *, int64_t> order;
  llvm::DenseMap<Value, int64_t> lastUse;
  /// Linear ops writing into a packed q/k/v buffer: (pack id, column).
  llvm::DenseMap<Operation *, std::pair<int, int64_t>> packedColumn;
  llvm::SmallVector<int64_t> packWidth;
  llvm::DenseMap<int, int> packBuffer;
  /// Token activations and mapping table behind each dispatched value.
  llvm::DenseMap<Value, std::pair<Value, Value>> dispatched;
  /// Weights used outside experts, and the ranks that hold each expert's.
  llvm::DenseSet<int> sharedWeights;
  llvm::DenseMap<int, llvm::SmallVector<int32_t>> expertWeightRanks;
  llvm::DenseMap<int64_t, int> cacheOfLayer;
  int64_t currentLayer = -1;
  SmallVector<LayerOp> layerOps;

  void addStreamingSteps();
};

} // namespace

uint64_t mlir::moe::plan::Buffer::bytes(int64_t maxTokens) const {
  return uint64_t(maxRows(maxTokens)) * uint64_t(rowElems) *
         uint64_t(elemSize(type));
}

uint64_t mlir::moe::plan::Weight::bytes() const {
  uint64_t n = uint64_t(elemSize(type));
  for (int64_t d : shape)
    n *= uint64_t(d);
  return n;
}

//===----------------------------------------------------------------------===//
// Setup: weights, liveness, q/k/v packing
//===----------------------------------------------------------------------===//

LogicalResult ProgramBuilder::collectWeights() {
  for (auto param : model.getBodyBlock().getOps<ParamOp>()) {
    RankedTensorType type = param.getTensorType();
    auto stored = toElemType(type.getElementType());
    if (!stored)
      return param.emitOpError("has an element type the runtime cannot load");
    Weight w;
    w.name = param.getName().str();
    w.storedType = *stored;
    w.type = memoryType(*stored, type.getRank(), options.dtype);
    w.shape.assign(type.getShape().begin(), type.getShape().end());
    w.init = param.getInit();
    if (auto std = param.getInitStd())
      w.initStd = std->convertToFloat();
    paramIndex[param.getSymNameAttr()] = int(p.weights.size());
    p.weights.push_back(std::move(w));
  }
  return success();
}

int ProgramBuilder::weightOf(Value v) {
  auto w = v.getDefiningOp<WeightOp>();
  assert(w && "weights reach ops through moe.weight (verified)");
  return paramIndex.lookup(w.getParamAttr().getAttr());
}

void ProgramBuilder::computeLiveness(GraphOp graph) {
  int64_t next = 0;
  graph.walk<WalkOrder::PreOrder>([&](Operation *op) { order[op] = next++; });
  graph.walk([&](Operation *op) {
    for (Value operand : op->getOperands()) {
      int64_t &last = lastUse[operand];
      last = std::max(last, order[op]);
    }
  });
  // A layer's operand lives on as its region argument, a yielded value as the
  // layer's result; later layers extend earlier ones, so go backwards.
  SmallVector<LayerOp> layers(graph.getBody().getOps<LayerOp>());
  for (LayerOp layer : llvm::reverse(layers)) {
    Value arg = layer.getBodyBlock().getArgument(0);
    int64_t &in = lastUse[layer.getInput()];
    in = std::max(in, lastUse.lookup(arg));
    auto yield = cast<YieldOp>(layer.getBodyBlock().getTerminator());
    int64_t &out = lastUse[yield.getValue()];
    out = std::max(out, lastUse.lookup(layer.getResult()));
  }
}

void ProgramBuilder::findPackedProjections(GraphOp graph) {
  // Follows a value back through single-use in-place ops to the linear that
  // produced it.
  auto rootLinear = [](Value v) -> LinearOp {
    while (Operation *def = v.getDefiningOp()) {
      if (isa<RotaryOp, RMSNormOp, LayerNormOp>(def) &&
          def->getOperand(0).hasOneUse()) {
        v = def->getOperand(0);
        continue;
      }
      auto linear = dyn_cast<LinearOp>(def);
      return linear && linear.getResult().hasOneUse() ? linear : LinearOp();
    }
    return LinearOp();
  };
  graph.walk([&](AttentionOp attn) {
    LinearOp q = rootLinear(attn.getQ()), k = rootLinear(attn.getK()),
             v = rootLinear(attn.getV());
    if (!q || !k || !v || q == k || k == v || q == v)
      return; // e.g. one fused projection split into q/k/v: already packed
    int pack = int(packWidth.size());
    int64_t col = 0;
    for (LinearOp proj : {q, k, v}) {
      packedColumn[proj] = {pack, col};
      col += widthOf(proj.getResult());
    }
    packWidth.push_back(col);
  });
}

//===----------------------------------------------------------------------===//
// Buffers
//===----------------------------------------------------------------------===//

int ProgramBuilder::newBuffer(std::string name, ElemType type,
                              int64_t rowElems, int64_t rowsPerToken,
                              int64_t fixedRows) {
  plan::Buffer b;
  b.name = std::move(name);
  b.type = type;
  b.rowElems = rowElems;
  b.rowsPerToken = rowsPerToken;
  b.fixedRows = fixedRows;
  p.buffers.push_back(std::move(b));
  return int(p.buffers.size()) - 1;
}

FailureOr<Slice> ProgramBuilder::regionOf(Value v, Operation *user) {
  auto it = p.regions.find(v);
  if (it != p.regions.end())
    return it->second;
  return user->emitOpError("operand has no storage in the plan (produced by "
                           "an op the lowering does not support)");
}

FailureOr<Slice> ProgramBuilder::fullRegionOf(Value v, Operation *user,
                                               StringRef what) {
  FailureOr<Slice> r = regionOf(v, user);
  if (failed(r))
    return failure();
  if (!isFull(*r))
    return user->emitOpError()
           << what << " must be a whole activation, not a column slice of one "
           << "(the runtime step reads full rows)";
  return r;
}

FailureOr<Slice> ProgramBuilder::inPlaceOrNew(Value input, Operation *op,
                                               StringRef name) {
  FailureOr<Slice> in = regionOf(input, op);
  if (failed(in))
    return failure();
  if (diesAt(input, op))
    return *in;
  if (!isFull(*in))
    return op->emitOpError("cannot run in place on a column slice that is "
                           "still used later");
  return full(newBuffer(stepName(op, name), ElemType::F32,
                        p.buffers[in->buffer].rowElems));
}

std::string ProgramBuilder::stepName(Operation *op, StringRef what) {
  std::string prefix =
      currentLayer >= 0 ? "layers." + std::to_string(currentLayer) + "." : "";
  return prefix + what.str();
}

void ProgramBuilder::addStep(Operation *op, std::string name,
                             SmallVector<int> reads, SmallVector<int> writes,
                             StepBuilderFn build, int stream) {
  plan::Step s;
  s.name = std::move(name);
  s.layer = int32_t(currentLayer);
  s.stream = stream;
  s.reads = std::move(reads);
  s.writes = std::move(writes);
  s.build = std::move(build);
  s.origin = op;
  p.steps.push_back(std::move(s));
}

/// Wraps an op table into a Step for the rank being built.
template <typename T>
static uint32_t finishStep(flatbuffers::FlatBufferBuilder &fbb,
                           flatbuffers::Offset<T> op, fb::Op type,
                           const std::string &name, int32_t layer,
                           int32_t stream, const Waits &waits) {
  auto waitVec = waits.empty() ? 0 : fbb.CreateVector(waits);
  return fb::CreateStep(fbb, type, op.Union(), fbb.CreateString(name), layer,
                        fb::Stream(stream), waitVec)
      .o;
}

//===----------------------------------------------------------------------===//
// Lowering
//===----------------------------------------------------------------------===//

LogicalResult ProgramBuilder::run() {
  GraphOp graph = model.getGraph();
  if (!graph)
    return model.emitOpError("has no moe.graph to lower");
  if (failed(collectWeights()))
    return failure();
  computeLiveness(graph);
  findPackedProjections(graph);
  if (failed(lowerBlock(graph.getBody().front())))
    return failure();
  if (p.logitsBuffer < 0)
    return graph.emitOpError("must return the logits of a moe.lm_head");
  addStreamingSteps();

  for (auto [index, weight] : llvm::enumerate(p.weights)) {
    auto it = expertWeightRanks.find(int(index));
    if (it == expertWeightRanks.end() || sharedWeights.contains(int(index)))
      continue;
    llvm::sort(it->second);
    it->second.erase(std::unique(it->second.begin(), it->second.end()),
                     it->second.end());
    weight.ranks = it->second;
  }
  for (auto [index, step] : llvm::enumerate(p.steps))
    for (int b : llvm::concat<int>(step.reads, step.writes)) {
      plan::Buffer &buf = p.buffers[b];
      if (buf.firstStep < 0)
        buf.firstStep = int64_t(index);
      buf.lastStep = int64_t(index);
    }
  return success();
}

/// Turns moe-layer-streaming's `moe.prefetch_distance` on a layer into a
/// Prefetch of the layer's (non-expert) weights `distance` layers earlier and
/// an Evict after its last step, both on the streaming stream.
void ProgramBuilder::addStreamingSteps() {
  struct Insert {
    size_t before; // step index to insert in front of
    bool prefetch;
    plan::Step step;
  };
  std::vector<Insert> inserts;
  auto stepsOf = [&](int64_t layer) {
    size_t first = p.steps.size(), last = 0;
    for (auto [i, s] : llvm::enumerate(p.steps))
      if (s.layer == layer) {
        first = std::min(first, i);
        last = std::max(last, i);
      }
    return std::make_pair(first, last);
  };
  for (LayerOp layer : layerOps) {
    auto distance = layer->getAttrOfType<IntegerAttr>("moe.prefetch_distance");
    if (!distance)
      continue;
    // The layer's own weights, not its experts (those stream on demand or
    // stay resident).
    llvm::DenseSet<Value> expertOperands;
    layer.walk([&](ExpertsOp e) {
      for (Value v : e->getOperands())
        expertOperands.insert(v);
    });
    std::vector<int32_t> weights;
    layer.walk([&](WeightOp w) {
      if (!expertOperands.contains(w.getResult())) {
        int index = weightOf(w.getResult());
        if (!llvm::is_contained(weights, index)) {
          weights.push_back(index);
          p.weights[index].streamed = true;
        }
      }
    });
    if (weights.empty())
      continue;
    int64_t index = layer.getIndex();
    int64_t at = index - distance.getInt();
    size_t before = at < 0 ? 0 : stepsOf(at).first;
    size_t after = stepsOf(index).second + 1;
    std::string name = "layers." + std::to_string(index);
    int32_t layerNo = int32_t(index);
    // The builder runs after this ProgramBuilder is gone: it reads the
    // weights' final rank lists through the Program itself.
    const Program *program = &p;
    auto make = [&](std::string stepName, bool prefetch) {
      plan::Step s;
      s.name = stepName;
      s.layer = layerNo;
      s.stream = 2;
      s.origin = layer;
      s.build = [=](flatbuffers::FlatBufferBuilder &fbb, const RankInfo &rank, const Waits &waits) {
        // Only the weights this rank holds.
        std::vector<int32_t> mine;
        for (int32_t w : weights)
          if (program->weights[w].ranks.empty() ||
              llvm::is_contained(program->weights[w].ranks, rank.rank))
            mine.push_back(w);
        if (mine.empty())
          return uint32_t(0);
        auto list = fbb.CreateVector(mine);
        return prefetch ? finishStep(fbb, fb::CreatePrefetch(fbb, list),
                                     fb::Op::Prefetch, stepName, layerNo, 2, waits)
                        : finishStep(fbb, fb::CreateEvict(fbb, list),
                                     fb::Op::Evict, stepName, layerNo, 2, waits);
      };
      return s;
    };
    inserts.push_back({before, true, make(name + ".prefetch", true)});
    inserts.push_back({after, false, make(name + ".evict", false)});
  }
  // Insert back to front so earlier indices stay valid. At one index the
  // evicts must end up in front (memory is freed before it is refilled), so
  // they are inserted last.
  llvm::stable_sort(inserts, [](const Insert &a, const Insert &b) {
    if (a.before != b.before)
      return a.before > b.before;
    return a.prefetch && !b.prefetch;
  });
  for (Insert &ins : inserts)
    p.steps.insert(p.steps.begin() + ins.before, std::move(ins.step));
}

LogicalResult ProgramBuilder::lowerBlock(Block &block) {
  for (Operation &op : block)
    if (failed(lower(&op)))
      return failure();
  return success();
}

LogicalResult ProgramBuilder::lower(Operation *op) {
  return llvm::TypeSwitch<Operation *, LogicalResult>(op)
      .Case([&](WeightOp) { return success(); })
      .Case([&](shard::GridOp) { return success(); })
      .Case([&](LayerOp layer) -> LogicalResult {
        FailureOr<Slice> in = regionOf(layer.getInput(), layer);
        if (failed(in))
          return failure();
        p.regions[layer.getBodyBlock().getArgument(0)] = *in;
        currentLayer = layer.getIndex();
        layerOps.push_back(layer);
        if (failed(lowerBlock(layer.getBodyBlock())))
          return failure();
        currentLayer = -1;
        auto yield = cast<YieldOp>(layer.getBodyBlock().getTerminator());
        FailureOr<Slice> out = regionOf(yield.getValue(), yield);
        if (failed(out))
          return failure();
        p.regions[layer.getResult()] = *out;
        return success();
      })
      .Case([&](YieldOp) { return success(); })
      .Case([&](ReturnOp ret) -> LogicalResult {
        if (ret.getNumOperands() != 1)
          return ret.emitOpError("must return exactly the logits");
        FailureOr<Slice> r = regionOf(ret.getOperand(0), ret);
        if (failed(r))
          return failure();
        p.logitsBuffer = r->buffer;
        return success();
      })
      .Case([&](EmbeddingOp e) -> LogicalResult {
        int w = sharedWeightOf(e.getTable());
        int out = newBuffer("embedding", ElemType::F32, widthOf(e.getResult()));
        p.regions[e.getResult()] = full(out);
        float scale = e.getScale().convertToFloat();
        addStep(e, "embedding", {}, {out},
                [=](flatbuffers::FlatBufferBuilder &fbb, const RankInfo &, const Waits &waits) {
                  return finishStep(fbb, fb::CreateEmbedding(fbb, w, out, scale),
                                    fb::Op::Embedding, "embedding", -1, 0, waits);
                });
        return success();
      })
      .Case([&](PositionEmbeddingOp pe) -> LogicalResult {
        int w = sharedWeightOf(pe.getTable());
        FailureOr<Slice> in = fullRegionOf(pe.getInput(), pe, "the input");
        if (failed(in))
          return failure();
        if (!diesAt(pe.getInput(), pe))
          return pe.emitOpError("adds positions in place, but its input is "
                                "used again later");
        p.regions[pe.getResult()] = *in;
        int buf = in->buffer;
        addStep(pe, "position_embedding", {buf}, {buf},
                [=](flatbuffers::FlatBufferBuilder &fbb, const RankInfo &, const Waits &waits) {
                  return finishStep(fbb,
                                    fb::CreatePositionEmbedding(fbb, w, buf),
                                    fb::Op::PositionEmbedding,
                                    "position_embedding", -1, 0, waits);
                });
        return success();
      })
      .Case([&](LayerNormOp n) {
        return lowerNorm(n, fb::NormKind::LayerNorm, n.getInput(),
                         n.getWeight(), n.getBias(),
                         n.getEps().convertToFloat(), n.getGroupSizeOrWidth(),
                         0.0f);
      })
      .Case([&](RMSNormOp n) {
        return lowerNorm(n, fb::NormKind::RMSNorm, n.getInput(), n.getWeight(),
                         Value(), n.getEps().convertToFloat(),
                         n.getGroupSizeOrWidth(),
                         n.getWeightOffset().convertToFloat());
      })
      .Case([&](LinearOp l) {
        return lowerLinearLike(l, l.getInput(), l.getWeight(), l.getBias(),
                               l.getTransposed(), "linear");
      })
      .Case([&](RouterOp r) {
        return lowerLinearLike(r, r.getInput(), r.getWeight(), Value(), false,
                               "router");
      })
      .Case([&](SplitOp s) -> LogicalResult {
        FailureOr<Slice> in = regionOf(s.getInput(), s);
        if (failed(in))
          return failure();
        int64_t col = in->col;
        for (Value r : s.getResults()) {
          p.regions[r] = Slice{in->buffer, col, widthOf(r)};
          col += widthOf(r);
        }
        return success();
      })
      .Case([&](RotaryOp r) -> LogicalResult {
        FailureOr<Slice> in = regionOf(r.getInput(), r);
        if (failed(in))
          return failure();
        if (!diesAt(r.getInput(), r))
          return r.emitOpError("rotates in place, but its input is used again "
                               "later");
        p.regions[r.getResult()] = *in;
        Slice reg = *in;
        int heads = int(r.getNumHeads()), headDim = int(r.getHeadDim()),
            rotDim = int(r.getRotaryDim());
        float theta = r.getTheta().convertToFloat();
        fb::RopeStyle style = r.getStyle() == RopeStyle::NeoX
                                  ? fb::RopeStyle::NeoX
                                  : fb::RopeStyle::Interleaved;
        std::string name = stepName(r, "rope");
        int32_t layer = int32_t(currentLayer);
        addStep(r, name, {reg.buffer}, {reg.buffer},
                [=](flatbuffers::FlatBufferBuilder &fbb, const RankInfo &, const Waits &waits) {
                  return finishStep(
                      fbb,
                      fb::CreateRope(fbb, reg.buffer, reg.col, heads, headDim,
                                     rotDim, theta, style),
                      fb::Op::Rope, name, layer, 0, waits);
                });
        return success();
      })
      .Case([&](AttentionOp a) -> LogicalResult {
        FailureOr<Slice> q = regionOf(a.getQ(), a), k = regionOf(a.getK(), a),
                          v = regionOf(a.getV(), a);
        if (failed(q) || failed(k) || failed(v))
          return failure();
        if (q->buffer != k->buffer || q->buffer != v->buffer)
          return a.emitOpError("q, k and v must be columns of one buffer (each "
                               "produced by its own single-use projection, or "
                               "split from one)");
        int out = newBuffer(stepName(a, "attention"), ElemType::F32,
                            widthOf(a.getResult()));
        p.regions[a.getResult()] = full(out);
        int64_t layerIndex = a.getLayer();
        if (cacheOfLayer.count(layerIndex))
          return a.emitOpError("reuses the KV cache of layer ")
                 << layerIndex;
        int cache = int(p.kvCaches.size());
        cacheOfLayer[layerIndex] = cache;
        p.kvCaches.push_back(
            KVCache{layerIndex, a.getNumKvHeads(), a.getHeadDim()});
        int qkv = q->buffer;
        int64_t qc = q->col, kc = k->col, vc = v->col;
        int heads = int(a.getNumHeads()), kvHeads = int(a.getNumKvHeads()),
            headDim = int(a.getHeadDim());
        float scale = a.getScale().convertToFloat();
        int window = int(a.getSlidingWindow().value_or(0));
        std::string name = stepName(a, "attention");
        int32_t layer = int32_t(currentLayer);
        addStep(a, name, {qkv}, {out},
                [=](flatbuffers::FlatBufferBuilder &fbb, const RankInfo &, const Waits &waits) {
                  return finishStep(
                      fbb,
                      fb::CreateAttention(fbb, qkv, qc, kc, vc, out, cache,
                                          heads, kvHeads, headDim, scale,
                                          window),
                      fb::Op::Attention, name, layer, 0, waits);
                });
        return success();
      })
      .Case([&](MLPOp m) { return lowerMLP(m); })
      .Case([&](AddOp a) -> LogicalResult {
        FailureOr<Slice> lhs = regionOf(a.getLhs(), a),
                          rhs = regionOf(a.getRhs(), a);
        if (failed(lhs) || failed(rhs))
          return failure();
        Slice out;
        if (diesAt(a.getLhs(), a))
          out = *lhs;
        else if (diesAt(a.getRhs(), a))
          out = *rhs;
        else
          out = full(newBuffer(stepName(a, "add"), ElemType::F32,
                               widthOf(a.getResult())));
        if (!isFull(*lhs) || !isFull(*rhs) || !isFull(out))
          return a.emitOpError("adds whole activations only");
        p.regions[a.getResult()] = out;
        int l = lhs->buffer, r = rhs->buffer, o = out.buffer;
        std::string name = stepName(a, "residual_add");
        int32_t layer = int32_t(currentLayer);
        addStep(a, name, {l, r}, {o},
                [=](flatbuffers::FlatBufferBuilder &fbb, const RankInfo &, const Waits &waits) {
                  return finishStep(fbb, fb::CreateAdd(fbb, l, r, o),
                                    fb::Op::Add, name, layer, 0, waits);
                });
        return success();
      })
      .Case([&](LMHeadOp h) -> LogicalResult {
        FailureOr<Slice> in = fullRegionOf(h.getInput(), h, "the input");
        if (failed(in))
          return failure();
        int w = sharedWeightOf(h.getWeight());
        int bias = optSharedWeightOf(h.getBias());
        // One row: the runtime asks for the last position's logits, or
        // computes every row into its own buffer for --dump.
        int out = newBuffer("logits", ElemType::F32, widthOf(h.getResult()),
                            /*rowsPerToken=*/0, /*fixedRows=*/1);
        p.regions[h.getResult()] = full(out);
        int inBuf = in->buffer;
        addStep(h, "lm_head", {inBuf}, {out},
                [=](flatbuffers::FlatBufferBuilder &fbb, const RankInfo &, const Waits &waits) {
                  return finishStep(fbb,
                                    fb::CreateLogits(fbb, inBuf, w, bias, out),
                                    fb::Op::Logits, "lm_head", -1, 0, waits);
                });
        return success();
      })
      .Case([&](GateOp g) -> LogicalResult {
        FailureOr<Slice> logits =
            fullRegionOf(g.getLogits(), g, "the router logits");
        if (failed(logits))
          return failure();
        RoutingAttr routing = g.getRouting();
        int64_t topK = routing.getTopK();
        int64_t numExperts = widthOf(g.getLogits());
        // Per-slot tables: one row per (token, choice), as plan.fbs lays out.
        int slotExpert = newBuffer(stepName(g, "gate.slot_expert"),
                                   ElemType::I32, 1, topK);
        int slotWeight = newBuffer(stepName(g, "gate.slot_weight"),
                                   ElemType::F32, 1, topK);
        int offsets = newBuffer(stepName(g, "gate.expert_offsets"),
                                ElemType::I32, 1, 0, numExperts + 1);
        int sorted = newBuffer(stepName(g, "gate.sorted_slots"), ElemType::I32,
                               1, topK);
        p.regions[g.getSlotExpert()] = full(slotExpert);
        p.regions[g.getSlotWeight()] = full(slotWeight);
        p.regions[g.getExpertOffsets()] = full(offsets);
        p.regions[g.getSortedSlots()] = full(sorted);
        int in = logits->buffer;
        fb::ScoreFn score = routing.getScore() == ScoreFn::Softmax
                                ? fb::ScoreFn::Softmax
                                : fb::ScoreFn::Sigmoid;
        bool before = routing.getScoreBeforeTopk();
        bool norm = routing.getNormTopkProb();
        float factor = float(routing.getCapacityFactorValue());
        int minCap = int(routing.getMinCapacity());
        bool drop = routing.getDropTokens();
        std::string name = stepName(g, "gate");
        int32_t layer = int32_t(currentLayer);
        addStep(g, name, {in}, {slotExpert, slotWeight, offsets, sorted},
                [=](flatbuffers::FlatBufferBuilder &fbb, const RankInfo &, const Waits &waits) {
                  return finishStep(
                      fbb,
                      fb::CreateGate(fbb, in, int(numExperts), int(topK), score,
                                     before, norm, factor, minCap, drop,
                                     slotExpert, slotWeight, offsets, sorted),
                      fb::Op::Gate, name, layer, 0, waits);
                });
        return success();
      })
      .Case([&](DispatchOp d) -> LogicalResult {
        dispatched[d.getResult()] = {d.getInput(), d.getSortedSlots()};
        return success();
      })
      .Case([&](ExpertsOp e) { return lowerExperts(e); })
      .Case([&](AllToAllOp x) { return lowerExchange(x); })
      .Case([&](CombineOp c) -> LogicalResult {
        FailureOr<Slice> slots = regionOf(c.getInput(), c),
                          weights = regionOf(c.getSlotWeight(), c);
        if (failed(slots) || failed(weights))
          return failure();
        int64_t topK = cast<RankedTensorType>(c.getSlotWeight().getType())
                           .getDimSize(1);
        int out = newBuffer(stepName(c, "moe.combine"), ElemType::F32,
                            widthOf(c.getResult()));
        p.regions[c.getResult()] = full(out);
        int s = slots->buffer, w = weights->buffer;
        std::string name = stepName(c, "moe.combine");
        int32_t layer = int32_t(currentLayer);
        addStep(c, name, {s, w}, {out},
                [=](flatbuffers::FlatBufferBuilder &fbb, const RankInfo &, const Waits &waits) {
                  return finishStep(
                      fbb, fb::CreateCombine(fbb, s, w, out, int(topK)),
                      fb::Op::Combine, name, layer, 0, waits);
                });
        return success();
      })
      .Case([&](SigmoidGateOp g) -> LogicalResult {
        FailureOr<Slice> in = fullRegionOf(g.getInput(), g, "the input");
        FailureOr<Slice> logit =
            fullRegionOf(g.getGateLogit(), g, "the gate logit");
        if (failed(in) || failed(logit))
          return failure();
        if (!diesAt(g.getInput(), g))
          return g.emitOpError("scales in place, but its input is used again "
                               "later");
        p.regions[g.getResult()] = *in;
        int buf = in->buffer, lg = logit->buffer;
        std::string name = stepName(g, "shared_expert.gate");
        int32_t layer = int32_t(currentLayer);
        addStep(g, name, {buf, lg}, {buf},
                [=](flatbuffers::FlatBufferBuilder &fbb, const RankInfo &, const Waits &waits) {
                  return finishStep(fbb, fb::CreateSigmoidGate(fbb, lg, buf),
                                    fb::Op::SigmoidGate, name, layer, 0, waits);
                });
        return success();
      })
      .Case([&](ResidualMixOp m) -> LogicalResult {
        FailureOr<Slice> moeIn = fullRegionOf(m.getMoe(), m, "the MoE output");
        FailureOr<Slice> mlp = fullRegionOf(m.getMlp(), m, "the MLP output");
        FailureOr<Slice> coef =
            fullRegionOf(m.getCoefLogits(), m, "the coefficients");
        if (failed(moeIn) || failed(mlp) || failed(coef))
          return failure();
        FailureOr<Slice> out = inPlaceOrNew(m.getMoe(), m, "residual_mix");
        if (failed(out))
          return failure();
        p.regions[m.getResult()] = *out;
        int a = moeIn->buffer, b = mlp->buffer, c = coef->buffer,
            o = out->buffer;
        std::string name = stepName(m, "residual_mix");
        int32_t layer = int32_t(currentLayer);
        addStep(m, name, {a, b, c}, {o},
                [=](flatbuffers::FlatBufferBuilder &fbb, const RankInfo &, const Waits &waits) {
                  return finishStep(fbb, fb::CreateResidualMix(fbb, a, b, c, o),
                                    fb::Op::ResidualMix, name, layer, 0, waits);
                });
        return success();
      })
      .Case<ScoresOp, TopKOp, RenormalizeOp, CapacityOp, ExpertMapOp>(
          [&](Operation *g) {
            return g->emitOpError("is an unfused gating piece: run "
                                  "moe-fuse-gating before lowering to a plan");
          })
      .Default([&](Operation *other) {
        return other->emitOpError("cannot be lowered to a plan step");
      });
}

LogicalResult ProgramBuilder::lowerNorm(Operation *op, fb::NormKind kind,
                                        Value input, Value weight, Value bias,
                                        float eps, int64_t groupSize,
                                        float weightOffset) {
  FailureOr<Slice> in = regionOf(input, op);
  if (failed(in))
    return failure();
  int w = sharedWeightOf(weight);
  int b = optSharedWeightOf(bias);
  Slice out;
  int64_t col = 0, cols = 0;
  if (diesAt(input, op)) {
    out = *in; // normalizes its columns in place
    col = in->col;
    cols = in->width;
  } else {
    if (!isFull(*in))
      return op->emitOpError("normalizes a column slice that is used again "
                             "later; only whole activations are copied");
    out = full(newBuffer(stepName(op, "norm"), ElemType::F32, in->width));
  }
  p.regions[op->getResult(0)] = out;
  int src = in->buffer, dst = out.buffer;
  std::string name = stepName(
      op, kind == fb::NormKind::LayerNorm ? "layer_norm" : "rms_norm");
  int32_t layer = int32_t(currentLayer);
  addStep(op, name, {src}, {dst},
          [=](flatbuffers::FlatBufferBuilder &fbb, const RankInfo &, const Waits &waits) {
            return finishStep(fbb,
                              fb::CreateNorm(fbb, kind, src, dst, w, b, eps,
                                             groupSize, weightOffset, col,
                                             cols),
                              fb::Op::Norm, name, layer, 0, waits);
          });
  return success();
}

LogicalResult ProgramBuilder::lowerLinearLike(Operation *op, Value input,
                                              Value weight, Value bias,
                                              bool transposed, StringRef what) {
  FailureOr<Slice> in = fullRegionOf(input, op, "the input");
  if (failed(in))
    return failure();
  int w = sharedWeightOf(weight);
  int b = optSharedWeightOf(bias);
  std::string name = p.weights[w].name;
  if (StringRef(name).ends_with(".weight"))
    name.resize(name.size() - strlen(".weight"));
  Value result = op->getResult(0);
  Slice out;
  auto packed = packedColumn.find(op);
  if (packed != packedColumn.end()) {
    auto [pack, col] = packed->second;
    auto it = packBuffer.find(pack);
    if (it == packBuffer.end())
      it = packBuffer
               .insert({pack, newBuffer(stepName(op, "attention.qkv"),
                                        ElemType::F32, packWidth[pack])})
               .first;
    out = Slice{it->second, col, widthOf(result)};
  } else {
    out = full(newBuffer(stepName(op, what), ElemType::F32, widthOf(result)));
  }
  p.regions[result] = out;
  int src = in->buffer, dst = out.buffer;
  int64_t col = out.col;
  int32_t layer = int32_t(currentLayer);
  addStep(op, name, {src}, {dst},
          [=](flatbuffers::FlatBufferBuilder &fbb, const RankInfo &, const Waits &waits) {
            return finishStep(fbb,
                              fb::CreateLinear(fbb, src, dst, w, b, transposed,
                                               /*accumulate=*/false, col),
                              fb::Op::Linear, name, layer, 0, waits);
          });
  return success();
}

LogicalResult ProgramBuilder::lowerMLP(MLPOp m) {
  FailureOr<Slice> in = fullRegionOf(m.getInput(), m, "the input");
  if (failed(in))
    return failure();
  int up = sharedWeightOf(m.getUp()), down = sharedWeightOf(m.getDown());
  int gate = optSharedWeightOf(m.getGate());
  int upBias = optSharedWeightOf(m.getUpBias()),
      downBias = optSharedWeightOf(m.getDownBias());
  int64_t inter = m.getIntermediateSize();
  bool gated = gate >= 0, transposed = m.getTransposed();
  fb::ActKind act = toActKind(m.getActivation());
  std::string prefix = stepName(m, "mlp");
  int32_t layer = int32_t(currentLayer);
  int x = in->buffer;
  // Gated: [gate | up] side by side, then act(gate) * up; plain: act in place.
  int hidden = newBuffer(prefix + ".hidden", ElemType::F32,
                         gated ? 2 * inter : inter);
  int activated =
      gated ? newBuffer(prefix + ".act", ElemType::F32, inter) : hidden;
  int out = newBuffer(prefix + ".out", ElemType::F32, widthOf(m.getResult()));
  p.regions[m.getResult()] = full(out);

  auto linear = [&](std::string name, int src, int dst, int w, int b,
                    int64_t col) {
    addStep(m, name, {src}, {dst},
            [=](flatbuffers::FlatBufferBuilder &fbb, const RankInfo &, const Waits &waits) {
              return finishStep(fbb,
                                fb::CreateLinear(fbb, src, dst, w, b,
                                                 transposed, false, col),
                                fb::Op::Linear, name, layer, 0, waits);
            });
  };
  if (gated)
    linear(prefix + ".gate_proj", x, hidden, gate, -1, 0);
  linear(prefix + ".up_proj", x, hidden, up, upBias, gated ? inter : 0);
  std::string actName = prefix + ".act";
  addStep(m, actName, {hidden}, {activated},
          [=](flatbuffers::FlatBufferBuilder &fbb, const RankInfo &, const Waits &waits) {
            return finishStep(
                fbb, fb::CreateActivation(fbb, hidden, activated, act, gated, inter),
                fb::Op::Activation, actName, layer, 0, waits);
          });
  linear(prefix + ".down_proj", activated, out, down, downBias, 0);
  return success();
}

LogicalResult ProgramBuilder::lowerExperts(ExpertsOp e) {
  // The experts read the token rows through the mapping table: find the
  // dispatch (possibly behind a dispatch exchange).
  auto it = dispatched.find(e.getInput());
  if (it == dispatched.end())
    return e.emitOpError("input must come from moe.dispatch (the runtime "
                         "gathers token rows through the mapping table)");
  auto [tokens, sortedSlots] = it->second;
  FailureOr<Slice> x = fullRegionOf(tokens, e, "the dispatched activation");
  FailureOr<Slice> sorted = regionOf(sortedSlots, e);
  FailureOr<Slice> offsets = regionOf(e.getExpertOffsets(), e);
  if (failed(x) || failed(sorted) || failed(offsets))
    return failure();
  int64_t topK = e.getTopK();
  int64_t numExperts = e.getNumExperts();
  int slotOut = newBuffer(stepName(e, "moe.slot_out"), ElemType::F32,
                          widthOf(e.getResult()), topK);
  p.regions[e.getResult()] = full(slotOut);

  struct ExpertRefs {
    int gate, up, down, upBias, downBias;
  };
  SmallVector<ExpertRefs> refs;
  // The ranks holding each expert's copies (primary first); empty: all.
  SmallVector<SmallVector<int64_t>> copiesOf(numExperts);
  PlacementAttr placement = e.getPlacementAttr();
  for (int64_t i = 0; i < numExperts; ++i) {
    ExpertRefs r;
    r.up = weightOf(e.getUp()[i]);
    r.down = weightOf(e.getDown()[i]);
    r.gate = e.isGated() ? weightOf(e.getGate()[i]) : -1;
    r.upBias = e.getUpBias().empty() ? -1 : weightOf(e.getUpBias()[i]);
    r.downBias = e.getDownBias().empty() ? -1 : weightOf(e.getDownBias()[i]);
    refs.push_back(r);
    if (placement)
      copiesOf[i] = placement.getCopies(i);
    for (int64_t rank : copiesOf[i])
      for (int w : {r.gate, r.up, r.down, r.upBias, r.downBias})
        if (w >= 0)
          expertWeightRanks[w].push_back(int32_t(rank));
  }
  // moe-layer-streaming: experts fetched when the gate routes tokens to them.
  bool onDemand = e->hasAttr("moe.on_demand");
  if (onDemand)
    for (const ExpertRefs &r : refs)
      for (int w : {r.gate, r.up, r.down, r.upBias, r.downBias})
        if (w >= 0)
          p.weights[w].streamed = true;
  int in = x->buffer, sl = sorted->buffer, off = offsets->buffer;
  int64_t inter = e.getIntermediateSize();
  fb::ActKind act = toActKind(e.getActivation());
  bool gated = e.isGated();
  std::string name = stepName(e, "moe.experts");
  int32_t layer = int32_t(currentLayer);
  addStep(e, name, {in, sl, off}, {slotOut},
          [=](flatbuffers::FlatBufferBuilder &fbb, const RankInfo &rank, const Waits &waits) {
            std::vector<flatbuffers::Offset<fb::ExpertWeights>> local;
            for (auto [id, r] : llvm::enumerate(refs)) {
              const SmallVector<int64_t> &copies = copiesOf[id];
              if (copies.empty()) {
                local.push_back(fb::CreateExpertWeights(
                    fbb, int(id), r.gate, r.up, r.down, r.upBias, r.downBias));
                continue;
              }
              auto it = llvm::find(copies, int64_t(rank.rank));
              if (it != copies.end())
                local.push_back(fb::CreateExpertWeights(
                    fbb, int(id), r.gate, r.up, r.down, r.upBias, r.downBias,
                    int(it - copies.begin()), int(copies.size())));
            }
            auto list = fbb.CreateVector(local);
            return finishStep(fbb,
                              fb::CreateExperts(fbb, in, sl, off, slotOut,
                                                int(topK), inter, act, gated,
                                                list, onDemand),
                              fb::Op::Experts, name, layer, 0, waits);
          });
  return success();
}

LogicalResult ProgramBuilder::lowerExchange(AllToAllOp x) {
  if (x.getKind() == ExchangeKind::Dispatch) {
    // Tokens are replicated on every rank: nothing moves.
    auto it = dispatched.find(x.getInput());
    if (it == dispatched.end())
      return x.emitOpError("dispatch exchange must follow moe.dispatch");
    std::pair<Value, Value> source = it->second; // insertion may rehash
    dispatched[x.getResult()] = source;
    return success();
  }
  FailureOr<Slice> in = regionOf(x.getInput(), x);
  if (failed(in))
    return failure();
  p.regions[x.getResult()] = *in;
  auto grid = SymbolTable::lookupNearestSymbolFrom<shard::GridOp>(
      x, x.getGridAttr());
  if (!grid)
    return x.emitOpError("grid not found");
  SmallVector<int64_t> shape(grid.getShape());
  SmallVector<int16_t> axes(x.getGridAxes());
  int buf = in->buffer;
  std::string level =
      axes.size() == shape.size() ? "flat"
      : (axes.size() == 1 && axes[0] == int16_t(shape.size() - 1))
          ? "intra-node"
          : "inter-node";
  std::string name = stepName(x, "moe.combine_exchange." + level);
  int32_t layer = int32_t(currentLayer);
  addStep(
      x, name, {buf}, {buf},
      [=](flatbuffers::FlatBufferBuilder &fbb, const RankInfo &rank, const Waits &waits) -> uint32_t {
        // Ranks sharing this rank's grid coordinates outside `axes`.
        auto coords = [&](int64_t r) {
          SmallVector<int64_t> c(shape.size());
          for (int64_t d = int64_t(shape.size()) - 1; d >= 0; --d) {
            c[d] = r % shape[d];
            r /= shape[d];
          }
          return c;
        };
        SmallVector<int64_t> mine = coords(rank.rank);
        std::vector<int32_t> group;
        for (int64_t r = 0; r < rank.numRanks; ++r) {
          SmallVector<int64_t> c = coords(r);
          bool same = true;
          for (size_t d = 0; d < shape.size(); ++d)
            if (!llvm::is_contained(axes, int16_t(d)) && c[d] != mine[d])
              same = false;
          if (same)
            group.push_back(int32_t(r));
        }
        if (group.size() <= 1)
          return 0;
        auto groupVec = fbb.CreateVector(group);
        return finishStep(fbb,
                          fb::CreateCollective(fbb,
                                               fb::CollectiveKind::AllReduceSum,
                                               buf, -1, groupVec,
                                               fbb.CreateString(level)),
                          fb::Op::Collective, name, layer, 1, waits);
      },
      /*stream=*/1);
  return success();
}

//===----------------------------------------------------------------------===//
// Entry points
//===----------------------------------------------------------------------===//

LogicalResult mlir::moe::plan::buildProgram(ModelOp model, const CompileOptions &options,
                                 Program &program) {
  int64_t maxPositions = model.getMaxPositionEmbeddings();
  program.maxSeqLen = options.maxSeqLen > 0
                          ? options.maxSeqLen
                          : std::min<int64_t>(maxPositions, 4096);
  if (program.maxSeqLen > maxPositions)
    return model.emitOpError() << "--max-seq-len=" << program.maxSeqLen
                               << " exceeds the model's "
                               << "max_position_embeddings (" << maxPositions
                               << ")";
  program.maxTokens = std::min<int64_t>(program.maxSeqLen, 512);
  return ProgramBuilder(model, options, program).run();
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

void mlir::moe::plan::planMemory(Program &program) {
  constexpr uint64_t kAlign = 64;
  std::vector<int> order;
  program.unplannedBytes = 0;
  for (auto [i, b] : llvm::enumerate(program.buffers)) {
    uint64_t bytes = b.bytes(program.maxTokens);
    program.unplannedBytes += llvm::alignTo(bytes, kAlign);
    if (b.firstStep >= 0)
      order.push_back(int(i));
  }
  // Greedy by size: big buffers first, each at the lowest offset that does
  // not overlap a placed buffer whose live range intersects its own.
  llvm::stable_sort(order, [&](int a, int b) {
    return program.buffers[a].bytes(program.maxTokens) >
           program.buffers[b].bytes(program.maxTokens);
  });
  std::vector<int> placed;
  uint64_t arena = 0;
  for (int i : order) {
    plan::Buffer &b = program.buffers[i];
    uint64_t size = llvm::alignTo(b.bytes(program.maxTokens), kAlign);
    std::vector<std::pair<uint64_t, uint64_t>> busy;
    for (int j : placed) {
      const plan::Buffer &o = program.buffers[j];
      if (o.lastStep < b.firstStep || b.lastStep < o.firstStep)
        continue;
      busy.push_back(
          {o.offset, o.offset + llvm::alignTo(o.bytes(program.maxTokens), kAlign)});
    }
    llvm::sort(busy);
    uint64_t offset = 0;
    for (auto [lo, hi] : busy) {
      if (offset + size <= lo)
        break;
      offset = std::max(offset, hi);
    }
    b.offset = offset;
    arena = std::max(arena, offset + size);
    placed.push_back(i);
  }
  program.arenaBytes = arena;
  LLVM_DEBUG(llvm::dbgs() << "moe-plan: " << program.buffers.size()
                          << " buffers, arena " << arena << " bytes (without "
                          << "reuse " << program.unplannedBytes << ")\n");
}

uint64_t mlir::moe::plan::kvCacheBytes(const Program &program) {
  uint64_t bytes = 0;
  for (const KVCache &c : program.kvCaches)
    bytes += 2 * uint64_t(c.numKVHeads) * uint64_t(c.headDim) *
             uint64_t(program.maxSeqLen) * 4;
  return bytes;
}

uint64_t mlir::moe::plan::weightBytesOnRank(const Program &program, int32_t rank) {
  uint64_t bytes = 0;
  for (const Weight &w : program.weights)
    if (w.ranks.empty() || llvm::is_contained(w.ranks, rank))
      bytes += w.bytes();
  return bytes;
}
