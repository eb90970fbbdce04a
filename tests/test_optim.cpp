// Optimizers, schedules and gradient utilities: AdamW and SGD against hand-written double
// references (PyTorch's formulas), state round trips, clipping, the non-finite guard, and
// gradient accumulation.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <numbers>
#include <optional>
#include <vector>

#include "autograd/tape.h"
#include "nn/mamba.h"
#include "ops/arith.h"
#include "ops/matmul.h"
#include "ops/shape.h"
#include "ops/softmax.h"
#include "train/grad_utils.h"
#include "train/optimizer.h"
#include "train/schedule.h"

using namespace mg;
using train::AdamW;
using train::LrSchedule;
using train::SGD;

namespace {

Tensor leaf(const std::vector<double>& v) {
  Tensor t = Tensor::from_vector<double>(v, {(int64_t)v.size()});
  t.requires_grad_();
  return t;
}

void set_grad(Tensor& p, const std::vector<double>& g) {
  p.set_grad(Tensor::from_vector<double>(g, {(int64_t)g.size()}));
}

// PyTorch torch.optim.AdamW, one parameter, plain doubles.
struct RefAdamW {
  std::vector<double> p, m, v;
  double b1, b2, eps, wd;
  int t = 0;
  void step(const std::vector<double>& g, double lr, double scale = 1.0) {
    ++t;
    double c1 = 1 - std::pow(b1, t), c2 = 1 - std::pow(b2, t);
    for (size_t i = 0; i < p.size(); ++i) {
      double gi = g[i] * scale;
      p[i] *= 1 - lr * wd;
      m[i] = b1 * m[i] + (1 - b1) * gi;
      v[i] = b2 * v[i] + (1 - b2) * gi * gi;
      p[i] -= lr / c1 * m[i] / (std::sqrt(v[i]) / std::sqrt(c2) + eps);
    }
  }
};

void check_close(const std::vector<double>& a, const std::vector<double>& b, double tol) {
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) CHECK(std::abs(a[i] - b[i]) <= tol * (1 + std::abs(b[i])));
}

const std::vector<std::vector<double>> kGrads = {
    {0.5, -1.0, 2.0, 0.0, 1e-3}, {0.1, 0.3, -0.7, 1.5, -2.0}, {-0.4, 0.2, 0.9, -1.1, 0.05}};
const std::vector<double> kLrs = {1e-2, 5e-3, 2e-2};

}  // namespace

TEST_CASE("optim: AdamW matches PyTorch's formula over 3 steps; decay only where marked") {
  std::vector<double> init = {1.0, -2.0, 0.5, 3.0, -0.25};
  Tensor a = leaf(init), b = leaf(init), untouched = leaf(init);
  std::vector<nn::NamedParam> params = {{"a.weight", a, {}},
                                         {"a.bias", b, {.weight_decay = false}},
                                         {"c", untouched, {}}};
  AdamW opt(params, 0.9, 0.95, 1e-8, 0.1);
  RefAdamW ra{init, std::vector<double>(5), std::vector<double>(5), 0.9, 0.95, 1e-8, 0.1};
  RefAdamW rb{init, std::vector<double>(5), std::vector<double>(5), 0.9, 0.95, 1e-8, 0.0};
  for (int s = 0; s < 3; ++s) {
    set_grad(a, kGrads[s]);
    set_grad(b, kGrads[(s + 1) % 3]);
    opt.step(kLrs[s]);
    ra.step(kGrads[s], kLrs[s]);
    rb.step(kGrads[(s + 1) % 3], kLrs[s]);
    check_close(a.to_vector<double>(), ra.p, 1e-14);
    check_close(b.to_vector<double>(), rb.p, 1e-14);
  }
  CHECK(opt.step_count() == 3);
  CHECK(untouched.to_vector<double>() == init);  // grad undefined: skipped
  CHECK(opt.state().at("m.c").to_vector<double>() == std::vector<double>(5, 0.0));

  std::string groups = opt.describe_groups();
  CHECK(groups.find("decay 2 tensors (10 params)") != std::string::npos);
  CHECK(groups.find("no decay 1 tensor (5 params): a.bias") != std::string::npos);
}

