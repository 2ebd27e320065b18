//===- ToolSupport.h - What moe-run and moe-serve share --------*- C++ -*-===//
//
// Flag values, the checkpoint's tokenizer and generation_config.json, and
// decoding generated ids: the runtime tools read them the same way and say
// the same one-line errors. Runtime only (no MLIR/LLVM).
//
//===----------------------------------------------------------------------===//
#pragma once

#include "moert/Error.h"
#include "moert/Plan.h"
#include "moert/Tokenizer.h"
#include "moert/Weights.h"

#include <charconv>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

namespace moetool {

/// A whole (small) text file; MappedFile says why when it cannot be read.
std::string readFile(const std::string &path);

/// FLAG=VALUE as a number, or "FLAG=VALUE: not a number (expected ...)".
template <typename T> T parseNumber(const std::string &flag, const std::string &v) {
  T out{};
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  if (ec != std::errc() || p != v.data() + v.size() || v.empty())
    moert::fail("{}={}: not a number (expected {})", flag, v,
                std::is_floating_point_v<T> ? "a decimal number" : "an integer");
  return out;
}

/// One `--KEY[=VALUE]` argument, and the checks every tool makes of it with
/// the same one-line errors.
struct Flag {
  std::string arg, key, val; // "--port=80", "--port", "80"
  bool hasVal = false;       // an '=' was given (the value may be empty)

  /// The value: "KEY: missing value (expected KEY=VALUE)" without one.
  const std::string &value() const;
  /// A flag without a value (true): "ARG: takes no value" with one.
  bool set() const;
  /// The value as a number (parseNumber's errors).
  template <typename T> T number() const { return parseNumber<T>(key, value()); }
  /// An integer in lo..hi: "KEY=N: out of range (expected LO..HI)".
  int64_t count(int64_t lo, int64_t hi) const;
};

/// The arguments of `tool` (moe-run, moe-serve): the one argument not
/// starting with "--" is `plan` (a second one is an error); every other is
/// handed to `onFlag`, which returns false for a key it does not know:
/// "KEY: unknown option (expected one of the options in TOOL --help)".
/// Errors are moert::Error.
void forEachFlag(int argc, char **argv, const char *tool, std::string &plan,
                 const std::function<bool(const Flag &)> &onFlag);

/// The checkpoint directory the weights come from (`weights`, the
/// --weights flag, or the plan's checkpoint); "" when there is none.
std::string checkpointDir(const std::string &weights, const moert::PlanFile &plan);

/// The weights `ranks` use: generated from the plan's init with `seed`
/// (--random-weights), or read from the checkpoint `weights` names (--weights)
/// or else the one the plan was compiled from; a plan with neither is a
/// one-line error.
std::unique_ptr<moert::WeightStore> loadWeights(const moert::PlanFile &plan,
                                                const std::string &weights, bool random,
                                                uint64_t seed, const std::vector<int> &ranks,
                                                moert::Backend &backend,
                                                const moert::ProgressFn &progress = {});

/// The checkpoint's tokenizer (tokenizer.json + tokenizer_config.json), or
/// `tokenizerFile` (--tokenizer=FILE). `what` names the flag that needs it
/// in the errors (moe-run's "--prompt").
std::unique_ptr<moert::Tokenizer> loadTokenizer(const std::string &tokenizerFile,
                                                const std::string &weights,
                                                const moert::PlanFile &plan,
                                                const char *what = "--prompt");

/// eos_token_id of the checkpoint's generation_config.json (an id or a
/// list), or nothing when there is none.
std::vector<int64_t> generationEosIds(const std::string &weights, const moert::PlanFile &plan);

/// The text of generated ids (special tokens skipped), or nothing when the
/// tokenizer cannot decode them.
std::optional<std::string> decodeText(const moert::Tokenizer &tok, std::span<const int64_t> ids);

/// A request's stop condition for stop strings: the decoded output contains
/// one of them.
std::function<bool(std::span<const int64_t>)> stopStringCheck(const moert::Tokenizer *tok,
                                                               std::vector<std::string> stops);

} // namespace moetool
