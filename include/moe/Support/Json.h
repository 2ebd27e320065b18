//===- Json.h - Integers from untrusted JSON --------------------*- C++ -*-===//
//
// llvm::json::Value::getAsInteger converts a double that rounds to 2^63 to
// int64_t, which is undefined behaviour: its range check compares against
// double(INT64_MAX), and that is 2^63 itself (the compiler-inputs fuzzer
// found it with an expert profile's "layer": 9223372036854775803.4). Every
// reader of checkpoint headers, configs, profiles and cluster files takes
// its integers through jsonInteger instead; no field of ours means anything
// at 2^62 or beyond, so those are "not an integer" too.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "llvm/Support/JSON.h"

#include <cmath>
#include <cstdint>
#include <optional>

namespace mlir::moe {

inline std::optional<int64_t> jsonInteger(const llvm::json::Value &v) {
  if (std::optional<double> d = v.getAsNumber(); !d || !(std::abs(*d) < 0x1p62))
    return std::nullopt;
  return v.getAsInteger();
}

} // namespace mlir::moe