TEST_CASE("optim: AdamW with zero gradients only decays the decayed parameters") {
  Tensor w = leaf({2.0, -4.0}), bias = leaf({2.0, -4.0});
  AdamW opt({{"w", w, {}}, {"b", bias, {.weight_decay = false}}}, 0.9, 0.95, 1e-8, 0.1);
  set_grad(w, {0, 0});
  set_grad(bias, {0, 0});
  opt.step(0.5);
  CHECK(w.to_vector<double>() == std::vector<double>{2.0 * 0.95, -4.0 * 0.95});
  CHECK(bias.to_vector<double>() == std::vector<double>{2.0, -4.0});
}

TEST_CASE("optim: AdamW f32 follows the f64 reference; grad_scale scales the gradient as read") {
  std::vector<float> init = {1.0f, -2.0f, 0.5f, 3.0f, -0.25f};
  Tensor p = Tensor::from_vector<float>(init, {5});
  p.requires_grad_();
  AdamW opt({{"p", p, {}}});
  RefAdamW ref{{1.0, -2.0, 0.5, 3.0, -0.25}, std::vector<double>(5), std::vector<double>(5), 0.9, 0.95, 1e-8, 0.1};
  std::vector<float> g32(kGrads[1].begin(), kGrads[1].end());
  Tensor g = Tensor::from_vector<float>(g32, {5});
  p.set_grad(g);
  opt.step(1e-2, 0.25);
  ref.step(kGrads[1], 1e-2, 0.25);
  auto got = p.to_vector<float>();
  for (int i = 0; i < 5; ++i) CHECK(got[i] == doctest::Approx(ref.p[i]).epsilon(1e-6));
  CHECK(g.to_vector<float>() == g32);  // the gradient was not modified
  CHECK(p.grad().same(g));

  // grad_scale s with grad g == grad s * g with scale 1 (f64, same rounding of g * s).
  Tensor x = leaf({1, 2, 3}), y = leaf({1, 2, 3});
  AdamW ox({{"x", x, {}}}), oy({{"y", y, {}}});
  set_grad(x, {0.4, -0.8, 1.2});
  set_grad(y, {0.1, -0.2, 0.3});
  ox.step(1e-2, 0.25);
  oy.step(1e-2, 1.0);
  CHECK(x.to_vector<double>() == y.to_vector<double>());
}

TEST_CASE("optim: AdamW state() / load_state() resumes bit-identically; bad states are named") {
  Tensor a = leaf({1, 2, 3, 4, 5}), b = leaf({-1, 0, 1, 2, 3});
  AdamW opt({{"a", a, {}}, {"b", b, {.weight_decay = false}}});
  for (int s = 0; s < 2; ++s) {
    set_grad(a, kGrads[s]);
    set_grad(b, kGrads[2 - s]);
    opt.step(kLrs[s]);
  }
  // A "new process": copies of the weights, a fresh optimizer, the saved state (deep copies).
  Tensor a2 = a.clone().requires_grad_(), b2 = b.clone().requires_grad_();
  AdamW opt2({{"a", a2, {}}, {"b", b2, {.weight_decay = false}}});
  std::map<std::string, Tensor> saved;
  for (auto& [k, t] : opt.state()) saved[k] = t.clone();
  CHECK(saved.size() == 5);
  CHECK(saved.at("step").item() == 2.0);
  opt2.load_state(saved);
  CHECK(opt2.step_count() == 2);
  for (Tensor* p : {&a, &b, &a2, &b2}) set_grad(*p, kGrads[2]);
  opt.step(kLrs[2]);
  opt2.step(kLrs[2]);
  CHECK(a.to_vector<double>() == a2.to_vector<double>());
  CHECK(b.to_vector<double>() == b2.to_vector<double>());

  auto broken = saved;
  broken.erase("v.b");
  broken["m.a"] = Tensor::zeros({4}, DType::f64);
  broken["m.zzz"] = Tensor::zeros({5}, DType::f64);
  auto before = a2.to_vector<double>();
  Tensor m_before = opt2.state().at("m.b").clone();
  try {
    opt2.load_state(broken);
    FAIL("load_state accepted a broken state");
  } catch (const Error& e) {
    std::string msg = e.what();
    CHECK(msg.find("missing (1): v.b") != std::string::npos);
    CHECK(msg.find("unexpected (1): m.zzz") != std::string::npos);
    CHECK(msg.find("m.a (4), expected (5)") != std::string::npos);
  }
  CHECK(opt2.state().at("m.b").to_vector<double>() == m_before.to_vector<double>());
  CHECK(opt2.step_count() == 3);
  CHECK(a2.to_vector<double>() == before);
}

