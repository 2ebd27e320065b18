//===- InputLimits.h - Parsing untrusted text within safe limits -*- C++ -*-===//
//
// llvm::json::parse and the MLIR parser recurse once per nesting level, so a
// few hundred KB of '[' overflow the stack (measured: 10^5 levels crash
// llvm::json::parse, 10^4 crash mlir-opt). Every file a user hands the
// compiler (config.json, model descriptions, safetensors headers and
// indexes, expert profiles, .mlir input) is checked here first.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_COMPILER_INPUTLIMITS_H
#define MOE_COMPILER_INPUTLIMITS_H

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"

#include <cstddef>
#include <memory>
#include <optional>
#include <string>

namespace mlir::moe {

/// Deepest JSON nesting accepted; real configs nest a handful of levels.
inline constexpr unsigned kMaxJsonDepth = 128;
/// Deepest bracket nesting accepted in MLIR assembly.
inline constexpr unsigned kMaxIRDepth = 256;

/// llvm::json::parse that also rejects nesting deeper than kMaxJsonDepth and
/// objects repeating a key (llvm::json keeps one of them silently; Python,
/// which wrote the file, reads the last). Errors read "[LINE:COL, byte=N]:
/// what" like llvm::json's own; callers add what they expected.
llvm::Expected<llvm::json::Value> parseJson(llvm::StringRef text);

/// The contents of the input file `path`. Errors read "PATH: cannot read
/// file: why (expected EXPECTED)", without the parenthesis when `expected`
/// is empty.
llvm::Expected<std::unique_ptr<llvm::MemoryBuffer>>
readInputFile(llvm::StringRef path, llvm::StringRef expected = {});

/// The byte offset at which MLIR assembly `text` nests (), [], {} or <>
/// deeper than `maxDepth`, outside strings and comments; nullopt if it
/// does not.
std::optional<size_t> findDeepNesting(llvm::StringRef text,
                                      unsigned maxDepth = kMaxIRDepth);

/// `message` with control characters written as \n, \r, \t or \xNN: errors
/// quote names and values from input files and must stay one line.
std::string oneLine(llvm::StringRef message);

/// 1-based line and column of byte `offset` in `text`.
std::pair<unsigned, unsigned> lineAndColumn(llvm::StringRef text,
                                            size_t offset);

} // namespace mlir::moe

#endif // MOE_COMPILER_INPUTLIMITS_H
