//===- ExpertProfile.cpp - expert load profiles ---------------------------===//

#include "moe/Analysis/ExpertProfile.h"

#include "mlir/IR/Diagnostics.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"

using namespace mlir;

FailureOr<moe::ExpertProfile> moe::readExpertProfile(Operation *op,
                                                     StringRef path) {
  auto fail = [&](const Twine &what) {
    return op->emitError() << path << ": " << what;
  };
  auto buffer = llvm::MemoryBuffer::getFile(path);
  if (!buffer)
    return fail("cannot read the expert profile (" +
                buffer.getError().message() + ")");
  llvm::Expected<llvm::json::Value> doc =
      llvm::json::parse((*buffer)->getBuffer());
  if (!doc)
    return fail("not JSON: " + llvm::toString(doc.takeError()));
  const llvm::json::Object *root = doc->getAsObject();
  const llvm::json::Array *layers = root ? root->getArray("layers") : nullptr;
  if (!layers)
    return fail("expected an object with a \"layers\" array (moe-run "
                "--expert-profile output)");
  ExpertProfile profile;
  for (auto [i, entry] : llvm::enumerate(*layers)) {
    const llvm::json::Object *layer = entry.getAsObject();
    std::optional<int64_t> index =
        layer ? layer->getInteger("layer") : std::nullopt;
    const llvm::json::Array *routed =
        layer ? layer->getArray("routed") : nullptr;
    if (!index || !routed)
      return fail("layers[" + Twine(i) +
                  "]: expected {\"layer\": int, "
                  "\"routed\": [counts]}");
    SmallVector<double> counts;
    for (const llvm::json::Value &c : *routed) {
      std::optional<double> n = c.getAsNumber();
      if (!n || *n < 0)
        return fail("layers[" + Twine(i) +
                    "].routed: expected non-negative "
                    "numbers");
      counts.push_back(*n);
    }
    profile.routed[*index] = std::move(counts);
  }
  return profile;
}
