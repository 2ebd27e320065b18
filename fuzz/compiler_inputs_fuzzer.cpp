//===- compiler_inputs_fuzzer.cpp - The compiler's smaller readers --------===//
//
// Input byte 0 picks the reader, the rest is its input:
//   0: a safetensors file through the importer's header reader (every
//      accepted tensor's range lies in the file's data section);
//   1: an expert profile (moe-compile --expert-profile);
//   2: a size (--memory-budget) and an integer flag value;
//   3: JSON through the depth- and key-checked parser;
//   4: a cluster description (moe-compile --cluster) and its quantities.
// Error values are clean rejections; crashes and empty errors are findings.
//
//===----------------------------------------------------------------------===//
#include "FuzzUtil.h"

#include "moe/Analysis/Cluster.h"
#include "moe/Analysis/ExpertProfile.h"
#include "moe/Compiler/InputLimits.h"
#include "moe/Compiler/Options.h"
#include "moe/Import/Safetensors.h"

#include <cstdio>

namespace {
/// Errors must say something. (They may quote input bytes, newlines
/// included: the tools print them through oneLine().)
template <typename T> void expectMessage(llvm::Expected<T> value) {
  if (value)
    return;
  std::string message = llvm::toString(value.takeError());
  if (message.empty()) {
    std::fprintf(stderr, "empty error message\n");
    std::abort();
  }
}
} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0)
    return 0;
  int mode = data[0] % 5;
  llvm::StringRef text(reinterpret_cast<const char *>(data + 1), size - 1);
  switch (mode) {
  case 0: {
    moefuzz::MemFile f(data + 1, size - 1, "model.safetensors");
    mlir::moe::TensorMap tensors;
    llvm::Error err = mlir::moe::readSafetensorsHeader(f.path(), tensors);
    if (err) {
      expectMessage(llvm::Expected<int>(std::move(err)));
      break;
    }
    for (const auto &kv : tensors)
      if (kv.second.dataBegin > kv.second.dataEnd || kv.second.dataEnd > size)
        std::abort();
    break;
  }
  case 1:
    expectMessage(mlir::moe::parseExpertProfile(text, "profile.json"));
    break;
  case 2:
    expectMessage(mlir::moe::parseByteSize(text));
    expectMessage(mlir::moe::parseIntInRange(text, 1, 1 << 16));
    break;
  case 3:
    expectMessage(mlir::moe::parseJson(text));
    break;
  default: {
    llvm::Expected<mlir::moe::ClusterSpec> spec =
        mlir::moe::parseCluster(text, "cluster.json");
    if (spec && (spec->getNumDevices() < 1 || !(spec->device.memoryBytesPerSec > 0) ||
                 !(spec->device.flopsPerSec > 0)))
      std::abort(); // accepted, yet unusable by the cost model
    expectMessage(std::move(spec));
    expectMessage(mlir::moe::parseBandwidth(text));
    expectMessage(mlir::moe::parseFlopRate(text));
    expectMessage(mlir::moe::parseLatency(text));
    break;
  }
  }
  return 0;
}
