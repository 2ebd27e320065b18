//===- Prompts.h - The JSON-lines prompt file of moe-run --prompts -*- C++ -*-===//
//
// One request per line: {"id": ..., "prompt": "text"} or
// {"id": ..., "prompt_ids": [..]}, optionally "max_new_tokens",
// "temperature", "top_p", "seed", "ignore_eos" and "stop" (a string, a list
// of strings, a list of token ids, or a list of such lists). A bad line
// does not stop the others: it carries its one-line error.
//
//===----------------------------------------------------------------------===//
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace moert {

struct PromptLine {
  size_t line = 0;              // 1-based line number in the file
  nlohmann::json id;            // echoed as given (null when absent)
  std::optional<std::string> prompt;        // text (needs a tokenizer)
  std::optional<std::vector<int64_t>> promptIds;
  std::optional<int64_t> maxNewTokens;
  std::optional<float> temperature, topP;
  std::optional<uint64_t> seed;
  std::optional<bool> ignoreEos;
  std::vector<std::string> stopStrings;       // need a tokenizer
  std::vector<std::vector<int64_t>> stopIds;
  /// "FILE:LINE: field: what (expected ...)" for a bad line, else empty.
  std::string error;
};

/// Parses every non-blank line of `text` (blank lines are skipped); `name`
/// (the file) starts each error. Never throws for bad input.
std::vector<PromptLine> parsePromptLines(std::string_view text, const std::string &name);

} // namespace moert
