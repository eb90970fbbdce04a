// ops/sampling.cpp — the CPU kernel of ops/sampling.h (the math is there) and the op.
#include "ops/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "core/dispatch.h"
#include "core/parallel.h"

namespace mg {

void SampleParams::validate() const {
  MG_CHECK(temperature >= 0 && std::isfinite(temperature),
           "sampling: temperature must be >= 0 (0 = greedy), got ", temperature);
  MG_CHECK(top_k >= 0, "sampling: top_k must be >= 0 (0 = off), got ", top_k);
  MG_CHECK(top_p > 0 && top_p <= 1, "sampling: top_p must be in (0, 1], got ", top_p);
  MG_CHECK(min_p >= 0 && min_p <= 1, "sampling: min_p must be in [0, 1], got ", min_p);
  MG_CHECK(vocab_limit >= 0, "sampling: vocab_limit must be >= 0, got ", vocab_limit);
}

namespace cpu {

// One row: l (V values, V = the vocabulary limit), u in [0, 1).
static int32_t sample_row(const float* l, int64_t V, float u, const SampleParams& p) {
  if (p.greedy()) return (int32_t)(std::max_element(l, l + V) - l);  // first max
  std::vector<int32_t> order(V);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return l[a] > l[b]; });
  const float m = l[order[0]];
  auto prob = [&](int64_t j) { return (double)std::exp((l[order[j]] - m) / p.temperature); };
  int64_t keep = p.top_k > 0 ? std::min<int64_t>(V, p.top_k) : V;
  if (p.top_p < 1.f) {
    double total = 0;
    for (int64_t j = 0; j < keep; ++j) total += prob(j);
    const double target = (double)p.top_p * total;
    double cum = 0;
    int64_t n = 0;
    while (n < keep) {
      cum += prob(n++);
      if (cum >= target) break;
    }
    keep = n;
  }
  if (p.min_p > 0.f) {
    int64_t n = 1;
    while (n < keep && prob(n) >= (double)p.min_p) ++n;
    keep = n;
  }
  double kept = 0;
  for (int64_t j = 0; j < keep; ++j) kept += prob(j);
  const double target = (double)u * kept;
  double cum = 0;
  for (int64_t j = 0; j < keep; ++j) {
    cum += prob(j);
    if (target < cum) return order[j];
  }
  return order[keep - 1];  // rounding left u * kept >= the final sum
}

void sample_rows(const float* logits, const float* uniforms, int32_t* out, int64_t B,
                 int64_t V_pad, const SampleParams& p) {
  const int64_t V = p.vocab_limit > 0 ? std::min(V_pad, p.vocab_limit) : V_pad;
  parallel_for(B, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b)
      out[b] = sample_row(logits + b * V_pad, V, uniforms ? uniforms[b] : 0.f, p);
  });
}

}  // namespace cpu

Tensor sample_tokens(const Tensor& logits, const SampleParams& p, const Tensor& uniforms) {
  const char* op = "sample_tokens";
  p.validate();
  check_dim(op, logits, 2, "logits (B, V_pad)");
  check_dtype(op, logits, DType::f32, "logits");
  const int64_t B = logits.size(0), V_pad = logits.size(1);
  MG_CHECK(V_pad > 0, op, ": logits ", shape_str(logits.shape()), " have no columns");
  if (!p.greedy()) {
    MG_CHECK(uniforms.defined(), op, ": sampling (temperature > 0, top_k != 1) needs uniforms (B)");
    check_shape(op, uniforms, {B}, "uniforms");
    check_dtype(op, uniforms, DType::f32, "uniforms");
    check_same_device(op, logits, uniforms);
  }
  const float* u = p.greedy() || !uniforms.defined() ? nullptr : uniforms.data<float>();
  Tensor ids = Tensor::empty({B}, DType::i32, logits.device());
  dispatch_device(
      logits.device(), op,
      [&]<typename>() { cuda::sample_rows(logits.data<float>(), u, ids.data<int32_t>(), B, V_pad, p); },
      [&]() { cpu::sample_rows(logits.data<float>(), u, ids.data<int32_t>(), B, V_pad, p); });
  return ids;
}

}  // namespace mg
