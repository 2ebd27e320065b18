//===- CostModel.cpp - parameters, FLOPs and bytes of a model -------------===//

#include "moe/Analysis/CostModel.h"
#include "moe/Compiler/Options.h"
#include "moe/Dialect/AttentionFeed.h"

#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/SetVector.h"
#include "llvm/Support/FormatVariadic.h"

using namespace mlir;
using namespace mlir::moe;

namespace {

/// How the graph uses one parameter.
struct ParamUse {
  bool dense = false;    // read whole by some op
  bool lookup = false;   // rows gathered by moe.embedding
  bool expert = false;   // a routed expert's weight
  bool unplaced = false; // an expert weight of experts without a placement
  int64_t layer = -1;    // layer of the first use, -1 outside layers
  bool seen = false;
};

int64_t enclosingLayer(Operation *op) {
  if (auto layer = op->getParentOfType<LayerOp>())
    return layer.getIndex();
  return -1;
}

std::string dtypeName(Type t) {
  if (t.isF32())
    return "f32";
  if (t.isBF16())
    return "bf16";
  if (t.isF16())
    return "f16";
  std::string s;
  llvm::raw_string_ostream os(s);
  os << t;
  return s;
}

int64_t elementBytes(Type t) { return (t.getIntOrFloatBitWidth() + 7) / 8; }

/// Bytes a parameter holds as the checkpoint stores it: a quantized matrix
/// (#moe.quant) its values (FP8 one byte, MXFP4 half a byte each) and its
/// block scales (f32, or one e8m0 byte), per [N, K] matrix; else its
/// elements at their element type's size.
int64_t storedBytes(RankedTensorType type, QuantAttr quant) {
  int64_t n = satNumElements(type);
  if (!quant || type.getRank() < 2)
    return satMul(n, elementBytes(type.getElementType()));
  ArrayRef<int64_t> shape = type.getShape();
  int64_t N = shape[shape.size() - 2], K = shape.back();
  int64_t matrices = N * K > 0 ? n / (N * K) : 0;
  ArrayRef<int64_t> block = quant.getBlock();
  int64_t scales = satMul(matrices, satMul(llvm::divideCeil(N, block[0]),
                                           llvm::divideCeil(K, block[1])));
  if (quant.getFormat() == WeightFormat::MXFP4)
    return satAdd(n / 2, scales);
  return satAdd(n, satMul(scales, 4));
}

/// A weight value's parameter's quantization, if any.
QuantAttr quantOf(Operation *from, Value weight) {
  auto w = weight ? weight.getDefiningOp<WeightOp>() : WeightOp();
  auto param = w ? SymbolTable::lookupNearestSymbolFrom<ParamOp>(
                       from, w.getParamAttr())
                 : ParamOp();
  return param ? param.getQuantAttr() : QuantAttr();
}

/// "26.69B", "50.36M", "124.67K", "512".
std::string shortCount(double n) {
  static constexpr std::pair<double, const char *> scales[] = {
      {1e12, "T"}, {1e9, "B"}, {1e6, "M"}, {1e3, "K"}};
  for (auto [scale, suffix] : scales)
    if (n >= scale)
      return llvm::formatv("{0:f2}{1}", n / scale, suffix).str();
  return std::to_string(int64_t(n));
}

/// 26688454656 -> "26,688,454,656".
std::string grouped(int64_t n) {
  std::string digits = std::to_string(n < 0 ? -n : n), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i && (digits.size() - i) % 3 == 0)
      out += ',';
    out += digits[i];
  }
  return n < 0 ? "-" + out : out;
}

/// "0", "1-3": ranks [first, last].
std::string rankRange(int64_t first, int64_t last) {
  return first == last ? std::to_string(first)
                       : std::to_string(first) + "-" + std::to_string(last);
}

std::string bytesOrDash(int64_t bytes) {
  return bytes < 0 ? "-" : formatBytes(uint64_t(bytes));
}

/// Per-rank parameters and memory (consecutive ranks that hold the same
/// amounts share a row), experts per rank of every MoE layer, streaming.
void printRanks(llvm::raw_ostream &os, const ModelCost &cost) {
  os << "ranks: " << cost.numRanks;
  if (!cost.gridShape.empty()) {
    os << " (device grid ";
    llvm::interleave(cost.gridShape, os, "x");
    os << ")";
  }
  if (cost.tensorParallel > 1)
    os << ", tensor-parallel groups of " << cost.tensorParallel;
  if (cost.dataParallel > 1)
    os << ", " << cost.dataParallel << " data-parallel groups";
  os << (cost.hasMemoryPlan
             ? ", memory planned by moe-plan-memory (peak = weights + "
               "activations + KV cache)\n"
             : ", memory not planned (run moe-plan-memory)\n");
  const char *row = "{0,11}  {1,9}  {2,11}  {3,11}  {4,11}  {5,11}\n";
  os << llvm::formatv(row, "rank", "params", "weights", "activations",
                      "KV cache", "peak");
  auto same = [](const RankCost &a, const RankCost &b) {
    return a.params == b.params && a.weightBytes == b.weightBytes &&
           a.activationBytes == b.activationBytes &&
           a.kvCacheBytes == b.kvCacheBytes && a.peakBytes == b.peakBytes;
  };
  for (size_t first = 0; first < cost.ranks.size();) {
    size_t last = first;
    while (last + 1 < cost.ranks.size() &&
           same(cost.ranks[first], cost.ranks[last + 1]))
      ++last;
    const RankCost &rc = cost.ranks[first];
    os << llvm::formatv(
        row, rankRange(first, last), shortCount(rc.params),
        bytesOrDash(rc.weightBytes), bytesOrDash(rc.activationBytes),
        bytesOrDash(rc.kvCacheBytes), bytesOrDash(rc.peakBytes));
    first = last + 1;
  }
  if (cost.streaming)
    os << "weight streaming: budget " << formatBytes(cost.streamingBudgetBytes)
       << " per rank, " << formatBytes(cost.streamedWeightBytes)
       << " of weights streamed, working set "
       << formatBytes(cost.streamingPeakBytes)
       << " on the busiest rank (peak_bytes: the least a rank holds at once, "
          "resident weights + activations + KV cache + streaming buffers; the "
          "table's peak is without streaming; moe-run caches streamed weights "
          "up to the budget and reports its peak as peak_resident_bytes)\n";

  if (!cost.numMoELayers)
    return;
  // One column per rank while that stays readable, else the spread.
  constexpr int64_t kMaxColumns = 16;
  bool columns = cost.numRanks <= kMaxColumns;
  // Sliced experts are counted in parts, so the heading must say what a unit
  // is: "1" would otherwise read as a whole expert per rank.
  llvm::SmallSetVector<int64_t, 2> slices;
  for (const LayerCost &lc : cost.layers)
    if (lc.moe)
      slices.insert(lc.expertSlices);
  if (slices.size() == 1 && slices[0] == 1)
    os << "experts per rank";
  else if (slices.size() == 1)
    os << "expert slices per rank (a slice is 1/" << slices[0]
       << " of an expert's intermediate size)";
  else
    os << "experts or expert slices per rank (expert_slices per layer in "
          "--report)";
  if (columns) {
    os << ":\n" << llvm::formatv("{0,5}", "layer");
    for (int64_t r = 0; r < cost.numRanks; ++r)
      os << llvm::formatv(" {0,5}", "r" + std::to_string(r));
  } else {
    os << " (" << cost.numRanks << " ranks):\n"
       << llvm::formatv("{0,5}  {1,5}  {2,5}", "layer", "min", "max");
  }
  os << "\n";
  for (const LayerCost &lc : cost.layers) {
    if (!lc.moe)
      continue;
    os << llvm::formatv("{0,5}", lc.index);
    if (columns) {
      for (int64_t n : lc.expertsPerRank)
        os << llvm::formatv(" {0,5}", n);
    } else {
      auto [lo, hi] = std::minmax_element(lc.expertsPerRank.begin(),
                                          lc.expertsPerRank.end());
      os << llvm::formatv("  {0,5}  {1,5}", *lo, *hi);
    }
    os << (lc.expertRanks.empty() ? "   (not placed: every rank holds all)"
                                  : "")
       << "\n";
  }
}

} // namespace

