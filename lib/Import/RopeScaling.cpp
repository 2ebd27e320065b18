//===- RopeScaling.cpp - Hugging Face's scaled RoPE frequencies -----------===//

#include "RopeScaling.h"

#include <algorithm>
#include <cmath>

using namespace mlir;
using namespace mlir::moe::detail;

SmallVector<float> moe::detail::defaultInvFreq(double base, int64_t dim) {
  // 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim)): a float32
  // tensor, so the exponent and the power are f32.
  SmallVector<float> inv;
  for (int64_t i = 0; i < dim; i += 2) {
    float e = float(i) / float(dim);
    inv.push_back(1.0f / std::pow(float(base), e));
  }
  return inv;
}

/// _compute_yarn_parameters' get_mscale.
static double yarnMscale(double scale, double mscale = 1.0) {
  return scale <= 1.0 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0;
}

static RopeFrequencies yarn(const RopeScalingParams &p, double base,
                            int64_t dim) {
  RopeFrequencies out;
  if (p.attentionFactor)
    out.attentionFactor = *p.attentionFactor;
  else if (p.mscale != 0.0 && p.mscaleAllDim != 0.0)
    out.attentionFactor =
        yarnMscale(p.factor, p.mscale) / yarnMscale(p.factor, p.mscaleAllDim);
  else
    out.attentionFactor = yarnMscale(p.factor);
  // find_correction_dim / find_correction_range, in Python floats.
  auto correctionDim = [&](double rotations) {
    return double(dim) *
           std::log(double(p.originalMaxPositions) / (rotations * 2 * M_PI)) /
           (2 * std::log(base));
  };
  double low = correctionDim(p.betaFast), high = correctionDim(p.betaSlow);
  if (p.truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, double(dim - 1));
  if (low == high)
    high += 0.001; // linear_ramp_factor: prevent the singularity
  for (int64_t i = 0; i < dim / 2; ++i) {
    float posFreq = std::pow(float(base), float(2 * i) / float(dim));
    float extrapolation = 1.0f / posFreq;
    float interpolation = 1.0f / (float(p.factor) * posFreq);
    // (arange(dim/2, f32) - low) / (high - low), clamped to [0, 1].
    float ramp = (float(i) - float(low)) / float(high - low);
    ramp = std::clamp(ramp, 0.0f, 1.0f);
    float extrapolationFactor = 1.0f - ramp;
    out.invFreq.push_back(interpolation * (1.0f - extrapolationFactor) +
                          extrapolation * extrapolationFactor);
  }
  return out;
}

static RopeFrequencies llama3(const RopeScalingParams &p, double base,
                              int64_t dim) {
  RopeFrequencies out;
  out.invFreq = defaultInvFreq(base, dim);
  const float factor = float(p.factor);
  const double oldContext = double(p.originalMaxPositions);
  const float lowWavelen = float(oldContext / p.lowFreqFactor);
  const float highWavelen = float(oldContext / p.highFreqFactor);
  for (float &f : out.invFreq) {
    float wavelen = float(2 * M_PI) / f;
    float scaled = wavelen > lowWavelen ? f / factor : f;
    float smooth = (float(oldContext) / wavelen - float(p.lowFreqFactor)) /
                   float(p.highFreqFactor - p.lowFreqFactor);
    float smoothed = (1.0f - smooth) * scaled / factor + smooth * scaled;
    bool medium = !(wavelen < highWavelen) && !(wavelen > lowWavelen);
    f = medium ? smoothed : scaled;
  }
  return out;
}

RopeFrequencies moe::detail::computeRopeFrequencies(const RopeScalingParams &p,
                                                    double base, int64_t dim) {
  if (p.type == "yarn")
    return yarn(p, base, dim);
  if (p.type == "llama3")
    return llama3(p, base, dim);
  RopeFrequencies out;
  out.invFreq = defaultInvFreq(base, dim);
  if (p.type == "linear")
    for (float &f : out.invFreq)
      f /= float(p.factor);
  return out;
}
