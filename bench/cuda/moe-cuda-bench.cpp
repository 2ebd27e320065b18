//===- moe-cuda-bench.cpp - Kernel measurements of issue 14 ---------------===//
//
// The measurements issue 14 asks for that need no backend: the HBM read
// bandwidth (same run), then, against it or against cuBLAS, decode GEMV,
// decode attention at context 2048, the fused gate at 1/512/4096 tokens x 64
// experts, and the grouped expert FFN (hidden 2048, intermediate 8192, 64
// experts, bf16) at 512 and 4096 routed rows, uniform and Zipf-skewed, vs a
// dense cuBLAS product of equal FLOPs. Each time is the median of CUDA-event
// timings after warm-up; working sets exceed the L2 by rotating buffers.
//   moe-cuda-bench [--smoke] [--json FILE]
// Without a device it writes {"gpu": false, ...} and exits 0. --smoke uses
// tiny sizes (a quick run that the kernels launch).
//
//===----------------------------------------------------------------------===//
#include "CudaKernels.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

using namespace moert::cuda;

namespace {

std::string json;

void field(const char *key, double v) {
  char buf[160];
  if (std::isfinite(v))
    std::snprintf(buf, sizeof buf, "%s\"%s\": %.6g", json.size() > 1 ? ", " : "", key, v);
  else // JSON has no inf/nan
    std::snprintf(buf, sizeof buf, "%s\"%s\": null", json.size() > 1 ? ", " : "", key);
  json += buf;
}

void fieldStr(const char *key, const std::string &v) {
  json += (json.size() > 1 ? ", \"" : "\"") + std::string(key) + "\": \"" + v + "\"";
}

[[noreturn]] void fail(const char *what, cudaError_t e) {
  std::fprintf(stderr, "moe-cuda-bench: %s: %s\n", what, cudaGetErrorString(e));
  std::exit(1);
}

#define CK(x)                                                                                      \
  do {                                                                                             \
    cudaError_t e_ = (x);                                                                          \
    if (e_ != cudaSuccess)                                                                         \
      fail(#x, e_);                                                                                \
  } while (0)

void *devAlloc(size_t bytes) {
  void *p = nullptr;
  CK(cudaMalloc(&p, std::max<size_t>(bytes, 16)));
  return p;
}

/// Median (and best) milliseconds of `iters` runs of f after `warm` runs.
std::pair<double, double> timeMs(cudaStream_t s, int warm, int iters,
                                 const std::function<void(int)> &f) {
  for (int i = 0; i < warm; ++i)
    f(i);
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  std::vector<double> t;
  for (int i = 0; i < iters; ++i) {
    CK(cudaEventRecord(a, s));
    f(warm + i);
    CK(cudaEventRecord(b, s));
    CK(cudaEventSynchronize(b));
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(t.begin(), t.end());
  return {t[t.size() / 2], t[0]};
}

} // namespace

int main(int argc, char **argv) {
  bool smoke = false;
  const char *out = nullptr;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--smoke"))
      smoke = true;
    else if (!std::strcmp(argv[i], "--json") && i + 1 < argc)
      out = argv[++i];
    else {
      std::fprintf(stderr, "usage: moe-cuda-bench [--smoke] [--json FILE]\n");
      return 2;
    }
  }
  json = "{";
  auto finish = [&]() {
    json += "}\n";
    std::fputs(json.c_str(), stdout);
    if (out) {
      FILE *f = std::fopen(out, "w");
      if (f) {
        std::fputs(json.c_str(), f);
        std::fclose(f);
      }
    }
  };
  if (deviceCount() == 0) {
    json +=
        "\"gpu\": false, \"note\": \"no CUDA device (cudaGetDeviceCount failed or returned 0)\"";
    finish();
    return 0;
  }
  json += "\"gpu\": true";
  cudaDeviceProp prop{};
  CK(cudaGetDeviceProperties(&prop, 0));
  fieldStr("device", prop.name);
  field("sms", prop.multiProcessorCount);
  field("l2_mib", prop.l2CacheSize / 1048576.0);
  field("smoke", smoke);
  cudaStream_t s;
  CK(cudaStreamCreate(&s));
  const int warm = 3, iters = smoke ? 3 : 10;

  // --- HBM read bandwidth ----------------------------------------------------
  const uint64_t probeBytes = smoke ? (64ull << 20) : (4ull << 30);
  void *probe = devAlloc(probeBytes);
  float *sink = static_cast<float *>(devAlloc(size_t(readProbeBlocks()) * 4));
  CK(fillUniform(probe, WType::F32, int64_t(probeBytes / 4), 1, 1.0f, s));
  auto [bwMed, bwBest] =
      timeMs(s, warm, iters, [&](int) { CK(readProbe(probe, probeBytes, sink, s)); });
  const double bw = probeBytes / (bwBest * 1e-3) / 1e9; // GB/s, best pass
  field("read_bandwidth_gbs", bw);
  field("read_bandwidth_median_gbs", probeBytes / (bwMed * 1e-3) / 1e9);
  cudaFree(probe);

  // --- Decode GEMV (bf16 [N, K], rotating over enough matrices to pass L2) ---
  {
    const int64_t N = smoke ? 512 : 8192, K = smoke ? 256 : 2048;
    const int mats = smoke ? 2 : 8;
    std::vector<void *> w(static_cast<size_t>(mats));
    for (auto &p : w) {
      p = devAlloc(size_t(N * K) * 2);
      CK(fillUniform(p, WType::BF16, N * K, 2, 0.05f, s));
    }
    float *x = static_cast<float *>(devAlloc(size_t(K) * 4)),
          *y = static_cast<float *>(devAlloc(size_t(N) * 4));
    CK(fillUniform(x, WType::F32, K, 3, 1.0f, s));
    auto [ms, best] = timeMs(s, warm, iters * mats, [&](int i) {
      CK(gemv(x, {w[size_t(i % mats)], WType::BF16}, N, K, {}, y, false, s));
    });
    double gbs = double(N * K * 2) / (ms * 1e-3) / 1e9;
    field("gemv_bf16_us", ms * 1e3);
    field("gemv_bf16_gbs", gbs);
    field("gemv_bf16_ratio_to_bandwidth", gbs / bw);
    (void)best;
    for (void *p : w)
      cudaFree(p);
    cudaFree(x);
    cudaFree(y);
  }

  // --- Decode attention at context 2048 (bf16 cache, rotating layers) -------
  {
    const int heads = 32, kvHeads = 8, hd = 128, layers = smoke ? 2 : 16;
    const int64_t ctx = smoke ? 256 : 2048, S = ctx;
    const int64_t ld = (heads + 2 * kvHeads) * hd;
    std::vector<KV> caches(static_cast<size_t>(layers));
    for (auto &c : caches) {
      c.k = devAlloc(size_t(kvHeads * S * hd) * 2);
      c.v = devAlloc(size_t(kvHeads * S * hd) * 2);
      c.type = WType::BF16;
      c.maxSeq = S;
      CK(fillUniform(c.k, WType::BF16, kvHeads * S * hd, 4, 1.0f, s));
      CK(fillUniform(c.v, WType::BF16, kvHeads * S * hd, 5, 1.0f, s));
    }
    float *qkv = static_cast<float *>(devAlloc(size_t(ld) * 4));
    float *o = static_cast<float *>(devAlloc(size_t(heads * hd) * 4));
    CK(fillUniform(qkv, WType::F32, ld, 6, 1.0f, s));
    int64_t pos = ctx - 1;
    int64_t *dpos = static_cast<int64_t *>(devAlloc(8));
    CK(cudaMemcpy(dpos, &pos, 8, cudaMemcpyHostToDevice));
    AttentionArgs a;
    a.qkv = qkv;
    a.ldqkv = ld;
    a.kCol = heads * hd;
    a.vCol = (heads + kvHeads) * hd;
    a.out = o;
    a.ldo = heads * hd;
    a.T = 1;
    a.pos = dpos;
    a.maxPos = pos;
    a.heads = heads;
    a.kvHeads = kvHeads;
    a.headDim = hd;
    a.scale = 0.088f;
    a.cache = caches[0];
    void *ws = devAlloc(attentionWorkspaceBytes(a));
    auto [ms, best] = timeMs(s, warm, iters * layers, [&](int i) {
      a.cache = caches[size_t(i % layers)];
      CK(attention(a, ws, s));
    });
    double bytes = 2.0 * kvHeads * ctx * hd * 2;
    double gbs = bytes / (ms * 1e-3) / 1e9;
    (void)best;
    field("attention_decode_ctx", double(ctx));
    field("attention_decode_us", ms * 1e3);
    field("attention_decode_gbs", gbs);
    field("attention_decode_ratio_to_bandwidth", gbs / bw);
    for (auto &c : caches) {
      cudaFree(c.k);
      cudaFree(c.v);
    }
    cudaFree(qkv);
    cudaFree(o);
    cudaFree(dpos);
    cudaFree(ws);
  }

  // --- Fused gate -------------------------------------------------------------
  {
    const int E = 64, K = 8;
    for (int64_t T : {int64_t(1), int64_t(512), int64_t(4096)}) {
      float *logits = static_cast<float *>(devAlloc(size_t(T * E) * 4));
      CK(fillUniform(logits, WType::F32, T * E, 7, 4.0f, s));
      float *sw = static_cast<float *>(devAlloc(size_t(T * K) * 4));
      int32_t *se = static_cast<int32_t *>(devAlloc(size_t(T * K) * 4));
      int32_t *ss = static_cast<int32_t *>(devAlloc(size_t(T * K) * 4));
      int32_t *off = static_cast<int32_t *>(devAlloc(size_t(E + 1) * 4));
      void *ws = devAlloc(gateWorkspaceBytes(T, E));
      math::GateParams p;
      p.numExperts = E;
      p.topK = K;
      p.normTopk = true;
      auto [ms, best] =
          timeMs(s, warm, iters, [&](int) { CK(gate(logits, E, T, p, se, sw, off, ss, ws, s)); });
      (void)best;
      char key[64];
      std::snprintf(key, sizeof key, "gate_t%lld_e64_k8_us", (long long)T);
      field(key, ms * 1e3);
      for (void *q : {(void *)logits, (void *)sw, (void *)se, (void *)ss, (void *)off, ws})
        cudaFree(q);
    }
  }

  // --- Grouped expert FFN vs dense cuBLAS of equal FLOPs ------------------------
  {
    const int E = smoke ? 8 : 64;
    const int64_t D = smoke ? 256 : 2048, I = smoke ? 512 : 8192;
    const size_t perExpert = size_t(3 * I * D); // gate | up | down, bf16
    char *w = static_cast<char *>(devAlloc(perExpert * size_t(E) * 2));
    CK(fillUniform(w, WType::BF16, int64_t(perExpert) * E, 8, 0.02f, s));
    std::vector<ExpertW> table(static_cast<size_t>(E));
    for (int e = 0; e < E; ++e) {
      char *b = w + perExpert * size_t(e) * 2;
      table[size_t(e)].gate = {b, WType::BF16};
      table[size_t(e)].up = {b + size_t(I * D) * 2, WType::BF16};
      table[size_t(e)].down = {b + size_t(2 * I * D) * 2, WType::BF16};
    }
    ExpertW *dtable = static_cast<ExpertW *>(devAlloc(table.size() * sizeof(ExpertW)));
    CK(cudaMemcpy(dtable, table.data(), table.size() * sizeof(ExpertW), cudaMemcpyHostToDevice));
    Blas blas;
    for (int64_t R : {int64_t(512), int64_t(4096)})
      for (int zipf = 0; zipf < 2; ++zipf) {
        // Routed rows per expert (top-1, T = R): uniform or Zipf(1).
        std::vector<double> share(static_cast<size_t>(E));
        for (int e = 0; e < E; ++e)
          share[size_t(e)] = zipf ? 1.0 / (e + 1) : 1.0;
        double tot = 0;
        for (double v : share)
          tot += v;
        std::vector<int32_t> off(size_t(E + 1), 0);
        double acc = 0;
        for (int e = 0; e < E; ++e) {
          acc += share[size_t(e)] / tot;
          off[size_t(e + 1)] = int32_t(std::lround(acc * double(R)));
        }
        off[size_t(E)] = int32_t(R);
        std::vector<int32_t> sorted(static_cast<size_t>(R));
        for (int64_t j = 0; j < R; ++j)
          sorted[size_t(j)] = int32_t(j);
        int32_t *doff = static_cast<int32_t *>(devAlloc(off.size() * 4));
        int32_t *dsorted = static_cast<int32_t *>(devAlloc(sorted.size() * 4));
        CK(cudaMemcpy(doff, off.data(), off.size() * 4, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(dsorted, sorted.data(), sorted.size() * 4, cudaMemcpyHostToDevice));
        float *x = static_cast<float *>(devAlloc(size_t(R * D) * 4));
        float *so = static_cast<float *>(devAlloc(size_t(R * D) * 4));
        CK(fillUniform(x, WType::F32, R * D, 9, 1.0f, s));
        void *ws = devAlloc(expertsWorkspaceBytes(R, 1, I));
        ExpertsArgs a;
        a.in = x;
        a.ldi = D;
        a.sortedSlots = dsorted;
        a.expertOffsets = doff;
        a.slotOut = so;
        a.T = R;
        a.topK = 1;
        a.numExperts = E;
        a.D = D;
        a.I = I;
        a.experts = dtable;
        a.weightType = WType::BF16;
        auto [gms, gbest] = timeMs(s, warm, iters, [&](int) { CK(experts(a, ws, s)); });
        // Dense: the same rows through one expert's [2I, D] and [D, I].
        float *h = static_cast<float *>(devAlloc(size_t(R * 2 * I) * 4));
        void *lws = devAlloc(Blas::linearWorkspaceBytes(R, I));
        auto [dms, dbest] = timeMs(s, warm, iters, [&](int) {
          CK(blas.linear(x, D, R, table[0].gate, 2 * I, D, false, {}, h, 2 * I, false, lws, s));
          CK(activation(h, 2 * I, h, 2 * I, R, I, ActKind::Silu, true, s));
          CK(blas.linear(h, 2 * I, R, table[0].down, D, I, false, {}, so, D, false, lws, s));
        });
        (void)gbest;
        (void)dbest;
        char key[96];
        const char *dist = zipf ? "zipf" : "uniform";
        std::snprintf(key, sizeof key, "experts_r%lld_%s_ms", (long long)R, dist);
        field(key, gms);
        std::snprintf(key, sizeof key, "dense_r%lld_%s_ms", (long long)R, dist);
        field(key, dms);
        std::snprintf(key, sizeof key, "experts_r%lld_%s_ratio_to_dense", (long long)R, dist);
        field(key, dms / gms);
        for (void *q : {(void *)doff, (void *)dsorted, (void *)x, (void *)so, ws, (void *)h, lws})
          cudaFree(q);
      }
    cudaFree(w);
    cudaFree(dtable);
  }
  CK(cudaStreamSynchronize(s));
  cudaStreamDestroy(s);
  cudaFree(sink);
  finish();
  return 0;
}
