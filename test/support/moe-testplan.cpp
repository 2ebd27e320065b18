//===- moe-testplan.cpp - Writes reference plans for HF configs -----------===//
//
// A test and benchmark helper until moe-compile lowers to plans:
//   moe-testplan CONFIG.json|CHECKPOINT_DIR|IN.plan -o OUT.plan [--dtype=f32|bf16|f16]
//       [--compute=f32|bf16] [--kv-dtype=f32|bf16|f16] [--max-tokens=N]
//       [--max-seq-len=N] [--max-batch=B --kv-page-size=P] [--ranks=N] [--corrupt=KIND]
// --corrupt writes a deliberately broken plan for bad-input tests: identifier,
// version-major, version-minor, buffer-index, weight-index, arena, top-k,
// rope-inv-freq, collective-out (needs --ranks > 1), many-experts, expert-slices,
// truncate; mla-cache, mla-kv-b (an MLA plan: IN.plan written by moe-compile
// from a DeepSeek-V3 checkpoint, which this builder does not lower).
//
//===----------------------------------------------------------------------===//
#include "HFPlans.h"

#include "moert/Error.h"
#include "moert/FileUtil.h"

#include <charconv>
#include <cstdio>

using namespace moetest;

static mp::DType parseDtype(const std::string &flag, const std::string &v) {
  if (v == "f32")
    return mp::DType::F32;
  if (v == "bf16")
    return mp::DType::BF16;
  if (v == "f16")
    return mp::DType::F16;
  moert::fail("{}={}: unknown dtype (expected f32, bf16 or f16)", flag, v);
}

/// The first step of `kind` on rank 0, which the corruption needs.
template <typename T> static T *needOp(mp::PlanT &p, mp::Op kind) {
  if (T *op = firstOp<T>(p, kind))
    return op;
  moert::fail("--corrupt: the plan has no {} step", mp::EnumNameOp(kind));
}

static std::vector<uint8_t> corruptPlan(std::vector<uint8_t> bytes, const std::string &kind) {
  if (kind == "identifier") {
    bytes[4] = 'X';
    return bytes;
  }
  if (kind == "truncate") {
    bytes.resize(bytes.size() / 2);
    return bytes;
  }
  std::unique_ptr<mp::PlanT> p(mp::GetPlan(bytes.data())->UnPack());
  if (kind == "version-major")
    p->version_major += 1;
  else if (kind == "version-minor")
    p->version_minor += 1;
  else if (kind == "buffer-index")
    needOp<mp::LinearT>(*p, mp::Op::Linear)->in = 99;
  else if (kind == "weight-index")
    needOp<mp::LinearT>(*p, mp::Op::Linear)->weight = 1000;
  else if (kind == "arena")
    p->ranks[0]->arena_bytes = 64;
  else if (kind == "top-k") {
    auto *g = needOp<mp::GateT>(*p, mp::Op::Gate);
    g->top_k = g->num_experts + 1;
  } else if (kind == "rope-inv-freq") {
    needOp<mp::RopeT>(*p, mp::Op::Rope)->inv_freq = {1.0f};
  } else if (kind == "collective-out")
    needOp<mp::CollectiveT>(*p, mp::Op::Collective)->out = 99;
  else if (kind == "many-experts") {
    // Every stacked weight claims 2^16 experts: together more expert slices
    // than the reader expands (the plan fuzzer found such a plan took
    // seconds to slice before any other check).
    for (auto &w : p->weights)
      if (w->source && !w->shape.empty())
        w->shape[0] = 1 << 16;
  } else if (kind == "mla-cache") {
    // The latent cache one rope pair narrower than the step's latent row.
    auto *op = needOp<mp::MlaAttentionT>(*p, mp::Op::MlaAttention);
    p->ranks[0]->kv_caches[size_t(op->cache)]->head_dim -= 2;
  } else if (kind == "mla-kv-b") {
    // kv_b pointed at the first 2-D weight of another shape (an embedding).
    auto *op = needOp<mp::MlaAttentionT>(*p, mp::Op::MlaAttention);
    const auto &kvB = p->weights[size_t(op->kv_b)]->shape;
    for (size_t i = 0; i < p->weights.size(); ++i)
      if (p->weights[i]->shape.size() == 2 && p->weights[i]->shape != kvB) {
        op->kv_b = int32_t(i);
        break;
      }
  } else if (kind == "expert-slices") {
    needOp<mp::ExpertsT>(*p, mp::Op::Experts)->expert_slices = 5; // 48 hidden units
  } else if (kind == "tensor-part" || kind == "tensor-part-range") {
    // A tensor-parallel part (plan 3.3) of the first plain matrix: of itself,
    // or rows past the end of its whole.
    size_t whole = 0;
    while (whole < p->weights.size() &&
           (p->weights[whole]->source || p->weights[whole]->shape.size() != 2))
      ++whole;
    if (whole == p->weights.size())
      moert::fail("--corrupt={}: the plan has no plain matrix", kind);
    if (kind == "tensor-part") {
      p->weights[whole]->part_of = int32_t(whole);
    } else {
      auto part = std::make_unique<mp::WeightT>(*p->weights[whole]);
      part->name += " part";
      part->part_of = int32_t(whole);
      part->part_offset = part->shape[0];
      p->weights.push_back(std::move(part));
    }
  } else if (kind == "max-batch")
    p->max_batch = int32_t(p->max_tokens + 1);
  else if (kind == "kv-pages") { // a pool too small for one full-length sequence
    p->kv_page_size = 4;
    p->kv_pages = 1;
  } else if (kind == "kv-page-size")
    p->kv_page_size = 16; // without kv_pages
  else if (kind == "page-table") { // 1-position pages for many sequences
    p->max_tokens = 1 << 16;
    p->max_batch = 1 << 16;
    p->model->max_position_embeddings = p->max_seq_len = 1 << 20;
    p->kv_page_size = 1;
    p->kv_pages = p->max_seq_len;
  } else if (kind == "kv-huge") {
    p->kv_page_size = 16;
    p->kv_pages = int64_t(1) << 40;
  }
  else
    moert::fail("--corrupt={}: unknown kind", kind);
  return packPlan(*p);
}

