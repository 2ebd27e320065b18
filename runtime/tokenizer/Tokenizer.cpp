//===- Tokenizer.cpp - tokenizer.json loading, encode, decode -------------===//

#include "Components.h"
#include "Unicode.h"

#include <fstream>
#include <map>
#include <sstream>

namespace moert {
namespace tok {

namespace {

struct AddedToken {
  std::string content;
  /// The content after the normalizer, for normalized tokens: what the
  /// normalized text is matched against and what decoding starts from.
  std::string normalizedForm;
  uint32_t id = 0;
  bool singleWord = false, lstrip = false, rstrip = false;
  bool normalized = true, special = false;
};

/// Leftmost-longest matching of a set of strings (HF uses an Aho-Corasick
/// automaton with MatchKind::LeftmostLongest): a byte trie probed at every
/// position whose first byte starts some pattern.
class TokenMatcher {
public:
  void add(std::string_view pattern, size_t token) {
    if (pattern.empty())
      return;
    if (nodes.empty())
      nodes.emplace_back();
    size_t n = 0;
    for (unsigned char b : pattern) {
      auto it = nodes[n].next.find(b);
      if (it == nodes[n].next.end()) {
        nodes.emplace_back();
        it = nodes[n].next.emplace(b, nodes.size() - 1).first;
      }
      n = it->second;
    }
    nodes[n].token = token;
    firstByte[static_cast<unsigned char>(pattern[0])] = true;
  }
  bool empty() const { return nodes.empty(); }

  /// Longest pattern starting at s[pos]: (length, token), length 0 if none.
  std::pair<size_t, size_t> longestAt(std::string_view s, size_t pos) const {
    std::pair<size_t, size_t> best{0, 0};
    size_t n = 0;
    for (size_t i = pos; i < s.size(); ++i) {
      auto it = nodes[n].next.find(static_cast<unsigned char>(s[i]));
      if (it == nodes[n].next.end())
        break;
      n = it->second;
      if (nodes[n].token != kNone)
        best = {i + 1 - pos, nodes[n].token};
    }
    return best;
  }
  bool mayStartAt(unsigned char b) const { return firstByte[b]; }

private:
  static constexpr size_t kNone = ~size_t(0);
  struct Node {
    std::map<unsigned char, size_t> next;
    size_t token = kNone;
  };
  std::vector<Node> nodes;
  bool firstByte[256] = {};
};

bool endsWithWord(std::string_view s) {
  if (s.empty())
    return false;
  size_t start = previousCodePointStart(s, s.size());
  return isWordChar(nextCodePoint(s, start));
}

bool startsWithWord(std::string_view s) {
  size_t i = 0;
  return !s.empty() && isWordChar(nextCodePoint(s, i));
}

} // namespace

struct TokenizerImpl {
  std::unique_ptr<Normalizer> normalizer;
  std::unique_ptr<PreTokenizer> preTokenizer;
  std::unique_ptr<BpeModel> model;
  std::unique_ptr<PostProcessor> postProcessor;
  std::unique_ptr<Decoder> decoder;

  std::vector<AddedToken> added; // indexed by TokenMatcher token
  std::unordered_map<uint32_t, size_t> addedById;
  std::unordered_map<std::string, size_t> addedByContent;
  TokenMatcher rawMatcher;        // normalized = false, on the raw text
  TokenMatcher normalizedMatcher; // normalized = true, on normalized text

  std::optional<bool> addBos, addEos;
  std::optional<uint32_t> bosId, eosId;

  void loadAddedTokens(const Json &list, const std::string &where);
  void loadConfig(const Json &cfg, const std::string &where);

  /// HF AddedVocabulary::find_matches + the split that follows: calls
  /// onText for the text between tokens and onToken for each token.
  template <typename OnText, typename OnToken>
  void splitOnAdded(std::string_view s, const TokenMatcher &matcher,
                    OnText &&onText, OnToken &&onToken) const;

