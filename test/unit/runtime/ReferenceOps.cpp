//===- ReferenceOps.cpp - Plain scalar reference of every plan op ---------===//
#include "ReferenceOps.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>

namespace moetest::ref {

void embedding(const Ids &ids, const Vec &W, int64_t D, float scale, Vec &out, int64_t ldo) {
  for (size_t t = 0; t < ids.size(); ++t)
    for (int64_t d = 0; d < D; ++d)
      out[t * size_t(ldo) + size_t(d)] = scale * W[size_t(ids[t] * D + d)];
}

void positionEmbedding(const Ids &pos, const Vec &W, int64_t D, Vec &io, int64_t ldio) {
  for (size_t t = 0; t < pos.size(); ++t)
    for (int64_t d = 0; d < D; ++d)
      io[t * size_t(ldio) + size_t(d)] += W[size_t(pos[t] * D + d)];
}

void norm(bool rms, const Vec &in, int64_t ldi, Vec &out, int64_t ldo, int64_t rows,
          int64_t colOffset, int64_t cols, int64_t dim, const Vec *w, const Vec *b, float eps,
          float weightOffset) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t g = colOffset; g < colOffset + cols; g += dim) {
      const float *x = &in[size_t(r * ldi + g)];
      double mean = 0.0, sq = 0.0;
      for (int64_t i = 0; i < dim; ++i) {
        mean += x[i];
        sq += double(x[i]) * x[i];
      }
      mean /= double(dim);
      double inv;
      if (rms) {
        inv = 1.0 / std::sqrt(sq / double(dim) + eps);
      } else {
        double var = 0.0;
        for (int64_t i = 0; i < dim; ++i)
          var += (x[i] - mean) * (x[i] - mean);
        inv = 1.0 / std::sqrt(var / double(dim) + eps);
      }
      for (int64_t i = 0; i < dim; ++i) {
        double y;
        if (rms) {
          double scale = w ? double(weightOffset) + (*w)[size_t(i)] : 1.0;
          y = x[i] * inv * scale;
        } else {
          y = (x[i] - mean) * inv * (w ? (*w)[size_t(i)] : 1.0) + (b ? (*b)[size_t(i)] : 0.0);
        }
        out[size_t(r * ldo + g + i)] = float(y);
      }
    }
}

void linear(const Vec &x, int64_t ldx, int64_t rows, const Vec &W, int64_t N, int64_t K,
            bool transposed, const Vec *bias, Vec &y, int64_t ldy, int64_t yCol,
            bool accumulate) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t n = 0; n < N; ++n) {
      double s = bias ? (*bias)[size_t(n)] : 0.0;
      for (int64_t k = 0; k < K; ++k) {
        float wv = transposed ? W[size_t(k * N + n)] : W[size_t(n * K + k)];
        s += double(x[size_t(r * ldx + k)]) * wv;
      }
      float &o = y[size_t(r * ldy + yCol + n)];
      o = accumulate ? float(o + s) : float(s);
    }
}

void rope(Vec &buf, int64_t ld, const Ids &pos, int64_t colOffset, int heads, int headDim,
          int rotaryDim, float theta, bool interleaved) {
  const int half = rotaryDim / 2;
  for (size_t t = 0; t < pos.size(); ++t)
    for (int h = 0; h < heads; ++h) {
      float *x = &buf[t * size_t(ld) + size_t(colOffset + int64_t(h) * headDim)];
      for (int i = 0; i < half; ++i) {
        double ang = double(pos[t]) * std::pow(double(theta), -2.0 * i / rotaryDim);
        int a = interleaved ? 2 * i : i, b = interleaved ? 2 * i + 1 : i + half;
        double x0 = x[a], x1 = x[b];
        x[a] = float(x0 * std::cos(ang) - x1 * std::sin(ang));
        x[b] = float(x1 * std::cos(ang) + x0 * std::sin(ang));
      }
    }
}

double activate(Act a, double x) {
  switch (a) {
  case Act::Gelu:
    return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
  case Act::GeluTanh:
    return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
  case Act::Silu:
    return x / (1.0 + std::exp(-x));
  case Act::Relu:
    return x > 0.0 ? x : 0.0;
  case Act::Sigmoid:
    return 1.0 / (1.0 + std::exp(-x));
  case Act::Identity:
  case Act::SwigluOai: // experts() computes it from both halves
    return x;
  }
  return x;
}

void activation(const Vec &in, int64_t ldi, Vec &out, int64_t ldo, int64_t rows, int64_t n,
                Act act, bool gated) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < n; ++j) {
      double y = activate(act, in[size_t(r * ldi + j)]);
      if (gated)
        y *= in[size_t(r * ldi + n + j)];
      out[size_t(r * ldo + j)] = float(y);
    }
}

