//===- Storage.cpp - Where every activation of the plan lives -------------===//
//
// The storage analysis of the plan lowering (stage 1 of Program.h), run once
// by moe-plan-memory: walks the graph in program order (layers flattened) and
// decides, for every SSA activation, its buffer and first column. The rules
// that keep the arena small and the steps few:
//  - elementwise ops (norms, rotary, residual add, position embedding, gates)
//    overwrite an input that dies at them;
//  - `moe.split` results are column views of their input;
//  - the q, k and v projections of an attention write into one packed buffer
//    (the runtime's Attention reads q/k/v as columns of one buffer);
//  - `moe.dispatch` and a dispatch exchange cost nothing: the Experts step
//    gathers the token rows itself through the mapping table, and at batch 1
//    tokens are replicated on every rank;
//  - a combine exchange reduces its input in place.
// Live ranges count the steps the lowering will emit for each op (touch()
// below); EmitPlan checks them against the steps it lowered.
//
//===----------------------------------------------------------------------===//

#include "moe/Plan/Program.h"

#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/Debug.h"
#include "llvm/Support/FormatVariadic.h"

#define DEBUG_TYPE "moe-plan-storage"

using namespace mlir;
using namespace mlir::moe;
using namespace mlir::moe::plan;

static int64_t widthOf(Value v) {
  return cast<RankedTensorType>(v.getType()).getDimSize(1);
}

DispatchOp mlir::moe::plan::getDispatch(Value tokens) {
  while (auto x = tokens.getDefiningOp<AllToAllOp>()) {
    if (x.getKind() != ExchangeKind::Dispatch)
      return nullptr;
    tokens = x.getInput();
  }
  return tokens.getDefiningOp<DispatchOp>();
}

ExpertsOp mlir::moe::plan::getCombinedExperts(Value slots) {
  while (auto x = slots.getDefiningOp<AllToAllOp>())
    slots = x.getInput();
  return slots.getDefiningOp<ExpertsOp>();
}

AllToAllOp mlir::moe::plan::getDispatchExchange(Value tokens) {
  AllToAllOp first;
  while (auto x = tokens.getDefiningOp<AllToAllOp>()) {
    if (x.getKind() != ExchangeKind::Dispatch)
      return nullptr;
    first = x;
    tokens = x.getInput();
  }
  return tokens.getDefiningOp<DispatchOp>() ? first : AllToAllOp();
}

namespace {

class StorageAssigner {
public:
  StorageAssigner(ModelOp model, Storage &s) : model(model), s(s) {}
  LogicalResult run();

private:
  void computeLiveness(GraphOp graph);
  void findPackedProjections(GraphOp graph);
  LogicalResult assignBlock(Block &block);
  LogicalResult assign(Operation *op);
  LogicalResult assignLinear(Operation *op, Value input, StringRef what);
  LogicalResult assignNorm(Operation *op, Value input);
  LogicalResult assignMLP(MLPOp op);
  LogicalResult assignDispatchExchange(AllToAllOp x);
  LogicalResult assignCombineExchange(AllToAllOp x, Slice in);

  int newBuffer(std::string name, ElemType type, int64_t rowElems,
                int64_t rowsPerToken = 1, int64_t fixedRows = 0);
  Slice full(int buffer) { return Slice{buffer, 0, s.buffers[buffer].rowElems}; }
  bool isFull(const Slice &r) {
    return r.col == 0 && r.width == s.buffers[r.buffer].rowElems;
  }
  FailureOr<Slice> sliceOf(Value v, Operation *user);
  FailureOr<Slice> fullSliceOf(Value v, Operation *user, StringRef what);
  bool diesAt(Value v, Operation *op) {
    auto it = lastUse.find(v);
    return it == lastUse.end() || it->second <= order.lookup(op);
  }
  FailureOr<Slice> inPlaceOrNew(Value input, Operation *op, StringRef name);
  std::string bufferName(StringRef what) {
    std::string prefix = currentLayer >= 0
                             ? "layers." + std::to_string(currentLayer) + "."
                             : "";
    return prefix + what.str();
  }
  /// One step of the lowering touches these buffers (in this order of steps).
  void touch(ArrayRef<int> buffers) {
    for (int b : buffers) {
      Buffer &buf = s.buffers[b];
      if (buf.firstStep < 0)
        buf.firstStep = nextStep;
      buf.lastStep = nextStep;
    }
    ++nextStep;
  }

