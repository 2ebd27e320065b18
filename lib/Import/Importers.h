//===- Importers.h - per-format importers -----------------------*- C++ -*-===//

#ifndef MOE_LIB_IMPORT_IMPORTERS_H
#define MOE_LIB_IMPORT_IMPORTERS_H

#include "moe/Import/Import.h"

#include "llvm/Support/JSON.h"

namespace mlir::moe::detail {

/// A model description (DESIGN.md "Model description").
llvm::Expected<OwningOpRef<ModuleOp>>
importDescription(llvm::StringRef path, const llvm::json::Object &root,
                  MLIRContext &context, const ImportOptions &options);

/// A Hugging Face config.json; `checkpointDir` is the directory with its
/// safetensors, or "" for a bare config (no weights).
llvm::Expected<OwningOpRef<ModuleOp>>
importHuggingFace(llvm::StringRef configPath, const llvm::json::Object &root,
                  llvm::StringRef checkpointDir, MLIRContext &context);

} // namespace mlir::moe::detail

#endif // MOE_LIB_IMPORT_IMPORTERS_H
