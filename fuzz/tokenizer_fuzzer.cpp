//===- tokenizer_fuzzer.cpp - tokenizer.json loading, encode, decode ------===//
//
// Loads the input as a tokenizer.json; an accepted tokenizer encodes a fixed
// mixed-script text and decodes the ids again (with and without special
// tokens) and through a DecodeStream. Any TokenizerError is a clean
// rejection; anything else is a finding.
//
//===----------------------------------------------------------------------===//
#include "moert/Tokenizer.h"

#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::string_view text(reinterpret_cast<const char *>(data), size);
  try {
    moert::Tokenizer tok = moert::Tokenizer::fromJson(text, {}, "fuzz.json");
    static constexpr std::string_view kSample =
        "Hello, world! 123 <s> caf\xc3\xa9  \xe4\xb8\xad\xe6\x96\x87\n\tend";
    for (bool special : {false, true}) {
      std::vector<uint32_t> ids = tok.encode(kSample, special);
      (void)tok.decode(ids, special);
      moert::DecodeStream stream(tok, special);
      for (uint32_t id : ids)
        (void)stream.step(id);
      (void)stream.flush();
    }
    (void)tok.encodePrompt(kSample);
    for (uint32_t id = 0; id < 8 && id < tok.vocabSize(); ++id)
      (void)tok.idToToken(id);
  } catch (const moert::TokenizerError &) {
  }
  return 0;
}
