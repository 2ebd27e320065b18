//===- Components.h - tokenizer.json pipeline components ---------*- C++ -*-===//
//
// The stages of a Hugging Face tokenizer, each built from its tokenizer.json
// object: normalizers, pre-tokenizers, the BPE model, post-processors and
// decoders. Offsets are not tracked (nothing here reports them), which keeps
// every stage a plain string transform; the one place HF consults original
// offsets (Metaspace's prepend_scheme "first") uses Piece::atStart instead.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "Regex.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <moert/Tokenizer.h>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace moert::tok {

using Json = nlohmann::json;

/// A split of the input that still has to go through the model.
struct Piece {
  std::string text;
  /// The split begins at offset 0 of the original input.
  bool atStart = false;
};
using Emit = std::function<void(Piece &&)>;

//===-- JSON helpers -------------------------------------------------------===//

/// Throws `<where>: <what> (expected <expected>)`.
[[noreturn]] void fail(const std::string &where, const std::string &what,
                       const std::string &expected);
const Json &member(const Json &obj, const char *key, const std::string &where);
std::string getString(const Json &obj, const char *key,
                      const std::string &where);
bool getBool(const Json &obj, const char *key, const std::string &where,
             std::optional<bool> fallback = std::nullopt);
uint32_t getU32(const Json &obj, const char *key, const std::string &where);
/// The component's "type" field.
std::string typeOf(const Json &obj, const std::string &where);
/// A one-character string field (Metaspace replacement, Strip content).
char32_t getChar(const Json &obj, const char *key, const std::string &where);
/// The children of a "Sequence" component: j[key] must be a list, each
/// element parsed with parse(element, "<where>.<key>[i]").
template <typename T, typename Parse>
std::vector<std::unique_ptr<T>> parseChildren(const Json &j, const char *key,
                                              const std::string &where,
                                              const char *what, Parse parse) {
  const Json &list = member(j, key, where);
  std::string at = where + "." + key;
  if (!list.is_array())
    fail(at, "not a list", std::string("a list of ") + what);
  std::vector<std::unique_ptr<T>> children;
  for (size_t i = 0; i < list.size(); ++i)
    children.push_back(parse(list[i], at + "[" + std::to_string(i) + "]"));
  return children;
}
/// {"String": s} or {"Regex": r} -> a compiled regex.
Regex getPattern(const Json &obj, const char *key, const std::string &where);

//===-- Normalizers ---------------------------------------------------------===//

class Normalizer {
public:
  virtual ~Normalizer() = default;
  virtual void normalize(std::string &s) const = 0;
};
std::unique_ptr<Normalizer> parseNormalizer(const Json &j,
                                            const std::string &where);

//===-- Pre-tokenizers ------------------------------------------------------===//

class PreTokenizer {
public:
  virtual ~PreTokenizer() = default;
  /// Splits `in` and calls `emit` for each non-empty split, in order.
  virtual void split(Piece &&in, const Emit &emit) const = 0;
};
std::unique_ptr<PreTokenizer> parsePreTokenizer(const Json &j,
                                                const std::string &where);

/// (offsets, isMatch) pieces covering a string, as HF's Pattern::find_matches.
using Matches = std::vector<std::pair<std::pair<size_t, size_t>, bool>>;
enum class SplitBehavior {
  Removed,
  Isolated,
  MergedWithPrevious,
  MergedWithNext,
  Contiguous
};
/// HF NormalizedString::split: applies `behavior` to `matches` over in.text.
void splitByMatches(const Piece &in, const Matches &matches,
                    SplitBehavior behavior, const Emit &emit);

/// Metaspace's prepend_scheme (default "always"); a legacy
/// add_prefix_space=false must agree with it, as HF checks.
enum class PrependScheme { First, Never, Always };
PrependScheme parsePrependScheme(const Json &j, const std::string &where);

//===-- Model ---------------------------------------------------------------===//

class BpeModel {
public:
  BpeModel(const Json &j, const std::string &where);
  /// Appends the ids of one pre-tokenized word.
  void tokenize(std::string_view word, std::vector<uint32_t> &out) const;
  std::optional<uint32_t> tokenToId(std::string_view token) const;
  const std::string *idToToken(uint32_t id) const;
  size_t vocabSize() const { return vocab.size(); }

private:
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const noexcept {
      return std::hash<std::string_view>()(s);
    }
  };
  using StringMap =
      std::unordered_map<std::string, uint32_t, StringHash, std::equal_to<>>;
  struct MergeInfo {
    uint32_t rank;
    uint32_t newId;
  };

  void mergeWord(std::string_view word, std::vector<uint32_t> &out) const;
  const MergeInfo *findMerge(uint32_t a, uint32_t b) const {
    auto it = merges.find((static_cast<uint64_t>(a) << 32) | b);
    return it == merges.end() ? nullptr : &it->second;
  }

  StringMap vocab;
  std::unordered_map<uint32_t, std::string> vocabR;
  std::unordered_map<uint64_t, MergeInfo> merges;
  std::optional<std::string> unkToken;
  std::optional<std::string> continuingSubwordPrefix;
  std::optional<std::string> endOfWordSuffix;
  bool fuseUnk = false;
  bool byteFallback = false;
  bool ignoreMerges = false;
  /// Ids of "<0x00>".."<0xFF>" for byte_fallback (-1 if absent).
  int64_t byteIds[256];

  // Word cache: pre-tokenized words repeat a lot in real text.
  static constexpr size_t kCacheCapacity = 1 << 16;
  static constexpr size_t kCacheMaxWordLen = 256;
  mutable std::mutex cacheMutex;
  mutable std::unordered_map<std::string, std::vector<uint32_t>, StringHash,
                             std::equal_to<>>
      cache;
};

//===-- Post-processors -----------------------------------------------------===//

class PostProcessor {
public:
  virtual ~PostProcessor() = default;
  /// Adds the special tokens around a single sequence when addSpecial.
  virtual void process(std::vector<uint32_t> &ids, bool addSpecial) const = 0;
};
std::unique_ptr<PostProcessor> parsePostProcessor(const Json &j,
                                                  const std::string &where);

//===-- Decoders ------------------------------------------------------------===//

class Decoder {
public:
  virtual ~Decoder() = default;
  /// HF decode_chain: token strings in, transformed strings out.
  virtual void decodeChain(std::vector<std::string> &tokens) const = 0;
};
std::unique_ptr<Decoder> parseDecoder(const Json &j, const std::string &where);

//===-- Byte-level alphabet (GPT-2's bytes_to_unicode) ----------------------===//

struct ByteLevelTables {
  /// UTF-8 of the character each byte maps to.
  std::string byteToUtf8[256];
  /// Inverse map for code points < 512 (-1: not in the alphabet).
  int16_t charToByte[512];
  ByteLevelTables();
};
const ByteLevelTables &byteLevelTables();

} // namespace moert::tok
