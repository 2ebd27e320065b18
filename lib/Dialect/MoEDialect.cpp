//===- MoEDialect.cpp - moe dialect and attributes ------------------------===//

#include "moe/Dialect/MoEDialect.h"
#include "moe/Dialect/MoEOps.h"

#include "mlir/Dialect/Shard/IR/ShardDialect.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/ADT/TypeSwitch.h"

#include <cmath>

using namespace mlir;
using namespace mlir::moe;

#include "moe/MoEOpsDialect.cpp.inc"

#include "moe/MoEEnums.cpp.inc"

#define GET_ATTRDEF_CLASSES
#include "moe/MoEAttrs.cpp.inc"

void MoEDialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "moe/MoEOps.cpp.inc"
      >();
  addAttributes<
#define GET_ATTRDEF_LIST
#include "moe/MoEAttrs.cpp.inc"
      >();
}

//===----------------------------------------------------------------------===//
// RoutingAttr
//===----------------------------------------------------------------------===//

LogicalResult RoutingAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                                  int64_t topK, ScoreFn score,
                                  bool scoreBeforeTopk, bool normTopkProb,
                                  APFloat capacityFactorValue,
                                  int64_t minCapacity, bool dropTokens,
                                  int64_t nGroup, int64_t topkGroup,
                                  APFloat routedScalingFactorValue) {
  double capacityFactor = capacityFactorValue.convertToDouble();
  double scaling = routedScalingFactorValue.convertToDouble();
  if (topK < 1)
    return emitError() << "top_k must be at least 1 (got " << topK << ")";
  if (!(capacityFactor >= 0.0) || !std::isfinite(capacityFactor))
    return emitError() << "capacity_factor must be a finite number >= 0 (got "
                       << capacityFactor << ")";
  if (minCapacity < 0)
    return emitError() << "min_capacity must be >= 0 (got " << minCapacity
                       << ")";
  if (dropTokens && capacityFactor <= 0.0)
    return emitError()
           << "drop_tokens needs a capacity_factor > 0 (expected the "
              "capacity that decides which tokens are dropped)";
  if (nGroup < 1)
    return emitError() << "n_group must be at least 1 (got " << nGroup << ")";
  if (topkGroup < 1 || topkGroup > nGroup)
    return emitError() << "topk_group must be in [1, n_group = " << nGroup
                       << "] (got " << topkGroup << ")";
  // Group limiting ranks scores before the pick; a group of the logits'
  // top-k (score_before_topk = false) has no such scores.
  if (nGroup > 1 && !scoreBeforeTopk)
    return emitError() << "n_group > 1 needs score_before_topk (expected the "
                          "groups to rank scores, not logits)";
  if (!(scaling > 0.0) || !std::isfinite(scaling))
    return emitError() << "routed_scaling_factor must be a finite number > 0 "
                          "(got "
                       << scaling << ")";
  return success();
}

int64_t RoutingAttr::getCapacity(int64_t numTokens, int64_t numExperts) const {
  if (!getDropTokens() || getCapacityFactorValue() <= 0.0 || numExperts <= 0)
    return -1;
  double slots = getCapacityFactorValue() * double(numTokens) * double(getTopK()) /
                 double(numExperts);
  return std::max<int64_t>(getMinCapacity(), int64_t(std::ceil(slots)));
}

