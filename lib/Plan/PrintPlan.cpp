//===- PrintPlan.cpp - The plan as readable text ---------------------------===//
//
// moe-compile --emit=plan-text: the plan file as the runtime will read it
// (printed from the serialized bytes, not from the compiler's structures), one
// line per weight, buffer and step, for people and for FileCheck tests of the
// lowering. Operands are written b<N> (buffer), w<N> (weight), c<N> (KV
// cache); a buffer operand with a column window is b<N>[first:end).
//
//===----------------------------------------------------------------------===//

#include "moe/Plan/EmitPlan.h"

#include "moert/plan_generated.h"

#include "llvm/ADT/Twine.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/raw_ostream.h"

using namespace mlir;
namespace fb = ::moe::plan;

namespace {

const char *dtypeName(fb::DType t) {
  switch (t) {
  case fb::DType::F32:
    return "f32";
  case fb::DType::BF16:
    return "bf16";
  case fb::DType::F16:
    return "f16";
  case fb::DType::I32:
    return "i32";
  case fb::DType::I64:
    return "i64";
  }
  return "?";
}

const char *streamName(fb::Stream s) {
  switch (s) {
  case fb::Stream::Compute:
    return "compute";
  case fb::Stream::Comm:
    return "comm";
  case fb::Stream::Weights:
    return "weights";
  }
  return "?";
}

template <typename T>
void printList(llvm::raw_ostream &os, const flatbuffers::Vector<T> *v,
               const char *prefix = "") {
  os << "[";
  if (v)
    for (unsigned i = 0; i < v->size(); ++i)
      os << (i ? ", " : "") << prefix << v->Get(i);
  os << "]";
}

// Twine, not "b" + std::to_string(...): GCC 12 warns (-Wrestrict, a false
// positive) on the inlined string concatenation.
std::string buf(int index) {
  return (llvm::Twine("b") + llvm::Twine(index)).str();
}
std::string weight(int index) {
  return index < 0 ? std::string("-")
                   : (llvm::Twine("w") + llvm::Twine(index)).str();
}
std::string cols(int index, int64_t first, int64_t count) {
  return buf(index) + "[" + std::to_string(first) + ":" +
         std::to_string(first + count) + ")";
}

void printOp(llvm::raw_ostream &os, const fb::Step &s) {
  os << fb::EnumNameOp(s.op_type()) << " ";
  switch (s.op_type()) {
  case fb::Op::Embedding: {
    auto *o = s.op_as_Embedding();
    os << weight(o->weight()) << " -> " << buf(o->out()) << " scale "
       << o->scale();
    if (o->vocab_offset())
      os << " vocab from " << o->vocab_offset();
    break;
  }
  case fb::Op::PositionEmbedding: {
    auto *o = s.op_as_PositionEmbedding();
    os << buf(o->inout()) << " += " << weight(o->weight());
    break;
  }
  case fb::Op::Norm: {
    auto *o = s.op_as_Norm();
    os << fb::EnumNameNormKind(o->kind()) << " ";
    if (o->cols())
      os << cols(o->in(), o->col_offset(), o->cols());
    else
      os << buf(o->in());
    os << " -> " << buf(o->out()) << " weight " << weight(o->weight())
       << " bias " << weight(o->bias()) << " group " << o->dim();
    break;
  }
  case fb::Op::Linear: {
    auto *o = s.op_as_Linear();
    os << buf(o->in()) << " -> " << buf(o->out());
    if (o->out_col_offset())
      os << " at column " << o->out_col_offset();
    os << " weight " << weight(o->weight()) << " bias " << weight(o->bias());
    if (o->weight_transposed())
      os << " transposed";
    break;
  }
  case fb::Op::Rope: {
    auto *o = s.op_as_Rope();
    // Head 0's rotated dims through the last head's.
    os << cols(o->buf(), o->col_offset(),
               int64_t(o->num_heads() - 1) * o->head_dim() + o->rotary_dim())
       << " heads " << o->num_heads() << " x " << o->head_dim() << " rotary "
       << o->rotary_dim() << " " << fb::EnumNameRopeStyle(o->style());
    if (o->inv_freq())
      os << " inv_freq[" << o->inv_freq()->size() << "]";
    if (o->attention_factor() != 1.0f)
      os << " attention_factor " << o->attention_factor();
    break;
  }
  case fb::Op::Attention: {
    auto *o = s.op_as_Attention();
    int64_t q = int64_t(o->num_heads()) * o->head_dim(),
            kv = int64_t(o->num_kv_heads()) * o->head_dim(),
            v = int64_t(o->num_kv_heads()) *
                (o->v_head_dim() ? o->v_head_dim() : o->head_dim());
    os << "q " << cols(o->qkv(), o->q_col(), q) << " k "
       << cols(o->qkv(), o->k_col(), kv) << " v "
       << cols(o->qkv(), o->v_col(), v) << " -> " << buf(o->out()) << " cache c"
       << o->cache() << " heads " << o->num_heads() << "/" << o->num_kv_heads();
    if (o->sliding_window())
      os << " window " << o->sliding_window();
    if (o->sinks() >= 0)
      os << " sinks " << weight(o->sinks());
    if (o->v_head_dim())
      os << " v_head_dim " << o->v_head_dim();
    break;
  }
  case fb::Op::MlaAttention: {
    auto *o = s.op_as_MlaAttention();
    os << "q " << cols(o->q(), o->q_col(),
                       int64_t(o->num_heads()) * (o->nope_dim() + o->rope_dim()))
       << " latent " << cols(o->latent(), o->latent_col(), o->kv_lora_rank())
       << " k_pe " << cols(o->k_pe(), o->k_pe_col(), o->rope_dim()) << " kv_b "
       << weight(o->kv_b()) << " -> " << buf(o->out()) << " cache c"
       << o->cache() << " heads " << o->num_heads() << " nope "
       << o->nope_dim() << " rope " << o->rope_dim() << " v_head_dim "
       << o->v_head_dim();
    break;
  }
  case fb::Op::GatherColumns: {
    auto *o = s.op_as_GatherColumns();
    if (o->inputs() && o->input_cols() && o->input_widths())
      for (unsigned i = 0; i < o->inputs()->size(); ++i)
        os << (i ? ", " : "")
           << cols(o->inputs()->Get(i), o->input_cols()->Get(i),
                   o->input_widths()->Get(i));
    os << " -> " << buf(o->out()) << " columns "
       << (o->indices() ? o->indices()->size() : 0);
    break;
  }
  case fb::Op::Activation: {
    auto *o = s.op_as_Activation();
    os << fb::EnumNameActKind(o->kind()) << (o->gated() ? " gated " : " ")
       << buf(o->in()) << " -> " << buf(o->out()) << " width " << o->n();
    break;
  }
  case fb::Op::Add: {
    auto *o = s.op_as_Add();
    os << buf(o->a()) << " + " << buf(o->b()) << " -> " << buf(o->out());
    break;
  }
  case fb::Op::Gate: {
    auto *o = s.op_as_Gate();
    os << buf(o->logits()) << " -> " << buf(o->slot_expert()) << ", "
       << buf(o->slot_weight()) << ", " << buf(o->expert_offsets()) << ", "
       << buf(o->sorted_slots()) << " top " << o->top_k() << " of "
       << o->num_experts() << " " << fb::EnumNameScoreFn(o->score());
    if (o->num_groups() != 1)
      os << " groups " << o->topk_groups() << " of " << o->num_groups();
    if (o->selection_bias() >= 0)
      os << " selection_bias " << weight(o->selection_bias());
    if (o->routed_scaling_factor() != 1.0f)
      os << " scaled " << o->routed_scaling_factor();
    break;
  }
  case fb::Op::Experts: {
    auto *o = s.op_as_Experts();
    os << buf(o->in()) << " via " << buf(o->sorted_slots()) << ", "
       << buf(o->expert_offsets()) << " -> " << buf(o->slot_out())
       << " gate " << weight(o->gate()) << " up " << weight(o->up())
       << " down " << weight(o->down());
    if (o->up_bias() >= 0 || o->down_bias() >= 0)
      os << " bias " << weight(o->up_bias()) << " " << weight(o->down_bias());
    if (o->gate_bias() >= 0)
      os << " gate_bias " << weight(o->gate_bias());
    if (o->act() == fb::ActKind::SwigluOai)
      os << " swiglu_oai limit " << o->swiglu_limit() << " alpha "
         << o->swiglu_alpha();
    os << " experts [";
    if (o->experts())
      for (unsigned i = 0; i < o->experts()->size(); ++i) {
        auto *e = o->experts()->Get(i);
        os << (i ? ", " : "") << e->expert();
        if (e->num_replicas() > 1)
          os << " (copy " << e->replica() << "/" << e->num_replicas() << ")";
        if (o->expert_slices() > 1)
          os << " (part " << e->slice() << "/" << o->expert_slices() << ")";
      }
    os << "]";
    if (o->on_demand())
      os << " on-demand";
    if (o->received())
      os << " received";
    break;
  }
  case fb::Op::AllToAllV: {
    auto *o = s.op_as_AllToAllV();
    bool dispatch = o->kind() == fb::ExchangeKind::Dispatch;
    os << fb::EnumNameExchangeKind(o->kind()) << " " << buf(o->in());
    if (dispatch)
      os << " via " << buf(o->sorted_slots()) << ", " << buf(o->expert_offsets());
    os << " -> " << buf(o->out());
    if (dispatch)
      os << ", " << buf(o->recv_sorted()) << ", " << buf(o->recv_offsets());
    os << " record " << buf(o->send_slots()) << ", " << buf(o->counts())
       << " top " << o->top_k();
    if (o->tensor_parallel() > 1)
      os << " members " << o->tensor_parallel();
    if (o->ranks_per_node() > 0)
      os << " hierarchical " << o->ranks_per_node() << " per node relay "
         << buf(o->relay());
    if (dispatch && o->targets() && o->target_offsets()) {
      os << " targets [";
      auto *t = o->targets();
      auto *to = o->target_offsets();
      for (unsigned e = 0; e + 1 < to->size(); ++e) {
        os << (e ? ", " : "");
        for (int32_t k = (*to)[e]; k < (*to)[e + 1] && k >= 0 && unsigned(k) < t->size(); ++k)
          os << (k > (*to)[e] ? "|" : "") << (*t)[unsigned(k)];
      }
      os << "]";
      if (o->slices() > 1)
        os << " parts " << o->slices();
    }
    break;
  }
  case fb::Op::Combine: {
    auto *o = s.op_as_Combine();
    os << buf(o->slot_out()) << " * " << buf(o->slot_weight()) << " -> "
       << buf(o->out()) << " top " << o->top_k();
    break;
  }
  case fb::Op::SigmoidGate: {
    auto *o = s.op_as_SigmoidGate();
    os << buf(o->inout()) << " *= sigmoid(" << buf(o->gate_logit()) << ")";
    break;
  }
  case fb::Op::ResidualMix: {
    auto *o = s.op_as_ResidualMix();
    os << buf(o->moe()) << ", " << buf(o->mlp()) << " by "
       << buf(o->coef_logits()) << " -> " << buf(o->out());
    break;
  }
  case fb::Op::Logits: {
    auto *o = s.op_as_Logits();
    os << buf(o->in()) << " -> " << buf(o->out()) << " weight "
       << weight(o->weight()) << " bias " << weight(o->bias());
    if (o->group()) {
      os << " vocab from " << o->vocab_offset() << " gathered over ";
      printList(os, o->group());
    }
    break;
  }
  case fb::Op::Collective: {
    auto *o = s.op_as_Collective();
    os << fb::EnumNameCollectiveKind(o->kind()) << " " << buf(o->buf())
       << " group ";
    printList(os, o->group());
    break;
  }
  case fb::Op::Prefetch:
    printList(os, s.op_as_Prefetch()->weights(), "w");
    break;
  case fb::Op::Evict:
    printList(os, s.op_as_Evict()->weights(), "w");
    break;
  default:
    os << "?";
    break;
  }
}

} // namespace

