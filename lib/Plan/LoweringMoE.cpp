//===- LoweringMoE.cpp - Gate, experts, combine ---------------------------===//
//
// The MoE family of the plan lowering. moe.dispatch has no step: the Experts
// step gathers the token rows itself through the gate's sorted slots. Each
// expert keeps the ranks of its copies (ExpertRef::copies), so the emitter
// lists on every rank only the experts it holds.
//
//===----------------------------------------------------------------------===//

#include "Lowering.h"

using namespace mlir;
using namespace mlir::moe;
using namespace mlir::moe::plan;

LogicalResult Lowering::lowerGate(GateOp g) {
  int in = bufferOf(g.getLogits(), g);
  int slotExpert = bufferOf(g.getSlotExpert(), g),
      slotWeight = bufferOf(g.getSlotWeight(), g),
      offsets = bufferOf(g.getExpertOffsets(), g),
      sorted = bufferOf(g.getSortedSlots(), g);
  if (in < 0 || slotExpert < 0 || slotWeight < 0 || offsets < 0 || sorted < 0)
    return failure();
  RoutingAttr routing = g.getRouting();
  GateStep step{in,
                int(cast<RankedTensorType>(g.getLogits().getType()).getDimSize(1)),
                int(routing.getTopK()),
                routing.getScore(),
                routing.getScoreBeforeTopk(),
                routing.getNormTopkProb(),
                float(routing.getCapacityFactorValue()),
                int(routing.getMinCapacity()),
                routing.getDropTokens(),
                slotExpert,
                slotWeight,
                offsets,
                sorted,
                int(routing.getNGroup()),
                int(routing.getTopkGroup()),
                optWeightOf(g.getSelectionBias()),
                float(routing.getRoutedScalingFactorValue())};
  addStep(g, stepName("gate"), {in}, {slotExpert, slotWeight, offsets, sorted},
          step);
  return success();
}

LogicalResult Lowering::lowerExperts(ExpertsOp e) {
  DispatchOp dispatch = getDispatch(e.getInput());
  if (!dispatch)
    return e.emitOpError("input must come from moe.dispatch");
  int in = bufferOf(dispatch.getInput(), e),
      sorted = bufferOf(dispatch.getSortedSlots(), e),
      offsets = bufferOf(e.getExpertOffsets(), e),
      out = bufferOf(e.getResult(), e);
  if (in < 0 || sorted < 0 || offsets < 0 || out < 0)
    return failure();
  ExpertsStep step;
  step.in = in;
  step.sorted = sorted;
  step.offsets = offsets;
  step.out = out;
  step.topK = int(e.getTopK());
  step.intermediate = e.getIntermediateSize();
  step.act = e.getActivation();
  step.gated = e.isGated();
  // moe-layer-streaming: experts fetched when the gate routes tokens to them.
  step.onDemand =
      getMoEDialect(e.getContext()).getOnDemandAttrHelper().isAttrPresent(e);
  step.up = weightOf(e.getUp());
  step.down = weightOf(e.getDown());
  step.gate = e.getGate() ? weightOf(e.getGate()) : -1;
  step.upBias = e.getUpBias() ? weightOf(e.getUpBias()) : -1;
  step.downBias = e.getDownBias() ? weightOf(e.getDownBias()) : -1;
  step.gateBias = e.getGateBias() ? weightOf(e.getGateBias()) : -1;
  if (std::optional<APFloat> limit = e.getSwigluLimit())
    step.swigluLimit = limit->convertToFloat();
  if (std::optional<APFloat> alpha = e.getSwigluAlpha())
    step.swigluAlpha = alpha->convertToFloat();
  if (p.dataParallel > 1) {
    // The rows the dispatch exchange received, one slot each.
    std::optional<ExchangeBuffers> xs =
        exchangeBuffers(getDispatchExchange(e.getInput()));
    if (!xs)
      return e.emitOpError("in a data-parallel plan the input must come from "
                           "a dispatch exchange");
    step.in = xs->recv;
    step.sorted = xs->recvSorted;
    step.offsets = xs->recvOffsets;
    step.topK = 1;
    step.received = true;
  }
  PlacementAttr placement = e.getPlacementAttr();
  step.slices = placement ? int(placement.getSlices()) : 1;
  for (int64_t i = 0; i < e.getNumExperts(); ++i) {
    ExpertRef r;
    if (placement)
      r.copies = placement.getCopies(i);
    step.experts.push_back(std::move(r));
  }
  SmallVector<int> reads = {step.in, step.sorted, step.offsets};
  // The dispatch exchange reads these on the communication stream until
  // this step waits for it: they live until here (moe-plan-memory).
  if (step.received)
    reads.append({in, sorted, offsets});
  addStep(e, stepName("moe.experts"), reads, {out}, std::move(step));
  return success();
}

LogicalResult Lowering::lowerCombine(CombineOp c) {
  int slots = bufferOf(c.getInput(), c),
      weights = bufferOf(c.getSlotWeight(), c), out = bufferOf(c.getResult(), c);
  if (slots < 0 || weights < 0 || out < 0)
    return failure();
  int topK =
      int(cast<RankedTensorType>(c.getSlotWeight().getType()).getDimSize(1));
  SmallVector<int> reads = {slots, weights};
  if (p.dataParallel > 1) {
    // The combine exchange reads the experts' outputs and the dispatch's
    // record on the communication stream until this step waits for it.
    if (ExpertsOp experts = getCombinedExperts(c.getInput())) {
      reads.push_back(bufferOf(experts.getResult(), c));
      if (std::optional<ExchangeBuffers> xs =
              exchangeBuffers(getDispatchExchange(experts.getInput())))
        reads.append({xs->sendSlots, xs->counts, xs->relay});
    }
  }
  addStep(c, stepName("moe.combine"), reads, {out},
          CombineStep{slots, weights, out, topK});
  return success();
}
