//===- Cluster.cpp - the machine a plan is compiled for -------------------===//

#include "moe/Analysis/Cluster.h"
#include "moe/Compiler/InputLimits.h"
#include "moe/Compiler/Options.h"
#include "moe/Support/Json.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/ADT/StringSwitch.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"

#include <cmath>

using namespace mlir;
using namespace mlir::moe;

static constexpr llvm::StringLiteral kExpected =
    "a cluster description: {\"nodes\": N, \"devices_per_node\": G, "
    "\"device\": {...}, \"intra_node\": {...}, \"inter_node\": {...}}";
/// More ranks than any plan may have (moe-compile caps --devices at 2^16).
static constexpr int64_t kMaxDevices = int64_t(1) << 16;

/// Splits "3.35TB/s" into 3.35 and "TB/s" (spaces dropped) and scales by the
/// multiplier `unitScale` gives the unit (negative: unknown), or fails naming
/// `what`. Values must be finite and positive (or zero, with `allowZero`).
template <typename UnitScale>
static llvm::Expected<double> parseQuantity(StringRef text, StringRef what,
                                            StringRef units,
                                            UnitScale unitScale,
                                            bool allowZero = false) {
  auto error = [&](const llvm::Twine &why) {
    return llvm::createStringError(
        llvm::formatv("'{0}' is not a {1}: {2} (expected a number with a "
                      "unit: {3})",
                      oneLine(text), what, why, units)
            .str());
  };
  StringRef s = text.trim();
  // A sign is read so that "-3us" is reported as negative, not as no number.
  size_t numberEnd = !s.empty() && (s[0] == '-' || s[0] == '+') ? 1 : 0;
  // Digits, a point and an exponent ("1.5e3"); the unit follows.
  while (numberEnd < s.size()) {
    char c = s[numberEnd];
    if (llvm::isDigit(c) || c == '.') {
      ++numberEnd;
      continue;
    }
    bool exponent = (c == 'e' || c == 'E') && numberEnd > 0 &&
                    numberEnd + 1 < s.size() &&
                    (llvm::isDigit(s[numberEnd + 1]) ||
                     ((s[numberEnd + 1] == '-' || s[numberEnd + 1] == '+') &&
                      numberEnd + 2 < s.size() &&
                      llvm::isDigit(s[numberEnd + 2])));
    if (!exponent)
      break;
    numberEnd += 2;
  }
  double value;
  if (numberEnd == 0 || s.take_front(numberEnd).getAsDouble(value) ||
      std::isnan(value))
    return error("no number");
  std::string unit;
  for (char c : s.drop_front(numberEnd))
    if (c != ' ')
      unit.push_back(c);
  double scale = unitScale(StringRef(unit));
  if (scale < 0)
    return error(llvm::formatv("unknown unit '{0}'", oneLine(unit)).str());
  double result = value * scale;
  if (!std::isfinite(result))
    return error("it is too large");
  if (result < 0 || (result == 0 && !allowZero))
    return error(allowZero ? "it is negative" : "it is not positive");
  return result;
}

llvm::Expected<double> moe::parseBandwidth(StringRef text) {
  return parseQuantity(
      text, "bandwidth",
      "B/s, KB/s .. TB/s, KiB/s .. TiB/s, or bits as Mb/s, Gb/s, Tb/s",
      [](StringRef unit) {
        // A lower-case b after an upper-case prefix is bits, as network
        // links are quoted ("400Gb/s"); everything else is bytes.
        double bits = llvm::StringSwitch<double>(unit)
                          .Cases({"Mb/s", "Mbit/s"}, 1e6 / 8)
                          .Cases({"Gb/s", "Gbit/s"}, 1e9 / 8)
                          .Cases({"Tb/s", "Tbit/s"}, 1e12 / 8)
                          .Default(-1.0);
        if (bits > 0)
          return bits;
        return llvm::StringSwitch<double>(unit.lower())
            .Case("b/s", 1.0)
            .Case("kb/s", 1e3)
            .Case("mb/s", 1e6)
            .Case("gb/s", 1e9)
            .Case("tb/s", 1e12)
            .Case("kib/s", 1024.0)
            .Case("mib/s", 1024.0 * 1024)
            .Case("gib/s", 1024.0 * 1024 * 1024)
            .Case("tib/s", 1024.0 * 1024 * 1024 * 1024)
            .Default(-1.0);
      });
}

