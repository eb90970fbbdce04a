// Reductions (sum, mean, max) and the softmax family (softmax, log_softmax, cross_entropy):
// values against hand-computed numbers and naive loops, gradients by finite differences in
// f64, determinism across thread counts, numerical stability, and the error messages.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "autograd/gradcheck.h"
#include "autograd/tape.h"
#include "ops/arith.h"
#include "ops/reduce.h"
#include "ops/softmax.h"
#include "test_util.h"

using namespace mg;
using test::error_of;
using test::has;

namespace {

const std::vector<Shape> kShapes = {{1}, {7}, {13}, {33}, {3, 7, 5}};

std::vector<int64_t> dims_of(const Shape& s) {  // every dim, positive and negative
  std::vector<int64_t> d;
  for (int64_t k = 0; k < (int64_t)s.size(); ++k) { d.push_back(k); d.push_back(k - (int64_t)s.size()); }
  return d;
}

// (outer, n, inner) computed here by hand, independent of ops/reduce.cpp.
struct View { int64_t outer = 1, n, inner = 1; };
View view_of(const Shape& s, int64_t d) {
  if (d < 0) d += (int64_t)s.size();
  View v{1, s[d], 1};
  for (int64_t k = 0; k < d; ++k) v.outer *= s[k];
  for (int64_t k = d + 1; k < (int64_t)s.size(); ++k) v.inner *= s[k];
  return v;
}

// The naive reduction: one output per (o, i), the slice walked with a plain loop.
std::vector<double> naive_reduce(const std::vector<double>& x, const Shape& s, int64_t d, char op) {
  View v = view_of(s, d);
  std::vector<double> y;
  for (int64_t o = 0; o < v.outer; ++o)
    for (int64_t i = 0; i < v.inner; ++i) {
      double acc = op == 'M' ? -INFINITY : 0.0;
      for (int64_t k = 0; k < v.n; ++k) {
        double e = x[(o * v.n + k) * v.inner + i];
        acc = op == 'M' ? std::max(acc, e) : acc + e;
      }
      y.push_back(op == 'm' ? acc / v.n : acc);
    }
  return y;
}

// softmax (or log_softmax) of every slice, straight from the definition (no max shift: the
// test inputs are small).
std::vector<double> naive_softmax(const std::vector<double>& x, const Shape& s, int64_t d, bool log) {
  View v = view_of(s, d);
  std::vector<double> y(x.size());
  for (int64_t o = 0; o < v.outer; ++o)
    for (int64_t i = 0; i < v.inner; ++i) {
      double S = 0;
      for (int64_t k = 0; k < v.n; ++k) S += std::exp(x[(o * v.n + k) * v.inner + i]);
      for (int64_t k = 0; k < v.n; ++k) {
        int64_t j = (o * v.n + k) * v.inner + i;
        y[j] = log ? x[j] - std::log(S) : std::exp(x[j]) / S;
      }
    }
  return y;
}

void check_close(const std::vector<double>& got, const std::vector<double>& want, double tol) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) CHECK(got[i] == doctest::Approx(want[i]).epsilon(tol));
}

// Values in shuffled order, at least 0.37 apart: no ties, so max's gradient is smooth.
Tensor distinct_values(const Shape& s, uint64_t seed) {
  int64_t n = shape_numel(s);
  std::vector<double> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = 0.37 * (double)i - 0.1 * (double)n;
  for (int64_t i = n - 1; i > 0; --i) {  // Fisher-Yates with a small LCG
    seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
    std::swap(v[i], v[(seed >> 33) % (uint64_t)(i + 1)]);
  }
  return Tensor::from_vector<double>(v, s);
}

void expect_gradcheck(const std::string& what, const GradcheckFn& fn, const Tensor& x) {
  GradcheckResult r = gradcheck(fn, {x});
  INFO(what, ": ", r.report());
  CHECK(r.ok);
}


Tensor ids(const std::vector<int32_t>& v) { return Tensor::from_vector<int32_t>(v, {(int64_t)v.size()}); }

}  // namespace