  void encodeInto(std::string_view text, std::vector<uint32_t> &ids) const;
  std::optional<uint32_t> tokenToId(std::string_view token) const {
    if (auto it = addedByContent.find(std::string(token));
        it != addedByContent.end())
      return added[it->second].id;
    return model->tokenToId(token);
  }
};

void TokenizerImpl::loadAddedTokens(const Json &list, const std::string &where) {
  if (list.is_null())
    return;
  if (!list.is_array())
    fail(where, "not a list", "a list of added tokens");
  // Ids as HF assigns them: the model's id when the content is in the vocab,
  // otherwise the next id after the vocab (HF only warns when the file says
  // otherwise).
  uint32_t nextId = static_cast<uint32_t>(model->vocabSize());
  for (size_t i = 0; i < list.size(); ++i) {
    std::string at = where + "[" + std::to_string(i) + "]";
    const Json &j = list[i];
    AddedToken t;
    t.content = getString(j, "content", at);
    getU32(j, "id", at); // validated, but HF derives the id itself
    t.singleWord = getBool(j, "single_word", at, false);
    t.lstrip = getBool(j, "lstrip", at, false);
    t.rstrip = getBool(j, "rstrip", at, false);
    t.special = getBool(j, "special", at, false);
    t.normalized = getBool(j, "normalized", at, !t.special);
    if (t.content.empty())
      continue;
    if (findInvalidUtf8(t.content) != std::string::npos)
      fail(at + ".content", "invalid UTF-8", "valid UTF-8");
    if (auto existing = tokenToId(t.content))
      t.id = *existing;
    else
      t.id = nextId++;
    t.normalizedForm = t.content;
    if (t.normalized && normalizer)
      normalizer->normalize(t.normalizedForm);
    if (auto it = addedById.find(t.id); it != addedById.end()) {
      added[it->second] = std::move(t); // re-added: the last flags win
      continue;
    }
    addedById[t.id] = added.size();
    addedByContent[t.content] = added.size();
    added.push_back(std::move(t));
  }
  for (size_t k = 0; k < added.size(); ++k) {
    if (added[k].normalized)
      normalizedMatcher.add(added[k].normalizedForm, k);
    else
      rawMatcher.add(added[k].content, k);
  }
}

template <typename OnText, typename OnToken>
void TokenizerImpl::splitOnAdded(std::string_view s,
                                 const TokenMatcher &matcher, OnText &&onText,
                                 OnToken &&onToken) const {
  if (matcher.empty()) {
    onText(0, s.size());
    return;
  }
  size_t startOffset = 0;
  size_t pos = 0;
  while (pos < s.size()) {
    if (!matcher.mayStartAt(static_cast<unsigned char>(s[pos]))) {
      ++pos;
      continue;
    }
    auto [len, k] = matcher.longestAt(s, pos);
    if (len == 0) {
      ++pos;
      continue;
    }
    size_t start = pos, stop = pos + len;
    pos = stop; // the automaton resumes after the match, kept or not
    const AddedToken &t = added[k];
    if (t.singleWord) {
      bool startSpace = start == 0 || !endsWithWord(s.substr(0, start));
      bool stopSpace = stop == s.size() || !startsWithWord(s.substr(stop));
      if (!startSpace || !stopSpace)
        continue;
    }
    // The previous match may already have taken the spaces.
    if (t.lstrip)
      start = std::max(skipWhitespaceBackward(s, start), startOffset);
    if (t.rstrip)
      stop = skipWhitespace(s, stop);
    if (startOffset < start)
      onText(startOffset, start);
    onToken(k);
    startOffset = stop;
  }
  if (startOffset != s.size())
    onText(startOffset, s.size());
}

void TokenizerImpl::encodeInto(std::string_view text,
                               std::vector<uint32_t> &ids) const {
  auto toModel = [&](Piece &&p) { model->tokenize(p.text, ids); };
  Emit emitToModel = toModel;
  auto preTokenize = [&](Piece &&p) {
    if (p.text.empty())
      return;
    if (preTokenizer)
      preTokenizer->split(std::move(p), emitToModel);
    else
      toModel(std::move(p));
  };
  auto onToken = [&](size_t k) { ids.push_back(added[k].id); };
  // 1. Non-normalized added tokens on the raw text; 2. normalize each piece
  // in between and extract normalized added tokens; 3. pre-tokenize and run
  // the model on what is left.
  splitOnAdded(text, rawMatcher, [&](size_t b, size_t e) {
    std::string piece(text.substr(b, e - b));
    bool atStart = b == 0;
    if (normalizer)
      normalizer->normalize(piece);
    if (piece.empty())
      return;
    splitOnAdded(piece, normalizedMatcher, [&](size_t nb, size_t ne) {
      preTokenize(Piece{piece.substr(nb, ne - nb), atStart && nb == 0});
    }, onToken);
  }, onToken);
}

void TokenizerImpl::loadConfig(const Json &cfg, const std::string &where) {
  if (!cfg.is_object())
    fail(where, "not a JSON object", "a tokenizer_config.json object");
  auto flag = [&](const char *key) -> std::optional<bool> {
    if (!cfg.contains(key) || cfg[key].is_null())
      return std::nullopt;
    return getBool(cfg, key, where);
  };
  addBos = flag("add_bos_token");
  addEos = flag("add_eos_token");
  // "bos_token": "<s>" or {"content": "<s>", ...}; null means none.
  auto special = [&](const char *key) -> std::optional<uint32_t> {
    if (!cfg.contains(key) || cfg[key].is_null())
      return std::nullopt;
    const Json &v = cfg[key];
    std::string name = v.is_string() ? v.get<std::string>()
                                     : getString(v, "content",
                                                 where + "." + key);
    auto id = tokenToId(name);
    if (!id)
      fail(where + "." + key, "token '" + name + "' is not in the vocabulary",
           "a token of tokenizer.json");
    return id;
  };
  bosId = special("bos_token");
  eosId = special("eos_token");
  if (addBos.value_or(false) && !bosId)
    fail(where, "add_bos_token is true but bos_token is not set",
         "a bos_token");
  if (addEos.value_or(false) && !eosId)
    fail(where, "add_eos_token is true but eos_token is not set",
         "an eos_token");
}

namespace {
std::string readFile(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw TokenizerError(path + ": cannot open file (expected a readable file)");
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad())
    throw TokenizerError(path + ": read error (expected a readable file)");
  return ss.str();
}

/// Real tokenizer.json files nest a handful of levels; the components
/// (Sequence of Sequence ...) are built and run recursively, so depth is
/// bounded here rather than by the stack.
constexpr int kMaxJsonDepth = 64;

Json parseJson(std::string_view text, const std::string &origin) {
  try {
    Json::parser_callback_t limitDepth = [&](int depth, Json::parse_event_t,
                                             Json &) {
      if (depth > kMaxJsonDepth)
        throw TokenizerError(origin + ": JSON nested deeper than " +
                             std::to_string(kMaxJsonDepth) +
                             " levels (expected a tokenizer.json document)");
      return true;
    };
    return Json::parse(text.begin(), text.end(), limitDepth);
  } catch (const Json::exception &e) {
    throw TokenizerError(origin + ": malformed JSON: " + e.what() +
                         " (expected a JSON document)");
  }
}
} // namespace

} // namespace tok


