//===- MoEOps.cpp - moe operations ----------------------------------------===//
//
// Verifiers, custom assembly, folders and cost-model hooks of the moe ops.
// Every verifier message names what was expected so a user who wrote or
// generated bad IR can fix it.
//
//===----------------------------------------------------------------------===//

#include "moe/Dialect/MoEOps.h"

#include <cmath>

#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/Interfaces/FunctionImplementation.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/STLExtras.h"

using namespace mlir;
using namespace mlir::moe;

#include "moe/MoEInterfaces.cpp.inc"

namespace {

constexpr int64_t kDynamic = ShapedType::kDynamic;

RankedTensorType tensorType(Value v) {
  return cast<RankedTensorType>(v.getType());
}
int64_t dim(Value v, unsigned i) { return tensorType(v).getDimSize(i); }
/// Row width of an activation (dim 1), possibly dynamic.
int64_t width(Value v) { return dim(v, 1); }
/// Two sizes disagree (a dynamic size agrees with anything).
bool differ(int64_t a, int64_t b) {
  return a != kDynamic && b != kDynamic && a != b;
}
std::string shapeStr(Value v) {
  std::string s = "[";
  llvm::raw_string_ostream os(s);
  llvm::interleave(
      tensorType(v).getShape(), os,
      [&](int64_t d) { d == kDynamic ? os << "?" : os << d; }, ", ");
  return s + "]";
}

LogicalResult checkPositive(Operation *op, StringRef name, int64_t value) {
  if (value < 1)
    return op->emitOpError() << name << " must be positive (got " << value
                             << ")";
  return success();
}

/// Checks a [rows, cols] weight against expected sizes (kDynamic: any).
LogicalResult checkMatrix(Operation *op, StringRef what, Value weight,
                          int64_t rows, int64_t cols, StringRef layout) {
  if (differ(dim(weight, 0), rows) || differ(dim(weight, 1), cols)) {
    auto fmt = [](int64_t d) {
      return d == kDynamic ? std::string("?") : std::to_string(d);
    };
    return op->emitOpError() << what << " is " << shapeStr(weight)
                             << " (expected [" << fmt(rows) << ", "
                             << fmt(cols) << "], " << layout << ")";
  }
  return success();
}

LogicalResult checkVector(Operation *op, StringRef what, Value vec,
                          int64_t size) {
  if (vec && differ(dim(vec, 0), size))
    return op->emitOpError() << what << " has " << dim(vec, 0)
                             << " elements (expected " << size << ")";
  return success();
}

LogicalResult checkWidth(Operation *op, StringRef what, Value v,
                         int64_t expected, StringRef because) {
  if (differ(width(v), expected))
    return op->emitOpError() << what << " width " << width(v) << " (expected "
                             << expected << ", " << because << ")";
  return success();
}

} // namespace

//===----------------------------------------------------------------------===//
// ModelOp
//===----------------------------------------------------------------------===//

void ModelOp::build(OpBuilder &builder, OperationState &state, StringRef name,
                    StringRef architecture) {
  state.addAttribute(mlir::SymbolTable::getSymbolAttrName(),
                     builder.getStringAttr(name));
  state.addAttribute(getArchitectureAttrName(state.name),
                     builder.getStringAttr(architecture));
  state.addRegion()->emplaceBlock();
}

GraphOp ModelOp::getGraph() {
  auto graphs = getBodyBlock().getOps<GraphOp>();
  return graphs.empty() ? GraphOp() : *graphs.begin();
}

Type ModelOp::getKvCacheElementType() {
  std::optional<Type> t = getKvCacheDtype();
  return t ? *t : Float32Type::get(getContext());
}

LogicalResult ModelOp::verify() {
  if (failed(checkPositive(*this, "vocab_size", getVocabSize())) ||
      failed(checkPositive(*this, "hidden_size", getHiddenSize())) ||
      failed(checkPositive(*this, "max_position_embeddings",
                           getMaxPositionEmbeddings())))
    return failure();
  if (std::optional<Type> kv = getKvCacheDtype();
      kv && !kv->isF32() && !kv->isBF16() && !kv->isF16())
    return emitOpError() << "kv_cache_dtype must be f32, bf16 or f16 (got "
                         << *kv << ")";
  if (getNumLayers() < 0)
    return emitOpError() << "num_layers must be >= 0 (got " << getNumLayers()
                         << ")";
  auto checkToken = [&](StringRef what, int64_t id) -> LogicalResult {
    if (id >= 0 && id < getVocabSize())
      return success();
    return emitOpError() << what << " " << id << " is not a token (expected 0.."
                         << getVocabSize() - 1 << ")";
  };
  if (std::optional<int64_t> bos = getBosTokenId())
    if (failed(checkToken("bos_token_id", *bos)))
      return failure();
  for (int64_t id : getEosTokenIds())
    if (failed(checkToken("eos_token_id", id)))
      return failure();
  return success();
}

LogicalResult ModelOp::verifyRegions() {
  GraphOp graph;
  shard::GridOp grid;
  int64_t numGrids = 0;
  for (Operation &op : getBodyBlock()) {
    if (auto g = dyn_cast<GraphOp>(op)) {
      if (graph)
        return op.emitOpError("is a second moe.graph (expected exactly one "
                              "graph per model)");
      graph = g;
    } else if (auto g = dyn_cast<shard::GridOp>(op)) {
      grid = g;
      ++numGrids;
    } else if (!isa<ParamOp>(op)) {
      return op.emitOpError("is not allowed in a moe.model body (expected "
                            "moe.param, moe.graph or shard.grid)");
    }
  }
  if (!graph)
    return emitOpError("has no moe.graph (expected exactly one)");

  // Logits width.
  auto resultTypes = graph.getResultTypes();
  if (resultTypes.size() == 1) {
    auto logits = cast<RankedTensorType>(resultTypes[0]);
    if (differ(logits.getDimSize(1), getVocabSize()))
      return graph.emitOpError()
             << "returns logits of width " << logits.getDimSize(1)
             << " (expected vocab_size " << getVocabSize() << ")";
  }

  // Layers: 0..n-1 in order; attention layers distinct.
  int64_t nextLayer = 0;
  llvm::DenseMap<int64_t, AttentionOp> kvLayers;
  SymbolRefAttr embeddingTable;
  SmallVector<LMHeadOp> tiedHeads;
  WalkResult walk = graph.walk([&](Operation *op) -> WalkResult {
    if (auto layer = dyn_cast<LayerOp>(op)) {
      if (layer.getIndex() != nextLayer) {
        layer.emitOpError() << "has index " << layer.getIndex()
                            << " (expected " << nextLayer
                            << ": layers are numbered 0..num_layers-1 in "
                               "order)";
        return WalkResult::interrupt();
      }
      ++nextLayer;
    } else if (auto attn = dyn_cast<AttentionOp>(op)) {
      if (attn.getLayer() >= getNumLayers()) {
        attn.emitOpError() << "uses KV cache layer " << attn.getLayer()
                           << " (expected < num_layers " << getNumLayers()
                           << ")";
        return WalkResult::interrupt();
      }
      auto [it, inserted] = kvLayers.try_emplace(attn.getLayer(), attn);
      if (!inserted) {
        attn.emitOpError() << "reuses KV cache layer " << attn.getLayer()
                           << " (expected one attention per KV cache layer)";
        return WalkResult::interrupt();
      }
    } else if (auto emb = dyn_cast<EmbeddingOp>(op)) {
      if (auto w = emb.getTable().getDefiningOp<WeightOp>())
        embeddingTable = w.getParamAttr();
    } else if (auto head = dyn_cast<LMHeadOp>(op)) {
      if (head.getTied())
        tiedHeads.push_back(head);
    } else if (auto experts = dyn_cast<ExpertsOp>(op)) {
      auto placement = experts.getPlacement();
      int64_t size = numGrids == 1 && grid.getShape().size() > 0
                         ? getGridRankCount(grid.getShape())
                         : -1;
      if (placement && size > 0) {
        if (placement->getNumRanks() != size) {
          experts.emitOpError()
              << "placement spans " << placement->getNumRanks()
              << " ranks (expected the " << size << " ranks of the device grid @"
              << grid.getSymName() << ")";
          return WalkResult::interrupt();
        }
      }
    }
    return WalkResult::advance();
  });
  if (walk.wasInterrupted())
    return failure();
  if (nextLayer != getNumLayers())
    return emitOpError() << "has " << nextLayer
                         << " moe.layer ops (expected num_layers = "
                         << getNumLayers() << ")";
  for (LMHeadOp head : tiedHeads) {
    auto w = head.getWeight().getDefiningOp<WeightOp>();
    if (!w || !embeddingTable || w.getParamAttr() != embeddingTable)
      return head.emitOpError(
          "is tied but its weight is not the token embedding table (expected "
          "a moe.weight of the embedding's parameter)");
  }
  return success();
}

