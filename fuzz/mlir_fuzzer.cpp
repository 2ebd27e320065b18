//===- mlir_fuzzer.cpp - moe-opt's parser and verifier --------------------===//
//
// Parses the input as MLIR assembly with the dialects moe-opt registers
// (after moe-opt's own nesting check) and verifies it. Malformed IR must end
// in diagnostics, never in a crash or an assertion (this build keeps
// assertions on). Valid IR must print and parse back to IR that verifies
// and prints the same (round trip).
//
//===----------------------------------------------------------------------===//
#include "moe/Compiler/InputLimits.h"
#include "moe/Dialect/MoEOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Shard/IR/ShardDialect.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Parser/Parser.h"

#include <cstdio>

using namespace mlir;

namespace {
std::string print(Operation *op) {
  std::string s;
  llvm::raw_string_ostream os(s);
  op->print(os, OpPrintingFlags().printGenericOpForm(false));
  return s;
}
} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  // The MLIR lexer relies on the NUL after the buffer that files (and
  // std::string) have and libFuzzer's input does not.
  std::string owned(reinterpret_cast<const char *>(data), size);
  llvm::StringRef text(owned);
  if (moe::findDeepNesting(text))
    return 0; // moe-opt rejects it before parsing
  DialectRegistry registry;
  registry.insert<moe::MoEDialect, shard::ShardDialect, func::FuncDialect>();
  MLIRContext context(registry, MLIRContext::Threading::DISABLED);
  context.loadAllAvailableDialects();
  ScopedDiagnosticHandler handler(&context, [](Diagnostic &) { return success(); });

  OwningOpRef<ModuleOp> module = parseSourceString<ModuleOp>(text, &context, "fuzz.mlir");
  if (!module || failed(verify(*module)))
    return 0;
  std::string first = print(*module);
  OwningOpRef<ModuleOp> again = parseSourceString<ModuleOp>(first, &context, "printed.mlir");
  if (!again || failed(verify(*again))) {
    std::fprintf(stderr, "printed IR does not parse and verify again:\n%s\n", first.c_str());
    std::abort();
  }
  std::string second = print(*again);
  if (first != second) {
    std::fprintf(stderr, "round trip changed the IR:\n%s\n---\n%s\n", first.c_str(),
                 second.c_str());
    std::abort();
  }
  return 0;
}
