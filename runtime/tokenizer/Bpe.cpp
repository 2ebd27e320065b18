//===- Bpe.cpp - the BPE model ----------------------------------------------===//
//
// Merging follows HF's Word::merge_all: a min-heap of candidate pairs ordered
// by (merge rank, position) over a doubly linked list of symbols, with stale
// heap entries skipped when popped. Results are cached per word.
//
//===----------------------------------------------------------------------===//

#include "Components.h"
#include "Unicode.h"

#include <algorithm>
#include <cstdio>
#include <queue>

namespace moert::tok {

namespace {
std::optional<std::string> optionalString(const Json &j, const char *key,
                                          const std::string &where) {
  if (!j.contains(key) || j[key].is_null())
    return std::nullopt;
  return getString(j, key, where);
}
} // namespace

BpeModel::BpeModel(const Json &j, const std::string &where) {
  if (j.contains("type") && typeOf(j, where) != "BPE")
    fail(where, "unsupported model type '" + typeOf(j, where) + "'",
         "BPE");
  if (j.contains("dropout") && !j["dropout"].is_null()) {
    const Json &d = j["dropout"];
    if (!d.is_number() || d.get<double>() < 0.0 || d.get<double>() > 1.0)
      fail(where + ".dropout", "invalid dropout", "null or a number in [0, 1]");
    if (d.get<double>() != 0.0)
      fail(where + ".dropout", "BPE dropout is random (unsupported here)",
           "null or 0");
  }
  unkToken = optionalString(j, "unk_token", where);
  continuingSubwordPrefix =
      optionalString(j, "continuing_subword_prefix", where);
  endOfWordSuffix = optionalString(j, "end_of_word_suffix", where);
  fuseUnk = getBool(j, "fuse_unk", where, false);
  byteFallback = getBool(j, "byte_fallback", where, false);
  ignoreMerges = getBool(j, "ignore_merges", where, false);

  const Json &v = member(j, "vocab", where);
  if (!v.is_object())
    fail(where + ".vocab", "not an object", "a {token: id} object");
  vocab.reserve(v.size());
  vocabR.reserve(v.size());
  for (auto it = v.begin(); it != v.end(); ++it) {
    if (!it.value().is_number_unsigned() ||
        it.value().get<uint64_t>() > UINT32_MAX)
      fail(where + ".vocab[\"" + it.key() + "\"]", "not a valid id",
           "an integer in [0, 2^32)");
    auto id = it.value().get<uint32_t>();
    vocab[it.key()] = id;
    vocabR[id] = it.key();
  }

  // Merges: ["a b", ...] (legacy) or [["a", "b"], ...].
  const Json &m = member(j, "merges", where);
  if (!m.is_array())
    fail(where + ".merges", "not a list", "a list of merges");
  size_t prefixLen = continuingSubwordPrefix ? continuingSubwordPrefix->size()
                                             : 0;
  merges.reserve(m.size());
  uint32_t rank = 0;
  for (size_t i = 0; i < m.size(); ++i) {
    const Json &e = m[i];
    std::string at = where + ".merges[" + std::to_string(i) + "]";
    std::string a, b;
    if (e.is_string()) {
      const auto &line = e.get_ref<const std::string &>();
      if (line.rfind("#version", 0) == 0)
        continue; // merges.txt header, not counted as a rank
      size_t sp = line.find(' ');
      if (sp == std::string::npos || line.find(' ', sp + 1) != std::string::npos)
        fail(at, "'" + line + "' is not two tokens", "\"left right\"");
      a = line.substr(0, sp);
      b = line.substr(sp + 1);
    } else if (e.is_array() && e.size() == 2 && e[0].is_string() &&
               e[1].is_string()) {
      a = e[0].get<std::string>();
      b = e[1].get<std::string>();
    } else {
      fail(at, "malformed merge", "\"left right\" or [\"left\", \"right\"]");
    }
    auto ia = vocab.find(a), ib = vocab.find(b);
    if (ia == vocab.end() || ib == vocab.end())
      fail(at, "token '" + (ia == vocab.end() ? a : b) + "' is not in the vocab",
           "merges of vocabulary tokens");
    if (b.size() < prefixLen)
      fail(at, "token '" + b + "' is shorter than continuing_subword_prefix",
           "prefixed tokens");
    std::string merged = a + b.substr(prefixLen);
    auto in = vocab.find(merged);
    if (in == vocab.end())
      fail(at, "merged token '" + merged + "' is not in the vocab",
           "merges whose result is a vocabulary token");
    // Later duplicates win, as HF collects them into a map.
    merges[(static_cast<uint64_t>(ia->second) << 32) | ib->second] =
        MergeInfo{rank, in->second};
    ++rank;
  }

  for (int byte = 0; byte < 256; ++byte) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", byte);
    auto it = vocab.find(std::string_view(name));
    byteIds[byte] = it == vocab.end() ? -1 : it->second;
  }
  if (unkToken && !vocab.count(*unkToken))
    fail(where + ".unk_token", "'" + *unkToken + "' is not in the vocab",
         "a vocabulary token");
}