//===----------------------------------------------------------------------===//
// ParamOp
//===----------------------------------------------------------------------===//

LogicalResult ParamOp::verify() {
  RankedTensorType type = getTensorType();
  if (!type.hasStaticShape() ||
      !isa<Float32Type, BFloat16Type, Float16Type>(type.getElementType()))
    return emitOpError() << "type " << type
                         << " is not a statically shaped tensor of f32, bf16 "
                            "or f16";
  for (int64_t d : type.getShape())
    if (d < 1)
      return emitOpError() << "type " << type
                           << " has an empty dimension (expected sizes >= 1)";
  if (getName().empty())
    return emitOpError("has an empty checkpoint tensor name");
  if (SourceAttr source = getSourceAttr()) {
    // A source slices the checkpoint per expert: only expert-stacked
    // matrices [E, N, K] and vectors [E, N] have one.
    if (type.getRank() != 2 && type.getRank() != 3)
      return emitOpError() << "has a source but type " << type
                           << " is not expert-stacked (expected [E, N, K] "
                              "or [E, N])";
    if (source.getTransposed() && type.getRank() != 3)
      return emitOpError() << "has a transposed source but type " << type
                           << " is not a stacked matrix (expected [E, N, K])";
    if (source.isPerExpert() && source.getTensor() != getName())
      return emitOpError() << "has the per-expert source '"
                           << source.getTensor() << "' (expected its name '"
                           << getName() << "')";
  }
  if (QuantAttr quant = getQuantAttr()) {
    // Quantized matrices are read only by products, as [N, K] or stacked
    // [E, N, K]; their element type is that of the dequantized values.
    if (!type.getElementType().isF32() ||
        (type.getRank() != 2 && type.getRank() != 3))
      return emitOpError() << "is quantized but type " << type
                           << " is not a matrix of f32 (expected [N, K] or "
                              "[E, N, K])";
    SourceAttr source = getSourceAttr();
    bool perExpert = source && source.isPerExpert();
    if (perExpert != quant.getScale().contains("{e}"))
      return emitOpError() << "has the quant scale '" << quant.getScale()
                           << "' (expected {e} exactly when its source names "
                              "per-expert tensors)";
    if (source && source.getTransposed())
      return emitOpError("is quantized with a transposed source (expected "
                         "quantized rows as stored)");
    if (type.getRank() == 3 && !source)
      return emitOpError("is a quantized stacked matrix without a source");
    if (quant.getFormat() == WeightFormat::MXFP4 &&
        type.getShape().back() % 32 != 0)
      return emitOpError() << "is mxfp4 but type " << type
                           << " has columns that are not a multiple of 32";
  }
  if (getInit() == InitKind::Normal) {
    if (!getInitStd() || !(getInitStd()->convertToFloat() > 0.0f))
      return emitOpError("init normal needs a positive std");
  } else if (getInitStd()) {
    return emitOpError() << "init " << stringifyInitKind(getInit())
                         << " takes no std (only init normal does)";
  }
  return success();
}

//===----------------------------------------------------------------------===//
// GraphOp, ReturnOp
//===----------------------------------------------------------------------===//

void GraphOp::build(OpBuilder &builder, OperationState &state, StringRef name,
                    FunctionType type) {
  state.addAttribute(SymbolTable::getSymbolAttrName(),
                     builder.getStringAttr(name));
  state.addAttribute(getFunctionTypeAttrName(state.name),
                     TypeAttr::get(type));
  Block &entry = state.addRegion()->emplaceBlock();
  for (Type t : type.getInputs())
    entry.addArgument(t, state.location);
}

ParseResult GraphOp::parse(OpAsmParser &parser, OperationState &result) {
  auto buildFuncType = [](Builder &builder, ArrayRef<Type> argTypes,
                          ArrayRef<Type> results,
                          function_interface_impl::VariadicFlag,
                          std::string &) {
    return builder.getFunctionType(argTypes, results);
  };
  return function_interface_impl::parseFunctionOp(
      parser, result, /*allowVariadic=*/false,
      getFunctionTypeAttrName(result.name), buildFuncType,
      getArgAttrsAttrName(result.name), getResAttrsAttrName(result.name));
}

void GraphOp::print(OpAsmPrinter &p) {
  function_interface_impl::printFunctionOp(
      p, *this, /*isVariadic=*/false, getFunctionTypeAttrName(),
      getArgAttrsAttrName(), getResAttrsAttrName());
}

LogicalResult GraphOp::verify() {
  FunctionType type = getFunctionType();
  auto isIds = [](Type t) {
    auto tt = dyn_cast<RankedTensorType>(t);
    return tt && tt.getRank() == 1 && tt.getElementType().isInteger(32);
  };
  auto isLogits = [](Type t) {
    auto tt = dyn_cast<RankedTensorType>(t);
    return tt && tt.getRank() == 2 && tt.getElementType().isF32();
  };
  if (type.getNumInputs() != 1 || !isIds(type.getInput(0)))
    return emitOpError("expects one argument: the token ids "
                       "(tensor<?xi32>)");
  if (type.getNumResults() != 1 || !isLogits(type.getResult(0)))
    return emitOpError("expects one result: the logits "
                       "(tensor<?xVOCABxf32>)");
  if (getBody().empty())
    return emitOpError("has no body");
  return success();
}

