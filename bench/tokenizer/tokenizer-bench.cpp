//===- tokenizer-bench.cpp - encode throughput of moert::Tokenizer --------===//
//
//   tokenizer-bench TOKENIZER.json CORPUS.txt [--repeat=N] [--chunk=BYTES]
//
// Encodes the corpus in chunks of about --chunk bytes (cut at line ends), one
// thread, --repeat timed passes after one warm-up pass; prints one JSON line:
// {"impl", "bytes", "tokens", "fnv1a" (hash of all ids), "best_s",
//  "median_s", "mb_per_s" (from the median)}.
//
//===----------------------------------------------------------------------===//

#include <moert/Tokenizer.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

int main(int argc, char **argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: tokenizer-bench TOKENIZER.json CORPUS.txt "
                         "[--repeat=N] [--chunk=BYTES]\n");
    return 1;
  }
  int repeat = 5;
  size_t chunkBytes = 64 * 1024;
  for (int i = 3; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--repeat=", 0) == 0)
      repeat = std::max(1, std::stoi(a.substr(9)));
    else if (a.rfind("--chunk=", 0) == 0)
      chunkBytes = std::stoul(a.substr(8));
  }
  try {
    moert::Tokenizer tok = moert::Tokenizer::fromFile(argv[1]);
    std::ifstream in(argv[2], std::ios::binary);
    if (!in) {
      std::fprintf(stderr, "error: %s: cannot open\n", argv[2]);
      return 1;
    }
    std::stringstream ss;
    ss << in.rdbuf();
    std::string corpus = ss.str();
    std::vector<std::string_view> chunks;
    for (size_t pos = 0; pos < corpus.size();) {
      size_t end = std::min(corpus.size(), pos + chunkBytes);
      size_t nl = corpus.find('\n', end);
      end = nl == std::string::npos ? corpus.size() : nl + 1;
      chunks.push_back(std::string_view(corpus).substr(pos, end - pos));
      pos = end;
    }
    uint64_t hash = 1469598103934665603ull, tokens = 0;
    std::vector<double> times;
    for (int pass = 0; pass <= repeat; ++pass) {
      auto t0 = std::chrono::steady_clock::now();
      for (std::string_view c : chunks) {
        std::vector<uint32_t> ids = tok.encode(c, false);
        if (pass == 0) {
          tokens += ids.size();
          for (uint32_t id : ids)
            hash = (hash ^ id) * 1099511628211ull;
        }
      }
      double s = std::chrono::duration<double>(
                     std::chrono::steady_clock::now() - t0)
                     .count();
      if (pass > 0) // pass 0 warms the word cache, as HF's is warm too
        times.push_back(s);
    }
    std::sort(times.begin(), times.end());
    double median = times[times.size() / 2];
    std::printf("{\"impl\": \"moert\", \"bytes\": %zu, \"tokens\": %llu, "
                "\"fnv1a\": \"%016llx\", \"best_s\": %.4f, \"median_s\": %.4f, "
                "\"mb_per_s\": %.2f}\n",
                corpus.size(), static_cast<unsigned long long>(tokens),
                static_cast<unsigned long long>(hash), times.front(), median,
                corpus.size() / median / 1e6);
  } catch (const moert::TokenizerError &e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
