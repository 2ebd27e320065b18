//===- PreTokenizers.cpp - tokenizer.json "pre_tokenizer" -----------------===//

#include "Components.h"
#include "Unicode.h"

namespace moert::tok {

void splitByMatches(const Piece &in, const Matches &matches,
                    SplitBehavior behavior, const Emit &emit) {
  // (offsets, remove) after applying the behavior, as HF does.
  std::vector<std::pair<std::pair<size_t, size_t>, bool>> splits;
  splits.reserve(matches.size());
  switch (behavior) {
  case SplitBehavior::Isolated:
    for (const auto &m : matches)
      splits.push_back({m.first, false});
    break;
  case SplitBehavior::Removed:
    splits = matches;
    break;
  case SplitBehavior::Contiguous: {
    bool previous = false;
    for (const auto &[offsets, isMatch] : matches) {
      if (isMatch == previous && !splits.empty())
        splits.back().first.second = offsets.second;
      else
        splits.push_back({offsets, false});
      previous = isMatch;
    }
    break;
  }
  case SplitBehavior::MergedWithPrevious: {
    bool previous = false;
    for (const auto &[offsets, isMatch] : matches) {
      if (isMatch && !previous && !splits.empty())
        splits.back().first.second = offsets.second;
      else
        splits.push_back({offsets, false});
      previous = isMatch;
    }
    break;
  }
  case SplitBehavior::MergedWithNext: {
    bool previous = false;
    for (auto it = matches.rbegin(); it != matches.rend(); ++it) {
      const auto &[offsets, isMatch] = *it;
      if (isMatch && !previous && !splits.empty())
        splits.back().first.first = offsets.first;
      else
        splits.push_back({offsets, false});
      previous = isMatch;
    }
    std::reverse(splits.begin(), splits.end());
    break;
  }
  }
  for (const auto &[offsets, remove] : splits) {
    if (remove || offsets.first == offsets.second)
      continue;
    emit(Piece{in.text.substr(offsets.first, offsets.second - offsets.first),
               in.atStart && offsets.first == 0});
  }
}

namespace {

/// HF's Pattern for `Fn(char) -> bool`: each matching character is a match.
template <typename Pred>
void charMatches(std::string_view s, Pred pred, Matches &out) {
  out.clear();
  if (s.empty()) {
    out.push_back({{0, 0}, false});
    return;
  }
  size_t lastOffset = 0;
  for (size_t i = 0; i < s.size();) {
    size_t b = i;
    char32_t c = nextCodePoint(s, i);
    if (pred(c)) {
      if (lastOffset < b)
        out.push_back({{lastOffset, b}, false});
      out.push_back({{b, i}, true});
      lastOffset = i;
    }
  }
  if (s.size() > lastOffset)
    out.push_back({{lastOffset, s.size()}, false});
}

SplitBehavior parseBehavior(const Json &j, const std::string &where) {
  std::string b = getString(j, "behavior", where);
  if (b == "Removed")
    return SplitBehavior::Removed;
  if (b == "Isolated")
    return SplitBehavior::Isolated;
  if (b == "MergedWithPrevious")
    return SplitBehavior::MergedWithPrevious;
  if (b == "MergedWithNext")
    return SplitBehavior::MergedWithNext;
  if (b == "Contiguous")
    return SplitBehavior::Contiguous;
  fail(where + ".behavior", "unknown split behavior '" + b + "'",
       "Removed, Isolated, MergedWithPrevious, MergedWithNext or Contiguous");
}

/// GPT-2's pre-tokenizer: optional prefix space, the GPT-2 word regex, then
/// every byte mapped to its byte-level character.
class ByteLevel : public PreTokenizer {
public:
  ByteLevel(const Json &j, const std::string &where)
      : addPrefixSpace(getBool(j, "add_prefix_space", where, true)),
        useRegex(getBool(j, "use_regex", where, true)),
        regex("'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+"
              "|\\s+(?!\\S)|\\s+",
              where) {}

  void split(Piece &&in, const Emit &emit) const override {
    if (addPrefixSpace && (in.text.empty() || in.text[0] != ' '))
      in.text.insert(0, 1, ' ');
    if (!useRegex) {
      emitMapped(in.text, in.atStart, emit);
      return;
    }
    // Isolated: matches and the gaps between them are all splits.
    size_t prev = 0;
    regex.forEachMatch(in.text, [&](size_t start, size_t end) {
      if (prev != start)
        emitMapped(std::string_view(in.text).substr(prev, start - prev),
                   in.atStart && prev == 0, emit);
      if (start != end)
        emitMapped(std::string_view(in.text).substr(start, end - start),
                   in.atStart && start == 0, emit);
      prev = end;
    });
    if (prev != in.text.size())
      emitMapped(std::string_view(in.text).substr(prev), in.atStart && prev == 0,
                 emit);
  }

private:
  static void emitMapped(std::string_view s, bool atStart, const Emit &emit) {
    if (s.empty())
      return;
    const auto &t = byteLevelTables();
    Piece p;
    p.atStart = atStart;
    p.text.reserve(s.size() * 2);
    for (unsigned char b : s)
      p.text.append(t.byteToUtf8[b]);
    emit(std::move(p));
  }