LogicalResult ReturnOp::verify() {
  auto graph = (*this)->getParentOfType<GraphOp>();
  if (getOperandTypes() != graph.getResultTypes())
    return emitOpError() << "returns " << getOperandTypes().size()
                         << " value(s) whose types do not match the graph's "
                            "results "
                         << graph.getFunctionType();
  return success();
}

//===----------------------------------------------------------------------===//
// WeightOp
//===----------------------------------------------------------------------===//

LogicalResult WeightOp::verifySymbolUses(SymbolTableCollection &symbolTable) {
  auto param =
      symbolTable.lookupNearestSymbolFrom<ParamOp>(*this, getParamAttr());
  if (!param)
    return emitOpError() << getParamAttr()
                         << " does not name a moe.param of the enclosing "
                            "moe.model";
  if (param.getType() != getType())
    return emitOpError() << "has type " << getType()
                         << " but parameter " << getParamAttr()
                         << " is declared as " << param.getType();
  return success();
}

//===----------------------------------------------------------------------===//
// LayerOp
//===----------------------------------------------------------------------===//

void LayerOp::build(OpBuilder &builder, OperationState &state, int64_t index,
                    Value input) {
  state.addAttribute(getIndexAttrName(state.name),
                     builder.getI64IntegerAttr(index));
  state.addOperands(input);
  state.addTypes(input.getType());
  Block &body = state.addRegion()->emplaceBlock();
  body.addArgument(input.getType(), input.getLoc());
}

ParseResult LayerOp::parse(OpAsmParser &parser, OperationState &result) {
  int64_t index = 0;
  OpAsmParser::Argument arg;
  OpAsmParser::UnresolvedOperand input;
  Type type;
  if (parser.parseInteger(index) || parser.parseLParen() ||
      parser.parseArgument(arg) || parser.parseEqual() ||
      parser.parseOperand(input) || parser.parseRParen() ||
      parser.parseColonType(type) ||
      parser.parseOptionalAttrDictWithKeyword(result.attributes))
    return failure();
  arg.type = type;
  result.addAttribute(getIndexAttrName(result.name),
                      parser.getBuilder().getI64IntegerAttr(index));
  if (parser.resolveOperand(input, type, result.operands))
    return failure();
  result.addTypes(type);
  Region *body = result.addRegion();
  return parser.parseRegion(*body, {arg});
}

void LayerOp::print(OpAsmPrinter &p) {
  p << " " << getIndex() << " (";
  p.printOperand(getBodyBlock().getArgument(0));
  p << " = " << getInput() << ") : " << getType();
  p.printOptionalAttrDictWithKeyword((*this)->getAttrs(),
                                     {getIndexAttrName()});
  p << " ";
  p.printRegion(getBody(), /*printEntryBlockArgs=*/false);
}

static LogicalResult verifyExpertsNeighbors(ExpertsOp experts);

LogicalResult LayerOp::verifyRegions() {
  if (getIndex() < 0)
    return emitOpError() << "index must be >= 0 (got " << getIndex() << ")";
  Block &body = getBodyBlock();
  if (body.getNumArguments() != 1 ||
      body.getArgument(0).getType() != getInput().getType())
    return emitOpError() << "body must take one argument of the input type "
                         << getInput().getType();
  auto yield = dyn_cast<YieldOp>(body.getTerminator());
  if (!yield)
    return emitOpError("body must end with moe.yield");
  if (yield.getValue().getType() != getType())
    return yield.emitOpError() << "yields " << yield.getValue().getType()
                               << " (expected the layer's type " << getType()
                               << ")";
  for (ExpertsOp experts : body.getOps<ExpertsOp>())
    if (failed(verifyExpertsNeighbors(experts)))
      return failure();
  return success();
}

bool LayerOp::isMoE() {
  return getBody()
      .walk([](ExpertsOp) { return WalkResult::interrupt(); })
      .wasInterrupted();
}

SmallVector<MoEOpInterface> LayerOp::getMoEOps() {
  SmallVector<MoEOpInterface> ops;
  getBody().walk([&](MoEOpInterface op) { ops.push_back(op); });
  return ops;
}

ExpertsOp LayerOp::getExpertsOp() {
  ExpertsOp found;
  getBody().walk([&](ExpertsOp op) {
    found = op;
    return WalkResult::interrupt();
  });
  return found;
}

void LayerOp::setExpertPlacement(PlacementAttr placement) {
  for (MoEOpInterface op : getMoEOps())
    op.setExpertPlacement(placement);
}

int64_t mlir::moe::detail::getEnclosingLayerIndex(Operation *op) {
  if (auto layer = op->getParentOfType<LayerOp>())
    return layer.getIndex();
  return -1;
}

//===----------------------------------------------------------------------===//
// Dense sublayers
//===----------------------------------------------------------------------===//

LogicalResult EmbeddingOp::verify() {
  if (differ(width(getResult()), dim(getTable(), 1)))
    return emitOpError() << "result width " << width(getResult())
                         << " does not match the table's hidden size "
                         << dim(getTable(), 1) << " (table is [vocab, hidden])";
  if (!(getScale().convertToFloat() != 0.0f))
    return emitOpError("scale must be nonzero");
  return success();
}

LogicalResult PositionEmbeddingOp::verify() {
  return checkWidth(*this, "input", getInput(), dim(getTable(), 1),
                    "the position table is [max_positions, hidden]");
}

template <typename NormOp>
static LogicalResult verifyNorm(NormOp op, Value bias) {
  if (!(op.getEps().convertToFloat() > 0.0f))
    return op.emitOpError("eps must be positive");
  int64_t rowWidth = width(op.getInput());
  int64_t group = op.getGroupSizeOrWidth();
  if (op.getGroupSize()) {
    if (group < 1)
      return op.emitOpError() << "group_size must be positive (got " << group
                              << ")";
    if (rowWidth != kDynamic && rowWidth % group != 0)
      return op.emitOpError() << "group_size " << group
                              << " does not divide the row width " << rowWidth;
  }
  if (failed(checkVector(op, "weight", op.getWeight(), group)))
    return failure();
  return checkVector(op, "bias", bias, group);
}

LogicalResult LayerNormOp::verify() { return verifyNorm(*this, getBias()); }
LogicalResult RMSNormOp::verify() { return verifyNorm(*this, Value()); }

LogicalResult LinearOp::verify() {
  int64_t n = getTransposed() ? dim(getWeight(), 1) : dim(getWeight(), 0);
  int64_t k = getTransposed() ? dim(getWeight(), 0) : dim(getWeight(), 1);
  if (differ(width(getInput()), k))
    return emitOpError() << "input width " << width(getInput())
                         << " does not match the weight " << shapeStr(getWeight())
                         << (getTransposed() ? " ([K, N], transposed)"
                                             : " ([N, K])");
  if (failed(checkWidth(*this, "result", getResult(), n,
                        "the weight's output size")))
    return failure();
  return checkVector(*this, "bias", getBias(), n);
}

