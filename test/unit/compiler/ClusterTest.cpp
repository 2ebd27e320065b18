//===- ClusterTest.cpp - the quantities of --cluster files ----------------===//

#include "moe/Analysis/Cluster.h"

#include <gtest/gtest.h>

using namespace mlir::moe;

namespace {

template <typename Parse> double value(Parse parse, llvm::StringRef text) {
  llvm::Expected<double> v = parse(text);
  EXPECT_TRUE(bool(v)) << text.str();
  if (!v) {
    llvm::consumeError(v.takeError());
    return -1;
  }
  return *v;
}

template <typename Parse> std::string error(Parse parse, llvm::StringRef text) {
  llvm::Expected<double> v = parse(text);
  EXPECT_FALSE(bool(v)) << text.str() << " parsed as " << (v ? *v : 0);
  return v ? "" : llvm::toString(v.takeError());
}

TEST(ClusterQuantities, Bandwidth) {
  EXPECT_DOUBLE_EQ(value(parseBandwidth, "3.35TB/s"), 3.35e12);
  EXPECT_DOUBLE_EQ(value(parseBandwidth, "450 GB/s"), 450e9);
  EXPECT_DOUBLE_EQ(value(parseBandwidth, "1GiB/s"), 1073741824.0);
  // Bits, as links are quoted: 400 Gb/s = 50 GB/s.
  EXPECT_DOUBLE_EQ(value(parseBandwidth, "400Gb/s"), 50e9);
  EXPECT_DOUBLE_EQ(value(parseBandwidth, "1.6Tbit/s"), 200e9);
  EXPECT_DOUBLE_EQ(value(parseBandwidth, "2e3 MB/s"), 2e9);
  EXPECT_NE(error(parseBandwidth, "3.35TB").find("unknown unit 'TB'"),
            std::string::npos);
  EXPECT_NE(error(parseBandwidth, "0GB/s").find("it is not positive"),
            std::string::npos);
  EXPECT_NE(error(parseBandwidth, "GB/s").find("no number"), std::string::npos);
  EXPECT_NE(error(parseBandwidth, "1e999TB/s").find("too large"),
            std::string::npos);
}

TEST(ClusterQuantities, FlopsAndLatency) {
  EXPECT_DOUBLE_EQ(value(parseFlopRate, "989T"), 989e12);
  EXPECT_DOUBLE_EQ(value(parseFlopRate, "989 TFLOPS"), 989e12);
  EXPECT_DOUBLE_EQ(value(parseFlopRate, "1.9PFLOP/s"), 1.9e15);
  EXPECT_DOUBLE_EQ(value(parseFlopRate, "150e9"), 150e9);
  EXPECT_NE(error(parseFlopRate, "989X").find("unknown unit 'X'"),
            std::string::npos);
  EXPECT_DOUBLE_EQ(value(parseLatency, "3us"), 3e-6);
  EXPECT_DOUBLE_EQ(value(parseLatency, "1.5 ms"), 1.5e-3);
  EXPECT_DOUBLE_EQ(value(parseLatency, "0ns"), 0.0);
  EXPECT_NE(error(parseLatency, "-1us").find("negative"), std::string::npos);
  EXPECT_NE(error(parseLatency, "3").find("unknown unit ''"), std::string::npos);
}

TEST(Cluster, ParsesADescription) {
  llvm::Expected<ClusterSpec> spec = parseCluster(
      R"({"nodes": 2, "devices_per_node": 4,
          "device": {"name": "X", "memory": "80GiB",
                     "memory_bandwidth": "2TB/s", "bf16_flops": "500T"},
          "intra_node": {"bandwidth": "100GB/s", "latency": "2us"},
          "inter_node": {"bandwidth": "200Gb/s", "latency": "10us"}})",
      "c.json");
  ASSERT_TRUE(bool(spec)) << llvm::toString(spec.takeError());
  EXPECT_EQ(spec->getNumDevices(), 8);
  EXPECT_EQ(spec->deviceMemoryBytes, 80ull << 30);
  EXPECT_DOUBLE_EQ(spec->device.memoryBytesPerSec, 2e12);
  EXPECT_DOUBLE_EQ(spec->device.flopsPerSec, 500e12);
  EXPECT_DOUBLE_EQ(spec->device.intraNodeBytesPerSec, 100e9);
  EXPECT_DOUBLE_EQ(spec->device.interNodeBytesPerSec, 25e9);
  EXPECT_DOUBLE_EQ(spec->device.intraNodeLatencySec, 2e-6);
  EXPECT_DOUBLE_EQ(spec->device.interNodeLatencySec, 10e-6);
  // What the file does not describe comes from the target's device.
  EXPECT_DOUBLE_EQ(spec->device.stepOverheadSec,
                   deviceModelFor("cuda").stepOverheadSec);
  EXPECT_EQ(spec->name, "2 x 4 X");
}

} // namespace