Tokenizer::Tokenizer(std::unique_ptr<tok::TokenizerImpl> impl)
    : impl(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer &&) noexcept = default;
Tokenizer &Tokenizer::operator=(Tokenizer &&) noexcept = default;
Tokenizer::~Tokenizer() = default;

namespace tok {
namespace {
std::unique_ptr<TokenizerImpl> load(std::string_view tokenizerJson,
                                    std::string_view configJson,
                                    const std::string &origin,
                                    const std::string &configOrigin) {
  auto impl = std::make_unique<TokenizerImpl>();
  Json j = parseJson(tokenizerJson, origin);
  try {
    if (!j.is_object())
      fail("tokenizer", "not a JSON object", "a tokenizer.json object");
    if (j.contains("version") &&
        (!j["version"].is_string() || j["version"] != "1.0"))
      fail("version",
           "unknown tokenizer version " +
               (j["version"].is_primitive()
                    ? j["version"].dump(-1, ' ', false,
                                        Json::error_handler_t::replace)
                    : std::string(j["version"].type_name())),
           "\"1.0\"");
    for (const char *key : {"truncation", "padding"})
      if (j.contains(key) && !j[key].is_null())
        fail(key, std::string("unsupported ") + key + " settings",
             "null (moe-run handles lengths itself)");
    auto optional = [&](const char *key) -> const Json * {
      return j.contains(key) && !j[key].is_null() ? &j[key] : nullptr;
    };
    if (const Json *n = optional("normalizer"))
      impl->normalizer = parseNormalizer(*n, "normalizer");
    if (const Json *p = optional("pre_tokenizer"))
      impl->preTokenizer = parsePreTokenizer(*p, "pre_tokenizer");
    impl->model =
        std::make_unique<BpeModel>(member(j, "model", "tokenizer"), "model");
    if (const Json *p = optional("post_processor"))
      impl->postProcessor = parsePostProcessor(*p, "post_processor");
    if (const Json *d = optional("decoder"))
      impl->decoder = parseDecoder(*d, "decoder");
    if (const Json *a = optional("added_tokens"))
      impl->loadAddedTokens(*a, "added_tokens");
  } catch (const TokenizerError &e) {
    throw TokenizerError(origin + ": " + e.what());
  } catch (const Json::exception &e) {
    throw TokenizerError(origin + ": " + e.what() +
                         " (expected a tokenizer.json document)");
  }
  if (!configJson.empty()) {
    Json cfg = parseJson(configJson, configOrigin);
    try {
      impl->loadConfig(cfg, "tokenizer_config");
    } catch (const TokenizerError &e) {
      throw TokenizerError(configOrigin + ": " + e.what());
    }
  }
  return impl;
}
} // namespace
} // namespace tok

