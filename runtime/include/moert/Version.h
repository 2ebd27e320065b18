//===- Version.h - Plan format version ---------------------------*- C++ -*-===//
//
// The plan format version this runtime reads and the compiler writes. Bump the
// major on any change that alters the meaning of existing fields; bump the
// minor when appending fields or ops whose defaults keep old plans valid.
//
//===----------------------------------------------------------------------===//
#pragma once
#include <cstdint>

namespace moert {
inline constexpr uint32_t kPlanVersionMajor = 3;
inline constexpr uint32_t kPlanVersionMinor = 5;
inline constexpr const char *kProjectVersion = "0.1.0";
} // namespace moert