// ---- reductions: values -----------------------------------------------------------------------

TEST_CASE("reduce: full sum, mean and max of a small tensor, hand-computed") {
  for (DType dt : {DType::f32, DType::f64}) {
    Tensor x = Tensor::from_vector<double>({1.5, -2.0, 4.0, 0.5, 3.0, -1.0}, {2, 3}).cast(dt);
    CHECK(sum(x).shape() == Shape{});
    CHECK(sum(x).item() == doctest::Approx(6.0));
    CHECK(mean(x).item() == doctest::Approx(1.0));
    CHECK(max(x).item() == doctest::Approx(4.0));
    CHECK(sum(x, 0).cast(DType::f64).to_vector<double>() == std::vector<double>{2.0, 1.0, 3.0});
    check_close(mean(x, 1).cast(DType::f64).to_vector<double>(), {3.5 / 3, 2.5 / 3}, 1e-7);
    CHECK(max(x, -1).cast(DType::f64).to_vector<double>() == std::vector<double>{4.0, 3.0});
    CHECK(max(x, 0, true).shape() == Shape{1, 3});
  }
}

TEST_CASE("reduce: sum/mean/max over every dim of odd shapes match naive loops (f32 and f64)") {
  Generator gen(7);
  for (const Shape& s : kShapes)
    for (int64_t d : dims_of(s))
      for (bool keepdim : {false, true})
        for (DType dt : {DType::f64, DType::f32}) {
          Tensor x = Tensor::randn(s, dt, &gen);
          std::vector<double> xv = x.cast(DType::f64).to_vector<double>();
          Shape want = s;
          int64_t dd = d < 0 ? d + (int64_t)s.size() : d;
          if (keepdim) want[dd] = 1; else want.erase(want.begin() + dd);
          double tol = dt == DType::f32 ? 1e-6 : 1e-13;
          INFO("shape ", shape_str(s), " dim ", d, " keepdim ", keepdim, " ", dtype_name(dt));
          for (char op : {'s', 'm', 'M'}) {
            Tensor y = op == 's' ? sum(x, d, keepdim) : op == 'm' ? mean(x, d, keepdim) : max(x, d, keepdim);
            CHECK(y.shape() == want);
            CHECK(y.dtype() == dt);
            check_close(y.cast(DType::f64).to_vector<double>(), naive_reduce(xv, s, d, op), tol);
          }
        }
}

TEST_CASE("reduce: f32 sums accumulate in double (1e8 + 1000 ones - 1e8 = 1000)") {
  std::vector<float> v(1002, 1.0f);
  v.front() = 1e8f;
  v.back() = -1e8f;  // a float accumulator would lose every 1 next to 1e8 and return 0
  Tensor x = Tensor::from_vector<float>(v, {1002});
  CHECK(sum(x).item() == 1000.0);
  CHECK(sum(x.view({1, 1002}), 1).item() == 1000.0);
  CHECK(mean(x).item() == doctest::Approx(1000.0 / 1002));
}

TEST_CASE("reduce: empty slices give sum 0 and mean NaN; max of nothing is an error") {
  Tensor e = Tensor::zeros({3, 0});
  CHECK(sum(e).item() == 0.0);
  CHECK(std::isnan(mean(e).item()));
  CHECK(sum(e, 1).to_vector<float>() == std::vector<float>{0, 0, 0});
  CHECK(has(error_of([&] { max(e); }), "max"));
  CHECK(has(error_of([&] { max(e, 1); }), "(3, 0)"));
}

TEST_CASE("reduce: max propagates NaN like PyTorch") {
  Tensor x = Tensor::from_vector<double>({1.0, NAN, 5.0, 2.0}, {2, 2});
  CHECK(std::isnan(max(x).item()));
  auto rows = max(x, 1).to_vector<double>();
  CHECK(std::isnan(rows[0]));
  CHECK(rows[1] == 5.0);
}

// ---- reductions: gradients --------------------------------------------------------------------