int64_t LinearOp::getFlopsPerToken(int64_t) {
  return satMul(2, satNumElements(tensorType(getWeight())));
}

LogicalResult SplitOp::verify() {
  if (getResults().empty())
    return emitOpError("needs at least one result");
  int64_t sum = 0;
  for (Value r : getResults()) {
    if (differ(dim(r, 0), dim(getInput(), 0)))
      return emitOpError("results must have the input's number of rows");
    if (width(r) == kDynamic)
      return emitOpError("result widths must be static");
    sum += width(r);
  }
  if (differ(sum, width(getInput())))
    return emitOpError() << "result widths sum to " << sum
                         << " (expected the input width " << width(getInput())
                         << ")";
  return success();
}

LogicalResult SplitOp::fold(FoldAdaptor, SmallVectorImpl<OpFoldResult> &results) {
  // A split into one piece is the input itself.
  if (getNumResults() != 1 || getResult(0).getType() != getInput().getType())
    return failure();
  results.push_back(getInput());
  return success();
}

LogicalResult RotaryOp::verify() {
  if (failed(checkPositive(*this, "num_heads", getNumHeads())) ||
      failed(checkPositive(*this, "head_dim", getHeadDim())))
    return failure();
  if (differ(width(getInput()), getNumHeads() * getHeadDim()))
    return emitOpError() << "num_heads * head_dim = " << getNumHeads() << " * "
                         << getHeadDim() << " = " << getNumHeads() * getHeadDim()
                         << " does not match the input width "
                         << width(getInput());
  if (getRotaryDim() < 2 || getRotaryDim() > getHeadDim() ||
      getRotaryDim() % 2 != 0)
    return emitOpError() << "rotary_dim " << getRotaryDim()
                         << " must be even and in [2, head_dim = "
                         << getHeadDim() << "]";
  if (std::optional<int64_t> offset = getOffset())
    if (*offset < 0 || *offset + getRotaryDim() > getHeadDim())
      return emitOpError() << "offset " << *offset << " + rotary_dim "
                           << getRotaryDim() << " exceeds head_dim "
                           << getHeadDim()
                           << " (expected the rotated dims within each head)";
  if (!(getTheta().convertToFloat() > 0.0f))
    return emitOpError("theta must be positive");
  if (DenseElementsAttr f = getInvFreqAttr()) {
    auto type = llvm::cast<ShapedType>(f.getType());
    if (type.getRank() != 1 || type.getNumElements() != getRotaryDim() / 2)
      return emitOpError() << "inv_freq has " << type.getNumElements()
                           << " values (expected rotary_dim / 2 = "
                           << getRotaryDim() / 2 << ")";
    for (float x : f.getValues<float>())
      if (!std::isfinite(x) || !(x > 0.0f))
        return emitOpError() << "inv_freq value " << x
                             << " is not a positive finite frequency";
  }
  if (std::optional<APFloat> a = getAttentionFactor()) {
    float v = a->convertToFloat();
    if (!std::isfinite(v) || !(v > 0.0f))
      return emitOpError() << "attention_factor " << v
                           << " is not a positive finite scale";
  }
  return success();
}

LogicalResult AttentionOp::verify() {
  if (failed(checkPositive(*this, "num_heads", getNumHeads())) ||
      failed(checkPositive(*this, "num_kv_heads", getNumKvHeads())) ||
      failed(checkPositive(*this, "head_dim", getHeadDim())))
    return failure();
  if (getNumHeads() % getNumKvHeads() != 0)
    return emitOpError() << "num_heads " << getNumHeads()
                         << " is not a multiple of num_kv_heads "
                         << getNumKvHeads()
                         << " (expected whole groups of query heads per KV "
                            "head)";
  if (getVHeadDim() &&
      failed(checkPositive(*this, "v_head_dim", *getVHeadDim())))
    return failure();
  int64_t qWidth = getNumHeads() * getHeadDim();
  int64_t kvWidth = getNumKvHeads() * getHeadDim();
  int64_t vWidth = getNumKvHeads() * getValueHeadDim();
  int64_t outWidth = getNumHeads() * getValueHeadDim();
  StringRef vHead = getVHeadDim() ? "v_head_dim" : "head_dim";
  if (failed(checkWidth(*this, "q", getQ(), qWidth, "num_heads * head_dim")) ||
      failed(checkWidth(*this, "k", getK(), kvWidth,
                        "num_kv_heads * head_dim")) ||
      failed(checkWidth(*this, "v", getV(), vWidth,
                        ("num_kv_heads * " + vHead).str())) ||
      failed(checkWidth(*this, "result", getResult(), outWidth,
                        ("num_heads * " + vHead).str())))
    return failure();
  if (!(getScale().convertToFloat() > 0.0f))
    return emitOpError("scale must be positive");
  if (getLayer() < 0)
    return emitOpError() << "layer must be >= 0 (got " << getLayer() << ")";
  if (getSlidingWindow() && *getSlidingWindow() < 1)
    return emitOpError() << "sliding window must be positive (got "
                         << *getSlidingWindow() << ")";
  // One sink logit per query head (not per KV head: GQA shares K/V only).
  return checkVector(*this, "sinks", getSinks(), getNumHeads());
}

int64_t AttentionOp::getFlopsPerToken(int64_t contextLength) {
  int64_t visible = std::max<int64_t>(contextLength, 0);
  if (getSlidingWindow())
    visible = std::min<int64_t>(visible, *getSlidingWindow());
  // q k^T over head_dim and p v over v_head_dim: one multiply-add per
  // (head, dim, visible position) each.
  return satMul(satMul(2, satMul(getNumHeads(),
                                 getHeadDim() + getValueHeadDim())),
                visible);
}

LogicalResult MLAAttentionOp::verify() {
  if (failed(checkPositive(*this, "num_heads", getNumHeads())) ||
      failed(checkPositive(*this, "nope_dim", getNopeDim())) ||
      failed(checkPositive(*this, "rope_dim", getRopeDim())) ||
      failed(checkPositive(*this, "v_head_dim", getVHeadDim())) ||
      failed(checkPositive(*this, "kv_lora_rank", getKvLoraRank())))
    return failure();
  int64_t heads = getNumHeads(), nope = getNopeDim(), rope = getRopeDim(),
          vd = getVHeadDim(), latent = getKvLoraRank();
  // kv_b_proj's rows are per head [k_nope (nope_dim) | v (v_head_dim)]; its
  // columns are the latent the cache holds.
  if (differ(dim(getKvB(), 0), heads * (nope + vd)))
    return emitOpError() << "kv_b weight is " << shapeStr(getKvB())
                         << " (expected " << heads * (nope + vd)
                         << " = num_heads * (nope_dim + v_head_dim) rows)";
  if (failed(checkWidth(*this, "q", getQ(), heads * (nope + rope),
                        "num_heads * (nope_dim + rope_dim)")) ||
      failed(checkWidth(*this, "c_kv", getCKv(), latent,
                        "kv_lora_rank, the kv_b weight's columns")) ||
      failed(checkWidth(*this, "k_pe", getKPe(), rope, "rope_dim")) ||
      failed(checkWidth(*this, "result", getResult(), heads * vd,
                        "num_heads * v_head_dim")))
    return failure();
  if (!(getScale().convertToFloat() > 0.0f))
    return emitOpError("scale must be positive");
  if (getLayer() < 0)
    return emitOpError() << "layer must be >= 0 (got " << getLayer() << ")";
  return success();
}

