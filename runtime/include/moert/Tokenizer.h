//===- Tokenizer.h - Hugging Face tokenizer.json support ---------*- C++ -*-===//
//
// Text <-> token ids exactly as the Hugging Face `tokenizers` library computes
// them, for the tokenizer.json files that ship with checkpoints (BPE models:
// GPT-2/Qwen-style byte-level, Llama/Mistral-style byte-fallback). MLIR-free.
//
//   auto tok = moert::Tokenizer::fromFile("ckpt/tokenizer.json",
//                                         "ckpt/tokenizer_config.json");
//   std::vector<uint32_t> ids = tok.encodePrompt("Hello");
//   moert::DecodeStream stream(tok, /*skipSpecial=*/true);
//   for (uint32_t id : generated) std::cout << stream.step(id) << std::flush;
//   std::cout << stream.flush();
//
// All failures throw moert::TokenizerError with a one-line message.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "moert/OneLine.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace moert {

/// A one-line description of what is wrong (bad file, invalid UTF-8 input,
/// unknown id). Messages name the JSON field or component involved.
class TokenizerError : public std::runtime_error {
public:
  /// Control characters (from tokens, JSON keys) are escaped: one line.
  explicit TokenizerError(const std::string &what)
      : std::runtime_error(escapeControl(what)) {}
};

namespace tok {
struct TokenizerImpl;
} // namespace tok

class Tokenizer {
public:
  /// Loads a tokenizer.json and, when `configPath` is non-empty, the
  /// tokenizer_config.json beside it (add_bos_token/add_eos_token and the
  /// bos/eos token names). Error messages start with the offending path.
  static Tokenizer fromFile(const std::string &tokenizerPath,
                            const std::string &configPath = "");
  /// Same from JSON text; `origin` names the source in error messages.
  static Tokenizer fromJson(std::string_view tokenizerJson,
                            std::string_view configJson = {},
                            const std::string &origin = "tokenizer.json");

  Tokenizer(Tokenizer &&) noexcept;
  Tokenizer &operator=(Tokenizer &&) noexcept;
  ~Tokenizer();

  /// HF `encode(text, add_special_tokens)`: added tokens, normalizer,
  /// pre-tokenizer, model and (when `addSpecial`) the post-processor.
  /// Throws on invalid UTF-8. Thread-safe.
  std::vector<uint32_t> encode(std::string_view text, bool addSpecial) const;

  /// The ids a chat/completion prompt starts from, as transformers does it:
  /// when tokenizer_config.json sets add_bos_token or add_eos_token, the
  /// sequence is wrapped in bos/eos accordingly (the post-processor is then
  /// not used); otherwise this is encode(text, /*addSpecial=*/true).
  std::vector<uint32_t> encodePrompt(std::string_view text) const;

  /// HF `decode(ids, skip_special_tokens)`. Unknown ids throw (HF drops
  /// them silently, which hides bugs). Invalid byte sequences decode to
  /// U+FFFD as in HF, so the result is always valid UTF-8.
  std::string decode(std::span<const uint32_t> ids, bool skipSpecial) const;

  std::optional<uint32_t> tokenToId(std::string_view token) const;
  std::optional<std::string> idToToken(uint32_t id) const;
  bool isSpecial(uint32_t id) const;
  /// Model vocabulary plus added tokens (ids can exceed it by gaps).
  size_t vocabSize() const;

  /// bos/eos from tokenizer_config.json (token names resolved to ids).
  std::optional<uint32_t> bosTokenId() const;
  std::optional<uint32_t> eosTokenId() const;

private:
  explicit Tokenizer(std::unique_ptr<tok::TokenizerImpl> impl);
  std::unique_ptr<tok::TokenizerImpl> impl;
  friend class DecodeStream;
};

/// Turns generated ids into text as they arrive. Each step returns only text
/// that is final: complete UTF-8 characters (byte-fallback `<0xXX>` pieces and
/// byte-level bytes of one character may span several tokens) with the
/// decoder's context (Metaspace's leading space, Strip) already applied.
/// Uses HF's DecodeStream algorithm (decode a sliding window of ids, emit
/// what extends the previous window's text), so the concatenated output is
/// decode(all ids) for the decoders of real checkpoints (checked in the
/// tests for ByteLevel, Metaspace and the Llama byte-fallback chain).
class DecodeStream {
public:
  DecodeStream(const Tokenizer &tokenizer, bool skipSpecial);
  /// New text made final by `id` ("" while a character is incomplete).
  std::string step(uint32_t id);
  /// Whatever is still pending at the end of generation (an incomplete
  /// character decodes to U+FFFD here).
  std::string flush();

private:
  const Tokenizer &tokenizer;
  bool skipSpecial;
  std::vector<uint32_t> ids;
  std::string prefix;
  size_t prefixIndex = 0;
};

} // namespace moert
