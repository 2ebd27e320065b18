//===- Regex.h - PCRE2 regexes with Oniguruma iteration semantics -*- C++ -*-=//
//
// The Hugging Face library runs its pre-tokenizer and Replace patterns through
// Oniguruma. PCRE2 (UTF + UCP, JIT when available) understands the same
// syntax for the patterns tokenizer.json files use (\p{L}, (?i:...),
// lookahead, possessive/atomic groups), and findAll() reproduces onig-rs's
// find_iter, including how it steps over empty matches.
//
//===----------------------------------------------------------------------===//
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace moert::tok {

class Regex {
public:
  /// Compiles `pattern`; throws TokenizerError naming `what` on bad syntax.
  Regex(const std::string &pattern, const std::string &what);
  /// A regex that matches `literal` exactly.
  static Regex literal(std::string_view literal, const std::string &what);
  Regex(Regex &&other) noexcept;
  Regex &operator=(Regex &&) = delete;
  Regex(const Regex &) = delete;
  ~Regex();

  /// Calls fn(start, end) for each match, left to right, non-overlapping.
  /// `s` must be valid UTF-8.
  template <typename Fn> void forEachMatch(std::string_view s, Fn &&fn) const {
    size_t pos = 0;
    bool hasLast = false;
    size_t lastEnd = 0;
    while (pos <= s.size()) {
      size_t start, end;
      if (!search(s, pos, start, end))
        return;
      if (start == end && hasLast && lastEnd == end) {
        // onig-rs: no empty match right after the previous match; step one
        // character and search again.
        pos += pos < s.size()
                   ? sequenceLengthAt(s, pos)
                   : 1;
        continue;
      }
      pos = end;
      hasLast = true;
      lastEnd = end;
      fn(start, end);
    }
  }

  /// Matches as (start, end, isMatch) pieces that cover all of s, as the HF
  /// Pattern::find_matches does.
  void findMatches(std::string_view s,
                   std::vector<std::pair<std::pair<size_t, size_t>, bool>>
                       &out) const;

private:
  Regex() = default;
  void compile(const std::string &pattern, unsigned extraOptions,
               const std::string &what);
  bool search(std::string_view s, size_t from, size_t &start,
              size_t &end) const;
  static size_t sequenceLengthAt(std::string_view s, size_t pos);

  void *code = nullptr; // pcre2_code_8
  bool jit = false;
};

} // namespace moert::tok
