//===- Common.cpp - JSON helpers and the byte-level alphabet --------------===//

#include "Components.h"
#include "Unicode.h"

namespace moert::tok {

void fail(const std::string &where, const std::string &what,
          const std::string &expected) {
  throw TokenizerError(where + ": " + what + " (expected " + expected + ")");
}

const Json &member(const Json &obj, const char *key, const std::string &where) {
  if (!obj.is_object())
    fail(where, "not a JSON object", "an object");
  auto it = obj.find(key);
  if (it == obj.end())
    fail(where, std::string("missing field '") + key + "'",
         std::string("a '") + key + "' field");
  return *it;
}

std::string getString(const Json &obj, const char *key,
                      const std::string &where) {
  const Json &v = member(obj, key, where);
  if (!v.is_string())
    fail(where + "." + key, "not a string", "a string");
  return v.get<std::string>();
}

bool getBool(const Json &obj, const char *key, const std::string &where,
             std::optional<bool> fallback) {
  if (fallback && (!obj.contains(key) || obj[key].is_null()))
    return *fallback;
  const Json &v = member(obj, key, where);
  if (!v.is_boolean())
    fail(where + "." + key, "not a boolean", "true or false");
  return v.get<bool>();
}

uint32_t getU32(const Json &obj, const char *key, const std::string &where) {
  const Json &v = member(obj, key, where);
  if (!v.is_number_unsigned() || v.get<uint64_t>() > UINT32_MAX)
    fail(where + "." + key, "not a valid id", "an integer in [0, 2^32)");
  return v.get<uint32_t>();
}

std::string typeOf(const Json &obj, const std::string &where) {
  return getString(obj, "type", where);
}

char32_t getChar(const Json &obj, const char *key, const std::string &where) {
  std::string s = getString(obj, key, where);
  size_t i = 0;
  char32_t c = 0;
  if (!s.empty() && findInvalidUtf8(s) == std::string::npos)
    c = nextCodePoint(s, i);
  if (i == 0 || i != s.size())
    fail(where + "." + key, "'" + s + "' is not one character",
         "a single character");
  return c;
}

Regex getPattern(const Json &obj, const char *key, const std::string &where) {
  const Json &p = member(obj, key, where);
  std::string at = where + "." + key;
  if (p.is_object() && p.size() == 1) {
    if (p.contains("String") && p["String"].is_string())
      return Regex::literal(p["String"].get<std::string>(), at);
    if (p.contains("Regex") && p["Regex"].is_string())
      return Regex(p["Regex"].get<std::string>(), at);
  }
  fail(at, "unrecognized pattern", "{\"String\": ...} or {\"Regex\": ...}");
}

ByteLevelTables::ByteLevelTables() {
  for (auto &v : charToByte)
    v = -1;
  // GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves, the
  // others to U+0100 onwards in byte order.
  auto printable = [](int b) {
    return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) ||
           (b >= 0xAE && b <= 0xFF);
  };
  int n = 0;
  for (int b = 0; b < 256; ++b) {
    char32_t c = printable(b) ? static_cast<char32_t>(b) : 256 + n++;
    appendUtf8(byteToUtf8[b], c);
    charToByte[c] = static_cast<int16_t>(b);
  }
}

const ByteLevelTables &byteLevelTables() {
  static const ByteLevelTables tables;
  return tables;
}

} // namespace moert::tok
