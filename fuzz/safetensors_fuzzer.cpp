//===- safetensors_fuzzer.cpp - The runtime's safetensors reader ----------===//
//
// Input byte 0 picks what the rest is:
//   even: a .safetensors file, read as a one-file checkpoint; every tensor
//         the reader accepts must lie inside the mapping (each byte is read);
//   odd:  a model.safetensors.index.json beside two valid shards.
// Any moert::Error is a clean rejection; anything else is a finding.
//
//===----------------------------------------------------------------------===//
#include "FuzzUtil.h"

#include "moert/Error.h"
#include "moert/Safetensors.h"

#include <cstdio>
#include <fstream>
#include <stdlib.h>

namespace {

std::string shardDir;

void writeFile(const std::string &path, const std::string &bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

/// A valid safetensors file of F32 tensors of 2 elements each.
std::string shard(const std::vector<std::string> &names) {
  std::string hdr = "{";
  std::string data;
  for (size_t i = 0; i < names.size(); ++i) {
    hdr += (i ? ",\"" : "\"") + names[i] + "\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[" +
           std::to_string(8 * i) + "," + std::to_string(8 * i + 8) + "]}";
    data += std::string(8, '\x01');
  }
  hdr += "}";
  std::string len(8, '\0');
  for (int b = 0; b < 8; ++b)
    len[size_t(b)] = char((hdr.size() >> (8 * b)) & 0xff);
  return len + hdr + data;
}

void checkTensors(const moert::Checkpoint &ckpt, const std::vector<std::string> &names) {
  for (const std::string &n : names)
    if (const moert::TensorInfo *t = ckpt.find(n))
      moefuzz::touch(t->data, t->bytes);
}

} // namespace

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
  char tmpl[] = "/tmp/moe-fuzz-shards-XXXXXX";
  if (!::mkdtemp(tmpl))
    std::abort();
  shardDir = tmpl;
  writeFile(shardDir + "/a.safetensors", shard({"x", "y"}));
  writeFile(shardDir + "/b.safetensors", shard({"z"}));
  std::atexit([] {
    for (const char *f : {"a.safetensors", "b.safetensors", "model.safetensors.index.json"})
      std::remove((shardDir + "/" + f).c_str());
    ::rmdir(shardDir.c_str());
  });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0)
    return 0;
  bool index = data[0] & 1;
  ++data;
  --size;
  try {
    if (!index) {
      moefuzz::MemFile f(data, size, "model.safetensors");
      moert::Checkpoint ckpt(f.path());
      moert::SafetensorsFile file(f.path());
      for (const auto &[name, t] : file.tensors()) {
        moefuzz::touch(t.data, t.bytes);
        if (ckpt.find(name) == nullptr)
          std::abort(); // the checkpoint must index every tensor of its file
      }
    } else {
      writeFile(shardDir + "/model.safetensors.index.json",
                std::string(reinterpret_cast<const char *>(data), size));
      moert::Checkpoint ckpt(shardDir);
      checkTensors(ckpt, {"x", "y", "z"});
    }
  } catch (const moert::Error &) {
  }
  return 0;
}