Attribute RoutingAttr::parse(AsmParser &parser, Type) {
  int64_t topK = -1, minCapacity = 0, nGroup = 1, topkGroup = 1;
  ScoreFn score = ScoreFn::Softmax;
  bool scoreBeforeTopk = true, normTopkProb = false, dropTokens = false;
  double capacityFactor = 0.0, routedScalingFactor = 1.0;
  llvm::StringSet<> seen;
  SMLoc loc = parser.getCurrentLocation();

  auto parseBool = [&](bool &value) -> ParseResult {
    StringRef word;
    SMLoc at = parser.getCurrentLocation();
    if (parser.parseKeyword(&word))
      return failure();
    if (word != "true" && word != "false")
      return parser.emitError(at, "expected true or false");
    value = word == "true";
    return success();
  };
  auto parseEntry = [&]() -> ParseResult {
    StringRef key;
    SMLoc at = parser.getCurrentLocation();
    if (parser.parseKeyword(&key) || parser.parseEqual())
      return failure();
    if (!seen.insert(key).second)
      return parser.emitError(at, "duplicate routing parameter '") << key << "'";
    if (key == "top_k")
      return parser.parseInteger(topK);
    if (key == "min_capacity")
      return parser.parseInteger(minCapacity);
    if (key == "capacity_factor")
      return parser.parseFloat(capacityFactor);
    if (key == "n_group")
      return parser.parseInteger(nGroup);
    if (key == "topk_group")
      return parser.parseInteger(topkGroup);
    if (key == "routed_scaling_factor")
      return parser.parseFloat(routedScalingFactor);
    if (key == "norm_topk_prob")
      return parseBool(normTopkProb);
    if (key == "drop_tokens")
      return parseBool(dropTokens);
    if (key == "score_before_topk")
      return parseBool(scoreBeforeTopk);
    if (key == "score") {
      StringRef name;
      SMLoc nameLoc = parser.getCurrentLocation();
      if (parser.parseKeyword(&name))
        return failure();
      std::optional<ScoreFn> fn = symbolizeScoreFn(name);
      if (!fn)
        return parser.emitError(nameLoc, "unknown score function '")
               << name << "' (expected softmax or sigmoid)";
      score = *fn;
      return success();
    }
    return parser.emitError(at, "unknown routing parameter '")
           << key
           << "' (expected top_k, score, score_before_topk, norm_topk_prob, "
              "capacity_factor, min_capacity, drop_tokens, n_group, topk_group "
              "or routed_scaling_factor)";
  };
  if (parser.parseLess() ||
      parser.parseCommaSeparatedList(AsmParser::Delimiter::None, parseEntry) ||
      parser.parseGreater())
    return {};
  if (topK < 0) {
    parser.emitError(loc, "#moe.routing needs top_k");
    return {};
  }
  return RoutingAttr::getChecked([&] { return parser.emitError(loc); },
                                 parser.getContext(), topK, score,
                                 scoreBeforeTopk, normTopkProb,
                                 APFloat(capacityFactor), minCapacity,
                                 dropTokens, nGroup, topkGroup,
                                 APFloat(routedScalingFactor));
}

void RoutingAttr::print(AsmPrinter &printer) const {
  printer << "<top_k = " << getTopK();
  if (getScore() != ScoreFn::Softmax)
    printer << ", score = " << stringifyScoreFn(getScore());
  if (!getScoreBeforeTopk())
    printer << ", score_before_topk = false";
  if (getNormTopkProb())
    printer << ", norm_topk_prob = true";
  if (getCapacityFactorValue() != 0.0) {
    printer << ", capacity_factor = ";
    printer.printFloat(getCapacityFactor());
  }
  if (getMinCapacity() != 0)
    printer << ", min_capacity = " << getMinCapacity();
  if (getDropTokens())
    printer << ", drop_tokens = true";
  if (getNGroup() != 1)
    printer << ", n_group = " << getNGroup();
  if (getTopkGroup() != 1)
    printer << ", topk_group = " << getTopkGroup();
  if (getRoutedScalingFactorValue() != 1.0) {
    printer << ", routed_scaling_factor = ";
    printer.printFloat(getRoutedScalingFactor());
  }
  printer << ">";
}

//===----------------------------------------------------------------------===//
// Discardable attributes
//===----------------------------------------------------------------------===//

