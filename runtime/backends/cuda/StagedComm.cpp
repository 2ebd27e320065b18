//===- StagedComm.cpp - A host communicator over device buffers -----------===//
//
// Ranks that share one GPU (moe-run --devices=N on one device, the backend
// conformance suite's in-process ranks) or have no NCCL talk through a host
// communicator, which cannot read device memory. This adapter stages each
// collective's device buffers through host memory: correct everywhere, and
// as slow as its two copies; NCCL (NcclDeviceComm.cpp) is the fast path.
//
//===----------------------------------------------------------------------===//
#include "StagedComm.h"

#include "moert/Error.h"

#include <algorithm>
#include <vector>

namespace moert::cuda {

namespace {

class StagedComm final : public HostFrontedComm {
public:
  explicit StagedComm(Comm &host) : HostFrontedComm(host) {}
  const char *name() const override { return host_.name(); }
  void setStream(void *s) override { stream_ = static_cast<cudaStream_t>(s); }

  void allReduceSum(float *buf, size_t n, std::span<const int> group) override {
    if (!isDevicePointer(buf))
      return host_.allReduceSum(buf, n, group);
    float *h = toHost(in_, buf, n);
    counted([&] { host_.allReduceSum(h, n, group); });
    toDevice(buf, h, n);
  }
  void allGather(const float *in, size_t n, float *out, std::span<const int> group) override {
    if (!isDevicePointer(in))
      return host_.allGather(in, n, out, group);
    const size_t outN = n * size_t(groupSize(group));
    float *h = toHost(in_, in, n), *o = scratch(out_, outN);
    counted([&] { host_.allGather(h, n, o, group); });
    toDevice(out, o, outN);
  }
  void reduceScatterSum(const float *in, size_t n, float *out,
                        std::span<const int> group) override {
    if (!isDevicePointer(in))
      return host_.reduceScatterSum(in, n, out, group);
    float *h = toHost(in_, in, n * size_t(groupSize(group))), *o = scratch(out_, n);
    counted([&] { host_.reduceScatterSum(h, n, o, group); });
    toDevice(out, o, n);
  }
  void allToAll(const float *in, size_t n, float *out, std::span<const int> group) override {
    if (!isDevicePointer(in))
      return host_.allToAll(in, n, out, group);
    const size_t all = n * size_t(groupSize(group));
    float *h = toHost(in_, in, all), *o = scratch(out_, all);
    counted([&] { host_.allToAll(h, n, o, group); });
    toDevice(out, o, all);
  }
  void allToAllV(const float *in, std::span<const size_t> sc, std::span<const size_t> so,
                 float *out, std::span<const size_t> rc, std::span<const size_t> ro,
                 std::span<const int> group) override {
    if (!isDevicePointer(in))
      return host_.allToAllV(in, sc, so, out, rc, ro, group);
    size_t inN = 0, outN = 0;
    for (size_t j = 0; j < sc.size(); ++j)
      inN = std::max(inN, so[j] + sc[j]);
    for (size_t j = 0; j < rc.size(); ++j)
      outN = std::max(outN, ro[j] + rc[j]);
    float *h = toHost(in_, in, inN), *o = scratch(out_, outN);
    counted([&] { host_.allToAllV(h, sc, so, o, rc, ro, group); });
    // Only what arrived: the rest of `out` keeps its contents.
    for (size_t j = 0; j < rc.size(); ++j)
      if (rc[j])
        toDevice(out + ro[j], o + ro[j], rc[j]);
  }
  void broadcast(void *buf, size_t bytes, int rootIndex, std::span<const int> group) override {
    if (!isDevicePointer(buf))
      return host_.broadcast(buf, bytes, rootIndex, group);
    float *h = scratch(in_, (bytes + 3) / 4);
    copy(h, buf, bytes, cudaMemcpyDeviceToHost);
    counted([&] { host_.broadcast(h, bytes, rootIndex, group); });
    copy(buf, h, bytes, cudaMemcpyHostToDevice);
  }
  void send(const void *buf, size_t bytes, int peer) override {
    if (!isDevicePointer(buf))
      return host_.send(buf, bytes, peer);
    float *h = scratch(in_, (bytes + 3) / 4);
    copy(h, buf, bytes, cudaMemcpyDeviceToHost);
    counted([&] { host_.send(h, bytes, peer); });
  }
  void recv(void *buf, size_t bytes, int peer) override {
    if (!isDevicePointer(buf))
      return host_.recv(buf, bytes, peer);
    float *h = scratch(in_, (bytes + 3) / 4);
    counted([&] { host_.recv(h, bytes, peer); });
    copy(buf, h, bytes, cudaMemcpyHostToDevice);
  }
private:
  static float *scratch(std::vector<float> &v, size_t n) {
    if (v.size() < n)
      v.resize(n);
    return v.data();
  }
  /// Copies once the stream's earlier work (what produced the source) ran.
  void copy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind) {
    if (bytes == 0)
      return;
    cudaError_t e = cudaStreamSynchronize(stream_);
    if (!e)
      e = cudaMemcpyAsync(dst, src, bytes, kind, stream_);
    if (!e)
      e = cudaStreamSynchronize(stream_);
    if (e)
      fail("cuda: staging a collective through the '{}' communicator: {}", host_.name(),
           cudaGetErrorString(e));
  }
  float *toHost(std::vector<float> &v, const float *dev, size_t n) {
    float *h = scratch(v, n);
    copy(h, dev, n * sizeof(float), cudaMemcpyDeviceToHost);
    return h;
  }
  void toDevice(float *dev, const float *h, size_t n) {
    copy(dev, h, n * sizeof(float), cudaMemcpyHostToDevice);
  }
  template <typename F> void counted(F &&f) {
    size_t before = host_.bytesMoved();
    f();
    bytesMoved_ += host_.bytesMoved() - before;
  }

  cudaStream_t stream_ = nullptr;
  std::vector<float> in_, out_;
};

} // namespace

std::unique_ptr<Comm> makeStagedComm(Comm &host) { return std::make_unique<StagedComm>(host); }

} // namespace moert::cuda
