//===- OptionsTest.cpp - moe-compile option parsing -----------------------===//

#include "moe/Compiler/Options.h"

#include <gtest/gtest.h>

using namespace mlir::moe;

namespace {

uint64_t size(llvm::StringRef text) {
  llvm::Expected<uint64_t> v = parseByteSize(text);
  EXPECT_TRUE(bool(v)) << text.str();
  if (!v) {
    llvm::consumeError(v.takeError());
    return 0;
  }
  return *v;
}

std::string sizeError(llvm::StringRef text) {
  llvm::Expected<uint64_t> v = parseByteSize(text);
  EXPECT_FALSE(bool(v)) << text.str() << " parsed as " << (v ? *v : 0);
  return v ? "" : llvm::toString(v.takeError());
}

TEST(ParseByteSize, UnitsAndNumbers) {
  EXPECT_EQ(size("4096"), 4096u);
  EXPECT_EQ(size("4096B"), 4096u);
  EXPECT_EQ(size("24GiB"), 24ull << 30);
  EXPECT_EQ(size("24gib"), 24ull << 30);
  EXPECT_EQ(size("24 GiB"), 24ull << 30);
  EXPECT_EQ(size("512MiB"), 512ull << 20);
  EXPECT_EQ(size("3KiB"), 3072u);
  EXPECT_EQ(size("1TiB"), 1ull << 40);
  EXPECT_EQ(size("1.5GB"), 1500000000u);
  EXPECT_EQ(size("2K"), 2000u);
  EXPECT_EQ(size("0.5KiB"), 512u);
}

TEST(ParseByteSize, Rejects) {
  EXPECT_NE(sizeError("").find("no number"), std::string::npos);
  EXPECT_NE(sizeError("GiB").find("no number"), std::string::npos);
  EXPECT_NE(sizeError("-1GiB").find("no number"), std::string::npos);
  EXPECT_NE(sizeError("1.2.3GB").find("no number"), std::string::npos);
  EXPECT_NE(sizeError("24XB").find("unknown unit 'XB'"), std::string::npos);
  EXPECT_NE(sizeError("1e9").find("unknown unit 'e9'"), std::string::npos);
  EXPECT_NE(sizeError("0").find("it is zero"), std::string::npos);
  EXPECT_NE(sizeError("0.0001B").find("it is zero"), std::string::npos);
  EXPECT_NE(sizeError("20000000TiB").find("too large"), std::string::npos);
  // Every message says what is expected.
  EXPECT_NE(sizeError("x").find("(expected a positive number"), std::string::npos);
}

TEST(ParseIntInRange, Bounds) {
  auto get = [](llvm::StringRef t, int64_t lo, int64_t hi) -> int64_t {
    llvm::Expected<int64_t> v = parseIntInRange(t, lo, hi);
    if (!v) {
      llvm::consumeError(v.takeError());
      return -999;
    }
    return *v;
  };
  EXPECT_EQ(get("1", 1, 8), 1);
  EXPECT_EQ(get("8", 1, 8), 8);
  EXPECT_EQ(get("0", 1, 8), -999);
  EXPECT_EQ(get("9", 1, 8), -999);
  EXPECT_EQ(get("4x", 1, 8), -999);
  EXPECT_EQ(get("", 1, 8), -999);
  EXPECT_EQ(get("99999999999999999999", 1, 8), -999);
}

TEST(Enums, RoundTrip) {
  for (llvm::StringRef t : {"cpu", "cuda"})
    EXPECT_EQ(stringifyTarget(*parseTarget(t)), t);
  for (llvm::StringRef t : {"f32", "bf16", "f16"})
    EXPECT_EQ(stringifyComputeDType(*parseComputeDType(t)), t);
  for (llvm::StringRef t : {"balanced", "round-robin", "contiguous"})
    EXPECT_EQ(stringifyPlacement(*parsePlacement(t)), t);
  EXPECT_FALSE(parseTarget("CPU"));
  EXPECT_FALSE(parseEmitKind("llvm"));
  EXPECT_EQ(formatBytes(512), "512 B");
  EXPECT_EQ(formatBytes(3ull << 30), "3.00 GiB");
}

} // namespace