Tokenizer Tokenizer::fromFile(const std::string &tokenizerPath,
                              const std::string &configPath) {
  std::string text = tok::readFile(tokenizerPath);
  std::string config = configPath.empty() ? "" : tok::readFile(configPath);
  return Tokenizer(tok::load(text, config, tokenizerPath,
                             configPath.empty() ? "tokenizer_config.json"
                                                : configPath));
}

Tokenizer Tokenizer::fromJson(std::string_view tokenizerJson,
                              std::string_view configJson,
                              const std::string &origin) {
  return Tokenizer(
      tok::load(tokenizerJson, configJson, origin, "tokenizer_config.json"));
}

std::vector<uint32_t> Tokenizer::encode(std::string_view text,
                                        bool addSpecial) const {
  if (size_t bad = tok::findInvalidUtf8(text); bad != std::string_view::npos)
    throw TokenizerError("invalid UTF-8 at byte " + std::to_string(bad) +
                         " of the input text (expected valid UTF-8)");
  std::vector<uint32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  impl->encodeInto(text, ids);
  if (impl->postProcessor)
    impl->postProcessor->process(ids, addSpecial);
  return ids;
}

std::vector<uint32_t> Tokenizer::encodePrompt(std::string_view text) const {
  if (!impl->addBos && !impl->addEos)
    return encode(text, /*addSpecial=*/true);
  std::vector<uint32_t> ids;
  std::vector<uint32_t> body = encode(text, /*addSpecial=*/false);
  if (impl->addBos.value_or(false))
    ids.push_back(*impl->bosId);
  ids.insert(ids.end(), body.begin(), body.end());
  if (impl->addEos.value_or(false))
    ids.push_back(*impl->eosId);
  return ids;
}

