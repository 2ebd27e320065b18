//===- moe-compile.cpp - the moe compiler driver --------------------------===//
//
//   moe-compile MODEL [-o FILE] [--emit=plan|plan-text|mlir|report] [--report=FILE.json]
//               [--plot=FILE.svg]
//               [--target=cpu|cuda] [--dtype=f32|bf16|f16] [--devices=N]
//               [--gpus-per-node=G] [--cluster=FILE.json] [--max-batch=B]
//               [--max-seq-len=L] [--kv-pages=N] [--kv-page-size=P]
//               [--placement=balanced|round-robin|contiguous]
//               [--expert-profile=FILE.json] [--memory-budget=SIZE]
//               [--pipeline=STR] [--load-pass-plugin=LIB.so]
//
// MODEL is a model description .json, a Hugging Face checkpoint directory or
// a bare config.json. Every error is one line, "error: FILE-OR-FLAG: what
// (expected ...)", exit code 1, and no output file is left behind (outputs
// are written to a temporary file and renamed).
//
//===----------------------------------------------------------------------===//

#include "moe/Analysis/Cluster.h"
#include "moe/Analysis/CostModel.h"
#include "moe/Analysis/ExpertProfile.h"
#include "moe/Compiler/InputLimits.h"
#include "moe/Compiler/Options.h"
#include "moe/Dialect/MoEOps.h"
#include "moe/Import/Import.h"
#include "moe/Plan/EmitPlan.h"
#include "moe/Plan/Program.h"
#include "moe/Transforms/Passes.h"

#include "mlir/Dialect/Shard/IR/ShardDialect.h"
#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "mlir/IR/AsmState.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassInstrumentation.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Tools/Plugins/PassPlugin.h"
#include "mlir/Transforms/Passes.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Process.h"
#include "llvm/Support/raw_ostream.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <unistd.h>

using namespace mlir;
using namespace mlir::moe;
namespace cl = llvm::cl;

namespace {

// --help shows these four groups only; LLVM's and MLIR's own options (the
// backends' code generation flags, MLIR's printing and pass-manager flags,
// which still work) are listed by --help-hidden.
cl::OptionCategory inputCategory("Input options");
cl::OptionCategory targetCategory("Target and parallelism options");
cl::OptionCategory passCategory("Pass options");
cl::OptionCategory outputCategory("Output options");

cl::opt<std::string> modelPath(cl::Positional, cl::Required,
                               cl::desc("<model .json | checkpoint dir | "
                                        "config.json>"),
                               cl::cat(inputCategory));
cl::opt<std::string>
    expertProfileFlag("expert-profile",
                      cl::desc("Per-expert token counts (moe-run "
                               "--expert-profile) for placement"),
                      cl::value_desc("file.json"), cl::cat(inputCategory));

cl::opt<std::string> outputPath("o", cl::desc("Output file ('-': stdout)"),
                                cl::value_desc("file"),
                                cl::cat(outputCategory));
cl::opt<std::string> emitFlag("emit",
                              cl::desc("What to emit: plan, plan-text, mlir, report"),
                              cl::init("plan"),
                              cl::value_desc("plan|mlir|report"),
                              cl::cat(outputCategory));
cl::opt<std::string> reportPath("report",
                                cl::desc("Also write the report as JSON"),
                                cl::value_desc("file.json"),
                                cl::cat(outputCategory));
cl::opt<std::string>
    plotPath("plot",
             cl::desc("Also draw per-rank memory and experts per rank as SVG"),
             cl::value_desc("file.svg"), cl::cat(outputCategory));

cl::opt<std::string> targetFlag("target", cl::desc("cpu or cuda"),
                                cl::init("cpu"), cl::value_desc("cpu|cuda"),
                                cl::cat(targetCategory));
cl::opt<std::string> dtypeFlag("dtype",
                               cl::desc("Compute dtype: f32, bf16, f16"),
                               cl::init("f32"), cl::value_desc("f32|bf16|f16"),
                               cl::cat(targetCategory));
cl::opt<std::string> kvDtypeFlag(
    "kv-dtype",
    cl::desc("Element type of the KV caches: f32, bf16, f16 (half the cache "
             "bytes, read once per decode step)"),
    cl::init("f32"), cl::value_desc("f32|bf16|f16"), cl::cat(targetCategory));
cl::opt<std::string> devicesFlag("devices", cl::desc("Number of ranks"),
                                 cl::init("1"), cl::value_desc("N"),
                                 cl::cat(targetCategory));
cl::opt<std::string>
    gpusPerNodeFlag("gpus-per-node",
                    cl::desc("Ranks per node (default: all on one node)"),
                    cl::value_desc("G"), cl::cat(targetCategory));
cl::opt<std::string>
    clusterFlag("cluster",
                cl::desc("Machine description (JSON: nodes, devices per "
                         "node, device and links); sets --devices and "
                         "--gpus-per-node and drives the cost model"),
                cl::value_desc("FILE.json"), cl::cat(targetCategory));
cl::opt<std::string>
    maxBatchFlag("max-batch",
                 cl::desc("Sequences decoded together (KV cache pages for "
                          "this many sequences)"),
                 cl::init("1"), cl::value_desc("B"), cl::cat(targetCategory));
cl::opt<std::string>
    maxSeqLenFlag("max-seq-len",
                  cl::desc("KV cache capacity (default: the model's "
                           "max_position_embeddings)"),
                  cl::value_desc("L"), cl::cat(targetCategory));
cl::opt<std::string>
    kvPagesFlag("kv-pages",
                cl::desc("KV cache pages of a batched plan (default: enough "
                         "for --max-batch sequences at full length; at least "
                         "one such sequence; fewer make sequences wait or be "
                         "preempted)"),
                cl::value_desc("N"), cl::cat(targetCategory));
cl::opt<std::string>
    kvPageSizeFlag("kv-page-size",
                   cl::desc("Positions per KV cache page of a batched plan "
                            "(default: 16)"),
                   cl::value_desc("P"), cl::cat(targetCategory));
cl::opt<std::string>
    memoryBudgetFlag("memory-budget",
                     cl::desc("Bytes per rank, e.g. 24GiB (default: "
                              "unlimited)"),
                     cl::value_desc("size"), cl::cat(targetCategory));

cl::opt<std::string>
    placementFlag("placement",
                  cl::desc("Expert placement: balanced, round-robin, "
                           "contiguous"),
                  cl::init("balanced"), cl::value_desc("strategy"),
                  cl::cat(passCategory));
cl::opt<std::string>
    expertReplicasFlag("expert-replicas",
                       cl::desc("Extra copies of the hottest experts per MoE "
                                "layer (balanced placement; default 0)"),
                       cl::init("0"), cl::value_desc("R"),
                       cl::cat(passCategory));
cl::opt<std::string>
    expertSlicingFlag("expert-slicing",
                      cl::desc("Split each expert over several ranks when a "
                               "layer has fewer experts than ranks: on "
                               "(default) or off"),
                      cl::init("on"), cl::value_desc("on|off"),
                      cl::cat(passCategory));
cl::opt<std::string>
    tensorParallelFlag("tensor-parallel",
                       cl::desc("Ranks of a tensor-parallel group: attention "
                                "heads and dense FFNs sliced over T ranks "
                                "(T divides --devices; default: with "
                                "--cluster, the T dividing a node's ranks "
                                "with the fastest estimated decode step, "
                                "else 1)"),
                       cl::init("1"), cl::value_desc("T"),
                       cl::cat(passCategory));
cl::opt<std::string>
    commHierarchyFlag("comm-hierarchy",
                      cl::desc("Expert exchanges over several nodes in two "
                               "stages, within each node then across nodes "
                               "(moe-comm-hierarchy): auto (with --cluster, "
                               "the faster estimated decode step; else on), "
                               "on or off"),
                      cl::init("auto"), cl::value_desc("auto|on|off"),
                      cl::cat(passCategory));
cl::opt<std::string>
    vocabParallelFlag("vocab-parallel",
                      cl::desc("Also split the token embedding and the LM "
                               "head by vocabulary over a tensor-parallel "
                               "group: auto (when the cost model says the "
                               "LM head reads it saves outweigh the "
                               "collectives it adds), on or off"),
                      cl::init("auto"), cl::value_desc("auto|on|off"),
                      cl::cat(passCategory));
cl::opt<std::string>
    pipelineFlag("pipeline",
                 cl::desc("Passes replacing the default pipeline, e.g. "
                          "'canonicalize,moe-fuse-gating' ('none': the "
                          "imported IR as it is)"),
                 cl::value_desc("passes"), cl::cat(passCategory));
cl::list<std::string> passPlugins("load-pass-plugin",
                                  cl::desc("Load passes from a plugin library"),
                                  cl::value_desc("lib.so"),
                                  cl::cat(passCategory));

const cl::OptionCategory *const toolCategories[] = {
    &inputCategory, &targetCategory, &passCategory, &outputCategory};

/// Hides from --help every option outside the tool's categories and LLVM's
/// generic one (--help, --version). cl::HideUnrelatedOptions makes them
/// ReallyHidden, gone from --help-hidden too, yet they work (e.g.
/// --mlir-print-ir-after-all): they are made Hidden again, which
/// --help-hidden lists.
void hideUnrelatedOptions() {
  llvm::SmallVector<cl::Option *> shown;
  for (auto &entry : cl::getRegisteredOptions())
    if (entry.second->getOptionHiddenFlag() != cl::ReallyHidden)
      shown.push_back(entry.second);
  cl::HideUnrelatedOptions(toolCategories);
  for (cl::Option *option : shown)
    if (option->getOptionHiddenFlag() == cl::ReallyHidden)
      option->setHiddenFlag(cl::Hidden);
}

/// The option of --help nearest to `name` (without dashes and value), or ""
/// when none is close enough to be what was meant.
std::string nearestVisibleOption(llvm::StringRef name) {
  std::string best;
  unsigned bestDistance = std::max<unsigned>(2, name.size() / 3) + 1;
  for (auto &entry : cl::getRegisteredOptions()) {
    if (entry.second->getOptionHiddenFlag() != cl::NotHidden)
      continue;
    unsigned distance = entry.first.edit_distance(
        name, /*AllowReplacements=*/true, /*MaxEditDistance=*/bestDistance);
    if (distance < bestDistance) {
      bestDistance = distance;
      best = entry.first.str();
    }
  }
  return best;
}

/// One status line on stderr for compiles that take a while (a 2048-expert
/// model spends seconds in import, placement and lowering): the stage, the
/// pass being run and the elapsed time, redrawn in place. Only on a terminal,
/// so logs and tests never see it; cleared before anything else is printed.
class CompileProgress : public PassInstrumentation {
public:
  explicit CompileProgress(bool enabled)
      : enabled_(enabled), start_(std::chrono::steady_clock::now()) {}
  ~CompileProgress() override { clear(); }