llvm::Expected<double> moe::parseFlopRate(StringRef text) {
  return parseQuantity(text, "FLOP rate", "K, M, G, T or P, e.g. 989T",
                       [](StringRef unit) {
                         // "989T", "989TFLOPS", "989 TFLOP/s".
                         std::string lowered = unit.lower();
                         StringRef u = lowered;
                         for (StringRef tail : {"flop/s", "flops"})
                           if (u.ends_with(tail)) {
                             u = u.drop_back(tail.size());
                             break;
                           }
                         return llvm::StringSwitch<double>(u)
                             .Case("", 1.0)
                             .Case("k", 1e3)
                             .Case("m", 1e6)
                             .Case("g", 1e9)
                             .Case("t", 1e12)
                             .Case("p", 1e15)
                             .Default(-1.0);
                       });
}

llvm::Expected<double> moe::parseLatency(StringRef text) {
  return parseQuantity(
      text, "latency", "ns, us, ms or s",
      [](StringRef unit) {
        return llvm::StringSwitch<double>(unit.lower())
            .Case("ns", 1e-9)
            .Case("us", 1e-6)
            .Case("ms", 1e-3)
            .Case("s", 1.0)
            .Default(-1.0);
      },
      /*allowZero=*/true);
}

namespace {
/// Reads one JSON object's fields, naming each by its path ("device.memory")
/// in errors, and rejects keys it was not asked for.
class ObjectReader {
public:
  ObjectReader(const llvm::json::Object &object, std::string at,
               StringRef path)
      : object(object), at(std::move(at)), path(path) {}

  llvm::Error error(const llvm::Twine &what) const {
    return llvm::createStringError((path + ": " + what).str());
  }
  std::string name(StringRef key) const {
    return at.empty() ? key.str() : at + "." + key.str();
  }

  /// A string field parsed by `parse` (one of the quantity parsers).
  template <typename T, typename Parse>
  llvm::Error quantity(StringRef key, Parse parse, T &out, bool required) {
    known.push_back(key);
    const llvm::json::Value *v = object.get(key);
    if (!v) {
      if (required)
        return error(llvm::formatv("missing \"{0}\" (expected {1})", name(key),
                                   kExpected)
                         .str());
      return llvm::Error::success();
    }
    std::optional<StringRef> s = v->getAsString();
    if (!s)
      return error(name(key) +
                   " is not a string (expected a quantity with its unit, "
                   "e.g. \"80GiB\", \"3.35TB/s\", \"989T\", \"3us\")");
    auto parsed = parse(*s);
    if (!parsed)
      return error(name(key) + ": " + llvm::toString(parsed.takeError()));
    out = T(*parsed);
    return llvm::Error::success();
  }

  llvm::Error count(StringRef key, int64_t &out) {
    known.push_back(key);
    const llvm::json::Value *v = object.get(key);
    std::optional<int64_t> n = v ? jsonInteger(*v) : std::nullopt;
    if (!n || *n < 1 || *n > kMaxDevices)
      return error(llvm::formatv("\"{0}\" {1} (expected an integer in [1, "
                                 "{2}])",
                                 name(key), v ? "is not valid" : "is missing",
                                 kMaxDevices)
                       .str());
    out = *n;
    return llvm::Error::success();
  }

  llvm::Error string(StringRef key, std::string &out) {
    known.push_back(key);
    const llvm::json::Value *v = object.get(key);
    if (!v)
      return llvm::Error::success();
    std::optional<StringRef> s = v->getAsString();
    if (!s || s->size() > 256)
      return error(name(key) + " is not a name (expected a string of at most "
                               "256 bytes)");
    out = oneLine(*s);
    return llvm::Error::success();
  }

  /// The sub-object `key`, or null when absent (an error when `required` or
  /// when it is not an object).
  llvm::Expected<const llvm::json::Object *> child(StringRef key,
                                                   bool required,
                                                   StringRef expected) {
    known.push_back(key);
    const llvm::json::Value *v = object.get(key);
    if (!v && !required)
      return nullptr;
    const llvm::json::Object *o = v ? v->getAsObject() : nullptr;
    if (!o)
      return error(llvm::formatv("\"{0}\" {1} (expected an object with {2})",
                                 name(key),
                                 v ? "is not an object" : "is missing",
                                 expected)
                       .str());
    return o;
  }