  bool addPrefixSpace;
  bool useRegex;
  Regex regex;
};

class Split : public PreTokenizer {
public:
  Split(const Json &j, const std::string &where)
      : pattern(getPattern(j, "pattern", where)),
        behavior(parseBehavior(j, where)),
        invert(getBool(j, "invert", where)) {}

  void split(Piece &&in, const Emit &emit) const override {
    Matches matches;
    pattern.findMatches(in.text, matches);
    if (invert)
      for (auto &m : matches)
        m.second = !m.second;
    splitByMatches(in, matches, behavior, emit);
  }

private:
  Regex pattern;
  SplitBehavior behavior;
  bool invert;
};

class Metaspace : public PreTokenizer {
public:
  Metaspace(const Json &j, const std::string &where)
      : replacement(getChar(j, "replacement", where)),
        scheme(parsePrependScheme(j, where)),
        splitOnReplacement(getBool(j, "split", where, true)) {
    appendUtf8(replacementUtf8, replacement);
  }

  void split(Piece &&in, const Emit &emit) const override {
    std::string s;
    s.reserve(in.text.size() + replacementUtf8.size());
    for (char c : in.text) {
      if (c == ' ')
        s.append(replacementUtf8);
      else
        s.push_back(c);
    }
    bool startsWith = s.compare(0, replacementUtf8.size(), replacementUtf8) == 0;
    if (!startsWith && (scheme == PrependScheme::Always ||
                        (scheme == PrependScheme::First && in.atStart)))
      s.insert(0, replacementUtf8);
    Piece out{std::move(s), in.atStart};
    if (!splitOnReplacement) {
      if (!out.text.empty())
        emit(std::move(out));
      return;
    }
    Matches matches;
    char32_t r = replacement;
    charMatches(out.text, [r](char32_t c) { return c == r; }, matches);
    splitByMatches(out, matches, SplitBehavior::MergedWithNext, emit);
  }

private:
  char32_t replacement;
  std::string replacementUtf8;
  PrependScheme scheme;
  bool splitOnReplacement;
};

class Digits : public PreTokenizer {
public:
  explicit Digits(bool individual) : individual(individual) {}
  void split(Piece &&in, const Emit &emit) const override {
    Matches matches;
    charMatches(in.text, isNumeric, matches);
    splitByMatches(in, matches,
                   individual ? SplitBehavior::Isolated
                              : SplitBehavior::Contiguous,
                   emit);
  }

private:
  bool individual;
};

/// Whitespace-separated words (HF WhitespaceSplit).
class WhitespaceSplit : public PreTokenizer {
public:
  void split(Piece &&in, const Emit &emit) const override {
    Matches matches;
    charMatches(in.text, isWhitespace, matches);
    splitByMatches(in, matches, SplitBehavior::Removed, emit);
  }
};

class SequencePreTokenizer : public PreTokenizer {
public:
  void split(Piece &&in, const Emit &emit) const override {
    run(0, std::move(in), emit);
  }
  std::vector<std::unique_ptr<PreTokenizer>> children;

private:
  // Depth first: every split is independent of its siblings, so running one
  // piece through all stages equals HF's stage-by-stage order.
  void run(size_t stage, Piece &&in, const Emit &emit) const {
    if (stage == children.size()) {
      emit(std::move(in));
      return;
    }
    children[stage]->split(std::move(in), [&](Piece &&p) {
      run(stage + 1, std::move(p), emit);
    });
  }
};

} // namespace

PrependScheme parsePrependScheme(const Json &j, const std::string &where) {
  PrependScheme s = PrependScheme::Always;
  if (j.contains("prepend_scheme") && !j["prepend_scheme"].is_null()) {
    std::string v = getString(j, "prepend_scheme", where);
    if (v == "first")
      s = PrependScheme::First;
    else if (v == "never")
      s = PrependScheme::Never;
    else if (v != "always")
      fail(where + ".prepend_scheme", "unknown value '" + v + "'",
           "first, never or always");
  }
  if (j.contains("add_prefix_space") && !j["add_prefix_space"].is_null() &&
      !getBool(j, "add_prefix_space", where) && s != PrependScheme::Never)
    fail(where, "add_prefix_space=false contradicts prepend_scheme",
         "prepend_scheme \"never\" with add_prefix_space false");
  return s;
}

std::unique_ptr<PreTokenizer> parsePreTokenizer(const Json &j,
                                                const std::string &where) {
  std::string type = typeOf(j, where);
  if (type == "ByteLevel")
    return std::make_unique<ByteLevel>(j, where);
  if (type == "Split")
    return std::make_unique<Split>(j, where);
  if (type == "Metaspace")
    return std::make_unique<Metaspace>(j, where);
  if (type == "Digits")
    return std::make_unique<Digits>(
        getBool(j, "individual_digits", where, false));
  if (type == "WhitespaceSplit")
    return std::make_unique<WhitespaceSplit>();
  if (type == "Sequence") {
    auto seq = std::make_unique<SequencePreTokenizer>();
    seq->children = parseChildren<PreTokenizer>(
        j, "pretokenizers", where, "pre-tokenizers", parsePreTokenizer);
    return seq;
  }
  fail(where, "unsupported pre-tokenizer type '" + type + "'",
       "one of ByteLevel, Split, Metaspace, Digits, WhitespaceSplit, Sequence");
}

} // namespace moert::tok
