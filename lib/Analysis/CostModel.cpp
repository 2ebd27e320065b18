//===- CostModel.cpp - parameters, FLOPs and bytes of a model -------------===//

#include "moe/Analysis/CostModel.h"
#include "moe/Compiler/Options.h"

#include "llvm/ADT/DenseMap.h"
#include "llvm/Support/FormatVariadic.h"

using namespace mlir;
using namespace mlir::moe;

namespace {

/// How the graph uses one parameter.
struct ParamUse {
  bool dense = false;  // read whole by some op
  bool lookup = false; // rows gathered by moe.embedding
  bool expert = false; // a routed expert's weight
  int64_t layer = -1;  // layer of the first use, -1 outside layers
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

  GraphOp graph = model.getGraph();
  llvm::DenseMap<StringAttr, ParamUse> uses;
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
        if (isa<ExpertsOp>(user) && operand.getOperandNumber() >= 2)
          use.expert = true;
        else if (auto emb = dyn_cast<EmbeddingOp>(user);
                 emb && operand.get() == emb.getTable())
          use.lookup = true;
        else
          use.dense = true;
      }
    }

    if (auto experts = dyn_cast<ExpertsOp>(op)) {
      int64_t numExperts = experts.getNumExperts();
      int64_t active = std::min(experts.getTopK(), numExperts);
      int64_t bytesPerExpert = 0;
      for (ValueRange group : {experts.getUp(), experts.getGate(),
                               experts.getDown(), experts.getUpBias(),
                               experts.getDownBias()})
        if (!group.empty()) {
          auto type = cast<RankedTensorType>(group.front().getType());
          bytesPerExpert = satAdd(
              bytesPerExpert, satMul(satNumElements(type),
                                     elementBytes(type.getElementType())));
        }
      int64_t activeParams = satMul(active, experts.getParamsPerExpert());
      cost.activeParams = satAdd(cost.activeParams, activeParams);
      cost.paramsReadPerToken = satAdd(cost.paramsReadPerToken, activeParams);
      cost.bytesReadPerToken =
          satAdd(cost.bytesReadPerToken, satMul(active, bytesPerExpert));
      if (LayerCost *lc = layerCost(enclosingLayer(op))) {
        lc->moe = true;
        lc->numExperts = numExperts;
        lc->topK = experts.getTopK();
        lc->activeParams = satAdd(lc->activeParams, activeParams);
      }
    }

    if (auto costOp = dyn_cast<CostOpInterface>(op)) {
      int64_t flops = costOp.getFlopsPerToken(cost.contextLength);
      LayerCost *lc = layerCost(enclosingLayer(op));
      bool attention = isa<AttentionOp>(op);
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

  for (ParamOp param : model.getBodyBlock().getOps<ParamOp>()) {
    RankedTensorType type = param.getTensorType();
    int64_t n = satNumElements(type);
    int64_t elemBytes = elementBytes(type.getElementType());
    int64_t bytes = satMul(n, elemBytes);
    cost.totalParams = satAdd(cost.totalParams, n);
    cost.totalBytes = satAdd(cost.totalBytes, bytes);
    int64_t &byDType = cost.bytesByDType[dtypeName(type.getElementType())];
    byDType = satAdd(byDType, bytes);
    ParamUse use = uses.lookup(param.getSymNameAttr());
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
    cost.bytesReadPerToken =
        satAdd(cost.bytesReadPerToken, satMul(read, elemBytes));
  }
  for (const LayerCost &lc : cost.layers)
    cost.numMoELayers += lc.moe;
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
    }
    layers.push_back(std::move(layer));
  }
  llvm::json::Object bytes;
  for (const auto &[dtype, n] : cost.bytesByDType)
    bytes[dtype] = n;
  llvm::json::Object ops;
  for (const auto &[name, n] : cost.opCounts)
    ops[name] = n;
  return llvm::json::Object{
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
      {"ops", std::move(ops)}};
}

void mlir::moe::printReport(llvm::raw_ostream &os, const ModelCost &cost) {
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
}
