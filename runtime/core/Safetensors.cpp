//===- Safetensors.cpp ----------------------------------------------------===//
#include "moert/Safetensors.h"
#include "moert/Error.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <set>

namespace moert {

using json = nlohmann::json;

// The safetensors format caps the header at 100 MB.
static constexpr uint64_t kMaxHeader = 100'000'000;

static bool elemSize(const std::string &dt, size_t &size, std::optional<DType> &dtype) {
  static const std::map<std::string, size_t> sizes = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E4M3", 1}, {"F8_E5M2", 1}, {"I16", 2},
      {"U16", 2},  {"F16", 2}, {"BF16", 2}, {"I32", 4},    {"U32", 4},     {"F32", 4},
      {"F64", 8},  {"I64", 8}, {"U64", 8}};
  auto it = sizes.find(dt);
  if (it == sizes.end())
    return false;
  size = it->second;
  dtype.reset();
  if (dt == "F32")
    dtype = DType::F32;
  else if (dt == "BF16")
    dtype = DType::BF16;
  else if (dt == "F16")
    dtype = DType::F16;
  else if (dt == "I32")
    dtype = DType::I32;
  else if (dt == "I64")
    dtype = DType::I64;
  return true;
}

/// Parses a JSON object, recording whether any object repeats a key
/// (nlohmann silently keeps the last one).
static json parseUniqueKeys(const char *begin, const char *end, bool &duplicate) {
  std::vector<std::set<std::string>> keys;
  duplicate = false;
  json::parser_callback_t cb = [&](int, json::parse_event_t ev, json &v) {
    if (ev == json::parse_event_t::object_start)
      keys.emplace_back();
    else if (ev == json::parse_event_t::object_end && !keys.empty())
      keys.pop_back();
    else if (ev == json::parse_event_t::key && !keys.empty() &&
             !keys.back().insert(v.get<std::string>()).second)
      duplicate = true;
    return true;
  };
  return json::parse(begin, end, cb);
}

SafetensorsFile::SafetensorsFile(const std::string &path) : map_(path) {
  const std::string &p = map_.path();
  if (map_.size() < 8)
    fail("{}: file of {} bytes is too short (expected an 8-byte header length)", p, map_.size());
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i)
    n = n << 8 | map_.data()[i];
  if (n > kMaxHeader || n > map_.size() - 8)
    fail("{}: header length {} exceeds the file of {} bytes (expected a valid safetensors file)",
         p, n, map_.size());
  const char *hb = reinterpret_cast<const char *>(map_.data() + 8);
  json hdr;
  bool dup = false;
  try {
    hdr = parseUniqueKeys(hb, hb + n, dup);
  } catch (const json::exception &e) {
    fail("{}: header is not valid JSON (expected a safetensors header): {}", p,
         std::string(e.what()).substr(0, 120));
  }
  if (!hdr.is_object())
    fail("{}: header is not a JSON object (expected name -> tensor entries)", p);
  if (dup)
    fail("{}: header repeats a tensor name (expected unique names)", p);
  const uint8_t *base = map_.data() + 8 + n;
  uint64_t dataSize = map_.size() - 8 - n;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (auto &[name, v] : hdr.items()) {
    if (name == "__metadata__") {
      if (!v.is_object())
        fail("{}: __metadata__ is not an object (expected string -> string)", p);
      continue;
    }
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") ||
        !v.contains("data_offsets") || !v["dtype"].is_string() || !v["shape"].is_array() ||
        !v["data_offsets"].is_array() || v["data_offsets"].size() != 2)
      fail("{}: tensor '{}' entry is malformed (expected dtype, shape, data_offsets[2])", p, name);
    TensorInfo t;
    t.name = name;
    t.file = p;
    t.dtypeName = v["dtype"].get<std::string>();
    size_t es;
    if (!elemSize(t.dtypeName, es, t.dtype))
      fail("{}: tensor '{}' has unknown dtype '{}' (expected a safetensors dtype)", p, name,
           t.dtypeName);
    uint64_t numel = 1;
    for (auto &d : v["shape"]) {
      if (!d.is_number_unsigned() || d.get<uint64_t>() > uint64_t(INT64_MAX) ||
          mulOverflows(numel, d.get<uint64_t>(), numel))
        fail("{}: tensor '{}' has a bad shape (expected non-negative integers)", p, name);
      t.shape.push_back(int64_t(d.get<uint64_t>()));
    }
    for (auto &d : v["data_offsets"])
      if (!d.is_number_unsigned())
        fail("{}: tensor '{}' has bad data_offsets (expected non-negative integers)", p, name);
    uint64_t b = v["data_offsets"][0].get<uint64_t>(), e = v["data_offsets"][1].get<uint64_t>();
    uint64_t bytes;
    if (b > e || e > dataSize)
      fail("{}: tensor '{}' data_offsets [{}, {}] exceed the {} data bytes (expected offsets "
           "inside the file)",
           p, name, b, e, dataSize);
    if (mulOverflows(numel, es, bytes) || bytes != e - b)
      fail("{}: tensor '{}' has {} bytes for shape {} of {} (expected {})", p, name, e - b,
           v["shape"].dump(), t.dtypeName, mulOverflows(numel, es, bytes) ? 0 : bytes);
    t.numel = numel;
    t.bytes = bytes;
    t.data = base + b;
    if (bytes > 0)
      ranges.emplace_back(b, e);
    tensors_.emplace(name, std::move(t));
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i].first < ranges[i - 1].second)
      fail("{}: tensors overlap at data offset {} (expected disjoint data_offsets)", p,
           ranges[i].first);
}

