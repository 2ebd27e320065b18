//===- ExpertProfile.cpp - expert load profiles ---------------------------===//

#include "moe/Analysis/ExpertProfile.h"
#include "moe/Compiler/InputLimits.h"
#include "moe/Support/Json.h"

#include "mlir/IR/Diagnostics.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"

#include <cmath>

using namespace mlir;

static constexpr int64_t kMaxLayer = int64_t(1) << 24;
static constexpr size_t kMaxExperts = size_t(1) << 24;
static constexpr StringRef kExpected = "the --expert-profile JSON of moe-run";

llvm::Expected<moe::ExpertProfile> moe::parseExpertProfile(StringRef text,
                                                          StringRef path) {
  auto fail = [&](const llvm::Twine &what) {
    return llvm::createStringError((path + ": " + what).str());
  };
  llvm::Expected<llvm::json::Value> doc = parseJson(text);
  if (!doc)
    return fail("invalid JSON: " + llvm::toString(doc.takeError()) +
                " (expected " + kExpected + ")");
  const llvm::json::Object *root = doc->getAsObject();
  const llvm::json::Array *layers = root ? root->getArray("layers") : nullptr;
  if (!layers)
    return fail("no \"layers\" array (expected " + kExpected + ")");
  ExpertProfile profile;
  for (auto [i, entry] : llvm::enumerate(*layers)) {
    std::string at = llvm::formatv("layers[{0}]", i).str();
    const llvm::json::Object *layer = entry.getAsObject();
    const llvm::json::Value *index = layer ? layer->get("layer") : nullptr;
    const llvm::json::Array *routed = layer ? layer->getArray("routed") : nullptr;
    if (!index || !routed)
      return fail(at + " lacks \"layer\" or \"routed\" (expected {\"layer\": "
                       "int, \"routed\": [counts]})");
    std::optional<int64_t> l = jsonInteger(*index);
    if (!l || *l < 0 || *l > kMaxLayer)
      return fail(at + ".layer is not a layer index (expected an integer in "
                       "[0, " + llvm::Twine(kMaxLayer) + "])");
    if (routed->empty() || routed->size() > kMaxExperts)
      return fail(at + ".routed has " + llvm::Twine(routed->size()) +
                  " counts (expected one per expert, 1 to " +
                  llvm::Twine(kMaxExperts) + ")");
    if (const llvm::json::Value *n = layer->get("num_experts");
        n && jsonInteger(*n) != std::optional<int64_t>(routed->size()))
      return fail(at + ".num_experts does not match its " +
                  llvm::Twine(routed->size()) +
                  " routed counts (expected equal)");
    SmallVector<double> counts;
    for (auto [j, c] : llvm::enumerate(*routed)) {
      std::optional<double> v = c.getAsNumber();
      if (!v || !std::isfinite(*v) || *v < 0)
        return fail(at + ".routed[" + llvm::Twine(j) +
                    "] is not a count (expected a finite number >= 0)");
      counts.push_back(*v);
    }
    if (!profile.routed.try_emplace(*l, std::move(counts)).second)
      return fail(at + " repeats layer " + llvm::Twine(*l) +
                  " (expected one entry per layer)");
  }
  return profile;
}

llvm::Expected<moe::ExpertProfile> moe::readExpertProfileFile(StringRef path) {
  auto buffer = readInputFile(path, kExpected);
  if (!buffer)
    return buffer.takeError();
  return parseExpertProfile((*buffer)->getBuffer(), path);
}

FailureOr<moe::ExpertProfile> moe::readExpertProfile(Operation *op,
                                                     StringRef path) {
  if (path.empty())
    return ExpertProfile();
  llvm::Expected<ExpertProfile> profile = readExpertProfileFile(path);
  if (!profile)
    return op->emitError() << llvm::toString(profile.takeError());
  return std::move(*profile);
}