/// The attributes the passes leave on ops for later passes and the plan
/// emitter (declared in MoEDialect.td): each on the op kind it belongs to,
/// of its type and range. What they say about other ops (a slice's buffer
/// among the model's buffers) is checked where they are read.
LogicalResult MoEDialect::verifyOperationAttribute(Operation *op,
                                                   NamedAttribute attr) {
  StringAttr name = attr.getName();
  Attribute value = attr.getValue();
  auto error = [&]() {
    return op->emitOpError() << "attribute '" << name.strref() << "' ";
  };
  auto nonNegativeFields = [&](ArrayRef<StringRef> fields) -> LogicalResult {
    auto dict = dyn_cast<DictionaryAttr>(value);
    if (!dict)
      return error() << "must be a dictionary";
    for (StringRef field : fields) {
      auto v = dict.getAs<IntegerAttr>(field);
      if (!v || v.getInt() < 0)
        return error() << "needs a non-negative integer '" << field << "'";
    }
    if (dict.size() != fields.size())
      return error() << "has " << dict.size() << " fields (expected "
                     << llvm::join(fields, ", ") << ")";
    return success();
  };
  auto on = [&](bool ok, StringRef what) -> LogicalResult {
    if (ok)
      return success();
    return error() << "belongs on " << what;
  };

  if (name == getBuffersAttrHelper().getName()) {
    if (failed(on(isa<ModelOp>(op), "a moe.model")))
      return failure();
    auto list = dyn_cast<ArrayAttr>(value);
    if (!list || !llvm::all_of(list, llvm::IsaPred<BufferAttr>))
      return error() << "must be an array of #moe.buffer";
    return success();
  }
  if (name == getSlicesAttrHelper().getName()) {
    auto slices = dyn_cast<DenseI64ArrayAttr>(value);
    if (!slices || slices.size() != 3 * int64_t(op->getNumResults()))
      return error() << "must hold (buffer, column, width) for each of the "
                     << op->getNumResults() << " results";
    for (int64_t i = 0; i < slices.size(); i += 3)
      if (slices[i] < 0 || slices[i + 1] < 0 || slices[i + 2] < 1)
        return error() << "has result " << i / 3 << " at buffer "
                       << slices[i] << ", column " << slices[i + 1]
                       << ", width " << slices[i + 2]
                       << " (expected buffer, column >= 0 and width >= 1)";
    return success();
  }
  if (name == getScratchAttrHelper().getName()) {
    if (failed(on(isa<MLPOp, AllToAllOp>(op), "a moe.mlp or moe.all_to_all")))
      return failure();
    auto scratch = dyn_cast<DenseI64ArrayAttr>(value);
    if (!scratch ||
        llvm::any_of(scratch.asArrayRef(), [](int64_t b) { return b < 0; }))
      return error() << "must list buffers";
    // moe.mlp: hidden (and activated); a data-parallel dispatch exchange:
    // received rows, their order and offsets, the slots sent and the counts.
    if (isa<MLPOp>(op) && (scratch.empty() || scratch.size() > 2))
      return error() << "must list one or two buffers (hidden, activated)";
    if (isa<AllToAllOp>(op) && scratch.size() != 6)
      return error() << "must list six buffers (received rows, recv_sorted, "
                        "recv_offsets, send_slots, counts, relay)";
    return success();
  }
  if (name == getMemoryAttrHelper().getName()) {
    if (failed(on(isa<ModelOp>(op), "a moe.model")))
      return failure();
    return nonNegativeFields({"arena_bytes", "kv_cache_bytes", "max_seq_len",
                              "max_tokens", "unplanned_bytes"});
  }
  if (name == getStreamingAttrHelper().getName()) {
    if (failed(on(isa<ModelOp>(op), "a moe.model")))
      return failure();
    return nonNegativeFields({"budget_bytes", "peak_bytes",
                              "streamed_weight_bytes", "unstreamed_bytes"});
  }
  if (name == getPeakBytesAttrHelper().getName()) {
    if (failed(on(isa<ModelOp>(op), "a moe.model")))
      return failure();
    auto peak = dyn_cast<DenseI64ArrayAttr>(value);
    if (!peak || peak.empty() ||
        llvm::any_of(peak.asArrayRef(), [](int64_t b) { return b < 0; }))
      return error() << "must list non-negative bytes per rank";
    return success();
  }
  if (name == getOnDemandAttrHelper().getName()) {
    if (failed(on(isa<ExpertsOp>(op), "a moe.experts")))
      return failure();
    if (!isa<UnitAttr>(value))
      return error() << "must be a unit attribute";
    return success();
  }
  if (name == getPrefetchDistanceAttrHelper().getName()) {
    if (failed(on(isa<LayerOp>(op), "a moe.layer")))
      return failure();
    auto distance = dyn_cast<IntegerAttr>(value);
    if (!distance || distance.getInt() < 0)
      return error() << "must be a layer count >= 0";
    return success();
  }
  if (name == getDecodeGraphAttrHelper().getName()) {
    if (failed(on(isa<GraphOp>(op), "a moe.graph")))
      return failure();
    if (!isa<UnitAttr>(value))
      return error() << "must be a unit attribute";
    return success();
  }
  if (name == getTensorParallelAttrHelper().getName()) {
    if (failed(on(isa<ModelOp>(op), "a moe.model")))
      return failure();
    auto ways = dyn_cast<IntegerAttr>(value);
    if (!ways || ways.getInt() < 1)
      return error() << "must be a group size >= 1";
    return success();
  }
  if (name == getDataParallelAttrHelper().getName()) {
    if (failed(on(isa<ModelOp>(op), "a moe.model")))
      return failure();
    auto groups = dyn_cast<IntegerAttr>(value);
    if (!groups || groups.getInt() < 1)
      return error() << "must be a group count >= 1";
    return success();
  }
  if (name == getTensorSliceAttrHelper().getName()) {
    auto kind = dyn_cast<StringAttr>(value);
    StringRef k = kind ? kind.getValue() : "";
    bool ok = isa<LinearOp>(op) ? (k == "column" || k == "column_qkv" || k == "row")
              : isa<RotaryOp, AttentionOp, MLAAttentionOp, RMSNormOp>(op)
                  ? k == "heads"
              : isa<MLPOp>(op) ? k == "ffn"
              : isa<EmbeddingOp, LMHeadOp>(op) ? k == "vocab"
                               : false;
    if (!ok)
      return error() << "must be \"column\", \"column_qkv\" or \"row\" on "
                        "moe.linear, \"heads\" on moe.rotary, moe.rms_norm, "
                        "moe.attention and moe.mla_attention, \"ffn\" on "
                        "moe.mlp, \"vocab\" on moe.embedding and moe.lm_head";
    return success();
  }
  return op->emitOpError() << "has unknown moe attribute '" << name.strref()
                           << "' (expected moe.buffers, moe.slices, "
                              "moe.scratch, moe.memory, moe.peak_bytes, "
                              "moe.streaming, moe.on_demand, "
                              "moe.prefetch_distance, moe.decode_graph, "
                              "moe.tensor_parallel, moe.data_parallel or "
                              "moe.tensor_slice)";
}

