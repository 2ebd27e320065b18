//===- Json.h - Integers from untrusted JSON --------------------*- C++ -*-===//
//
// llvm::json::Value::getAsInteger converts a double that rounds to 2^63 to
// int64_t, which is undefined behaviour: its range check compares against
// double(INT64_MAX), and that is 2^63 itself (the compiler-inputs fuzzer
// found it with an expert profile's "layer": 9223372036854775803.4). Every
// reader of checkpoint headers, configs, profiles and cluster files takes
// its integers through jsonInteger instead, which refuses such doubles and
// is getAsInteger otherwise.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "llvm/Support/JSON.h"

#include <cstdint>
#include <optional>

namespace mlir::moe {

inline std::optional<int64_t> jsonInteger(const llvm::json::Value &v) {
  // Numbers parsed as integers are exact (getAsUINT64 takes exactly the
  // non-negative ones); only doubles can round to 2^63.
  if (!v.getAsUINT64()) {
    std::optional<double> d = v.getAsNumber();
    if (!d || !(*d >= -0x1p63 && *d < 0x1p63))
      return std::nullopt;
  }
  return v.getAsInteger();
}

} // namespace mlir::moe
