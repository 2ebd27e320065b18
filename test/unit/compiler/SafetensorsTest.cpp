//===- SafetensorsTest.cpp - safetensors header reader --------------------===//
//
// Writes small safetensors files (valid ones and ones whose header lies) and
// checks what readSafetensorsHeader makes of them.
//
//===----------------------------------------------------------------------===//

#include "moe/Import/Safetensors.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/raw_ostream.h"

#include <gtest/gtest.h>

using namespace mlir::moe;

namespace {

class SafetensorsTest : public ::testing::Test {
protected:
  void TearDown() override {
    for (const std::string &p : files)
      llvm::sys::fs::remove(p);
  }

  /// Writes [u64 length][header][data bytes]; `length` overrides the length.
  std::string write(const std::string &header, size_t dataBytes,
                    std::optional<uint64_t> length = std::nullopt) {
    llvm::SmallString<128> path;
    int fd;
    EXPECT_FALSE(
        llvm::sys::fs::createTemporaryFile("moe-st", "safetensors", fd, path));
    llvm::raw_fd_ostream os(fd, /*shouldClose=*/true);
    uint64_t n = length.value_or(header.size());
    for (int i = 0; i < 8; ++i)
      os << char((n >> (8 * i)) & 0xff);
    os << header << std::string(dataBytes, '\0');
    files.push_back(path.str().str());
    return files.back();
  }

  /// The error message, or "" on success.
  std::string read(const std::string &path, TensorMap &tensors) {
    llvm::Error err = readSafetensorsHeader(path, tensors);
    return err ? llvm::toString(std::move(err)) : "";
  }
  std::string read(const std::string &path) {
    TensorMap tensors;
    return read(path, tensors);
  }

  std::vector<std::string> files;
};

TEST_F(SafetensorsTest, ReadsNamesShapesDtypes) {
  std::string path = write(
      R"({"__metadata__": {"format": "pt"},)"
      R"( "a": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 12]},)"
      R"( "b": {"dtype": "F32", "shape": [4], "data_offsets": [12, 28]},)"
      R"( "s": {"dtype": "I64", "shape": [], "data_offsets": [28, 36]}})",
      36);
  TensorMap tensors;
  ASSERT_EQ(read(path, tensors), "");
  ASSERT_EQ(tensors.size(), 3u);
  EXPECT_EQ(tensors["a"].dtype, "BF16");
  EXPECT_EQ(tensors["a"].shape, (llvm::SmallVector<int64_t>{2, 3}));
  EXPECT_EQ(tensors["b"].dataBegin, 12u);
  EXPECT_EQ(tensors["b"].file, path);
  EXPECT_TRUE(tensors["s"].shape.empty());
}

TEST_F(SafetensorsTest, RejectsLyingHeaders) {
  auto contains = [](const std::string &s, const char *what) {
    return s.find(what) != std::string::npos;
  };
  // Too short for the length prefix.
  {
    llvm::SmallString<128> path;
    int fd;
    ASSERT_FALSE(
        llvm::sys::fs::createTemporaryFile("moe-st", "safetensors", fd, path));
    { llvm::raw_fd_ostream os(fd, true); os << "abc"; }
    files.push_back(path.str().str());
    EXPECT_TRUE(contains(read(files.back()), "file has 3 bytes"));
  }
  EXPECT_TRUE(contains(read(write("{}", 0, 1ull << 40)),
                       "does not fit the 10-byte file"));
  EXPECT_TRUE(contains(read(write("{not json", 0)), "header is not valid JSON"));
  EXPECT_TRUE(contains(read(write("[1, 2]", 0)), "header is not a JSON object"));
  EXPECT_TRUE(contains(
      read(write(R"({"a": {"dtype": "Q4", "shape": [1], "data_offsets": [0, 1]}})", 1)),
      "tensor 'a' has unknown dtype 'Q4'"));
  EXPECT_TRUE(contains(
      read(write(R"({"a": {"dtype": "F32", "data_offsets": [0, 4]}})", 4)),
      "tensor 'a' has no shape array"));
  EXPECT_TRUE(contains(
      read(write(R"({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})", 4)),
      "shape entry that is not a non-negative integer"));
  EXPECT_TRUE(contains(
      read(write(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}})", 4)),
      "has no valid data_offsets"));
  EXPECT_TRUE(contains(
      read(write(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})", 4)),
      "ends at byte 8 of a 4-byte data section"));
  EXPECT_TRUE(contains(
      read(write(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}})", 4)),
      "has 4 data bytes (expected 8 for F32 with its shape)"));
  EXPECT_TRUE(contains(
      read(write(R"({"a": {"dtype": "F32", "shape": [4611686018427387904, 8], )"
                 R"("data_offsets": [0, 4]}})",
                 4)),
      "is too large"));
  EXPECT_TRUE(contains(
      read(write(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},)"
                 R"( "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
                 12)),
      "tensor data ranges overlap at byte 4"));
}

TEST_F(SafetensorsTest, RejectsDuplicatesAcrossFiles) {
  std::string header =
      R"({"a": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]}})";
  TensorMap tensors;
  ASSERT_EQ(read(write(header, 4), tensors), "");
  EXPECT_NE(read(write(header, 4), tensors).find("appears in two files"),
            std::string::npos);
}

} // namespace
