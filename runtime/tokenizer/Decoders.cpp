//===- Decoders.cpp - "decoder" and "post_processor" ----------------------===//

#include "Components.h"
#include "Unicode.h"

namespace moert::tok {

namespace {

//===-- Decoders ------------------------------------------------------------===//

/// Byte-level characters back to bytes, all tokens fused into one string. A
/// token with a character outside the alphabet (an added token) passes
/// through as its UTF-8 bytes.
class ByteLevelDecoder : public Decoder {
public:
  void decodeChain(std::vector<std::string> &tokens) const override {
    const auto &t = byteLevelTables();
    std::string bytes;
    for (const std::string &tok : tokens) {
      size_t mark = bytes.size();
      bool ok = true;
      for (size_t i = 0; i < tok.size();) {
        char32_t c = nextCodePoint(tok, i);
        if (c >= 512 || t.charToByte[c] < 0) {
          ok = false;
          break;
        }
        bytes.push_back(static_cast<char>(t.charToByte[c]));
      }
      if (!ok) {
        bytes.resize(mark);
        bytes.append(tok);
      }
    }
    tokens.assign(1, fromUtf8Lossy(bytes));
  }
};

class MetaspaceDecoder : public Decoder {
public:
  MetaspaceDecoder(const Json &j, const std::string &where)
      : replacement(getChar(j, "replacement", where)),
        stripFirst(parsePrependScheme(j, where) != PrependScheme::Never) {}
  void decodeChain(std::vector<std::string> &tokens) const override {
    for (size_t k = 0; k < tokens.size(); ++k) {
      std::string out;
      const std::string &tok = tokens[k];
      for (size_t i = 0; i < tok.size();) {
        size_t start = i;
        char32_t c = nextCodePoint(tok, i);
        if (c == replacement) {
          if (!(k == 0 && stripFirst))
            out.push_back(' ');
        } else {
          out.append(tok, start, i - start);
        }
      }
      tokens[k] = std::move(out);
    }
  }

private:
  char32_t replacement;
  bool stripFirst;
};

class ReplaceDecoder : public Decoder {
public:
  ReplaceDecoder(const Json &j, const std::string &where)
      : pattern(getPattern(j, "pattern", where)),
        content(getString(j, "content", where)) {}
  void decodeChain(std::vector<std::string> &tokens) const override {
    Matches matches;
    for (std::string &tok : tokens) {
      pattern.findMatches(tok, matches);
      std::string out;
      for (const auto &[off, isMatch] : matches) {
        if (isMatch)
          out.append(content);
        else
          out.append(tok, off.first, off.second - off.first);
      }
      tok = std::move(out);
    }
  }

private:
  Regex pattern;
  std::string content;
};

/// Runs of <0xXX> tokens become the string their bytes spell, or one U+FFFD
/// per byte when those bytes are not valid UTF-8.
class ByteFallbackDecoder : public Decoder {
public:
  void decodeChain(std::vector<std::string> &tokens) const override {
    std::vector<std::string> out;
    std::string pending;
    auto flush = [&] {
      if (pending.empty())
        return;
      if (findInvalidUtf8(pending) == std::string::npos)
        out.push_back(pending);
      else
        for (size_t k = 0; k < pending.size(); ++k)
          out.emplace_back("\xEF\xBF\xBD");
      pending.clear();
    };
    for (std::string &tok : tokens) {
      if (int byte = parseByte(tok); byte >= 0) {
        pending.push_back(static_cast<char>(byte));
        continue;
      }
      flush();
      out.push_back(std::move(tok));
    }
    flush();
    tokens = std::move(out);
  }

private:
  /// "<0xXX>" -> XX as Rust's u8::from_str_radix(_, 16) reads it, else -1.
  static int parseByte(const std::string &tok) {
    if (tok.size() != 6 || tok.compare(0, 3, "<0x") != 0 || tok[5] != '>')
      return -1;
    auto hex = [](char c) {
      if (c >= '0' && c <= '9')
        return c - '0';
      if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
      if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
      return -1;
    };
    if (tok[3] == '+') // from_str_radix accepts a leading '+'
      return hex(tok[4]);
    int hi = hex(tok[3]), lo = hex(tok[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
  }
};

class FuseDecoder : public Decoder {
public:
  void decodeChain(std::vector<std::string> &tokens) const override {
    std::string all;
    for (const std::string &t : tokens)
      all += t;
    tokens.assign(1, std::move(all));
  }
};

/// Removes up to `start` leading and `stop` trailing `content` characters of
/// every token.
class StripDecoder : public Decoder {
public:
  StripDecoder(const Json &j, const std::string &where)
      : content(getChar(j, "content", where)),
        start(getU32(j, "start", where)), stop(getU32(j, "stop", where)) {}
  void decodeChain(std::vector<std::string> &tokens) const override {
    for (std::string &tok : tokens) {
      std::vector<size_t> offsets; // byte offset of each character
      for (size_t i = 0; i < tok.size(); nextCodePoint(tok, i))
        offsets.push_back(i);
      size_t n = offsets.size();
      auto at = [&](size_t k) {
        size_t i = offsets[k];
        return nextCodePoint(tok, i);
      };
      size_t startCut = 0;
      for (size_t k = 0; k < std::min<size_t>(start, n) && at(k) == content;
           ++k)
        startCut = k + 1;
      size_t stopCut = n;
      for (size_t k = 0; k < std::min<size_t>(stop, n); ++k) {
        if (at(n - k - 1) != content)
          break;
        stopCut = n - k - 1;
      }
      if (startCut >= stopCut) {
        tok.clear();
        continue;
      }
      size_t b0 = offsets[startCut];
      size_t b1 = stopCut == n ? tok.size() : offsets[stopCut];
      tok = tok.substr(b0, b1 - b0);
    }
  }

private:
  char32_t content;
  uint32_t start, stop;
};

class SequenceDecoder : public Decoder {
public:
  void decodeChain(std::vector<std::string> &tokens) const override {
    for (const auto &d : children)
      d->decodeChain(tokens);
  }
  std::vector<std::unique_ptr<Decoder>> children;
};

//===-- Post-processors -----------------------------------------------------===//

/// Offsets only; ids pass through.
class NoOpProcessor : public PostProcessor {
public:
  void process(std::vector<uint32_t> &, bool) const override {}
};

/// Special-token ids before and after the sequence (TemplateProcessing's
/// "single" template, Bert/RobertaProcessing).
class WrapProcessor : public PostProcessor {
public:
  void process(std::vector<uint32_t> &ids, bool addSpecial) const override {
    if (!addSpecial)
      return;
    ids.insert(ids.begin(), before.begin(), before.end());
    ids.insert(ids.end(), after.begin(), after.end());
  }
  std::vector<uint32_t> before, after;
};

std::unique_ptr<PostProcessor> parseTemplate(const Json &j,
                                             const std::string &where) {
  // special_tokens: {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}
  const Json &specials = member(j, "special_tokens", where);
  if (!specials.is_object())
    fail(where + ".special_tokens", "not an object", "{name: {ids: [...]}}");
  std::unordered_map<std::string, std::vector<uint32_t>> special;
  for (auto it = specials.begin(); it != specials.end(); ++it) {
    std::string at = where + ".special_tokens[\"" + it.key() + "\"]";
    const Json &ids = member(it.value(), "ids", at);
    const Json &toks = member(it.value(), "tokens", at);
    if (!ids.is_array() || !toks.is_array() || ids.size() != toks.size())
      fail(at, "ids and tokens differ", "two lists of the same length");
    std::vector<uint32_t> v;
    for (const Json &id : ids) {
      if (!id.is_number_unsigned() || id.get<uint64_t>() > UINT32_MAX)
        fail(at + ".ids", "not a valid id", "integers in [0, 2^32)");
      v.push_back(id.get<uint32_t>());
    }
    special[it.key()] = std::move(v);
  }
  const Json &single = member(j, "single", where);
  if (!single.is_array())
    fail(where + ".single", "not a list", "a list of template pieces");
  auto proc = std::make_unique<WrapProcessor>();
  bool seenSequence = false;
  for (size_t i = 0; i < single.size(); ++i) {
    std::string at = where + ".single[" + std::to_string(i) + "]";
    const Json &piece = single[i];
    if (piece.is_object() && piece.contains("Sequence")) {
      if (seenSequence)
        fail(at, "a second sequence in the single template", "one $A");
      seenSequence = true;
      continue;
    }
    if (!piece.is_object() || !piece.contains("SpecialToken"))
      fail(at, "unrecognized template piece",
           "{\"Sequence\": ...} or {\"SpecialToken\": ...}");
    std::string id = getString(piece["SpecialToken"], "id", at + ".SpecialToken");
    auto it = special.find(id);
    if (it == special.end())
      fail(at, "special token '" + id + "' is not in special_tokens",
           "a token listed in special_tokens");
    auto &dst = seenSequence ? proc->after : proc->before;
    dst.insert(dst.end(), it->second.begin(), it->second.end());
  }
  if (!seenSequence)
    fail(where + ".single", "no sequence in the template", "a $A piece");
  return proc;
}

/// Bert/RobertaProcessing: "cls": ["<s>", 0], "sep": ["</s>", 2].
std::unique_ptr<PostProcessor> parseClsSep(const Json &j,
                                           const std::string &where) {
  auto idOf = [&](const char *key) {
    const Json &pair = member(j, key, where);
    if (!pair.is_array() || pair.size() != 2 || !pair[1].is_number_unsigned() ||
        pair[1].get<uint64_t>() > UINT32_MAX)
      fail(where + "." + key, "malformed special token", "[\"token\", id]");
    return pair[1].get<uint32_t>();
  };
  auto proc = std::make_unique<WrapProcessor>();
  proc->before.push_back(idOf("cls"));
  proc->after.push_back(idOf("sep"));
  return proc;
}

class SequenceProcessor : public PostProcessor {
public:
  void process(std::vector<uint32_t> &ids, bool addSpecial) const override {
    for (const auto &p : children)
      p->process(ids, addSpecial);
  }
  std::vector<std::unique_ptr<PostProcessor>> children;
};

} // namespace

std::unique_ptr<Decoder> parseDecoder(const Json &j, const std::string &where) {
  std::string type = typeOf(j, where);
  if (type == "ByteLevel")
    return std::make_unique<ByteLevelDecoder>();
  if (type == "Metaspace")
    return std::make_unique<MetaspaceDecoder>(j, where);
  if (type == "Replace")
    return std::make_unique<ReplaceDecoder>(j, where);
  if (type == "ByteFallback")
    return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse")
    return std::make_unique<FuseDecoder>();
  if (type == "Strip")
    return std::make_unique<StripDecoder>(j, where);
  if (type == "Sequence") {
    auto seq = std::make_unique<SequenceDecoder>();
    seq->children =
        parseChildren<Decoder>(j, "decoders", where, "decoders", parseDecoder);
    return seq;
  }
  fail(where, "unsupported decoder type '" + type + "'",
       "one of ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip, "
       "Sequence");
}

std::unique_ptr<PostProcessor> parsePostProcessor(const Json &j,
                                                  const std::string &where) {
  std::string type = typeOf(j, where);
  if (type == "ByteLevel")
    return std::make_unique<NoOpProcessor>();
  if (type == "TemplateProcessing")
    return parseTemplate(j, where);
  if (type == "BertProcessing" || type == "RobertaProcessing")
    return parseClsSep(j, where);
  if (type == "Sequence") {
    auto seq = std::make_unique<SequenceProcessor>();
    seq->children = parseChildren<PostProcessor>(
        j, "processors", where, "post-processors", parsePostProcessor);
    return seq;
  }
  fail(where, "unsupported post-processor type '" + type + "'",
       "one of TemplateProcessing, ByteLevel, BertProcessing, "
       "RobertaProcessing, Sequence");
}

} // namespace moert::tok