int64_t MLAAttentionOp::getFlopsPerToken(int64_t contextLength) {
  int64_t visible = std::max<int64_t>(contextLength, 0);
  int64_t heads = getNumHeads(), latent = getKvLoraRank();
  // Per head: absorbing q_nope into the latent and the latent output into v
  // (nope_dim + v_head_dim) x kv_lora_rank multiply-adds, then scores over
  // kv_lora_rank + rope_dim and the weighted latent sum over kv_lora_rank
  // per visible position.
  int64_t absorb = satMul(latent, getNopeDim() + getVHeadDim());
  int64_t perPosition = satMul(2 * latent + getRopeDim(), visible);
  return satMul(2, satMul(heads, satAdd(absorb, perPosition)));
}

int64_t MLPOp::getIntermediateSize() {
  return getTransposed() ? dim(getUp(), 1) : dim(getUp(), 0);
}

LogicalResult MLPOp::verify() {
  if (getActivation() == Activation::SwigluOai)
    return emitOpError("activation swiglu_oai is for moe.experts only (its "
                       "clamp parameters live there)");
  int64_t d = width(getInput());
  int64_t i = getIntermediateSize();
  bool t = getTransposed();
  // nn.Linear layout: up/gate [I, D], down [D, I]; Conv1D layout transposes.
  StringRef inLayout = t ? "[D, I], transposed" : "[I, D]";
  StringRef outLayout = t ? "[I, D], transposed" : "[D, I]";
  if (failed(checkMatrix(*this, "up weight", getUp(), t ? d : i, t ? i : d,
                         inLayout)) ||
      (getGate() && failed(checkMatrix(*this, "gate weight", getGate(),
                                       t ? d : i, t ? i : d, inLayout))) ||
      failed(checkMatrix(*this, "down weight", getDown(), t ? i : d, t ? d : i,
                         outLayout)) ||
      failed(checkVector(*this, "up bias", getUpBias(), i)) ||
      failed(checkVector(*this, "down bias", getDownBias(), d)))
    return failure();
  return success();
}

int64_t MLPOp::getFlopsPerToken(int64_t) {
  int64_t matrices = getGate() ? 3 : 2;
  return satMul(2 * matrices, satNumElements(tensorType(getDown())));
}

LogicalResult LMHeadOp::verify() {
  if (differ(width(getInput()), dim(getWeight(), 1)))
    return emitOpError() << "input width " << width(getInput())
                         << " does not match the weight "
                         << shapeStr(getWeight()) << " ([vocab, hidden])";
  if (failed(checkWidth(*this, "result", getResult(), dim(getWeight(), 0),
                        "the weight's vocab size")))
    return failure();
  return checkVector(*this, "bias", getBias(), dim(getWeight(), 0));
}

int64_t LMHeadOp::getFlopsPerToken(int64_t) {
  return satMul(2, satNumElements(tensorType(getWeight())));
}

//===----------------------------------------------------------------------===//
// Routing
//===----------------------------------------------------------------------===//

LogicalResult RouterOp::verify() {
  if (differ(width(getInput()), dim(getWeight(), 1)))
    return emitOpError() << "input width " << width(getInput())
                         << " does not match the router weight "
                         << shapeStr(getWeight()) << " ([num_experts, hidden])";
  if (failed(checkWidth(*this, "result", getResult(), dim(getWeight(), 0),
                        "one logit per expert")))
    return failure();
  return checkVector(*this, "bias", getBias(), dim(getWeight(), 0));
}

int64_t RouterOp::getFlopsPerToken(int64_t) {
  return satMul(2, satNumElements(tensorType(getWeight())));
}

/// Routing tables are [T, k]: checks k and the shared token dimension.
static LogicalResult checkSlots(Operation *op, StringRef what, Value v,
                                int64_t k, Value like) {
  if (differ(width(v), k))
    return op->emitOpError() << what << " has " << width(v)
                             << " columns (expected top_k = " << k << ")";
  if (like && differ(dim(v, 0), dim(like, 0)))
    return op->emitOpError() << what << " has " << dim(v, 0)
                             << " rows (expected one per token, "
                             << dim(like, 0) << ")";
  return success();
}

static LogicalResult checkTopK(Operation *op, int64_t k, int64_t numExperts) {
  if (k < 1)
    return op->emitOpError() << "top_k must be at least 1 (got " << k << ")";
  if (numExperts != kDynamic && k > numExperts)
    return op->emitOpError() << "top_k = " << k
                             << " exceeds the number of experts " << numExperts;
  return success();
}

/// Group-limited top-k (DeepSeek-V3): `numGroups` equal groups of at least
/// two experts (a group scores its two best), `keepGroups` of them kept, and
/// enough experts in those for the k picks.
static LogicalResult checkGroups(Operation *op, int64_t k, int64_t numExperts,
                                 int64_t numGroups, int64_t keepGroups) {
  if (numGroups < 1)
    return op->emitOpError() << "n_group must be at least 1 (got "
                             << numGroups << ")";
  if (keepGroups < 1 || keepGroups > numGroups)
    return op->emitOpError() << "topk_group must be in [1, n_group = "
                             << numGroups << "] (got " << keepGroups << ")";
  if (numGroups == 1 || numExperts == kDynamic)
    return success();
  if (numExperts % numGroups != 0 || numExperts / numGroups < 2)
    return op->emitOpError()
           << "n_group " << numGroups << " does not split the " << numExperts
           << " experts into equal groups of at least 2 (a group scores "
              "its two best experts)";
  if (k > keepGroups * (numExperts / numGroups))
    return op->emitOpError() << "top_k = " << k << " exceeds the "
                             << keepGroups * (numExperts / numGroups)
                             << " experts of the topk_group = " << keepGroups
                             << " kept groups";
  return success();
}

LogicalResult TopKOp::verify() {
  if (failed(checkTopK(*this, getK(), width(getInput()))) ||
      failed(checkSlots(*this, "values", getValues(), getK(), getInput())) ||
      failed(checkSlots(*this, "indices", getIndices(), getK(), getInput())) ||
      failed(checkVector(*this, "selection_bias", getSelectionBias(),
                         width(getInput()))))
    return failure();
  if (getTopkGroup() && !getNGroup())
    return emitOpError("topk_group needs n_group");
  return checkGroups(*this, getK(), width(getInput()), getNGroup().value_or(1),
                     getTopkGroup().value_or(getNGroup().value_or(1)));
}