//===----------------------------------------------------------------------===//
// BufferAttr
//===----------------------------------------------------------------------===//

LogicalResult BufferAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                                 StringRef name, Type type, int64_t rowElems,
                                 int64_t rowsPerToken, int64_t fixedRows,
                                 int64_t offset, int64_t first, int64_t last) {
  if (!type.isF32() && !type.isBF16() && !type.isF16() &&
      !type.isInteger(32) && !type.isInteger(64))
    return emitError() << "buffer '" << name << "' has type " << type
                       << " (expected f32, bf16, f16, i32 or i64)";
  if (rowElems < 1 || rowsPerToken < 0 || fixedRows < 0 ||
      rowsPerToken + fixedRows < 1)
    return emitError() << "buffer '" << name
                       << "' has no rows or columns (expected row_elems >= 1 "
                          "and rows_per_token + fixed_rows >= 1)";
  if (offset < 0 || offset % 64)
    return emitError() << "buffer '" << name << "' at offset " << offset
                       << " (expected a non-negative multiple of 64)";
  if (first < -1 || last < first || (first < 0) != (last < 0))
    return emitError() << "buffer '" << name << "' lives from step " << first
                       << " to " << last
                       << " (expected 0 <= first <= last, or both -1)";
  return success();
}

//===----------------------------------------------------------------------===//
// SourceAttr
//===----------------------------------------------------------------------===//