std::optional<uint32_t> BpeModel::tokenToId(std::string_view token) const {
  auto it = vocab.find(token);
  if (it == vocab.end())
    return std::nullopt;
  return it->second;
}

const std::string *BpeModel::idToToken(uint32_t id) const {
  auto it = vocabR.find(id);
  return it == vocabR.end() ? nullptr : &it->second;
}

void BpeModel::tokenize(std::string_view word,
                        std::vector<uint32_t> &out) const {
  if (word.empty())
    return;
  if (ignoreMerges) {
    auto it = vocab.find(word);
    if (it != vocab.end()) {
      out.push_back(it->second);
      return;
    }
  }
  bool cacheable = word.size() < kCacheMaxWordLen;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cacheMutex);
    auto it = cache.find(word);
    if (it != cache.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  size_t first = out.size();
  mergeWord(word, out);
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cacheMutex);
    // A full cache starts over rather than freezing on early words.
    if (cache.size() >= kCacheCapacity)
      cache.clear();
    cache.emplace(std::string(word),
                  std::vector<uint32_t>(out.begin() + first, out.end()));
  }
}

void BpeModel::mergeWord(std::string_view w, std::vector<uint32_t> &out) const {
  struct Symbol {
    uint32_t id;
    int32_t prev, next;
    bool alive;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(w.size());
  auto add = [&](uint32_t id) {
    auto n = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, n - 1, -1, true});
    if (n > 0)
      symbols[n - 1].next = n;
  };

  // Initial symbols: one per character (with prefix/suffix), byte fallback
  // or unk for characters outside the vocab.
  std::optional<uint32_t> unk; // pending unk id (fused when fuse_unk)
  std::string scratch;
  for (size_t i = 0; i < w.size();) {
    size_t start = i;
    i += sequenceLength(static_cast<unsigned char>(w[i]));
    std::string_view ch = w.substr(start, i - start);
    std::string_view key = ch;
    bool isFirst = start == 0, isLast = i == w.size();
    if ((!isFirst && continuingSubwordPrefix) || (isLast && endOfWordSuffix)) {
      scratch.clear();
      if (!isFirst && continuingSubwordPrefix)
        scratch += *continuingSubwordPrefix;
      scratch += ch;
      if (isLast && endOfWordSuffix)
        scratch += *endOfWordSuffix;
      key = scratch;
    }
    auto it = vocab.find(key);
    if (it != vocab.end()) {
      if (unk) {
        add(*unk);
        unk.reset();
      }
      add(it->second);
      continue;
    }
    if (byteFallback) {
      bool all = std::all_of(key.begin(), key.end(), [&](char c) {
        return byteIds[static_cast<unsigned char>(c)] >= 0;
      });
      if (all) {
        // Like HF, a pending unk is not flushed before the byte tokens.
        for (char c : key)
          add(static_cast<uint32_t>(byteIds[static_cast<unsigned char>(c)]));
        continue;
      }
    }
    if (unkToken) {
      uint32_t unkId = vocab.find(*unkToken)->second;
      if (unk && !fuseUnk)
        add(*unk);
      unk = unkId;
    }
    // Without unk_token an unknown character is dropped, as in HF.
  }
  if (unk)
    add(*unk);

  struct Candidate {
    uint32_t rank;
    int32_t pos;
    uint32_t newId;
    bool operator>(const Candidate &o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::vector<Candidate> storage;
  storage.reserve(symbols.size());
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue(
      std::greater<>(), std::move(storage));
  for (size_t k = 0; k + 1 < symbols.size(); ++k)
    if (const MergeInfo *m = findMerge(symbols[k].id, symbols[k + 1].id))
      queue.push({m->rank, static_cast<int32_t>(k), m->newId});

  while (!queue.empty()) {
    Candidate top = queue.top();
    queue.pop();
    Symbol &cur = symbols[top.pos];
    if (!cur.alive || cur.next < 0)
      continue;
    Symbol &right = symbols[cur.next];
    const MergeInfo *m = findMerge(cur.id, right.id);
    if (!m || m->newId != top.newId)
      continue; // stale entry
    cur.id = top.newId;
    right.alive = false;
    cur.next = right.next;
    if (right.next >= 0)
      symbols[right.next].prev = top.pos;
    if (cur.prev >= 0)
      if (const MergeInfo *pm = findMerge(symbols[cur.prev].id, cur.id))
        queue.push({pm->rank, cur.prev, pm->newId});
    if (cur.next >= 0)
      if (const MergeInfo *nm = findMerge(cur.id, symbols[cur.next].id))
        queue.push({nm->rank, top.pos, nm->newId});
  }
  for (int32_t k = symbols.empty() ? -1 : 0; k >= 0; k = symbols[k].next)
    out.push_back(symbols[k].id);
}

} // namespace moert::tok
