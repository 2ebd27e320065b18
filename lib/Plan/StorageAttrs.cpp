//===- StorageAttrs.cpp - The storage analysis as IR attributes -----------===//
//
// moe-plan-memory records the storage analysis in the IR, and the emitter
// reads it back instead of recomputing it (the analysis runs once per
// compile, and what the plan will use is visible in --emit=mlir):
//  - the model's `moe.buffers`: the buffers (#moe.buffer: row shape, arena
//    offset, live range) and `moe.memory`: arena, KV cache and token sizes;
//  - each op's `moe.slices`: per result (buffer, first column, width);
//  - `moe.scratch` on an op that needs buffers besides its results' (the
//    hidden activations of moe.mlp).
// A layer's region argument lives where its input does and its result where
// its yielded value does, so neither is recorded.
//
//===----------------------------------------------------------------------===//

#include "moe/Plan/Program.h"

#include "mlir/IR/Builders.h"

using namespace mlir;
using namespace mlir::moe;
using namespace mlir::moe::plan;


void mlir::moe::plan::writeStorage(ModelOp model, const Storage &storage) {
  Builder b(model.getContext());
  MoEDialect &moe = getMoEDialect(model.getContext());
  auto slicesAttr = moe.getSlicesAttrHelper();
  auto scratchAttr = moe.getScratchAttrHelper();
  SmallVector<Attribute> buffers;
  for (const Buffer &buf : storage.buffers)
    buffers.push_back(BufferAttr::get(
        model.getContext(), buf.name, toMLIRType(model.getContext(), buf.type),
        buf.rowElems, buf.rowsPerToken, buf.fixedRows, int64_t(buf.offset),
        buf.firstStep, buf.lastStep));
  moe.getBuffersAttrHelper().setAttr(model, b.getArrayAttr(buffers));
  model.walk([&](Operation *op) {
    op->removeAttr(slicesAttr.getName());
    op->removeAttr(scratchAttr.getName());
    // (A data-parallel dispatch exchange has scratch but no result slice.)
    auto scratch = storage.scratch.find(op);
    if (scratch != storage.scratch.end())
      scratchAttr.setAttr(op, b.getDenseI64ArrayAttr(SmallVector<int64_t>(
                                  scratch->second.begin(),
                                  scratch->second.end())));
    if (op->getNumResults() == 0 || isa<LayerOp, WeightOp>(op))
      return;
    SmallVector<int64_t> triples;
    for (Value result : op->getResults()) {
      auto it = storage.slices.find(result);
      if (it == storage.slices.end())
        return;
      triples.append({it->second.buffer, it->second.col, it->second.width});
    }
    slicesAttr.setAttr(op, b.getDenseI64ArrayAttr(triples));
  });
  SmallVector<NamedAttribute> memory = {
      b.getNamedAttr("arena_bytes", b.getI64IntegerAttr(storage.arenaBytes)),
      b.getNamedAttr("unplanned_bytes",
                     b.getI64IntegerAttr(storage.unplannedBytes)),
      b.getNamedAttr("kv_cache_bytes", b.getI64IntegerAttr(storage.kvCacheBytes)),
      b.getNamedAttr("max_tokens", b.getI64IntegerAttr(storage.maxTokens)),
      b.getNamedAttr("max_seq_len", b.getI64IntegerAttr(storage.maxSeqLen))};
  moe.getMemoryAttrHelper().setAttr(model, b.getDictionaryAttr(memory));
}

