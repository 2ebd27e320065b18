//===- Options.cpp - moe-compile option parsing ---------------------------===//

#include "moe/Compiler/Options.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/ADT/StringSwitch.h"
#include "llvm/Support/FormatVariadic.h"

#include <cmath>
#include <limits>

using namespace mlir::moe;
using llvm::StringRef;

StringRef mlir::moe::stringifyTarget(Target target) {
  return target == Target::CPU ? "cpu" : "cuda";
}

StringRef mlir::moe::stringifyComputeDType(ComputeDType dtype) {
  switch (dtype) {
  case ComputeDType::F32:
    return "f32";
  case ComputeDType::BF16:
    return "bf16";
  case ComputeDType::F16:
    return "f16";
  }
  llvm_unreachable("unknown dtype");
}

StringRef mlir::moe::stringifyPlacement(PlacementStrategy placement) {
  switch (placement) {
  case PlacementStrategy::Balanced:
    return "balanced";
  case PlacementStrategy::RoundRobin:
    return "round-robin";
  case PlacementStrategy::Contiguous:
    return "contiguous";
  }
  llvm_unreachable("unknown placement");
}

std::optional<Target> mlir::moe::parseTarget(StringRef text) {
  return llvm::StringSwitch<std::optional<Target>>(text)
      .Case("cpu", Target::CPU)
      .Case("cuda", Target::CUDA)
      .Default(std::nullopt);
}

std::optional<ComputeDType> mlir::moe::parseComputeDType(StringRef text) {
  return llvm::StringSwitch<std::optional<ComputeDType>>(text)
      .Case("f32", ComputeDType::F32)
      .Case("bf16", ComputeDType::BF16)
      .Case("f16", ComputeDType::F16)
      .Default(std::nullopt);
}

std::optional<PlacementStrategy> mlir::moe::parsePlacement(StringRef text) {
  return llvm::StringSwitch<std::optional<PlacementStrategy>>(text)
      .Case("balanced", PlacementStrategy::Balanced)
      .Case("round-robin", PlacementStrategy::RoundRobin)
      .Case("contiguous", PlacementStrategy::Contiguous)
      .Default(std::nullopt);
}

std::optional<EmitKind> mlir::moe::parseEmitKind(StringRef text) {
  return llvm::StringSwitch<std::optional<EmitKind>>(text)
      .Case("plan", EmitKind::Plan)
      .Case("plan-text", EmitKind::PlanText)
      .Case("mlir", EmitKind::MLIR)
      .Case("report", EmitKind::Report)
      .Default(std::nullopt);
}

static llvm::Error sizeError(StringRef text, StringRef why) {
  return llvm::createStringError(
      llvm::formatv("'{0}' is not a valid size: {1} (expected a positive "
                    "number with an optional unit B, KB, MB, GB, TB, KiB, "
                    "MiB, GiB or TiB, e.g. 24GiB)",
                    text, why)
          .str());
}

llvm::Expected<uint64_t> mlir::moe::parseByteSize(StringRef text) {
  StringRef s = text.trim();
  size_t numberEnd = 0;
  while (numberEnd < s.size() &&
         (llvm::isDigit(s[numberEnd]) || s[numberEnd] == '.'))
    ++numberEnd;
  StringRef number = s.take_front(numberEnd);
  StringRef unit = s.drop_front(numberEnd).trim();
  if (number.empty() || number.count('.') > 1 || number == ".")
    return sizeError(text, "no number");
  double multiplier =
      llvm::StringSwitch<double>(unit.lower())
          .Cases({"", "b"}, 1.0)
          .Cases({"k", "kb"}, 1e3)
          .Cases({"m", "mb"}, 1e6)
          .Cases({"g", "gb"}, 1e9)
          .Cases({"t", "tb"}, 1e12)
          .Case("kib", 1024.0)
          .Case("mib", 1024.0 * 1024.0)
          .Case("gib", 1024.0 * 1024.0 * 1024.0)
          .Case("tib", 1024.0 * 1024.0 * 1024.0 * 1024.0)
          .Default(-1.0);
  if (multiplier < 0)
    return sizeError(text, llvm::formatv("unknown unit '{0}'", unit).str());
  double value;
  if (number.getAsDouble(value))
    return sizeError(text, "no number");
  double bytes = std::round(value * multiplier);
  if (!(bytes >= 1.0))
    return sizeError(text, "it is zero");
  if (bytes >= 1.8e19)
    return sizeError(text, "it is too large");
  return uint64_t(bytes);
}

llvm::Expected<int64_t> mlir::moe::parseIntInRange(StringRef text, int64_t min,
                                                   int64_t max) {
  int64_t value;
  if (text.trim().getAsInteger(10, value) || value < min || value > max)
    return llvm::createStringError(
        llvm::formatv("'{0}' is not valid (expected an integer in [{1}, {2}])",
                      text, min, max)
            .str());
  return value;
}

std::string mlir::moe::formatBytes(uint64_t bytes) {
  static constexpr const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = double(bytes);
  unsigned unit = 0;
  while (value >= 1024.0 && unit + 1 < std::size(units)) {
    value /= 1024.0;
    ++unit;
  }
  if (unit == 0)
    return llvm::formatv("{0} B", bytes).str();
  return llvm::formatv("{0:f2} {1}", value, units[unit]).str();
}
