// causal_conv1d, rms_norm, layer_norm: values against naive loops (and one hand-computed
// case), gradients by finite differences (f64), f32 against f64, bitwise determinism across
// runs and thread counts, and error messages.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "autograd/gradcheck.h"
#include "autograd/tape.h"
#include "ops/conv1d.h"
#include "ops/norm.h"
#include "test_util.h"

using namespace mg;
using test::error_of;
using test::has;

namespace {

std::vector<double> values(const Tensor& t) { return t.cast(DType::f64).to_vector<double>(); }

Tensor randn64(const Shape& s, uint64_t seed) {
  Generator g(seed);
  return Tensor::randn(s, DType::f64, &g);
}

double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

// y[b,t,c] = bias[c] + sum_k w[c,k] x[b, t-(K-1)+k, c], written as plainly as possible.
std::vector<double> naive_conv(const std::vector<double>& x, const std::vector<double>& w,
                               const std::vector<double>* bias, int64_t B, int64_t L, int64_t C,
                               int64_t K) {
  std::vector<double> y(B * L * C);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < L; ++t)
      for (int64_t c = 0; c < C; ++c) {
        double s = bias ? (*bias)[c] : 0.0;
        for (int64_t k = 0; k < K; ++k) {
          int64_t src = t - (K - 1) + k;
          if (src >= 0) s += w[c * K + k] * x[(b * L + src) * C + c];
        }
        y[(b * L + t) * C + c] = s;
      }
  return y;
}

// RMSNorm (layer == false) or LayerNorm over the last dimension, in double.
std::vector<double> naive_norm(const std::vector<double>& x, const std::vector<double>& w,
                               const std::vector<double>* bias, int64_t D, double eps,
                               bool layer) {
  std::vector<double> y(x.size());
  for (size_t r = 0; r < x.size() / D; ++r) {
    const double* xr = x.data() + r * D;
    double mu = 0, ms = 0;
    if (layer) {
      for (int64_t j = 0; j < D; ++j) mu += xr[j] / D;
    }
    for (int64_t j = 0; j < D; ++j) ms += (xr[j] - mu) * (xr[j] - mu) / D;
    for (int64_t j = 0; j < D; ++j)
      y[r * D + j] = (xr[j] - mu) / std::sqrt(ms + eps) * w[j] + (bias ? (*bias)[j] : 0.0);
  }
  return y;
}


}  // namespace

// ---- causal_conv1d ----------------------------------------------------------------------

TEST_CASE("causal_conv1d: hand-computed values; tap K-1 multiplies the current token") {
  // x = 1, 2, 3 (B = 1, L = 3, C = 1); w = [10 (previous token), 1 (current)]; bias 0.5.
  Tensor x = Tensor::from_vector<double>({1, 2, 3}, {1, 3, 1});
  Tensor w = Tensor::from_vector<double>({10, 1}, {1, 1, 2});
  Tensor b = Tensor::from_vector<double>({0.5}, {1});
  CHECK(causal_conv1d(x, w, b).to_vector<double>() == std::vector<double>{1.5, 12.5, 23.5});
  CHECK(causal_conv1d(x, w).to_vector<double>() == std::vector<double>{1.0, 12.0, 23.0});
}

TEST_CASE("causal_conv1d: matches a naive loop for K = 1, 2, 4, L < K and L = 1, f64 and f32") {
  struct Case { int64_t B, L, C, K; };
  for (Case cs : {Case{2, 7, 5, 1}, Case{2, 7, 5, 2}, Case{3, 9, 13, 4}, Case{2, 3, 6, 4},
                  Case{2, 1, 7, 4}, Case{1, 1, 1, 1}, Case{1, 33, 3, 4}}) {
    CAPTURE(cs.B); CAPTURE(cs.L); CAPTURE(cs.C); CAPTURE(cs.K);
    Tensor x = randn64({cs.B, cs.L, cs.C}, 1), w = randn64({cs.C, 1, cs.K}, 2);
    Tensor b = randn64({cs.C}, 3);
    auto xv = values(x), wv = values(w), bv = values(b);
    for (bool with_bias : {true, false}) {
      auto want = naive_conv(xv, wv, with_bias ? &bv : nullptr, cs.B, cs.L, cs.C, cs.K);
      Tensor bias = with_bias ? b : Tensor();
      CHECK(max_abs_diff(values(causal_conv1d(x, w, bias)), want) < 1e-12);
      Tensor y32 = causal_conv1d(x.cast(DType::f32), w.cast(DType::f32),
                                 with_bias ? b.cast(DType::f32) : Tensor());
      CHECK(y32.dtype() == DType::f32);
      CHECK(max_abs_diff(values(y32), want) < 1e-5);
    }
  }
}