TEST_CASE("reduce: max sends the gradient to the FIRST maximum of each slice (ties)") {
  Tensor x = Tensor::from_vector<double>({3, 1, 3, 2}, {4}).requires_grad_();
  backward(max(x));
  CHECK(x.grad().to_vector<double>() == std::vector<double>{1, 0, 0, 0});

  Tensor y = Tensor::from_vector<double>({5, 7, 7, 5,   // rows of (2, 4): ties in each
                                          9, 9, 1, 9}, {2, 4}).requires_grad_();
  backward(max(y, 1), Tensor::from_vector<double>({2.0, -3.0}, {2}));
  CHECK(y.grad().to_vector<double>() == std::vector<double>{0, 2, 0, 0, -3, 0, 0, 0});
  Tensor z = Tensor::from_vector<double>({4, 4, 1, 2}, {2, 2}).requires_grad_();
  backward(max(z, 0, true), Tensor::from_vector<double>({1.0, 10.0}, {1, 2}));  // columns
  CHECK(z.grad().to_vector<double>() == std::vector<double>{1, 10, 0, 0});
}

TEST_CASE("reduce: gradcheck of sum, mean, max over every dim, keepdim both ways (f64)") {
  Generator gen(11);
  for (const Shape& s : kShapes) {
    Tensor x = Tensor::randn(s, DType::f64, &gen);
    Tensor xd = distinct_values(s, 3 + s.size() * 100 + shape_numel(s));
    std::string sh = shape_str(s);
    expect_gradcheck("sum " + sh, [](auto& in) { return sum(in[0]); }, x);
    expect_gradcheck("mean " + sh, [](auto& in) { return mean(in[0]); }, x);
    expect_gradcheck("max " + sh, [](auto& in) { return max(in[0]); }, xd);
    for (int64_t d : dims_of(s))
      for (bool k : {false, true}) {
        std::string w = sh + " dim " + std::to_string(d) + (k ? " keepdim" : "");
        expect_gradcheck("sum " + w, [=](auto& in) { return sum(in[0], d, k); }, x);
        expect_gradcheck("mean " + w, [=](auto& in) { return mean(in[0], d, k); }, x);
        expect_gradcheck("max " + w, [=](auto& in) { return max(in[0], d, k); }, xd);
      }
  }
}

// ---- softmax / log_softmax --------------------------------------------------------------------

TEST_CASE("softmax: hand-computed values for [0, ln 2, ln 5]") {
  // exp -> [1, 2, 5], S = 8: softmax [1/8, 2/8, 5/8]; log_softmax = x - ln 8.
  Tensor x = Tensor::from_vector<double>({0.0, std::log(2.0), std::log(5.0)}, {3});
  check_close(softmax(x).to_vector<double>(), {0.125, 0.25, 0.625}, 1e-14);
  check_close(log_softmax(x).to_vector<double>(),
              {-std::log(8.0), std::log(2.0 / 8), std::log(5.0 / 8)}, 1e-14);
}

TEST_CASE("softmax: values over every dim of odd shapes match the definition (f32 and f64)") {
  Generator gen(21);
  for (const Shape& s : kShapes)
    for (int64_t d : dims_of(s))
      for (DType dt : {DType::f64, DType::f32}) {
        Tensor x = Tensor::randn(s, dt, &gen);
        std::vector<double> xv = x.cast(DType::f64).to_vector<double>();
        double tol = dt == DType::f32 ? 2e-6 : 1e-12;
        INFO("shape ", shape_str(s), " dim ", d, " ", dtype_name(dt));
        check_close(softmax(x, d).cast(DType::f64).to_vector<double>(), naive_softmax(xv, s, d, false), tol);
        check_close(log_softmax(x, d).cast(DType::f64).to_vector<double>(), naive_softmax(xv, s, d, true), tol);
      }
}