  void stage(llvm::StringRef what) {
    if (!enabled_)
      return;
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() -
                                             start_)
                   .count();
    std::string line =
        llvm::formatv("moe-compile: {0} ({1:F1} s)", what, s).str();
    if (line.size() > 100)
      line.resize(100);
    llvm::errs() << "\r" << line << std::string(width_ > line.size() ? width_ - line.size() : 0, ' ');
    width_ = line.size();
    llvm::errs().flush();
  }
  void clear() {
    if (!enabled_ || width_ == 0)
      return;
    llvm::errs() << "\r" << std::string(width_, ' ') << "\r";
    llvm::errs().flush();
    width_ = 0;
  }
  void runBeforePass(Pass *pass, Operation *) override {
    // Pass adaptors (nested pipelines) have no argument; passes nested under
    // moe.model run once per model: one line each.
    if (pass->getArgument().empty())
      return;
    if (pass->getName() != last_)
      stage(("pass " + llvm::Twine(++passes_) + ": " + pass->getArgument())
                .str());
    last_ = pass->getName().str();
  }

private:
  bool enabled_;
  std::chrono::steady_clock::time_point start_;
  size_t width_ = 0;
  unsigned passes_ = 0;
  std::string last_;
};

/// Lends a second pass manager the progress line another one owns.
class ForwardProgress : public PassInstrumentation {
public:
  explicit ForwardProgress(CompileProgress &progress) : progress_(progress) {}
  void runBeforePass(Pass *pass, Operation *op) override {
    progress_.runBeforePass(pass, op);
  }

private:
  CompileProgress &progress_;
};

CompileProgress *gProgress = nullptr;

[[noreturn]] void fail(const llvm::Twine &message) {
  if (gProgress)
    gProgress->clear();
  llvm::errs() << "error: " << oneLine(message.str()) << "\n";
  std::exit(1);
}

/// Exits with "error: --FLAG: ..." when `err` is set.
template <typename T>
T check(llvm::Expected<T> value, llvm::StringRef flag) {
  if (!value)
    fail("--" + flag + ": " + llvm::toString(value.takeError()));
  return std::move(*value);
}

template <typename T>
T choice(std::optional<T> value, llvm::StringRef flag, llvm::StringRef got,
         llvm::StringRef expected) {
  if (!value)
    fail("--" + flag + ": '" + got + "' is not supported (expected " +
         expected + ")");
  return *value;
}