  ModelOp model;
  Storage &s;
  llvm::DenseMap<Operation *, int64_t> order;
  llvm::DenseMap<Value, int64_t> lastUse;
  /// Linear ops writing into a packed q/k/v buffer: (pack id, column).
  llvm::DenseMap<Operation *, std::pair<int, int64_t>> packedColumn;
  SmallVector<int64_t> packWidth;
  llvm::DenseMap<int, int> packBuffer;
  llvm::DenseSet<int64_t> cacheLayers;
  int64_t currentLayer = -1;
  int64_t nextStep = 0;
  /// moe.data_parallel and the grid's ranks.
  int64_t groups = 1, ranks = 1;
};

} // namespace

void StorageAssigner::computeLiveness(GraphOp graph) {
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

void StorageAssigner::findPackedProjections(GraphOp graph) {
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

int StorageAssigner::newBuffer(std::string name, ElemType type,
                               int64_t rowElems, int64_t rowsPerToken,
                               int64_t fixedRows) {
  Buffer b;
  b.name = std::move(name);
  b.type = type;
  b.rowElems = rowElems;
  b.rowsPerToken = rowsPerToken;
  b.fixedRows = fixedRows;
  s.buffers.push_back(std::move(b));
  return int(s.buffers.size()) - 1;
}

FailureOr<Slice> StorageAssigner::sliceOf(Value v, Operation *user) {
  auto it = s.slices.find(v);
  if (it != s.slices.end())
    return it->second;
  return user->emitOpError("operand has no storage in the plan (produced by "
                           "an op the lowering does not support)");
}

FailureOr<Slice> StorageAssigner::fullSliceOf(Value v, Operation *user,
                                              StringRef what) {
  FailureOr<Slice> r = sliceOf(v, user);
  if (failed(r))
    return failure();
  if (!isFull(*r))
    return user->emitOpError()
           << what << " must be a whole activation, not a column slice of one "
           << "(the runtime step reads full rows)";
  return r;
}

FailureOr<Slice> StorageAssigner::inPlaceOrNew(Value input, Operation *op,
                                               StringRef name) {
  FailureOr<Slice> in = sliceOf(input, op);
  if (failed(in))
    return failure();
  if (diesAt(input, op))
    return *in;
  if (!isFull(*in))
    return op->emitOpError("cannot run in place on a column slice that is "
                           "still used later");
  return full(newBuffer(bufferName(name), ElemType::F32,
                        s.buffers[in->buffer].rowElems));
}

LogicalResult StorageAssigner::run() {
  GraphOp graph = model.getGraph();
  if (!graph)
    return model.emitOpError("has no moe.graph to lower");
  computeLiveness(graph);
  findPackedProjections(graph);
  groups = getDataParallel(model);
  ranks = getNumRanks(model);
  return assignBlock(graph.getBody().front());
}

LogicalResult StorageAssigner::assignBlock(Block &block) {
  for (Operation &op : block)
    if (failed(assign(&op)))
      return failure();
  return success();
}

/// In place when the input dies here (a layer's q norm on its packed
/// columns), otherwise a copy of a whole activation.
LogicalResult StorageAssigner::assignNorm(Operation *op, Value input) {
  FailureOr<Slice> in = sliceOf(input, op);
  if (failed(in))
    return failure();
  Slice out;
  if (diesAt(input, op)) {
    out = *in;
  } else {
    if (!isFull(*in))
      return op->emitOpError("normalizes a column slice that is used again "
                             "later; only whole activations are copied");
    out = full(newBuffer(bufferName("norm"), ElemType::F32, in->width));
  }
  s.slices[op->getResult(0)] = out;
  touch({in->buffer, out.buffer});
  return success();
}

LogicalResult StorageAssigner::assignLinear(Operation *op, Value input,
                                            StringRef what) {
  FailureOr<Slice> in = fullSliceOf(input, op, "the input");
  if (failed(in))
    return failure();
  Value result = op->getResult(0);
  Slice out;
  auto packed = packedColumn.find(op);
  if (packed != packedColumn.end()) {
    auto [pack, col] = packed->second;
    auto it = packBuffer.find(pack);
    if (it == packBuffer.end())
      it = packBuffer
               .insert({pack, newBuffer(bufferName("attention.qkv"),
                                        ElemType::F32, packWidth[pack])})
               .first;
    out = Slice{it->second, col, widthOf(result)};
  } else {
    out = full(newBuffer(bufferName(what), ElemType::F32, widthOf(result)));
  }
  s.slices[result] = out;
  // Tensor-parallel forms (LoweringTensorParallel.cpp): a fused q/k/v
  // projection as three steps, a row-parallel one followed by its
  // all-reduce.
  StringRef kind = tensorSliceOf(op);
  for (int i = 0, n = kind == "column_qkv" ? 3 : 1; i < n; ++i)
    touch({in->buffer, out.buffer});
  if (kind == "row")
    touch({out.buffer});
  return success();
}

/// Gated: [gate | up] side by side in `hidden`, then act(gate) * up into
/// `act`; plain: the activation in place.
LogicalResult StorageAssigner::assignMLP(MLPOp m) {
  FailureOr<Slice> in = fullSliceOf(m.getInput(), m, "the input");
  if (failed(in))
    return failure();
  int64_t inter = m.getIntermediateSize();
  bool gated = bool(m.getGate());
  std::string prefix = bufferName("mlp");
  int hidden = newBuffer(prefix + ".hidden", ElemType::F32,
                         gated ? 2 * inter : inter);
  int act = gated ? newBuffer(prefix + ".act", ElemType::F32, inter) : hidden;
  int out = newBuffer(prefix + ".out", ElemType::F32, widthOf(m.getResult()));
  s.slices[m.getResult()] = full(out);
  s.scratch[m] = gated ? SmallVector<int>{hidden, act} : SmallVector<int>{hidden};
  if (gated)
    touch({in->buffer, hidden}); // gate_proj
  touch({in->buffer, hidden});   // up_proj
  touch({hidden, act});          // act
  touch({act, out});             // down_proj
  if (tensorSliceOf(m) == "ffn")
    touch({out}); // the tensor-parallel all-reduce
  return success();
}

/// The rows a rank receives per token of a group in a data-parallel
/// dispatch: one per top-k slot whose expert it holds a copy or part of, so
/// at most min(top_k, the most experts one rank holds) (a rank with one
/// expert of many receives at most one row per token, not top_k).
static int64_t receivedSlotsPerToken(AllToAllOp dispatch, int64_t topK) {
  PlacementAttr placement = dispatch.getPlacement();
  if (!placement)
    return topK; // every rank holds every expert
  return std::max<int64_t>(1, std::min(topK, placement.getMaxExpertsPerRank()));
}

/// A data-parallel dispatch (its first stage: the lowering makes one flat
/// exchange of the stages): the rows this rank receives (at most every
/// group's slots, max_tokens x top_k each), their order by expert and
/// per-expert offsets, and the record the combine reads (the slot of every
/// row sent, up to top_k x slices per token, and the counts per peer).
LogicalResult StorageAssigner::assignDispatchExchange(AllToAllOp x) {
  DispatchOp d = getDispatch(x.getInput());
  FailureOr<Slice> in =
      fullSliceOf(d.getInput(), x, "the dispatched activation");
  FailureOr<Slice> sorted = sliceOf(d.getSortedSlots(), x);
  FailureOr<Slice> offsets = sliceOf(x.getExpertOffsets(), x);
  if (failed(in) || failed(sorted) || failed(offsets))
    return failure();
  int64_t K = d.getTopK(), E = x.getNumExperts(), D = widthOf(d.getInput());
  int64_t S = x.getPlacement() ? x.getPlacement().getSlices() : 1;
  int64_t perToken = groups * receivedSlotsPerToken(x, K);
  int recv = newBuffer(bufferName("moe.recv"), ElemType::F32, D, perToken);
  int recvSorted =
      newBuffer(bufferName("moe.recv_sorted"), ElemType::I32, 1, perToken);
  int recvOffsets = newBuffer(bufferName("moe.recv_offsets"), ElemType::I32, 1,
                              0, E + 1);
  int sendSlots =
      newBuffer(bufferName("moe.send_slots"), ElemType::I32, 1, K * S);
  // Rows sent and received per member of each stage: at most 2(P + M) for
  // P ranks per node and M nodes, 2N + 2 when flat.
  int counts = newBuffer(bufferName("moe.exchange_counts"), ElemType::I32, 1,
                         0, 2 * ranks + 2);
  // Hierarchical: the order in which this rank forwards the rows it relays
  // (each slot's row to each of its destinations passes one relay).
  int relay = newBuffer(bufferName("moe.relay"), ElemType::I32, 1,
                        groups * K * S);
  s.scratch[x] = {recv, recvSorted, recvOffsets, sendSlots, counts, relay};
  touch({in->buffer, sorted->buffer, offsets->buffer, recv, recvSorted,
         recvOffsets, sendSlots, counts, relay});
  return success();
}

/// A data-parallel combine: the last stage brings the experts' outputs back
/// into per-slot rows (a tensor-parallel group then sums its members'
/// rows); earlier stages pass their input on.
LogicalResult StorageAssigner::assignCombineExchange(AllToAllOp x, Slice in) {
  bool last = llvm::none_of(x->getUsers(), [](Operation *u) {
    auto next = dyn_cast<AllToAllOp>(u);
    return next && next.getKind() == ExchangeKind::Combine;
  });
  if (!last) {
    s.slices[x.getResult()] = in;
    return success();
  }
  ExpertsOp experts = getCombinedExperts(x.getInput());
  AllToAllOp dispatch = experts ? getDispatchExchange(experts.getInput())
                                : AllToAllOp();
  if (!dispatch || !s.scratch.count(dispatch))
    return x.emitOpError("in a data-parallel plan a combine exchange must "
                         "follow moe.experts over a dispatch exchange");
  ArrayRef<int> xs = s.scratch[dispatch];
  int out = newBuffer(bufferName("moe.slot_out"), ElemType::F32,
                      widthOf(x.getResult()), experts.getTopK());
  s.slices[x.getResult()] = full(out);
  touch({in.buffer, xs[3], xs[4], xs[5], out});
  if (getTensorParallel(model) > 1)
    touch({out}); // the tensor-parallel sum of the members' slots
  return success();
}

LogicalResult StorageAssigner::assign(Operation *op) {
  return llvm::TypeSwitch<Operation *, LogicalResult>(op)
      .Case<WeightOp, shard::GridOp, YieldOp, DispatchOp>(
          [&](Operation *) { return success(); })
      .Case([&](LayerOp layer) -> LogicalResult {
        FailureOr<Slice> in = sliceOf(layer.getInput(), layer);
        if (failed(in))
          return failure();
        s.slices[layer.getBodyBlock().getArgument(0)] = *in;
        currentLayer = layer.getIndex();
        if (failed(assignBlock(layer.getBodyBlock())))
          return failure();
        currentLayer = -1;
        auto yield = cast<YieldOp>(layer.getBodyBlock().getTerminator());
        FailureOr<Slice> out = sliceOf(yield.getValue(), yield);
        if (failed(out))
          return failure();
        s.slices[layer.getResult()] = *out;
        return success();
      })
      .Case([&](ReturnOp ret) -> LogicalResult {
        if (ret.getNumOperands() != 1)
          return ret.emitOpError("must return exactly the logits");
        return success(succeeded(sliceOf(ret.getOperand(0), ret)));
      })
      .Case([&](EmbeddingOp e) {
        int out = newBuffer("embedding", ElemType::F32, widthOf(e.getResult()));
        s.slices[e.getResult()] = full(out);
        touch({out});
        if (tensorSliceOf(e) == "vocab")
          touch({out}); // the vocabulary-parallel all-reduce
        return success();
      })
      .Case([&](PositionEmbeddingOp pe) -> LogicalResult {
        FailureOr<Slice> in = fullSliceOf(pe.getInput(), pe, "the input");
        if (failed(in))
          return failure();
        if (!diesAt(pe.getInput(), pe))
          return pe.emitOpError("adds positions in place, but its input is "
                                "used again later");
        s.slices[pe.getResult()] = *in;
        touch({in->buffer});
        return success();
      })
      .Case<LayerNormOp, RMSNormOp>(
          [&](Operation *n) { return assignNorm(n, n->getOperand(0)); })
      .Case([&](LinearOp l) {
        return assignLinear(l, l.getInput(), "linear");
      })
      .Case([&](RouterOp r) {
        return assignLinear(r, r.getInput(), "router");
      })
      .Case([&](SplitOp sp) -> LogicalResult {
        FailureOr<Slice> in = sliceOf(sp.getInput(), sp);
        if (failed(in))
          return failure();
        int64_t col = in->col;
        for (Value r : sp.getResults()) {
          s.slices[r] = Slice{in->buffer, col, widthOf(r)};
          col += widthOf(r);
        }
        return success();
      })
      .Case([&](RotaryOp r) -> LogicalResult {
        FailureOr<Slice> in = sliceOf(r.getInput(), r);
        if (failed(in))
          return failure();
        if (!diesAt(r.getInput(), r))
          return r.emitOpError("rotates in place, but its input is used again "
                               "later");
        s.slices[r.getResult()] = *in;
        touch({in->buffer});
        return success();
      })
      .Case([&](GatherColumnsOp g) -> LogicalResult {
        // A copy into a new whole activation; its inputs may be column
        // slices (MLA's k_pe) of buffers that stay live.
        SmallVector<int> touched;
        for (Value in : g.getInputs()) {
          FailureOr<Slice> slice = sliceOf(in, g);
          if (failed(slice))
            return failure();
          touched.push_back(slice->buffer);
        }
        int out = newBuffer(bufferName("gather_columns"), ElemType::F32,
                            widthOf(g.getResult()));
        s.slices[g.getResult()] = full(out);
        touched.push_back(out);
        touch(ArrayRef<int>(touched));
        return success();
      })
      .Case([&](AttentionOp a) -> LogicalResult {
        FailureOr<Slice> q = sliceOf(a.getQ(), a), k = sliceOf(a.getK(), a),
                         v = sliceOf(a.getV(), a);
        if (failed(q) || failed(k) || failed(v))
          return failure();
        if (q->buffer != k->buffer || q->buffer != v->buffer)
          return a.emitOpError("q, k and v must be columns of one buffer (each "
                               "produced by its own single-use projection, or "
                               "split from one)");
        if (!cacheLayers.insert(a.getLayer()).second)
          return a.emitOpError("reuses the KV cache of layer ") << a.getLayer();
        int out = newBuffer(bufferName("attention"), ElemType::F32,
                            widthOf(a.getResult()));
        s.slices[a.getResult()] = full(out);
        touch({q->buffer, out});
        return success();
      })
      .Case([&](MLAAttentionOp a) -> LogicalResult {
        // q, c_kv and k_pe may lie in different buffers (the step names
        // each); the latent and k_pe are read before anything overwrites
        // them, so column slices are fine.
        FailureOr<Slice> q = sliceOf(a.getQ(), a), c = sliceOf(a.getCKv(), a),
                         kpe = sliceOf(a.getKPe(), a);
        if (failed(q) || failed(c) || failed(kpe))
          return failure();
        if (!cacheLayers.insert(a.getLayer()).second)
          return a.emitOpError("reuses the KV cache of layer ") << a.getLayer();
        int out = newBuffer(bufferName("attention"), ElemType::F32,
                            widthOf(a.getResult()));
        s.slices[a.getResult()] = full(out);
        SmallVector<int> touched{q->buffer, c->buffer, kpe->buffer, out};
        touch(ArrayRef<int>(touched));
        return success();
      })
      .Case([&](MLPOp m) { return assignMLP(m); })
      .Case([&](AddOp a) -> LogicalResult {
        FailureOr<Slice> lhs = sliceOf(a.getLhs(), a),
                         rhs = sliceOf(a.getRhs(), a);
        if (failed(lhs) || failed(rhs))
          return failure();
        Slice out;
        if (diesAt(a.getLhs(), a))
          out = *lhs;
        else if (diesAt(a.getRhs(), a))
          out = *rhs;
        else
          out = full(newBuffer(bufferName("add"), ElemType::F32,
                               widthOf(a.getResult())));
        if (!isFull(*lhs) || !isFull(*rhs) || !isFull(out))
          return a.emitOpError("adds whole activations only");
        s.slices[a.getResult()] = out;
        touch({lhs->buffer, rhs->buffer, out.buffer});
        return success();
      })
      .Case([&](LMHeadOp h) -> LogicalResult {
        FailureOr<Slice> in = fullSliceOf(h.getInput(), h, "the input");
        if (failed(in))
          return failure();
        // One row: the runtime asks for the last position's logits, or
        // computes every row into its own buffer for --dump.
        int out = newBuffer("logits", ElemType::F32, widthOf(h.getResult()),
                            /*rowsPerToken=*/0, /*fixedRows=*/1);
        s.slices[h.getResult()] = full(out);
        touch({in->buffer, out});
        return success();
      })
      .Case([&](GateOp g) -> LogicalResult {
        FailureOr<Slice> logits =
            fullSliceOf(g.getLogits(), g, "the router logits");
        if (failed(logits))
          return failure();
        int64_t topK = g.getRouting().getTopK();
        int64_t numExperts = widthOf(g.getLogits());
        // Per-slot tables: one row per (token, choice), as plan.fbs lays out.
        int slotExpert = newBuffer(bufferName("gate.slot_expert"),
                                   ElemType::I32, 1, topK);
        int slotWeight = newBuffer(bufferName("gate.slot_weight"),
                                   ElemType::F32, 1, topK);
        int offsets = newBuffer(bufferName("gate.expert_offsets"),
                                ElemType::I32, 1, 0, numExperts + 1);
        int sorted = newBuffer(bufferName("gate.sorted_slots"), ElemType::I32,
                               1, topK);
        s.slices[g.getSlotExpert()] = full(slotExpert);
        s.slices[g.getSlotWeight()] = full(slotWeight);
        s.slices[g.getExpertOffsets()] = full(offsets);
        s.slices[g.getSortedSlots()] = full(sorted);
        touch({logits->buffer, slotExpert, slotWeight, offsets, sorted});
        return success();
      })
      .Case([&](ExpertsOp e) -> LogicalResult {
        // The experts read the token rows through the mapping table: find
        // the dispatch (possibly behind a dispatch exchange).
        DispatchOp dispatch = getDispatch(e.getInput());
        if (!dispatch)
          return e.emitOpError("input must come from moe.dispatch (the "
                               "runtime gathers token rows through the "
                               "mapping table)");
        FailureOr<Slice> x =
            fullSliceOf(dispatch.getInput(), e, "the dispatched activation");
        FailureOr<Slice> sorted = sliceOf(dispatch.getSortedSlots(), e);
        FailureOr<Slice> offsets = sliceOf(e.getExpertOffsets(), e);
        if (failed(x) || failed(sorted) || failed(offsets))
          return failure();
        if (groups > 1) {
          // Data-parallel groups: the experts run on the rows the dispatch
          // exchange received, one slot per row.
          AllToAllOp xchg = getDispatchExchange(e.getInput());
          if (!xchg || !s.scratch.count(xchg))
            return e.emitOpError("in a data-parallel plan the input must come "
                                 "from a dispatch exchange");
          ArrayRef<int> xs = s.scratch[xchg];
          int out = newBuffer(
              bufferName("moe.recv_out"), ElemType::F32, widthOf(e.getResult()),
              groups * receivedSlotsPerToken(xchg, e.getTopK()));
          s.slices[e.getResult()] = full(out);
          // The exchange runs on the communication stream until this step
          // waits for it: what it reads lives until here too.
          touch({xs[0], xs[1], xs[2], out, x->buffer, sorted->buffer,
                 offsets->buffer});
          return success();
        }
        int out = newBuffer(bufferName("moe.slot_out"), ElemType::F32,
                            widthOf(e.getResult()), e.getTopK());
        s.slices[e.getResult()] = full(out);
        touch({x->buffer, sorted->buffer, offsets->buffer, out});
        return success();
      })
      .Case([&](AllToAllOp x) -> LogicalResult {
        if (x.getKind() == ExchangeKind::Dispatch) {
          if (!getDispatch(x.getInput()))
            return x.emitOpError("dispatch exchange must follow moe.dispatch");
          if (groups > 1 && getDispatchExchange(x.getResult()) == x)
            return assignDispatchExchange(x);
          return success(); // tokens are replicated on every rank
        }
        FailureOr<Slice> in = sliceOf(x.getInput(), x);
        if (failed(in))
          return failure();
        if (groups > 1)
          return assignCombineExchange(x, *in);
        s.slices[x.getResult()] = *in; // reduced in place
        touch({in->buffer});
        return success();
      })
      .Case([&](CombineOp c) -> LogicalResult {
        FailureOr<Slice> slots = sliceOf(c.getInput(), c),
                         weights = sliceOf(c.getSlotWeight(), c);
        if (failed(slots) || failed(weights))
          return failure();
        int out = newBuffer(bufferName("moe.combine"), ElemType::F32,
                            widthOf(c.getResult()));
        s.slices[c.getResult()] = full(out);
        SmallVector<int> reads = {slots->buffer, weights->buffer, out};
        if (groups > 1) {
          // The combine exchange reads the experts' outputs and the
          // dispatch's record on the communication stream until this step
          // waits for it: they live until here.
          if (ExpertsOp experts = getCombinedExperts(c.getInput())) {
            if (FailureOr<Slice> y = sliceOf(experts.getResult(), c);
                succeeded(y))
              reads.push_back(y->buffer);
            AllToAllOp xchg = getDispatchExchange(experts.getInput());
            if (xchg && s.scratch.count(xchg))
              reads.append({s.scratch[xchg][3], s.scratch[xchg][4],
                            s.scratch[xchg][5]});
          }
        }
        touch(reads);
        return success();
      })
      .Case([&](SigmoidGateOp g) -> LogicalResult {
        FailureOr<Slice> in = fullSliceOf(g.getInput(), g, "the input");
        FailureOr<Slice> logit =
            fullSliceOf(g.getGateLogit(), g, "the gate logit");
        if (failed(in) || failed(logit))
          return failure();
        if (!diesAt(g.getInput(), g))
          return g.emitOpError("scales in place, but its input is used again "
                               "later");
        s.slices[g.getResult()] = *in;
        touch({in->buffer, logit->buffer});
        return success();
      })
      .Case([&](ResidualMixOp m) -> LogicalResult {
        FailureOr<Slice> moeIn = fullSliceOf(m.getMoe(), m, "the MoE output");
        FailureOr<Slice> mlp = fullSliceOf(m.getMlp(), m, "the MLP output");
        FailureOr<Slice> coef =
            fullSliceOf(m.getCoefLogits(), m, "the coefficients");
        if (failed(moeIn) || failed(mlp) || failed(coef))
          return failure();
        FailureOr<Slice> out = inPlaceOrNew(m.getMoe(), m, "residual_mix");
        if (failed(out))
          return failure();
        s.slices[m.getResult()] = *out;
        touch({moeIn->buffer, mlp->buffer, coef->buffer, out->buffer});
        return success();
      })
      .Case<ScoresOp, TopKOp, RenormalizeOp, ScaleWeightsOp, CapacityOp,
            ExpertMapOp>(
          [&](Operation *g) {
            return g->emitOpError("is an unfused gating piece: run "
                                  "moe-fuse-gating before lowering to a plan");
          })
      .Default([&](Operation *other) {
        return other->emitOpError("cannot be lowered to a plan step");
      });
}

//===----------------------------------------------------------------------===//
// Entry points
//===----------------------------------------------------------------------===//

std::vector<KVCache> mlir::moe::plan::collectKVCaches(ModelOp model) {
  std::vector<KVCache> caches;
  int64_t T = getTensorParallel(model);
  // f32, bf16 or f16 (ModelOp's verifier).
  ElemType type = *toElemType(model.getKvCacheElementType());
  model.walk([&](Operation *op) {
    if (auto a = dyn_cast<AttentionOp>(op)) {
      // A tensor-parallel member caches only its kv heads (every member as
      // many).
      int64_t kv = tensorSliceOf(a) == "heads"
                       ? headPart(a.getNumKvHeads(), T, 0).count
                       : a.getNumKvHeads();
      caches.push_back(KVCache{a.getLayer(), kv, a.getHeadDim(),
                               a.getValueHeadDim(), 0, type});
    } else if (auto m = dyn_cast<MLAAttentionOp>(op)) {
      caches.push_back(KVCache{m.getLayer(), 1,
                               m.getKvLoraRank() + m.getRopeDim(), 0,
                               m.getKvLoraRank(), type});
    }
  });
  return caches;
}

std::string mlir::moe::plan::checkKVPaging(const CompileOptions &options,
                                           int64_t maxSeqLen) {
  const int64_t B = options.maxBatch, ps = options.kvPageSize, n = options.kvPages;
  if (ps == 0 && n == 0)
    return "";
  const char *flag = n ? "--kv-pages" : "--kv-page-size";
  if (B <= 1)
    return llvm::formatv("{0}: only with --max-batch above 1 (expected a batched "
                         "plan; one sequence keeps one contiguous KV cache)",
                         flag)
        .str();
  if (ps < 0 || n < 0)
    return llvm::formatv("{0}: {1} (expected a positive count)", flag, n < 0 ? n : ps).str();
  if (ps > maxSeqLen)
    return llvm::formatv("--kv-page-size: {0} is longer than max_seq_len {1} "
                         "(expected 1..{1})",
                         ps, maxSeqLen).str();
  KVPaging paging = kvPaging(options, maxSeqLen);
  const int64_t perSeq = (maxSeqLen + paging.pageSize - 1) / paging.pageSize;
  // The runtime's page tables: max_batch x pages per sequence entries.
  constexpr int64_t kMaxPageTable = int64_t(1) << 24;
  if (ps && B * perSeq > kMaxPageTable)
    return llvm::formatv("--kv-page-size: {0} makes --max-batch={1} x {2} pages "
                         "per sequence (expected page tables of at most {3} "
                         "entries: a larger --kv-page-size)",
                         ps, B, perSeq, kMaxPageTable).str();
  if (n && n < perSeq)
    return llvm::formatv("--kv-pages: {0} pages of {1} positions hold fewer than "
                         "one sequence of max_seq_len {2} (expected at least {3} "
                         "pages: one full-length sequence must fit)",
                         n, paging.pageSize, maxSeqLen, perSeq).str();
  if (n && n > B * perSeq)
    return llvm::formatv("--kv-pages: {0} pages are more than --max-batch={1} "
                         "sequences of max_seq_len {2} can use (expected at most "
                         "{3} pages of {4} positions)",
                         n, B, maxSeqLen, B * perSeq, paging.pageSize).str();
  return "";
}

FailureOr<Storage> mlir::moe::plan::analyzeStorage(ModelOp model,
                                                   const CompileOptions &options) {
  Storage storage;
  int64_t maxPositions = model.getMaxPositionEmbeddings();
  storage.maxSeqLen = options.maxSeqLen > 0
                          ? options.maxSeqLen
                          : defaultMaxSeqLen(maxPositions);
  if (storage.maxSeqLen > maxPositions)
    return model.emitOpError() << "--max-seq-len=" << storage.maxSeqLen
                               << " exceeds the model's "
                               << "max_position_embeddings (" << maxPositions
                               << ")";
  storage.maxTokens = std::min<int64_t>(storage.maxSeqLen, 512);
  // A forward call holds one decode row of every sequence of the batch.
  storage.maxTokens = std::max<int64_t>(storage.maxTokens, options.maxBatch);
  if (failed(StorageAssigner(model, storage).run()))
    return failure();
  storage.arenaBytes = planArena(storage.buffers, storage.maxTokens,
                                 storage.unplannedBytes);
  // The KV pages of max_batch sequences (plan fields kv_page_size, kv_pages).
  if (std::string why = checkKVPaging(options, storage.maxSeqLen); !why.empty())
    return model.emitOpError() << why;
  int64_t kvPositions =
      kvPaging(options, storage.maxSeqLen).positions(storage.maxSeqLen);
  for (const KVCache &c : collectKVCaches(model))
    storage.kvCacheBytes +=
        uint64_t(c.bytesPerPosition()) * uint64_t(kvPositions);
  LLVM_DEBUG(llvm::dbgs() << "moe-plan-storage: " << storage.buffers.size()
                          << " buffers, arena " << storage.arenaBytes
                          << " bytes (without reuse " << storage.unplannedBytes
                          << ")\n");
  return storage;
}