ModelCost mlir::moe::analyzeModel(ModelOp model, int64_t contextLength) {
  ModelCost cost;
  cost.name = model.getSymName().str();
  cost.architecture = model.getArchitecture().str();
  cost.vocabSize = model.getVocabSize();
  cost.hiddenSize = model.getHiddenSize();
  cost.numLayers = model.getNumLayers();
  cost.contextLength =
      contextLength > 0 ? contextLength : model.getMaxPositionEmbeddings();
  cost.layers.resize(cost.numLayers);
  for (int64_t i = 0; i < cost.numLayers; ++i)
    cost.layers[i].index = i;
  auto layerCost = [&](int64_t index) -> LayerCost * {
    return index >= 0 && index < cost.numLayers ? &cost.layers[index] : nullptr;
  };
  const int64_t kvElementBytes = elementBytes(model.getKvCacheElementType());
  cost.kvCacheDtype = dtypeName(model.getKvCacheElementType());

  for (auto grid : model.getBodyBlock().getOps<shard::GridOp>()) {
    cost.gridShape.assign(grid.getShape().begin(), grid.getShape().end());
    int64_t size = 1;
    for (int64_t d : cost.gridShape)
      size = satMul(size, std::max<int64_t>(d, 1));
    cost.numRanks = size;
  }
  MoEDialect &moe = getMoEDialect(model.getContext());
  if (IntegerAttr ways = moe.getTensorParallelAttrHelper().getAttr(model))
    cost.tensorParallel = ways.getInt();
  if (IntegerAttr groups = moe.getDataParallelAttrHelper().getAttr(model))
    cost.dataParallel = groups.getInt();

  GraphOp graph = model.getGraph();
  llvm::DenseMap<StringAttr, ParamUse> uses;
  // Tensor parallelism: the share of a sliced weight one member reads, as
  // the plan splits it (1/T; a k or v projection with fewer kv heads than T
  // in min(kv heads, T) parts; row-parallel and down biases stay whole).
  llvm::DenseMap<StringAttr, double> tpShare;
  auto shareOf = [&](Value w, double share) {
    if (auto weight = w ? w.getDefiningOp<WeightOp>() : WeightOp())
      tpShare[weight.getParamAttr().getAttr()] = share;
  };
  // The biases that stay whole on member 0 of each group (row-parallel
  // projections', an FFN's down bias): the plan puts them on no other rank.
  llvm::DenseSet<StringAttr> onMemberZero;
  auto memberZero = [&](Value bias) {
    if (auto weight = bias ? bias.getDefiningOp<WeightOp>() : WeightOp())
      onMemberZero.insert(weight.getParamAttr().getAttr());
  };
  // Ranks that hold a placed expert's weight.
  llvm::DenseMap<StringAttr, SmallVector<int64_t>> placedOn;
  // Parts each expert of a placed weight is sliced in (#moe.placement slices).
  llvm::DenseMap<StringAttr, int64_t> partsOf;
  graph.walk<WalkOrder::PreOrder>([&](Operation *op) {
    cost.opCounts[op->getName().getStringRef().str()]++;

    if (auto weight = dyn_cast<WeightOp>(op)) {
      ParamUse &use = uses[weight.getParamAttr().getAttr()];
      if (!use.seen) {
        use.seen = true;
        use.layer = enclosingLayer(op);
      }
      for (OpOperand &operand : weight.getResult().getUses()) {
        Operation *user = operand.getOwner();
        if (isa<ExpertsOp>(user) && operand.getOperandNumber() >= 2) {
          use.expert = true;
          use.unplaced |= !cast<ExpertsOp>(user).getExpertPlacement();
        } else if (auto emb = dyn_cast<EmbeddingOp>(user);
                   emb && operand.get() == emb.getTable()) {
          use.lookup = true;
        } else {
          use.dense = true;
        }
      }
    }

    if (auto experts = dyn_cast<ExpertsOp>(op)) {
      int64_t numExperts = experts.getNumExperts();
      int64_t active = std::min(experts.getTopK(), numExperts);
      // Stacked weights: one expert is a 1/E slice of each.
      int64_t bytesPerExpert = 0;
      for (Value weight : experts.getExpertWeights()) {
        auto type = cast<RankedTensorType>(weight.getType());
        bytesPerExpert =
            satAdd(bytesPerExpert, storedBytes(type, quantOf(op, weight)) /
                                       type.getDimSize(0));
      }
      int64_t activeParams = satMul(active, experts.getParamsPerExpert());
      cost.activeParams = satAdd(cost.activeParams, activeParams);
      cost.paramsReadPerToken = satAdd(cost.paramsReadPerToken, activeParams);
      cost.bytesReadPerToken =
          satAdd(cost.bytesReadPerToken, satMul(active, bytesPerExpert));
      if (cast<RankedTensorType>(experts.getUp().getType())
              .getElementType()
              .isF32() &&
          !quantOf(op, experts.getUp()))
        cost.f32BytesReadPerToken = satAdd(cost.f32BytesReadPerToken,
                                           satMul(active, bytesPerExpert));
      PlacementAttr placement = experts.getExpertPlacement();
      if (placement) {
        cost.numRanks = std::max(cost.numRanks, placement.getNumRanks());
        // A sliced expert's down bias is not split: part 0's rank holds it
        // (as the plan's weights do).
        for (int64_t e = 0; e < placement.getNumExperts(); ++e)
          for (auto [part, rank] : llvm::enumerate(placement.getCopies(e)))
            for (Value w : experts.getExpertWeights())
              if (auto weight = w.getDefiningOp<WeightOp>()) {
                bool whole = w == experts.getDownBias();
                if (whole && part > 0 && placement.getSlices() > 1)
                  continue;
                placedOn[weight.getParamAttr().getAttr()].push_back(rank);
                partsOf[weight.getParamAttr().getAttr()] =
                    whole ? 1 : placement.getSlices();
              }
      }
      if (LayerCost *lc = layerCost(enclosingLayer(op))) {
        lc->moe = true;
        lc->numExperts = numExperts;
        lc->topK = experts.getTopK();
        lc->activeParams = satAdd(lc->activeParams, activeParams);
        if (placement) {
          lc->expertRanks.assign(placement.getExpertRanks().begin(),
                                 placement.getExpertRanks().end());
          lc->expertSlices = placement.getSlices();
          for (size_t i = 1; i < placement.getReplicas().size(); i += 2)
            lc->replicaRanks.push_back(placement.getReplicas()[i]);
        }
      }
    }

    // A tensor-parallel member caches only its kv heads (kv heads fewer
    // than T: one, replicated).
    if (auto attention = dyn_cast<AttentionOp>(op)) {
      int64_t kv = attention.getNumKvHeads();
      if (moe.getTensorSliceAttrHelper().isAttrPresent(op))
        kv = kv >= cost.tensorParallel ? kv / cost.tensorParallel : 1;
      cost.kvBytesPerPosition =
          satAdd(cost.kvBytesPerPosition,
                 satMul(kvElementBytes,
                        satMul(kv, attention.getHeadDim() +
                                       attention.getValueHeadDim())));
    }
    // MLA caches one latent row per position: c_kv then the shared k_pe.
    if (auto mla = dyn_cast<MLAAttentionOp>(op))
      cost.kvBytesPerPosition =
          satAdd(cost.kvBytesPerPosition,
                 satMul(kvElementBytes,
                        mla.getKvLoraRank() + mla.getRopeDim()));

    // What a tensor-parallel member of a sliced op reads and computes.
    if (StringAttr kind = moe.getTensorSliceAttrHelper().getAttr(op);
        kind && cost.tensorParallel > 1) {
      double T = double(cost.tensorParallel), share = 1 / T;
      if (auto linear = dyn_cast<LinearOp>(op);
          linear && kind.getValue() != "row") {
        // Column-parallel q/k/v (a fused projection per third): heads in
        // min(heads, T) parts.
        AttentionOp a = attentionFed(linear.getResult());
        auto type = cast<RankedTensorType>(linear.getWeight().getType());
        int64_t thirds = kind.getValue() == "column_qkv" ? 3 : 1;
        int64_t n = type.getDimSize(linear.getTransposed() ? 1 : 0);
        if (a && a.getHeadDim() > 0 && n % thirds == 0) {
          share = 0;
          for (int64_t t = 0; t < thirds; ++t)
            share += 1 / std::min(double(n / thirds / a.getHeadDim()), T);
          share /= double(thirds);
        }
        shareOf(linear.getWeight(), share);
        shareOf(linear.getBias(), share);
      } else if (auto linear = dyn_cast<LinearOp>(op)) {
        shareOf(linear.getWeight(), share);
        memberZero(linear.getBias());
      } else if (auto mlp = dyn_cast<MLPOp>(op)) {
        for (Value w : {mlp.getGate(), mlp.getUp(), mlp.getUpBias(),
                        mlp.getDown()})
          shareOf(w, share);
        memberZero(mlp.getDownBias());
      } else if (auto mla = dyn_cast<MLAAttentionOp>(op)) {
        shareOf(mla.getKvB(), share); // its heads' rows
      } else if (auto a = dyn_cast<AttentionOp>(op)) {
        shareOf(a.getSinks(), share); // gpt-oss: its heads' sinks
      } else if (auto e = dyn_cast<EmbeddingOp>(op)) {
        shareOf(e.getTable(), share); // its vocabulary rows
      } else if (auto h = dyn_cast<LMHeadOp>(op)) {
        shareOf(h.getWeight(), share);
        shareOf(h.getBias(), share);
      }
      if (auto costOp = dyn_cast<CostOpInterface>(op)) {
        int64_t saved = int64_t(
            double(costOp.getFlopsPerToken(cost.contextLength)) * (1 - share));
        int64_t &total = isa<AttentionOp, MLAAttentionOp>(op)
                             ? cost.tpSavedAttentionFlopsPerToken
                             : cost.tpSavedFlopsPerToken;
        total = satAdd(total, saved);
      }
    }

    // A row-parallel projection (o_proj, an FFN's down projection) and a
    // vocabulary-parallel embedding are followed by an all-reduce of their
    // [tokens, hidden] f32 output over the T consecutive ranks of their
    // group, as the runtime runs every AllReduceSum: reduce-scatter +
    // all-gather, 2(T-1) messages of 1/T of the data; a vocabulary-parallel
    // LM head by an all-gather of its logits (T-1 messages of V/T f32 each).
    // Within a node when the group fits in one.
    if (StringAttr kind = moe.getTensorSliceAttrHelper().getAttr(op);
        kind &&
        llvm::is_contained({"row", "ffn", "vocab"}, kind.getValue()) &&
        cost.tensorParallel > 1) {
      int64_t T = cost.tensorParallel;
      int64_t width =
          cast<RankedTensorType>(op->getResult(0).getType()).getDimSize(1);
      int64_t perNode = cost.gridShape.empty() ? cost.numRanks
                                               : cost.gridShape.back();
      bool crossesNodes = perNode % T != 0;
      bool gather = isa<LMHeadOp>(op);
      int64_t sent = gather ? satMul(width / T, 4) * (T - 1)
                            : satMul(satMul(width, 4), 2 * (T - 1)) / T;
      (crossesNodes ? cost.commBytesInterNode : cost.commBytesIntraNode) +=
          sent;
      (crossesNodes ? cost.commMessagesInterNode
                    : cost.commMessagesIntraNode) +=
          gather ? T - 1 : 2 * (T - 1);
    }

    // Data-parallel groups: one AllToAllV pair per MoE layer (counted at
    // the first dispatch stage; two stages when moe-comm-hierarchy split it
    // over nodes). Every group decodes one token: its top_k slots (each to
    // every part of a sliced expert) go to their experts' ranks, a row of
    // hidden f32 and its expert id each, and the outputs come back; a slot
    // stays on its rank with probability 1/N (routing spread evenly). Per
    // rank that is 1/T of a group's slots; the dispatch's counts are one
    // int per peer, and with T > 1 the group's all-reduce of the
    // [top_k, hidden] slot outputs adds 2(T-1)/T of them.
    if (auto exchange = dyn_cast<AllToAllOp>(op);
        exchange && cost.dataParallel > 1 &&
        exchange.getKind() == ExchangeKind::Dispatch &&
        exchange.getInput().getDefiningOp<DispatchOp>()) {
      auto layer = exchange->getParentOfType<LayerOp>();
      ExpertsOp experts = layer ? layer.getExpertsOp() : ExpertsOp();
      int64_t topK = experts ? experts.getTopK() : 1;
      PlacementAttr placement = exchange.getPlacement();
      int64_t S = placement ? placement.getSlices() : 1;
      int64_t width =
          cast<RankedTensorType>(exchange.getInput().getType()).getDimSize(1);
      int64_t N = cost.numRanks, T = cost.tensorParallel;
      int64_t perNode = cost.gridShape.empty() ? N : cost.gridShape.back();
      double slots = double(topK * S) / double(T);
      double rowBytes = double(2 * width * 4 + 4); // there and back, + id
      bool hierarchical = exchange.getGridAxes().size() == 1 && perNode > 1 &&
                          perNode < N;
      if (hierarchical) {
        // Within the node to the relay of the destination's local index
        // (with the destination node's id too), then across nodes.
        int64_t P = perNode, M = N / P;
        double intra = slots * double(rowBytes + 4) * double(P - 1) / double(P) +
                       double(4 * (P - 1));
        double inter =
            slots * rowBytes * double(M - 1) / double(M) + double(4 * (M - 1));
        cost.commBytesIntraNode += int64_t(intra);
        cost.commBytesInterNode += int64_t(inter);
        cost.commMessagesIntraNode += 4 * (P - 1);
        cost.commMessagesInterNode += 4 * (M - 1);
      } else {
        double off = double(N - 1) / double(N);
        double interShare =
            N > perNode ? double(N - perNode) / double(N - 1) : 0;
        double bytes = slots * rowBytes * off + double(4 * (N - 1));
        int64_t inter = int64_t(bytes * interShare);
        cost.commBytesInterNode += inter;
        cost.commBytesIntraNode += int64_t(bytes) - inter;
        // Counts, rows and ids to every peer, the outputs back.
        int64_t messages = 4 * (N - 1);
        int64_t interMessages = N > perNode ? 4 * (N - perNode) : 0;
        cost.commMessagesInterNode += interMessages;
        cost.commMessagesIntraNode += messages - interMessages;
      }
      if (T > 1) {
        cost.commBytesIntraNode +=
            satMul(satMul(topK, width), 4) * 2 * (T - 1) / T;
        cost.commMessagesIntraNode += 2 * (T - 1);
      }
    }

    // A combine exchange runs as a ring all-reduce of the [tokens * top_k,
    // hidden] f32 slot outputs over the ranks its grid axes span: 2(g-1)
    // messages of 1/g of the data each.
    if (auto exchange = dyn_cast<AllToAllOp>(op);
        exchange && exchange.getKind() == ExchangeKind::Combine &&
        cost.dataParallel <= 1 && !cost.gridShape.empty()) {
      auto layer = exchange->getParentOfType<LayerOp>();
      ExpertsOp experts = layer ? layer.getExpertsOp() : ExpertsOp();
      int64_t topK = experts ? experts.getTopK() : 1;
      int64_t width =
          cast<RankedTensorType>(exchange.getInput().getType()).getDimSize(1);
      int64_t group = 1;
      bool crossesNodes = false;
      for (int16_t axis : exchange.getGridAxes())
        if (axis >= 0 && axis < int16_t(cost.gridShape.size())) {
          group = satMul(group, cost.gridShape[axis]);
          crossesNodes |= axis + 1 < int16_t(cost.gridShape.size()) &&
                          cost.gridShape[axis] > 1;
        }
      if (group > 1) {
        int64_t bytes = satMul(satMul(topK, width), 4);
        int64_t sent = satMul(bytes, 2 * (group - 1)) / group;
        (crossesNodes ? cost.commBytesInterNode : cost.commBytesIntraNode) +=
            sent;
        (crossesNodes ? cost.commMessagesInterNode
                      : cost.commMessagesIntraNode) += 2 * (group - 1);
      }
    }

    if (auto costOp = dyn_cast<CostOpInterface>(op)) {
      int64_t flops = costOp.getFlopsPerToken(cost.contextLength);
      LayerCost *lc = layerCost(enclosingLayer(op));
      bool attention = isa<AttentionOp, MLAAttentionOp>(op);
      int64_t &total =
          attention ? cost.attentionFlopsPerToken : cost.flopsPerToken;
      total = satAdd(total, flops);
      if (lc) {
        int64_t &layer =
            attention ? lc->attentionFlopsPerToken : lc->flopsPerToken;
        layer = satAdd(layer, flops);
      }
    }
  });

  // The device grid caps the ranks a report lists (moe-compile allows 2^16).
  constexpr int64_t kMaxRanks = int64_t(1) << 16;
  cost.numRanks = std::min(cost.numRanks, kMaxRanks);
  cost.ranks.resize(cost.numRanks);
  for (auto [r, rank] : llvm::enumerate(cost.ranks))
    rank.rank = int64_t(r);
  int64_t everywhere = 0; // parameters every rank holds

  for (ParamOp param : model.getBodyBlock().getOps<ParamOp>()) {
    RankedTensorType type = param.getTensorType();
    int64_t n = satNumElements(type);
    ParamUse use = uses.lookup(param.getSymNameAttr());
    // Placed expert weights live on their experts' ranks, the rest
    // everywhere.
    auto placed = placedOn.find(param.getSymNameAttr());
    if (use.expert && !use.dense && !use.lookup && !use.unplaced &&
        placed != placedOn.end()) {
      // One entry per (expert, copy): that rank holds the expert's slice,
      // or per (expert, part) of a sliced expert: a part of it.
      int64_t slice = n / type.getDimSize(0) /
                      std::max<int64_t>(partsOf.lookup(param.getSymNameAttr()), 1);
      for (int64_t r : placed->second)
        if (r >= 0 && r < cost.numRanks)
          cost.ranks[r].params = satAdd(cost.ranks[r].params, slice);
    } else if (auto share = tpShare.find(param.getSymNameAttr());
               share != tpShare.end()) {
      // Every member of a tensor-parallel group holds its part.
      everywhere = satAdd(everywhere, std::llround(double(n) * share->second));
    } else if (onMemberZero.contains(param.getSymNameAttr())) {
      for (RankCost &rank : cost.ranks)
        if (rank.rank % cost.tensorParallel == 0)
          rank.params = satAdd(rank.params, n);
    } else {
      everywhere = satAdd(everywhere, n);
    }
    int64_t elemBytes = elementBytes(type.getElementType());
    QuantAttr quant = param.getQuantAttr();
    int64_t bytes = storedBytes(type, quant);
    cost.totalParams = satAdd(cost.totalParams, n);
    cost.totalBytes = satAdd(cost.totalBytes, bytes);
    int64_t &byDType =
        cost.bytesByDType[quant ? stringifyWeightFormat(quant.getFormat()).str()
                                : dtypeName(type.getElementType())];
    byDType = satAdd(byDType, bytes);
    LayerCost *lc = layerCost(use.layer);
    int64_t &owner = lc ? lc->params : cost.nonLayerParams;
    owner = satAdd(owner, n);
    if (!use.seen || (use.expert && !use.dense && !use.lookup))
      continue; // unused, or counted per experts op above
    cost.activeParams = satAdd(cost.activeParams, n);
    if (lc)
      lc->activeParams = satAdd(lc->activeParams, n);
    // A table that is only looked up is read one row per token.
    int64_t read = use.lookup && !use.dense ? n / type.getDimSize(0) : n;
    cost.paramsReadPerToken = satAdd(cost.paramsReadPerToken, read);
    // Quantized matrices are read whole (never looked up).
    int64_t readBytes = read == n ? bytes : satMul(read, elemBytes);
    cost.bytesReadPerToken = satAdd(cost.bytesReadPerToken, readBytes);
    if (type.getElementType().isF32() && !quant)
      cost.f32BytesReadPerToken =
          satAdd(cost.f32BytesReadPerToken, readBytes);
    if (auto share = tpShare.find(param.getSymNameAttr());
        share != tpShare.end()) {
      int64_t saved = int64_t(double(readBytes) * (1 - share->second));
      cost.tpSavedBytesPerToken = satAdd(cost.tpSavedBytesPerToken, saved);
      if (type.getElementType().isF32() && !quant)
        cost.tpSavedF32BytesPerToken =
            satAdd(cost.tpSavedF32BytesPerToken, saved);
    }
  }
  for (RankCost &rank : cost.ranks)
    rank.params = satAdd(rank.params, everywhere);
  for (LayerCost &lc : cost.layers) {
    cost.numMoELayers += lc.moe;
    if (!lc.moe)
      continue;
    if (lc.expertRanks.empty()) {
      lc.expertsPerRank.assign(cost.numRanks, lc.numExperts);
      continue;
    }
    lc.expertsPerRank.assign(cost.numRanks, 0);
    for (int64_t r : llvm::concat<int64_t>(lc.expertRanks, lc.replicaRanks))
      if (r >= 0 && r < cost.numRanks)
        ++lc.expertsPerRank[r];
  }

  // What moe-plan-memory planned: the same activation arena and KV cache on
  // every rank, weights by placement.
  DictionaryAttr memory = moe.getMemoryAttrHelper().getAttr(model);
  DenseI64ArrayAttr peaks = moe.getPeakBytesAttrHelper().getAttr(model);
  if (memory && peaks && int64_t(peaks.size()) == cost.numRanks) {
    auto field = [&](StringRef name) -> int64_t {
      auto value = memory.getAs<IntegerAttr>(name);
      return value ? value.getInt() : 0;
    };
    int64_t arena = field("arena_bytes"), kv = field("kv_cache_bytes");
    cost.hasMemoryPlan = true;
    for (auto [rank, peak] : llvm::zip(cost.ranks, peaks.asArrayRef())) {
      rank.activationBytes = arena;
      rank.kvCacheBytes = kv;
      rank.peakBytes = peak;
      rank.weightBytes = std::max<int64_t>(0, peak - arena - kv);
    }
  }
  if (DictionaryAttr streaming = moe.getStreamingAttrHelper().getAttr(model)) {
    auto field = [&](StringRef name) -> int64_t {
      auto value = streaming.getAs<IntegerAttr>(name);
      return value ? value.getInt() : 0;
    };
    cost.streaming = true;
    cost.streamingBudgetBytes = field("budget_bytes");
    cost.streamedWeightBytes = field("streamed_weight_bytes");
    cost.streamingPeakBytes = field("peak_bytes");
  }
  return cost;
}