/// The machine of --cluster, when given; it replaces --target's built-in
/// device in the cost model.
std::optional<ClusterSpec> cluster;

/// Reads --cluster and takes the rank grid from it. --devices and
/// --gpus-per-node may repeat what it says, not contradict it.
void applyCluster(CompileOptions &o) {
  llvm::Expected<ClusterSpec> spec =
      readClusterFile(clusterFlag, stringifyTarget(o.target));
  if (!spec)
    fail("--cluster: " + llvm::toString(spec.takeError()));
  cluster = std::move(*spec);
  auto conflict = [&](llvm::StringRef flag, int64_t given, int64_t implied,
                      llvm::StringRef what) {
    fail("--" + flag + ": " + llvm::Twine(given) + " conflicts with --cluster=" +
         clusterFlag + " (" + what + " " + llvm::Twine(implied) +
         "; expected the same value or no --" + flag + ")");
  };
  if (devicesFlag.getNumOccurrences() && o.devices != cluster->getNumDevices())
    conflict("devices", o.devices, cluster->getNumDevices(),
             llvm::formatv("{0} nodes x {1} devices =", cluster->nodes,
                           cluster->devicesPerNode)
                 .str());
  if (gpusPerNodeFlag.getNumOccurrences() &&
      o.gpusPerNode != cluster->devicesPerNode)
    conflict("gpus-per-node", o.gpusPerNode, cluster->devicesPerNode,
             "devices_per_node");
  o.devices = cluster->getNumDevices();
  o.gpusPerNode = cluster->devicesPerNode;
}

CompileOptions parseOptions(EmitKind emit) {
  CompileOptions o;
  o.target = choice(parseTarget(targetFlag), "target", targetFlag, "cpu or cuda");
  o.dtype = choice(parseComputeDType(dtypeFlag), "dtype", dtypeFlag,
                   "f32, bf16 or f16");
  o.kvDtype = choice(parseComputeDType(kvDtypeFlag), "kv-dtype", kvDtypeFlag,
                     "f32, bf16 or f16");
  constexpr int64_t kMaxRanks = 1 << 16;
  o.devices = check(parseIntInRange(devicesFlag, 1, kMaxRanks), "devices");
  o.gpusPerNode = o.devices;
  if (gpusPerNodeFlag.getNumOccurrences()) {
    o.gpusPerNode =
        check(parseIntInRange(gpusPerNodeFlag, 1, kMaxRanks), "gpus-per-node");
    if (!clusterFlag.getNumOccurrences() && o.devices % o.gpusPerNode != 0)
      fail("--gpus-per-node: " + llvm::Twine(o.gpusPerNode) +
           " does not divide --devices=" + llvm::Twine(o.devices) +
           " (expected whole nodes)");
  }
  if (clusterFlag.getNumOccurrences())
    applyCluster(o);
  // The runtime's limit (PlanReader): max_batch <= 65536.
  o.maxBatch = check(parseIntInRange(maxBatchFlag, 1, 1 << 16), "max-batch");
  if (maxSeqLenFlag.getNumOccurrences())
    o.maxSeqLen =
        check(parseIntInRange(maxSeqLenFlag, 1, int64_t(1) << 32), "max-seq-len");
  // The runtime's limits (PlanReader): kv_pages and kv_page_size <= 2^24;
  // checked against max_seq_len once the model is read (checkKVPaging).
  if (kvPagesFlag.getNumOccurrences())
    o.kvPages = check(parseIntInRange(kvPagesFlag, 1, int64_t(1) << 24), "kv-pages");
  if (kvPageSizeFlag.getNumOccurrences())
    o.kvPageSize =
        check(parseIntInRange(kvPageSizeFlag, 1, int64_t(1) << 24), "kv-page-size");
  if ((o.kvPages || o.kvPageSize) && o.maxBatch <= 1)
    fail(llvm::Twine(o.kvPages ? "--kv-pages" : "--kv-page-size") +
         ": only with --max-batch above 1 (expected a batched plan; one "
         "sequence keeps one contiguous KV cache)");
  o.placement = choice(parsePlacement(placementFlag), "placement", placementFlag,
                       "balanced, round-robin or contiguous");
  if (expertProfileFlag.getNumOccurrences()) {
    // Checked in full now, so a bad profile is reported before any import.
    o.expertProfile = expertProfileFlag;
    if (llvm::Expected<ExpertProfile> profile =
            readExpertProfileFile(o.expertProfile);
        !profile)
      fail(llvm::toString(profile.takeError()));
  }
  o.expertReplicas =
      check(parseIntInRange(expertReplicasFlag, 0, kMaxRanks), "expert-replicas");
  if (o.expertReplicas > 0 && o.placement != PlacementStrategy::Balanced)
    fail("--expert-replicas: only with --placement=balanced (expected the "
         "load-aware strategy)");
  o.expertSlicing =
      choice(expertSlicingFlag == "on"    ? std::optional<bool>(true)
             : expertSlicingFlag == "off" ? std::optional<bool>(false)
                                          : std::nullopt,
             "expert-slicing", expertSlicingFlag, "on or off");
  if (commHierarchyFlag != "auto" && commHierarchyFlag != "on" &&
      commHierarchyFlag != "off")
    fail("--comm-hierarchy: '" + commHierarchyFlag + "' is not supported "
         "(expected auto, on or off)");
  o.hierarchicalExchanges = commHierarchyFlag != "off";
  if (vocabParallelFlag != "auto" && vocabParallelFlag != "on" &&
      vocabParallelFlag != "off")
    fail("--vocab-parallel: '" + vocabParallelFlag + "' is not supported "
         "(expected auto, on or off)");
  o.tensorParallel =
      check(parseIntInRange(tensorParallelFlag, 1, kMaxRanks), "tensor-parallel");
  if (o.devices % o.tensorParallel != 0)
    fail("--tensor-parallel: " + llvm::Twine(o.tensorParallel) +
         " does not divide --devices=" + llvm::Twine(o.devices) +
         " (expected groups of T ranks)");
  if (memoryBudgetFlag.getNumOccurrences())
    o.memoryBudget = check(parseByteSize(memoryBudgetFlag), "memory-budget");
  else if (cluster && cluster->deviceMemoryBytes)
    o.memoryBudget = cluster->deviceMemoryBytes; // what one device holds
  o.pipeline = pipelineFlag;
  if (emit == EmitKind::Plan && outputPath.empty())
    fail("-o: missing (expected the plan file to write)");
  auto samePath = [](llvm::StringRef a, llvm::StringRef b) {
    return !a.empty() && a != "-" && !b.empty() && b != "-" &&
           (a == b || llvm::sys::fs::equivalent(a, b));
  };
  if (samePath(outputPath, reportPath))
    fail("--report: '" + reportPath +
         "' is also the -o file (expected two different files)");
  if (samePath(outputPath, plotPath) || samePath(reportPath, plotPath))
    fail("--plot: '" + plotPath +
         "' is also the -o or --report file (expected another file)");
  if (samePath(outputPath, modelPath) || samePath(reportPath, modelPath) ||
      samePath(plotPath, modelPath))
    fail("-o/--report/--plot: would overwrite the model '" + modelPath +
         "' (expected another file)");
  if (!plotPath.empty() &&
      !llvm::StringRef(plotPath).ends_with_insensitive(".svg"))
    fail("--plot: '" + plotPath + "' is not supported (expected a .svg file)");
  return o;
}