LogicalResult SourceAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                                 StringRef tensor, int64_t offset,
                                 int64_t stride, bool transposed) {
  if (tensor.empty())
    return emitError() << "source has an empty tensor name";
  size_t at = tensor.find("{e}");
  if (at != StringRef::npos) {
    if (tensor.find("{e}", at + 1) != StringRef::npos)
      return emitError() << "source pattern '" << tensor
                         << "' has {e} twice (expected once)";
    if (offset != 0 || stride != 1 || transposed)
      return emitError() << "source pattern '" << tensor
                         << "' names per-expert tensors (expected no offset, "
                            "stride or transposed)";
    return success();
  }
  if (offset < 0 || stride < 1)
    return emitError() << "source '" << tensor << "' has offset " << offset
                       << " and stride " << stride
                       << " (expected offset >= 0 and stride >= 1)";
  return success();
}

LogicalResult QuantAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                                WeightFormat format, StringRef scale,
                                ArrayRef<int64_t> block) {
  if (scale.empty())
    return emitError() << "quant has an empty scale tensor name";
  if (block.size() != 2 || block[0] < 1 || block[1] < 1)
    return emitError() << "quant block has " << block.size()
                       << " sizes (expected [rows, columns], each >= 1)";
  // MXFP4 scales one row's 32 consecutive values (OCP microscaling).
  if (format == WeightFormat::MXFP4 && (block[0] != 1 || block[1] != 32))
    return emitError() << "quant mxfp4 has block [" << block[0] << ", "
                       << block[1] << "] (expected [1, 32])";
  return success();
}

std::string SourceAttr::getExpertTensor(int64_t expert) const {
  std::string name = getTensor().str();
  size_t at = name.find("{e}");
  if (at != std::string::npos)
    name.replace(at, 3, std::to_string(expert));
  return name;
}

//===----------------------------------------------------------------------===//
// PlacementAttr
//===----------------------------------------------------------------------===//

LogicalResult
PlacementAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                      int64_t numRanks, ArrayRef<int64_t> expertRanks,
                      ArrayRef<int64_t> replicas, int64_t slices) {
  if (numRanks < 1)
    return emitError() << "placement needs at least one rank (got ranks = "
                       << numRanks << ")";
  if (expertRanks.empty())
    return emitError() << "placement lists no experts";
  if (slices < 1 || slices > numRanks)
    return emitError() << "placement slices each expert in " << slices
                       << " parts (expected 1 to ranks = " << numRanks << ")";
  if (slices > 1) {
    if (expertRanks.size() % slices)
      return emitError() << "placement lists " << expertRanks.size()
                         << " part ranks (expected experts x slices = a "
                            "multiple of "
                         << slices << ")";
    if (!replicas.empty())
      return emitError() << "placement has both slices and replicas "
                            "(expected one of them)";
    for (size_t e = 0; e < expertRanks.size(); e += slices) {
      llvm::DenseSet<int64_t> seen;
      for (int64_t s = 0; s < slices; ++s) {
        int64_t rank = expertRanks[e + s];
        if (rank >= 0 && rank < numRanks && !seen.insert(rank).second)
          return emitError() << "expert " << e / slices
                             << " has two parts on rank " << rank
                             << " (expected each part on its own rank)";
      }
    }
  }
  for (auto [expert, rank] : llvm::enumerate(expertRanks))
    if (rank < 0 || rank >= numRanks)
      return emitError() << "expert " << expert / slices
                         << (slices > 1 ? " part " + std::to_string(expert % slices)
                                        : std::string())
                         << " is placed on rank " << rank
                         << " (expected a rank in [0, " << numRanks << "))";
  if (replicas.size() % 2)
    return emitError() << "replicas must be expert : rank pairs";
  llvm::DenseSet<std::pair<int64_t, int64_t>> copies;
  for (auto [expert, rank] : llvm::enumerate(expertRanks))
    copies.insert({int64_t(expert), rank});
  for (size_t i = 0; i < replicas.size(); i += 2) {
    int64_t expert = replicas[i], rank = replicas[i + 1];
    if (expert < 0 || expert >= int64_t(expertRanks.size()))
      return emitError() << "replica of expert " << expert
                         << " (expected an expert in [0, "
                         << expertRanks.size() << "))";
    if (rank < 0 || rank >= numRanks)
      return emitError() << "replica of expert " << expert << " is on rank "
                         << rank << " (expected a rank in [0, " << numRanks
                         << "))";
    if (!copies.insert({expert, rank}).second)
      return emitError() << "expert " << expert << " has two copies on rank "
                         << rank << " (expected each copy on its own rank)";
  }
  return success();
}

