//===- Safetensors.h - safetensors headers ----------------------*- C++ -*-===//
//
// Reads the JSON headers of safetensors checkpoints (single file or sharded
// with model.safetensors.index.json) and checks them, without reading weight
// data: the importer only needs names, shapes and dtypes.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_IMPORT_SAFETENSORS_H
#define MOE_IMPORT_SAFETENSORS_H

#include "llvm/ADT/SmallVector.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <string>

namespace mlir::moe {

struct TensorInfo {
  std::string dtype; // safetensors dtype name: F32, BF16, F16, I64, ...
  llvm::SmallVector<int64_t> shape;
  std::string file; // the .safetensors file that holds it
  uint64_t dataBegin = 0, dataEnd = 0; // byte range within the data section
};

using TensorMap = llvm::StringMap<TensorInfo>;

/// Bytes per element of a safetensors dtype, or 0 if the dtype is unknown.
unsigned getSafetensorsDTypeSize(llvm::StringRef dtype);

/// Reads the header of one .safetensors file into `tensors` and checks it:
/// header length within the file, valid JSON, every entry with a known dtype,
/// a shape, and data_offsets inside the data section whose length matches
/// dtype x shape, no two tensors overlapping, no name already in `tensors`.
/// Errors read "FILE: what (expected ...)".
llvm::Error readSafetensorsHeader(llvm::StringRef path, TensorMap &tensors);

/// Reads a checkpoint directory: model.safetensors, or
/// model.safetensors.index.json and every shard its weight_map names (each
/// tensor must be in the shard the index says). `describedBy` is set to the
/// file errors about missing tensors should name.
llvm::Expected<TensorMap> readCheckpoint(llvm::StringRef dir,
                                         std::string &describedBy);

/// True if `dir` holds model.safetensors or model.safetensors.index.json.
bool hasCheckpoint(llvm::StringRef dir);

} // namespace mlir::moe

#endif // MOE_IMPORT_SAFETENSORS_H
