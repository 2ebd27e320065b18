//===- Arena.cpp - Buffer sizes and the arena plan ------------------------===//
//
// The element types of the plan, buffer sizes, and the arena planning of the
// storage analysis: buffers whose live ranges overlap never share bytes;
// greedy by size, first fit, at 64-byte aligned offsets (the runtime's plan
// validation requires that alignment).
//
//===----------------------------------------------------------------------===//

#include "moe/Plan/Program.h"

#include "mlir/IR/Builders.h"
#include "llvm/Support/MathExtras.h"

using namespace mlir;
using namespace mlir::moe;
using namespace mlir::moe::plan;

int64_t mlir::moe::plan::elemSize(ElemType type) {
  switch (type) {
  case ElemType::BF16:
  case ElemType::F16:
    return 2;
  case ElemType::I64:
    return 8;
  default:
    return 4;
  }
}

std::optional<ElemType> mlir::moe::plan::toElemType(Type type) {
  if (type.isF32())
    return ElemType::F32;
  if (type.isBF16())
    return ElemType::BF16;
  if (type.isF16())
    return ElemType::F16;
  if (type.isInteger(32))
    return ElemType::I32;
  if (type.isInteger(64))
    return ElemType::I64;
  return std::nullopt;
}

Type mlir::moe::plan::toMLIRType(MLIRContext *context, ElemType type) {
  Builder b(context);
  switch (type) {
  case ElemType::F32:
    return b.getF32Type();
  case ElemType::BF16:
    return b.getBF16Type();
  case ElemType::F16:
    return b.getF16Type();
  case ElemType::I32:
    return b.getI32Type();
  case ElemType::I64:
    return b.getI64Type();
  }
  llvm_unreachable("unknown element type");
}

uint64_t mlir::moe::plan::Buffer::bytes(int64_t maxTokens) const {
  return uint64_t(maxRows(maxTokens)) * uint64_t(rowElems) *
         uint64_t(elemSize(type));
}

uint64_t mlir::moe::plan::planArena(std::vector<Buffer> &buffers,
                                    int64_t maxTokens,
                                    uint64_t &unplannedBytes) {
  constexpr uint64_t kAlign = 64;
  std::vector<int> order;
  unplannedBytes = 0;
  for (auto [i, b] : llvm::enumerate(buffers)) {
    unplannedBytes += llvm::alignTo(b.bytes(maxTokens), kAlign);
    if (b.firstStep >= 0)
      order.push_back(int(i));
  }
  // Greedy by size: big buffers first, each at the lowest offset that does
  // not overlap a placed buffer whose live range intersects its own.
  llvm::stable_sort(order, [&](int a, int b) {
    return buffers[a].bytes(maxTokens) > buffers[b].bytes(maxTokens);
  });
  std::vector<int> placed;
  uint64_t arena = 0;
  for (int i : order) {
    Buffer &b = buffers[i];
    uint64_t size = llvm::alignTo(b.bytes(maxTokens), kAlign);
    std::vector<std::pair<uint64_t, uint64_t>> busy;
    for (int j : placed) {
      const Buffer &o = buffers[j];
      if (o.lastStep < b.firstStep || b.lastStep < o.firstStep)
        continue;
      busy.push_back(
          {o.offset, o.offset + llvm::alignTo(o.bytes(maxTokens), kAlign)});
    }
    llvm::sort(busy);
    uint64_t offset = 0;
    for (auto [lo, hi] : busy) {
      if (offset + size <= lo)
        break;
      offset = std::max(offset, hi);
    }
    b.offset = offset;
    arena = std::max(arena, offset + size);
    placed.push_back(i);
  }
  return arena;
}