TEST_CASE("softmax: stable for logits [1000, 0, -1000] (f32 and f64)") {
  for (DType dt : {DType::f32, DType::f64}) {
    Tensor x = Tensor::from_vector<double>({1000.0, 0.0, -1000.0}, {1, 3}).cast(dt);
    auto ls = log_softmax(x).cast(DType::f64).to_vector<double>();
    auto p = softmax(x).cast(DType::f64).to_vector<double>();
    for (int k = 0; k < 3; ++k) CHECK(std::isfinite(ls[k]));
    CHECK(ls == std::vector<double>{0.0, -1000.0, -2000.0});  // log(1 + e^-1000 + e^-2000) = 0
    CHECK(p == std::vector<double>{1.0, 0.0, 0.0});
    Tensor ce = cross_entropy(x, ids({2}));
    CHECK(ce.item() == 2000.0);
  }
  // -inf entries (masks) are fine next to a finite one.
  Tensor m = Tensor::from_vector<double>({-INFINITY, 0.0, 0.0}, {3});
  CHECK(softmax(m).to_vector<double>() == std::vector<double>{0.0, 0.5, 0.5});
}

TEST_CASE("softmax: gradcheck of softmax and log_softmax over every dim (f64)") {
  Generator gen(31);
  for (const Shape& s : kShapes) {
    Tensor x = Tensor::randn(s, DType::f64, &gen);
    for (int64_t d : dims_of(s)) {
      std::string w = shape_str(s) + " dim " + std::to_string(d);
      expect_gradcheck("softmax " + w, [=](auto& in) { return softmax(in[0], d); }, x);
      expect_gradcheck("log_softmax " + w, [=](auto& in) { return log_softmax(in[0], d); }, x);
    }
  }
}

// ---- cross_entropy ----------------------------------------------------------------------------

TEST_CASE("cross_entropy: value and gradient match the definition, ignored rows skipped") {
  Generator gen(41);
  for (DType dt : {DType::f64, DType::f32}) {
    Tensor logits = Tensor::randn({5, 7}, dt, &gen).requires_grad_();
    std::vector<int32_t> t = {3, -100, 0, 6, -100};
    Tensor loss = cross_entropy(logits, ids(t));
    CHECK(loss.shape() == Shape{});
    std::vector<double> x = logits.cast(DType::f64).to_vector<double>();
    std::vector<double> lsm = naive_softmax(x, {5, 7}, 1, true);
    double want = 0;
    for (int r = 0; r < 5; ++r) if (t[r] != -100) want -= lsm[r * 7 + t[r]];
    want /= 3;  // three kept rows
    double tol = dt == DType::f32 ? 1e-6 : 1e-13;
    CHECK(loss.item() == doctest::Approx(want).epsilon(tol));
    backward(loss, Tensor::scalar(2.0, dt));  // dloss = 2
    std::vector<double> g = logits.grad().cast(DType::f64).to_vector<double>(), gw(35, 0.0);
    for (int r = 0; r < 5; ++r)
      if (t[r] != -100)
        for (int v = 0; v < 7; ++v) gw[r * 7 + v] = 2.0 * (std::exp(lsm[r * 7 + v]) - (v == t[r])) / 3;
    for (int j = 0; j < 35; ++j) CHECK(g[j] == doctest::Approx(gw[j]).epsilon(tol));
  }
}

TEST_CASE("cross_entropy: gradcheck with some ignored targets, custom ignore_index (f64)") {
  Generator gen(43);
  for (int64_t V : {1, 7, 13, 33}) {
    Tensor logits = Tensor::randn({6, V}, DType::f64, &gen);
    std::vector<int32_t> t = {0, -100, (int32_t)(V - 1), (int32_t)(V / 2), -100, 0};
    Tensor tt = ids(t);
    expect_gradcheck("cross_entropy V=" + std::to_string(V),
                     [tt](auto& in) { return cross_entropy(in[0], tt); }, logits);
  }
  // ignore_index inside [0, V): class 0 rows are skipped (padding token 0).
  Tensor logits = Tensor::randn({4, 5}, DType::f64, &gen);
  Tensor tt = ids({0, 2, 0, 4});
  expect_gradcheck("cross_entropy ignore 0", [tt](auto& in) { return cross_entropy(in[0], tt, 0); }, logits);
  Tensor kept = Tensor::from_vector<double>(logits.to_vector<double>(), {4, 5});
  double both = cross_entropy(logits, tt, 0).item();
  double ref = (cross_entropy(kept, ids({-100, 2, -100, 4})).item());
  CHECK(both == doctest::Approx(ref).epsilon(1e-15));
}

