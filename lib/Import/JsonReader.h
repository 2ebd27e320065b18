//===- JsonReader.h - typed, checked access to JSON configs -----*- C++ -*-===//
//
// Reads config fields with one-line errors that name the file and the field
// ("FILE: field 'moe.top_k' is 0 (expected an integer >= 1)"). The first
// error sticks; later reads return defaults so callers can check once.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_IMPORT_JSONREADER_H
#define MOE_LIB_IMPORT_JSONREADER_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/Twine.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/JSON.h"

#include <limits>
#include <optional>
#include <string>
#include <vector>

namespace mlir::moe::detail {

/// Keeps the first error of an import.
class ErrorSink {
public:
  void report(const llvm::Twine &message) {
    if (!first)
      first = message.str();
  }
  bool failed() const { return first.has_value(); }
  llvm::Error take() {
    return first ? llvm::createStringError(*first) : llvm::Error::success();
  }

private:
  std::optional<std::string> first;
};

/// Parses a JSON file whose top level must be an object.
llvm::Expected<llvm::json::Value> parseJsonFile(llvm::StringRef path);

class JsonReader {
public:
  static constexpr int64_t kNoMin = std::numeric_limits<int64_t>::min();
  /// Largest integer a config field may hold (sizes, counts, token ids):
  /// keeps every product of a few of them far from int64 overflow.
  static constexpr int64_t kMaxInt = int64_t(1) << 24;

  JsonReader(const llvm::json::Object &object, llvm::StringRef file,
             ErrorSink &errors, llvm::StringRef prefix = "")
      : object(object), file(file.str()), prefix(prefix.str()),
        errors(errors) {}

  /// Present and not null.
  bool has(llvm::StringRef key) const;
  /// Integer field >= min; required when `def` is empty (null counts as
  /// absent).
  int64_t getInt(llvm::StringRef key, std::optional<int64_t> def,
                 int64_t min = kNoMin);
  /// Integer field or null/absent.
  std::optional<int64_t> getOptInt(llvm::StringRef key, int64_t min = kNoMin);
  /// Number field > 0 (or >= 0 with allowZero) that stays finite and
  /// nonzero as an f32.
  double getPositive(llvm::StringRef key, std::optional<double> def,
                     bool allowZero = false);
  bool getBool(llvm::StringRef key, std::optional<bool> def);
  std::string getString(llvm::StringRef key, std::optional<std::string> def);
  /// A string that must be one of `choices`.
  std::string getChoice(llvm::StringRef key, llvm::ArrayRef<llvm::StringRef> choices,
                        std::optional<std::string> def);
  /// A list of integers >= min (absent/null: empty).
  std::vector<int64_t> getIntList(llvm::StringRef key, int64_t min = kNoMin);
  /// A nested object, or null when absent.
  const llvm::json::Object *getObject(llvm::StringRef key);
  /// Reports the first key (in sorted order) that is not in `known`.
  void rejectUnknownKeys(llvm::ArrayRef<llvm::StringRef> known);

  /// Reports "FILE: message".
  void error(const llvm::Twine &message) { errors.report(file + ": " + message); }
  /// Reports "FILE: field 'KEY' is VALUE (expected WHAT)".
  void badValue(llvm::StringRef key, llvm::StringRef expected);
  std::string fieldName(llvm::StringRef key) const { return prefix + key.str(); }
  const std::string &getFile() const { return file; }
  bool failed() const { return errors.failed(); }

private:
  const llvm::json::Value *lookup(llvm::StringRef key) const;
  void missing(llvm::StringRef key, llvm::StringRef expected);

  const llvm::json::Object &object;
  std::string file;
  std::string prefix;
  ErrorSink &errors;
};

} // namespace mlir::moe::detail

#endif // MOE_LIB_IMPORT_JSONREADER_H