/// Whether `path` names something that is not a file (a device such as
/// /dev/null, a pipe, /dev/stdout): written in place, since renaming a
/// temporary file over it would replace it (as root, /dev/null itself).
bool isStream(llvm::StringRef path) {
  if (path.empty() || path == "-")
    return true;
  llvm::sys::fs::file_status status;
  return !llvm::sys::fs::status(path, status) &&
         llvm::sys::fs::exists(status) &&
         !llvm::sys::fs::is_regular_file(status) &&
         !llvm::sys::fs::is_directory(status);
}

/// Writes each (path, text) to a temporary file beside `path` and renames
/// them into place only once all are written, so a failure leaves no output
/// at all. "-" or "" is stdout; it and devices or pipes are written last.
void writeOutputs(llvm::ArrayRef<std::pair<std::string, std::string>> outputs) {
  std::vector<std::pair<llvm::sys::fs::TempFile, std::string>> temps;
  auto failAll = [&](const llvm::Twine &message) {
    for (auto &[temp, path] : temps)
      llvm::consumeError(temp.discard());
    fail(message);
  };
  for (const auto &[path, text] : outputs) {
    if (isStream(path))
      continue;
    llvm::Expected<llvm::sys::fs::TempFile> temp =
        llvm::sys::fs::TempFile::create(path + "-%%%%%%.tmp");
    if (!temp)
      failAll(path + ": cannot write: " + llvm::toString(temp.takeError()));
    temps.emplace_back(std::move(*temp), path);
    llvm::raw_fd_ostream os(temps.back().first.FD, /*shouldClose=*/false);
    os << text;
    os.flush();
    if (std::error_code ec = os.error()) {
      os.clear_error();
      failAll(path + ": cannot write: " + ec.message());
    }
  }
  for (auto &[temp, path] : temps)
    if (llvm::Error err = temp.keep(path))
      failAll(path + ": cannot write: " + llvm::toString(std::move(err)));
  for (const auto &[path, text] : outputs) {
    if (path.empty() || path == "-") {
      llvm::outs() << text;
      llvm::outs().flush();
    } else if (isStream(path)) {
      std::error_code ec;
      llvm::raw_fd_ostream os(path, ec);
      if (!ec) {
        os << text;
        os.flush();
        ec = os.error();
        os.clear_error();
      }
      if (ec)
        fail(path + ": cannot write: " + ec.message());
    }
  }
}

/// The first error of MLIR's pipeline parser run on `text`, which starts at
/// `offset` in --pipeline: "MLIR Textual PassPipeline Parser:1:5: error:
/// WHAT\nTEXT\n    ^" becomes "WHAT (at column N)". A pass option's own
/// error comes first, "for the --NAME option: WHAT", and is kept.
std::string pipelineError(llvm::StringRef errors, size_t offset) {
  llvm::StringRef first = errors.trim().split('\n').first;
  unsigned column = 0;
  if (first.consume_front("MLIR Textual PassPipeline Parser:")) {
    auto [position, message] = first.split(": error: ");
    if (position.split(':').second.getAsInteger(10, column))
      column = 0;
    first = message;
  } else if (size_t at = first.find(": for the ");
             at != llvm::StringRef::npos) {
    first = first.drop_front(at + 2);
  }
  std::string result = first.trim().str();
  if (column > 0)
    result += " (at column " + std::to_string(offset + column) + ")";
  return result;
}

/// Runs `fn` with stderr going to a temporary file, and returns what was
/// written there.
std::string captureStderr(llvm::function_ref<void()> fn) {
  llvm::errs().flush();
  std::fflush(stderr);
  std::FILE *file = std::tmpfile();
  int saved = file ? ::dup(STDERR_FILENO) : -1;
  if (saved < 0 || ::dup2(::fileno(file), STDERR_FILENO) < 0) {
    if (file)
      std::fclose(file);
    fn();
    return "";
  }
  fn();
  llvm::errs().flush();
  std::fflush(stderr);
  ::dup2(saved, STDERR_FILENO);
  ::close(saved);
  std::string text;
  std::rewind(file);
  char buffer[4096];
  while (size_t n = std::fread(buffer, 1, sizeof(buffer), file))
    text.append(buffer, n);
  std::fclose(file);
  return text;
}