LogicalResult ScaleWeightsOp::verify() {
  double f = getFactor().convertToDouble();
  if (!std::isfinite(f) || !(f > 0.0))
    return emitOpError() << "factor " << f << " is not a positive finite scale";
  return success();
}

LogicalResult GatherColumnsOp::verify() {
  if (getInputs().empty())
    return emitOpError("needs at least one input");
  int64_t total = 0;
  for (Value in : getInputs()) {
    if (width(in) == kDynamic) {
      total = kDynamic;
      break;
    }
    total += width(in);
  }
  if (differ(width(getResult()), int64_t(getIndices().size())))
    return emitOpError() << "result width " << width(getResult())
                         << " does not match the " << getIndices().size()
                         << " indices";
  for (int64_t i : getIndices())
    if (i < 0 || (total != kDynamic && i >= total))
      return emitOpError() << "index " << i
                           << " is outside the inputs' columns [0, " << total
                           << ")";
  for (Value in : getInputs())
    if (differ(dim(in, 0), dim(getResult(), 0)))
      return emitOpError() << "input has " << dim(in, 0)
                           << " rows (expected one per token, "
                           << dim(getResult(), 0) << ")";
  return success();
}

OpFoldResult RenormalizeOp::fold(FoldAdaptor) {
  // Renormalizing is idempotent.
  if (getInput().getDefiningOp<RenormalizeOp>())
    return getInput();
  return {};
}

LogicalResult CapacityOp::verify() {
  if (failed(checkPositive(*this, "num_experts", getNumExperts())))
    return failure();
  if (!(getCapacityFactor().convertToDouble() > 0.0))
    return emitOpError("capacity factor must be positive");
  if (getMinCapacity() < 0)
    return emitOpError() << "min capacity must be >= 0 (got "
                         << getMinCapacity() << ")";
  int64_t k = width(getIndices());
  if (failed(checkTopK(*this, k, getNumExperts())) ||
      failed(checkSlots(*this, "weights", getWeights(), k, getIndices())) ||
      failed(checkSlots(*this, "result", getResult(), k, getIndices())) ||
      failed(checkSlots(*this, "admitted", getAdmitted(), k, getIndices())))
    return failure();
  return success();
}

LogicalResult ExpertMapOp::verify() {
  int64_t numExperts = dim(getExpertOffsets(), 0) - 1;
  if (numExperts < 1)
    return emitOpError("expert_offsets needs num_experts + 1 >= 2 entries");
  if (getAdmitted() &&
      tensorType(getAdmitted()).getShape() != tensorType(getIndices()).getShape())
    return emitOpError() << "admitted is " << shapeStr(getAdmitted())
                         << " (expected the shape of indices "
                         << shapeStr(getIndices()) << ")";
  return checkTopK(*this, width(getIndices()), numExperts);
}

LogicalResult GateOp::verify() {
  int64_t numExperts = width(getLogits());
  int64_t k = getRouting().getTopK();
  if (failed(checkTopK(*this, k, numExperts)) ||
      failed(checkSlots(*this, "slot_expert", getSlotExpert(), k, getLogits())) ||
      failed(checkSlots(*this, "slot_weight", getSlotWeight(), k, getLogits())))
    return failure();
  if (differ(dim(getExpertOffsets(), 0),
             numExperts == kDynamic ? kDynamic : numExperts + 1))
    return emitOpError() << "expert_offsets has " << dim(getExpertOffsets(), 0)
                         << " entries (expected num_experts + 1 = "
                         << numExperts + 1 << ")";
  if (failed(checkVector(*this, "selection_bias", getSelectionBias(),
                         numExperts)))
    return failure();
  // The bias shifts the scores top-k ranks; without them (top-k of the
  // logits) it would change the weights too.
  if (getSelectionBias() && !getRouting().getScoreBeforeTopk())
    return emitOpError("selection_bias needs score_before_topk (expected a "
                       "bias on the scores that top-k ranks)");
  return checkGroups(*this, k, numExperts, getRouting().getNGroup(),
                     getRouting().getTopkGroup());
}

//===----------------------------------------------------------------------===//
// Dispatch, experts, combine
//===----------------------------------------------------------------------===//

LogicalResult DispatchOp::verify() {
  if (getTopK() < 1)
    return emitOpError() << "top_k must be at least 1 (got " << getTopK()
                         << ")";
  return checkWidth(*this, "result", getResult(), width(getInput()),
                    "rows are copies of input rows");
}

static LogicalResult verifyExpertsNeighbors(ExpertsOp experts) {
  Value in = experts.getInput();
  while (auto a2a = in.getDefiningOp<AllToAllOp>())
    in = a2a.getInput();
  if (auto dispatch = in.getDefiningOp<DispatchOp>())
    if (dispatch.getTopK() != experts.getTopK())
      return experts.emitOpError()
             << "has top_k " << experts.getTopK()
             << " but its input was dispatched with top_k "
             << dispatch.getTopK();
  // The exchanges around the experts move rows by the experts' placement:
  // a layer has one (MoEOpInterface, LayerOp::setExpertPlacement).
  PlacementAttr placement = experts.getPlacementAttr();
  auto checkExchange = [&](AllToAllOp x, StringRef side) -> LogicalResult {
    if (x.getPlacementAttr() == placement)
      return success();
    InFlightDiagnostic diag = experts.emitOpError() << "placement ";
    if (placement)
      diag << placement;
    else
      diag << "(none)";
    return diag << " differs from the placement " << x.getPlacementAttr()
                << " of the exchange of its " << side
                << " (expected one placement for a layer's experts and "
                   "exchanges)";
  };
  for (Value v = experts.getInput(); auto x = v.getDefiningOp<AllToAllOp>();) {
    if (failed(checkExchange(x, "input")))
      return failure();
    v = x.getInput();
  }
  SmallVector<Operation *> users(experts.getResult().getUsers());
  while (!users.empty()) {
    auto x = dyn_cast<AllToAllOp>(users.pop_back_val());
    if (!x)
      continue;
    if (failed(checkExchange(x, "output")))
      return failure();
    users.append(x->user_begin(), x->user_end());
  }
  return success();
}

int64_t ExpertsOp::getFlopsPerToken(int64_t) {
  int64_t matrices = isGated() ? 3 : 2;
  // One expert's down matrix: a 1/E slice of the stacked weight.
  int64_t perExpert = satMul(
      2 * matrices, satNumElements(tensorType(getDown())) /
                                 std::max<int64_t>(getNumExperts(), 1));
  return satMul(std::min(getTopK(), getNumExperts()), perExpert);
}

int64_t ExpertsOp::getIntermediateSize() { return dim(getUp(), 1); }

