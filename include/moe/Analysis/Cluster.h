//===- Cluster.h - the machine a plan is compiled for -----------*- C++ -*-===//
//
// `moe-compile --cluster=FILE.json` describes the machine instead of the
// built-in device of `--target` (DESIGN.md, "moe-compile"):
//
//   {"name": "16 x 8 H100", "nodes": 16, "devices_per_node": 8,
//    "device": {"name": "H100-SXM", "memory": "80GiB",
//               "memory_bandwidth": "3.35TB/s", "bf16_flops": "989T"},
//    "intra_node": {"bandwidth": "450GB/s", "latency": "3us"},
//    "inter_node": {"bandwidth": "50GB/s", "latency": "8us"}}
//
// Sizes carry units: bytes as --memory-budget takes them (GB = 1e9,
// GiB = 2^30), bandwidths in B/s (KB/s .. TB/s, KiB/s .. TiB/s) or bits
// (Mb/s, Gb/s, Tb/s), FLOP rates with K/M/G/T/P (optionally "FLOPS"),
// latencies in ns/us/ms/s. intra_node is required when a node has several
// devices, inter_node when there are several nodes. Unknown keys are errors:
// a misspelt key would otherwise fall back to a default silently.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_ANALYSIS_CLUSTER_H
#define MOE_ANALYSIS_CLUSTER_H

#include "moe/Analysis/CostModel.h"

#include "llvm/Support/Error.h"

#include <cstdint>
#include <string>

namespace mlir::moe {

struct ClusterSpec {
  std::string name;
  int64_t nodes = 1, devicesPerNode = 1;
  /// Memory of one device in bytes.
  uint64_t deviceMemoryBytes = 0;
  /// The cost model's view of one device and its links.
  DeviceModel device;

  int64_t getNumDevices() const { return nodes * devicesPerNode; }
};

/// Parses and checks a cluster description. `target` ("cpu" or "cuda") gives
/// the per-step overhead, which the file does not describe. Errors read
/// "PATH: what (expected ...)".
llvm::Expected<ClusterSpec> parseCluster(llvm::StringRef text,
                                         llvm::StringRef path,
                                         llvm::StringRef target = "cuda");

/// Reads `path` and parses it.
llvm::Expected<ClusterSpec> readClusterFile(llvm::StringRef path,
                                            llvm::StringRef target = "cuda");

/// The quantities of a cluster file, exposed for tests: bytes per second
/// ("3.35TB/s", "400Gb/s"), FLOP/s ("989T", "989TFLOPS") and seconds
/// ("3us"). They reject a missing number, an unknown unit, zero, negative
/// and non-finite values (latencies may be zero).
llvm::Expected<double> parseBandwidth(llvm::StringRef text);
llvm::Expected<double> parseFlopRate(llvm::StringRef text);
llvm::Expected<double> parseLatency(llvm::StringRef text);

} // namespace mlir::moe

#endif // MOE_ANALYSIS_CLUSTER_H
