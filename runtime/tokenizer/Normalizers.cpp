//===- Normalizers.cpp - tokenizer.json "normalizer" ----------------------===//

#include "Components.h"
#include "Unicode.h"

#include <algorithm>

namespace moert::tok {

namespace {

class UnicodeNormalizer : public Normalizer {
public:
  explicit UnicodeNormalizer(NormalForm form) : form(form) {}
  void normalize(std::string &s) const override {
    s = normalizeUnicode(s, form);
  }

private:
  NormalForm form;
};

class Lowercase : public Normalizer {
public:
  void normalize(std::string &s) const override {
    std::string out;
    out.reserve(s.size());
    for (size_t i = 0; i < s.size();)
      appendLowercase(out, nextCodePoint(s, i));
    s = std::move(out);
  }
};

class Strip : public Normalizer {
public:
  Strip(bool left, bool right) : left(left), right(right) {}
  void normalize(std::string &s) const override {
    size_t begin = left ? skipWhitespace(s, 0) : 0;
    size_t end = s.size();
    if (right)
      end = std::max(begin, skipWhitespaceBackward(s, end));
    s = s.substr(begin, end - begin);
  }

private:
  bool left, right;
};

class StripAccents : public Normalizer {
public:
  void normalize(std::string &s) const override {
    std::string out;
    out.reserve(s.size());
    for (size_t i = 0; i < s.size();) {
      size_t start = i;
      if (!isCombiningMark(nextCodePoint(s, i)))
        out.append(s, start, i - start);
    }
    s = std::move(out);
  }
};

class Replace : public Normalizer {
public:
  Replace(const Json &j, const std::string &where)
      : pattern(getPattern(j, "pattern", where)),
        content(getString(j, "content", where)) {}
  void normalize(std::string &s) const override {
    std::string out;
    size_t last = 0;
    bool matched = false;
    pattern.forEachMatch(s, [&](size_t start, size_t end) {
      out.append(s, last, start - last);
      out.append(content);
      last = end;
      matched = true;
    });
    if (!matched)
      return;
    out.append(s, last, std::string::npos);
    s = std::move(out);
  }

private:
  Regex pattern;
  std::string content;
};

class Prepend : public Normalizer {
public:
  explicit Prepend(std::string prefix) : prefix(std::move(prefix)) {}
  void normalize(std::string &s) const override {
    if (!s.empty())
      s.insert(0, prefix);
  }

private:
  std::string prefix;
};

/// Maps every byte to its byte-level character (as the pre-tokenizer does).
class ByteLevelNormalizer : public Normalizer {
public:
  void normalize(std::string &s) const override {
    const auto &t = byteLevelTables();
    std::string out;
    out.reserve(s.size() * 2);
    for (unsigned char b : s)
      out.append(t.byteToUtf8[b]);
    s = std::move(out);
  }
};

class SequenceNormalizer : public Normalizer {
public:
  void normalize(std::string &s) const override {
    for (const auto &n : children)
      n->normalize(s);
  }
  std::vector<std::unique_ptr<Normalizer>> children;
};

} // namespace

std::unique_ptr<Normalizer> parseNormalizer(const Json &j,
                                            const std::string &where) {
  std::string type = typeOf(j, where);
  if (type == "NFC")
    return std::make_unique<UnicodeNormalizer>(NormalForm::NFC);
  if (type == "NFD")
    return std::make_unique<UnicodeNormalizer>(NormalForm::NFD);
  if (type == "NFKC")
    return std::make_unique<UnicodeNormalizer>(NormalForm::NFKC);
  if (type == "NFKD")
    return std::make_unique<UnicodeNormalizer>(NormalForm::NFKD);
  if (type == "Lowercase")
    return std::make_unique<Lowercase>();
  if (type == "Strip")
    return std::make_unique<Strip>(getBool(j, "strip_left", where),
                                   getBool(j, "strip_right", where));
  if (type == "StripAccents")
    return std::make_unique<StripAccents>();
  if (type == "Replace")
    return std::make_unique<Replace>(j, where);
  if (type == "Prepend")
    return std::make_unique<Prepend>(getString(j, "prepend", where));
  if (type == "ByteLevel")
    return std::make_unique<ByteLevelNormalizer>();
  if (type == "Sequence") {
    auto seq = std::make_unique<SequenceNormalizer>();
    seq->children = parseChildren<Normalizer>(j, "normalizers", where,
                                              "normalizers", parseNormalizer);
    return seq;
  }
  fail(where, "unsupported normalizer type '" + type + "'",
       "one of NFC, NFD, NFKC, NFKD, Lowercase, Strip, StripAccents, Replace, "
       "Prepend, ByteLevel, Sequence");
}

} // namespace moert::tok
