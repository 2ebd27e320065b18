//===- ModelBuilder.cpp - decoder config -> moe IR ------------------------===//

#include "ModelBuilder.h"
#include "JsonReader.h"

#include "moe/Plan/Program.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/Verifier.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/Support/FormatVariadic.h"

using namespace mlir;
using namespace mlir::moe;
using namespace mlir::moe::detail;

namespace {

std::string shapeString(ArrayRef<int64_t> shape) {
  std::string s;
  llvm::raw_string_ostream os(s);
  os << "[";
  llvm::interleaveComma(shape, os);
  os << "]";
  return s;
}

class Emitter {
public:
  Emitter(MLIRContext &context, const DecoderConfig &cfg, const NameFn &names,
          const ParamSource &source)
      : ctx(context), cfg(cfg), names(names), source(source),
        b(&context), f32(b.getF32Type()) {}

  llvm::Expected<OwningOpRef<ModuleOp>> run();

private:
  // --- parameters --------------------------------------------------------
  Value weight(StringRef role, ArrayRef<int64_t> shape, InitKind init,
               int64_t expert = -1);
  Value matrix(StringRef role, int64_t rows, int64_t cols, int64_t expert = -1) {
    return weight(role, {rows, cols}, InitKind::Normal, expert);
  }
  /// The experts' weights of one role stacked as [E, slice...]: the
  /// per-expert tensors of the role's pattern, or `fused` (named `name`)
  /// when the checkpoint holds the role in a fused tensor.
  Value stacked(StringRef role, ArrayRef<int64_t> slice, InitKind init,
                int64_t numExperts, SourceAttr fused = {},
                StringRef fusedName = {}, QuantAttr fusedQuant = {});
  /// The fused sources of gate/up/down when the checkpoint stores the
  /// layer's experts as 3-D tensors instead of per-expert ones.
  /// With expert biases (cfg.expertBias), the fused biases too:
  /// `gate_up_proj_bias` [E, 2I] laid out like gate_up_proj's gate/up
  /// columns (rows), `down_proj_bias` [E, D].
  struct FusedExperts {
    SourceAttr gate, up, down;
    SourceAttr gateBias, upBias, downBias;
    /// MXFP4 experts (gpt-oss as published): the scales of gate/up and down.
    QuantAttr gateUpQuant, downQuant;
  };
  std::optional<FusedExperts> fusedExperts(int64_t numExperts, int64_t inter,
                                           int64_t hidden);
  /// gpt-oss's MXFP4 experts: `gate_up_proj_blocks` [E, 2I, H/32, 16] and
  /// `down_proj_blocks` [E, H, I/32, 16] with their `_scales`.
  std::optional<FusedExperts> mxfp4Experts(StringRef gateUp, StringRef down,
                                           int64_t numExperts, int64_t inter,
                                           int64_t hidden);
  /// Checks one MXFP4 blocks/scales pair for an [E, N, K] matrix; false
  /// after reporting.
  bool checkMxfp4(StringRef blocks, ArrayRef<int64_t> shape);
  /// Sets `f`'s biases: `gate_up_proj_bias` [E, 2I] laid out like
  /// gate_up_proj's gate/up (interleaved when f.gate's stride is 2) and
  /// `down_proj_bias` [E, D]; false after reporting.
  bool fusedBiases(FusedExperts &f, StringRef gateUp, StringRef down,
                   int64_t numExperts, int64_t inter, int64_t hidden);
  ParamOp declare(StringRef name, RankedTensorType type, InitKind init,
                  SourceAttr src = {}, QuantAttr quant = {});
  /// The element type of checkpoint tensor `name`, checked against `shape`;
  /// for an FP8 matrix f32 (its dequantized values), its scales checked and
  /// `*fp8` set.
  Type elementTypeFor(StringRef name, ArrayRef<int64_t> shape,
                      bool *fp8 = nullptr);
  /// Checks FP8 matrix `name`'s scale tensor; false after reporting.
  bool checkScales(StringRef name, const TensorInfo &info,
                   ArrayRef<int64_t> shape);
  Type dtypeOf(StringRef name, const TensorInfo &info);
  void checkUnusedTensors();
  /// The FP8 block quantization of a matrix named `name` (or pattern).
  QuantAttr fp8Quant(StringRef name) {
    return QuantAttr::get(&ctx, WeightFormat::FP8E4M3Block,
                          name.str() + "_scale_inv",
                          {source.blockRows, source.blockCols});
  }

  // --- ops ----------------------------------------------------------------
  RankedTensorType act(int64_t width) {
    return RankedTensorType::get({ShapedType::kDynamic, width}, f32);
  }
  Location at(StringRef what) {
    std::string name =
        layer >= 0 ? llvm::formatv("layers.{0}.{1}", layer, what).str()
                   : what.str();
    return NameLoc::get(b.getStringAttr(name));
  }
  Value norm(StringRef prefix, Value x, int64_t groupSize = 0,
             bool forceRms = false);
  Value linear(Value x, StringRef weightRole, StringRef biasRole, int64_t out,
               bool transposed);
  Value mlp(Value x, StringRef prefix, int64_t intermediate, bool bias);
  Value attentionBlock(Value h);
  Value mlaBlock(Value h);
  Value rotary(Value x, int64_t heads, int64_t headDim, int64_t offset,
               StringRef what);
  Value moeBlock(Value x, const LayerConfig &lc);

  MLIRContext &ctx;
  const DecoderConfig &cfg;
  const NameFn &names;
  const ParamSource &source;
  OpBuilder b;
  Type f32;
  ErrorSink errors;

