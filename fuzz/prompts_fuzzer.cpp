//===- prompts_fuzzer.cpp - moe-run --prompts JSON lines -------------------===//
//
// Parses the input as a --prompts file. Every line must come back either
// parsed (exactly one of prompt / prompt_ids, sane values) or with a one-line
// error naming its line; an exception or a crash is a finding.
//
//===----------------------------------------------------------------------===//
#include "moert/Prompts.h"

#include <cstdlib>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::string_view text(reinterpret_cast<const char *>(data), size);
  std::vector<moert::PromptLine> lines = moert::parsePromptLines(text, "fuzz.jsonl");
  size_t prev = 0;
  for (const moert::PromptLine &l : lines) {
    if (l.line <= prev) // lines come in order, each once
      std::abort();
    prev = l.line;
    if (!l.error.empty()) {
      if (l.error.find('\n') != std::string::npos || l.error.rfind("fuzz.jsonl:", 0) != 0)
        std::abort(); // one line, naming the file and line
      continue;
    }
    if (l.prompt.has_value() == l.promptIds.has_value())
      std::abort();
    if (l.promptIds && l.promptIds->empty())
      std::abort();
    if (l.topP && !(*l.topP > 0.0f && *l.topP <= 1.0f))
      std::abort();
    if (l.maxNewTokens && *l.maxNewTokens < 0)
      std::abort();
    (void)l.id.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  return 0;
}