llvm::json::Value mlir::moe::toJSON(const ModelCost &cost) {
  llvm::json::Array layers;
  for (const LayerCost &lc : cost.layers) {
    llvm::json::Object layer{{"layer", lc.index},
                             {"kind", lc.moe ? "moe" : "dense"},
                             {"params", lc.params},
                             {"active_params", lc.activeParams},
                             {"flops_per_token", lc.flopsPerToken},
                             {"attention_flops_per_token",
                              lc.attentionFlopsPerToken}};
    if (lc.moe) {
      layer["num_experts"] = lc.numExperts;
      layer["top_k"] = lc.topK;
      layer["experts_per_rank"] = llvm::json::Array(lc.expertsPerRank);
      if (!lc.expertRanks.empty())
        layer["placement"] = llvm::json::Array(lc.expertRanks);
      if (lc.expertSlices > 1)
        layer["expert_slices"] = lc.expertSlices;
    }
    layers.push_back(std::move(layer));
  }
  llvm::json::Array ranks;
  for (const RankCost &rc : cost.ranks) {
    llvm::json::Object rank{{"rank", rc.rank}, {"params", rc.params}};
    if (cost.hasMemoryPlan) {
      rank["weight_bytes"] = rc.weightBytes;
      rank["activation_bytes"] = rc.activationBytes;
      rank["kv_cache_bytes"] = rc.kvCacheBytes;
      rank["peak_bytes"] = rc.peakBytes;
    }
    ranks.push_back(std::move(rank));
  }
  llvm::json::Object bytes;
  for (const auto &[dtype, n] : cost.bytesByDType)
    bytes[dtype] = n;
  llvm::json::Object ops;
  for (const auto &[name, n] : cost.opCounts)
    ops[name] = n;
  llvm::json::Object report{
      {"model", cost.name},
      {"architecture", cost.architecture},
      {"vocab_size", cost.vocabSize},
      {"hidden_size", cost.hiddenSize},
      {"num_layers", cost.numLayers},
      {"num_moe_layers", cost.numMoELayers},
      {"context_length", cost.contextLength},
      {"total_params", cost.totalParams},
      {"active_params", cost.activeParams},
      {"params_read_per_token", cost.paramsReadPerToken},
      {"non_layer_params", cost.nonLayerParams},
      {"weight_bytes", cost.totalBytes},
      {"weight_bytes_read_per_token", cost.bytesReadPerToken},
      {"weight_bytes_by_dtype", std::move(bytes)},
      {"flops_per_token", cost.flopsPerToken},
      {"attention_flops_per_token", cost.attentionFlopsPerToken},
      {"layers", std::move(layers)},
      {"ops", std::move(ops)},
      {"num_ranks", cost.numRanks},
      {"tensor_parallel", cost.tensorParallel},
      {"data_parallel", cost.dataParallel},
      {"ranks", std::move(ranks)}};
  report["communication_per_token"] = llvm::json::Object{
      {"intra_node_bytes", cost.commBytesIntraNode},
      {"inter_node_bytes", cost.commBytesInterNode},
      {"intra_node_messages", cost.commMessagesIntraNode},
      {"inter_node_messages", cost.commMessagesInterNode}};
  report["kv_cache_bytes_per_position"] = cost.kvBytesPerPosition;
  report["kv_cache_dtype"] = cost.kvCacheDtype;
  if (cost.streaming)
    report["streaming"] =
        llvm::json::Object{{"budget_bytes", cost.streamingBudgetBytes},
                           {"streamed_weight_bytes", cost.streamedWeightBytes},
                           {"peak_bytes", cost.streamingPeakBytes}};
  return report;
}

