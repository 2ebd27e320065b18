//===- MoEOpInterfaceTest.cpp - the MoE op interface ----------------------===//
//
// Every op of an MoE layer answers for the same experts through
// MoEOpInterface; LayerOp's helpers find them and re-place them together.
//
//===----------------------------------------------------------------------===//

#include "moe/Dialect/MoEOps.h"

#include "mlir/Dialect/Shard/IR/ShardDialect.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Parser/Parser.h"

#include <gtest/gtest.h>

using namespace mlir;
using namespace mlir::moe;

namespace {

// Layer 1 of 2: fused gate (4 experts, top-2), exchanges and experts placed
// two per rank on a 1x2 grid. Every expert has its own weight values.
constexpr const char *kModel = R"mlir(
moe.model @m attributes {architecture = "test", vocab_size = 16, hidden_size = 8, num_layers = 2, max_position_embeddings = 16} {
  shard.grid @devices(shape = 1x2)
  moe.param @wte "wte" : tensor<16x8xf32> init normal std 0.02
  moe.param @router "router" : tensor<4x8xf32> init normal std 0.02
  moe.param @u "u" : tensor<4x4x8xf32> init normal std 0.02
  moe.param @g "g" : tensor<4x4x8xf32> init normal std 0.02
  moe.param @d "d" : tensor<4x8x4xf32> init normal std 0.02
  moe.param @db "db" : tensor<4x8xf32> init zeros
  moe.graph @forward(%ids: tensor<?xi32>) -> tensor<?x16xf32> {
    %wte = moe.weight @wte : tensor<16x8xf32>
    %x = moe.embedding %ids, %wte : tensor<?xi32>, tensor<16x8xf32> -> tensor<?x8xf32>
    %l0 = moe.layer 0 (%h = %x) : tensor<?x8xf32> {
      moe.yield %h : tensor<?x8xf32>
    }
    %l1 = moe.layer 1 (%h = %l0) : tensor<?x8xf32> {
      %wr = moe.weight @router : tensor<4x8xf32>
      %logits = moe.router %h, %wr : tensor<?x8xf32>, tensor<4x8xf32> -> tensor<?x4xf32>
      %e, %w, %off, %slots = moe.gate %logits routing <top_k = 2, norm_topk_prob = true> : tensor<?x4xf32> -> tensor<?x2xi32>, tensor<?x2xf32>, tensor<5xi32>, tensor<?xi32>
      %dsp = moe.dispatch %h, %slots top_k 2 : tensor<?x8xf32>, tensor<?xi32> -> tensor<?x8xf32>
      %in = moe.all_to_all dispatch %dsp, %off on @devices axes [0, 1] placement <ranks = 2, experts = [0, 0, 1, 1]> : tensor<?x8xf32>, tensor<5xi32>
      %u = moe.weight @u : tensor<4x4x8xf32>
      %g = moe.weight @g : tensor<4x4x8xf32>
      %d = moe.weight @d : tensor<4x8x4xf32>
      %b = moe.weight @db : tensor<4x8xf32>
      %y = moe.experts %in, %off top_k 2 act silu up %u : tensor<4x4x8xf32> gate %g : tensor<4x4x8xf32> down %d : tensor<4x8x4xf32> down_bias %b : tensor<4x8xf32> placement <ranks = 2, experts = [0, 0, 1, 1]> : tensor<?x8xf32>, tensor<5xi32> -> tensor<?x8xf32>
      %out = moe.all_to_all combine %y, %off on @devices axes [0, 1] placement <ranks = 2, experts = [0, 0, 1, 1]> : tensor<?x8xf32>, tensor<5xi32>
      %c = moe.combine %out, %slots, %w : tensor<?x8xf32>, tensor<?xi32>, tensor<?x2xf32> -> tensor<?x8xf32>
      moe.yield %c : tensor<?x8xf32>
    }
    %lm = moe.lm_head %l1, %wte tied : tensor<?x8xf32>, tensor<16x8xf32> -> tensor<?x16xf32>
    moe.return %lm : tensor<?x16xf32>
  }
}
)mlir";

class MoEOpInterfaceTest : public ::testing::Test {
protected:
  void SetUp() override {
    context.loadDialect<MoEDialect, shard::ShardDialect>();
    module = parseSourceString<ModuleOp>(kModel, &context);
    ASSERT_TRUE(module);
    model = *module->getOps<ModelOp>().begin();
    model.walk([&](LayerOp layer) { layers.push_back(layer); });
    ASSERT_EQ(layers.size(), 2u);
  }

  MLIRContext context;
  OwningOpRef<ModuleOp> module;
  ModelOp model;
  SmallVector<LayerOp> layers;
};

