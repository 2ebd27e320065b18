//===- ToolSupport.cpp - What moe-run and moe-serve share -----------------===//
#include "ToolSupport.h"

#include "moert/FileUtil.h"

#include <nlohmann/json.hpp>

using namespace moert;
using json = nlohmann::json;

namespace moetool {

std::string readFile(const std::string &path) {
  if (!isRegularFile(path))
    fail("{}: not a readable file", path);
  MappedFile f(path);
  return std::string(reinterpret_cast<const char *>(f.data()), f.size());
}

const std::string &Flag::value() const {
  if (!hasVal || val.empty())
    fail("{}: missing value (expected {}=VALUE)", key, key);
  return val;
}

bool Flag::set() const {
  if (hasVal)
    fail("{}: takes no value", arg);
  return true;
}

int64_t Flag::count(int64_t lo, int64_t hi) const {
  int64_t n = number<int64_t>();
  if (n < lo || n > hi)
    fail("{}={}: out of range (expected {}..{})", key, n, lo, hi);
  return n;
}

void forEachFlag(int argc, char **argv, const char *tool, std::string &plan,
                 const std::function<bool(const Flag &)> &onFlag) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.size() < 2 || a.compare(0, 2, "--") != 0) {
      if (!plan.empty())
        fail("{}: unexpected argument (expected one PLAN file)", a);
      plan = a;
      continue;
    }
    Flag f;
    size_t eq = a.find('=');
    f.key = a.substr(0, eq);
    f.hasVal = eq != std::string::npos;
    f.val = f.hasVal ? a.substr(eq + 1) : "";
    f.arg = std::move(a);
    if (!onFlag(f))
      fail("{}: unknown option (expected one of the options in {} --help)", f.key, tool);
  }
}

std::string checkpointDir(const std::string &weights, const PlanFile &plan) {
  std::string dir = weights.empty() && plan.plan().checkpoint()
                        ? plan.plan().checkpoint()->str()
                        : weights;
  if (!dir.empty() && dir.size() > 12 && dir.ends_with(".safetensors"))
    dir = dir.substr(0, dir.find_last_of('/') == std::string::npos ? 0
                                                                     : dir.find_last_of('/'));
  return dir;
}

std::unique_ptr<WeightStore> loadWeights(const PlanFile &plan, const std::string &weights,
                                         bool random, uint64_t seed, const std::vector<int> &ranks,
                                         Backend &backend, const ProgressFn &progress) {
  if (random)
    return WeightStore::random(plan, seed, ranks, backend, progress);
  std::string dir = weights;
  if (dir.empty()) {
    const auto *ckpt = plan.plan().checkpoint();
    if (!ckpt || ckpt->size() == 0)
      fail("{}: the plan names no checkpoint (expected --weights=DIR or --random-weights)",
           plan.path());
    dir = ckpt->str();
  }
  return WeightStore::fromCheckpoint(plan, std::make_shared<Checkpoint>(dir), ranks, backend,
                                     progress);
}

std::unique_ptr<Tokenizer> loadTokenizer(const std::string &tokenizerFile,
                                         const std::string &weights, const PlanFile &plan,
                                         const char *what) {
  std::string path = tokenizerFile, config;
  if (path.empty()) {
    std::string dir = checkpointDir(weights, plan);
    if (dir.empty())
      fail("{}: the plan names no checkpoint to take tokenizer.json from (expected "
           "--tokenizer=FILE or --weights=DIR)",
           what);
    path = dir + "/tokenizer.json";
    if (!isRegularFile(path))
      fail("{}: no tokenizer.json (expected --tokenizer=FILE)", dir);
  }
  std::string dir = path.find('/') == std::string::npos ? "." : path.substr(0, path.rfind('/'));
  if (isRegularFile(dir + "/tokenizer_config.json"))
    config = dir + "/tokenizer_config.json";
  std::unique_ptr<Tokenizer> tokenizer;
  try {
    tokenizer = std::make_unique<Tokenizer>(Tokenizer::fromFile(path, config));
  } catch (const std::exception &e) {
    fail("{}", e.what());
  }
  // A tokenizer of another model encodes text to ids the model has no rows
  // for: say so here, naming the tokenizer, not later as a bad token id.
  if (tokenizer->vocabSize() > size_t(plan.vocabSize()))
    fail("{}: {} has {} tokens, more than the model's vocab_size {} (expected the tokenizer of "
         "the model the plan was compiled from)",
         tokenizerFile.empty() ? what : "--tokenizer", path, tokenizer->vocabSize(),
         plan.vocabSize());
  return tokenizer;
}

std::vector<int64_t> generationEosIds(const std::string &weights, const PlanFile &plan) {
  std::string dir = checkpointDir(weights, plan);
  std::string path = dir + "/generation_config.json";
  if (dir.empty() || !isRegularFile(path))
    return {};
  json j;
  try {
    j = json::parse(readFile(path));
  } catch (const json::exception &e) {
    fail("{}: not JSON ({})", path, e.what());
  }
  std::vector<int64_t> ids;
  auto add = [&](const json &v) {
    if (!v.is_number_integer() || v.get<int64_t>() < 0)
      fail("{}: eos_token_id: {} (expected a token id or a list of them)", path, v.dump());
    ids.push_back(v.get<int64_t>());
  };
  if (j.is_object() && j.contains("eos_token_id") && !j["eos_token_id"].is_null()) {
    const json &e = j["eos_token_id"];
    if (e.is_array())
      for (const json &v : e)
        add(v);
    else
      add(e);
  }
  return ids;
}

std::optional<std::string> decodeText(const Tokenizer &tok, std::span<const int64_t> ids) {
  std::vector<uint32_t> u(ids.begin(), ids.end());
  try {
    return tok.decode(u, /*skipSpecial=*/true);
  } catch (const std::exception &) {
    return std::nullopt;
  }
}

std::function<bool(std::span<const int64_t>)> stopStringCheck(const Tokenizer *tok,
                                                               std::vector<std::string> stops) {
  return [tok, stops = std::move(stops)](std::span<const int64_t> out) {
    std::optional<std::string> t = decodeText(*tok, out);
    if (!t)
      return false;
    for (const std::string &s : stops)
      if (t->find(s) != std::string::npos)
        return true;
    return false;
  };
}

} // namespace moetool
