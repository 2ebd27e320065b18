//===- import_fuzzer.cpp - Model descriptions and config.json -------------===//
//
// The input is a model description or a bare Hugging Face config.json
// (importModel tells them apart by "model_type"). An accepted model must
// verify, go through the default pipeline and lower to a plan the runtime's
// reader accepts: the compiler never hands the runtime a plan it rejects.
// Import errors are clean rejections; a pipeline or lowering failure on an
// imported model, a rejected plan, or a crash is a finding.
//
//===----------------------------------------------------------------------===//
#include "FuzzUtil.h"

#include "moe/Compiler/Options.h"
#include "moe/Dialect/MoEOps.h"
#include "moe/Import/Import.h"
#include "moe/Plan/EmitPlan.h"
#include "moe/Transforms/Passes.h"
#include "moert/Error.h"
#include "moert/Plan.h"

#include "mlir/Dialect/Shard/IR/ShardDialect.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"

#include <cstdio>
#include <fstream>
#include <stdlib.h>

using namespace mlir;
namespace mm = mlir::moe; // "moe" alone also names the plan schema's namespace

namespace {
std::string workDir;

/// Models too large to lower quickly are only imported.
bool smallEnough(mm::ModelOp model) {
  int64_t params = 0;
  model.walk([&](mm::ParamOp) { ++params; });
  return params < 4096;
}
} // namespace

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
  char tmpl[] = "/tmp/moe-fuzz-import-XXXXXX";
  if (!::mkdtemp(tmpl))
    std::abort();
  workDir = tmpl;
  std::atexit([] {
    std::remove((workDir + "/model.json").c_str());
    ::rmdir(workDir.c_str());
  });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  // A real file: the importer looks beside it for generation_config.json.
  std::string path = workDir + "/model.json";
  std::ofstream(path, std::ios::binary | std::ios::trunc)
      .write(reinterpret_cast<const char *>(data), std::streamsize(size));

  DialectRegistry registry;
  registry.insert<mm::MoEDialect, shard::ShardDialect>();
  MLIRContext context(registry, MLIRContext::Threading::DISABLED);
  context.loadAllAvailableDialects();
  std::string diagnostics;
  ScopedDiagnosticHandler handler(&context, [&](Diagnostic &d) {
    diagnostics += d.str() + "\n";
    return success();
  });

  llvm::Expected<OwningOpRef<ModuleOp>> imported = mm::importModel(path, context);
  if (!imported) {
    std::string message = llvm::toString(imported.takeError());
    // Never the builder's "importer bug" fallback.
    // Only the builder's own fallback starts this way (every reader error
    // starts with a path); searching anywhere in the message matched input
    // that libFuzzer had learnt to put into key names.
    if (message.rfind("the imported model does not verify: ", 0) == 0) {
      std::fprintf(stderr, "bad import error: %s\n", message.c_str());
      std::abort();
    }
    return 0;
  }
  OwningOpRef<ModuleOp> module = std::move(*imported);
  auto models = module->getOps<mm::ModelOp>();
  if (models.empty() || !smallEnough(*models.begin()))
    return 0;

  mm::CompileOptions options;
  PassManager pm(&context, ModuleOp::getOperationName());
  mm::buildDefaultPipeline(pm, options);
  if (failed(pm.run(*module))) {
    std::fprintf(stderr, "imported model failed the default pipeline:\n%s",
                 diagnostics.c_str());
    std::abort();
  }
  std::string bytes;
  llvm::raw_string_ostream os(bytes);
  if (failed(mm::emitPlan(*module, options, os))) {
    std::fprintf(stderr, "imported model failed to lower:\n%s", diagnostics.c_str());
    std::abort();
  }
  os.flush();
  try {
    moert::PlanFile::fromBytes(std::vector<uint8_t>(bytes.begin(), bytes.end()),
                               "compiled.plan");
  } catch (const moert::Error &e) {
    std::fprintf(stderr, "the runtime rejects the compiler's plan: %s\n", e.what());
    std::abort();
  }
  return 0;
}