/// Adds --pipeline to `pm` (on builtin.module): "builtin.module(...)" or a
/// plain list like "canonicalize,moe-fuse-gating,moe-expert-placement". A
/// pass of the list that runs on one kind of op other than the module (every
/// moe- pass runs on moe.model) is nested under that op, consecutive ones
/// together, as mlir-opt nests op-specific passes. MLIR's parser no longer
/// nests implicitly, so each element is parsed alone first, on a pass
/// manager for any op, to learn where its pass runs (this also reports an
/// error at its column in --pipeline).
void addUserPipeline(llvm::StringRef pipeline, OpPassManager &pm) {
  llvm::StringRef text = pipeline.rtrim();
  size_t offset = pipeline.size() - pipeline.ltrim().size();
  text = text.ltrim();
  if (text.starts_with("builtin.module(")) {
    if (!text.ends_with(")"))
      fail("--pipeline: unbalanced parentheses in '" + pipeline + "'");
    text = text.drop_front(strlen("builtin.module(")).drop_back();
    offset += strlen("builtin.module(");
  }
  // Top-level elements and where they start.
  llvm::SmallVector<std::pair<llvm::StringRef, size_t>> elements;
  int depth = 0;
  bool quoted = false;
  size_t begin = 0;
  for (size_t i = 0; i <= text.size(); ++i) {
    char c = i < text.size() ? text[i] : ',';
    if (c == '"')
      quoted = !quoted;
    else if (!quoted && (c == '(' || c == '{'))
      ++depth;
    else if (!quoted && (c == ')' || c == '}'))
      --depth;
    else if (!quoted && depth == 0 && c == ',') {
      llvm::StringRef element = text.slice(begin, i);
      size_t lead = element.size() - element.ltrim().size();
      elements.push_back({element.trim(), offset + begin + lead});
      begin = i + 1;
    }
  }
  std::string rewritten, anchor;
  auto closeGroup = [&] {
    if (!anchor.empty())
      rewritten += ")";
    anchor.clear();
  };
  if (depth != 0 || quoted)
    fail("--pipeline: unbalanced parentheses, braces or quotes in '" +
         pipeline + "'");
  for (auto [element, at] : elements) {
    std::string errors;
    llvm::raw_string_ostream es(errors);
    OpPassManager any; // runs on any op: accepts every pass and nesting
    LogicalResult parsed = failure();
    // llvm::cl prints a bad pass option value ("moe-compile: for the
    // --strategy option: ...") to stderr itself, not to `es`.
    std::string optionError = captureStderr(
        [&] { parsed = parsePassPipeline(element, any, es); });
    if (failed(parsed)) {
      llvm::StringRef pass = element.take_until(
          [](char c) { return c == '{' || c == '(' || c == ' '; });
      llvm::StringRef option = llvm::StringRef(optionError).trim();
      if (size_t f = option.find(": for the --"); f != llvm::StringRef::npos) {
        auto [name, what] = option.drop_front(f + 12).split(" option: ");
        fail("--pipeline: " + pass + " option " + name + ": " +
             what.split('\n').first);
      }
      llvm::StringRef message = llvm::StringRef(errors).trim();
      if (message.consume_front("<Pass-Options-Parser>: "))
        fail("--pipeline: " + pass + ": " + message.split('\n').first);
      fail("--pipeline: " + pipelineError(errors, at));
    }
    // One pass restricted to one op: nest it; anything else stays on the
    // module (op-agnostic passes, nested pipelines, registered pipelines).
    std::string opName;
    if (any.size() == 1)
      if (std::optional<llvm::StringRef> name = any.begin()->getOpName())
        if (*name != ModuleOp::getOperationName())
          opName = name->str();
    if (opName != anchor)
      closeGroup();
    if (!rewritten.empty() && rewritten.back() != '(')
      rewritten += ",";
    if (!opName.empty() && opName != anchor) {
      rewritten += opName + "(";
      anchor = opName;
    }
    rewritten += element.str();
  }
  closeGroup();
  std::string errors;
  llvm::raw_string_ostream es(errors);
  if (failed(parsePassPipeline(rewritten, pm, es)))
    fail("--pipeline: " + pipelineError(errors, 0) + " in '" + rewritten + "'");
}

/// How the tensor-parallel degree was decided, for the report.
struct TensorParallelChoice {
  /// Compared by the cost model (else `reason` says why not).
  bool compared = false;
  std::string reason;
  /// Each degree compared: its estimated decode step, or why it cannot be
  /// used (the first error compiling the model with it).
  /// The exchanges' form was compared too (several nodes, --cluster).
  bool comparedHierarchy = false;
  std::string hierarchyReason;
  struct Candidate {
    int64_t T = 1;
    bool hierarchical = true;
    double decodeMs = 0;
    /// Weights moe-layer-streaming streams with this T (0: all resident).
    int64_t streamedBytes = 0;
    std::string excluded;
  };
  std::vector<Candidate> candidates;
};

/// --vocab-parallel for a tensor-parallel degree: given, or the cost model's
/// (estimateVocabParallel) on the cluster's device or the target's.
struct VocabParallelChoice {
  bool enabled = false;
  std::string reason;
  VocabParallelEstimate estimate;
};

VocabParallelChoice chooseVocabParallel(ModuleOp module,
                                        const CompileOptions &options) {
  VocabParallelChoice c;
  ModelOp model = *module.getOps<ModelOp>().begin();
  int64_t T = options.tensorParallel;
  c.estimate = estimateVocabParallel(
      model, T,
      cluster ? cluster->device
              : deviceModelFor(stringifyTarget(options.target)),
      options.dtype == ComputeDType::F32 ? 32 : 16,
      options.gpusPerNode % T != 0);
  if (vocabParallelFlag != "auto") {
    c.enabled = vocabParallelFlag == "on" && T > 1;
    c.reason = "given by --vocab-parallel";
    return c;
  }
  c.enabled = c.estimate.pays();
  c.reason = !c.estimate.unavailable.empty()
                 ? c.estimate.unavailable
                 : llvm::formatv("the LM head reads {0:F3} ms less per token "
                                 "{1} the collectives add {2:F3} ms",
                                 c.estimate.savedMs,
                                 c.enabled ? "and" : "but", c.estimate.addedMs)
                       .str();
  return c;
}

/// The report's line: "vocab parallel: yes|no (why)".
void printVocabParallelChoice(llvm::raw_ostream &os,
                              const VocabParallelChoice &c) {
  os << "vocab parallel: " << (c.enabled ? "yes" : "no") << " (" << c.reason
     << ")\n";
}

llvm::json::Value toJSON(const VocabParallelChoice &c) {
  llvm::json::Object o{{"enabled", c.enabled}, {"reason", c.reason}};
  if (c.estimate.unavailable.empty()) {
    o["lm_head_saved_ms"] = c.estimate.savedMs;
    o["collectives_added_ms"] = c.estimate.addedMs;
  }
  return o;
}

/// Compares the degrees the cost model may choose when --tensor-parallel is
/// not given: with --cluster, several ranks per node and the default
/// pipeline.
bool choosesTensorParallel(const CompileOptions &options) {
  return !tensorParallelFlag.getNumOccurrences() && cluster &&
         options.gpusPerNode > 1 && options.pipeline.empty();
}

/// Compares flat and hierarchical exchanges (--comm-hierarchy=auto): with
/// --cluster, several nodes of several ranks and the default pipeline.
bool choosesHierarchy(const CompileOptions &options) {
  return commHierarchyFlag == "auto" && cluster && options.gpusPerNode > 1 &&
         options.getNumNodes() > 1 && options.pipeline.empty();
}

/// Why the exchanges' form is what it is when the cost model does not
/// choose it.
std::string fixedHierarchyReason(const CompileOptions &options) {
  if (commHierarchyFlag != "auto")
    return "given by --comm-hierarchy";
  if (!options.pipeline.empty())
    return "default with --pipeline";
  return "default without --cluster: the cost model chooses it for a "
         "cluster's links";
}