FailureOr<Storage> mlir::moe::plan::readStorage(ModelOp model) {
  MoEDialect &moe = getMoEDialect(model.getContext());
  ArrayAttr buffers = moe.getBuffersAttrHelper().getAttr(model);
  DictionaryAttr memory = moe.getMemoryAttrHelper().getAttr(model);
  if (!buffers || !memory)
    return model.emitOpError("has no storage plan (moe.buffers, moe.memory): "
                             "run moe-plan-memory before lowering to a plan");
  Storage s;
  for (Attribute attr : buffers) {
    auto buf = dyn_cast<BufferAttr>(attr);
    std::optional<ElemType> type = buf ? toElemType(buf.getType()) : std::nullopt;
    if (!type)
      return model.emitOpError("moe.buffers must list #moe.buffer attributes");
    Buffer b;
    b.name = buf.getName().str();
    b.type = *type;
    b.rowElems = buf.getRowElems();
    b.rowsPerToken = buf.getRowsPerToken();
    b.fixedRows = buf.getFixedRows();
    b.offset = uint64_t(buf.getOffset());
    b.firstStep = buf.getFirst();
    b.lastStep = buf.getLast();
    s.buffers.push_back(std::move(b));
  }
  auto field = [&](StringRef name) -> int64_t {
    auto value = memory.getAs<IntegerAttr>(name);
    return value ? value.getInt() : 0;
  };
  s.arenaBytes = uint64_t(field("arena_bytes"));
  s.unplannedBytes = uint64_t(field("unplanned_bytes"));
  s.kvCacheBytes = uint64_t(field("kv_cache_bytes"));
  s.maxTokens = field("max_tokens");
  s.maxSeqLen = field("max_seq_len");

  auto inRange = [&](int64_t buffer) {
    return buffer >= 0 && buffer < int64_t(s.buffers.size());
  };
  WalkResult walk = model.walk<WalkOrder::PreOrder>([&](Operation *op) {
    if (auto layer = dyn_cast<LayerOp>(op)) {
      // Copied out first: inserting may grow the map and move the entry.
      auto it = s.slices.find(layer.getInput());
      if (it != s.slices.end()) {
        Slice input = it->second;
        s.slices[layer.getBodyBlock().getArgument(0)] = input;
      }
      return WalkResult::advance();
    }
    if (auto yield = dyn_cast<YieldOp>(op)) {
      auto layer = dyn_cast<LayerOp>(op->getParentOp());
      auto it = s.slices.find(yield.getValue());
      if (layer && it != s.slices.end()) {
        Slice result = it->second;
        s.slices[layer.getResult()] = result;
      }
      return WalkResult::advance();
    }
    if (auto triples = moe.getSlicesAttrHelper().getAttr(op)) {
      ArrayRef<int64_t> t = triples.asArrayRef();
      if (t.size() != 3 * op->getNumResults()) {
        op->emitOpError("moe.slices must hold (buffer, column, width) for "
                        "each of its ")
            << op->getNumResults() << " results";
        return WalkResult::interrupt();
      }
      for (auto [i, result] : llvm::enumerate(op->getResults())) {
        Slice slice{int(t[3 * i]), t[3 * i + 1], t[3 * i + 2]};
        if (!inRange(slice.buffer) || slice.col < 0 || slice.width < 1 ||
            slice.col + slice.width > s.buffers[slice.buffer].rowElems) {
          op->emitOpError("moe.slices of result ")
              << i << " is outside moe.buffers (buffer " << slice.buffer
              << ", columns " << slice.col << ".." << slice.col + slice.width
              << ")";
          return WalkResult::interrupt();
        }
        s.slices[result] = slice;
      }
    }
    if (auto scratch = moe.getScratchAttrHelper().getAttr(op)) {
      SmallVector<int> &list = s.scratch[op];
      for (int64_t b : scratch.asArrayRef()) {
        if (!inRange(b)) {
          op->emitOpError("moe.scratch buffer ")
              << b << " is outside moe.buffers";
          return WalkResult::interrupt();
        }
        list.push_back(int(b));
      }
    }
    return WalkResult::advance();
  });
  if (walk.wasInterrupted())
    return failure();
  return s;
}

FailureOr<uint64_t> mlir::moe::plan::recordedActivationBytes(ModelOp model) {
  DictionaryAttr memory =
      getMoEDialect(model.getContext()).getMemoryAttrHelper().getAttr(model);
  auto arena = memory ? memory.getAs<IntegerAttr>("arena_bytes") : nullptr;
  auto kv = memory ? memory.getAs<IntegerAttr>("kv_cache_bytes") : nullptr;
  if (!arena || !kv)
    return model.emitOpError("has no moe.memory: run moe-plan-memory first");
  return uint64_t(arena.getInt()) + uint64_t(kv.getInt());
}
