//===- CudaTrace.cpp - Per-step trace events from CUDA events -------------===//
//
// --trace on the CUDA backend: each step launched while a trace is asked for
// is bracketed by two timing events on its stream; when that stream is
// synchronized, their times go into the trace. Device times become host
// times through a base event: recorded on the compute stream before the
// first traced step and waited for at once, its completion is the host time
// read right after (the error is the wake-up latency, microseconds).
// Decode graphs are off while tracing (Session::run), so every step is
// launched and traced.
//
//===----------------------------------------------------------------------===//
#include "CudaBackend.h"

#include "moert/Trace.h"

namespace moert::cuda {

cudaEvent_t CudaBackend::timingEvent() {
  if (!freeTimingEvents_.empty()) {
    cudaEvent_t e = freeTimingEvents_.back();
    freeTimingEvents_.pop_back();
    return e;
  }
  cudaEvent_t e = nullptr;
  check(cudaEventCreate(&e), "cudaEventCreate (trace)");
  return e;
}

void CudaBackend::launchTraced(StreamKind s, const plan::Step &step, const StepArgs &args) {
  cudaStream_t st = stream(s);
  if (!traceBase_) {
    traceBase_ = timingEvent();
    check(cudaEventRecord(traceBase_, stream(StreamKind::Compute)), "trace base");
    check(cudaEventSynchronize(traceBase_), "trace base");
    traceBaseNs_ = nowNs();
  }
  PendingTraceEvent p;
  p.trace = args.trace;
  p.name = step.name() ? step.name()->str() : opName(step.op_type());
  p.cat = opName(step.op_type());
  p.stream = int(s);
  p.issuedNs = nowNs();
  p.start = timingEvent();
  p.end = timingEvent();
  check(cudaEventRecord(p.start, st), "cudaEventRecord (trace)");
  runStep(st, step, args);
  check(cudaEventRecord(p.end, st), "cudaEventRecord (trace)");
  pendingTrace_.push_back(std::move(p));
}

void CudaBackend::flushTrace(StreamKind s) {
  // Events of stream s are complete (the caller synchronized it).
  std::vector<PendingTraceEvent> keep;
  for (PendingTraceEvent &p : pendingTrace_) {
    if (p.stream != int(s)) {
      keep.push_back(std::move(p));
      continue;
    }
    float a = 0.0f, b = 0.0f;
    if (cudaEventElapsedTime(&a, traceBase_, p.start) == cudaSuccess &&
        cudaEventElapsedTime(&b, traceBase_, p.end) == cudaSuccess) {
      int64_t t0 = traceBaseNs_ + int64_t(double(a) * 1e6);
      int64_t t1 = traceBaseNs_ + int64_t(double(b) * 1e6);
      if (s == StreamKind::Compute)
        p.trace->add(std::move(p.name), std::move(p.cat), p.stream, t0, t1);
      else
        p.trace->addIssued(std::move(p.name), std::move(p.cat), p.stream, p.issuedNs, t0, t1);
    } else {
      (void)cudaGetLastError();
    }
    freeTimingEvents_.push_back(p.start);
    freeTimingEvents_.push_back(p.end);
  }
  pendingTrace_ = std::move(keep);
  if (pendingTrace_.empty() && traceBase_) {
    // The next forward call takes a new base.
    freeTimingEvents_.push_back(traceBase_);
    traceBase_ = nullptr;
  }
}

} // namespace moert::cuda