TEST_CASE("optim: SGD with momentum and nesterov follows torch.optim.SGD") {
  for (bool nesterov : {false, true}) {
    Tensor p = leaf({1.0, -1.0, 2.0, 0.0, 4.0});
    SGD opt({{"p", p, {}}}, 0.9, nesterov, 0.01);
    std::vector<double> ref = {1.0, -1.0, 2.0, 0.0, 4.0}, buf(5, 0.0);
    for (int s = 0; s < 3; ++s) {
      set_grad(p, kGrads[s]);
      opt.step(kLrs[s], 0.5);
      for (int i = 0; i < 5; ++i) {
        double g = kGrads[s][i] * 0.5 + 0.01 * ref[i];
        buf[i] = s == 0 ? g : 0.9 * buf[i] + g;
        ref[i] -= kLrs[s] * (nesterov ? g + 0.9 * buf[i] : buf[i]);
      }
      check_close(p.to_vector<double>(), ref, 1e-15);
    }
    CHECK(opt.state().count("momentum.p") == 1);
  }
  Tensor q = leaf({1.0, 2.0});
  SGD plain({{"q", q, {}}});
  set_grad(q, {0.5, -1.0});
  plain.step(0.1);
  CHECK(q.to_vector<double>() == std::vector<double>{1.0 - 0.1 * 0.5, 2.0 + 0.1});
  CHECK(plain.state().size() == 1);  // step only
}

TEST_CASE("optim: schedules at their key steps") {
  auto cos = LrSchedule::parse("cosine", 1e-3, 1e-5, 10, 110);
  CHECK(cos.lr_at(0) == doctest::Approx(1e-4));
  CHECK(cos.lr_at(4) == doctest::Approx(5e-4));
  CHECK(cos.lr_at(9) == doctest::Approx(1e-3));
  CHECK(cos.lr_at(10) == doctest::Approx(1e-3));
  CHECK(cos.lr_at(60) == doctest::Approx(1e-5 + (1e-3 - 1e-5) * 0.5));
  CHECK(cos.lr_at(35) == doctest::Approx(1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + std::cos(std::numbers::pi / 4))));
  CHECK(cos.lr_at(110) == doctest::Approx(1e-5));
  CHECK(cos.lr_at(1000) == doctest::Approx(1e-5));

  auto wsd = LrSchedule::parse("wsd", 1.0, 0.0, 5, 100, 0.2);
  CHECK(wsd.lr_at(0) == doctest::Approx(0.2));
  CHECK(wsd.lr_at(50) == 1.0);
  CHECK(wsd.lr_at(80) == 1.0);
  CHECK(wsd.lr_at(90) == doctest::Approx(0.5));
  CHECK(wsd.lr_at(100) == 0.0);

  auto c = LrSchedule::parse("constant", 2e-3, 0.0, 4);
  CHECK(c.lr_at(0) == doctest::Approx(5e-4));
  CHECK(c.lr_at(3) == doctest::Approx(2e-3));
  CHECK(c.lr_at(1'000'000) == 2e-3);
  CHECK(c.describe() == "constant(peak=0.002, warmup=4)");
  CHECK(cos.describe() == "cosine(peak=0.001, min=1e-05, warmup=10, total=110)");

  CHECK_THROWS_WITH_AS(LrSchedule::parse("linear", 1e-3), doctest::Contains("known: constant, cosine, wsd"), Error);
  CHECK_THROWS_WITH_AS(LrSchedule::parse("cosine", 1e-3, 0, 10, 10), doctest::Contains("total_steps"), Error);
  CHECK_THROWS_WITH_AS(LrSchedule::parse("cosine", 1e-3, 1e-2, 0, 10), doctest::Contains("min_lr"), Error);
  CHECK_THROWS_AS(cos.lr_at(-1), Error);
}

