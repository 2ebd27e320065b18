//===- MoEDialect.cpp - moe dialect and attributes ------------------------===//

#include "moe/Dialect/MoEDialect.h"
#include "moe/Dialect/MoEOps.h"

#include "mlir/Dialect/Shard/IR/ShardDialect.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectImplementation.h"
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
                                  int64_t minCapacity, bool dropTokens) {
  double capacityFactor = capacityFactorValue.convertToDouble();
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
  int64_t topK = -1, minCapacity = 0;
  ScoreFn score = ScoreFn::Softmax;
  bool scoreBeforeTopk = true, normTopkProb = false, dropTokens = false;
  double capacityFactor = 0.0;
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
              "capacity_factor, min_capacity or drop_tokens)";
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
                                 scoreBeforeTopk, normTopkProb, capacityFactor,
                                 minCapacity, dropTokens);
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
  printer << ">";
}

//===----------------------------------------------------------------------===//
// PlacementAttr
//===----------------------------------------------------------------------===//

LogicalResult
PlacementAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                      int64_t numRanks, ArrayRef<int64_t> expertRanks) {
  if (numRanks < 1)
    return emitError() << "placement needs at least one rank (got ranks = "
                       << numRanks << ")";
  if (expertRanks.empty())
    return emitError() << "placement lists no experts";
  for (auto [expert, rank] : llvm::enumerate(expertRanks))
    if (rank < 0 || rank >= numRanks)
      return emitError() << "expert " << expert << " is placed on rank " << rank
                         << " (expected a rank in [0, " << numRanks << "))";
  return success();
}
