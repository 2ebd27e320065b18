//===- Unicode.h - UTF-8 and character classes for the tokenizer -*- C++ -*-===//
//
// The character predicates mirror the Rust definitions the Hugging Face
// library uses (char::is_whitespace, regex \w, char::is_numeric), backed by
// utf8proc's Unicode tables.
//
//===----------------------------------------------------------------------===//
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace moert::tok {

/// Length of the valid UTF-8 sequence starting at s[i], or 0 if the bytes
/// there are not valid UTF-8 (overlongs, surrogates and > U+10FFFF rejected).
size_t validSequenceLength(std::string_view s, size_t i);

/// Byte offset of the first invalid UTF-8 sequence, or npos if valid.
size_t findInvalidUtf8(std::string_view s);

/// Rust's String::from_utf8_lossy: each maximal invalid subpart becomes one
/// U+FFFD.
std::string fromUtf8Lossy(std::string_view bytes);

/// Decodes the code point at s[i] (s must be valid UTF-8) and advances i.
inline char32_t nextCodePoint(std::string_view s, size_t &i) {
  auto b = static_cast<unsigned char>(s[i]);
  if (b < 0x80) {
    ++i;
    return b;
  }
  char32_t cp;
  size_t n;
  if (b < 0xE0) {
    cp = b & 0x1F;
    n = 1;
  } else if (b < 0xF0) {
    cp = b & 0x0F;
    n = 2;
  } else {
    cp = b & 0x07;
    n = 3;
  }
  ++i;
  for (size_t k = 0; k < n; ++k, ++i)
    cp = (cp << 6) | (static_cast<unsigned char>(s[i]) & 0x3F);
  return cp;
}

/// Length in bytes of the UTF-8 sequence a (valid) lead byte starts.
inline size_t sequenceLength(unsigned char lead) {
  return lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
}

void appendUtf8(std::string &out, char32_t cp);

/// Start of the code point that ends at byte `end` (> 0) of valid UTF-8.
inline size_t previousCodePointStart(std::string_view s, size_t end) {
  size_t start = end - 1;
  while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80)
    --start;
  return start;
}

/// Unicode White_Space (Rust char::is_whitespace, regex \s).
bool isWhitespace(char32_t c);
/// End of the whitespace run that starts at `from` (regex ^\s* there).
size_t skipWhitespace(std::string_view s, size_t from);
/// Start of the whitespace run that ends at `to` (regex \s*$ before it).
size_t skipWhitespaceBackward(std::string_view s, size_t to);
/// Rust regex \w: Alphabetic, marks, Nd, Pc, Join_Control.
bool isWordChar(char32_t c);
/// Rust char::is_numeric: Nd, Nl, No.
bool isNumeric(char32_t c);
/// Mn, Mc, Me (StripAccents).
bool isCombiningMark(char32_t c);

/// Rust char::to_lowercase, appended as UTF-8.
void appendLowercase(std::string &out, char32_t c);

enum class NormalForm { NFC, NFD, NFKC, NFKD };
/// Unicode normalization of valid UTF-8 (utf8proc).
std::string normalizeUnicode(std::string_view s, NormalForm form);

} // namespace moert::tok