TEST_CASE("optim: global_grad_norm, clip_scale and find_non_finite") {
  Tensor a = leaf({3.0, 0.0}), b = leaf({4.0}), c = leaf({1.0});
  set_grad(a, {3.0, 0.0});
  set_grad(b, {-12.0});
  std::vector<nn::NamedParam> ps = {{"a", a, {}}, {"b", b, {}}, {"c", c, {}}};  // c: no grad
  CHECK(train::global_grad_norm(ps) == std::sqrt(153.0));

  // Many blocks, f32: equals a plain double loop.
  Tensor big = Tensor::randn({300001}, DType::f32).requires_grad_();
  Generator gen(5);
  Tensor gbig = Tensor::randn({300001}, DType::f32, &gen);
  big.set_grad(gbig);
  double ref = 0;
  for (float x : gbig.to_vector<float>()) ref += double(x) * double(x);
  CHECK(train::global_grad_norm({{"big", big, {}}}) == doctest::Approx(std::sqrt(ref)).epsilon(1e-12));

  CHECK(train::clip_scale(2.0, 1.0) == 1.0 / (2.0 + 1e-6));
  CHECK(train::clip_scale(0.5, 1.0) == 1.0);
  CHECK(train::clip_scale(5.0, 0.0) == 1.0);
  CHECK(train::clip_scale(5.0, -1.0) == 1.0);

  CHECK_FALSE(train::find_non_finite(ps).has_value());
  set_grad(c, {std::numeric_limits<double>::infinity()});
  set_grad(b, {std::nan("")});
  CHECK(train::find_non_finite(ps) == std::optional<std::string>("b"));
  b.zero_grad();
  CHECK(train::find_non_finite(ps) == std::optional<std::string>("c"));
}

TEST_CASE("optim: K micro-batches with loss/K accumulate the gradient of one K-times batch") {
  const int64_t K = 3, n = 4, D = 5, V = 7;
  Generator gen(11);
  Tensor W = Tensor::randn({V, D}, DType::f64, &gen).requires_grad_();
  Tensor bias = Tensor::randn({V}, DType::f64, &gen).requires_grad_();
  Tensor x = Tensor::randn({K * n, D}, DType::f64, &gen);
  std::vector<int32_t> ids(K * n);
  for (auto& t : ids) t = (int32_t)gen.next_below(V);
  Tensor targets = Tensor::from_vector(ids, {K * n});

  backward(cross_entropy(linear(x, W, bias), targets));
  auto dW_big = W.grad().to_vector<double>(), db_big = bias.grad().to_vector<double>();
  W.zero_grad();
  bias.zero_grad();
  for (int64_t k = 0; k < K; ++k) {
    Tensor xk = slice(x, 0, k * n, (k + 1) * n), tk = slice(targets, 0, k * n, (k + 1) * n);
    backward(mul(cross_entropy(linear(xk, W, bias), tk), 1.0 / K));
  }
  check_close(W.grad().to_vector<double>(), dW_big, 1e-12);
  check_close(bias.grad().to_vector<double>(), db_big, 1e-12);
  double norm = 0;
  for (double g : dW_big) norm += g * g;
  CHECK(norm > 1e-6);  // a real gradient, not zeros
}

TEST_CASE("optim: AdamW groups of a Mamba model: norms, biases, A_log and D are not decayed") {
  nn::MambaConfig cfg;
  cfg.d_model = 16;
  cfg.n_layer = 2;
  cfg.vocab_size = 20;
  cfg.d_state = 4;
  nn::MambaLM model(cfg, 1);
  AdamW opt(model.named_parameters());
  std::string g = opt.describe_groups();
  for (const char* name : {"backbone.layers.*.mixer.A_log (x2)", "backbone.layers.*.mixer.D (x2)",
                           "backbone.layers.*.norm.weight (x2)", "backbone.norm_f.weight"})
    CHECK_MESSAGE(g.find(name) != std::string::npos, g);
  CHECK(g.find("in_proj") == std::string::npos);
}
