//===- moe-tokenize.cpp - text <-> ids with a tokenizer.json --------------===//
//
//   moe-tokenize TOKENIZER.json --jsonl        < {"text": ...} lines
//   moe-tokenize TOKENIZER.json --text=STR
//   moe-tokenize TOKENIZER.json --decode=1,2,3 [--skip-special]
//
// --jsonl and --text print one JSON line per input:
//   {"ids": encode(text, no specials), "ids_with_special": encode(text, with
//    the post-processor's specials), "decoded": decode(ids, keep specials)}
// exactly as Hugging Face tokenizers computes them. A --jsonl line that
// cannot be read (malformed JSON, a lone UTF-16 surrogate, invalid UTF-8, no
// "text") is reported on stderr by its number and answered by an
// {"error": ...} line; the other lines are still encoded, and the exit
// status is 1 at the end.
//
//===----------------------------------------------------------------------===//

#include <moert/Tokenizer.h>

#include <charconv>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace {

constexpr const char *kUsage =
    "usage: moe-tokenize TOKENIZER.json [--config=tokenizer_config.json]\n"
    "         (--jsonl | --text=STR | --decode=ID,ID,... [--skip-special])\n"
    "  --jsonl         read {\"text\": ...} JSON lines on stdin, write one\n"
    "                  {\"ids\", \"ids_with_special\", \"decoded\"} line each\n"
    "  --text=STR      the same for one text\n"
    "  --decode=IDS    print the text of comma-separated token ids\n"
    "  --skip-special  with --decode: drop special tokens\n"
    "  --config=FILE   tokenizer_config.json (adds \"prompt_ids\": the ids a\n"
    "                  prompt starts from, with its add_bos/add_eos)\n";

[[noreturn]] void die(const std::string &msg) {
  std::fflush(stdout);
  std::fprintf(stderr, "error: %s\n", msg.c_str());
  std::exit(1);
}

nlohmann::ordered_json encodeLine(const moert::Tokenizer &tok,
                                  const std::string &text, bool withPrompt) {
  nlohmann::ordered_json out;
  std::vector<uint32_t> ids = tok.encode(text, false);
  out["ids"] = ids;
  out["ids_with_special"] = tok.encode(text, true);
  out["decoded"] = tok.decode(ids, false);
  if (withPrompt)
    out["prompt_ids"] = tok.encodePrompt(text);
  return out;
}

std::vector<uint32_t> parseIds(const std::string &list) {
  std::vector<uint32_t> ids;
  size_t pos = 0;
  while (pos <= list.size() && !list.empty()) {
    size_t comma = list.find(',', pos);
    if (comma == std::string::npos)
      comma = list.size();
    std::string item = list.substr(pos, comma - pos);
    uint32_t id = 0;
    auto [end, ec] = std::from_chars(item.data(), item.data() + item.size(), id);
    if (item.empty() || ec != std::errc() || end != item.data() + item.size())
      die("--decode: '" + item + "' is not a token id (expected comma-separated "
          "integers like 1,2,3)");
    ids.push_back(id);
    pos = comma + 1;
  }
  return ids;
}

} // namespace

int main(int argc, char **argv) {
  std::string path, configPath, text, decodeList;
  bool jsonl = false, haveText = false, haveDecode = false, skipSpecial = false,
       failed = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--jsonl")
      jsonl = true;
    else if (a.rfind("--text=", 0) == 0) {
      text = a.substr(7);
      haveText = true;
    } else if (a.rfind("--decode=", 0) == 0) {
      decodeList = a.substr(9);
      haveDecode = true;
    } else if (a == "--skip-special")
      skipSpecial = true;
    else if (a.rfind("--config=", 0) == 0)
      configPath = a.substr(9);
    else if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (a.rfind("-", 0) == 0)
      die("unknown option '" + a + "' (expected --jsonl, --text=, --decode=, "
          "--skip-special or --config=)");
    else if (path.empty())
      path = a;
    else
      die("more than one tokenizer file given (expected one TOKENIZER.json)");
  }
  if (path.empty() || jsonl + haveText + haveDecode != 1) {
    std::fputs(kUsage, stderr);
    return 1;
  }

  try {
    moert::Tokenizer tok = moert::Tokenizer::fromFile(path, configPath);
    bool withPrompt = !configPath.empty();
    if (haveText) {
      std::cout << encodeLine(tok, text, withPrompt).dump() << '\n';
    } else if (haveDecode) {
      std::cout << tok.decode(parseIds(decodeList), skipSpecial) << '\n';
    } else {
      std::string line;
      size_t lineNo = 0;
      // Output lines match input lines one to one, so a script can pair
      // them: a bad line gets an error line and the stream goes on.
      auto lineError = [&](const std::string &what) {
        std::string msg = "<stdin>:" + std::to_string(lineNo) + ": " + what;
        std::cout << nlohmann::ordered_json{{"error", msg}}.dump(
                         -1, ' ', false, nlohmann::json::error_handler_t::replace)
                  << '\n';
        std::cout.flush();
        std::fprintf(stderr, "error: %s\n", msg.c_str());
        failed = true;
      };
      while (std::getline(std::cin, line)) {
        ++lineNo;
        if (line.find_first_not_of(" \t\r") == std::string::npos)
          continue;
        nlohmann::json in;
        try {
          in = nlohmann::json::parse(line);
        } catch (const nlohmann::json::exception &e) {
          // Drop nlohmann's "last read" echo: it may hold the invalid bytes.
          std::string msg = e.what();
          msg = msg.substr(0, msg.find("; last read"));
          lineError("malformed JSON line: " + msg +
                    " (expected {\"text\": \"...\"})");
          continue;
        }
        if (!in.is_object() || !in.contains("text") ||
            !in["text"].is_string()) {
          lineError("no \"text\" string (expected {\"text\": \"...\"})");
          continue;
        }
        try {
          std::cout << encodeLine(tok, in["text"].get<std::string>(),
                                  withPrompt)
                           .dump()
                    << '\n';
        } catch (const moert::TokenizerError &e) {
          lineError(e.what());
        } catch (const nlohmann::json::exception &e) {
          lineError(std::string("cannot write the result: ") + e.what());
        }
      }
    }
  } catch (const moert::TokenizerError &e) {
    // Load errors already start with the file name.
    std::string msg = e.what();
    if (msg.rfind(path, 0) != 0 &&
        (configPath.empty() || msg.rfind(configPath, 0) != 0))
      msg = (haveDecode ? "--decode" : haveText ? "--text" : path) +
            std::string(": ") + msg;
    die(msg);
  }
  std::cout.flush();
  if (!std::cout)
    die("<stdout>: write failed (expected a writable output)");
  return failed ? 1 : 0;
}