/// Why the degree is what it is when the cost model does not choose it.
std::string fixedTensorParallelReason(const CompileOptions &options) {
  if (tensorParallelFlag.getNumOccurrences())
    return "given by --tensor-parallel";
  if (options.devices == 1)
    return "one rank";
  if (cluster && options.gpusPerNode == 1)
    return "one rank per node: a tensor-parallel group stays within a node";
  if (!options.pipeline.empty())
    return "default with --pipeline";
  return "default without --cluster: the cost model chooses the degree for "
         "a cluster's device";
}

/// The cost model's choices (choosesTensorParallel, choosesHierarchy):
/// `module` has run the placement half of the default pipeline; the
/// tensor-parallel half (which starts with moe-comm-hierarchy) runs on a
/// copy for every candidate, and the one with the fastest estimated decode
/// step on the cluster's device wins (ties: the smaller T, then
/// hierarchical exchanges). The degrees are those that divide a node's ranks
/// (a Megatron group stays within a node's links) or the given one; the
/// exchanges flat and hierarchical over several nodes, or the given form.
/// The estimate reads every weight at memory bandwidth, so a candidate whose
/// weights fit the memory budget beats one that streams weights (a T > 1
/// streams its ranks' tensor-parallel parts). A T that fails to compile
/// drops out: one the model cannot be sliced by (heads, kv heads,
/// intermediate sizes, attention the pass cannot slice) or whose ranks
/// exceed the budget even streamed.
TensorParallelChoice chooseParallelism(MLIRContext &context, ModuleOp module,
                                       CompileOptions &options) {
  TensorParallelChoice choice;
  choice.compared = choosesTensorParallel(options);
  choice.comparedHierarchy = choosesHierarchy(options);
  SmallVector<int64_t> degrees = {options.tensorParallel};
  if (choice.compared) {
    degrees.clear();
    for (int64_t T = 1; T <= options.gpusPerNode; ++T)
      if (options.gpusPerNode % T == 0)
        degrees.push_back(T);
  }
  SmallVector<bool> forms = choice.comparedHierarchy
                                ? SmallVector<bool>{true, false}
                                : SmallVector<bool>{options.hierarchicalExchanges};
  double best = 0;
  bool any = false, bestStreams = false;
  for (int64_t T : degrees) {
    for (bool hierarchical : forms) {
      TensorParallelChoice::Candidate candidate;
      candidate.T = T;
      candidate.hierarchical = hierarchical;
      CompileOptions o = options;
      o.tensorParallel = T;
      o.hierarchicalExchanges = hierarchical;
      o.vocabParallel = chooseVocabParallel(module, o).enabled;
      OwningOpRef<ModuleOp> copy = module.clone();
      PassManager pm(&context, ModuleOp::getOperationName());
      buildTensorParallelPipeline(pm, o);
      LogicalResult compiled = success();
      {
        // A candidate's errors are why it drops out, not the compile's.
        ScopedDiagnosticHandler quiet(&context, [&](Diagnostic &diag) {
          if (diag.getSeverity() == DiagnosticSeverity::Error &&
              candidate.excluded.empty()) {
            std::string where;
            if (auto name = dyn_cast<NameLoc>(diag.getLocation()))
              where = name.getName().str() + ": ";
            candidate.excluded =
                oneLine(where + llvm::StringRef(diag.str())
                                    .split(" (expected")
                                    .first.str());
          }
          return success();
        });
        compiled = pm.run(*copy);
      }
      if (failed(compiled)) {
        if (candidate.excluded.empty())
          candidate.excluded = "does not compile";
        choice.candidates.push_back(std::move(candidate));
        continue;
      }
      ModelCost cost =
          analyzeModel(*copy->getOps<ModelOp>().begin(), options.maxSeqLen);
      candidate.decodeMs =
          estimateDecodeLatency(cost, cluster->device,
                                options.dtype == ComputeDType::F32 ? 32 : 16)
              .totalMs;
      candidate.streamedBytes = cost.streaming ? cost.streamedWeightBytes : 0;
      // Resident weights first, then the fastest.
      bool streams = candidate.streamedBytes > 0;
      bool better = !any                    ? true
                    : streams != bestStreams ? !streams
                                             : candidate.decodeMs < best;
      if (better) {
        any = true;
        best = candidate.decodeMs;
        bestStreams = streams;
        options.tensorParallel = T;
        options.hierarchicalExchanges = hierarchical;
      }
      choice.candidates.push_back(std::move(candidate));
    }
  }
  bool someStream = llvm::any_of(choice.candidates, [](const auto &c) {
    return c.streamedBytes > 0;
  });
  choice.reason = choice.compared
                      ? "the fastest estimated decode step of the degrees "
                        "that divide a node's " +
                            std::to_string(options.gpusPerNode) + " ranks" +
                            (someStream
                                 ? ", resident weights before streamed ones"
                                 : "")
                      : fixedTensorParallelReason(options);
  choice.hierarchyReason =
      choice.comparedHierarchy
          ? "the faster estimated decode step at tensor parallel " +
                std::to_string(options.tensorParallel) + " over " +
                std::to_string(options.getNumNodes()) + " nodes"
          : fixedHierarchyReason(options);
  return choice;
}

/// The report's line: "tensor parallel: T (why[: T=1 2.000 ms, ...])".
void printTensorParallelChoice(llvm::raw_ostream &os,
                               const TensorParallelChoice &choice, int64_t T,
                               bool hierarchical) {
  os << "tensor parallel: " << T << " (" << choice.reason;
  // The degrees with the chosen exchanges.
  bool first = true;
  for (const TensorParallelChoice::Candidate &c : choice.candidates) {
    if (!choice.compared || c.hierarchical != hierarchical)
      continue;
    os << (first ? ": " : ", ") << "T=" << c.T << " ";
    first = false;
    if (c.excluded.empty())
      os << llvm::formatv("{0:F3} ms", c.decodeMs);
    if (c.streamedBytes)
      os << " streaming " << formatBytes(uint64_t(c.streamedBytes));
    if (!c.excluded.empty())
      os << "excluded (" << c.excluded << ")";
  }
  os << ")\n";
}

/// The report's line over several nodes: "exchanges: hierarchical|flat
/// (why[: hierarchical 2.000 ms, flat 3.000 ms])", the forms at the chosen T.
void printHierarchyChoice(llvm::raw_ostream &os,
                          const TensorParallelChoice &choice, int64_t T,
                          bool hierarchical) {
  os << "exchanges: " << (hierarchical ? "hierarchical" : "flat") << " ("
     << choice.hierarchyReason;
  bool first = true;
  for (const TensorParallelChoice::Candidate &c : choice.candidates) {
    if (!choice.comparedHierarchy || c.T != T)
      continue;
    os << (first ? ": " : ", ") << (c.hierarchical ? "hierarchical " : "flat ");
    first = false;
    if (c.excluded.empty())
      os << llvm::formatv("{0:F3} ms", c.decodeMs);
    else
      os << "excluded (" << c.excluded << ")";
  }
  os << ")\n";
}