const TensorInfo *SafetensorsFile::find(const std::string &name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

Checkpoint::Checkpoint(const std::string &dirOrFile) {
  if (isRegularFile(dirOrFile)) {
    source_ = dirOrFile;
    files_.push_back(std::make_unique<SafetensorsFile>(dirOrFile));
  } else if (isDirectory(dirOrFile)) {
    std::string dir = dirOrFile;
    if (dir.back() != '/')
      dir += '/';
    std::string index = dir + "model.safetensors.index.json";
    std::string single = dir + "model.safetensors";
    if (isRegularFile(index)) {
      source_ = index;
      MappedFile f(index);
      json j;
      bool dup = false;
      try {
        const char *b = reinterpret_cast<const char *>(f.data());
        j = parseUniqueKeys(b, b + f.size(), dup);
      } catch (const json::exception &e) {
        fail("{}: not valid JSON (expected a safetensors index)", index);
      }
      if (dup)
        fail("{}: repeats a key (expected unique tensor names)", index);
      if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
        fail("{}: no weight_map object (expected a Hugging Face safetensors index)", index);
      std::map<std::string, SafetensorsFile *> shards;
      for (auto &[name, v] : j["weight_map"].items()) {
        if (!v.is_string())
          fail("{}: weight_map['{}'] is not a file name (expected a string)", index, name);
        std::string shard = v.get<std::string>();
        if (shard.empty() || shard.find('/') != std::string::npos || shard == "." ||
            shard == "..")
          fail("{}: weight_map['{}'] = '{}' (expected a file name in the checkpoint directory)",
               index, name, shard);
        auto it = shards.find(shard);
        if (it == shards.end()) {
          if (!isRegularFile(dir + shard))
            fail("{}: shard '{}' of tensor '{}' is missing (expected {}{})", index, shard, name,
                 dir, shard);
          files_.push_back(std::make_unique<SafetensorsFile>(dir + shard));
          it = shards.emplace(shard, files_.back().get()).first;
        }
        const TensorInfo *t = it->second->find(name);
        if (!t)
          fail("{}: tensor '{}' is not in its shard '{}' (expected the index to match the shards)",
               index, name, shard);
        index_[name] = t;
      }
      return;
    } else if (isRegularFile(single)) {
      source_ = single;
      files_.push_back(std::make_unique<SafetensorsFile>(single));
    } else {
      fail("{}: no model.safetensors or model.safetensors.index.json (expected a Hugging Face "
           "checkpoint directory)",
           dirOrFile);
    }
  } else {
    fail("{}: no such checkpoint file or directory", dirOrFile);
  }
  for (auto &[name, t] : files_.front()->tensors())
    index_[name] = &t;
}

const TensorInfo *Checkpoint::find(const std::string &name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : it->second;
}

void writeSafetensors(const std::string &path, const std::vector<TensorOut> &tensors) {
  json hdr = json::object();
  uint64_t off = 0;
  for (const TensorOut &t : tensors) {
    hdr[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {off, off + t.bytes}}};
    off += t.bytes;
  }
  std::string h = hdr.dump();
  while ((h.size() + 8) % 8 != 0)
    h += ' ';
  uint8_t len[8];
  for (int i = 0; i < 8; ++i)
    len[i] = uint8_t(uint64_t(h.size()) >> (8 * i));
  AtomicFile f(path);
  f.write(len, 8);
  f.write(h);
  for (const TensorOut &t : tensors)
    f.write(t.data, t.bytes);
  f.commit();
}

} // namespace moert
