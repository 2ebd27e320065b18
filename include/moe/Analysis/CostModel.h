//===- CostModel.h - parameters, FLOPs and bytes of a model -----*- C++ -*-===//
//
// Exact counts read off the IR (saturating at INT64_MAX, never overflowing,
// for absurd hand-written shapes): every moe.param once, active parameters per
// token (routed experts count top_k of num_experts), FLOPs per token from
// CostOpInterface, weight bytes by stored dtype, and a per-layer breakdown.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_ANALYSIS_COSTMODEL_H
#define MOE_ANALYSIS_COSTMODEL_H

#include "moe/Dialect/MoEOps.h"

#include "llvm/Support/JSON.h"
#include "llvm/Support/raw_ostream.h"

#include <map>
#include <string>
#include <vector>

namespace mlir::moe {

struct LayerCost {
  int64_t index = 0;
  bool moe = false;
  int64_t numExperts = 0, topK = 0;
  /// Parameters first used in this layer.
  int64_t params = 0;
  /// Parameters one token uses: everything but the routed experts it skips.
  int64_t activeParams = 0;
  /// Matmul FLOPs per token (2 per multiply-accumulate), without attention
  /// scores.
  int64_t flopsPerToken = 0;
  /// q k^T and p v FLOPs per token at the report's context length.
  int64_t attentionFlopsPerToken = 0;
  /// The rank of each expert (moe-expert-placement); empty when every rank
  /// holds every expert.
  std::vector<int64_t> expertRanks;
  /// Expert slicing: parts per expert (expertRanks then lists each part's
  /// rank, and expertsPerRank counts parts).
  int64_t expertSlices = 1;
  /// The ranks of the extra copies of replicated (hot) experts.
  std::vector<int64_t> replicaRanks;
  /// Expert copies each rank holds (numRanks entries; MoE layers only).
  std::vector<int64_t> expertsPerRank;
};

/// What one rank holds. Parameters follow the expert placement and the
/// tensor-parallel slicing (a member's part of each sliced weight; the
/// row-parallel and down biases, whole, on member 0 of each group); the bytes
/// come from moe-plan-memory (`moe.memory`, `moe.peak_bytes`) and are -1
/// when it has not run.
struct RankCost {
  int64_t rank = 0;
  int64_t params = 0;
  /// Weights in the compute dtype, the activation arena and the KV cache;
  /// peakBytes is their sum.
  int64_t weightBytes = -1, activationBytes = -1, kvCacheBytes = -1,
          peakBytes = -1;
};

struct ModelCost {
  std::string name, architecture;
  int64_t vocabSize = 0, hiddenSize = 0, numLayers = 0, numMoELayers = 0;
  int64_t contextLength = 0;

  int64_t totalParams = 0;
  /// Conventional "active parameters": all non-expert parameters (embedding
  /// tables included) plus top_k experts per MoE layer.
  int64_t activeParams = 0;
  /// Parameters one decode step reads: as activeParams, but an embedding
  /// table that is only looked up contributes one row.
  int64_t paramsReadPerToken = 0;
  /// Parameters outside the layers (embeddings, final norm, lm_head).
  int64_t nonLayerParams = 0;

  int64_t totalBytes = 0, bytesReadPerToken = 0;
  /// Stored dtype ("f32", "bf16", "f16") -> bytes of the parameters.
  std::map<std::string, int64_t> bytesByDType;

  int64_t flopsPerToken = 0;          // matmul, context-independent
  int64_t attentionFlopsPerToken = 0; // at contextLength

  std::vector<LayerCost> layers;
  /// Op name -> number of ops in the graph (the IR summary).
  std::map<std::string, int64_t> opCounts;

  /// Ranks of the device grid (1 without one) and what each holds.
  int64_t numRanks = 1;
  std::vector<int64_t> gridShape;
  /// Ranks per tensor-parallel group (moe.tensor_parallel; 1: none), and
  /// what a member then does not read or compute per token: the parts of the
  /// sliced weights other members hold ((T-1)/T, less for k/v projections
  /// of fewer kv heads than T; row-parallel and down biases stay whole),
  /// those stored as f32, and the sliced ops' FLOPs likewise. The latency
  /// estimate is per rank, so it subtracts them.
  int64_t tensorParallel = 1;
  /// Data-parallel groups (moe.data_parallel; 1: none). With groups, the
  /// communication per token is that of a step in which every group decodes
  /// one token, per rank, with routing spread evenly over the ranks.
  int64_t dataParallel = 1;
  int64_t tpSavedBytesPerToken = 0, tpSavedF32BytesPerToken = 0;
  int64_t tpSavedFlopsPerToken = 0, tpSavedAttentionFlopsPerToken = 0;
  std::vector<RankCost> ranks;
  bool hasMemoryPlan = false;
  /// moe-layer-streaming's decisions (`moe.streaming`), when it streamed.
  bool streaming = false;
  int64_t streamingBudgetBytes = 0, streamedWeightBytes = 0,
          streamingPeakBytes = 0;