llvm::json::Value hierarchyJSON(const TensorParallelChoice &choice, int64_t T,
                                bool hierarchical) {
  llvm::json::Array candidates;
  for (const TensorParallelChoice::Candidate &c : choice.candidates) {
    if (!choice.comparedHierarchy || c.T != T)
      continue;
    llvm::json::Object o{{"hierarchical", c.hierarchical}};
    if (c.excluded.empty())
      o["decode_step_ms"] = c.decodeMs;
    else
      o["excluded"] = c.excluded;
    candidates.push_back(std::move(o));
  }
  return llvm::json::Object{{"hierarchical", hierarchical},
                            {"chosen_by_cost_model", choice.comparedHierarchy},
                            {"reason", choice.hierarchyReason},
                            {"candidates", std::move(candidates)}};
}

llvm::json::Value toJSON(const TensorParallelChoice &choice, int64_t T,
                         bool hierarchical) {
  llvm::json::Array candidates;
  for (const TensorParallelChoice::Candidate &c : choice.candidates) {
    if (!choice.compared || c.hierarchical != hierarchical)
      continue;
    llvm::json::Object o{{"tensor_parallel", c.T}};
    if (c.excluded.empty())
      o["decode_step_ms"] = c.decodeMs;
    if (c.streamedBytes)
      o["streamed_weight_bytes"] = c.streamedBytes;
    if (!c.excluded.empty())
      o["excluded"] = c.excluded;
    candidates.push_back(std::move(o));
  }
  return llvm::json::Object{{"tensor_parallel", T},
                            {"chosen_by_cost_model", choice.compared},
                            {"reason", choice.reason},
                            {"candidates", std::move(candidates)}};
}

