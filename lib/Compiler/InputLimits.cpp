//===- InputLimits.cpp - Parsing untrusted text within safe limits --------===//

#include "moe/Compiler/InputLimits.h"

#include "llvm/ADT/SmallVector.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/Support/FormatVariadic.h"

#include <string>

using namespace mlir::moe;
using llvm::StringRef;

llvm::Expected<std::unique_ptr<llvm::MemoryBuffer>>
mlir::moe::readInputFile(StringRef path, StringRef expected) {
  auto buffer = llvm::MemoryBuffer::getFile(path, /*IsText=*/true);
  if (buffer)
    return std::move(*buffer);
  std::string message =
      (path + ": cannot read file: " + buffer.getError().message()).str();
  if (!expected.empty())
    message += (" (expected " + expected + ")").str();
  return llvm::createStringError(message);
}

#if defined(__SANITIZE_ADDRESS__) || (defined(__has_feature) && __has_feature(address_sanitizer))
// LLVM's BumpPtrAllocator poisons new slabs and unpoisons what it hands out,
// but only in code compiled with ASan: a slab started by an instrumented
// inline copy in our objects and carved up by Debian's uninstrumented
// libMLIR reads as use-after-poison (seen in the moe-opt fuzzer). Every
// tool that links LLVM links this file, so user poisoning is off in them.
extern "C" const char *__asan_default_options() { return "allow_user_poisoning=0"; }
#endif

std::pair<unsigned, unsigned> mlir::moe::lineAndColumn(StringRef text,
                                                       size_t offset) {
  offset = std::min(offset, text.size());
  StringRef before = text.take_front(offset);
  unsigned line = 1 + unsigned(before.count('\n'));
  size_t lineStart = before.rfind('\n');
  unsigned column =
      unsigned(lineStart == StringRef::npos ? offset + 1 : offset - lineStart);
  return {line, column};
}

std::string mlir::moe::oneLine(StringRef message) {
  std::string out;
  out.reserve(message.size());
  for (char c : message) {
    auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u != 0x7f)
      out += c;
    else if (c == '\n')
      out += "\\n";
    else if (c == '\r')
      out += "\\r";
    else if (c == '\t')
      out += "\\t";
    else
      out += llvm::formatv("\\x{0:x-2}", unsigned(u)).str();
  }
  return out;
}

static llvm::Error errorAt(StringRef text, size_t offset,
                           const llvm::Twine &what) {
  auto [line, column] = lineAndColumn(text, offset);
  return llvm::createStringError(
      llvm::formatv("[{0}:{1}, byte={2}]: {3}", line, column, offset, what.str())
          .str());
}

llvm::Expected<llvm::json::Value> mlir::moe::parseJson(StringRef text) {
  // A lexical pass before the recursive parser: container depth and the keys
  // of each open object. Anything malformed is left to llvm::json::parse,
  // whose message is better.
  struct Frame {
    bool object;
    llvm::StringSet<> keys;
  };
  llvm::SmallVector<Frame, 16> stack;
  std::optional<std::pair<size_t, std::string>> repeated;
  for (size_t i = 0, n = text.size(); i < n;) {
    char c = text[i];
    if (c == '"') {
      size_t start = i++;
      bool escaped = false;
      while (i < n && text[i] != '"') {
        if (text[i] == '\\') {
          escaped = true;
          ++i;
        }
        ++i;
      }
      if (i >= n)
        break; // unterminated string
      ++i;
      size_t next = i;
      while (next < n && llvm::isSpace(text[next]))
        ++next;
      if (repeated || next >= n || text[next] != ':' || stack.empty() ||
          !stack.back().object)
        continue;
      StringRef raw = text.slice(start, i);
      std::string key = raw.drop_front().drop_back().str();
      if (escaped) {
        llvm::Expected<llvm::json::Value> decoded = llvm::json::parse(raw);
        if (!decoded) {
          llvm::consumeError(decoded.takeError());
          break;
        }
        key = decoded->getAsString()->str();
      }
      if (!stack.back().keys.insert(key).second)
        repeated.emplace(start, std::move(key));
      continue;
    }
    if (c == '{' || c == '[') {
      if (stack.size() >= kMaxJsonDepth)
        return errorAt(text, i,
                       llvm::formatv("nested deeper than {0} levels",
                                     kMaxJsonDepth));
      stack.push_back(Frame{c == '{', {}});
    } else if (c == '}' || c == ']') {
      if (stack.empty())
        break;
      stack.pop_back();
    }
    ++i;
  }
  llvm::Expected<llvm::json::Value> value = llvm::json::parse(text);
  if (!value || !repeated)
    return value;
  llvm::consumeError(value.takeError());
  // Shown escaped, so the message stays on one line.
  std::string shown = llvm::formatv("{0}", llvm::json::Value(repeated->second));
  return errorAt(text, repeated->first,
                 "repeated key " + shown);
}

std::optional<size_t> mlir::moe::findDeepNesting(StringRef text,
                                                 unsigned maxDepth) {
  unsigned depth = 0;
  for (size_t i = 0, n = text.size(); i < n; ++i) {
    switch (text[i]) {
    case '"': // a string literal ends at its quote or the line's end
      for (++i; i < n && text[i] != '"' && text[i] != '\n'; ++i)
        if (text[i] == '\\')
          ++i;
      break;
    case '/':
      if (i + 1 < n && text[i + 1] == '/')
        while (i + 1 < n && text[i + 1] != '\n')
          ++i;
      break;
    case '(':
    case '[':
    case '{':
    case '<':
      if (++depth > maxDepth)
        return i;
      break;
    case ')':
    case ']':
    case '}':
      if (depth)
        --depth;
      break;
    case '>': // not the arrow of a function type
      if (depth && !(i > 0 && text[i - 1] == '-'))
        --depth;
      break;
    default:
      break;
    }
  }
  return std::nullopt;
}
