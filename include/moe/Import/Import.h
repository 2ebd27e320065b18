//===- Import.h - models into the moe dialect -------------------*- C++ -*-===//
//
// Builds a verified moe.model from
//   - a model description (.json with the DESIGN.md "Model description" keys),
//   - a Hugging Face checkpoint directory (config.json + safetensors), or
//   - a bare Hugging Face config.json (no weights: run with --random-weights).
// Supported model_type values: gpt2, mixtral, qwen2_moe, qwen3_moe, olmoe,
// llama, mistral, qwen2, qwen3.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_IMPORT_IMPORT_H
#define MOE_IMPORT_IMPORT_H

#include "moe/Compiler/Options.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"
#include "llvm/Support/Error.h"

namespace mlir::moe {

struct ImportOptions {
  /// Element type of the parameters of a description, which has no
  /// checkpoint to take it from.
  ComputeDType descriptionDType = ComputeDType::F32;
};

/// Imports `path` (see above). Errors are one line, "FILE: what (expected
/// ...)", naming the file and the field or tensor at fault.
llvm::Expected<OwningOpRef<ModuleOp>>
importModel(llvm::StringRef path, MLIRContext &context,
            const ImportOptions &options = {});

} // namespace mlir::moe

#endif // MOE_IMPORT_IMPORT_H