DeviceModel mlir::moe::deviceModelFor(StringRef target) {
  DeviceModel d;
  if (target == "cuda") {
    // H100 SXM: HBM3 copy bandwidth as measured in BENCHMARKS.md, dense bf16
    // tensor-core peak, NVLink 4 (450 GB/s per direction), NDR InfiniBand
    // (400 Gb/s); small-message latencies of NCCL; graph-launched kernels.
    d.name = "cuda: H100 SXM per rank, 3.05 TB/s HBM, NVLink + 400 Gb/s IB";
    d.memoryBytesPerSec = 3.05e12;
    d.flopsPerSec = 989e12;
    d.intraNodeBytesPerSec = 450e9;
    d.interNodeBytesPerSec = 50e9;
    d.intraNodeLatencySec = 5e-6;
    d.interNodeLatencySec = 10e-6;
    d.stepOverheadSec = 1.5e-6;
    return d;
  }
  // The 2-core AMD EPYC (Zen 4) of shared/TOOLCHAIN.md: ~30 GB/s DRAM reads,
  // AVX-512 FMA; ranks on one machine exchange through shared memory.
  d.name = "cpu: 2-core AMD EPYC (Zen 4), 30 GB/s DRAM reads";
  d.memoryBytesPerSec = 30e9;
  d.flopsPerSec = 150e9;
  d.intraNodeBytesPerSec = 10e9;
  d.interNodeBytesPerSec = 1.25e9;
  d.intraNodeLatencySec = 2e-6;
  d.interNodeLatencySec = 30e-6;
  d.stepOverheadSec = 2e-6;
  return d;
}