/// Adds the device grid [nodes, gpus_per_node] that placement and the
/// communication passes refer to.
void addDeviceGrid(ModelOp model, const CompileOptions &options) {
  if (options.devices == 1)
    return;
  OpBuilder b(model.getContext());
  b.setInsertionPointToStart(&model.getBodyBlock());
  shard::GridOp::create(b, model.getLoc(), "devices",
                        ArrayRef<int64_t>{options.getNumNodes(),
                                          options.gpusPerNode});
}

} // namespace

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  registerMLIRContextCLOptions();
  registerPassManagerCLOptions();
  registerAsmPrinterCLOptions();
  registerTransformsPasses();
  registerMoEPasses();
  registerMoEPipelines();

  hideUnrelatedOptions();

  std::string clErrors;
  llvm::raw_string_ostream clErrorStream(clErrors);
  if (!cl::ParseCommandLineOptions(argc, argv,
                                   "moe compiler: models to moe IR, reports "
                                   "and plans\n\n"
                                   "  MLIR's printing and pass-manager flags "
                                   "(--mlir-print-ir-after-all, ...) are\n"
                                   "  listed by --help-hidden.\n",
                                   &clErrorStream)) {
    // Errors about one option's value were already printed, one line, by
    // the option itself; the others are in clErrors.
    llvm::StringRef first = llvm::StringRef(clErrors).ltrim().split('\n').first;
    if (first.empty())
      return 1;
    first.consume_front(llvm::sys::path::filename(argv[0]));
    first.consume_front(": ");
    // "Unknown command line argument '--devics=4'.  Try: ...": LLVM's
    // suggestion may name an option --help does not show, so the nearest
    // shown one is suggested instead.
    llvm::StringRef unknown = first;
    if (unknown.consume_front("Unknown command line argument '")) {
      llvm::StringRef flag = unknown.split("'.").first.split('=').first;
      std::string nearest = nearestVisibleOption(flag.ltrim('-'));
      if (!nearest.empty())
        fail(flag + ": unknown option (did you mean " +
             (nearest.size() == 1 ? "-" : "--") + nearest + "?)");
      fail(flag + ": unknown option (expected one of moe-compile --help)");
    }
    fail(first.trim());
  }

  std::optional<EmitKind> emit = parseEmitKind(emitFlag);
  if (!emit)
    fail("--emit: '" + emitFlag + "' is not supported (expected plan, "
         "plan-text, mlir or report)");
  CompileOptions options = parseOptions(*emit);
  if (*emit == EmitKind::Plan && (outputPath.empty() || outputPath == "-") &&
      llvm::sys::Process::StandardOutIsDisplayed())
    fail("--emit=plan writes a binary plan file (expected -o PLAN)");

  for (const std::string &path : passPlugins) {
    llvm::Expected<PassPlugin> plugin = PassPlugin::load(path);
    if (!plugin)
      fail(path + ": cannot load pass plugin: " +
           llvm::toString(plugin.takeError()));
    plugin->registerPassRegistryCallbacks();
  }

  DialectRegistry registry;
  registry.insert<MoEDialect, shard::ShardDialect>();
  MLIRContext context(registry);
  context.loadAllAvailableDialects();
  // Diagnostics from verification and passes: one line each, naming MODEL.
  ScopedDiagnosticHandler diagnostics(&context, [&](Diagnostic &diag) {
    // Remarks are notes (e.g. checkpoint tensors the importer skipped).
    if (diag.getSeverity() == DiagnosticSeverity::Remark) {
      if (gProgress)
        gProgress->clear();
      llvm::errs() << "note: "
                   << oneLine(modelPath.getValue() + ": " + diag.str()) << "\n";
      return success();
    }
    if (diag.getSeverity() != DiagnosticSeverity::Error)
      return success();
    // Ops carry where in the model they come from ("layers.3.router", or
    // file:line:col for IR read from a file).
    std::string where;
    if (gProgress)
      gProgress->clear();
    Location loc = diag.getLocation();
    if (auto name = dyn_cast<NameLoc>(loc))
      where = name.getName().str() + ": ";
    else if (auto file = dyn_cast<FileLineColLoc>(loc))
      where = (file.getFilename().strref() + ":" + Twine(file.getLine()) + ":" +
               Twine(file.getColumn()) + ": ")
                  .str();
    llvm::errs() << "error: "
                 << oneLine(modelPath.getValue() + ": " + where + diag.str())
                 << "\n";
    return success();
  });

  PassManager pm(&context, ModuleOp::getOperationName());
  if (failed(applyPassManagerCLOptions(pm)))
    fail("invalid pass manager options");
  auto progressOwner = std::make_unique<CompileProgress>(
      llvm::sys::Process::StandardErrIsDisplayed());
  CompileProgress &progress = *progressOwner;
  gProgress = &progress;
  pm.addInstrumentation(std::move(progressOwner));
  // The default pipeline's tensor-parallel half is added once the degree is
  // known when the cost model chooses it.
  bool chooseTP = choosesTensorParallel(options);
  bool chooseHierarchy = choosesHierarchy(options);
  // The default pipeline's tensor-parallel half follows once the placed
  // model is there: the cost model's choices (T, exchanges, vocab-parallel)
  // read it.
  if (options.pipeline.empty()) {
    buildPlacementPipeline(pm, options);
  } else if (options.pipeline == "none") {
    // The importer's IR as it is (for people and importer tests).
  } else {
    addUserPipeline(options.pipeline, pm);
  }

  ImportOptions importOptions;
  importOptions.descriptionDType = options.dtype;
  progress.stage("importing " + llvm::sys::path::filename(modelPath).str());
  llvm::Expected<OwningOpRef<ModuleOp>> imported =
      importModel(modelPath, context, importOptions);
  if (!imported)
    fail(llvm::toString(imported.takeError()));
  OwningOpRef<ModuleOp> module = std::move(*imported);
  ModelOp model = *module->getOps<ModelOp>().begin();
  if (options.maxSeqLen > model.getMaxPositionEmbeddings())
    fail("--max-seq-len: " + llvm::Twine(options.maxSeqLen) +
         " exceeds the model's max_position_embeddings " +
         llvm::Twine(model.getMaxPositionEmbeddings()) +
         " (expected a KV cache within the positions the model knows)");
  {
    int64_t maxSeqLen = options.maxSeqLen > 0
                            ? options.maxSeqLen
                            : plan::defaultMaxSeqLen(model.getMaxPositionEmbeddings());
    std::string why = plan::checkKVPaging(options, maxSeqLen);
    if (!why.empty())
      fail(why);
  }
  addDeviceGrid(model, options);
  if (options.kvDtype != ComputeDType::F32) {
    Builder b(&context);
    Type kv = options.kvDtype == ComputeDType::BF16 ? Type(b.getBF16Type())
                                                     : Type(b.getF16Type());
    model.setKvCacheDtypeAttr(TypeAttr::get(kv));
  }

  if (failed(pm.run(*module)))
    std::exit(1); // the diagnostic handler printed why
  TensorParallelChoice tpChoice;
  VocabParallelChoice vocabChoice;
  if (options.pipeline.empty()) {
    if (chooseTP || chooseHierarchy) {
      progress.stage(chooseTP ? "choosing the tensor-parallel degree"
                              : "choosing the exchanges' form");
      tpChoice = chooseParallelism(context, *module, options);
    } else {
      tpChoice.reason = fixedTensorParallelReason(options);
      tpChoice.hierarchyReason = fixedHierarchyReason(options);
    }
    vocabChoice = chooseVocabParallel(*module, options);
    options.vocabParallel = vocabChoice.enabled;
    PassManager rest(&context, ModuleOp::getOperationName());
    if (failed(applyPassManagerCLOptions(rest)))
      fail("invalid pass manager options");
    rest.addInstrumentation(std::make_unique<ForwardProgress>(progress));
    buildTensorParallelPipeline(rest, options);
    if (failed(rest.run(*module)))
      std::exit(1); // the diagnostic handler printed why (chosen T: T = 1's)
  } else {
    tpChoice.reason = fixedTensorParallelReason(options);
    tpChoice.hierarchyReason = fixedHierarchyReason(options);
  }

  // Render everything before writing anything.
  std::string main, reportJson, plot;
  llvm::raw_string_ostream mainStream(main);
  std::optional<ModelCost> cost;
  LatencyEstimate latency;
  if (*emit == EmitKind::Report || !reportPath.empty() || !plotPath.empty()) {
    cost = analyzeModel(*module->getOps<ModelOp>().begin(), options.maxSeqLen);
    latency = estimateDecodeLatency(
        *cost,
        cluster ? cluster->device
                : deviceModelFor(stringifyTarget(options.target)),
        options.dtype == ComputeDType::F32 ? 32 : 16);
  }
  switch (*emit) {
  case EmitKind::MLIR:
    module->print(mainStream);
    mainStream << "\n";
    break;
  case EmitKind::Report:
    printReport(mainStream, *cost, &latency);
    if (options.devices > 1)
      printTensorParallelChoice(mainStream, tpChoice, options.tensorParallel,
                                options.hierarchicalExchanges);
    if (options.getNumNodes() > 1 && options.gpusPerNode > 1)
      printHierarchyChoice(mainStream, tpChoice, options.tensorParallel,
                           options.hierarchicalExchanges);
    if (options.tensorParallel > 1 && options.pipeline.empty())
      printVocabParallelChoice(mainStream, vocabChoice);
    break;
  case EmitKind::Plan:
    progress.stage("lowering to a plan");
    if (failed(emitPlan(*module, options, mainStream)))
      std::exit(1); // the diagnostic handler printed why
    break;
  case EmitKind::PlanText:
    progress.stage("lowering to a plan");
    if (failed(emitPlanText(*module, options, mainStream)))
      std::exit(1);
    break;
  }
  std::vector<std::pair<std::string, std::string>> outputs;
  if (!plotPath.empty()) {
    llvm::raw_string_ostream plotStream(plot);
    printReportSVG(plotStream, *cost);
  }
  if (!reportPath.empty()) {
    llvm::json::Value json = toJSON(*cost);
    json.getAsObject()->insert({"estimated_latency", toJSON(latency)});
    json.getAsObject()->insert(
        {"tensor_parallel_choice", toJSON(tpChoice, options.tensorParallel,
                                          options.hierarchicalExchanges)});
    json.getAsObject()->insert(
        {"comm_hierarchy", hierarchyJSON(tpChoice, options.tensorParallel,
                                         options.hierarchicalExchanges)});
    if (options.tensorParallel > 1 && options.pipeline.empty())
      json.getAsObject()->insert({"vocab_parallel", toJSON(vocabChoice)});
    llvm::raw_string_ostream(reportJson)
        << llvm::formatv("{0:2}", json) << "\n";
    outputs.emplace_back(reportPath, std::move(reportJson));
  }
  if (!plotPath.empty())
    outputs.emplace_back(plotPath, std::move(plot));
  outputs.emplace_back(outputPath, std::move(main));
  progress.clear();
  writeOutputs(outputs);
  return 0;
}
