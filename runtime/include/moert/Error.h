//===- Error.h - The runtime's one-line error ------------------*- C++ -*-===//
//
// Every failure the user can cause (bad plan, bad checkpoint, bad flag) is a
// moert::Error whose message is one line, "<file>: <what> (expected ...)";
// tools print it as "error: <message>" and exit 1.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "moert/OneLine.h"

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace moert {

class Error : public std::runtime_error {
public:
  explicit Error(const std::string &msg) : std::runtime_error(escapeControl(msg)) {}
};

/// Throws an Error formatted with fmt.
template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args &&...args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

/// Overflow-checked size arithmetic for everything sized from input files.
inline bool mulOverflows(uint64_t a, uint64_t b, uint64_t &out) {
  return __builtin_mul_overflow(a, b, &out);
}
inline bool addOverflows(uint64_t a, uint64_t b, uint64_t &out) {
  return __builtin_add_overflow(a, b, &out);
}

} // namespace moert