  /// Fails on the first key not read so far.
  llvm::Error noOtherKeys() const {
    for (const auto &kv : object)
      if (!llvm::is_contained(known, StringRef(kv.first)))
        return error(llvm::formatv("unknown key \"{0}\" (expected one of {1})",
                                   oneLine(name(kv.first)),
                                   llvm::join(known, ", "))
                         .str());
    return llvm::Error::success();
  }

private:
  const llvm::json::Object &object;
  std::string at;
  StringRef path;
  SmallVector<StringRef> known;
};

/// Reads a link ("intra_node"/"inter_node") into bandwidth and latency.
llvm::Error readLink(const llvm::json::Object &o, StringRef key,
                     StringRef path, double &bytesPerSec, double &latency) {
  ObjectReader link(o, key.str(), path);
  if (llvm::Error e = link.quantity("bandwidth", parseBandwidth, bytesPerSec,
                                    /*required=*/true))
    return e;
  if (llvm::Error e = link.quantity("latency", parseLatency, latency, true))
    return e;
  return link.noOtherKeys();
}
} // namespace

llvm::Expected<ClusterSpec> moe::parseCluster(StringRef text, StringRef path,
                                              StringRef target) {
  llvm::Expected<llvm::json::Value> doc = parseJson(text);
  if (!doc)
    return llvm::createStringError(
        (path + ": invalid JSON: " + llvm::toString(doc.takeError()) +
         " (expected " + kExpected + ")")
            .str());
  const llvm::json::Object *root = doc->getAsObject();
  if (!root)
    return llvm::createStringError(
        (path + ": not a JSON object (expected " + kExpected + ")").str());

  ClusterSpec spec;
  // Defaults the file does not describe come from the target's device.
  spec.device = deviceModelFor(target);
  ObjectReader top(*root, "", path);
  if (llvm::Error e = top.string("name", spec.name))
    return std::move(e);
  if (llvm::Error e = top.count("nodes", spec.nodes))
    return std::move(e);
  if (llvm::Error e = top.count("devices_per_node", spec.devicesPerNode))
    return std::move(e);
  if (spec.getNumDevices() > kMaxDevices)
    return top.error(llvm::formatv("{0} nodes x {1} devices is {2} devices "
                                   "(expected at most {3})",
                                   spec.nodes, spec.devicesPerNode,
                                   spec.getNumDevices(), kMaxDevices)
                         .str());

  llvm::Expected<const llvm::json::Object *> device = top.child(
      "device", true, "\"memory_bandwidth\", \"bf16_flops\" and optionally "
                      "\"memory\" and \"name\"");
  if (!device)
    return device.takeError();
  ObjectReader dev(**device, "device", path);
  std::string deviceName;
  if (llvm::Error e = dev.string("name", deviceName))
    return std::move(e);
  auto bytes = [](StringRef s) { return parseByteSize(s); };
  if (llvm::Error e = dev.quantity("memory", bytes, spec.deviceMemoryBytes,
                                   /*required=*/false))
    return std::move(e);
  if (llvm::Error e = dev.quantity("memory_bandwidth", parseBandwidth,
                                   spec.device.memoryBytesPerSec, true))
    return std::move(e);
  if (llvm::Error e = dev.quantity("bf16_flops", parseFlopRate,
                                   spec.device.flopsPerSec, true))
    return std::move(e);
  if (llvm::Error e = dev.noOtherKeys())
    return std::move(e);

  // A link that the cluster has must be described; one it lacks may be.
  for (auto [key, needed, bw, lat] :
       {std::tuple{StringRef("intra_node"), spec.devicesPerNode > 1,
                   &spec.device.intraNodeBytesPerSec,
                   &spec.device.intraNodeLatencySec},
        std::tuple{StringRef("inter_node"), spec.nodes > 1,
                   &spec.device.interNodeBytesPerSec,
                   &spec.device.interNodeLatencySec}}) {
    llvm::Expected<const llvm::json::Object *> link = top.child(
        key, needed, "\"bandwidth\" and \"latency\"");
    if (!link)
      return link.takeError();
    if (*link)
      if (llvm::Error e = readLink(**link, key, path, *bw, *lat))
        return std::move(e);
  }
  if (llvm::Error e = top.noOtherKeys())
    return std::move(e);

  if (deviceName.empty())
    deviceName = "device";
  if (spec.name.empty())
    spec.name = llvm::formatv("{0} x {1} {2}", spec.nodes, spec.devicesPerNode,
                              deviceName)
                    .str();
  spec.device.name =
      llvm::formatv("{0}: {1}, {2:f2} TB/s, {3:f0} TFLOP/s per device",
                    spec.name, deviceName, spec.device.memoryBytesPerSec / 1e12,
                    spec.device.flopsPerSec / 1e12)
          .str();
  return spec;
}

llvm::Expected<ClusterSpec> moe::readClusterFile(StringRef path,
                                                 StringRef target) {
  auto buffer = readInputFile(path, kExpected);
  if (!buffer)
    return buffer.takeError();
  return parseCluster((*buffer)->getBuffer(), path, target);
}
