//===- CudaGraphs.cpp - Decode steps captured once, replayed after --------===//
//
// Session::run asks for a graph when a decode step (one row, or one row per
// sequence of a batch: a graph per batch size) may fetch no weight: the
// step's launches are then the same every time, and launching
// them one by one costs more than the kernels of a small model. The capture
// covers the plan's three streams: the comm and weights streams join it
// through an event of the compute stream and rejoin before it ends.
//
// What a replay must not bake in: host values that change per step. Kernels
// take positions from the device (attention's split ranges from pos, with a
// split count fixed by the cache's size: AttentionArgs::maxPos < 0), rope
// tables cover every position from their first use, and the experts' tables
// are per step and uploaded before the capture needs them. Anything that
// moves memory a graph may read (allocation, weight upload or eviction,
// workspace growth) drops the graphs; the next decode step captures again.
//
//===----------------------------------------------------------------------===//
#include "CudaBackend.h"

#include "moert/Error.h"

#include <cstdlib>
#include <cstring>

namespace moert::cuda {

bool CudaBackend::graphsFromEnv() {
  // MOERT_CUDA_GRAPHS=0: launch decode steps one by one (the benchmark's
  // comparison, and a way around a capture problem).
  const char *v = std::getenv("MOERT_CUDA_GRAPHS");
  return !(v && std::strcmp(v, "0") == 0);
}

void CudaBackend::beginCapture(int key) {
  dropGraph(key);
  // Scratch a decode step may need, allocated now: growing frees the old
  // buffer, which waits for the device and may not happen in a capture.
  workspace(kCaptureWorkspaceBytes);
  if (!forkJoin_[0])
    for (cudaEvent_t &e : forkJoin_)
      check(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "cudaEventCreate");
  cudaStream_t main = stream(StreamKind::Compute);
  // Relaxed: the host side of a step may still allocate (a first rope table).
  check(cudaStreamBeginCapture(main, cudaStreamCaptureModeRelaxed), "cudaStreamBeginCapture");
  capturing_ = true;
  check(cudaEventRecord(forkJoin_[0], main), "capture fork");
  for (StreamKind s : {StreamKind::Comm, StreamKind::Weights})
    check(cudaStreamWaitEvent(stream(s), forkJoin_[0], 0), "capture fork");
}

bool CudaBackend::endCapture(int key) {
  if (!capturing_)
    return false;
  cudaStream_t main = stream(StreamKind::Compute);
  // The other streams' last work joins the compute stream.
  cudaError_t err = cudaSuccess;
  int i = 1;
  for (StreamKind s : {StreamKind::Comm, StreamKind::Weights}) {
    if (!err)
      err = cudaEventRecord(forkJoin_[i], stream(s));
    if (!err)
      err = cudaStreamWaitEvent(main, forkJoin_[i], 0);
    ++i;
  }
  cudaGraph_t graph = nullptr;
  cudaError_t end = cudaStreamEndCapture(main, &graph);
  capturing_ = false;
  cudaGraphExec_t exec = nullptr;
  if (!err && !end && graph && !captureBroken_)
    err = cudaGraphInstantiate(&exec, graph, 0);
  else
    err = err ? err : end;
  if (graph)
    cudaGraphDestroy(graph);
  const bool broken = captureBroken_;
  freeRetired();
  if (err || !exec || broken) {
    (void)cudaGetLastError(); // the session launches the step directly
    return false;
  }
  graphs_[key] = exec;
  check(cudaGraphLaunch(exec, main), "cudaGraphLaunch");
  return true;
}

bool CudaBackend::replay(int key) {
  auto it = graphs_.find(key);
  if (it == graphs_.end())
    return false;
  check(cudaGraphLaunch(it->second, stream(StreamKind::Compute)), "cudaGraphLaunch");
  return true;
}

void CudaBackend::abortCapture() const {
  if (!capturing_)
    return;
  cudaGraph_t graph = nullptr;
  cudaStreamEndCapture(streams_[int(StreamKind::Compute)], &graph);
  if (graph)
    cudaGraphDestroy(graph);
  capturing_ = false;
  freeRetired();
  (void)cudaGetLastError();
}

void CudaBackend::freeRetired() const {
  // Nothing ran from the capture that named them, and nothing will.
  for (void *p : retired_)
    cudaFree(p);
  retired_.clear();
  captureBroken_ = false;
}

void CudaBackend::dropGraph(int key) {
  auto it = graphs_.find(key);
  if (it == graphs_.end())
    return;
  cudaGraphExecDestroy(it->second);
  graphs_.erase(it);
}

void CudaBackend::dropGraphs() {
  for (auto &[key, exec] : graphs_)
    cudaGraphExecDestroy(exec);
  graphs_.clear();
}

static bool sameDW(const DW &a, const DW &b) { return a.data == b.data && a.type == b.type; }

static bool sameTable(const std::vector<ExpertW> &a, const std::vector<ExpertW> &b) {
  if (a.size() != b.size())
    return false;
  for (size_t i = 0; i < a.size(); ++i) {
    const ExpertW &x = a[i], &y = b[i];
    if (!sameDW(x.gate, y.gate) || !sameDW(x.up, y.up) || !sameDW(x.down, y.down) ||
        !sameDW(x.upBias, y.upBias) || !sameDW(x.downBias, y.downBias) ||
        !sameDW(x.gateBias, y.gateBias) || x.replica != y.replica ||
        x.numReplicas != y.numReplicas || x.bytes != y.bytes)
      return false;
  }
  return true;
}

const ExpertW *CudaBackend::capturedExpertTable(const plan::Experts &op) {
  // The table a captured launch reads stays the step's own: the graph keeps
  // its address. Nothing queued reads it (the session synchronized before
  // the capture), so a change is copied synchronously here.
  StepTable &t = stepTables_[&op];
  if (!sameTable(t.host, hostTable_)) {
    if (t.capacity < hostTable_.size()) {
      cudaFree(t.dev);
      t.dev = nullptr;
      check(cudaMalloc(reinterpret_cast<void **>(&t.dev), hostTable_.size() * sizeof(ExpertW)),
            "cudaMalloc (expert table)");
      t.capacity = hostTable_.size();
    }
    check(cudaMemcpy(t.dev, hostTable_.data(), hostTable_.size() * sizeof(ExpertW),
                     cudaMemcpyHostToDevice),
          "expert table");
    t.host = hostTable_;
  }
  return t.dev;
}

} // namespace moert::cuda