LogicalResult mlir::moe::printPlanText(llvm::ArrayRef<uint8_t> bytes,
                                       llvm::raw_ostream &os) {
  flatbuffers::Verifier verifier(bytes.data(), bytes.size());
  if (!fb::VerifyPlanBuffer(verifier))
    return failure();
  const fb::Plan *p = fb::GetPlan(bytes.data());
  os << "plan " << p->version_major() << "." << p->version_minor() << " by "
     << (p->producer() ? p->producer()->str() : "?") << "\n";
  const fb::ModelInfo *m = p->model();
  os << "model " << (m->name() ? m->name()->str() : "?") << " ("
     << (m->architecture() ? m->architecture()->str() : "?") << "): "
     << m->num_layers() << " layers, vocab " << m->vocab_size() << ", hidden "
     << m->hidden_size() << "\n";
  os << "target " << fb::EnumNameTarget(p->target()) << " "
     << dtypeName(p->compute_dtype()) << ", " << p->num_ranks() << " ranks ("
     << p->gpus_per_node() << " per node), max_tokens " << p->max_tokens()
     << ", max_seq_len " << p->max_seq_len();
  if (p->max_batch() != 1 || p->kv_pages() != 0)
    os << ", max_batch " << p->max_batch() << ", kv_pages " << p->kv_pages()
       << " x " << p->kv_page_size();
  if (p->data_parallel() > 1)
    os << ", data_parallel " << p->data_parallel();
  os << "\n";
  os << "weights:\n";
  if (p->weights())
    for (unsigned i = 0; i < p->weights()->size(); ++i) {
      const fb::Weight *w = p->weights()->Get(i);
      os << "  w" << i << " " << w->name()->str() << " ";
      printList(os, w->shape());
      os << " " << dtypeName(w->dtype());
      if (w->stored_dtype() != w->dtype())
        os << " (stored " << dtypeName(w->stored_dtype()) << ")";
      if (w->ranks()) {
        os << " ranks ";
        printList(os, w->ranks());
      }
      if (w->streamed())
        os << " streamed";
      if (const fb::WeightSource *src = w->source()) {
        if (src->tensor()->str() != w->name()->str())
          os << " from " << src->tensor()->str();
        if (src->offset() != 0 || src->stride() != 1)
          os << " rows " << src->offset() << "+" << src->stride() << "n";
        if (src->transposed())
          os << " transposed";
      }
      if (w->part_of() >= 0)
        os << " part of w" << w->part_of() << " "
           << (w->part_axis() == 0 ? "rows" : "columns") << " from "
           << w->part_offset();
      os << "\n";
    }
  if (p->placement())
    for (const fb::ExpertPlacement *pl : *p->placement()) {
      if (pl->slices() > 1)
        os << "placement layer " << pl->layer() << ": " << pl->slices()
           << " parts per expert, parts (expert-major) on ranks ";
      else
        os << "placement layer " << pl->layer() << ": experts on ranks ";
      printList(os, pl->expert_ranks());
      if (pl->replicas() && pl->replicas()->size()) {
        os << ", replicas (expert, rank) ";
        printList(os, pl->replicas());
      }
      os << "\n";
    }
  if (p->ranks())
    for (const fb::RankProgram *r : *p->ranks()) {
      os << "rank " << r->rank() << " (node " << r->node() << ", local "
         << r->local_rank() << "): arena " << r->arena_bytes()
         << " bytes, resident weights " << r->weight_bytes() << " bytes\n";
      if (r->buffers())
        for (unsigned i = 0; i < r->buffers()->size(); ++i) {
          const fb::Buffer *b = r->buffers()->Get(i);
          os << "  b" << i << " " << (b->name() ? b->name()->str() : "") << " "
             << dtypeName(b->dtype()) << " [";
          if (b->rows_per_token() > 1)
            os << b->rows_per_token();
          if (b->rows_per_token())
            os << "T";
          if (b->rows_per_token() && b->fixed_rows())
            os << "+";
          if (b->fixed_rows() || !b->rows_per_token())
            os << b->fixed_rows();
          os << " x " << b->row_elems() << "] at " << b->offset() << "\n";
        }
      if (r->kv_caches())
        for (unsigned i = 0; i < r->kv_caches()->size(); ++i) {
          const fb::KVCache *c = r->kv_caches()->Get(i);
          os << "  c" << i << " layer " << c->layer() << ": ";
          if (c->kv_lora_rank())
            os << "latent " << c->kv_lora_rank() << " + rope "
               << c->head_dim() - c->kv_lora_rank();
          else
            os << c->num_kv_heads() << " kv heads x " << c->head_dim();
          if (c->v_head_dim())
            os << " (v " << c->v_head_dim() << ")";
          os << " "
             << dtypeName(c->dtype()) << "\n";
        }
      if (r->steps())
        for (unsigned i = 0; i < r->steps()->size(); ++i) {
          const fb::Step *s = r->steps()->Get(i);
          os << "  " << llvm::format_decimal(i, 3) << " "
             << llvm::left_justify(streamName(s->stream()), 7) << " "
             << (s->name() ? s->name()->str() : "") << ": ";
          printOp(os, *s);
          if (s->waits() && s->waits()->size()) {
            os << " waits ";
            printList(os, s->waits());
          }
          os << "\n";
        }
    }
  return success();
}

LogicalResult mlir::moe::emitPlanText(ModuleOp module,
                                      const CompileOptions &options,
                                      llvm::raw_ostream &os) {
  std::string bytes;
  llvm::raw_string_ostream plan(bytes);
  if (failed(emitPlan(module, options, plan)))
    return failure();
  plan.flush();
  if (failed(printPlanText(
          llvm::ArrayRef<uint8_t>(
              reinterpret_cast<const uint8_t *>(bytes.data()), bytes.size()),
          os)))
    return module.emitError("the emitted plan does not verify");
  return success();
}