TEST_CASE("causal_conv1d: gradcheck of x, weight and bias (f64, odd shapes, L < K)") {
  struct Case { int64_t B, L, C, K; };
  for (Case cs : {Case{2, 5, 3, 4}, Case{1, 2, 3, 4}, Case{3, 4, 2, 1}, Case{1, 7, 5, 2},
                  Case{2, 1, 3, 3}}) {
    CAPTURE(cs.L); CAPTURE(cs.K);
    Tensor x = randn64({cs.B, cs.L, cs.C}, 4), w = randn64({cs.C, 1, cs.K}, 5);
    Tensor b = randn64({cs.C}, 6);
    auto with_bias = gradcheck([](const std::vector<Tensor>& in) {
      return causal_conv1d(in[0], in[1], in[2]);
    }, {x, w, b});
    CHECK_MESSAGE(with_bias.ok, with_bias.report());
    CHECK(with_bias.elements_checked == x.numel() + w.numel() + b.numel());
    auto no_bias = gradcheck([](const std::vector<Tensor>& in) {
      return causal_conv1d(in[0], in[1]);
    }, {x, w});
    CHECK_MESSAGE(no_bias.ok, no_bias.report());
  }
}

TEST_CASE("causal_conv1d: f32 gradients agree with f64") {
  Tensor x = randn64({2, 40, 19}, 7), w = randn64({19, 1, 4}, 8), b = randn64({19}, 9);
  Tensor dy = randn64({2, 40, 19}, 10);
  std::vector<std::vector<double>> grads[2];
  for (int p = 0; p < 2; ++p) {
    DType dt = p == 0 ? DType::f64 : DType::f32;
    Tensor xs = x.cast(dt).clone().requires_grad_(), ws = w.cast(dt).clone().requires_grad_();
    Tensor bs = b.cast(dt).clone().requires_grad_();
    backward(causal_conv1d(xs, ws, bs), dy.cast(dt));
    grads[p] = {values(xs.grad()), values(ws.grad()), values(bs.grad())};
  }
  for (int i = 0; i < 3; ++i) CHECK(max_abs_diff(grads[0][i], grads[1][i]) < 1e-4);
}

TEST_CASE("causal_conv1d: bitwise identical outputs and gradients across runs and thread counts") {
  Tensor x = randn64({2, 300, 96}, 11).cast(DType::f32), w = randn64({96, 1, 4}, 12).cast(DType::f32);
  Tensor b = randn64({96}, 13).cast(DType::f32), dy = randn64({2, 300, 96}, 14).cast(DType::f32);
  auto run = [&] {
    Tensor xs = x.clone().requires_grad_(), ws = w.clone().requires_grad_();
    Tensor bs = b.clone().requires_grad_();
    Tensor y = causal_conv1d(xs, ws, bs);
    backward(y, dy);
    return std::vector<std::vector<float>>{y.to_vector<float>(), xs.grad().to_vector<float>(),
                                           ws.grad().to_vector<float>(),
                                           bs.grad().to_vector<float>()};
  };
  auto one = test::with_threads(1, run);
  CHECK(test::with_threads(2, run) == one);
  CHECK(test::with_threads(3, run) == one);
  CHECK(run() == run());
}

