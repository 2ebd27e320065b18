//===- Safetensors.h - mmap'd safetensors files and checkpoints -*- C++ -*-===//
//
// The header is validated before any tensor is touched: JSON object of
// unique names, known dtypes, non-negative shapes, data offsets inside the
// file, no overlapping tensors, and byte size == dtype size x shape product
// (overflow-checked). Tensor data is never copied by the reader.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "moert/DType.h"
#include "moert/FileUtil.h"

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace moert {

struct TensorInfo {
  std::string name;
  std::string dtypeName;       // as in the file: "F32", "BF16", ...
  std::optional<DType> dtype;  // set for the dtypes the runtime computes with
  std::vector<int64_t> shape;
  uint64_t numel = 0;
  const uint8_t *data = nullptr;
  uint64_t bytes = 0;
  std::string file;            // the file holding it, for messages
};

class SafetensorsFile {
public:
  explicit SafetensorsFile(const std::string &path);
  const std::string &path() const { return map_.path(); }
  const std::map<std::string, TensorInfo> &tensors() const { return tensors_; }
  const TensorInfo *find(const std::string &name) const;

private:
  MappedFile map_;
  std::map<std::string, TensorInfo> tensors_;
};

/// A checkpoint: one .safetensors file, or a directory with
/// model.safetensors or model.safetensors.index.json + shards.
class Checkpoint {
public:
  explicit Checkpoint(const std::string &dirOrFile);
  const TensorInfo *find(const std::string &name) const;
  /// The file a missing tensor would be expected in, for messages.
  const std::string &source() const { return source_; }
  size_t numTensors() const { return index_.size(); }

private:
  std::string source_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorInfo *> index_;
};

/// One tensor to write.
struct TensorOut {
  std::string name;
  std::string dtype; // "F32", "I64", ...
  std::vector<int64_t> shape;
  const void *data;
  size_t bytes;
};

/// Writes a safetensors file atomically (temp file + rename).
void writeSafetensors(const std::string &path, const std::vector<TensorOut> &tensors);

} // namespace moert