TEST_F(MoEOpInterfaceTest, LayerListsItsMoEOpsInOrder) {
  EXPECT_TRUE(layers[0].getMoEOps().empty());
  EXPECT_FALSE(layers[0].getExpertsOp());
  SmallVector<MoEOpInterface> ops = layers[1].getMoEOps();
  ASSERT_EQ(ops.size(), 4u);
  EXPECT_TRUE(isa<GateOp>(ops[0]));
  EXPECT_TRUE(isa<AllToAllOp>(ops[1]));
  EXPECT_TRUE(isa<ExpertsOp>(ops[2]));
  EXPECT_TRUE(isa<AllToAllOp>(ops[3]));
  EXPECT_EQ(layers[1].getExpertsOp().getOperation(), ops[2].getOperation());
}

TEST_F(MoEOpInterfaceTest, EveryOpAnswersForTheSameExperts) {
  SmallVector<MoEOpInterface> ops = layers[1].getMoEOps();
  Value offsets = ops[0].getExpertOffsets(); // produced by the gate
  for (MoEOpInterface op : ops) {
    SCOPED_TRACE(op->getName().getStringRef().str());
    EXPECT_EQ(op.getNumExperts(), 4);
    EXPECT_EQ(op.getLayerIndex(), 1);
    EXPECT_EQ(op.getExpertOffsets(), offsets);
  }
}

TEST_F(MoEOpInterfaceTest, RoutingComesFromTheOpsThatKnowIt) {
  SmallVector<MoEOpInterface> ops = layers[1].getMoEOps();
  EXPECT_EQ(ops[0].getRoutedTopK(), std::optional<int64_t>(2));
  EXPECT_EQ(ops[2].getRoutedTopK(), std::optional<int64_t>(2));
  EXPECT_EQ(ops[1].getRoutedTopK(), std::nullopt);
  ASSERT_TRUE(ops[0].getRoutingAttr());
  EXPECT_TRUE(ops[0].getRoutingAttr().getNormTopkProb());
  EXPECT_FALSE(ops[1].getRoutingAttr());
  EXPECT_FALSE(ops[2].getRoutingAttr());
}

TEST_F(MoEOpInterfaceTest, ExpertWeightsAndParams) {
  SmallVector<MoEOpInterface> ops = layers[1].getMoEOps();
  auto experts = cast<ExpertsOp>(ops[2].getOperation());
  SmallVector<Value> w = ops[2].getExpertWeights();
  ASSERT_EQ(w.size(), 4u); // up, gate, down, down_bias: stacked [E, ...]
  EXPECT_EQ(w[0], experts.getUp());
  EXPECT_EQ(w[1], experts.getGate());
  EXPECT_EQ(w[2], experts.getDown());
  EXPECT_EQ(w[3], experts.getDownBias());
  // 3 x 4x8 matrices + an 8-element bias.
  EXPECT_EQ(ops[2].getParamsPerExpert(), 3 * 32 + 8);
  for (MoEOpInterface op : {ops[0], ops[1], ops[3]}) {
    EXPECT_TRUE(op.getExpertWeights().empty());
    EXPECT_EQ(op.getParamsPerExpert(), 0);
  }
}

TEST_F(MoEOpInterfaceTest, LayerRePlacesAllItsOpsAtOnce) {
  SmallVector<MoEOpInterface> ops = layers[1].getMoEOps();
  EXPECT_FALSE(ops[0].getExpertPlacement()); // the gate has none
  PlacementAttr before = ops[2].getExpertPlacement();
  ASSERT_TRUE(before);
  EXPECT_EQ(ops[1].getExpertPlacement(), before);
  EXPECT_EQ(ops[3].getExpertPlacement(), before);

  auto after = PlacementAttr::get(&context, 2, {1, 0, 1, 0});
  layers[1].setExpertPlacement(after);
  for (MoEOpInterface op : {ops[1], ops[2], ops[3]})
    EXPECT_EQ(op.getExpertPlacement(), after);
  EXPECT_FALSE(ops[0].getExpertPlacement());
  EXPECT_TRUE(succeeded(verify(*module)));

  // Clearing: the experts run everywhere again; an exchange keeps its own.
  for (MoEOpInterface op : ops)
    op.setExpertPlacement(nullptr);
  EXPECT_FALSE(ops[2].getExpertPlacement());
  EXPECT_EQ(ops[1].getExpertPlacement(), after);
}

TEST_F(MoEOpInterfaceTest, OpsOutsideLayersHaveNoLayerIndex) {
  // A detached copy of the gate is in no layer.
  Operation *gate = layers[1].getMoEOps()[0]->clone();
  EXPECT_EQ(cast<MoEOpInterface>(gate).getLayerIndex(), -1);
  gate->destroy();
}

} // namespace