TEST_CASE("causal_conv1d: only inputs that require grad get one; empty batches work") {
  Tensor x = randn64({2, 6, 5}, 15), w = randn64({5, 1, 3}, 16), b = randn64({5}, 17);
  Tensor dy = randn64({2, 6, 5}, 18);
  Tensor xa = x.clone().requires_grad_(), wa = w.clone().requires_grad_();
  backward(causal_conv1d(xa, wa, b), dy);  // bias given but not requiring grad
  Tensor wb = w.clone().requires_grad_();
  backward(causal_conv1d(x, wb), dy);      // x without grad: only dw is computed
  CHECK_FALSE(x.grad().defined());
  CHECK(values(wb.grad()) == values(wa.grad()));
  CHECK(xa.grad().shape() == x.shape());

  Tensor empty_x = Tensor::zeros({2, 0, 5}, DType::f64);
  Tensor we = w.clone().requires_grad_();
  Tensor y = causal_conv1d(empty_x, we);
  CHECK(y.shape() == Shape{2, 0, 5});
  backward(y, Tensor::zeros({2, 0, 5}, DType::f64));
  CHECK(values(we.grad()) == std::vector<double>(15, 0.0));
}

TEST_CASE("causal_conv1d: bad inputs throw errors naming the op and the shapes") {
  Tensor x = Tensor::zeros({2, 5, 3}), w = Tensor::zeros({3, 1, 4}), b = Tensor::zeros({3});
  std::string m = error_of([&] { causal_conv1d(x, Tensor::zeros({3, 2, 4})); });
  CHECK(has(m, "causal_conv1d")); CHECK(has(m, "(3, 2, 4)")); CHECK(has(m, "(2, 5, 3)"));
  m = error_of([&] { causal_conv1d(x, Tensor::zeros({4, 1, 4})); });
  CHECK(has(m, "causal_conv1d")); CHECK(has(m, "(4, 1, 4)"));
  m = error_of([&] { causal_conv1d(x, Tensor::zeros({3, 4})); });
  CHECK(has(m, "causal_conv1d")); CHECK(has(m, "(3, 4)"));
  m = error_of([&] { causal_conv1d(x, Tensor::zeros({3, 1, 0})); });
  CHECK(has(m, "causal_conv1d")); CHECK(has(m, "(3, 1, 0)"));
  m = error_of([&] { causal_conv1d(x, w, Tensor::zeros({4})); });
  CHECK(has(m, "causal_conv1d")); CHECK(has(m, "bias")); CHECK(has(m, "(4)"));
  m = error_of([&] { causal_conv1d(Tensor::zeros({5, 3}), w); });
  CHECK(has(m, "causal_conv1d")); CHECK(has(m, "(5, 3)")); CHECK(has(m, "(B, L, C)"));
  m = error_of([&] { causal_conv1d(x, w.cast(DType::f64)); });
  CHECK(has(m, "causal_conv1d")); CHECK(has(m, "f32")); CHECK(has(m, "f64"));
  m = error_of([&] { causal_conv1d(x, w, b.cast(DType::f64)); });
  CHECK(has(m, "causal_conv1d")); CHECK(has(m, "dtype"));
  m = error_of([&] { causal_conv1d(Tensor::zeros({2, 5, 3}, DType::i32), w); });
  CHECK(has(m, "causal_conv1d")); CHECK(has(m, "i32"));
}

// ---- rms_norm, layer_norm ---------------------------------------------------------------

TEST_CASE("rms_norm: hand-computed row") {
  // x = (3, 4): mean(x^2) = 12.5; eps = 0 -> x / sqrt(12.5) * w.
  Tensor x = Tensor::from_vector<double>({3, 4}, {1, 2});
  Tensor w = Tensor::from_vector<double>({1, 2}, {2});
  auto y = rms_norm(x, w, 0.0).to_vector<double>();
  CHECK(y[0] == doctest::Approx(3 / std::sqrt(12.5)));
  CHECK(y[1] == doctest::Approx(8 / std::sqrt(12.5)));
}

TEST_CASE("layer_norm: hand-computed row (biased variance)") {
  // x = (1, 3): mean 2, var 1 -> xh = (-1, 1); y = xh * w + b.
  Tensor x = Tensor::from_vector<double>({1, 3}, {2});
  Tensor w = Tensor::from_vector<double>({2, 3}, {2});
  Tensor b = Tensor::from_vector<double>({0.5, -0.5}, {2});
  auto y = layer_norm(x, w, b, 0.0).to_vector<double>();
  CHECK(y[0] == doctest::Approx(-1.5));
  CHECK(y[1] == doctest::Approx(2.5));
}

