//===- Import.cpp - dispatch on what MODEL is -----------------------------===//

#include "moe/Import/Import.h"
#include "Importers.h"
#include "JsonReader.h"
#include "moe/Import/Safetensors.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"

using namespace mlir;
using namespace mlir::moe;
using llvm::StringRef;

llvm::Expected<OwningOpRef<ModuleOp>>
mlir::moe::importModel(StringRef path, MLIRContext &context,
                       const ImportOptions &options) {
  auto fail = [&](const llvm::Twine &what) {
    return llvm::createStringError((path + ": " + what).str());
  };
  if (llvm::sys::fs::is_directory(path)) {
    llvm::SmallString<256> config(path);
    llvm::sys::path::append(config, "config.json");
    if (!llvm::sys::fs::exists(config))
      return fail("has no config.json (expected a Hugging Face checkpoint "
                  "directory)");
    if (!hasCheckpoint(path))
      return fail("has no model.safetensors or model.safetensors.index.json "
                  "(expected a checkpoint; compile config.json itself to "
                  "build the model without weights)");
    llvm::Expected<llvm::json::Value> json = detail::parseJsonFile(config);
    if (!json)
      return json.takeError();
    return detail::importHuggingFace(config, *json->getAsObject(), path,
                                     context);
  }
  if (!llvm::sys::fs::exists(path))
    return fail("no such file or directory (expected a model description "
                ".json, a checkpoint directory or a config.json)");
  llvm::Expected<llvm::json::Value> json = detail::parseJsonFile(path);
  if (!json)
    return json.takeError();
  const llvm::json::Object &root = *json->getAsObject();
  // Hugging Face configs name their architecture; descriptions never do.
  if (root.get("model_type"))
    return detail::importHuggingFace(path, root, /*checkpointDir=*/"", context);
  return detail::importDescription(path, root, context, options);
}