int64_t ExpertsOp::getParamsPerExpert() {
  int64_t params = 0;
  int64_t experts = std::max<int64_t>(getNumExperts(), 1);
  for (Value v : getExpertWeights())
    params = satAdd(params, satNumElements(tensorType(v)) / experts);
  return params;
}

SmallVector<Value> ExpertsOp::getExpertWeights() {
  SmallVector<Value> weights;
  for (Value v : {getUp(), getGate(), getDown(), getUpBias(), getDownBias(),
                  getGateBias()})
    if (v)
      weights.push_back(v);
  return weights;
}

void ExpertsOp::setExpertPlacement(PlacementAttr placement) {
  if (placement)
    setPlacementAttr(placement);
  else
    removePlacementAttr();
}

/// Checks an expert-stacked weight against [experts, dims...] (kDynamic:
/// any size), naming the layout it should have.
static LogicalResult checkStacked(Operation *op, StringRef what, Value weight,
                                  ArrayRef<int64_t> expected,
                                  StringRef layout) {
  if (!weight)
    return success();
  ArrayRef<int64_t> shape = tensorType(weight).getShape();
  bool bad = shape.size() != expected.size();
  for (size_t i = 0; !bad && i < shape.size(); ++i)
    bad = differ(shape[i], expected[i]);
  if (!bad)
    return success();
  std::string want = "[";
  llvm::raw_string_ostream os(want);
  llvm::interleave(
      expected, os,
      [&](int64_t d) { d == kDynamic ? os << "?" : os << d; }, ", ");
  return op->emitOpError() << what << " is " << shapeStr(weight)
                           << " (expected " << want << "], " << layout << ")";
}

LogicalResult ExpertsOp::verify() {
  int64_t numExperts = getNumExperts();
  if (numExperts < 1)
    return emitOpError("expert_offsets needs num_experts + 1 >= 2 entries");
  if (failed(checkTopK(*this, getTopK(), numExperts)))
    return failure();
  int64_t d = width(getInput());
  int64_t i = getIntermediateSize();
  if (failed(checkStacked(*this, "up weight", getUp(), {numExperts, i, d},
                          "[E, I, D]")) ||
      failed(checkStacked(*this, "gate weight", getGate(), {numExperts, i, d},
                          "[E, I, D]")) ||
      failed(checkStacked(*this, "down weight", getDown(), {numExperts, d, i},
                          "[E, D, I]")) ||
      failed(checkStacked(*this, "up bias", getUpBias(), {numExperts, i},
                          "[E, I]")) ||
      failed(checkStacked(*this, "down bias", getDownBias(), {numExperts, d},
                          "[E, D]")) ||
      failed(checkStacked(*this, "gate bias", getGateBias(), {numExperts, i},
                          "[E, I]")))
    return failure();
  if (getGateBias() && !getGate())
    return emitOpError("gate bias without a gate weight (expected gated "
                       "experts)");
  // swiglu_oai is the only activation with parameters, and cannot run
  // without them: HF's GptOssExperts always clamps.
  bool oai = getActivation() == Activation::SwigluOai;
  if (oai && !getGate())
    return emitOpError("activation swiglu_oai needs a gate weight");
  if (oai != bool(getSwigluLimit()) || oai != bool(getSwigluAlpha()))
    return emitOpError() << "swiglu_limit and swiglu_alpha are required with "
                            "activation swiglu_oai and only with it (got "
                         << stringifyActivation(getActivation()) << ")";
  if (oai) {
    float limit = getSwigluLimit()->convertToFloat();
    float alpha = getSwigluAlpha()->convertToFloat();
    if (!std::isfinite(limit) || !(limit > 0.0f))
      return emitOpError() << "swiglu_limit " << limit
                           << " is not a positive finite clamp";
    if (!std::isfinite(alpha))
      return emitOpError() << "swiglu_alpha " << alpha << " is not finite";
  }
  if (failed(checkWidth(*this, "result", getResult(), d, "the input width")))
    return failure();
  if (auto placement = getPlacement()) {
    if (placement->getNumExperts() != numExperts)
      return emitOpError() << "placement lists " << placement->getNumExperts()
                           << " experts (expected " << numExperts << ")";
    int64_t slices = placement->getSlices();
    if (getIntermediateSize() % slices)
      return emitOpError() << "placement slices intermediate size "
                           << getIntermediateSize() << " in " << slices
                           << " parts (expected a divisor of it)";
  }
  return success();
}

ParseResult ExpertsOp::parse(OpAsmParser &parser, OperationState &result) {
  OpAsmParser::UnresolvedOperand input, offsets;
  int64_t topK = 0;
  StringRef actName;
  SMLoc actLoc;
  if (parser.parseOperand(input) || parser.parseComma() ||
      parser.parseOperand(offsets) || parser.parseKeyword("top_k") ||
      parser.parseInteger(topK) || parser.parseKeyword("act"))
    return failure();
  actLoc = parser.getCurrentLocation();
  if (parser.parseKeyword(&actName))
    return failure();
  std::optional<Activation> act = symbolizeActivation(actName);
  if (!act)
    return parser.emitError(actLoc, "unknown activation '")
           << actName
           << "' (expected gelu, gelu_tanh, relu, silu or swiglu_oai)";
  // `limit L alpha A`: swiglu_oai's parameters (the verifier requires them
  // with it and rejects them elsewhere).
  Builder &builder = parser.getBuilder();
  for (auto [keyword, name] :
       {std::pair(StringRef("limit"), getSwigluLimitAttrName(result.name)),
        std::pair(StringRef("alpha"), getSwigluAlphaAttrName(result.name))}) {
    if (failed(parser.parseOptionalKeyword(keyword)))
      continue;
    double value;
    if (parser.parseFloat(value))
      return failure();
    result.addAttribute(name, builder.getF32FloatAttr(float(value)));
  }

  static constexpr StringLiteral roles[] = {
      "up", "gate", "down", "up_bias", "down_bias", "gate_bias"};
  constexpr unsigned kRoles = std::size(roles);
  OpAsmParser::UnresolvedOperand operands[kRoles];
  Type types[kRoles];
  bool seen[kRoles] = {};
  while (true) {
    SMLoc at = parser.getCurrentLocation();
    StringRef key;
    if (failed(parser.parseOptionalKeyword(
            &key, {"up", "gate", "down", "up_bias", "down_bias", "gate_bias"})))
      break;
    unsigned idx = llvm::find(roles, key) - std::begin(roles);
    if (seen[idx])
      return parser.emitError(at, "duplicate weight '") << key << "'";
    seen[idx] = true;
    if (parser.parseOperand(operands[idx]) ||
        parser.parseColonType(types[idx]))
      return failure();
  }
  if (!seen[0] || !seen[2])
    return parser.emitError(parser.getCurrentLocation(),
                            "expected 'up %w : type' and 'down %w : type' "
                            "stacked weights");
  if (succeeded(parser.parseOptionalKeyword("placement"))) {
    PlacementAttr placement;
    if (parser.parseCustomAttributeWithFallback(placement))
      return failure();
    result.addAttribute(getPlacementAttrName(result.name), placement);
  }
  Type inputType, offsetsType, resultType;
  if (parser.parseOptionalAttrDict(result.attributes) ||
      parser.parseColonType(inputType) || parser.parseComma() ||
      parser.parseType(offsetsType) || parser.parseArrow() ||
      parser.parseType(resultType))
    return failure();

  Builder &b = parser.getBuilder();
  result.addAttribute(getTopKAttrName(result.name),
                      b.getI64IntegerAttr(topK));
  result.addAttribute(getActivationAttrName(result.name),
                      ActivationAttr::get(b.getContext(), *act));
  if (parser.resolveOperand(input, inputType, result.operands) ||
      parser.resolveOperand(offsets, offsetsType, result.operands))
    return failure();
  for (unsigned i = 0; i < kRoles; ++i)
    if (seen[i] &&
        parser.resolveOperand(operands[i], types[i], result.operands))
      return failure();
  result.addAttribute(
      getOperandSegmentSizesAttrName(result.name),
      b.getDenseI32ArrayAttr({1, 1, int32_t(seen[0]), int32_t(seen[1]),
                              int32_t(seen[2]), int32_t(seen[3]),
                              int32_t(seen[4]), int32_t(seen[5])}));
  result.addTypes(resultType);
  return success();
}