SmallVector<int64_t> PlacementAttr::getCopies(int64_t expert) const {
  if (getSlices() > 1) {
    ArrayRef<int64_t> parts =
        getExpertRanks().slice(expert * getSlices(), getSlices());
    return SmallVector<int64_t>(parts.begin(), parts.end());
  }
  SmallVector<int64_t> ranks = {getExpertRanks()[expert]};
  ArrayRef<int64_t> replicas = getReplicas();
  for (size_t i = 0; i + 1 < replicas.size(); i += 2)
    if (replicas[i] == expert)
      ranks.push_back(replicas[i + 1]);
  return ranks;
}

bool PlacementAttr::holds(int64_t rank, int64_t expert) const {
  return llvm::is_contained(getCopies(expert), rank);
}

int64_t PlacementAttr::getMaxExpertsPerRank() const {
  std::vector<int64_t> held(size_t(std::max<int64_t>(getNumRanks(), 0)), 0);
  for (int64_t e = 0, E = getNumExperts(); e < E; ++e) {
    SmallVector<int64_t> copies = getCopies(e);
    llvm::sort(copies);
    copies.erase(std::unique(copies.begin(), copies.end()), copies.end());
    for (int64_t r : copies)
      if (r >= 0 && r < int64_t(held.size()))
        ++held[size_t(r)];
  }
  return held.empty() ? 0 : *llvm::max_element(held);
}

/// `<ranks = N, experts = [r0, r1, ...] (, slices = S)?
///   (, replicas = [e : r, ...])?>`
Attribute PlacementAttr::parse(AsmParser &parser, Type) {
  int64_t numRanks = 0, slices = 1;
  SmallVector<int64_t> experts, replicas;
  auto parseRank = [&]() -> ParseResult {
    return parser.parseInteger(experts.emplace_back());
  };
  auto parseReplica = [&]() -> ParseResult {
    int64_t expert = 0, rank = 0;
    if (parser.parseInteger(expert) || parser.parseColon() ||
        parser.parseInteger(rank))
      return failure();
    replicas.append({expert, rank});
    return success();
  };
  SMLoc loc = parser.getCurrentLocation();
  if (parser.parseLess() || parser.parseKeyword("ranks") ||
      parser.parseEqual() || parser.parseInteger(numRanks) ||
      parser.parseComma() || parser.parseKeyword("experts") ||
      parser.parseEqual() ||
      parser.parseCommaSeparatedList(AsmParser::Delimiter::Square, parseRank))
    return {};
  bool comma = succeeded(parser.parseOptionalComma());
  if (comma && succeeded(parser.parseOptionalKeyword("slices"))) {
    if (parser.parseEqual() || parser.parseInteger(slices))
      return {};
    comma = succeeded(parser.parseOptionalComma());
  }
  if (comma && (parser.parseKeyword("replicas") || parser.parseEqual() ||
                parser.parseCommaSeparatedList(AsmParser::Delimiter::Square,
                                               parseReplica)))
    return {};
  if (parser.parseGreater())
    return {};
  return PlacementAttr::getChecked(
      [&] { return parser.emitError(loc); }, parser.getContext(), numRanks,
      experts, replicas, slices);
}

void PlacementAttr::print(AsmPrinter &printer) const {
  printer << "<ranks = " << getNumRanks() << ", experts = [";
  llvm::interleaveComma(getExpertRanks(), printer);
  printer << "]";
  if (getSlices() > 1)
    printer << ", slices = " << getSlices();
  ArrayRef<int64_t> replicas = getReplicas();
  if (!replicas.empty()) {
    printer << ", replicas = [";
    for (size_t i = 0; i < replicas.size(); i += 2)
      printer << (i ? ", " : "") << replicas[i] << " : " << replicas[i + 1];
    printer << "]";
  }
  printer << ">";
}
