//===- Weights.cpp - The plan's weight table ------------------------------===//
//
// Every moe.param in declaration order (the plan numbers weights so), with
// the dtype it is held in at run time, the ranks that hold it (an
// expert-stacked weight's slice e lives on the ranks of expert e's copies; a
// weight any other op reads lives everywhere), its checkpoint source and whether moe-layer-streaming left it non-resident. Shared by
// the emitter, moe-plan-memory (peak bytes) and moe-layer-streaming.
//
//===----------------------------------------------------------------------===//

#include "moe/Plan/Program.h"

#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "llvm/ADT/DenseSet.h"

using namespace mlir;
using namespace mlir::moe;
using namespace mlir::moe::plan;

uint64_t mlir::moe::plan::Weight::bytes() const {
  if (format != 0) {
    // As stored: the quantized values and their scales, per [N, K] matrix.
    uint64_t mats = 1;
    for (size_t d = 0; d + 2 < shape.size(); ++d)
      mats *= uint64_t(shape[d]);
    uint64_t N = uint64_t(shape[shape.size() - 2]), K = uint64_t(shape.back());
    uint64_t scaleRows = (N + uint64_t(blockRows) - 1) / uint64_t(blockRows);
    uint64_t scaleCols = (K + uint64_t(blockCols) - 1) / uint64_t(blockCols);
    bool fp8 = format == int(WeightFormat::FP8E4M3Block);
    return mats * (fp8 ? N * K + scaleRows * scaleCols * 4 : N * K / 2 + scaleRows * scaleCols);
  }
  uint64_t n = uint64_t(elemSize(type));
  for (int64_t d : shape)
    n *= uint64_t(d);
  return n;
}

uint64_t mlir::moe::plan::Weight::bytesOnRank(int32_t rank) const {
  if (sliced || !onRank(rank))
    return 0;
  if (expertRanks.empty())
    return bytes();
  uint64_t slice = bytes() / uint64_t(expertRanks.size()) / uint64_t(expertParts),
           n = 0;
  for (const SmallVector<int32_t> &ranks : expertRanks)
    if (ranks.empty() || llvm::is_contained(ranks, rank))
      n += slice;
  return n;
}

std::vector<uint64_t>
mlir::moe::plan::Weight::bytesPerRank(int64_t numRanks) const {
  std::vector<uint64_t> out(size_t(std::max<int64_t>(numRanks, 0)), 0);
  if (sliced)
    return out;
  // What an expert with no rank list (every rank) adds to each rank.
  uint64_t everywhere = 0;
  if (expertRanks.empty()) {
    everywhere = bytes();
  } else {
    uint64_t slice =
        bytes() / uint64_t(expertRanks.size()) / uint64_t(expertParts);
    for (const SmallVector<int32_t> &list : expertRanks) {
      if (list.empty())
        everywhere += slice;
      for (auto [i, r] : llvm::enumerate(list))
        if (r >= 0 && r < numRanks &&
            !llvm::is_contained(ArrayRef(list).take_front(i), r))
          out[size_t(r)] += slice;
    }
  }
  // Only the ranks that hold the weight at all.
  std::vector<bool> holds(out.size(), ranks.empty());
  for (int32_t r : ranks)
    if (r >= 0 && r < numRanks)
      holds[size_t(r)] = true;
  for (size_t r = 0; r < out.size(); ++r)
    out[r] = holds[r] ? out[r] + everywhere : 0;
  return out;
}

