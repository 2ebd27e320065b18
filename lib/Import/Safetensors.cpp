//===- Safetensors.cpp - safetensors header reader ------------------------===//

#include "moe/Import/Safetensors.h"
#include "moe/Compiler/InputLimits.h"
#include "moe/Support/Json.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/ADT/StringSwitch.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

#include <algorithm>

using namespace mlir::moe;
using llvm::StringRef;

// A header larger than this is not a checkpoint we should trust (real ones
// are a few MB at most).
static constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

static llvm::Error fail(StringRef file, const llvm::Twine &what) {
  return llvm::createStringError((file + ": " + what).str());
}

unsigned mlir::moe::getSafetensorsDTypeSize(StringRef dtype) {
  return llvm::StringSwitch<unsigned>(dtype)
      .Cases({"F64", "I64", "U64"}, 8)
      .Cases({"F32", "I32", "U32"}, 4)
      .Cases({"F16", "BF16", "I16", "U16"}, 2)
      .Cases({"I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2"}, 1)
      .Default(0);
}

bool mlir::moe::hasCheckpoint(StringRef dir) {
  llvm::SmallString<256> single(dir), index(dir);
  llvm::sys::path::append(single, "model.safetensors");
  llvm::sys::path::append(index, "model.safetensors.index.json");
  return llvm::sys::fs::exists(single) || llvm::sys::fs::exists(index);
}

llvm::Error mlir::moe::readSafetensorsHeader(StringRef path,
                                             TensorMap &tensors) {
  uint64_t fileSize;
  if (std::error_code ec = llvm::sys::fs::file_size(path, fileSize))
    return fail(path, "cannot read file: " + ec.message());
  if (fileSize < 8)
    return fail(path, llvm::formatv("file has {0} bytes (expected at least "
                                    "the 8-byte safetensors header length)",
                                    fileSize));
  auto lenBuf = llvm::MemoryBuffer::getFileSlice(path, 8, 0);
  if (!lenBuf)
    return fail(path, "cannot read file: " + lenBuf.getError().message());
  uint64_t headerLen = 0;
  for (int i = 7; i >= 0; --i)
    headerLen = (headerLen << 8) | uint8_t((*lenBuf)->getBufferStart()[i]);
  if (headerLen > fileSize - 8 || headerLen > kMaxHeaderBytes)
    return fail(path, llvm::formatv("header length {0} does not fit the {1}-byte "
                                    "file (expected a safetensors file)",
                                    headerLen, fileSize));
  auto headerBuf = llvm::MemoryBuffer::getFileSlice(path, headerLen, 8);
  if (!headerBuf)
    return fail(path, "cannot read file: " + headerBuf.getError().message());
  llvm::Expected<llvm::json::Value> header =
      parseJson((*headerBuf)->getBuffer());
  if (!header)
    return fail(path, "header is not valid JSON: " +
                          llvm::toString(header.takeError()) +
                          " (expected a safetensors header)");
  const llvm::json::Object *entries = header->getAsObject();
  if (!entries)
    return fail(path, "header is not a JSON object (expected tensor entries)");

  uint64_t dataSize = fileSize - 8 - headerLen;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  // Sort names so errors do not depend on hash order.
  std::vector<StringRef> names;
  for (const auto &kv : *entries)
    names.push_back(kv.first);
  llvm::sort(names);
  for (StringRef name : names) {
    const llvm::json::Value &value = *entries->get(name);
    if (name == "__metadata__") {
      if (!value.getAsObject())
        return fail(path, "__metadata__ is not an object (expected string -> "
                        "string entries)");
      continue;
    }
    auto where = [&](const llvm::Twine &what) {
      return fail(path, "tensor '" + name + "' " + what);
    };
    const llvm::json::Object *entry = value.getAsObject();
    if (!entry)
      return where("is not an object (expected dtype, shape, data_offsets)");
    std::optional<StringRef> dtype = entry->getString("dtype");
    if (!dtype)
      return where("has no dtype string (expected e.g. \"dtype\": \"F32\")");
    unsigned elemSize = getSafetensorsDTypeSize(*dtype);
    if (!elemSize)
      return where("has unknown dtype '" + *dtype +
                   "' (expected a safetensors dtype: F64, F32, F16, BF16, "
                   "I64, I32, I16, I8, U64, U32, U16, U8, BOOL, F8_E4M3, "
                   "F8_E5M2)");
    const llvm::json::Array *shape = entry->getArray("shape");
    if (!shape)
      return where("has no shape array (expected \"shape\": [dims])");
    TensorInfo info;
    info.dtype = dtype->str();
    info.file = path.str();
    uint64_t numBytes = elemSize;
    for (const llvm::json::Value &d : *shape) {
      std::optional<int64_t> dimSize = jsonInteger(d);
      if (!dimSize || *dimSize < 0)
        return where("has a shape entry that is not a non-negative integer "
                     "(expected sizes >= 0)");
      if (*dimSize != 0 &&
          numBytes > std::numeric_limits<uint64_t>::max() / uint64_t(*dimSize))
        return where("is too large (expected dtype size x shape below "
                     "2^64 bytes)");
      numBytes *= uint64_t(*dimSize);
      info.shape.push_back(*dimSize);
    }
    const llvm::json::Array *offsets = entry->getArray("data_offsets");
    std::optional<uint64_t> begin, end;
    if (offsets && offsets->size() == 2) {
      begin = (*offsets)[0].getAsUINT64();
      end = (*offsets)[1].getAsUINT64();
    }
    if (!begin || !end || *begin > *end)
      return where("has no valid data_offsets (expected [begin, end] with "
                   "begin <= end)");
    if (*end > dataSize)
      return where(llvm::formatv("ends at byte {0} of a {1}-byte data section "
                                 "(expected offsets within the file)",
                                 *end, dataSize));
    if (*end - *begin != numBytes)
      return where(llvm::formatv("has {0} data bytes (expected {1} for {2} "
                                 "with its shape)",
                                 *end - *begin, numBytes, *dtype));
    info.dataBegin = *begin;
    info.dataEnd = *end;
    if (numBytes)
      ranges.emplace_back(*begin, *end);
    if (!tensors.try_emplace(name, std::move(info)).second)
      return where("appears in two files of the checkpoint (expected each "
                   "tensor in one shard)");
  }
  llvm::sort(ranges);
  for (size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i].first < ranges[i - 1].second)
      return fail(path, llvm::formatv("tensor data ranges overlap at byte {0} "
                                      "(expected disjoint tensors)",
                                      ranges[i].first));
  return llvm::Error::success();
}

