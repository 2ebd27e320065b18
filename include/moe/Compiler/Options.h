//===- Options.h - moe-compile options --------------------------*- C++ -*-===//
//
// The options of one compilation (DESIGN.md, "moe-compile"), parsed and
// validated once by the driver and handed to the pipeline and the lowering.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_COMPILER_OPTIONS_H
#define MOE_COMPILER_OPTIONS_H

#include "llvm/ADT/SmallVector.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/ADT/Twine.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace mlir::moe {

enum class Target { CPU, CUDA };
enum class ComputeDType { F32, BF16, F16 };
enum class PlacementStrategy { Balanced, RoundRobin, Contiguous };
enum class EmitKind { Plan, PlanText, MLIR, Report };

struct CompileOptions {
  Target target = Target::CPU;
  /// Compute dtype; weights convert to it at load.
  ComputeDType dtype = ComputeDType::F32;
  /// The KV caches' element type (the model's kv_cache_dtype).
  ComputeDType kvDtype = ComputeDType::F32;
  /// Ranks, and how many of them share a node (the device grid is
  /// [devices / gpusPerNode, gpusPerNode]).
  int64_t devices = 1;
  int64_t gpusPerNode = 1;
  int64_t maxBatch = 1;
  /// KV cache capacity in tokens; 0 = the model's max_position_embeddings.
  int64_t maxSeqLen = 0;
  /// The KV page pool of a batched plan (maxBatch > 1): positions per page
  /// and pages; 0 = the defaults (16 positions, pages for maxBatch
  /// sequences at full length).
  int64_t kvPageSize = 0;
  int64_t kvPages = 0;
  PlacementStrategy placement = PlacementStrategy::Balanced;
  /// Per-layer per-expert token counts (moe-run --expert-profile), or "".
  std::string expertProfile;
  /// Extra copies of hot experts per MoE layer (balanced placement).
  int64_t expertReplicas = 0;
  /// Split experts over ranks when a layer has fewer experts than ranks.
  bool expertSlicing = true;
  /// Ranks of a tensor-parallel group (Megatron slicing of attention heads
  /// and dense FFNs); 1 = attention and dense layers replicated.
  int64_t tensorParallel = 1;
  /// Expert exchanges over several nodes in two stages (moe-comm-hierarchy)
  /// instead of one flat exchange over all ranks.
  bool hierarchicalExchanges = true;
  /// With tensorParallel > 1: also split the token embedding and the LM head
  /// by vocabulary over the group.
  bool vocabParallel = false;
  /// Bytes per rank for weights + activations; 0 = unlimited.
  uint64_t memoryBudget = 0;
  /// Textual pass pipeline replacing the default one, or "".
  std::string pipeline;

  int64_t getNumNodes() const { return devices / gpusPerNode; }
};

llvm::StringRef stringifyTarget(Target target);
llvm::StringRef stringifyComputeDType(ComputeDType dtype);
llvm::StringRef stringifyPlacement(PlacementStrategy placement);

std::optional<Target> parseTarget(llvm::StringRef text);
std::optional<ComputeDType> parseComputeDType(llvm::StringRef text);
std::optional<PlacementStrategy> parsePlacement(llvm::StringRef text);
std::optional<EmitKind> parseEmitKind(llvm::StringRef text);

/// Parses a byte size: a number with an optional unit, B, KB/MB/GB/TB (powers
/// of 1000) or KiB/MiB/GiB/TiB (powers of 1024), e.g. "24GiB", "1.5GB",
/// "4096". Fails on anything else, on zero and on overflow.
llvm::Expected<uint64_t> parseByteSize(llvm::StringRef text);

/// Parses a decimal integer in [min, max].
llvm::Expected<int64_t> parseIntInRange(llvm::StringRef text, int64_t min,
                                        int64_t max);

/// Formats a byte count for people: "1.50 GiB".
std::string formatBytes(uint64_t bytes);

/// llvm::cl's parser for enum options (cl::values), as llvm::cl::parser<T>
/// but a bad value is one error that lists the accepted ones:
/// "'x' is not supported (expected a, b or c)". Pass options of enum type
/// (`Option<..., "::mlir::moe::PlacementStrategy", ...>` in Passes.td) get it
/// through the llvm::cl::parser specializations below.
template <typename T>
class EnumOptionParser : public llvm::cl::generic_parser_base {
protected:
  class OptionInfo : public GenericOptionInfo {
  public:
    OptionInfo(llvm::StringRef name, T v, llvm::StringRef helpStr)
        : GenericOptionInfo(name, helpStr), V(v) {}
    llvm::cl::OptionValue<T> V;
  };
  llvm::SmallVector<OptionInfo, 8> Values;

public:
  EnumOptionParser(llvm::cl::Option &option) : generic_parser_base(option) {}

  using parser_data_type = T;

  unsigned getNumOptions() const override { return unsigned(Values.size()); }
  llvm::StringRef getOption(unsigned n) const override {
    return Values[n].Name;
  }
  llvm::StringRef getDescription(unsigned n) const override {
    return Values[n].HelpStr;
  }
  const llvm::cl::GenericOptionValue &
  getOptionValue(unsigned n) const override {
    return Values[n].V;
  }

  /// Returns true on error, as llvm::cl parsers do.
  bool parse(llvm::cl::Option &option, llvm::StringRef argName,
             llvm::StringRef arg, T &value) {
    llvm::StringRef name = Owner.hasArgStr() ? arg : argName;
    for (const OptionInfo &info : Values)
      if (info.Name == name) {
        value = info.V.getValue();
        return false;
      }
    std::string expected;
    for (size_t i = 0; i < Values.size(); ++i)
      expected += (i == 0 ? "" : i + 1 == Values.size() ? " or " : ", ") +
                  Values[i].Name.str();
    return option.error("'" + name + "' is not supported (expected " +
                        expected + ")");
  }

  template <typename DT>
  void addLiteralOption(llvm::StringRef name, const DT &value,
                        llvm::StringRef helpStr) {
    Values.push_back(OptionInfo(name, static_cast<T>(value), helpStr));
    llvm::cl::AddLiteralOption(Owner, name);
  }
  void removeLiteralOption(llvm::StringRef name) {
    Values.erase(Values.begin() + findOption(name));
  }
};

} // namespace mlir::moe

namespace llvm::cl {
template <>
class parser<mlir::moe::PlacementStrategy>
    : public mlir::moe::EnumOptionParser<mlir::moe::PlacementStrategy> {
public:
  using EnumOptionParser::EnumOptionParser;
};
template <>
class parser<mlir::moe::ComputeDType>
    : public mlir::moe::EnumOptionParser<mlir::moe::ComputeDType> {
public:
  using EnumOptionParser::EnumOptionParser;
};
} // namespace llvm::cl

#endif // MOE_COMPILER_OPTIONS_H
