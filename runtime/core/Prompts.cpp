//===- Prompts.cpp - The JSON-lines prompt reader -------------------------===//
#include "moert/Prompts.h"
#include "moert/OneLine.h"

#include <cmath>
#include <fmt/format.h>
#include <stdexcept>

namespace moert {

namespace {

using json = nlohmann::json;

struct LineError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

template <typename... Args> [[noreturn]] void bad(fmt::format_string<Args...> f, Args &&...a) {
  throw LineError(fmt::format(f, std::forward<Args>(a)...));
}

/// A short rendering of a JSON value for messages.
std::string shown(const json &v) {
  std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  return s.size() > 40 ? s.substr(0, 37) + "..." : s;
}

std::vector<int64_t> tokenIds(const json &v, const char *field) {
  if (!v.is_array())
    bad("{}: {} (expected a list of token ids)", field, shown(v));
  std::vector<int64_t> ids;
  for (const json &x : v) {
    if (!x.is_number_integer() || (x.is_number_unsigned() && x.get<uint64_t>() > uint64_t(INT64_MAX)) ||
        x.get<int64_t>() < 0)
      bad("{}: {} (expected token ids >= 0)", field, shown(x));
    ids.push_back(x.get<int64_t>());
  }
  return ids;
}

void parseStop(const json &v, PromptLine &pl) {
  if (v.is_string()) {
    pl.stopStrings.push_back(v.get<std::string>());
    return;
  }
  if (!v.is_array())
    bad("stop: {} (expected a string, a list of strings, or token-id lists)", shown(v));
  if (!v.empty() && v.front().is_number()) {
    pl.stopIds.push_back(tokenIds(v, "stop"));
    return;
  }
  for (const json &x : v) {
    if (x.is_string())
      pl.stopStrings.push_back(x.get<std::string>());
    else if (x.is_array())
      pl.stopIds.push_back(tokenIds(x, "stop"));
    else
      bad("stop: {} (expected a string or a list of token ids)", shown(x));
  }
  for (const auto &s : pl.stopStrings)
    if (s.empty())
      bad("stop: \"\" (expected non-empty stop strings)");
  for (const auto &s : pl.stopIds)
    if (s.empty())
      bad("stop: [] (expected non-empty token-id lists)");
}

void parseLine(std::string_view text, PromptLine &pl) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded())
    bad("not JSON (expected one object per line)");
  if (!j.is_object())
    bad("{} (expected a JSON object)", shown(j));
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string &k = it.key();
    const json &v = it.value();
    if (k == "id") {
      pl.id = v;
    } else if (k == "prompt") {
      if (!v.is_string())
        bad("prompt: {} (expected a string)", shown(v));
      pl.prompt = v.get<std::string>();
    } else if (k == "prompt_ids") {
      pl.promptIds = tokenIds(v, "prompt_ids");
    } else if (k == "max_new_tokens") {
      if (!v.is_number_integer() || (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX)) ||
          v.get<int64_t>() < 0)
        bad("max_new_tokens: {} (expected an integer >= 0)", shown(v));
      pl.maxNewTokens = v.get<int64_t>();
    } else if (k == "temperature") {
      if (!v.is_number() || !std::isfinite(v.get<double>()) || v.get<double>() < 0 ||
          v.get<double>() > 1e6)
        bad("temperature: {} (expected a number >= 0)", shown(v));
      pl.temperature = v.get<float>();
    } else if (k == "top_p") {
      if (!v.is_number() || !(v.get<double>() > 0 && v.get<double>() <= 1))
        bad("top_p: {} (expected a number in (0, 1])", shown(v));
      pl.topP = v.get<float>();
    } else if (k == "seed") {
      if (!v.is_number_integer() || (!v.is_number_unsigned() && v.get<int64_t>() < 0))
        bad("seed: {} (expected an integer >= 0)", shown(v));
      pl.seed = v.get<uint64_t>();
    } else if (k == "ignore_eos") {
      if (!v.is_boolean())
        bad("ignore_eos: {} (expected true or false)", shown(v));
      pl.ignoreEos = v.get<bool>();
    } else if (k == "stop") {
      if (!v.is_null())
        parseStop(v, pl);
    } else {
      bad("{}: unknown field (expected id, prompt, prompt_ids, max_new_tokens, temperature, "
          "top_p, seed, ignore_eos, stop)",
          k.size() > 40 ? k.substr(0, 37) + "..." : k);
    }
  }
  if (pl.prompt.has_value() == pl.promptIds.has_value())
    bad("{} (expected exactly one of prompt and prompt_ids)",
        pl.prompt ? "both prompt and prompt_ids" : "no prompt");
  if (pl.promptIds && pl.promptIds->empty())
    bad("prompt_ids: [] (expected at least one token id)");
  if (pl.prompt && pl.prompt->empty())
    bad("prompt: \"\" (expected a non-empty prompt)");
}

} // namespace

std::vector<PromptLine> parsePromptLines(std::string_view text, const std::string &name) {
  std::vector<PromptLine> out;
  size_t lineNo = 0, start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos)
      end = text.size();
    std::string_view line = text.substr(start, end - start);
    start = end + 1;
    ++lineNo;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos)
      continue;
    PromptLine pl;
    pl.line = lineNo;
    try {
      parseLine(line, pl);
    } catch (const std::exception &e) { // LineError, or nlohmann's (none expected)
      // Messages quote keys and values from the line, whose JSON escapes may
      // decode to newlines: keep the error one line (the fuzzer found one).
      pl.error = fmt::format("{}:{}: {}", name, lineNo, escapeControl(e.what()));
    }
    out.push_back(std::move(pl));
  }
  return out;
}

} // namespace moert
