//===- moe-compile.cpp - the moe compiler driver --------------------------===//
//
//   moe-compile MODEL [-o FILE] [--emit=plan|plan-text|mlir|report] [--report=FILE.json]
//               [--plot=FILE.svg]
//               [--target=cpu|cuda] [--dtype=f32|bf16|f16] [--devices=N]
//               [--gpus-per-node=G] [--max-batch=B] [--max-seq-len=L]
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

#include "moe/Analysis/CostModel.h"
#include "moe/Compiler/ExpertProfile.h"
#include "moe/Compiler/InputLimits.h"
#include "moe/Compiler/Options.h"
#include "moe/Dialect/MoEOps.h"
#include "moe/Import/Import.h"
#include "moe/Plan/EmitPlan.h"
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
#include <cstdlib>

using namespace mlir;
using namespace mlir::moe;
namespace cl = llvm::cl;

namespace {

cl::OptionCategory category("moe-compile options");

cl::opt<std::string> modelPath(cl::Positional, cl::Required,
                               cl::desc("<model .json | checkpoint dir | "
                                        "config.json>"),
                               cl::cat(category));
cl::opt<std::string> outputPath("o", cl::desc("Output file ('-': stdout)"),
                                cl::value_desc("file"), cl::cat(category));
cl::opt<std::string> emitFlag("emit", cl::desc("What to emit: plan, plan-text, mlir, report"),
                              cl::init("plan"), cl::cat(category));
cl::opt<std::string> reportPath("report",
                                cl::desc("Also write the report as JSON"),
                                cl::value_desc("file.json"), cl::cat(category));
cl::opt<std::string>
    plotPath("plot",
             cl::desc("Also draw per-rank memory and experts per rank as SVG"),
             cl::value_desc("file.svg"), cl::cat(category));
cl::opt<std::string> targetFlag("target", cl::desc("cpu or cuda"),
                                cl::init("cpu"), cl::cat(category));
cl::opt<std::string> dtypeFlag("dtype", cl::desc("Compute dtype: f32, bf16, f16"),
                               cl::init("f32"), cl::cat(category));
cl::opt<std::string> devicesFlag("devices", cl::desc("Number of ranks"),
                                 cl::init("1"), cl::cat(category));
cl::opt<std::string>
    gpusPerNodeFlag("gpus-per-node",
                    cl::desc("Ranks per node (default: all on one node)"),
                    cl::cat(category));
cl::opt<std::string> maxBatchFlag("max-batch", cl::desc("Largest batch"),
                                  cl::init("1"), cl::cat(category));
cl::opt<std::string>
    maxSeqLenFlag("max-seq-len",
                  cl::desc("KV cache capacity (default: the model's "
                           "max_position_embeddings)"),
                  cl::cat(category));
cl::opt<std::string>
    placementFlag("placement",
                  cl::desc("Expert placement: balanced, round-robin, "
                           "contiguous"),
                  cl::init("balanced"), cl::cat(category));
cl::opt<std::string>
    expertProfileFlag("expert-profile",
                      cl::desc("Per-expert token counts (moe-run "
                               "--expert-profile) for placement"),
                      cl::value_desc("file.json"), cl::cat(category));
cl::opt<std::string>
    expertReplicasFlag("expert-replicas",
                       cl::desc("Extra copies of the hottest experts per MoE "
                                "layer (balanced placement; default 0)"),
                       cl::init("0"), cl::cat(category));
cl::opt<std::string>
    memoryBudgetFlag("memory-budget",
                     cl::desc("Bytes per rank, e.g. 24GiB (default: "
                              "unlimited)"),
                     cl::cat(category));
cl::opt<std::string> pipelineFlag("pipeline",
                                  cl::desc("Pass pipeline replacing the "
                                           "default one ('none': the "
                                           "imported IR as it is)"),
                                  cl::cat(category));
cl::list<std::string> passPlugins("load-pass-plugin",
                                  cl::desc("Load passes from a plugin library"),
                                  cl::value_desc("lib.so"), cl::cat(category));

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

CompileOptions parseOptions(EmitKind emit) {
  CompileOptions o;
  o.target = choice(parseTarget(targetFlag), "target", targetFlag, "cpu or cuda");
  o.dtype = choice(parseComputeDType(dtypeFlag), "dtype", dtypeFlag,
                   "f32, bf16 or f16");
  constexpr int64_t kMaxRanks = 1 << 16;
  o.devices = check(parseIntInRange(devicesFlag, 1, kMaxRanks), "devices");
  o.gpusPerNode = o.devices;
  if (gpusPerNodeFlag.getNumOccurrences()) {
    o.gpusPerNode =
        check(parseIntInRange(gpusPerNodeFlag, 1, kMaxRanks), "gpus-per-node");
    if (o.devices % o.gpusPerNode != 0)
      fail("--gpus-per-node: " + llvm::Twine(o.gpusPerNode) +
           " does not divide --devices=" + llvm::Twine(o.devices) +
           " (expected whole nodes)");
  }
  o.maxBatch = check(parseIntInRange(maxBatchFlag, 1, 1 << 20), "max-batch");
  if (maxSeqLenFlag.getNumOccurrences())
    o.maxSeqLen =
        check(parseIntInRange(maxSeqLenFlag, 1, int64_t(1) << 32), "max-seq-len");
  o.placement = choice(parsePlacement(placementFlag), "placement", placementFlag,
                       "balanced, round-robin or contiguous");
  if (expertProfileFlag.getNumOccurrences()) {
    // Checked in full now, so a bad profile is reported before any import.
    o.expertProfile = expertProfileFlag;
    if (llvm::Expected<ExpertProfileCounts> profile =
            readExpertProfileFile(o.expertProfile);
        !profile)
      fail(llvm::toString(profile.takeError()));
  }
  o.expertReplicas =
      check(parseIntInRange(expertReplicasFlag, 0, kMaxRanks), "expert-replicas");
  if (o.expertReplicas > 0 && o.placement != PlacementStrategy::Balanced)
    fail("--expert-replicas: only with --placement=balanced (expected the "
         "load-aware strategy)");
  if (memoryBudgetFlag.getNumOccurrences())
    o.memoryBudget = check(parseByteSize(memoryBudgetFlag), "memory-budget");
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

/// Writes each (path, text) to a temporary file beside `path` and renames
/// them into place only once all are written, so a failure leaves no output
/// at all. "-" or "" is stdout, written last.
void writeOutputs(llvm::ArrayRef<std::pair<std::string, std::string>> outputs) {
  std::vector<std::pair<llvm::sys::fs::TempFile, std::string>> temps;
  auto failAll = [&](const llvm::Twine &message) {
    for (auto &[temp, path] : temps)
      llvm::consumeError(temp.discard());
    fail(message);
  };
  for (const auto &[path, text] : outputs) {
    if (path.empty() || path == "-")
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
  for (const auto &[path, text] : outputs)
    if (path.empty() || path == "-") {
      llvm::outs() << text;
      llvm::outs().flush();
    }
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

  std::string clErrors;
  llvm::raw_string_ostream clErrorStream(clErrors);
  if (!cl::ParseCommandLineOptions(argc, argv,
                                   "moe compiler: models to moe IR, reports "
                                   "and plans\n",
                                   &clErrorStream)) {
    // Errors about one option's value were already printed, one line, by
    // the option itself; the others are in clErrors.
    llvm::StringRef first = llvm::StringRef(clErrors).ltrim().split('\n').first;
    if (first.empty())
      return 1;
    first.consume_front(llvm::sys::path::filename(argv[0]));
    first.consume_front(": ");
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
  if (options.pipeline.empty()) {
    buildDefaultPipeline(pm, options);
  } else if (options.pipeline == "none") {
    // The importer's IR as it is (for people and importer tests).
  } else {
    // The pass manager runs on the module itself, so it takes the passes of
    // "builtin.module(...)" (or a bare list of them) directly.
    std::string pipelineErrors;
    llvm::raw_string_ostream es(pipelineErrors);
    llvm::StringRef text = llvm::StringRef(options.pipeline).trim();
    if (text.consume_front("builtin.module(") && !text.consume_back(")"))
      fail("--pipeline: unbalanced parentheses in '" + options.pipeline + "'");
    if (failed(parsePassPipeline(text, pm, es)))
      fail("--pipeline: " +
           llvm::StringRef(pipelineErrors).trim().split('\n').first);
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
  addDeviceGrid(model, options);

  if (failed(pm.run(*module)))
    std::exit(1); // the diagnostic handler printed why

  // Render everything before writing anything.
  std::string main, reportJson, plot;
  llvm::raw_string_ostream mainStream(main);
  std::optional<ModelCost> cost;
  LatencyEstimate latency;
  if (*emit == EmitKind::Report || !reportPath.empty() || !plotPath.empty()) {
    cost = analyzeModel(*module->getOps<ModelOp>().begin(), options.maxSeqLen);
    latency = estimateDecodeLatency(
        *cost, deviceModelFor(stringifyTarget(options.target)),
        options.dtype == ComputeDType::F32 ? 32 : 16);
  }
  switch (*emit) {
  case EmitKind::MLIR:
    module->print(mainStream);
    mainStream << "\n";
    break;
  case EmitKind::Report:
    printReport(mainStream, *cost, &latency);
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