std::string Tokenizer::decode(std::span<const uint32_t> ids,
                              bool skipSpecial) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (uint32_t id : ids) {
    if (auto it = impl->addedById.find(id); it != impl->addedById.end()) {
      const tok::AddedToken &t = impl->added[it->second];
      if (skipSpecial && t.special)
        continue;
      tokens.push_back(t.normalizedForm);
      continue;
    }
    const std::string *s = impl->model->idToToken(id);
    if (!s)
      throw TokenizerError("unknown token id " + std::to_string(id) +
                           " (expected an id of the vocabulary, size " +
                           std::to_string(vocabSize()) + ")");
    tokens.push_back(*s);
  }
  if (!impl->decoder) {
    std::string out;
    for (size_t k = 0; k < tokens.size(); ++k)
      out += (k ? " " : "") + tokens[k];
    return out;
  }
  impl->decoder->decodeChain(tokens);
  std::string out;
  for (const std::string &t : tokens)
    out += t;
  return out;
}

std::optional<uint32_t> Tokenizer::tokenToId(std::string_view token) const {
  return impl->tokenToId(token);
}

std::optional<std::string> Tokenizer::idToToken(uint32_t id) const {
  if (auto it = impl->addedById.find(id); it != impl->addedById.end())
    return impl->added[it->second].content;
  if (const std::string *s = impl->model->idToToken(id))
    return *s;
  return std::nullopt;
}

bool Tokenizer::isSpecial(uint32_t id) const {
  auto it = impl->addedById.find(id);
  return it != impl->addedById.end() && impl->added[it->second].special;
}

size_t Tokenizer::vocabSize() const {
  size_t n = impl->model->vocabSize();
  for (const auto &t : impl->added)
    if (!impl->model->idToToken(t.id))
      ++n;
  return n;
}

std::optional<uint32_t> Tokenizer::bosTokenId() const { return impl->bosId; }
std::optional<uint32_t> Tokenizer::eosTokenId() const { return impl->eosId; }

//===-- DecodeStream ---------------------------------------------------------===//

namespace {
bool endsWithReplacementChar(const std::string &s) {
  return s.size() >= 3 && s.compare(s.size() - 3, 3, "\xEF\xBF\xBD") == 0;
}
} // namespace

DecodeStream::DecodeStream(const Tokenizer &tokenizer, bool skipSpecial)
    : tokenizer(tokenizer), skipSpecial(skipSpecial) {}

// HF's step_decode_stream: decode a short window of recent ids, emit what
// extends the previous window's text once it no longer ends in U+FFFD (an
// incomplete character), then slide the window.
std::string DecodeStream::step(uint32_t id) {
  if (prefix.empty() && !ids.empty()) {
    std::string p = tokenizer.decode(ids, skipSpecial);
    if (!endsWithReplacementChar(p)) {
      prefix = std::move(p);
      prefixIndex = ids.size();
    }
  }
  ids.push_back(id);
  std::string s = tokenizer.decode(ids, skipSpecial);
  if (s.size() <= prefix.size() || endsWithReplacementChar(s))
    return "";
  if (s.compare(0, prefix.size(), prefix) != 0)
    throw TokenizerError("decode stream: text of token " + std::to_string(id) +
                         " does not extend the previous text (expected a "
                         "prefix-stable decoder)");
  std::string newText = s.substr(prefix.size());
  ids.erase(ids.begin(), ids.begin() + static_cast<ptrdiff_t>(prefixIndex));
  prefix = tokenizer.decode(ids, skipSpecial);
  prefixIndex = ids.size();
  return newText;
}

std::string DecodeStream::flush() {
  std::string s = tokenizer.decode(ids, skipSpecial);
  std::string rest;
  if (s.size() > prefix.size() && s.compare(0, prefix.size(), prefix) == 0)
    rest = s.substr(prefix.size());
  ids.clear();
  prefix.clear();
  prefixIndex = 0;
  return rest;
}

} // namespace moert