void attention(const Vec &qkv, int64_t ldqkv, int64_t qCol, const Ids &pos, const Vec &k,
               const Vec &v, int64_t S, int heads, int kvHeads, int headDim, float scale,
               int slidingWindow, Vec &out, int64_t ldo, const Vec *sinks) {
  const int group = heads / kvHeads;
  for (size_t t = 0; t < pos.size(); ++t)
    for (int h = 0; h < heads; ++h) {
      const int kh = h / group;
      const float *q = &qkv[t * size_t(ldqkv) + size_t(qCol + int64_t(h) * headDim)];
      int64_t first = 0;
      if (slidingWindow > 0)
        first = std::max<int64_t>(0, pos[t] - slidingWindow + 1);
      std::vector<double> p;
      double mx = -std::numeric_limits<double>::infinity();
      for (int64_t s = first; s <= pos[t]; ++s) {
        const float *key = &k[size_t((int64_t(kh) * S + s) * headDim)];
        double d = 0.0;
        for (int i = 0; i < headDim; ++i)
          d += double(q[i]) * key[i];
        p.push_back(d * scale);
        mx = std::max(mx, p.back());
      }
      double sink = sinks ? double((*sinks)[size_t(h)]) : 0.0;
      if (sinks)
        mx = std::max(mx, sink);
      double sum = sinks ? std::exp(sink - mx) : 0.0;
      for (double &x : p)
        sum += x = std::exp(x - mx);
      for (int i = 0; i < headDim; ++i) {
        double o = 0.0;
        for (int64_t s = first; s <= pos[t]; ++s)
          o += p[size_t(s - first)] * v[size_t((int64_t(kh) * S + s) * headDim + i)];
        out[t * size_t(ldo) + size_t(int64_t(h) * headDim + i)] = float(o / sum);
      }
    }
}

GateResult gate(const Vec &logits, int64_t ld, int64_t T, const GateSpec &g,
                const Vec *selectionBias) {
  const int E = g.numExperts, K = g.topK;
  GateResult r;
  r.slotExpert.resize(size_t(T * K));
  r.slotWeight.resize(size_t(T * K));
  auto sigmoid = [](double x) { return 1.0 / (1.0 + std::exp(-x)); };
  for (int64_t t = 0; t < T; ++t) {
    const float *row = &logits[size_t(t * ld)];
    // What top-k ranks.
    std::vector<double> rank(static_cast<size_t>(E));
    for (int e = 0; e < E; ++e)
      rank[size_t(e)] = row[e];
    if (g.softmaxBeforeTopk) {
      if (g.sigmoid) {
        for (double &x : rank)
          x = sigmoid(x);
      } else {
        double mx = *std::max_element(rank.begin(), rank.end()), s = 0.0;
        for (double &x : rank)
          s += x = std::exp(x - mx);
        for (double &x : rank)
          x /= s;
      }
    }
    // DeepSeek-V3's choice: scores + bias; groups by their two best.
    std::vector<double> choice = rank;
    if (g.selectionBias)
      for (int e = 0; e < E; ++e)
        choice[size_t(e)] += (*selectionBias)[size_t(e)];
    if (g.numGroups > 1) {
      const int per = E / g.numGroups;
      std::vector<double> groupScore;
      for (int gi = 0; gi < g.numGroups; ++gi) {
        std::vector<double> c(choice.begin() + gi * per, choice.begin() + (gi + 1) * per);
        std::sort(c.begin(), c.end(), std::greater<>());
        groupScore.push_back(c[0] + c[1]);
      }
      std::vector<int> groups(static_cast<size_t>(g.numGroups));
      for (int gi = 0; gi < g.numGroups; ++gi)
        groups[size_t(gi)] = gi;
      std::stable_sort(groups.begin(), groups.end(), [&](int a, int b) {
        return groupScore[size_t(a)] > groupScore[size_t(b)];
      });
      std::vector<bool> kept(static_cast<size_t>(g.numGroups), false);
      for (int j = 0; j < g.topkGroups; ++j)
        kept[size_t(groups[size_t(j)])] = true;
      for (int e = 0; e < E; ++e)
        if (!kept[size_t(e / per)])
          choice[size_t(e)] = 0.0;
    }
    std::vector<int> order(static_cast<size_t>(E));
    for (int e = 0; e < E; ++e)
      order[size_t(e)] = e;
    // Descending; equal values keep ascending expert ids (stable).
    std::stable_sort(order.begin(), order.end(),
                     [&](int a, int b) { return choice[size_t(a)] > choice[size_t(b)]; });
    std::vector<double> p(static_cast<size_t>(K));
    for (int j = 0; j < K; ++j)
      p[size_t(j)] = rank[size_t(order[size_t(j)])];
    if (!g.softmaxBeforeTopk) {
      if (g.sigmoid) {
        for (double &x : p)
          x = sigmoid(x);
      } else {
        double mx = p[0], s = 0.0;
        for (double &x : p)
          s += x = std::exp(x - mx);
        for (double &x : p)
          x /= s;
      }
    }
    double sum = 0.0;
    for (double x : p)
      sum += x;
    for (int j = 0; j < K; ++j) {
      r.slotExpert[size_t(t * K + j)] = order[size_t(j)];
      r.slotWeight[size_t(t * K + j)] =
          float((g.normTopk ? p[size_t(j)] / sum : p[size_t(j)]) * g.routedScalingFactor);
    }
  }
  int64_t cap = std::numeric_limits<int64_t>::max();
  if (g.dropTokens)
    cap = std::max<int64_t>(g.minCapacity, int64_t(std::ceil(double(g.capacityFactor) *
                                                             double(T * K) / double(E))));
  std::vector<std::vector<int32_t>> admitted(static_cast<size_t>(E));
  for (int64_t s = 0; s < T * K; ++s) {
    auto &a = admitted[size_t(r.slotExpert[size_t(s)])];
    if (int64_t(a.size()) < cap)
      a.push_back(int32_t(s));
    else
      r.slotWeight[size_t(s)] = 0.0f;
  }
  r.expertOffsets.push_back(0);
  for (int e = 0; e < E; ++e) {
    r.sortedSlots.insert(r.sortedSlots.end(), admitted[size_t(e)].begin(),
                         admitted[size_t(e)].end());
    r.expertOffsets.push_back(int32_t(r.sortedSlots.size()));
  }
  return r;
}

