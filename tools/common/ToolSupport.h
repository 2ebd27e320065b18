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

#include <charconv>
#include <cstdint>
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

/// The checkpoint directory the weights come from (`weights`, the
/// --weights flag, or the plan's checkpoint); "" when there is none.
std::string checkpointDir(const std::string &weights, const moert::PlanFile &plan);

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

} // namespace moetool
