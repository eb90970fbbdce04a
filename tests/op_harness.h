// tests/op_harness.h — the op test harness (in the spirit of ggml's test-backend-ops).
//
// One table of cases (tests/test_op_harness.cpp) drives every mode. A row is
//
//   {"rms_norm (3,7,13)", [](const Ins& x) { return rms_norm(x[0], x[1]); },
//    {in({3, 7, 13}), in({13}, 0.5, 1.5)}}
//
// a name, a lambda building the op's output from the inputs, and the input specs: shape, value
// range (or ids in [0, V)), and whether the input is differentiable. Adding an op = adding a
// line. Inputs are drawn from a Generator seeded by the row, so a failure reproduces exactly.
// A row may also carry known values (`.known`: inputs and the output an independent
// computation gives, e.g. by hand), which pin the forward itself down:
//
//   {.name = "gelu (33)", .fn = [](const Ins& x) { return gelu(x[0]); },
//    .inputs = {in({33}, -6, 6)}, .known = {{{f64({1.0})}, f64({0.8413447460685429})}}}
//
// Modes (each is one doctest TEST_CASE):
//   grad  every row in f64: mg::gradcheck (central differences) on every differentiable
//         input; the worst error must stay below the row's tolerance (1e-6 by default).
//   values  every row with known values, in f64: |got - want| <= tol * max(1, |want|).
//   test  CUDA against CPU: every row runs in f32 on both devices with the same inputs and
//         cotangent; outputs and input gradients must agree to max|cuda - cpu| / max|cpu| <
//         1e-5. While the build has no CUDA backend or no GPU is visible, the rows are reported
//         as skipped (a doctest MESSAGE with the count and the reason) and the test passes.
// Set MG_HARNESS_FILTER=<substring> to run only the rows whose name contains it.
// Timings belong to examples/bench_* (speed is measured by benchmarks, never by timed
// tests), so there is no perf mode here.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "autograd/gradcheck.h"
#include "autograd/tape.h"
#include "core/tensor.h"

