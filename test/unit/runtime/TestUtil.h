//===- TestUtil.h - Helpers shared by the runtime tests ---------*- C++ -*-===//
#pragma once

#include "moert/Backend.h"
#include "moert/DType.h"
#include "moert/FileUtil.h"
#include "moert/Safetensors.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <random>
#include <string>
#include <vector>

namespace moetest {

/// A CPU backend for tests, usable where a Backend& is expected.
struct TestBackend {
  explicit TestBackend(int threads, bool pack = true)
      : be(moert::makeBackend("cpu", {.threads = threads, .packWeights = pack})) {}
  operator moert::Backend &() { return *be; }
  moert::Backend *operator->() { return be.get(); }
  std::unique_ptr<moert::Backend> be;
};

/// The fixtures: MOE_FIXTURES_DIR from the environment (the GPU run carries
/// its own copy), else the shared directory the build saw.
inline std::string fixturesDir() {
  const char *env = std::getenv("MOE_FIXTURES_DIR");
  return env && *env ? env : MOE_FIXTURES_DIR;
}
inline std::string fixture(const std::string &name) { return fixturesDir() + "/hf/" + name; }
inline bool haveFixtures() { return moert::isDirectory(fixturesDir() + "/hf"); }

/// A fixture's expected.safetensors: the prompt, the prompt followed by the
/// greedy tokens, and the prompt's logits [prompt, vocab].
struct FixtureExpected {
  std::vector<int64_t> input, generated;
  std::vector<float> logits;
};

inline FixtureExpected loadFixtureExpected(const std::string &dir) {
  moert::SafetensorsFile f(dir + "/expected.safetensors");
  auto ids = [&](const char *name) {
    const moert::TensorInfo *t = f.find(name);
    auto *p = reinterpret_cast<const int64_t *>(t->data);
    return std::vector<int64_t>(p, p + t->numel);
  };
  const moert::TensorInfo *l = f.find("logits");
  auto *p = reinterpret_cast<const float *>(l->data);
  return {ids("input_ids"), ids("generated_ids"), std::vector<float>(p, p + l->numel)};
}

/// A fresh directory under $TMPDIR, removed by the destructor.
class TempDir {
public:
  TempDir() {
    const char *t = std::getenv("TMPDIR");
    std::string tmpl = std::string(t && *t ? t : "/tmp") + "/moert-test-XXXXXX";
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() { std::system(("rm -rf '" + path_ + "'").c_str()); }
  const std::string &path() const { return path_; }
  std::string file(const std::string &name) const { return path_ + "/" + name; }

private:
  std::string path_;
};

inline void writeBytes(const std::string &path, const std::string &bytes) {
  std::ofstream(path, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
}

/// Uniform floats in [-1, 1) from a fixed seed.
inline std::vector<float> randomFloats(size_t n, uint32_t seed) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float &x : v)
    x = d(g);
  return v;
}

/// Stores f32 values as dtype (rounded) and returns the rounded values.
inline std::vector<float> roundTo(moert::DType t, std::vector<float> v, std::vector<uint8_t> &out) {
  out.resize(v.size() * moert::dtypeSize(t));
  for (size_t i = 0; i < v.size(); ++i) {
    moert::storeFromF32(out.data(), t, i, v[i]);
    v[i] = moert::loadAsF32(out.data(), t, i);
  }
  return v;
}

#define EXPECT_THROW_MSG(stmt, substr)                                                            \
  do {                                                                                            \
    try {                                                                                         \
      stmt;                                                                                       \
      ADD_FAILURE() << "expected an error containing: " << (substr);                             \
    } catch (const moert::Error &e) {                                                             \
      EXPECT_NE(std::string(e.what()).find(substr), std::string::npos)                            \
          << "message: " << e.what() << "\nexpected to contain: " << (substr);                   \
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << "not one line";          \
    }                                                                                             \
  } while (0)

} // namespace moetest