/// The dtype a weight is held in at run time: matrices in the compute dtype
/// unless the checkpoint already stores a 16-bit type (converting bf16 <->
/// f16 would lose bits; bf16 and f16 weights are exact in f32 kernels);
/// vectors (norms, biases) in f32.
static ElemType memoryType(ElemType stored, int64_t rank, ComputeDType compute) {
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

int64_t mlir::moe::plan::getTensorParallel(ModelOp model) {
  IntegerAttr ways = getMoEDialect(model.getContext())
                         .getTensorParallelAttrHelper()
                         .getAttr(model);
  return ways ? ways.getInt() : 1;
}

int64_t mlir::moe::plan::getDataParallel(ModelOp model) {
  IntegerAttr groups = getMoEDialect(model.getContext())
                           .getDataParallelAttrHelper()
                           .getAttr(model);
  return groups ? groups.getInt() : 1;
}

int64_t mlir::moe::plan::getNumRanks(ModelOp model) {
  int64_t ranks = 1;
  for (auto grid : model.getBodyBlock().getOps<shard::GridOp>())
    for (int64_t d : grid.getShape())
      ranks *= d;
  return ranks;
}

HeadPart mlir::moe::plan::headPart(int64_t heads, int64_t T, int64_t g) {
  int64_t parts = std::min(heads, T), count = heads / parts;
  return {g * parts / T * count, count};
}

StringRef mlir::moe::plan::tensorSliceOf(Operation *op) {
  StringAttr kind =
      getMoEDialect(op->getContext()).getTensorSliceAttrHelper().getAttr(op);
  return kind ? kind.getValue() : StringRef();
}

/// Splits the weights of the ops moe-tensor-parallel marked into the parts
/// the members of a group read (appended after the params): rows of a
/// column-parallel projection's output features (per q/k/v head range), of
/// a row-parallel one's input features; a row-parallel bias stays whole on
/// member 0.
static LogicalResult addTensorParts(ModelOp model, std::vector<Weight> &weights,
                                    llvm::function_ref<int(Value)> weightOf) {
  int64_t T = getTensorParallel(model), ranks = getNumRanks(model);
  if (T == 1)
    return success();
  // Ranks of the members g with select(g).
  auto ranksOf = [&](llvm::function_ref<bool(int64_t)> select) {
    SmallVector<int32_t> list;
    for (int64_t r = 0; r < ranks; ++r)
      if (select(r % T))
        list.push_back(int32_t(r));
    return list;
  };
  // Splits `w` along `axis` in `parts` equal pieces of its span [offset,
  // offset + width); member g reads piece g * parts / T. Appends the member
  // list to the whole's tpParts.
  auto split = [&](int w, int axis, int64_t offset, int64_t width,
                   int64_t parts, StringRef label) {
    int64_t size = width / parts;
    for (int64_t p = 0; p < parts; ++p) {
      Weight part = weights[size_t(w)];
      part.name = weights[size_t(w)].name + " " + label.str() + "part " +
                  std::to_string(p) + "/" + std::to_string(parts);
      part.shape[size_t(axis)] = size;
      part.partOf = w;
      part.partAxis = axis;
      part.partOffset = offset + p * size;
      part.tpParts.clear();
      // A fused q/k/v weight is split once per third: the whole is already
      // marked sliced when k's and v's parts are made, and a part is held.
      part.sliced = false;
      part.ranks = ranksOf([&](int64_t g) { return g * parts / T == p; });
      if (int64_t(part.ranks.size()) == ranks)
        part.ranks.clear();
      weights.push_back(std::move(part));
    }
    int first = int(weights.size() - size_t(parts));
    for (int64_t g = 0; g < T; ++g)
      weights[size_t(w)].tpParts.push_back(first + int(g * parts / T));
    weights[size_t(w)].sliced = true;
  };
  auto memberZero = [&](Value bias) {
    if (bias)
      weights[size_t(weightOf(bias))].ranks =
          ranksOf([](int64_t g) { return g == 0; });
  };
  WalkResult walk = model.walk([&](Operation *op) -> WalkResult {
    StringRef kind = tensorSliceOf(op);
    if (auto l = dyn_cast<LinearOp>(op)) {
      if (kind.empty())
        return WalkResult::advance();
      int w = weightOf(l.getWeight());
      int b = l.getBias() ? weightOf(l.getBias()) : -1;
      bool tr = l.getTransposed();
      int64_t N = weights[size_t(w)].shape[tr ? 1 : 0];
      int64_t K = weights[size_t(w)].shape[tr ? 0 : 1];
      if (kind == "row") {
        split(w, tr ? 0 : 1, 0, K, T, "");
        memberZero(l.getBias());
        return WalkResult::advance();
      }
      int64_t hd = headWidthFed(l.getResult());
      if (!hd)
        return l.emitOpError("is column-parallel but feeds no moe.attention");
      // q/k/v side by side (fused) or one of them.
      int64_t thirds = kind == "column_qkv" ? 3 : 1, width = N / thirds;
      for (int64_t t = 0; t < thirds; ++t) {
        int64_t heads = width / hd;
        StringRef label = thirds == 1 ? "" : t == 0 ? "q " : t == 1 ? "k " : "v ";
        split(w, tr ? 1 : 0, t * width, width, std::min(heads, T), label);
        if (b >= 0)
          split(b, 0, t * width, width, std::min(heads, T), label);
      }
      return WalkResult::advance();
    }
    if (auto m = dyn_cast<MLAAttentionOp>(op); m && kind == "heads") {
      // kv_b's rows per head: [W_UK_h (nope) | W_UV_h (v)], heads in order.
      split(weightOf(m.getKvB()), 0, 0,
            m.getNumHeads() * (m.getNopeDim() + m.getVHeadDim()), T, "");
      return WalkResult::advance();
    }
    if (auto a = dyn_cast<AttentionOp>(op); a && kind == "heads") {
      // Sinks [heads]: member g's heads (heads divide by T).
      if (a.getSinks())
        split(weightOf(a.getSinks()), 0, 0, a.getNumHeads(), T, "");
      return WalkResult::advance();
    }
    if (kind == "vocab" && isa<EmbeddingOp, LMHeadOp>(op)) {
      // Table rows (the vocabulary); a tied table, used by both, once.
      auto h = dyn_cast<LMHeadOp>(op);
      Value table = h ? h.getWeight() : cast<EmbeddingOp>(op).getTable();
      int w = weightOf(table);
      if (!weights[size_t(w)].sliced)
        split(w, 0, 0, weights[size_t(w)].shape[0], T, "vocab ");
      if (h && h.getBias())
        split(weightOf(h.getBias()), 0, 0,
              weights[size_t(weightOf(h.getBias()))].shape[0], T, "vocab ");
      return WalkResult::advance();
    }
    if (auto m = dyn_cast<MLPOp>(op); m && kind == "ffn") {
      bool tr = m.getTransposed();
      int64_t I = m.getIntermediateSize();
      for (Value v : {m.getGate(), m.getUp()})
        if (v)
          split(weightOf(v), tr ? 1 : 0, 0, I, T, "");
      if (m.getUpBias())
        split(weightOf(m.getUpBias()), 0, 0, I, T, "");
      split(weightOf(m.getDown()), tr ? 0 : 1, 0, I, T, "");
      memberZero(m.getDownBias());
    }
    return WalkResult::advance();
  });
  return failure(walk.wasInterrupted());
}

FailureOr<std::vector<Weight>>
mlir::moe::plan::buildWeightTable(ModelOp model, ComputeDType dtype) {
  std::vector<Weight> weights;
  llvm::DenseMap<StringAttr, int> index;
  for (auto param : model.getBodyBlock().getOps<ParamOp>()) {
    RankedTensorType type = param.getTensorType();
    std::optional<ElemType> stored = toElemType(type.getElementType());
    if (!stored)
      return param.emitOpError("has an element type the runtime cannot load");
    Weight w;
    w.name = param.getName().str();
    w.storedType = *stored;
    w.type = memoryType(*stored, type.getRank(), dtype);
    w.shape.assign(type.getShape().begin(), type.getShape().end());
    w.init = param.getInit();
    if (auto std = param.getInitStd())
      w.initStd = std->convertToFloat();
    if (SourceAttr src = param.getSourceAttr()) {
      w.sourceTensor = src.getTensor().str();
      w.sourceOffset = src.getOffset();
      w.sourceStride = src.getStride();
      w.sourceTransposed = src.getTransposed();
    }
    if (QuantAttr quant = param.getQuantAttr()) {
      w.format = int(quant.getFormat());
      w.scaleTensor = quant.getScale().str();
      w.blockRows = quant.getBlock()[0];
      w.blockCols = quant.getBlock()[1];
      // Held as stored: the type only names the dequantized values.
      w.type = ElemType::F32;
    }
    index[param.getSymNameAttr()] = int(weights.size());
    weights.push_back(std::move(w));
  }
  auto weightOf = [&](Value v) {
    return index.lookup(
        v.getDefiningOp<WeightOp>().getParamAttr().getAttr());
  };

  // Quantized weights are dequantized inside the products only.
  WalkResult quantUses = model.walk([&](Operation *op) {
    for (OpOperand &use : op->getOpOperands()) {
      auto w = use.get().getDefiningOp<WeightOp>();
      if (!w || weights[weightOf(use.get())].format == 0)
        continue;
      Value v = use.get();
      bool product = false;
      if (auto lin = dyn_cast<LinearOp>(op))
        product = v == lin.getWeight();
      else if (auto mlp = dyn_cast<MLPOp>(op))
        product = v == mlp.getUp() || v == mlp.getGate() || v == mlp.getDown();
      else if (auto ex = dyn_cast<ExpertsOp>(op))
        product = v == ex.getUp() || v == ex.getGate() || v == ex.getDown();
      else if (auto mla = dyn_cast<MLAAttentionOp>(op))
        product = v == mla.getKvB(); // dequantized a row at a time
      if (!product) {
        op->emitOpError() << "reads the quantized parameter "
                          << w.getParamAttr() << " (expected quantized "
                          "parameters only as the matrices of moe.linear, "
                          "moe.mlp and moe.experts and moe.mla_attention's kv_b)";
        return WalkResult::interrupt();
      }
    }
    return WalkResult::advance();
  });
  if (quantUses.wasInterrupted())
    return failure();

  // Weights other ops read are on every rank; an expert-stacked weight's
  // slices on their expert's copies.
  llvm::DenseSet<int> shared;
  model.walk([&](Operation *op) {
    auto experts = dyn_cast<ExpertsOp>(op);
    if (!experts) {
      for (Value operand : op->getOperands())
        if (operand.getDefiningOp<WeightOp>())
          shared.insert(weightOf(operand));
      return;
    }
    PlacementAttr placement = experts.getPlacementAttr();
    bool onDemand = getMoEDialect(model.getContext())
                        .getOnDemandAttrHelper()
                        .isAttrPresent(experts);
    for (Value v : experts.getExpertWeights()) {
      Weight &w = weights[weightOf(v)];
      if (onDemand)
        w.streamed = true;
      w.expertRanks.assign(size_t(experts.getNumExperts()), {});
      if (!placement)
        continue;
      // Sliced experts: every part's rank holds its share of gate/up/down
      // (and the up bias); the down bias, which is not split, only part 0's.
      bool downBias = v == experts.getDownBias();
      w.expertParts = downBias ? 1 : placement.getSlices();
      SmallVector<int32_t> all;
      for (int64_t e = 0; e < experts.getNumExperts(); ++e) {
        SmallVector<int64_t> copies = placement.getCopies(e);
        if (downBias && placement.getSlices() > 1)
          copies.resize(1);
        for (int64_t rank : copies)
          w.expertRanks[size_t(e)].push_back(int32_t(rank));
        all.append(w.expertRanks[size_t(e)]);
      }
      llvm::sort(all);
      all.erase(std::unique(all.begin(), all.end()), all.end());
      w.ranks = all;
    }
  });
  // A weight both an expert op and another op read lives everywhere.
  for (int w : shared) {
    weights[w].ranks.clear();
    weights[w].expertRanks.clear();
  }

  if (failed(addTensorParts(model, weights, weightOf)))
    return failure();

  // A layer with moe.prefetch_distance streams its own weights (not its
  // experts': those stream on demand or stay resident): a tensor-parallel
  // rank its parts of the sliced ones.
  model.walk([&](LayerOp layer) {
    if (!getMoEDialect(model.getContext())
             .getPrefetchDistanceAttrHelper()
             .isAttrPresent(layer))
      return;
    SmallVector<int32_t> dense = layerDenseWeights(layer, weightOf);
    for (int w : dense)
      weights[w].streamed = true;
    for (int w : heldWeights(weights, dense))
      weights[w].streamed = true;
  });
  return weights;
}

SmallVector<int32_t> mlir::moe::plan::heldWeights(ArrayRef<Weight> weights,
                                                  ArrayRef<int32_t> list) {
  SmallVector<int32_t> held;
  for (int32_t w : list) {
    const Weight &weight = weights[size_t(w)];
    if (!weight.sliced) {
      if (!llvm::is_contained(held, w))
        held.push_back(w);
      continue;
    }
    for (int part : weight.tpParts)
      if (!llvm::is_contained(held, int32_t(part)))
        held.push_back(int32_t(part));
  }
  return held;
}

SmallVector<int32_t> mlir::moe::plan::layerDenseWeights(
    LayerOp layer, llvm::function_ref<int(Value)> weightOf) {
  llvm::DenseSet<Value> expertOperands;
  layer.walk([&](ExpertsOp e) {
    for (Value v : e->getOperands())
      expertOperands.insert(v);
  });
  SmallVector<int32_t> list;
  layer.walk([&](WeightOp w) {
    if (expertOperands.contains(w.getResult()))
      return;
    int index = weightOf(w.getResult());
    if (!llvm::is_contained(list, index))
      list.push_back(index);
  });
  return list;
}

std::vector<uint64_t>
mlir::moe::plan::weightBytesPerRank(ArrayRef<Weight> weights,
                                    int64_t numRanks) {
  std::vector<uint64_t> total(size_t(std::max<int64_t>(numRanks, 0)), 0);
  for (const Weight &w : weights) {
    std::vector<uint64_t> perRank = w.bytesPerRank(numRanks);
    for (size_t r = 0; r < total.size(); ++r)
      total[r] += perRank[r];
  }
  return total;
}

uint64_t mlir::moe::plan::weightBytesOnRank(ArrayRef<Weight> weights,
                                            int32_t rank) {
  uint64_t bytes = 0;
  for (const Weight &w : weights)
    bytes += w.bytesOnRank(rank);
  return bytes;
}