  ModelOp model;
  GraphOp graph;
  int64_t layer = -1;
  llvm::StringMap<ParamOp> params;
  llvm::StringSet<> usedTensors; // checkpoint tensors the params read
};

Type Emitter::elementTypeFor(StringRef name, ArrayRef<int64_t> shape,
                             bool *fp8) {
  if (!source.tensors)
    return source.elementType;
  auto it = source.tensors->find(name);
  if (it == source.tensors->end()) {
    errors.report(source.describedBy + ": missing tensor '" + name +
                  "' (expected shape " + shapeString(shape) + ")");
    return f32;
  }
  const TensorInfo &info = it->second;
  usedTensors.insert(name);
  if (ArrayRef<int64_t>(info.shape) != shape)
    errors.report(info.file + ": tensor '" + name + "' has shape " +
                  shapeString(info.shape) + " (expected " + shapeString(shape) +
                  " from the model configuration)");
  if (info.dtype == "F8_E4M3" && fp8) {
    if (!source.fp8) {
      errors.report(info.file + ": tensor '" + name +
                    "' is F8_E4M3 (expected F32, BF16 or F16: the config has "
                    "no quantization_config with quant_method \"fp8\")");
      return f32;
    }
    if (ArrayRef<int64_t>(info.shape) == shape && checkScales(name, info, shape))
      *fp8 = true;
    return f32;
  }
  return dtypeOf(name, info);
}

bool Emitter::checkScales(StringRef name, const TensorInfo &info,
                          ArrayRef<int64_t> shape) {
  // FP8Linear's weight_scale_inv beside its weight: one F32 scale per
  // weight_block_size block, edge blocks partial.
  std::string scale = name.str() + "_scale_inv";
  auto it = source.tensors->find(scale);
  if (!name.ends_with("weight") || it == source.tensors->end()) {
    errors.report(info.file + ": missing tensor '" + scale +
                  "' (expected the F32 block scales of the F8_E4M3 tensor '" +
                  name + "')");
    return false;
  }
  usedTensors.insert(scale);
  SmallVector<int64_t> grid{
      (shape[0] + source.blockRows - 1) / source.blockRows,
      (shape[1] + source.blockCols - 1) / source.blockCols};
  // ArrayRef on both sides: clang's C++20 finds no ArrayRef != SmallVector.
  if (it->second.dtype != "F32" ||
      ArrayRef<int64_t>(it->second.shape) != ArrayRef<int64_t>(grid)) {
    errors.report(it->second.file + ": tensor '" + scale + "' is " +
                  it->second.dtype + " " + shapeString(it->second.shape) +
                  " (expected F32 " + shapeString(grid) + ": ceil(" +
                  shapeString(shape) + " / weight_block_size [" +
                  std::to_string(source.blockRows) + ", " +
                  std::to_string(source.blockCols) + "]))");
    return false;
  }
  return true;
}

Type Emitter::dtypeOf(StringRef name, const TensorInfo &info) {
  if (info.dtype == "F32")
    return b.getF32Type();
  if (info.dtype == "BF16")
    return b.getBF16Type();
  if (info.dtype == "F16")
    return b.getF16Type();
  errors.report(info.file + ": tensor '" + name + "' has dtype " + info.dtype +
                " (expected F32, BF16 or F16)");
  return f32;
}

ParamOp Emitter::declare(StringRef name, RankedTensorType type, InitKind init,
                         SourceAttr src, QuantAttr quant) {
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPoint(graph);
  ParamOp param = ParamOp::create(
      b, b.getUnknownLoc(), b.getStringAttr(name), b.getStringAttr(name),
      TypeAttr::get(type), InitKindAttr::get(&ctx, init),
      init == InitKind::Normal ? b.getF32FloatAttr(cfg.initStd) : FloatAttr(),
      src, quant);
  params[name] = param;
  return param;
}

Value Emitter::weight(StringRef role, ArrayRef<int64_t> shape, InitKind init,
                      int64_t expert) {
  std::string name = names(role, layer, expert);
  ParamOp param;
  auto it = params.find(name);
  if (it != params.end()) {
    param = it->second;
    if (param.getTensorType().getShape() != shape)
      errors.report(source.describedBy + ": tensor '" + name +
                    "' is used with shapes " +
                    shapeString(param.getTensorType().getShape()) + " and " +
                    shapeString(shape) + " (expected one shape)");
  } else {
    bool fp8 = false;
    Type elem = elementTypeFor(name, shape, shape.size() == 2 ? &fp8 : nullptr);
    param = declare(name, RankedTensorType::get(shape, elem), init, {},
                    fp8 ? fp8Quant(name) : QuantAttr());
  }
  return WeightOp::create(b, param.getLoc(), param.getType(),
                          FlatSymbolRefAttr::get(param.getSymNameAttr()));
}

Value Emitter::stacked(StringRef role, ArrayRef<int64_t> slice, InitKind init,
                       int64_t numExperts, SourceAttr fused,
                       StringRef fusedName, QuantAttr fusedQuant) {
  SmallVector<int64_t> shape{numExperts};
  shape.append(slice.begin(), slice.end());
  Type elem;
  std::string name;
  SourceAttr src = fused;
  QuantAttr quant;
  if (fused) {
    // The fused tensor's shape was checked against the configuration when
    // its layout was recognized.
    name = fusedName.str();
    const TensorInfo &info = source.tensors->find(fused.getTensor())->second;
    usedTensors.insert(fused.getTensor());
    // Quantized: held as stored; the type names the dequantized values.
    quant = fusedQuant;
    elem = quant ? f32 : dtypeOf(fused.getTensor(), info);
  } else {
    name = names(role, layer, kAllExperts);
    src = SourceAttr::get(&ctx, name, 0, 1, false);
    bool matrix = slice.size() == 2, fp8 = false;
    elem = elementTypeFor(names(role, layer, 0), slice, matrix ? &fp8 : nullptr);
    if (fp8)
      quant = fp8Quant(name);
    for (int64_t e = 1; e < numExperts && source.tensors; ++e) {
      std::string expertName = names(role, layer, e);
      bool eFp8 = false;
      Type t = elementTypeFor(expertName, slice, matrix ? &eFp8 : nullptr);
      if ((t != elem || eFp8 != fp8) && !errors.failed())
        errors.report(source.tensors->find(expertName)->second.file +
                      ": tensor '" + expertName + "' is " +
                      source.tensors->find(expertName)->second.dtype +
                      " (expected the dtype of expert 0's tensor: experts "
                      "are stacked)");
    }
  }
  ParamOp param =
      declare(name, RankedTensorType::get(shape, elem), init, src, quant);
  return WeightOp::create(b, param.getLoc(), param.getType(),
                          FlatSymbolRefAttr::get(param.getSymNameAttr()));
}

std::optional<Emitter::FusedExperts>
Emitter::fusedExperts(int64_t numExperts, int64_t inter, int64_t hidden) {
  if (!source.tensors ||
      source.tensors->count(names("expert.up.weight", layer, 0)))
    return std::nullopt;
  // Fused tensors sit beside where the per-expert ones would be:
  // "<prefix>.{e}.w1.weight" -> "<prefix>.gate_up_proj".
  std::string pattern = names("expert.up.weight", layer, kAllExperts);
  std::string prefix = pattern.substr(0, pattern.find(".{e}"));
  std::string gateUp = prefix + ".gate_up_proj", down = prefix + ".down_proj";
  auto gu = source.tensors->find(gateUp), dn = source.tensors->find(down);
  if (gu == source.tensors->end() && dn == source.tensors->end()) {
    if (source.tensors->count(gateUp + "_blocks") ||
        source.tensors->count(down + "_blocks"))
      return mxfp4Experts(gateUp, down, numExperts, inter, hidden);
    return std::nullopt; // the per-expert tensors are reported missing
  }
  for (const std::string &name : {gateUp, down})
    if (!source.tensors->count(name)) {
      errors.report(source.describedBy + ": missing tensor '" + name +
                    "' (expected it beside the fused experts' " +
                    (name == down ? gateUp : down) + ")");
      return FusedExperts{};
    }
  if (!cfg.gated) {
    errors.report(gu->second.file + ": tensor '" + gateUp +
                  "' holds fused gate/up experts (expected per-expert "
                  "tensors: the model's experts are not gated)");
    return FusedExperts{};
  }
  ArrayRef<int64_t> guShape = gu->second.shape, dnShape = dn->second.shape;
  SmallVector<int64_t> rowsGU{numExperts, 2 * inter, hidden},
      rowsDown{numExperts, hidden, inter},
      colsGU{numExperts, hidden, 2 * inter}, colsDown{numExperts, inter, hidden};
  FusedExperts f;
  if (guShape == ArrayRef(rowsGU) && dnShape == ArrayRef(rowsDown)) {
    // transformers v5: gate_up_proj [E, 2I, H] (gate rows, then up rows),
    // down_proj [E, H, I] as the per-expert down weights stacked.
    f.gate = SourceAttr::get(&ctx, gateUp, 0, 1, false);
    f.up = SourceAttr::get(&ctx, gateUp, inter, 1, false);
    f.down = SourceAttr::get(&ctx, down, 0, 1, false);
  } else if (guShape == ArrayRef(colsGU) && dnShape == ArrayRef(colsDown)) {
    // gpt-oss: gate_up_proj [E, H, 2I] with gate/up columns interleaved,
    // down_proj [E, I, H]: both transposed relative to [E, N, K].
    f.gate = SourceAttr::get(&ctx, gateUp, 0, 2, true);
    f.up = SourceAttr::get(&ctx, gateUp, 1, 2, true);
    f.down = SourceAttr::get(&ctx, down, 0, 1, true);
  } else {
    errors.report(gu->second.file + ": tensors '" + gateUp + "' " +
                  shapeString(guShape) + " and '" + down + "' " +
                  shapeString(dnShape) + " are not fused experts of the "
                  "model configuration (expected " + shapeString(rowsGU) +
                  " and " + shapeString(rowsDown) + ", or gpt-oss's " +
                  shapeString(colsGU) + " and " + shapeString(colsDown) + ")");
    return FusedExperts{};
  }
  if (gu->second.dtype != dn->second.dtype)
    errors.report(dn->second.file + ": tensor '" + down + "' is " +
                  dn->second.dtype + " (expected " + gu->second.dtype +
                  " like '" + gateUp + "')");
  if (cfg.expertBias && !fusedBiases(f, gateUp, down, numExperts, inter, hidden))
    return FusedExperts{};
  return f;
}

bool Emitter::fusedBiases(FusedExperts &f, StringRef gateUp, StringRef down,
                          int64_t numExperts, int64_t inter, int64_t hidden) {
  // The biases follow their matrices' layout: gate/up interleaved (gpt-oss)
  // or gate then up.
  std::string gateUpBias = (gateUp + "_bias").str(),
              downBias = (down + "_bias").str();
  SmallVector<int64_t> guBiasShape{numExperts, 2 * inter},
      downBiasShape{numExperts, hidden};
  for (auto [name, shape] : {std::pair(gateUpBias, ArrayRef(guBiasShape)),
                             std::pair(downBias, ArrayRef(downBiasShape))}) {
    auto it = source.tensors->find(name);
    if (it == source.tensors->end()) {
      errors.report(source.describedBy + ": missing tensor '" + name +
                    "' (expected shape " + shapeString(shape) +
                    ": the model's experts have biases)");
      return false;
    }
    if (ArrayRef<int64_t>(it->second.shape) != shape) {
      errors.report(it->second.file + ": tensor '" + name + "' has shape " +
                    shapeString(it->second.shape) + " (expected " +
                    shapeString(shape) + " from the model configuration)");
      return false;
    }
  }
  bool interleaved = f.gate.getStride() == 2;
  f.gateBias = SourceAttr::get(&ctx, gateUpBias, 0, interleaved ? 2 : 1, false);
  f.upBias = SourceAttr::get(&ctx, gateUpBias, interleaved ? 1 : inter,
                             interleaved ? 2 : 1, false);
  f.downBias = SourceAttr::get(&ctx, downBias, 0, 1, false);
  return true;
}

bool Emitter::checkMxfp4(StringRef blocks, ArrayRef<int64_t> shape) {
  // HF integrations/mxfp4.py: `*_blocks` U8 [.., N, K / 32, 16] (element 2j
  // of a group in the low nibble of byte j), `*_scales` U8 e8m0 [.., N,
  // K / 32], w = e2m1 * 2^(scale - 127).
  std::string scales = blocks.drop_back(strlen("_blocks")).str() + "_scales";
  int64_t K = shape.back();
  SmallVector<int64_t> blockShape(shape.drop_back()), scaleShape(shape.drop_back());
  blockShape.append({K / 32, 16});
  scaleShape.push_back(K / 32);
  if (K % 32 != 0) {
    errors.report(source.quantField + ": the experts' tensor '" + blocks +
                  "' would hold rows of " + std::to_string(K) +
                  " values (expected a multiple of 32: MXFP4 scales groups "
                  "of 32)");
    return false;
  }
  for (auto [name, expected] : {std::pair(blocks.str(), ArrayRef(blockShape)),
                                std::pair(scales, ArrayRef(scaleShape))}) {
    auto it = source.tensors->find(name);
    if (it == source.tensors->end()) {
      errors.report(source.describedBy + ": missing tensor '" + name +
                    "' (expected U8 " + shapeString(expected) +
                    (name == scales ? ": the e8m0 scales of '" + blocks + "')"
                                    : ": MXFP4 blocks beside '" + scales + "')"));
      return false;
    }
    usedTensors.insert(name);
    if (it->second.dtype != "U8" ||
        ArrayRef<int64_t>(it->second.shape) != expected) {
      errors.report(it->second.file + ": tensor '" + name + "' is " +
                    it->second.dtype + " " + shapeString(it->second.shape) +
                    " (expected U8 " + shapeString(expected) +
                    " from the model configuration)");
      return false;
    }
  }
  return true;
}

std::optional<Emitter::FusedExperts>
Emitter::mxfp4Experts(StringRef gateUp, StringRef down, int64_t numExperts,
                      int64_t inter, int64_t hidden) {
  std::string guBlocks = (gateUp + "_blocks").str(),
              dnBlocks = (down + "_blocks").str();
  if (!source.mxfp4) {
    StringRef any = source.tensors->count(guBlocks) ? StringRef(guBlocks)
                                                    : StringRef(dnBlocks);
    errors.report(source.tensors->find(any)->second.file + ": tensor '" + any +
                  "' holds MXFP4 experts (expected the config's "
                  "quantization_config with quant_method \"mxfp4\")");
    return FusedExperts{};
  }
  if (!cfg.gated) {
    errors.report(source.describedBy + ": tensor '" + guBlocks +
                  "' holds fused gate/up experts (expected per-expert "
                  "tensors: the model's experts are not gated)");
    return FusedExperts{};
  }
  // Dequantized, gate_up_proj_blocks is gpt-oss's gate_up_proj [E, H, 2I]
  // transposed (convert_moe_packed_tensors): its rows are gate_up_proj's
  // interleaved columns, so gate is rows 0, 2, .. and up rows 1, 3, ..,
  // each a row of H values as a product reads it.
  if (!checkMxfp4(guBlocks, {numExperts, 2 * inter, hidden}) ||
      !checkMxfp4(dnBlocks, {numExperts, hidden, inter}))
    return FusedExperts{};
  FusedExperts f;
  f.gate = SourceAttr::get(&ctx, guBlocks, 0, 2, false);
  f.up = SourceAttr::get(&ctx, guBlocks, 1, 2, false);
  f.down = SourceAttr::get(&ctx, dnBlocks, 0, 1, false);
  f.gateUpQuant = QuantAttr::get(&ctx, WeightFormat::MXFP4,
                                 (gateUp + "_scales").str(), {1, 32});
  f.downQuant = QuantAttr::get(&ctx, WeightFormat::MXFP4,
                               (down + "_scales").str(), {1, 32});
  if (cfg.expertBias && !fusedBiases(f, gateUp, down, numExperts, inter, hidden))
    return FusedExperts{};
  return f;
}

void Emitter::checkUnusedTensors() {
  if (!source.tensors)
    return;
  std::vector<StringRef> unused, noted;
  for (const auto &kv : *source.tensors) {
    if (usedTensors.count(kv.first()))
      continue;
    if (!(source.ignorable && source.ignorable(kv.first())))
      unused.push_back(kv.first());
    else if (source.noteSkipped && source.noteSkipped(kv.first()))
      noted.push_back(kv.first());
  }
  if (!noted.empty()) {
    // A remark, not an error: the checkpoint is what HF loads, plus more.
    llvm::sort(noted);
    emitRemark(NameLoc::get(b.getStringAttr("checkpoint")))
        << "skipped " << noted.size() << " tensors (" << noted.front()
        << ", ...): " << source.skippedBecause;
  }
  if (unused.empty())
    return;
  llvm::sort(unused);
  const TensorInfo &info = source.tensors->find(unused.front())->second;
  errors.report(info.file + ": tensor '" + unused.front() + "' is not used by the " +
                cfg.architecture +
                " model its config describes (expected only the tensors of "
                "that configuration; " +
                std::to_string(unused.size()) + " unused)");
}

Value Emitter::norm(StringRef prefix, Value x, int64_t groupSize,
                    bool forceRms) {
  int64_t size = groupSize ? groupSize
                           : cast<RankedTensorType>(x.getType()).getDimSize(1);
  Value w = weight((prefix + ".weight").str(), {size}, InitKind::Ones);
  FloatAttr eps = b.getF32FloatAttr(cfg.normEps);
  IntegerAttr group = groupSize ? b.getI64IntegerAttr(groupSize) : IntegerAttr();
  if (cfg.norm == NormKind::RMSNorm || forceRms)
    return RMSNormOp::create(b, at(prefix), x.getType(), x, w, eps, group,
                             b.getF32FloatAttr(0.0f));
  Value bias = cfg.normBias
                   ? weight((prefix + ".bias").str(), {size}, InitKind::Zeros)
                   : Value();
  return LayerNormOp::create(b, at(prefix), x.getType(), x, w, bias, eps, group);
}

Value Emitter::linear(Value x, StringRef weightRole, StringRef biasRole,
                      int64_t out, bool transposed) {
  int64_t in = cast<RankedTensorType>(x.getType()).getDimSize(1);
  Value w = transposed ? matrix(weightRole, in, out) : matrix(weightRole, out, in);
  Value bias = biasRole.empty() ? Value()
                                : weight(biasRole, {out}, InitKind::Zeros);
  return LinearOp::create(b, at(weightRole), act(out), x, w, bias,
                          transposed ? b.getUnitAttr() : UnitAttr());
}

Value Emitter::mlp(Value x, StringRef prefix, int64_t intermediate, bool bias) {
  int64_t d = cfg.hiddenSize;
  bool t = cfg.conv1d;
  auto role = [&](StringRef piece) { return (prefix + "." + piece).str(); };
  Value gate = cfg.gated ? (t ? matrix(role("gate.weight"), d, intermediate)
                              : matrix(role("gate.weight"), intermediate, d))
                         : Value();
  Value up = t ? matrix(role("up.weight"), d, intermediate)
               : matrix(role("up.weight"), intermediate, d);
  Value upBias =
      bias ? weight(role("up.bias"), {intermediate}, InitKind::Zeros) : Value();
  Value down = t ? matrix(role("down.weight"), intermediate, d)
                 : matrix(role("down.weight"), d, intermediate);
  Value downBias = bias ? weight(role("down.bias"), {d}, InitKind::Zeros) : Value();
  return MLPOp::create(b, at(prefix), x.getType(), x, up, upBias, gate, down,
                       downBias, ActivationAttr::get(&ctx, cfg.activation),
                       t ? b.getUnitAttr() : UnitAttr());
}

Value Emitter::attentionBlock(Value h) {
  const LayerConfig &lc = cfg.layers[layer];
  int64_t qWidth = cfg.numHeads * cfg.headDim;
  int64_t kvWidth = cfg.numKvHeads * cfg.headDim;
  Value n = norm("attn_norm", h);
  Value q, k, v;
  if (cfg.fusedQKV) {
    Value qkv = linear(n, "qkv.weight", cfg.qkvBias ? "qkv.bias" : "",
                       qWidth + 2 * kvWidth, cfg.conv1d);
    auto split = SplitOp::create(
        b, at("qkv_split"), TypeRange{act(qWidth), act(kvWidth), act(kvWidth)},
        qkv);
    q = split.getResult(0);
    k = split.getResult(1);
    v = split.getResult(2);
  } else {
    q = linear(n, "q.weight", cfg.qkvBias ? "q.bias" : "", qWidth, cfg.conv1d);
    k = linear(n, "k.weight", cfg.qkvBias ? "k.bias" : "", kvWidth, cfg.conv1d);
    v = linear(n, "v.weight", cfg.qkvBias ? "v.bias" : "", kvWidth, cfg.conv1d);
  }
  if (cfg.qkNorm != QKNorm::None) {
    bool perHead = cfg.qkNorm == QKNorm::PerHead;
    q = norm("q_norm", q, perHead ? cfg.headDim : qWidth, /*forceRms=*/true);
    k = norm("k_norm", k, perHead ? cfg.headDim : kvWidth, /*forceRms=*/true);
  }
  if (cfg.rope) {
    q = rotary(q, cfg.numHeads, cfg.headDim, 0, "q_rope");
    k = rotary(k, cfg.numKvHeads, cfg.headDim, 0, "k_rope");
  }
  Value a = AttentionOp::create(
      b, at("attention"), act(qWidth), q, k, v,
      b.getI64IntegerAttr(cfg.numHeads), b.getI64IntegerAttr(cfg.numKvHeads),
      b.getI64IntegerAttr(cfg.headDim), b.getF32FloatAttr(lc.attentionScale),
      b.getI64IntegerAttr(layer), b.getUnitAttr(),
      lc.slidingWindow ? b.getI64IntegerAttr(lc.slidingWindow) : IntegerAttr(),
      cfg.attentionSinks ? weight("sinks", {cfg.numHeads}, InitKind::Normal)
                         : Value(),
      IntegerAttr());
  Value o = linear(a, "o.weight", cfg.outBias ? "o.bias" : "", cfg.hiddenSize,
                   cfg.conv1d);
  return AddOp::create(b, at("attn_residual"), h, o);
}

Value Emitter::rotary(Value x, int64_t heads, int64_t headDim, int64_t offset,
                      StringRef what) {
  return RotaryOp::create(
      b, at(what), x.getType(), x, b.getI64IntegerAttr(heads),
      b.getI64IntegerAttr(headDim), b.getI64IntegerAttr(cfg.rotaryDim),
      b.getF32FloatAttr(cfg.ropeTheta), RopeStyleAttr::get(&ctx, cfg.ropeStyle),
      cfg.ropeInvFreq.empty()
          ? DenseElementsAttr()
          : DenseElementsAttr::get(
                RankedTensorType::get({int64_t(cfg.ropeInvFreq.size())},
                                      b.getF32Type()),
                ArrayRef<float>(cfg.ropeInvFreq)),
      cfg.ropeAttentionFactor == 1.0
          ? FloatAttr()
          : b.getF32FloatAttr(cfg.ropeAttentionFactor),
      offset ? b.getI64IntegerAttr(offset) : IntegerAttr());
}

/// DeepSeek-V3's multi-head latent attention (HF DeepseekV3Attention.forward):
/// the projections and norms as they are, RoPE on q's per-head rope dims (in
/// place, `offset`) and on the shared k_pe, then moe.mla_attention, which
/// caches the normalized latent and k_pe and absorbs kv_b_proj into the
/// query and the output instead of expanding keys and values.
Value Emitter::mlaBlock(Value h) {
  const LayerConfig &lc = cfg.layers[layer];
  int64_t heads = cfg.numHeads, nope = cfg.qkNopeDim, rope = cfg.qkRopeDim,
          vd = cfg.vHeadDim, qk = nope + rope, latent = cfg.kvLoraRank;
  auto biasRole = [&](StringRef proj) {
    return cfg.mlaBias ? (proj + ".bias").str() : std::string();
  };
  Value n = norm("attn_norm", h);
  Value q;
  if (cfg.qLoraRank) {
    Value qa = linear(n, "q_a.weight", biasRole("q_a"), cfg.qLoraRank, false);
    qa = norm("q_a_norm", qa, 0, /*forceRms=*/true);
    q = linear(qa, "q_b.weight", "", heads * qk, false);
  } else {
    q = linear(n, "q.weight", "", heads * qk, false);
  }
  Value kva = linear(n, "kv_a.weight", biasRole("kv_a"), latent + rope, false);
  auto split = SplitOp::create(b, at("kv_a_split"),
                               TypeRange{act(latent), act(rope)}, kva);
  // Both halves stay columns of kv_a's output: the norm and the rope work on
  // them in place.
  Value c = norm("kv_a_norm", split.getResult(0), 0, /*forceRms=*/true);
  Value kpe = split.getResult(1);
  if (cfg.rope) {
    q = rotary(q, heads, qk, nope, "q_rope");
    kpe = rotary(kpe, 1, rope, 0, "k_rope");
  }
  Value a = MLAAttentionOp::create(
      b, at("attention"), act(heads * vd), q, c, kpe,
      matrix("kv_b.weight", heads * (nope + vd), latent),
      b.getI64IntegerAttr(heads), b.getI64IntegerAttr(nope),
      b.getI64IntegerAttr(rope), b.getI64IntegerAttr(vd),
      b.getF32FloatAttr(lc.attentionScale), b.getI64IntegerAttr(layer));
  Value o = linear(a, "o.weight", biasRole("o"), cfg.hiddenSize, false);
  return AddOp::create(b, at("attn_residual"), h, o);
}

Value Emitter::moeBlock(Value x, const LayerConfig &lc) {
  int64_t d = cfg.hiddenSize, e = lc.numExperts, k = cfg.topK;
  int64_t inter = cfg.expertSize;
  auto slots = [&](Type elem) {
    return RankedTensorType::get({ShapedType::kDynamic, k}, elem);
  };
  Value logits = RouterOp::create(
      b, at("router"), act(e), x, matrix("router", e, d),
      cfg.routerBias ? weight("router_bias", {e}, InitKind::Zeros) : Value());
  Value weights, experts;
  if (cfg.scoreAfterTopk) {
    // gpt-oss: the k largest logits, then softmax over those k.
    auto topk =
        TopKOp::create(b, at("top_k"), slots(f32), slots(b.getI32Type()),
                       logits, b.getI64IntegerAttr(k), Value(), IntegerAttr(),
                       IntegerAttr());
    weights =
        ScoresOp::create(b, at("scores"), ScoreFn::Softmax, topk.getValues());
    experts = topk.getIndices();
  } else {
    Value probs = ScoresOp::create(b, at("scores"), cfg.scoreFn, logits);
    // DeepSeek-V3: e_score_correction_bias ranks, the plain scores weigh.
    Value selectionBias =
        cfg.selectionBias
            ? weight("router_selection_bias", {e}, InitKind::Zeros)
            : Value();
    bool grouped = cfg.nGroup > 1;
    auto topk = TopKOp::create(
        b, at("top_k"), slots(f32), slots(b.getI32Type()), probs,
        b.getI64IntegerAttr(k), selectionBias,
        grouped ? b.getI64IntegerAttr(cfg.nGroup) : IntegerAttr(),
        grouped ? b.getI64IntegerAttr(cfg.topkGroup) : IntegerAttr());
    weights = topk.getValues();
    experts = topk.getIndices();
  }
  if (cfg.normTopkProb)
    weights = RenormalizeOp::create(b, at("renormalize"), weights);
  if (cfg.routedScalingFactor != 1.0)
    weights = ScaleWeightsOp::create(b, at("routed_scaling"), weights,
                                     b.getF64FloatAttr(cfg.routedScalingFactor));
  Value admitted;
  if (cfg.dropTokens) {
    auto cap = CapacityOp::create(
        b, at("capacity"), slots(f32), slots(b.getI1Type()), experts, weights,
        b.getI64IntegerAttr(e), b.getF64FloatAttr(cfg.capacityFactor),
        b.getI64IntegerAttr(cfg.minCapacity));
    weights = cap.getResult();
    admitted = cap.getAdmitted();
  }
  auto map = ExpertMapOp::create(
      b, at("expert_map"), RankedTensorType::get({e + 1}, b.getI32Type()),
      RankedTensorType::get({ShapedType::kDynamic}, b.getI32Type()), experts,
      admitted);
  Value dispatched = DispatchOp::create(b, at("dispatch"), act(d), x,
                                        map.getSortedSlots(),
                                        b.getI64IntegerAttr(k));
  // One stacked weight per role: [E, I, D] gate/up, [E, D, I] down.
  Value up, gate, down, upBias, downBias, gateBias;
  std::optional<FusedExperts> fused = fusedExperts(e, inter, d);
  if (fused && !fused->up)
    return x; // reported
  if (fused) {
    gate = stacked("expert.gate.weight", {inter, d}, InitKind::Normal, e,
                   fused->gate, fused->gate.getTensor().str() + "#gate",
                   fused->gateUpQuant);
    up = stacked("expert.up.weight", {inter, d}, InitKind::Normal, e,
                 fused->up, fused->up.getTensor().str() + "#up",
                 fused->gateUpQuant);
    down = stacked("expert.down.weight", {d, inter}, InitKind::Normal, e,
                   fused->down,
                   fused->down.getTransposed()
                       ? fused->down.getTensor().str() + "#down"
                       : fused->down.getTensor().str(),
                   fused->downQuant);
    if (cfg.expertBias) {
      gateBias =
          stacked("expert.gate.bias", {inter}, InitKind::Zeros, e,
                  fused->gateBias, fused->gateBias.getTensor().str() + "#gate");
      upBias = stacked("expert.up.bias", {inter}, InitKind::Zeros, e,
                       fused->upBias, fused->upBias.getTensor().str() + "#up");
      downBias = stacked("expert.down.bias", {d}, InitKind::Zeros, e,
                         fused->downBias, fused->downBias.getTensor().str());
    }
  } else {
    if (cfg.gated)
      gate = stacked("expert.gate.weight", {inter, d}, InitKind::Normal, e);
    up = stacked("expert.up.weight", {inter, d}, InitKind::Normal, e);
    down = stacked("expert.down.weight", {d, inter}, InitKind::Normal, e);
  }
  if (cfg.expertBias && !fused) {
    upBias = stacked("expert.up.bias", {inter}, InitKind::Zeros, e);
    downBias = stacked("expert.down.bias", {d}, InitKind::Zeros, e);
  }
  bool oai = cfg.activation == Activation::SwigluOai;
  Value expertOut = ExpertsOp::create(
      b, at("experts"), act(d), dispatched, map.getExpertOffsets(), up, gate,
      down, upBias, downBias, gateBias, b.getI64IntegerAttr(k),
      ActivationAttr::get(&ctx, cfg.activation), PlacementAttr(),
      oai ? b.getF32FloatAttr(cfg.swigluLimit) : FloatAttr(),
      oai ? b.getF32FloatAttr(cfg.swigluAlpha) : FloatAttr());
  Value out = CombineOp::create(b, at("combine"), act(d), expertOut,
                                map.getSortedSlots(), weights);
  if (cfg.sharedExpertSize) {
    Value shared = mlp(x, "shared", cfg.sharedExpertSize, /*bias=*/false);
    if (cfg.sharedExpertGate) {
      Value g = linear(x, "shared_gate", "", 1, /*transposed=*/false);
      shared = SigmoidGateOp::create(b, at("shared_gate"), shared, g);
    }
    out = AddOp::create(b, at("shared_add"), out, shared);
  }
  if (cfg.residualMoE) {
    Value dense = mlp(x, "mlp", lc.ffnSize, cfg.mlpBias);
    Value coef = linear(x, "coef.weight", "coef.bias", 2, /*transposed=*/false);
    out = ResidualMixOp::create(b, at("residual_mix"), out, dense, coef);
  }
  return out;
}

llvm::Expected<OwningOpRef<ModuleOp>> Emitter::run() {
  // Bound what we are asked to build before building it: every size is at
  // most 2^24 (JsonReader), the attention width too, and the tensor count is
  // what keeps import time and memory in check (Switch-C has 123k tensors).
  constexpr int64_t kMaxWidth = int64_t(1) << 24, kMaxTensors = int64_t(1) << 20;
  int64_t tensors = 8;
  for (const LayerConfig &lc : cfg.layers)
    tensors += 24 + (lc.moe ? 5 * lc.numExperts : 0);
  if (tensors > kMaxTensors)
    return llvm::createStringError(
        llvm::formatv("{0}: the model would have about {1} tensors (expected "
                      "at most {2}: fewer layers or experts)",
                      cfg.configFile, tensors, kMaxTensors)
            .str());
  // The plan's expert slices (plan::kMaxExpertSlices; emitPlan checks the
  // parts of sliced experts too, which placement adds later). Biases count
  // as three.
  using plan::kMaxExpertSlices;
  const int64_t perExpert = 2 + (cfg.gated ? 1 : 0) + (cfg.expertBias ? 3 : 0);
  int64_t slices = 0;
  for (const LayerConfig &lc : cfg.layers)
    slices += lc.moe ? perExpert * lc.numExperts : 0;
  if (slices > kMaxExpertSlices)
    return llvm::createStringError(
        llvm::formatv("{0}: the model would have {1} expert slices (experts x "
                      "stacked weights over its MoE layers; expected at most "
                      "{2}: fewer layers or experts)",
                      cfg.configFile, slices, kMaxExpertSlices)
            .str());
  if (cfg.numHeads * cfg.headDim > kMaxWidth)
    return llvm::createStringError(
        llvm::formatv("{0}: attention width num_heads * head_dim = {1} is too "
                      "large (expected at most {2})",
                      cfg.configFile, cfg.numHeads * cfg.headDim, kMaxWidth)
            .str());

  // Special token ids index the vocabulary (generation stops at eos).
  auto checkTokenId = [&](StringRef key, int64_t id) -> llvm::Error {
    if (id >= 0 && id < cfg.vocabSize)
      return llvm::Error::success();
    return llvm::createStringError(
        llvm::formatv("{0}: {1} {2} is not a token of the vocabulary "
                      "(expected 0..{3}, vocab_size {4})",
                      cfg.configFile, key, id, cfg.vocabSize - 1, cfg.vocabSize)
            .str());
  };
  if (cfg.bosTokenId)
    if (llvm::Error err = checkTokenId("bos_token_id", *cfg.bosTokenId))
      return std::move(err);
  for (int64_t id : cfg.eosTokenIds)
    if (llvm::Error err = checkTokenId("eos_token_id", id))
      return std::move(err);

  Location loc = b.getUnknownLoc();
  OwningOpRef<ModuleOp> module = ModuleOp::create(loc);
  b.setInsertionPointToEnd(module->getBody());
  model = ModelOp::create(b, loc, cfg.name, cfg.architecture);
  model.setVocabSize(cfg.vocabSize);
  model.setHiddenSize(cfg.hiddenSize);
  model.setNumLayers(int64_t(cfg.layers.size()));
  model.setMaxPositionEmbeddings(cfg.maxPositions);
  if (cfg.bosTokenId)
    model.setBosTokenId(*cfg.bosTokenId);
  model.setEosTokenIds(cfg.eosTokenIds);
  if (!cfg.checkpoint.empty())
    model.setCheckpoint(cfg.checkpoint);

  b.setInsertionPointToEnd(&model.getBodyBlock());
  auto funcType = b.getFunctionType(
      {RankedTensorType::get({ShapedType::kDynamic}, b.getI32Type())},
      {act(cfg.vocabSize)});
  graph = GraphOp::create(b, loc, "forward", funcType);
  Block &entry = graph.getBody().front();
  b.setInsertionPointToEnd(&entry);

  int64_t d = cfg.hiddenSize;
  Value embed = matrix("embed", cfg.vocabSize, d);
  Value h = EmbeddingOp::create(b, at("embed"), act(d), entry.getArgument(0),
                                embed, b.getF32FloatAttr(1.0f));
  if (cfg.learnedPositions)
    h = PositionEmbeddingOp::create(b, at("pos_embed"), h,
                                    matrix("pos_embed", cfg.maxPositions, d));

  for (const LayerConfig &lc : cfg.layers) {
    ++layer;
    auto layerOp = LayerOp::create(b, at("layer"), layer, h);
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToEnd(&layerOp.getBodyBlock());
    Value x = layerOp.getBodyBlock().getArgument(0);
    Value afterAttn = cfg.kvLoraRank ? mlaBlock(x) : attentionBlock(x);
    Value n = norm("mlp_norm", afterAttn);
    Value ffn = lc.moe ? moeBlock(n, lc) : mlp(n, "mlp", lc.ffnSize, cfg.mlpBias);
    Value out = AddOp::create(b, at("mlp_residual"), afterAttn, ffn);
    YieldOp::create(b, at("yield"), out);
    h = layerOp.getResult();
  }
  layer = -1;

  h = norm("final_norm", h);
  Value head = cfg.tied ? matrix("embed", cfg.vocabSize, d)
                        : matrix("lm_head", cfg.vocabSize, d);
  Value logits = LMHeadOp::create(b, at("lm_head"), act(cfg.vocabSize), h,
                                  head, Value(),
                                  cfg.tied ? b.getUnitAttr() : UnitAttr());
  ReturnOp::create(b, at("return"), logits);

  checkUnusedTensors();
  if (errors.failed())
    return errors.take();

  // The importers validate configs first, so a verifier failure here is an
  // importer bug or a configuration we did not anticipate: report it as such.
  std::string diagnostic;
  {
    ScopedDiagnosticHandler handler(&ctx, [&](Diagnostic &diag) {
      if (diagnostic.empty())
        diagnostic = diag.str();
      return success();
    });
    if (failed(verify(*module)))
      return llvm::createStringError(
          "the imported model does not verify: " + diagnostic +
          " (this is an importer bug or an unsupported configuration)");
  }
  return std::move(module);
}

} // namespace

llvm::Expected<OwningOpRef<ModuleOp>>
mlir::moe::detail::buildModel(MLIRContext &context, const DecoderConfig &config,
                              const NameFn &names, const ParamSource &source) {
  context.getOrLoadDialect<MoEDialect>();
  return Emitter(context, config, names, source).run();
}