VocabParallelEstimate mlir::moe::estimateVocabParallel(
    ModelOp model, int64_t T, const DeviceModel &device, int computeBits,
    bool crossesNodes) {
  VocabParallelEstimate e;
  if (T <= 1) {
    e.unavailable = "one rank per tensor-parallel group";
    return e;
  }
  LMHeadOp head;
  EmbeddingOp embedding;
  model.walk([&](Operation *op) {
    if (auto h = dyn_cast<LMHeadOp>(op))
      head = h;
    else if (auto x = dyn_cast<EmbeddingOp>(op))
      embedding = x;
  });
  if (!head) {
    e.unavailable = "no LM head";
    return e;
  }
  auto type = cast<RankedTensorType>(head.getWeight().getType());
  int64_t V = type.getDimSize(0), d = type.getDimSize(1);
  if (V % T != 0) {
    e.unavailable =
        llvm::formatv("vocabulary {0} not divisible by {1}", V, T).str();
    return e;
  }
  // Quantized tables split at block boundaries only.
  for (auto [op, table] :
       {std::pair<Operation *, Value>(head, head.getWeight()),
        std::pair<Operation *, Value>(embedding, embedding ? embedding.getTable()
                                                           : Value())})
    if (QuantAttr q = op ? quantOf(op, table) : QuantAttr();
        q && (V / T) % q.getBlock()[0] != 0) {
      e.unavailable = llvm::formatv("{0} rows per rank cut the quantization "
                                    "blocks of {1} rows",
                                    V / T, q.getBlock()[0])
                          .str();
      return e;
    }
  int64_t bytes = storedBytes(type, quantOf(head, head.getWeight()));
  if (type.getElementType().isF32() && computeBits == 16)
    bytes /= 2;
  e.savedMs = double(bytes) * double(T - 1) / double(T) /
              device.memoryBytesPerSec * 1e3;
  double bw = crossesNodes ? device.interNodeBytesPerSec
                           : device.intraNodeBytesPerSec;
  double latency = crossesNodes ? device.interNodeLatencySec
                                : device.intraNodeLatencySec;
  double gather = double(V / T * 4 * (T - 1)) / bw + double(T - 1) * latency;
  double reduce = embedding ? double(2 * d * 4 * (T - 1) / T) / bw +
                                  double(2 * (T - 1)) * latency
                            : 0;
  e.addedMs = (gather + reduce + 2 * device.stepOverheadSec) * 1e3;
  return e;
}