namespace mg::harness {

using Ins = std::vector<Tensor>;

struct InputSpec {
  Shape shape;
  bool ids = false;  // i32 ids in [0, vocab) instead of floats
  double lo = -1, hi = 1;
  int64_t vocab = 0;
  bool differentiable = true;
};

// Differentiable floats uniform in [lo, hi).
inline InputSpec in(Shape s, double lo = -1, double hi = 1) { return {std::move(s), false, lo, hi, 0, true}; }
// Differentiable floats in [0.5, 2): for log, sqrt, rsqrt, pow, divisors.
inline InputSpec pos(Shape s) { return in(std::move(s), 0.5, 2.0); }
// Floats that are inputs but not checked (constants of the case).
inline InputSpec fixed(Shape s, double lo = -1, double hi = 1) { return {std::move(s), false, lo, hi, 0, false}; }
// i32 ids (or targets) uniform in [0, vocab).
inline InputSpec ids(Shape s, int64_t vocab) { return {std::move(s), true, 0, 0, vocab, false}; }

// Inputs and the output they must give (f64), and the relative tolerance (see values mode).
struct Known {
  Ins inputs;
  Tensor output;
  double tolerance = 1e-14;
};
// A 1-d f64 tensor, for known values.
inline Tensor f64(const std::vector<double>& v) { return Tensor::from_vector<double>(v, {(int64_t)v.size()}); }

struct OpCase {
  std::string name;
  std::function<Tensor(const Ins&)> fn;
  std::vector<InputSpec> inputs;
  std::vector<Known> known = {};  // optional
  double tolerance = 1e-6;  // for the grad mode
  // Finite-difference step. Central differences carry two errors: truncation ~ eps^2 f'''(x)
  // and rounding noise ~ 1e-16 |<r, y>| / eps. With a few hundred outputs of magnitude ~5
  // (e.g. log_softmax (7,33)) the noise at eps = 1e-6 already reaches 1e-6 of a gradient of
  // 0.01; eps = 1e-5 keeps both terms near 1e-8 for the smooth ops here.
  double fd_eps = 1e-5;
};

// The row's inputs in `dtype` (ids stay i32), on the CPU, drawn from Generator(seed).
inline Ins make_inputs(const OpCase& row, DType dtype, uint64_t seed) {
  Generator gen(seed);
  Ins xs;
  for (const auto& s : row.inputs) {
    Tensor u = Tensor::uniform(s.shape, s.ids ? 0.0 : s.lo, s.ids ? (double)s.vocab : s.hi, DType::f64, &gen);
    if (!s.ids) { xs.push_back(u.cast(dtype)); continue; }
    std::vector<int32_t> v;
    for (double d : u.to_vector<double>()) v.push_back(std::min((int32_t)d, (int32_t)(s.vocab - 1)));
    xs.push_back(Tensor::from_vector<int32_t>(v, s.shape));
  }
  return xs;
}

inline GradcheckResult run_grad(const OpCase& row, uint64_t seed) {
  GradcheckOptions opts;
  opts.tolerance = row.tolerance;
  opts.eps = row.fd_eps;
  for (size_t k = 0; k < row.inputs.size(); ++k)
    if (row.inputs[k].differentiable) opts.check_inputs.push_back(k);
  return gradcheck(row.fn, make_inputs(row, DType::f64, seed), opts);
}

// The worst |got - want| / (tol * max(1, |want|)) over a row's known values: <= 1 passes.
inline double known_values_error(const OpCase& row, std::string* worst) {
  NoGradGuard no_grad;
  double ratio = 0;
  for (size_t k = 0; k < row.known.size(); ++k) {
    const Known& kv = row.known[k];
    Tensor got = row.fn(kv.inputs);
    if (got.shape() != kv.output.shape()) {
      *worst = "known value set " + std::to_string(k) + ": shape " + shape_str(got.shape()) +
               ", expected " + shape_str(kv.output.shape());
      return INFINITY;
    }
    std::vector<double> g = got.cast(DType::f64).to_vector<double>(), w = kv.output.to_vector<double>();
    for (size_t i = 0; i < g.size(); ++i) {
      double r = std::abs(g[i] - w[i]) / (kv.tolerance * std::max(1.0, std::abs(w[i])));
      if (!(r <= ratio)) {
        ratio = std::isnan(r) ? INFINITY : r;
        *worst = "known value set " + std::to_string(k) + " element " + std::to_string(i) + ": got " +
                 std::to_string(g[i]) + ", expected " + std::to_string(w[i]);
      }
    }
  }
  return ratio;
}

// "" when CUDA tensors can be made; otherwise why not.
inline std::string cuda_unavailable_reason() {
  if (!cuda_compiled()) return "this build has no CUDA backend (configured with MG_CUDA=OFF or without nvcc)";
  try {
    Tensor::zeros({1}, DType::f32, Device::cuda());
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

inline double max_relative_error(const Tensor& got, const Tensor& ref) {
  if (!got.defined() || !ref.defined()) return got.defined() == ref.defined() ? 0.0 : INFINITY;
  if (got.shape() != ref.shape()) return INFINITY;
  auto a = got.cast(DType::f64).to_vector<double>(), b = ref.cast(DType::f64).to_vector<double>();
  double diff = 0, scale = 1e-6;
  for (size_t i = 0; i < a.size(); ++i) {
    double d = std::abs(a[i] - b[i]);
    diff = std::isfinite(d) ? std::max(diff, d) : INFINITY;
    scale = std::max(scale, std::abs(b[i]));
  }
  return diff / scale;
}

struct DeviceComparison {
  double max_error = 0;
  std::string worst;  // "output" or "grad k"
};

// Output and input gradients (for the cotangent r) of one row in f32 on `device`.
inline std::vector<Tensor> run_on(const OpCase& row, const Ins& host_inputs, const Tensor& r, Device device) {
  Ins xs;
  for (size_t k = 0; k < host_inputs.size(); ++k) {
    Tensor x = host_inputs[k].copy_to(device).detach();
    if (row.inputs[k].differentiable) x.requires_grad_();
    xs.push_back(x);
  }
  Tensor y = row.fn(xs);
  std::vector<Tensor> results{y.detach().copy_to(Device::cpu())};
  backward(y, r.copy_to(device));
  for (size_t k = 0; k < xs.size(); ++k)
    if (row.inputs[k].differentiable)
      results.push_back(xs[k].grad().defined() ? xs[k].grad().copy_to(Device::cpu()) : Tensor::zeros(xs[k].shape()));
  return results;
}

// CUDA against CPU for one row, f32, same inputs and cotangent.
inline DeviceComparison compare_devices(const OpCase& row, Device device, uint64_t seed) {
  Ins xs = make_inputs(row, DType::f32, seed);
  Tensor y_shape_probe;
  {
    NoGradGuard g;
    y_shape_probe = row.fn(xs);
  }
  Generator gen(seed ^ 0x5eedULL);
  Tensor r = Tensor::randn(y_shape_probe.shape(), DType::f32, &gen);
  std::vector<Tensor> cpu = run_on(row, xs, r, Device::cpu());
  std::vector<Tensor> dev = run_on(row, xs, r, device);
  DeviceComparison c;
  for (size_t i = 0; i < cpu.size(); ++i) {
    double e = max_relative_error(dev[i], cpu[i]);
    if (e > c.max_error || c.worst.empty()) {
      c.max_error = e;
      c.worst = i == 0 ? "output" : "grad of differentiable input " + std::to_string(i - 1);
    }
  }
  return c;
}

// Rows selected by MG_HARNESS_FILTER (all when unset).
inline bool selected(const OpCase& row) {
  const char* f = std::getenv("MG_HARNESS_FILTER");
  return f == nullptr || row.name.find(f) != std::string::npos;
}

}  // namespace mg::harness
