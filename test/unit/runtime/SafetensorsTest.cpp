//===- SafetensorsTest.cpp - Reader on good files and lying headers -------===//
#include "TestUtil.h"

#include "moert/Error.h"
#include "moert/Safetensors.h"

#include <cstring>
#include <dirent.h>

using namespace moert;
using namespace moetest;

namespace {

/// A safetensors file from a literal header and `dataBytes` bytes of data.
std::string rawFile(const std::string &header, size_t dataBytes, uint64_t lenOverride = 0) {
  uint64_t n = lenOverride ? lenOverride : header.size();
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i)
    s[size_t(i)] = char(uint8_t(n >> (8 * i)));
  s += header;
  for (size_t i = 0; i < dataBytes; ++i)
    s += char(i);
  return s;
}

void expectBad(const std::string &bytes, const std::string &msg) {
  TempDir d;
  writeBytes(d.file("m.safetensors"), bytes);
  EXPECT_THROW_MSG(SafetensorsFile f(d.file("m.safetensors")), msg);
}

} // namespace

TEST(Safetensors, WriteAndReadBack) {
  TempDir d;
  std::vector<float> a{1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f};
  std::vector<int64_t> b{7, -8};
  writeSafetensors(d.file("x.safetensors"), {{"a", "F32", {2, 3}, a.data(), a.size() * 4},
                                             {"b", "I64", {2}, b.data(), b.size() * 8}});
  SafetensorsFile f(d.file("x.safetensors"));
  ASSERT_EQ(f.tensors().size(), 2u);
  const TensorInfo *ta = f.find("a");
  ASSERT_TRUE(ta);
  EXPECT_EQ(ta->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(*ta->dtype, DType::F32);
  EXPECT_EQ(std::memcmp(ta->data, a.data(), 24), 0);
  const TensorInfo *tb = f.find("b");
  ASSERT_TRUE(tb);
  EXPECT_EQ(*tb->dtype, DType::I64);
  EXPECT_EQ(std::memcmp(tb->data, b.data(), 16), 0);
  // The atomic writer leaves no temporary file behind.
  int entries = 0;
  DIR *dir = opendir(d.path().c_str());
  while (dirent *e = readdir(dir))
    entries += e->d_name[0] != '.';
  closedir(dir);
  EXPECT_EQ(entries, 1);
}

TEST(Safetensors, AcceptsMetadataAndEmptyTensors) {
  TempDir d;
  writeBytes(d.file("m.safetensors"),
             rawFile(R"({"__metadata__":{"format":"pt"},"e":{"dtype":"F32","shape":[0,4],)"
                     R"("data_offsets":[0,0]},"w":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}})",
                     4));
  SafetensorsFile f(d.file("m.safetensors"));
  EXPECT_EQ(f.tensors().size(), 2u);
  EXPECT_EQ(f.find("e")->numel, 0u);
}

TEST(Safetensors, RejectsLyingHeaders) {
  expectBad("abc", "too short");
  expectBad(rawFile("{}", 0, 1000), "header length 1000 exceeds");
  expectBad(rawFile("{not json", 0), "not valid JSON");
  expectBad(rawFile("[1,2]", 0), "not a JSON object");
  expectBad(rawFile(R"({"w":{"dtype":"F32","shape":[2]}})", 8), "malformed");
  expectBad(rawFile(R"({"w":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", 8),
            "unknown dtype 'Q4'");
  expectBad(rawFile(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}})", 8),
            "exceed the 8 data bytes");
  expectBad(rawFile(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,4]}})", 8), "exceed");
  expectBad(rawFile(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 12),
            "has 8 bytes for shape [3] of F32 (expected 12)");
  expectBad(rawFile(R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8),
            "bad shape");
  expectBad(rawFile(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})",
                    8),
            "bad shape");
  expectBad(rawFile(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                    R"("v":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                    12),
            "tensors overlap at data offset 4");
  expectBad(rawFile(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                    R"("w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                    8),
            "repeats a tensor name");
  expectBad(rawFile(R"({"__metadata__":[1]})", 0), "__metadata__");
  TempDir d;
  EXPECT_THROW_MSG(SafetensorsFile f(d.file("missing.safetensors")), "cannot open");
}

TEST(Checkpoint, ShardedIndex) {
  if (!haveFixtures())
    GTEST_SKIP() << "no fixtures";
  Checkpoint c(fixture("qwen2moe-tiny"));
  EXPECT_GT(c.numTensors(), 30u);
  const TensorInfo *t = c.find("lm_head.weight");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->shape, (std::vector<int64_t>{256, 64}));
  EXPECT_NE(t->file.find("model-0000"), std::string::npos);
}

TEST(Checkpoint, BadIndexes) {
  TempDir d;
  std::vector<float> a{1.0f};
  writeSafetensors(d.file("s1.safetensors"), {{"a", "F32", {1}, a.data(), 4}});
  auto index = [&](const std::string &body) {
    writeBytes(d.file("model.safetensors.index.json"), body);
  };
  index(R"({"weight_map":{"a":"s2.safetensors"}})");
  EXPECT_THROW_MSG(Checkpoint c(d.path()), "shard 's2.safetensors' of tensor 'a' is missing");
  index(R"({"weight_map":{"a":"../s1.safetensors"}})");
  EXPECT_THROW_MSG(Checkpoint c(d.path()), "expected a file name in the checkpoint directory");
  index(R"({"weight_map":{"b":"s1.safetensors"}})");
  EXPECT_THROW_MSG(Checkpoint c(d.path()), "tensor 'b' is not in its shard");
  index(R"({"weights":{}})");
  EXPECT_THROW_MSG(Checkpoint c(d.path()), "no weight_map");
  index(R"({"weight_map":{"a":"s1.safetensors"}})");
  Checkpoint ok(d.path());
  EXPECT_TRUE(ok.find("a"));
  TempDir empty;
  EXPECT_THROW_MSG(Checkpoint c(empty.path()), "no model.safetensors");
}
