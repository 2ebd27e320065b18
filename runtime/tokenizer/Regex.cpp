//===- Regex.cpp - PCRE2 wrapper ------------------------------------------===//

#define PCRE2_CODE_UNIT_WIDTH 8
#include "Regex.h"

#include "Unicode.h"

#include <moert/Tokenizer.h>
#include <pcre2.h>

namespace moert::tok {

namespace {
pcre2_code *asCode(void *p) { return static_cast<pcre2_code *>(p); }

/// One small match-data block per thread: only the overall match is read, so
/// one ovector pair serves every pattern (PCRE2 returns 0 when captures do not
/// fit, which still reports the match).
struct MatchData {
  pcre2_match_data *data = pcre2_match_data_create(1, nullptr);
  ~MatchData() { pcre2_match_data_free(data); }
};
thread_local MatchData tlsMatch;
} // namespace

Regex::Regex(const std::string &pattern, const std::string &what) {
  compile(pattern, 0, what);
}

Regex Regex::literal(std::string_view literal, const std::string &what) {
  Regex r;
  r.compile(std::string(literal), PCRE2_LITERAL, what);
  return r;
}

Regex::Regex(Regex &&other) noexcept : code(other.code), jit(other.jit) {
  other.code = nullptr;
}

Regex::~Regex() {
  if (code)
    pcre2_code_free(asCode(code));
}

void Regex::compile(const std::string &pattern, unsigned extraOptions,
                    const std::string &what) {
  int err = 0;
  PCRE2_SIZE errOffset = 0;
  pcre2_code *c = pcre2_compile(
      reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
      // PCRE2_LITERAL admits no UCP (which only affects classes anyway).
      PCRE2_UTF | ((extraOptions & PCRE2_LITERAL) ? 0 : PCRE2_UCP) |
          extraOptions,
      &err, &errOffset, nullptr);
  if (!c) {
    PCRE2_UCHAR buf[256];
    pcre2_get_error_message(err, buf, sizeof(buf));
    throw TokenizerError(what + ": invalid regex at offset " +
                         std::to_string(errOffset) + ": " +
                         reinterpret_cast<const char *>(buf) +
                         " (expected a PCRE/Oniguruma pattern)");
  }
  code = c;
  // JIT is an optimization only: fall back to the interpreter silently.
  jit = pcre2_jit_compile(c, PCRE2_JIT_COMPLETE) == 0;
}

bool Regex::search(std::string_view s, size_t from, size_t &start,
                   size_t &end) const {
  pcre2_match_data *md = tlsMatch.data;
  auto subject = reinterpret_cast<PCRE2_SPTR>(s.data());
  int rc = PCRE2_ERROR_JIT_STACKLIMIT;
  if (jit)
    rc = pcre2_jit_match(asCode(code), subject, s.size(), from, 0, md,
                         nullptr);
  // The interpreter keeps its backtracking state on the heap: it takes over
  // when the JIT's fixed stack is too small for a long match.
  if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
    rc = pcre2_match(asCode(code), subject, s.size(), from,
                     PCRE2_NO_UTF_CHECK, md, nullptr);
  if (rc == PCRE2_ERROR_NOMATCH)
    return false;
  if (rc < 0) {
    PCRE2_UCHAR buf[256];
    pcre2_get_error_message(rc, buf, sizeof(buf));
    throw TokenizerError(std::string("regex match failed: ") +
                         reinterpret_cast<const char *>(buf));
  }
  PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
  start = ov[0];
  end = ov[1];
  return true;
}

size_t Regex::sequenceLengthAt(std::string_view s, size_t pos) {
  return sequenceLength(static_cast<unsigned char>(s[pos]));
}

void Regex::findMatches(
    std::string_view s,
    std::vector<std::pair<std::pair<size_t, size_t>, bool>> &out) const {
  out.clear();
  if (s.empty()) {
    out.push_back({{0, 0}, false});
    return;
  }
  size_t prev = 0;
  forEachMatch(s, [&](size_t start, size_t end) {
    if (prev != start)
      out.push_back({{prev, start}, false});
    out.push_back({{start, end}, true});
    prev = end;
  });
  if (prev != s.size())
    out.push_back({{prev, s.size()}, false});
}

} // namespace moert::tok
