//===- TestPlugin.cpp - a pass plugin for the --load-pass-plugin tests ----===//
//
// Registers `moe-test-count-params`, which records each model's parameter
// count as the attribute `test.num_params`. It uses the moe dialect's C++ API,
// so loading it also checks that the tools export the dialect's symbols.
//
//===----------------------------------------------------------------------===//

#include "moe/Dialect/MoEOps.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/Pass.h"
#include "mlir/Tools/Plugins/PassPlugin.h"
#include "llvm/Config/llvm-config.h"

using namespace mlir;

namespace {
struct CountParamsPass
    : public PassWrapper<CountParamsPass, OperationPass<ModuleOp>> {
  MLIR_DEFINE_EXPLICIT_INTERNAL_INLINE_TYPE_ID(CountParamsPass)

  StringRef getArgument() const final { return "moe-test-count-params"; }
  StringRef getDescription() const final {
    return "Annotates each moe.model with its parameter count (test plugin)";
  }
  void runOnOperation() override {
    for (auto model : getOperation().getOps<moe::ModelOp>()) {
      int64_t count = 0;
      for (auto param : model.getBodyBlock().getOps<moe::ParamOp>())
        count += param.getTensorType().getNumElements();
      model->setAttr("test.num_params",
                     IntegerAttr::get(IntegerType::get(&getContext(), 64),
                                      count));
    }
  }
};
} // namespace

extern "C" LLVM_ATTRIBUTE_WEAK PassPluginLibraryInfo mlirGetPassPluginInfo() {
  return {MLIR_PLUGIN_API_VERSION, "MoETestPlugin", LLVM_VERSION_STRING,
          [] { PassRegistration<CountParamsPass>(); }};
}