void experts(const Vec &in, int64_t ldin, int64_t T, int topK, int64_t D, int64_t I, Act act,
             bool gated, const std::vector<Expert> &list, const GateResult &routing,
             Vec &slotOut, float swigluLimit, float swigluAlpha) {
  slotOut.assign(size_t(T * topK * D), 0.0f);
  for (const Expert &e : list) {
    int32_t b = routing.expertOffsets[size_t(e.id)], end = routing.expertOffsets[size_t(e.id) + 1];
    for (int32_t j = b; j < end; ++j) {
      if ((j - b) % e.numReplicas != e.replica)
        continue;
      int32_t s = routing.sortedSlots[size_t(j)];
      const float *x = &in[size_t((s / topK) * ldin)];
      std::vector<double> h(static_cast<size_t>(I));
      for (int64_t i = 0; i < I; ++i) {
        double u = e.upBias ? (*e.upBias)[size_t(i)] : 0.0, gv = 0.0;
        for (int64_t d = 0; d < D; ++d) {
          u += double(x[d]) * (*e.up)[size_t(i * D + d)];
          if (gated)
            gv += double(x[d]) * (*e.gate)[size_t(i * D + d)];
        }
        if (e.gateBias)
          gv += (*e.gateBias)[size_t(i)];
        if (act == Act::SwigluOai) {
          const double L = swigluLimit;
          // Rounded to f32 where the backends hold the products.
          double gc = std::min(double(float(gv)), L), uc = std::clamp(double(float(u)), -L, L);
          h[size_t(i)] = (uc + 1.0) * gc / (1.0 + std::exp(-double(swigluAlpha) * gc));
        } else {
          h[size_t(i)] = gated ? activate(act, gv) * u : activate(act, u);
        }
      }
      for (int64_t d = 0; d < D; ++d) {
        double o = e.downBias ? (*e.downBias)[size_t(d)] : 0.0;
        for (int64_t i = 0; i < I; ++i)
          o += h[size_t(i)] * (*e.down)[size_t(d * I + i)];
        slotOut[size_t(s * D + d)] = float(o);
      }
    }
  }
}

void combine(const Vec &slotOut, const Vec &slotWeight, int64_t T, int topK, int64_t D, Vec &out,
             int64_t ldo, bool accumulate) {
  for (int64_t t = 0; t < T; ++t)
    for (int64_t d = 0; d < D; ++d) {
      double s = accumulate ? out[size_t(t * ldo + d)] : 0.0;
      for (int j = 0; j < topK; ++j)
        s += double(slotWeight[size_t(t * topK + j)]) * slotOut[size_t((t * topK + j) * D + d)];
      out[size_t(t * ldo + d)] = float(s);
    }
}

void sigmoidGate(const Vec &g, int64_t ldg, Vec &io, int64_t ldio, int64_t n, int64_t T) {
  for (int64_t t = 0; t < T; ++t) {
    double s = 1.0 / (1.0 + std::exp(-double(g[size_t(t * ldg)])));
    for (int64_t j = 0; j < n; ++j)
      io[size_t(t * ldio + j)] = float(io[size_t(t * ldio + j)] * s);
  }
}

void residualMix(const Vec &moe, const Vec &mlp, const Vec &coef, int64_t ldc, Vec &out,
                 int64_t D, int64_t T) {
  for (int64_t t = 0; t < T; ++t) {
    double c0 = coef[size_t(t * ldc)], c1 = coef[size_t(t * ldc + 1)];
    double mx = std::max(c0, c1);
    double e0 = std::exp(c0 - mx), e1 = std::exp(c1 - mx);
    for (int64_t d = 0; d < D; ++d)
      out[size_t(t * D + d)] =
          float(moe[size_t(t * D + d)] * e0 / (e0 + e1) + mlp[size_t(t * D + d)] * e1 / (e0 + e1));
  }
}

} // namespace moetest::ref