LatencyEstimate mlir::moe::estimateDecodeLatency(const ModelCost &cost,
                                                 const DeviceModel &device,
                                                 int computeBits) {
  LatencyEstimate e;
  e.device = device.name;
  // Per rank: a tensor-parallel member reads its parts of the sliced weights.
  double weightBytes =
      double(cost.bytesReadPerToken) - double(cost.tpSavedBytesPerToken);
  if (computeBits == 16)
    weightBytes -=
        double(cost.f32BytesReadPerToken - cost.tpSavedF32BytesPerToken) / 2;
  e.weightsMs = weightBytes / device.memoryBytesPerSec * 1e3;
  e.kvCacheMs = double(cost.kvBytesPerPosition) * double(cost.contextLength) /
                device.memoryBytesPerSec * 1e3;
  e.computeMs = double(cost.flopsPerToken + cost.attentionFlopsPerToken -
                       cost.tpSavedFlopsPerToken -
                       cost.tpSavedAttentionFlopsPerToken) /
                device.flopsPerSec * 1e3;
  e.commMs = (double(cost.commBytesIntraNode) / device.intraNodeBytesPerSec +
              double(cost.commBytesInterNode) / device.interNodeBytesPerSec +
              double(cost.commMessagesIntraNode) * device.intraNodeLatencySec +
              double(cost.commMessagesInterNode) * device.interNodeLatencySec) *
             1e3;
  // One runtime step per op that does work.
  int64_t steps = 0;
  for (const auto &[name, n] : cost.opCounts)
    if (!llvm::is_contained({"moe.weight", "moe.layer", "moe.yield",
                             "moe.graph", "moe.return", "moe.dispatch",
                             "moe.split"},
                            name))
      steps += n;
  e.overheadMs = double(steps) * device.stepOverheadSec * 1e3;
  e.totalMs = std::max(e.weightsMs + e.kvCacheMs, e.computeMs) + e.commMs +
              e.overheadMs;
  return e;
}

llvm::json::Value mlir::moe::toJSON(const LatencyEstimate &e) {
  return llvm::json::Object{{"device", e.device},
                            {"weights_ms", e.weightsMs},
                            {"kv_cache_ms", e.kvCacheMs},
                            {"compute_ms", e.computeMs},
                            {"communication_ms", e.commMs},
                            {"overhead_ms", e.overheadMs},
                            {"decode_step_ms", e.totalMs}};
}