static int64_t parseInt(const std::string &flag, const std::string &v) {
  int64_t out = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  if (ec != std::errc() || p != v.data() + v.size() || out <= 0)
    moert::fail("{}={}: (expected a positive integer)", flag, v);
  return out;
}

int main(int argc, char **argv) {
  try {
    std::string in, out, corrupt;
    HFPlanOptions o;
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      size_t eq = a.find('=');
      std::string k = a.substr(0, eq), v = eq == std::string::npos ? "" : a.substr(eq + 1);
      if (a == "-o" && i + 1 < argc)
        out = argv[++i];
      else if (k == "--dtype")
        o.dtype = parseDtype(k, v);
      else if (k == "--compute")
        o.computeDtype = parseDtype(k, v);
      else if (k == "--kv-dtype")
        o.kvDtype = parseDtype(k, v);
      else if (k == "--max-tokens")
        o.maxTokens = parseInt(k, v);
      else if (k == "--max-seq-len")
        o.maxSeqLen = parseInt(k, v);
      else if (k == "--max-batch")
        o.maxBatch = int(parseInt(k, v));
      else if (k == "--kv-page-size")
        o.kvPageSize = parseInt(k, v);
      else if (k == "--ranks")
        o.numRanks = int(parseInt(k, v));
      else if (k == "--corrupt")
        corrupt = v;
      else if (a.rfind("-", 0) == 0)
        moert::fail("{}: unknown option", a);
      else
        in = a;
    }
    if (in.empty() || out.empty())
      moert::fail("usage: moe-testplan CONFIG|DIR -o OUT.plan [options]");
    // An existing plan (moe-compile's) is only corrupted.
    std::vector<uint8_t> bytes;
    if (in.size() > 5 && in.compare(in.size() - 5, 5, ".plan") == 0) {
      moert::MappedFile f(in);
      bytes.assign(f.data(), f.data() + f.size());
    } else {
      bytes = buildHFPlan(in, o);
    }
    if (!corrupt.empty())
      bytes = corruptPlan(bytes, corrupt);
    moert::writeFileAtomic(out, std::string_view(reinterpret_cast<const char *>(bytes.data()),
                                                 bytes.size()));
    return 0;
  } catch (const moert::Error &e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
