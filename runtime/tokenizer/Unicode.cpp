//===- Unicode.cpp - UTF-8 and character classes --------------------------===//

#include "Unicode.h"

#include <cstdlib>
#include <memory>
#include <moert/Tokenizer.h>
#include <utf8proc.h>

namespace moert::tok {

namespace {
bool inRange(unsigned char b, unsigned char lo, unsigned char hi) {
  return b >= lo && b <= hi;
}

/// Number of bytes of s[i..] that form a valid prefix of a UTF-8 sequence
/// (the "maximal subpart" of Unicode's U+FFFD substitution practice), and
/// whether that prefix is a complete character.
size_t maximalSubpart(std::string_view s, size_t i, bool &complete) {
  auto b0 = static_cast<unsigned char>(s[i]);
  complete = false;
  if (b0 < 0x80) {
    complete = true;
    return 1;
  }
  size_t need;
  unsigned char lo = 0x80, hi = 0xBF;
  if (inRange(b0, 0xC2, 0xDF)) {
    need = 1;
  } else if (inRange(b0, 0xE0, 0xEF)) {
    need = 2;
    if (b0 == 0xE0)
      lo = 0xA0;
    else if (b0 == 0xED)
      hi = 0x9F;
  } else if (inRange(b0, 0xF0, 0xF4)) {
    need = 3;
    if (b0 == 0xF0)
      lo = 0x90;
    else if (b0 == 0xF4)
      hi = 0x8F;
  } else {
    return 1;
  }
  size_t len = 1;
  for (size_t k = 0; k < need; ++k) {
    if (i + len >= s.size())
      return len;
    auto b = static_cast<unsigned char>(s[i + len]);
    if (!(k == 0 ? inRange(b, lo, hi) : inRange(b, 0x80, 0xBF)))
      return len;
    ++len;
  }
  complete = true;
  return len;
}
} // namespace

size_t validSequenceLength(std::string_view s, size_t i) {
  bool complete;
  size_t n = maximalSubpart(s, i, complete);
  return complete ? n : 0;
}

size_t findInvalidUtf8(std::string_view s) {
  size_t i = 0, n = s.size();
  while (i < n) {
    // Fast path over ASCII runs.
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    size_t len = validSequenceLength(s, i);
    if (len == 0)
      return i;
    i += len;
  }
  return std::string_view::npos;
}

std::string fromUtf8Lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t i = 0;
  while (i < bytes.size()) {
    bool complete;
    size_t len = maximalSubpart(bytes, i, complete);
    if (complete)
      out.append(bytes.substr(i, len));
    else
      out.append("\xEF\xBF\xBD");
    i += len;
  }
  return out;
}

void appendUtf8(std::string &out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

bool isWhitespace(char32_t c) {
  switch (c) {
  case 0x09: case 0x0A: case 0x0B: case 0x0C: case 0x0D: case 0x20:
  case 0x85: case 0xA0: case 0x1680: case 0x2028: case 0x2029:
  case 0x202F: case 0x205F: case 0x3000:
    return true;
  default:
    return c >= 0x2000 && c <= 0x200A;
  }
}

size_t skipWhitespace(std::string_view s, size_t from) {
  while (from < s.size()) {
    size_t i = from;
    if (!isWhitespace(nextCodePoint(s, i)))
      break;
    from = i;
  }
  return from;
}

size_t skipWhitespaceBackward(std::string_view s, size_t to) {
  while (to > 0) {
    size_t start = previousCodePointStart(s, to);
    size_t i = start;
    if (!isWhitespace(nextCodePoint(s, i)))
      break;
    to = start;
  }
  return to;
}

bool isWordChar(char32_t c) {
  if (c < 0x80)
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '_';
  if (c == 0x200C || c == 0x200D) // Join_Control
    return true;
  // Other_Alphabetic symbols (circled/squared letters) outside L and M.
  if ((c >= 0x24B6 && c <= 0x24E9) || (c >= 0x1F130 && c <= 0x1F149) ||
      (c >= 0x1F150 && c <= 0x1F169) || (c >= 0x1F170 && c <= 0x1F189))
    return true;
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(c))) {
  case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL:
  case UTF8PROC_CATEGORY_LT: case UTF8PROC_CATEGORY_LM:
  case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_MN:
  case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME:
  case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_NL:
  case UTF8PROC_CATEGORY_PC:
    return true;
  default:
    return false;
  }
}

bool isNumeric(char32_t c) {
  if (c < 0x80)
    return c >= '0' && c <= '9';
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(c))) {
  case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_NL:
  case UTF8PROC_CATEGORY_NO:
    return true;
  default:
    return false;
  }
}

bool isCombiningMark(char32_t c) {
  if (c < 0x300)
    return false;
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(c))) {
  case UTF8PROC_CATEGORY_MN: case UTF8PROC_CATEGORY_MC:
  case UTF8PROC_CATEGORY_ME:
    return true;
  default:
    return false;
  }
}

void appendLowercase(std::string &out, char32_t c) {
  if (c < 0x80) {
    out.push_back(static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c));
    return;
  }
  // The one unconditional multi-character lowercase mapping (SpecialCasing).
  if (c == 0x130) {
    out.append("i\xCC\x87");
    return;
  }
  appendUtf8(out, static_cast<char32_t>(
                      utf8proc_tolower(static_cast<utf8proc_int32_t>(c))));
}

std::string normalizeUnicode(std::string_view s, NormalForm form) {
  bool ascii = true;
  for (char ch : s)
    if (static_cast<unsigned char>(ch) >= 0x80) {
      ascii = false;
      break;
    }
  if (ascii) // ASCII is invariant under all four forms.
    return std::string(s);
  int options = UTF8PROC_STABLE;
  switch (form) {
  case NormalForm::NFC: options |= UTF8PROC_COMPOSE; break;
  case NormalForm::NFD: options |= UTF8PROC_DECOMPOSE; break;
  case NormalForm::NFKC: options |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT; break;
  case NormalForm::NFKD: options |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT; break;
  }
  utf8proc_uint8_t *dst = nullptr;
  utf8proc_ssize_t n =
      utf8proc_map(reinterpret_cast<const utf8proc_uint8_t *>(s.data()),
                   static_cast<utf8proc_ssize_t>(s.size()), &dst,
                   static_cast<utf8proc_option_t>(options));
  std::unique_ptr<utf8proc_uint8_t, decltype(&std::free)> holder(dst,
                                                                 &std::free);
  if (n < 0)
    throw TokenizerError(std::string("unicode normalization failed: ") +
                         utf8proc_errmsg(n));
  return std::string(reinterpret_cast<const char *>(dst),
                     static_cast<size_t>(n));
}

} // namespace moert::tok