TEST_CASE("rms_norm and layer_norm: match naive loops for D = 1, 7, 33 (f64 and f32)") {
  for (int64_t D : {1, 7, 33}) {
    CAPTURE(D);
    Tensor x = randn64({2, 3, D}, 20), w = randn64({D}, 21), b = randn64({D}, 22);
    auto xv = values(x), wv = values(w), bv = values(b);
    auto rms = naive_norm(xv, wv, nullptr, D, 1e-5, false);
    CHECK(max_abs_diff(values(rms_norm(x, w)), rms) < 1e-12);
    CHECK(max_abs_diff(values(rms_norm(x.cast(DType::f32), w.cast(DType::f32))), rms) < 1e-5);
    for (bool with_bias : {true, false}) {
      auto ln = naive_norm(xv, wv, with_bias ? &bv : nullptr, D, 1e-5, true);
      CHECK(max_abs_diff(values(layer_norm(x, w, with_bias ? b : Tensor())), ln) < 1e-12);
      Tensor y32 = layer_norm(x.cast(DType::f32), w.cast(DType::f32),
                              with_bias ? b.cast(DType::f32) : Tensor());
      CHECK(max_abs_diff(values(y32), ln) < 1e-5);
    }
  }
  // A non-default eps is used, and a 1-D x is one row.
  Tensor x = Tensor::from_vector<double>({0.1, -0.2, 0.3}, {3}), w = Tensor::ones({3}, DType::f64);
  CHECK(max_abs_diff(values(rms_norm(x, w, 0.5)), naive_norm(values(x), values(w), nullptr, 3, 0.5,
                                                             false)) < 1e-12);
}

TEST_CASE("layer_norm: f32 keeps precision for rows with a large mean") {
  // Two-pass statistics in double: a naive E[x^2] - E[x]^2 in f32 would lose everything here.
  std::vector<double> xv;
  for (int j = 0; j < 64; ++j) xv.push_back(10000.0 + (j % 2 ? 1.0 : -1.0));
  Tensor x = Tensor::from_vector<double>(xv, {1, 64});
  Tensor w = Tensor::ones({64}, DType::f64);
  auto want = naive_norm(xv, values(w), nullptr, 64, 1e-5, true);
  CHECK(max_abs_diff(values(layer_norm(x.cast(DType::f32), w.cast(DType::f32))), want) < 1e-4);
}

TEST_CASE("rms_norm and layer_norm: gradcheck of x, weight and bias (f64, D = 1, 7, 33)") {
  for (int64_t D : {1, 7, 33}) {
    CAPTURE(D);
    Tensor x = randn64({3, 2, D}, 30), w = randn64({D}, 31), b = randn64({D}, 32);
    auto rms = gradcheck([](const std::vector<Tensor>& in) { return rms_norm(in[0], in[1]); },
                         {x, w});
    CHECK_MESSAGE(rms.ok, rms.report());
    CHECK(rms.elements_checked == x.numel() + w.numel());
    auto ln = gradcheck([](const std::vector<Tensor>& in) {
      return layer_norm(in[0], in[1], in[2]);
    }, {x, w, b});
    CHECK_MESSAGE(ln.ok, ln.report());
    CHECK(ln.elements_checked == x.numel() + w.numel() + b.numel());
    auto ln_nobias = gradcheck([](const std::vector<Tensor>& in) {
      return layer_norm(in[0], in[1], Tensor(), 1e-3);
    }, {x, w});
    CHECK_MESSAGE(ln_nobias.ok, ln_nobias.report());
  }
}

TEST_CASE("rms_norm and layer_norm: f32 gradients agree with f64") {
  Tensor x = randn64({50, 33}, 40), w = randn64({33}, 41), b = randn64({33}, 42);
  Tensor dy = randn64({50, 33}, 43);
  std::vector<std::vector<double>> grads[2];
  for (int p = 0; p < 2; ++p) {
    DType dt = p == 0 ? DType::f64 : DType::f32;
    Tensor xs = x.cast(dt).clone().requires_grad_(), ws = w.cast(dt).clone().requires_grad_();
    Tensor bs = b.cast(dt).clone().requires_grad_(), xl = x.cast(dt).clone().requires_grad_();
    backward(rms_norm(xs, ws), dy.cast(dt));
    Tensor wl = w.cast(dt).clone().requires_grad_();
    backward(layer_norm(xl, wl, bs), dy.cast(dt));
    grads[p] = {values(xs.grad()), values(ws.grad()), values(xl.grad()), values(wl.grad()),
                values(bs.grad())};
  }
  for (int i = 0; i < 5; ++i) CHECK(max_abs_diff(grads[0][i], grads[1][i]) < 1e-4);
}

