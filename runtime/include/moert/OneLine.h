//===- OneLine.h - Keeping error messages on one line -----------*- C++ -*-===//
//
// Errors quote names and values taken from input files (tensor names, JSON
// keys, tokens); a newline or escape sequence in one must not split or
// garble the one-line "error: ..." contract.
//
//===----------------------------------------------------------------------===//
#pragma once

#include <string>
#include <string_view>

namespace moert {

/// `s` with control characters written as \n, \r, \t or \xNN.
inline std::string escapeControl(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u != 0x7f) {
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[u >> 4];
      out += kHex[u & 15];
    }
  }
  return out;
}

} // namespace moert