llvm::Expected<TensorMap> mlir::moe::readCheckpoint(StringRef dir,
                                                    std::string &describedBy) {
  TensorMap tensors;
  llvm::SmallString<256> single(dir), index(dir);
  llvm::sys::path::append(single, "model.safetensors");
  llvm::sys::path::append(index, "model.safetensors.index.json");
  if (!llvm::sys::fs::exists(index)) {
    describedBy = single.str().str();
    if (llvm::Error err = readSafetensorsHeader(single, tensors))
      return std::move(err);
    return std::move(tensors);
  }

  describedBy = index.str().str();
  auto buf = llvm::MemoryBuffer::getFile(index);
  if (!buf)
    return fail(index, "cannot read file: " + buf.getError().message());
  llvm::Expected<llvm::json::Value> json = parseJson((*buf)->getBuffer());
  if (!json)
    return fail(index, "invalid JSON: " + llvm::toString(json.takeError()) +
                           " (expected a safetensors index)");
  const llvm::json::Object *root = json->getAsObject();
  const llvm::json::Object *weightMap =
      root ? root->getObject("weight_map") : nullptr;
  if (!weightMap)
    return fail(index, "has no weight_map object (expected tensor name -> "
                       "shard file)");
  llvm::StringMap<std::string> shardOf;
  std::vector<std::string> shards;
  llvm::StringSet<> seenShards;
  for (const auto &kv : *weightMap) {
    std::optional<StringRef> file = kv.second.getAsString();
    if (!file)
      return fail(index, "weight_map entry '" + kv.first.str() +
                             "' is not a file name (expected a string)");
    // Shards live beside the index: no directories, no way out of `dir`.
    if (file->empty() || file->contains('/') || file->contains('\\') ||
        *file == "." || *file == "..")
      return fail(index, "weight_map names shard '" + *file +
                             "' (expected a file name in the checkpoint "
                             "directory)");
    shardOf[kv.first] = file->str();
    if (seenShards.insert(*file).second)
      shards.push_back(file->str());
  }
  llvm::sort(shards);
  for (const std::string &shard : shards) {
    llvm::SmallString<256> path(dir);
    llvm::sys::path::append(path, shard);
    if (!llvm::sys::fs::exists(path))
      return fail(index, "names shard '" + shard +
                             "', which does not exist (expected the shard "
                             "beside the index)");
    if (llvm::Error err = readSafetensorsHeader(path, tensors))
      return std::move(err);
  }
  std::vector<StringRef> names;
  for (const auto &kv : shardOf)
    names.push_back(kv.first());
  llvm::sort(names);
  for (StringRef name : names) {
    auto it = tensors.find(name);
    if (it == tensors.end() ||
        llvm::sys::path::filename(it->second.file) != shardOf[name])
      return fail(index, "says tensor '" + name + "' is in '" + shardOf[name] +
                             "', which does not hold it (expected the index "
                             "to match the shards)");
  }
  names.clear();
  for (const auto &kv : tensors)
    if (!shardOf.count(kv.first()))
      names.push_back(kv.first());
  if (!names.empty()) {
    StringRef name = *llvm::min_element(names);
    return fail(tensors[name].file, "tensor '" + name +
                                        "' is missing from the index's "
                                        "weight_map (expected the index to "
                                        "list every tensor)");
  }
  return std::move(tensors);
}