void ExpertsOp::print(OpAsmPrinter &p) {
  p << " " << getInput() << ", " << getExpertOffsets() << " top_k "
    << getTopK() << " act " << stringifyActivation(getActivation());
  if (std::optional<APFloat> limit = getSwigluLimit()) {
    p << " limit ";
    p.printFloat(*limit);
  }
  if (std::optional<APFloat> alpha = getSwigluAlpha()) {
    p << " alpha ";
    p.printFloat(*alpha);
  }
  auto printWeight = [&](StringRef role, Value value) {
    if (value)
      p << " " << role << " " << value << " : " << value.getType();
  };
  printWeight("up", getUp());
  printWeight("gate", getGate());
  printWeight("down", getDown());
  printWeight("up_bias", getUpBias());
  printWeight("down_bias", getDownBias());
  printWeight("gate_bias", getGateBias());
  if (auto placement = getPlacementAttr()) {
    p << " placement ";
    p.printStrippedAttrOrType(placement);
  }
  p.printOptionalAttrDict((*this)->getAttrs(),
                          {getTopKAttrName(), getActivationAttrName(),
                           getPlacementAttrName(), getSwigluLimitAttrName(),
                           getSwigluAlphaAttrName(),
                           getOperandSegmentSizesAttrName()});
  p << " : " << getInput().getType() << ", " << getExpertOffsets().getType()
    << " -> " << getType();
}

LogicalResult CombineOp::verify() {
  if (width(getSlotWeight()) == kDynamic)
    return emitOpError("slot_weight must have a static top_k dimension");
  return checkWidth(*this, "result", getResult(), width(getInput()),
                    "the expert output width");
}

LogicalResult SigmoidGateOp::verify() {
  return checkWidth(*this, "gate_logit", getGateLogit(), 1,
                    "one gate logit per token");
}

LogicalResult ResidualMixOp::verify() {
  return checkWidth(*this, "coef_logits", getCoefLogits(), 2,
                    "two mixing logits per token: MoE and dense MLP");
}

//===----------------------------------------------------------------------===//
// AllToAllOp
//===----------------------------------------------------------------------===//

LogicalResult AllToAllOp::verify() {
  llvm::SmallDenseSet<int16_t> axes;
  for (int16_t axis : getGridAxes()) {
    if (axis < 0)
      return emitOpError() << "grid axis " << axis << " is negative";
    if (!axes.insert(axis).second)
      return emitOpError() << "grid axis " << axis
                           << " appears twice (expected distinct axes)";
  }
  int64_t numExperts = dim(getExpertOffsets(), 0) - 1;
  if (getPlacement().getNumExperts() != numExperts)
    return emitOpError() << "placement lists "
                         << getPlacement().getNumExperts()
                         << " experts (expected " << numExperts
                         << " from expert_offsets)";
  return success();
}

LogicalResult AllToAllOp::verifySymbolUses(SymbolTableCollection &symbolTable) {
  auto grid =
      symbolTable.lookupNearestSymbolFrom<shard::GridOp>(*this, getGridAttr());
  if (!grid)
    return emitOpError() << getGridAttr()
                         << " does not name a shard.grid of the enclosing "
                            "moe.model";
  ArrayRef<int64_t> shape = grid.getShape();
  for (int16_t axis : getGridAxes())
    if (axis >= int64_t(shape.size()))
      return emitOpError() << "grid axis " << axis << " is out of range for "
                           << getGridAttr() << " with " << shape.size()
                           << " axes";
  if (int64_t size = getGridRankCount(shape); size > 0) {
    if (getPlacement().getNumRanks() != size)
      return emitOpError() << "placement spans "
                           << getPlacement().getNumRanks()
                           << " ranks (expected the " << size
                           << " ranks of grid " << getGridAttr() << ")";
  }
  return success();
}

OpFoldResult AllToAllOp::fold(FoldAdaptor) {
  // An exchange within groups of one rank moves nothing.
  if (getGridAxes().empty())
    return getInput();
  auto grid = SymbolTable::lookupNearestSymbolFrom<shard::GridOp>(
      *this, getGridAttr());
  if (!grid)
    return {};
  ArrayRef<int64_t> shape = grid.getShape();
  for (int16_t axis : getGridAxes())
    if (axis >= int64_t(shape.size()) || shape[axis] != 1)
      return {};
  return getInput();
}

#define GET_OP_CLASSES
#include "moe/MoEOps.cpp.inc"

//===----------------------------------------------------------------------===//
// Device grids
//===----------------------------------------------------------------------===//

int64_t mlir::moe::getGridRankCount(ArrayRef<int64_t> shape) {
  int64_t ranks = 1;
  for (int64_t d : shape)
    if (d <= 0 || __builtin_mul_overflow(ranks, d, &ranks))
      return -1;
  return ranks;
}

int64_t mlir::moe::getGridRankCount(ModelOp model) {
  auto grids = model.getBodyBlock().getOps<shard::GridOp>();
  if (grids.empty())
    return 1;
  return getGridRankCount((*grids.begin()).getShape());
}

FailureOr<int64_t> mlir::moe::getPlacementRankCount(ModelOp model,
                                                    StringRef pass) {
  auto grids = model.getBodyBlock().getOps<shard::GridOp>();
  if (grids.empty())
    return 1;
  shard::GridOp grid = *grids.begin();
  // The grid may come from user IR: static, and small enough to place on.
  int64_t ranks = getGridRankCount(grid.getShape());
  if (ranks < 1 || ranks > (int64_t(1) << 16))
    return grid.emitError() << pass << ": device grid of shape ["
                            << grid.getShape()
                            << "] (expected static sizes, at most 65536 ranks)";
  return ranks;
}