void mlir::moe::printReport(llvm::raw_ostream &os, const ModelCost &cost,
                            const LatencyEstimate *latency) {
  os << "model " << cost.name << " (" << cost.architecture << "): "
     << cost.numLayers << " layers (" << cost.numMoELayers << " MoE), hidden "
     << cost.hiddenSize << ", vocab " << cost.vocabSize << "\n";
  os << "parameters: " << grouped(cost.totalParams) << " total ("
     << shortCount(cost.totalParams) << "), " << grouped(cost.activeParams)
     << " active per token (" << shortCount(cost.activeParams) << "), "
     << grouped(cost.paramsReadPerToken) << " read per token ("
     << shortCount(cost.paramsReadPerToken) << ")\n";
  os << "weights: " << formatBytes(cost.totalBytes) << " (";
  llvm::interleaveComma(cost.bytesByDType, os, [&](const auto &kv) {
    os << kv.first << " " << grouped(kv.second) << " bytes";
  });
  os << "), " << formatBytes(cost.bytesReadPerToken) << " read per token\n";
  os << "FLOPs per token: " << shortCount(cost.flopsPerToken) << " matmul + "
     << shortCount(cost.attentionFlopsPerToken) << " attention at context "
     << cost.contextLength << " (" << grouped(cost.flopsPerToken) << " + "
     << grouped(cost.attentionFlopsPerToken) << ")\n";
  // What one more position of context costs in the caches: expanded K/V
  // per KV head, or MLA's latent row.
  if (cost.kvBytesPerPosition)
    os << "KV cache: " << grouped(cost.kvBytesPerPosition)
       << " bytes per position (all layers, " << cost.kvCacheDtype << ")\n";
  os << "ops:";
  for (const auto &[name, n] : cost.opCounts)
    os << " " << name << "=" << n;
  os << "\n";
  os << llvm::formatv("{0,5}  {1,-5}  {2,7}  {3,5}  {4,9}  {5,9}  {6,12}\n",
                      "layer", "kind", "experts", "top_k", "params", "active",
                      "FLOPs/token");
  for (const LayerCost &lc : cost.layers)
    os << llvm::formatv(
        "{0,5}  {1,-5}  {2,7}  {3,5}  {4,9}  {5,9}  {6,12}\n", lc.index,
        lc.moe ? "moe" : "dense", lc.moe ? std::to_string(lc.numExperts) : "-",
        lc.moe ? std::to_string(lc.topK) : "-", shortCount(lc.params),
        shortCount(lc.activeParams),
        shortCount(lc.flopsPerToken + lc.attentionFlopsPerToken));
  os << llvm::formatv("{0,5}  {1,-5}  {2,7}  {3,5}  {4,9}\n", "-", "other", "-",
                      "-", shortCount(cost.nonLayerParams));
  if (cost.numRanks > 1 || cost.hasMemoryPlan)
    printRanks(os, cost);
  if (cost.commMessagesIntraNode + cost.commMessagesInterNode > 0)
    os << "communication per decode token and rank: "
       << formatBytes(cost.commBytesIntraNode) << " within nodes ("
       << cost.commMessagesIntraNode << " messages), "
       << formatBytes(cost.commBytesInterNode) << " across nodes ("
       << cost.commMessagesInterNode << " messages)\n";
  if (latency)
    os << llvm::formatv(
        "estimated decode step at context {0} ({1}): {2:F2} ms = max(weights "
        "{3:F2} ms + KV {4:F2} ms, compute {5:F2} ms) + exchanges {6:F2} ms + "
        "step overhead {7:F2} ms\n",
        cost.contextLength, latency->device, latency->totalMs,
        latency->weightsMs, latency->kvCacheMs, latency->computeMs,
        latency->commMs, latency->overheadMs);
}

//===----------------------------------------------------------------------===//
// SVG
//===----------------------------------------------------------------------===//

namespace {

std::string xmlEscape(llvm::StringRef text) {
  std::string out;
  for (char c : text) {
    switch (c) {
    case '&':
      out += "&amp;";
      break;
    case '<':
      out += "&lt;";
      break;
    case '>':
      out += "&gt;";
      break;
    case '"':
      out += "&quot;";
      break;
    default:
      out += c;
    }
  }
  return out;
}

/// Ranks drawn as one column each, up to kMaxColumns; beyond that a column
/// stands for a group of consecutive ranks and shows the group's maximum.
struct Columns {
  static constexpr int64_t kMaxColumns = 64;
  int64_t group = 1, count = 1;
  explicit Columns(int64_t numRanks) {
    group = llvm::divideCeil(numRanks, kMaxColumns);
    count = llvm::divideCeil(numRanks, group);
  }
  int64_t first(int64_t c) const { return c * group; }
  int64_t last(int64_t c, int64_t numRanks) const {
    return std::min(numRanks, (c + 1) * group) - 1;
  }
};

} // namespace