  /// Bytes of the weights read per token that are stored as f32 (they halve
  /// when the compute dtype is 16-bit).
  int64_t f32BytesReadPerToken = 0;
  /// KV cache bytes (K and V of every attention layer, or MLA's latent row,
  /// in the model's kv_cache_dtype) per position.
  int64_t kvBytesPerPosition = 0;
  /// That element type's name (f32, bf16, f16).
  std::string kvCacheDtype = "f32";
  /// Communication one rank does per decode token, as the plan executes the
  /// expert exchanges (a ring all-reduce of the per-slot expert outputs over
  /// each exchange's group): bytes sent and sequential messages, within a
  /// node and across nodes.
  int64_t commBytesIntraNode = 0, commBytesInterNode = 0;
  int64_t commMessagesIntraNode = 0, commMessagesInterNode = 0;
};

/// A device for the latency estimate: sustained memory read bandwidth, peak
/// matmul throughput and the links of the exchanges.
struct DeviceModel {
  std::string name;
  double memoryBytesPerSec = 0, flopsPerSec = 0;
  double intraNodeBytesPerSec = 0, interNodeBytesPerSec = 0;
  double intraNodeLatencySec = 0, interNodeLatencySec = 0;
  /// Per-step dispatch overhead (kernel launch under a graph, thread wake).
  double stepOverheadSec = 0;
};

/// The device assumed for `target` ("cpu": the 2-core AMD EPYC these numbers
/// were measured on; "cuda": one H100 SXM per rank, NVLink within a node,
/// 400 Gb/s InfiniBand across nodes).
DeviceModel deviceModelFor(llvm::StringRef target);

/// A roofline estimate of one decode step (batch 1) at the report's context
/// length: weight and KV reads at memory bandwidth or matmul FLOPs at peak,
/// whichever is slower, plus the exchanges and the per-step overhead.
struct LatencyEstimate {
  std::string device;
  double weightsMs = 0, kvCacheMs = 0, computeMs = 0, commMs = 0,
         overheadMs = 0, totalMs = 0;
};

/// Estimates the decode step of `cost` on `device` with weights held in
/// `computeBits`-bit floats (f32 checkpoints convert to 16 bits at load).
LatencyEstimate estimateDecodeLatency(const ModelCost &cost,
                                      const DeviceModel &device,
                                      int computeBits);

/// Whether a tensor-parallel group of T ranks should also split the token
/// embedding and the LM head by vocabulary (moe-compile --vocab-parallel=
/// auto): per decode token a member then reads (T-1)/T less of the LM head
/// (savedMs, at the device's memory bandwidth) and the group adds an
/// all-gather of the logits and an all-reduce of the embedded row (addedMs,
/// as the cost model counts them, with their latencies and two more steps).
struct VocabParallelEstimate {
  /// Why the model cannot be split so (empty: it can).
  std::string unavailable;
  double savedMs = 0, addedMs = 0;
  bool pays() const { return unavailable.empty() && savedMs > addedMs; }
};
/// `crossesNodes`: the group's collectives use the inter-node links.
VocabParallelEstimate estimateVocabParallel(ModelOp model, int64_t T,
                                            const DeviceModel &device,
                                            int computeBits, bool crossesNodes);

/// Analyzes `model`; `contextLength` sets how many positions attention sees
/// (0: the model's max_position_embeddings).
ModelCost analyzeModel(ModelOp model, int64_t contextLength = 0);

llvm::json::Value toJSON(const ModelCost &cost);

/// A human-readable report with the per-layer table, the IR summary, and
/// per-rank memory and experts when the model is placed or memory-planned;
/// with `latency`, the communication and decode latency estimate too.
void printReport(llvm::raw_ostream &os, const ModelCost &cost,
                 const LatencyEstimate *latency = nullptr);

llvm::json::Value toJSON(const LatencyEstimate &latency);

/// An SVG picture of the report for people who would rather look than read:
/// per-rank memory (weights / activations / KV cache) as stacked bars and the
/// experts each rank holds per MoE layer as a heat map.
void printReportSVG(llvm::raw_ostream &os, const ModelCost &cost);

} // namespace mlir::moe

#endif // MOE_ANALYSIS_COSTMODEL_H
