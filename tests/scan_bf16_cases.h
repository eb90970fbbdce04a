// tests/scan_bf16_cases.h — the selective scan with bf16 activations (ScanArgs<bf16, float>):
// the shapes, the inputs, one runner for any kernel pair on any device, and the comparisons
// in bf16 ulps. Shared by tests/test_scan_bf16.cpp (CPU: the reference against the widened f32
// kernels) and tests/test_cuda_scan_bf16.cpp (the CUDA v2 bf16 kernels against the reference).
#pragma once
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "autograd/grad_mode.h"
#include "core/tensor.h"
#include "ops/selective_scan/kernels.h"

namespace mg::test::scan_bf16 {

struct Case {
  int64_t B, L, ED, N, T;
  bool D = true, z = true, bias = true, h0 = true, dh_last = true, softplus = true;
};

// Odd shapes: L not a multiple of v2's 256-step tile nor of T, ED not a multiple of its 8-channel
// blocks, N 16 and others, every optional input on and off; T below, equal to and above the tile.
inline std::vector<Case> odd_cases() {
  return {{1, 1, 1, 1, 64},
          {2, 37, 13, 16, 64},
          {1, 300, 9, 16, 64, false, false, false, false, false},
          {2, 263, 11, 5, 100, true, false, true, false, true, false},
          {1, 70, 17, 16, 16, false, true, false, true, false},
          {3, 520, 7, 3, 300},
          {1, 257, 8, 33, 64, true, true, true, true, true, false}};
}
// One realistic size (a 130m-size block's scan at L 1024: ED 1536, N 16; batch 1 so that the
// CPU reference takes about a second).
inline Case realistic_case() { return {1, 1024, 1536, 16, 64}; }

// Activations (u, delta, z, B, C) and dy bf16, the rest f32; CPU tensors. Ranges as in
// tests/test_cuda_scan.cpp: A = -(n+1), delta_raw ~ N(0, 0.5^2) (softplus) or U(0.001, 0.5), a
// bias in Mamba's dt init range, h0 ~ N(0, 0.5^2).
struct Inputs {
  Tensor u, delta, A, B, C, D, z, bias, h0, dy, dh_last;
};
inline Inputs make_inputs(const Case& c, uint64_t seed) {
  NoGradGuard ng;
  Generator g(seed);
  auto act = [](const Tensor& t) { return t.cast(DType::bf16); };
  Inputs a;
  a.u = act(Tensor::randn({c.B, c.L, c.ED}, DType::f32, &g));
  a.delta = act(c.softplus ? Tensor::randn({c.B, c.L, c.ED}, DType::f32, &g) * 0.5
                           : Tensor::uniform({c.B, c.L, c.ED}, 0.001, 0.5, DType::f32, &g));
  std::vector<float> A(c.ED * c.N);
  for (int64_t d = 0; d < c.ED; ++d)
    for (int64_t n = 0; n < c.N; ++n) A[d * c.N + n] = -float(n + 1);
  a.A = Tensor::from_vector<float>(A, {c.ED, c.N});
  a.B = act(Tensor::randn({c.B, c.L, c.N}, DType::f32, &g));
  a.C = act(Tensor::randn({c.B, c.L, c.N}, DType::f32, &g));
  if (c.D) a.D = Tensor::randn({c.ED}, DType::f32, &g);
  if (c.z) a.z = act(Tensor::randn({c.B, c.L, c.ED}, DType::f32, &g));
  if (c.bias)
    a.bias = Tensor::uniform({c.ED}, c.softplus ? -6.9 : 0.0, c.softplus ? -2.25 : 0.1,
                             DType::f32, &g);
  if (c.h0) a.h0 = Tensor::randn({c.B, c.ED, c.N}, DType::f32, &g) * 0.5;
  a.dy = act(Tensor::randn({c.B, c.L, c.ED}, DType::f32, &g));
  if (c.dh_last) a.dh_last = Tensor::randn({c.B, c.ED, c.N}, DType::f32, &g);
  return a;
}

// The outputs, in this order (undefined where absent; chunk_states only for kernels that save).
inline const char* const kNames[] = {"y",  "h_last", "chunk_states", "du", "ddelta", "dA",
                                     "dB", "dC",     "dD",           "dz", "dbias",  "dh0"};
enum Out { kY, kHLast, kStates, kDu, kDdelta, kDA, kDB, kDC, kDD, kDz, kDbias, kDh0 };
inline bool is_activation_out(int k) {
  return k == kY || k == kDu || k == kDdelta || k == kDB || k == kDC || k == kDz;
}

// Runs a forward and its backward with activations of type T (bf16: natively; float: the
// activations widened first, the widen path's semantics, and the activation outputs rounded to
// bf16 once afterwards) on `where`; returns the outputs on the CPU (activations bf16).
template <typename T>
std::vector<Tensor> run(const Case& c, const Inputs& in, Device where,
                        ScanForwardFn<T, float>* forward, ScanBackwardFn<T, float>* backward) {
  NoGradGuard ng;
  const DType act = dtype_of<T>();
  auto put = [&](const Tensor& t, bool activation) {
    if (!t.defined()) return Tensor();
    return (activation ? t.cast(act) : t).copy_to(where);
  };
  const Tensor u = put(in.u, true), delta = put(in.delta, true), A = put(in.A, false),
               Bm = put(in.B, true), C = put(in.C, true), D = put(in.D, false),
               z = put(in.z, true), bias = put(in.bias, false), h0 = put(in.h0, false),
               dy = put(in.dy, true), dh_last = put(in.dh_last, false);
  const int64_t nc = scan_num_chunks(c.L, c.T);
  auto E = [&](const Shape& s, DType dt) { return Tensor::zeros(s, dt, where); };
  auto opt = [&](bool on, const Shape& s, DType dt) { return on ? E(s, dt) : Tensor(); };
  const DType f32 = DType::f32;
  std::vector<Tensor> out{E({c.B, c.L, c.ED}, act), E({c.B, c.ED, c.N}, f32),
                          E({c.B, nc, c.ED, c.N}, f32), E({c.B, c.L, c.ED}, act),
                          E({c.B, c.L, c.ED}, act), E({c.ED, c.N}, f32),
                          E({c.B, c.L, c.N}, act), E({c.B, c.L, c.N}, act),
                          opt(c.D, {c.ED}, f32), opt(c.z, {c.B, c.L, c.ED}, act),
                          opt(c.bias, {c.ED}, f32), opt(c.h0, {c.B, c.ED, c.N}, f32)};
  auto pa = [](const Tensor& t) { return t.data_or_null<T>(); };
  auto ps = [](const Tensor& t) { return t.data_or_null<float>(); };
  const ScanArgs<T, float> args{
      .B = c.B, .L = c.L, .ED = c.ED, .N = c.N, .T = c.T, .u = pa(u), .delta = pa(delta),
      .A = ps(A), .Bm = pa(Bm), .C = pa(C), .D = ps(D), .z = pa(z), .delta_bias = ps(bias),
      .delta_softplus = c.softplus, .h0 = ps(h0), .y = pa(out[kY]), .h_last = ps(out[kHLast]),
      .chunk_states = ps(out[kStates])};
  const ScanGrads<T, float> grads{
      .dy = pa(dy), .dh_last = ps(dh_last), .du = pa(out[kDu]), .ddelta = pa(out[kDdelta]),
      .dA = ps(out[kDA]), .dB = pa(out[kDB]), .dC = pa(out[kDC]), .dD = ps(out[kDD]),
      .dz = pa(out[kDz]), .ddelta_bias = ps(out[kDbias]), .dh0 = ps(out[kDh0])};
  forward(args);
  backward(args, grads);
  for (int k = 0; k < (int)out.size(); ++k) {
    if (!out[k].defined()) continue;
    out[k] = out[k].copy_to(Device::cpu());
    if (is_activation_out(k)) out[k] = out[k].cast(DType::bf16);  // (f32: the one rounding)
  }
  return out;
}

// How far apart two bf16 tensors are, in units of the bf16 spacing (ulp) at the larger of the
// two values: 0 when equal, 1 when neighbours. Differences below `floor` (an absolute value, a
// fraction of the tensor's scale) are not counted: where a value is the difference of larger
// f32 terms, two f32 summation orders differ by f32 rounding of the terms' size, which is many
// ulps of a tiny result.
inline double bf16_ulps(float x) {  // the bf16 spacing at |x|
  const float a = std::fabs(x);
  if (a == 0.f || !std::isfinite(a)) return std::ldexp(1.0, -133);  // smallest subnormal step
  int e = 0;
  std::frexp(a, &e);  // a = m 2^e, m in [0.5, 1): spacing 2^(e - 8)
  return std::ldexp(1.0, std::max(e - 8, -133));
}
struct UlpReport {
  double worst_ulps = 0;  // over the elements not under the floor
  double scale = 0;       // max |want|
};
inline UlpReport ulp_distance(const Tensor& got, const Tensor& want, double floor_rel) {
  REQUIRE(got.dtype() == DType::bf16);
  REQUIRE(want.dtype() == DType::bf16);
  const std::vector<float> g = got.cast(DType::f32).to_vector<float>();
  const std::vector<float> w = want.cast(DType::f32).to_vector<float>();
  REQUIRE(g.size() == w.size());
  UlpReport r;
  for (float v : w) r.scale = std::max(r.scale, double(std::fabs(v)));
  for (size_t i = 0; i < g.size(); ++i) {
    const double diff = std::fabs(double(g[i]) - double(w[i]));
    if (diff == 0 || diff <= floor_rel * r.scale) continue;
    const float big = std::fabs(g[i]) > std::fabs(w[i]) ? g[i] : w[i];
    r.worst_ulps = std::max(r.worst_ulps, diff / bf16_ulps(big));
  }
  return r;
}
// max |a - b| / max |b| for f32 tensors.
inline double rel_error(const Tensor& a, const Tensor& b) {
  const std::vector<float> x = a.to_vector<float>(), y = b.to_vector<float>();
  REQUIRE(x.size() == y.size());
  double diff = 0, scale = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    diff = std::max(diff, std::fabs(double(x[i]) - double(y[i])));
    scale = std::max(scale, std::fabs(double(y[i])));
  }
  return scale > 0 ? diff / scale : diff;
}
inline bool same_bits(const Tensor& a, const Tensor& b) {
  if (a.defined() != b.defined()) return false;
  if (!a.defined()) return true;
  return a.dtype() == b.dtype() && a.nbytes() == b.nbytes() &&
         std::equal((const char*)a.raw_data(), (const char*)a.raw_data() + a.nbytes(),
                    (const char*)b.raw_data());
}

}  // namespace mg::test::scan_bf16
