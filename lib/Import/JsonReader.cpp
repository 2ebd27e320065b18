//===- JsonReader.cpp - typed, checked access to JSON configs -------------===//

#include "JsonReader.h"
#include "moe/Compiler/InputLimits.h"
#include "moe/Support/Json.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FormatVariadic.h"

#include <cmath>

using namespace mlir::moe::detail;
using llvm::StringRef;

llvm::Expected<llvm::json::Value>
mlir::moe::detail::parseJsonFile(StringRef path) {
  auto buf = readInputFile(path);
  if (!buf)
    return buf.takeError();
  llvm::Expected<llvm::json::Value> value = parseJson((*buf)->getBuffer());
  if (!value)
    return llvm::createStringError(
        (path + ": invalid JSON: " + llvm::toString(value.takeError()) +
         " (expected a JSON object)")
            .str());
  if (!value->getAsObject())
    return llvm::createStringError(
        (path + ": top level is not a JSON object (expected {...})").str());
  return value;
}

const llvm::json::Value *JsonReader::lookup(StringRef key) const {
  const llvm::json::Value *v = object.get(key);
  if (!v || v->kind() == llvm::json::Value::Null)
    return nullptr;
  return v;
}

bool JsonReader::has(StringRef key) const { return lookup(key) != nullptr; }

void JsonReader::missing(StringRef key, StringRef expected) {
  error("missing field '" + fieldName(key) + "' (expected " + expected + ")");
}

void JsonReader::badValue(StringRef key, StringRef expected) {
  std::string shown;
  if (const llvm::json::Value *v = object.get(key)) {
    shown = llvm::formatv("{0}", *v).str();
    if (shown.size() > 60)
      shown = shown.substr(0, 57) + "...";
  }
  error("field '" + fieldName(key) + "' is " + shown + " (expected " +
        expected + ")");
}

static std::string intExpectation(int64_t min) {
  if (min == JsonReader::kNoMin)
    return llvm::formatv("an integer <= {0}", JsonReader::kMaxInt).str();
  return llvm::formatv("an integer in [{0}, {1}]", min, JsonReader::kMaxInt)
      .str();
}

std::optional<int64_t> JsonReader::getOptInt(StringRef key, int64_t min) {
  const llvm::json::Value *v = lookup(key);
  if (!v)
    return std::nullopt;
  std::optional<int64_t> i = jsonInteger(*v);
  if (!i || (v->kind() != llvm::json::Value::Number) || *i < min ||
      *i > kMaxInt) {
    badValue(key, intExpectation(min));
    return std::nullopt;
  }
  return i;
}

int64_t JsonReader::getInt(StringRef key, std::optional<int64_t> def,
                           int64_t min) {
  if (!has(key)) {
    if (!def)
      missing(key, intExpectation(min));
    return def.value_or(std::max<int64_t>(min, 1));
  }
  return getOptInt(key, min).value_or(std::max<int64_t>(min, 1));
}

double JsonReader::getPositive(StringRef key, std::optional<double> def,
                               bool allowZero) {
  StringRef expectation = allowZero ? "a number >= 0 within f32 range"
                                    : "a number > 0 within f32 range";
  const llvm::json::Value *v = lookup(key);
  if (!v) {
    if (!def)
      missing(key, expectation);
    return def.value_or(1.0);
  }
  std::optional<double> d = v->getAsNumber();
  // The IR stores these as f32: they must survive the conversion.
  float f = d ? float(*d) : 0.0f;
  if (!d || !std::isfinite(f) || *d < 0.0 || (f == 0.0f && !allowZero) ||
      (*d != 0.0 && f == 0.0f)) {
    badValue(key, expectation);
    return def.value_or(1.0);
  }
  return *d;
}

bool JsonReader::getBool(StringRef key, std::optional<bool> def) {
  const llvm::json::Value *v = lookup(key);
  if (!v) {
    if (!def)
      missing(key, "true or false");
    return def.value_or(false);
  }
  std::optional<bool> b = v->getAsBoolean();
  if (!b) {
    badValue(key, "true or false");
    return def.value_or(false);
  }
  return *b;
}

std::string JsonReader::getString(StringRef key,
                                  std::optional<std::string> def) {
  const llvm::json::Value *v = lookup(key);
  if (!v) {
    if (!def)
      missing(key, "a string");
    return def.value_or("");
  }
  std::optional<StringRef> s = v->getAsString();
  if (!s) {
    badValue(key, "a string");
    return def.value_or("");
  }
  return s->str();
}

std::string JsonReader::getChoice(StringRef key,
                                  llvm::ArrayRef<StringRef> choices,
                                  std::optional<std::string> def) {
  std::string expected = "one of " + llvm::join(choices, ", ");
  const llvm::json::Value *v = lookup(key);
  if (!v) {
    if (!def)
      missing(key, expected);
    return def.value_or(choices.front().str());
  }
  std::optional<StringRef> s = v->getAsString();
  if (!s || !llvm::is_contained(choices, *s)) {
    badValue(key, expected);
    return def.value_or(choices.front().str());
  }
  return s->str();
}

std::vector<int64_t> JsonReader::getIntList(StringRef key, int64_t min) {
  std::vector<int64_t> result;
  const llvm::json::Value *v = lookup(key);
  if (!v)
    return result;
  const llvm::json::Array *array = v->getAsArray();
  std::string expected =
      llvm::formatv("a list of integers in [{0}, {1}]",
                    min == kNoMin ? -kMaxInt : min, kMaxInt)
          .str();
  if (!array) {
    badValue(key, expected);
    return result;
  }
  for (const llvm::json::Value &e : *array) {
    std::optional<int64_t> i = jsonInteger(e);
    if (!i || *i < min || *i > kMaxInt) {
      badValue(key, expected);
      return {};
    }
    result.push_back(*i);
  }
  return result;
}

const llvm::json::Object *JsonReader::getObject(StringRef key) {
  const llvm::json::Value *v = lookup(key);
  if (!v)
    return nullptr;
  const llvm::json::Object *o = v->getAsObject();
  if (!o)
    badValue(key, "an object");
  return o;
}

void JsonReader::rejectUnknownKeys(llvm::ArrayRef<StringRef> known) {
  std::vector<StringRef> unknown;
  for (const auto &kv : object)
    if (!llvm::is_contained(known, StringRef(kv.first)))
      unknown.push_back(kv.first);
  if (unknown.empty())
    return;
  llvm::sort(unknown);
  error("unknown key '" + fieldName(unknown.front()) + "' (expected one of " +
        llvm::join(known, ", ") + ")");
}