void mlir::moe::printReportSVG(llvm::raw_ostream &os, const ModelCost &cost) {
  constexpr int left = 96, right = 170, top = 56, barHeight = 220;
  constexpr const char *font = "font-family=\"sans-serif\"";
  constexpr std::pair<const char *, const char *> parts[] = {
      {"weights", "#4e79a7"},
      {"activations", "#f28e2b"},
      {"kv-cache", "#59a14f"}};
  Columns cols(cost.numRanks);
  int colWidth = int(std::clamp<int64_t>(640 / cols.count, 10, 48));
  int plotWidth = int(cols.count) * colWidth;
  int width = left + plotWidth + right;
  auto columnLabel = [&](int64_t c) {
    return rankRange(cols.first(c), cols.last(c, cost.numRanks));
  };
  // Label every k-th column so labels (about 6 px per character) do not
  // overlap.
  int64_t labelEvery = llvm::divideCeil(
      int64_t(columnLabel(cols.count - 1).size()) * 6 + 8, colWidth);

  std::vector<const LayerCost *> moeLayers;
  for (const LayerCost &lc : cost.layers)
    if (lc.moe)
      moeLayers.push_back(&lc);
  int cellHeight = moeLayers.size() > 32 ? 8 : 18;
  int memoryTop = top + 16;
  int memoryBottom = memoryTop + (cost.hasMemoryPlan ? barHeight : 20);
  int expertsTop = memoryBottom + 70;
  int expertsHeight =
      moeLayers.empty() ? 20 : int(moeLayers.size()) * cellHeight;
  int height = expertsTop + expertsHeight + 60;

  os << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
     << llvm::formatv("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" "
                      "height=\"{1}\" viewBox=\"0 0 {0} {1}\">\n",
                      width, height)
     << llvm::formatv("<rect width=\"{0}\" height=\"{1}\" fill=\"white\"/>\n",
                      width, height)
     << llvm::formatv("<text class=\"title\" x=\"{0}\" y=\"24\" {1} "
                      "font-size=\"16\" font-weight=\"bold\">{2} ({3}): {4} "
                      "rank{5}</text>\n",
                      left, font, xmlEscape(cost.name),
                      xmlEscape(cost.architecture), cost.numRanks,
                      cost.numRanks == 1 ? "" : "s");
  if (cols.group > 1)
    os << llvm::formatv("<text class=\"note\" x=\"{0}\" y=\"42\" {1} "
                        "font-size=\"11\">each column: the largest of {2} "
                        "consecutive ranks</text>\n",
                        left, font, cols.group);

  // Per-rank memory: stacked bars of the largest rank of each column.
  os << llvm::formatv("<text class=\"heading\" x=\"{0}\" y=\"{1}\" {2} "
                      "font-size=\"13\">Memory per rank</text>\n",
                      left, memoryTop - 4, font);
  if (!cost.hasMemoryPlan) {
    os << llvm::formatv("<text class=\"missing\" x=\"{0}\" y=\"{1}\" {2} "
                        "font-size=\"12\">not planned (run moe-plan-memory)"
                        "</text>\n",
                        left, memoryTop + 14, font);
  } else {
    int64_t maxPeak = 1;
    for (const RankCost &rc : cost.ranks)
      maxPeak = std::max(maxPeak, rc.peakBytes);
    auto y = [&](double bytes) {
      return memoryBottom - bytes / double(maxPeak) * barHeight;
    };
    for (int tick = 0; tick <= 4; ++tick) {
      double bytes = double(maxPeak) * tick / 4;
      os << llvm::formatv("<line class=\"grid\" x1=\"{0}\" x2=\"{1}\" "
                          "y1=\"{2:f1}\" y2=\"{2:f1}\" stroke=\"#ddd\"/>\n"
                          "<text class=\"axis\" x=\"{3}\" y=\"{4:f1}\" {5} "
                          "font-size=\"10\" text-anchor=\"end\">{6}</text>\n",
                          left, left + plotWidth, y(bytes), left - 6,
                          y(bytes) + 3, font, formatBytes(uint64_t(bytes)));
    }
    for (int64_t c = 0; c < cols.count; ++c) {
      const RankCost *worst = &cost.ranks[cols.first(c)];
      for (int64_t r = cols.first(c); r <= cols.last(c, cost.numRanks); ++r)
        if (cost.ranks[r].peakBytes > worst->peakBytes)
          worst = &cost.ranks[r];
      int64_t values[] = {worst->weightBytes, worst->activationBytes,
                          worst->kvCacheBytes};
      double base = 0;
      for (auto [part, bytes] : llvm::zip(parts, values)) {
        double y0 = y(base), y1 = y(base + double(bytes));
        os << llvm::formatv(
            "<rect class=\"{0}\" data-rank=\"{1}\" data-bytes=\"{2}\" "
            "x=\"{3}\" y=\"{4:f1}\" width=\"{5}\" height=\"{6:f1}\" "
            "fill=\"{7}\"><title>rank {1}: {0} {8}</title></rect>\n",
            part.first, columnLabel(c), bytes, left + c * colWidth + 1, y1,
            colWidth - 2, y0 - y1, part.second, formatBytes(uint64_t(bytes)));
        base += double(bytes);
      }
    }
    int64_t legendY = memoryTop + 10;
    for (auto [i, part] : llvm::enumerate(parts))
      os << llvm::formatv("<rect class=\"legend\" x=\"{0}\" y=\"{1}\" "
                          "width=\"12\" height=\"12\" fill=\"{2}\"/>"
                          "<text x=\"{3}\" y=\"{4}\" {5} font-size=\"12\">"
                          "{6}</text>\n",
                          left + plotWidth + 16, legendY + 18 * int64_t(i),
                          part.second, left + plotWidth + 34,
                          legendY + 18 * int64_t(i) + 10, font,
                          i == 2 ? "KV cache" : part.first);
  }
  for (int64_t c = 0; c < cols.count; c += labelEvery)
    os << llvm::formatv("<text class=\"rank-label\" x=\"{0}\" y=\"{1}\" {2} "
                        "font-size=\"10\" text-anchor=\"middle\">{3}</text>\n",
                        left + c * colWidth + colWidth / 2, memoryBottom + 14,
                        font, columnLabel(c));
  os << llvm::formatv("<text class=\"axis\" x=\"{0}\" y=\"{1}\" {2} "
                      "font-size=\"11\" text-anchor=\"middle\">rank</text>\n",
                      left + plotWidth / 2, memoryBottom + 30, font);

  // Experts each rank holds, per MoE layer: a heat map.
  os << llvm::formatv(
      "<text class=\"heading\" x=\"{0}\" y=\"{1}\" {2} "
      "font-size=\"13\">Experts per rank and MoE layer</text>\n",
      left, expertsTop - 8, font);
  if (moeLayers.empty()) {
    os << llvm::formatv("<text class=\"missing\" x=\"{0}\" y=\"{1}\" {2} "
                        "font-size=\"12\">no MoE layers</text>\n",
                        left, expertsTop + 14, font);
  } else {
    int64_t maxCount = 1;
    for (const LayerCost *lc : moeLayers)
      for (int64_t n : lc->expertsPerRank)
        maxCount = std::max(maxCount, n);
    for (auto [row, lc] : llvm::enumerate(moeLayers)) {
      int y = expertsTop + int(row) * cellHeight;
      if (cellHeight >= 12 || row % 4 == 0)
        os << llvm::formatv("<text class=\"layer-label\" x=\"{0}\" y=\"{1}\" "
                            "{2} font-size=\"10\" text-anchor=\"end\">layer "
                            "{3}</text>\n",
                            left - 6, y + cellHeight / 2 + 3, font, lc->index);
      for (int64_t c = 0; c < cols.count; ++c) {
        int64_t count = 0;
        for (int64_t r = cols.first(c); r <= cols.last(c, cost.numRanks); ++r)
          count = std::max(count, lc->expertsPerRank[r]);
        // Light grey (none), then pale to the weights' blue (the most any
        // rank holds).
        double t = double(count) / double(maxCount);
        auto channel = [&](int to) {
          return count == 0 ? 238 : int(220 + (to - 220) * t);
        };
        int x = left + int(c) * colWidth;
        os << llvm::formatv(
            "<rect class=\"experts\" data-layer=\"{0}\" data-rank=\"{1}\" "
            "data-count=\"{2}\" x=\"{3}\" y=\"{4}\" width=\"{5}\" "
            "height=\"{6}\" fill=\"rgb({7},{8},{9})\" stroke=\"#fff\">"
            "<title>layer {0}, rank {1}: {2} expert{10}</title></rect>\n",
            lc->index, columnLabel(c), count, x, y, colWidth, cellHeight,
            channel(0x4e), channel(0x79), channel(0xa7), count == 1 ? "" : "s");
        if (colWidth >= 16 && cellHeight >= 12)
          os << llvm::formatv(
              "<text x=\"{0}\" y=\"{1}\" {2} font-size=\"10\" "
              "text-anchor=\"middle\" fill=\"{3}\">{4}</text>\n",
              x + colWidth / 2, y + cellHeight / 2 + 4, font,
              t > 0.5 ? "white" : "black", count);
      }
    }
  }
  os << "</svg>\n";
}