TEST_CASE("rms_norm and layer_norm: bitwise identical across runs and thread counts") {
  Tensor x = randn64({600, 96}, 50).cast(DType::f32), w = randn64({96}, 51).cast(DType::f32);
  Tensor b = randn64({96}, 52).cast(DType::f32), dy = randn64({600, 96}, 53).cast(DType::f32);
  auto run = [&] {
    Tensor xs = x.clone().requires_grad_(), ws = w.clone().requires_grad_();
    Tensor xl = x.clone().requires_grad_(), wl = w.clone().requires_grad_();
    Tensor bl = b.clone().requires_grad_();
    Tensor y = rms_norm(xs, ws);
    backward(y, dy);  // backward consumes the whole tape: one graph at a time
    Tensor z = layer_norm(xl, wl, bl);
    backward(z, dy);
    std::vector<std::vector<float>> out;
    for (const Tensor& t : {y, xs.grad(), ws.grad(), z, xl.grad(), wl.grad(), bl.grad()})
      out.push_back(t.to_vector<float>());
    return out;
  };
  auto one = test::with_threads(1, run);
  CHECK(test::with_threads(2, run) == one);
  CHECK(test::with_threads(3, run) == one);
  CHECK(run() == run());
}

TEST_CASE("rms_norm and layer_norm: zero rows give an empty output and zero weight gradients") {
  Tensor w = Tensor::ones({4}, DType::f64).requires_grad_();
  Tensor b = Tensor::zeros({4}, DType::f64).requires_grad_();
  Tensor y = layer_norm(Tensor::zeros({0, 4}, DType::f64), w, b);
  CHECK(y.shape() == Shape{0, 4});
  backward(y, Tensor::zeros({0, 4}, DType::f64));
  CHECK(values(w.grad()) == std::vector<double>(4, 0.0));
  CHECK(values(b.grad()) == std::vector<double>(4, 0.0));
  NoGradGuard no_grad;  // a forward that is never differentiated
  CHECK(rms_norm(Tensor::zeros({3, 0, 4}, DType::f64), w).shape() == Shape{3, 0, 4});
}

TEST_CASE("rms_norm and layer_norm: bad inputs throw errors naming the op and the shapes") {
  Tensor x = Tensor::zeros({2, 3, 7}), w = Tensor::ones({7});
  std::string m = error_of([&] { rms_norm(x, Tensor::ones({6})); });
  CHECK(has(m, "rms_norm")); CHECK(has(m, "(6)")); CHECK(has(m, "(2, 3, 7)"));
  m = error_of([&] { layer_norm(x, Tensor::ones({7, 1})); });
  CHECK(has(m, "layer_norm")); CHECK(has(m, "(7, 1)")); CHECK(has(m, "(2, 3, 7)"));
  m = error_of([&] { layer_norm(x, w, Tensor::zeros({8})); });
  CHECK(has(m, "layer_norm")); CHECK(has(m, "bias")); CHECK(has(m, "(8)"));
  m = error_of([&] { rms_norm(x, w.cast(DType::f64)); });
  CHECK(has(m, "rms_norm")); CHECK(has(m, "f64"));
  m = error_of([&] { layer_norm(x, w, Tensor::zeros({7}, DType::f64)); });
  CHECK(has(m, "layer_norm")); CHECK(has(m, "dtype"));
  m = error_of([&] { rms_norm(Tensor::scalar(1.0), Tensor::ones({1})); });
  CHECK(has(m, "rms_norm")); CHECK(has(m, "()"));
  m = error_of([&] { rms_norm(Tensor::zeros({3, 0}), Tensor::ones({0})); });
  CHECK(has(m, "rms_norm")); CHECK(has(m, "(3, 0)"));
  m = error_of([&] { rms_norm(x, w, -1.0); });
  CHECK(has(m, "rms_norm")); CHECK(has(m, "eps"));
  m = error_of([&] { rms_norm(Tensor::zeros({2, 7}, DType::i32), w); });
  CHECK(has(m, "rms_norm")); CHECK(has(m, "i32"));
}
