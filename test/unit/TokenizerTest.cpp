//===- TokenizerTest.cpp - unit tests of moert_tokenizer ------------------===//
//
// Pieces of the tokenizer on their own (UTF-8 handling, regex iteration, BPE
// merge order, decoders, added-token flags, streaming decode, errors). The
// full HF comparisons are the lit tests in test/Tokenizer.
//
//===----------------------------------------------------------------------===//

#include "Regex.h"
#include "Unicode.h"

#include <filesystem>
#include <gtest/gtest.h>
#include <moert/Tokenizer.h>
#include <nlohmann/json.hpp>
#include <thread>

using moert::DecodeStream;
using moert::Tokenizer;
using moert::TokenizerError;
using nlohmann::json;

namespace {

std::string fixture(const std::string &name) {
  return std::string(MOE_SHARED_DIR) + "/fixtures/tokenizers/" + name;
}
std::string input(const std::string &name) {
  return std::string(MOE_TOKENIZER_INPUTS) + "/" + name;
}

/// A byte-fallback BPE with the Llama decoder chain, built inline.
json tinyLlama() {
  json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    vocab[name] = 3 + b;
  }
  int next = 259;
  for (const char *t : {"\xE2\x96\x81", "a", "b", "c", "ab", "bc", "abc",
                        "\xE2\x96\x81" "a"})
    vocab[t] = next++;
  return {
      {"added_tokens",
       {{{"id", 0}, {"content", "<unk>"}, {"special", true}},
        {{"id", 1}, {"content", "<s>"}, {"special", true}},
        {{"id", 2}, {"content", "</s>"}, {"special", true}}}},
      {"normalizer",
       {{"type", "Sequence"},
        {"normalizers",
         {{{"type", "Prepend"}, {"prepend", "\xE2\x96\x81"}},
          {{"type", "Replace"},
           {"pattern", {{"String", " "}}},
           {"content", "\xE2\x96\x81"}}}}}},
      {"decoder",
       {{"type", "Sequence"},
        {"decoders",
         {{{"type", "Replace"},
           {"pattern", {{"String", "\xE2\x96\x81"}}},
           {"content", " "}},
          {{"type", "ByteFallback"}},
          {{"type", "Fuse"}},
          {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}},
      {"model",
       {{"type", "BPE"},
        {"unk_token", "<unk>"},
        {"byte_fallback", true},
        {"vocab", vocab},
        // "b c" outranks "a b", so "abc" is built as a + bc.
        {"merges", {"b c", "a b", "a bc", "\xE2\x96\x81 a"}}}}};
}

std::vector<uint32_t> ids(std::initializer_list<uint32_t> l) { return l; }

} // namespace

TEST(TokenizerUnicode, Utf8Validation) {
  using moert::tok::findInvalidUtf8;
  EXPECT_EQ(findInvalidUtf8("plain ascii"), std::string::npos);
  EXPECT_EQ(findInvalidUtf8("caf\xC3\xA9 \xF0\x9F\x98\x80"), std::string::npos);
  EXPECT_EQ(findInvalidUtf8("a\xC0\xAF"), 1u);         // overlong
  EXPECT_EQ(findInvalidUtf8("ab\xED\xA0\x80"), 2u);     // surrogate
  EXPECT_EQ(findInvalidUtf8("\xF4\x90\x80\x80"), 0u);   // > U+10FFFF
  EXPECT_EQ(findInvalidUtf8("abc\xE2\x82"), 3u);        // truncated
  EXPECT_EQ(findInvalidUtf8(std::string("a\0b", 3)), std::string::npos);
}

TEST(TokenizerUnicode, LossyMatchesRust) {
  using moert::tok::fromUtf8Lossy;
  const std::string r = "\xEF\xBF\xBD";
  // One U+FFFD per maximal subpart, as String::from_utf8_lossy.
  EXPECT_EQ(fromUtf8Lossy("a\xE2\x82"), "a" + r);
  EXPECT_EQ(fromUtf8Lossy("\xE2\x82" "b"), r + "b");
  EXPECT_EQ(fromUtf8Lossy("\xFF\xFE"), r + r);
  EXPECT_EQ(fromUtf8Lossy("\xF0\x9F\x98"), r);
  EXPECT_EQ(fromUtf8Lossy("\xED\xA0\x80"), r + r + r);
  EXPECT_EQ(fromUtf8Lossy("\xE2\x82\xAC"), "\xE2\x82\xAC");
}

TEST(TokenizerUnicode, CharacterClasses) {
  using namespace moert::tok;
  EXPECT_TRUE(isWhitespace(U'\u0085'));
  EXPECT_TRUE(isWhitespace(U'\u3000'));
  EXPECT_FALSE(isWhitespace(U'\u200B'));
  EXPECT_TRUE(isWordChar(U'\u00E9'));
  EXPECT_TRUE(isWordChar(U'\u0301')); // combining mark
  EXPECT_TRUE(isWordChar(U'_'));
  EXPECT_FALSE(isWordChar(U'\u00B2')); // No, not Nd
  EXPECT_TRUE(isNumeric(U'\u00B2'));
  EXPECT_TRUE(isNumeric(U'\u2460'));
  std::string lower;
  appendLowercase(lower, U'\u0130');
  appendLowercase(lower, U'\u03A3');
  EXPECT_EQ(lower, "i\xCC\x87\xCF\x83");
  EXPECT_EQ(normalizeUnicode("cafe\xCC\x81", NormalForm::NFC), "caf\xC3\xA9");
  EXPECT_EQ(normalizeUnicode("\xEF\xAC\x81", NormalForm::NFKC), "fi");
}

TEST(TokenizerRegex, OnigurumaIteration) {
  moert::tok::Regex re("a*", "test");
  std::vector<std::pair<size_t, size_t>> got;
  re.forEachMatch("baa", [&](size_t s, size_t e) { got.push_back({s, e}); });
  // onig-rs skips the empty match right after "aa".
  EXPECT_EQ(got, (std::vector<std::pair<size_t, size_t>>{{0, 0}, {1, 3}}));

  moert::tok::Regex words("\\p{L}+", "test");
  got.clear();
  words.forEachMatch("héllo wörld",
                     [&](size_t s, size_t e) { got.push_back({s, e}); });
  EXPECT_EQ(got, (std::vector<std::pair<size_t, size_t>>{{0, 6}, {7, 13}}));
  EXPECT_THROW(moert::tok::Regex("(", "test"), TokenizerError);
}

TEST(TokenizerBpe, MergeOrderAndByteFallback) {
  Tokenizer tok = Tokenizer::fromJson(tinyLlama().dump());
  uint32_t sp = 259, bc = 264, abc = 265, spA = 266;
  // "▁abc": "b c" (rank 0) first, then "a bc"; "▁ a" no longer applies.
  EXPECT_EQ(tok.encode("abc", false), ids({sp, abc}));
  EXPECT_EQ(tok.encode("a", false), ids({spA}));
  EXPECT_EQ(tok.encode("bc a", false), ids({sp, bc, spA}));
  // 'é' is not in the vocab: byte fallback <0xC3><0xA9>.
  EXPECT_EQ(tok.encode("\xC3\xA9", false), ids({sp, 3 + 0xC3, 3 + 0xA9}));
  EXPECT_EQ(tok.decode(tok.encode("bc a \xC3\xA9", false), false),
            "bc a \xC3\xA9");
  // Added tokens split the raw text; the normalizer runs per piece.
  EXPECT_EQ(tok.encode("a<s>a", false), ids({spA, 1, spA}));
  EXPECT_EQ(tok.decode(ids({1, spA, 2}), true), "a");
  EXPECT_EQ(tok.decode(ids({1, spA, 2}), false), "<s> a</s>");
  // Half a character decodes to U+FFFD per byte.
  EXPECT_EQ(tok.decode(ids({3 + 0xE2, 3 + 0x82}), false),
            "\xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST(TokenizerBpe, UnknownCharactersWithoutByteFallback) {
  json j = tinyLlama();
  j["model"]["byte_fallback"] = false;
  j["model"]["fuse_unk"] = true;
  Tokenizer fused = Tokenizer::fromJson(j.dump());
  EXPECT_EQ(fused.encode("a\xC3\xA9\xC3\xA9", false), ids({266, 0}));
  j["model"]["fuse_unk"] = false;
  Tokenizer unfused = Tokenizer::fromJson(j.dump());
  EXPECT_EQ(unfused.encode("a\xC3\xA9\xC3\xA9", false), ids({266, 0, 0}));
}

TEST(TokenizerAdded, StripAndSingleWordFlags) {
  json j = tinyLlama();
  j["normalizer"] = nullptr;
  j["added_tokens"].push_back({{"id", 300}, {"content", "<m>"},
                               {"lstrip", true}, {"rstrip", true},
                               {"special", true}, {"normalized", false}});
  j["added_tokens"].push_back({{"id", 301}, {"content", "cab"},
                               {"single_word", true}, {"normalized", true}});
  Tokenizer tok = Tokenizer::fromJson(j.dump());
  uint32_t m = *tok.tokenToId("<m>"), cab = *tok.tokenToId("cab");
  EXPECT_EQ(m, 267u); // HF numbers added tokens after the vocab
  EXPECT_EQ(cab, 268u);
  // Spaces around <m> are absorbed (no '▁' bytes would remain here anyway:
  // the model has no ' ', so they would be byte-fallback 0x20).
  EXPECT_EQ(tok.encode("a  <m>  a", false), ids({260, m, 260}));
  EXPECT_EQ(tok.encode("a cab a", false),
            ids({260, 3 + 0x20, cab, 3 + 0x20, 260}));
  // Inside a word "cab" is not a single word: plain BPE (c, ab).
  EXPECT_EQ(tok.encode("acab", false), ids({260, 262, 263}));
  EXPECT_TRUE(tok.isSpecial(m));
  EXPECT_FALSE(tok.isSpecial(cab));
}

TEST(TokenizerErrors, OneLineMessages) {
  Tokenizer tok = Tokenizer::fromJson(tinyLlama().dump());
  try {
    tok.encode("ab\xFF", false);
    FAIL() << "expected a throw";
  } catch (const TokenizerError &e) {
    EXPECT_STREQ(e.what(), "invalid UTF-8 at byte 2 of the input text "
                           "(expected valid UTF-8)");
  }
  EXPECT_THROW(tok.decode(ids({100000}), false), TokenizerError);

  json j = tinyLlama();
  j["pre_tokenizer"] = {{"type", "UnicodeScripts"}};
  try {
    Tokenizer::fromJson(j.dump(), {}, "x.json");
    FAIL() << "expected a throw";
  } catch (const TokenizerError &e) {
    std::string msg = e.what();
    EXPECT_EQ(msg.rfind("x.json: pre_tokenizer: unsupported pre-tokenizer "
                        "type 'UnicodeScripts'",
                        0),
              0u)
        << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos);
  }
  j = tinyLlama();
  j["model"]["merges"].push_back(json::array({"a", 5}));
  EXPECT_THROW(Tokenizer::fromJson(j.dump()), TokenizerError);
  EXPECT_THROW(Tokenizer::fromJson("{\"model\": 3}"), TokenizerError);
  EXPECT_THROW(Tokenizer::fromJson("[1, 2"), TokenizerError);
}

TEST(TokenizerConfig, PromptSpecials) {
  std::string j = tinyLlama().dump();
  Tokenizer plain = Tokenizer::fromJson(j);
  EXPECT_EQ(plain.encodePrompt("a"), ids({266})); // no post-processor
  Tokenizer both = Tokenizer::fromJson(
      j, R"({"add_bos_token": true, "add_eos_token": true,
             "bos_token": {"content": "<s>"}, "eos_token": "</s>"})");
  EXPECT_EQ(both.encodePrompt("a"), ids({1, 266, 2}));
  EXPECT_EQ(both.bosTokenId(), 1u);
  EXPECT_EQ(both.eosTokenId(), 2u);
  Tokenizer off = Tokenizer::fromJson(
      j, R"({"add_bos_token": false, "bos_token": "<s>"})");
  EXPECT_EQ(off.encodePrompt("a"), ids({266}));
  EXPECT_THROW(Tokenizer::fromJson(j, R"({"add_eos_token": true})"),
               TokenizerError);
}

namespace {
/// Streams ids one at a time; checks each chunk is complete UTF-8 and that
/// the chunks add up to decode(ids).
void checkStream(const Tokenizer &tok, const std::vector<uint32_t> &all,
                 bool skipSpecial) {
  DecodeStream stream(tok, skipSpecial);
  std::string streamed;
  for (uint32_t id : all) {
    std::string piece = stream.step(id);
    EXPECT_EQ(moert::tok::findInvalidUtf8(piece), std::string::npos);
    streamed += piece;
  }
  streamed += stream.flush();
  EXPECT_EQ(streamed, tok.decode(all, skipSpecial));
}
} // namespace

TEST(TokenizerStream, ByteFallbackPiecesAcrossTokens) {
  Tokenizer tok = Tokenizer::fromJson(tinyLlama().dump());
  // "a €a": the euro sign is three byte-fallback tokens.
  std::vector<uint32_t> all = tok.encode("a \xE2\x82\xAC" "a", false);
  ASSERT_EQ(all, ids({266, 259, 3 + 0xE2, 3 + 0x82, 3 + 0xAC, 260}));
  DecodeStream stream(tok, false);
  EXPECT_EQ(stream.step(all[0]), "a"); // Strip removed the leading space
  EXPECT_EQ(stream.step(all[1]), " ");
  EXPECT_EQ(stream.step(all[2]), ""); // 0xE2: incomplete
  EXPECT_EQ(stream.step(all[3]), ""); // 0x82: incomplete
  EXPECT_EQ(stream.step(all[4]), "\xE2\x82\xAC");
  EXPECT_EQ(stream.step(all[5]), "a");
  EXPECT_EQ(stream.flush(), "");
  checkStream(tok, all, false);
  // An unfinished character at the end comes out as U+FFFD on flush.
  DecodeStream cut(tok, false);
  EXPECT_EQ(cut.step(3 + 0xE2), "");
  EXPECT_EQ(cut.flush(), "\xEF\xBF\xBD");
}

TEST(TokenizerStream, ByteLevelFixture) {
  if (!std::filesystem::exists(fixture("gpt2/tokenizer.json")))
    GTEST_SKIP() << "no shared fixtures";
  Tokenizer tok = Tokenizer::fromFile(fixture("gpt2/tokenizer.json"),
                                      fixture("gpt2/tokenizer_config.json"));
  EXPECT_EQ(tok.eosTokenId(), 50256u);
  std::string text = "emoji: \xF0\x9F\x98\x80\xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD "
                     "\xE9\x92\x88\xE5\xAF\xB9 MoE<|endoftext|> done";
  checkStream(tok, tok.encode(text, true), false);
  checkStream(tok, tok.encode(text, true), true);
}

TEST(TokenizerStream, MetaspaceInput) {
  std::string path = input("llama-metaspace/tokenizer.json");
  Tokenizer tok = Tokenizer::fromFile(path);
  std::string text = "Hello world \xE6\x97\xA5\xE6\x9C\xAC <mask> end";
  checkStream(tok, tok.encode(text, true), false);
  checkStream(tok, tok.encode(text, true), true);
}

TEST(TokenizerThreads, ConcurrentEncodeAgrees) {
  Tokenizer tok = Tokenizer::fromFile(input("qwen2/tokenizer.json"));
  std::string text;
  for (int i = 0; i < 200; ++i)
    text += "Mixture of Experts " + std::to_string(i) + " caf\xC3\xA9\n";
  std::vector<uint32_t> expected = tok.encode(text, false);
  std::vector<std::vector<uint32_t>> got(4);
  std::vector<std::thread> threads;
  for (auto &g : got)
    threads.emplace_back([&] {
      for (int k = 0; k < 5; ++k)
        g = tok.encode(text, false);
    });
  for (auto &t : threads)
    t.join();
  for (const auto &g : got)
    EXPECT_EQ(g, expected);
}