TEST_CASE("cross_entropy: all targets ignored -> loss 0 and a zero gradient") {
  Tensor logits = Tensor::randn({3, 4}, DType::f64).requires_grad_();
  Tensor loss = cross_entropy(logits, ids({-100, -100, -100}));
  CHECK(loss.item() == 0.0);
  backward(loss);
  CHECK(logits.grad().to_vector<double>() == std::vector<double>(12, 0.0));
  CHECK(cross_entropy(Tensor::zeros({0, 4}), Tensor::zeros({0}, DType::i32)).item() == 0.0);
}

// ---- determinism --------------------------------------------------------------------------------

TEST_CASE("reduce/softmax: results are bitwise identical for 1, 2 and 3 threads") {
#ifdef _OPENMP
  Generator gen(51);
  Tensor x = Tensor::randn({37, 5407}, DType::f32, &gen);  // big enough to run in parallel
  Tensor t = Tensor::zeros({37}, DType::i32);
  auto run = [&] {
    std::vector<std::vector<float>> out;
    for (Tensor y : {sum(x), mean(x), max(x), sum(x, 0), sum(x, 1), mean(x, 0, true), max(x, 0),
                     max(x, 1), softmax(x, 0), log_softmax(x), cross_entropy(x, t)})
      out.push_back(y.to_vector<float>());
    return out;
  };
  int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  auto one = run();
  for (int nt : {2, 3}) {
    omp_set_num_threads(nt);
    CHECK(run() == one);
  }
  omp_set_num_threads(saved);
#endif
}

// ---- errors -------------------------------------------------------------------------------------

TEST_CASE("reduce/softmax: bad input throws mg::Error naming the op and the shapes") {
  Tensor x = Tensor::ones({2, 3});
  for (auto [op, f] : std::vector<std::pair<std::string, std::function<void()>>>{
           {"sum", [&] { sum(x, 2); }}, {"mean", [&] { mean(x, -3); }}, {"max", [&] { max(x, 5); }},
           {"softmax", [&] { softmax(x, 2); }}, {"log_softmax", [&] { log_softmax(x, -3); }}}) {
    std::string e = error_of(f);
    INFO(e);
    CHECK(has(e, op + ": dim"));
    CHECK(has(e, "(2, 3)"));
  }
  Tensor xi = Tensor::zeros({2, 3}, DType::i32);
  CHECK(has(error_of([&] { sum(xi); }), "sum"));
  CHECK(has(error_of([&] { max(xi, 0); }), "i32"));
  CHECK(has(error_of([&] { softmax(xi); }), "softmax"));

  Tensor logits = Tensor::zeros({3, 5});
  std::string e = error_of([&] { cross_entropy(logits, ids({1, 4, 5})); });
  CHECK(has(e, "cross_entropy"));
  CHECK(has(e, "target id 5"));
  CHECK(has(e, "position 2"));
  CHECK(has(e, "V = 5"));
  CHECK(has(error_of([&] { cross_entropy(logits, ids({1, -1, 0})); }), "target id -1 at position 1"));
  e = error_of([&] { cross_entropy(Tensor::zeros({3, 5}, DType::i32), ids({0, 1, 2})); });
  CHECK(has(e, "cross_entropy"));
  CHECK(has(e, "i32"));
  e = error_of([&] { cross_entropy(logits, Tensor::zeros({3})); });
  CHECK(has(e, "cross_entropy: targets must be i32"));
  e = error_of([&] { cross_entropy(logits, ids({0, 1, 2, 3})); });
  CHECK(has(e, "cross_entropy"));
  CHECK(has(e, "(3, 5)"));
  CHECK(has(e, "(4)"));
  e = error_of([&] { cross_entropy(Tensor::zeros({2, 3, 5}), ids({0, 1})); });
  CHECK(has(e, "cross_entropy: logits must have shape (N, V), got (2, 3, 5)"));
}
