// Autograd: reuse, accumulation, zero_grad, no-grad, long chains, freeing on clear.
#include <doctest/doctest.h>

#include "autograd/gradcheck.h"
#include "autograd/tape.h"
#include "core/allocator.h"
#include "ops/arith.h"
#include "ops/unary.h"

using namespace mg;

TEST_CASE("autograd: a tensor used twice receives both contributions (b = a + a)") {
  Tensor a = Tensor::from_vector<double>({1.0, -2.0, 3.0}, {3}).requires_grad_();
  Tensor b = a + a;
  backward(b, Tensor::ones({3}, DType::f64));
  auto g = a.grad().to_vector<double>();
  CHECK(g == std::vector<double>{2.0, 2.0, 2.0});
}

TEST_CASE("autograd: x * x gives 2x") {
  Tensor a = Tensor::from_vector<double>({1.5, -2.0}, {2}).requires_grad_();
  backward(a * a, Tensor::ones({2}, DType::f64));
  CHECK(a.grad().to_vector<double>() == std::vector<double>{3.0, -4.0});
}

TEST_CASE("autograd: gradients accumulate over two backward calls until zero_grad") {
  Tensor a = Tensor::from_vector<double>({2.0}, {1}).requires_grad_();
  backward(a * 3.0);
  backward(a * 3.0);
  CHECK(a.grad().item() == doctest::Approx(6.0));
  a.zero_grad();
  CHECK_FALSE(a.grad().defined());
  backward(a * 5.0);
  CHECK(a.grad().item() == doctest::Approx(5.0));
}

TEST_CASE("autograd: no-grad guard records nothing") {
  tape().clear();
  Tensor a = Tensor::ones({4}).requires_grad_();
  {
    NoGradGuard g;
    Tensor b = exp(a) * 2.0;
    CHECK_FALSE(b.requires_grad());
  }
  CHECK(tape().size() == 0);
  Tensor c = exp(a);
  CHECK(c.requires_grad());
  CHECK(tape().size() == 1);
  tape().clear();
}

TEST_CASE("autograd: detach cuts the tape") {
  Tensor a = Tensor::ones({2}, DType::f64).requires_grad_();
  Tensor d = (a * 2.0).detach();
  CHECK_FALSE(d.requires_grad());
  CHECK(d.to_vector<double>() == std::vector<double>{2.0, 2.0});
  tape().clear();
}

TEST_CASE("autograd: backward over a 100,000-node chain neither recurses nor overflows") {
  Tensor x = Tensor::from_vector<double>({1.0}, {1}).requires_grad_();
  Tensor y = x;
  for (int i = 0; i < 100000; ++i) y = y * 1.0 + 0.0;  // 200,000 nodes
  CHECK(tape().size() == 200000);
  backward(y);
  CHECK(x.grad().item() == doctest::Approx(1.0));
  CHECK(tape().size() == 0);
}

TEST_CASE("autograd: clearing the tape frees what the nodes saved") {
  tape().clear();
  int64_t before = memory_stats().current_bytes;
  {
    Tensor a = Tensor::ones({1000, 100}).requires_grad_();
    for (int i = 0; i < 10; ++i) a = exp(a * 0.5);  // each node saves 400 KB tensors
  }
  CHECK(memory_stats().current_bytes > before + 10 * 400000);
  tape().clear();
  CHECK(memory_stats().current_bytes == before);
}

TEST_CASE("autograd: backward on a non-scalar without a gradient is an error") {
  Tensor a = Tensor::ones({3}).requires_grad_();
  Tensor b = exp(a);
  CHECK_THROWS_AS(backward(b), Error);
  tape().clear();
}

TEST_CASE("gradcheck: catches a wrong gradient") {
  // sqrt's true gradient is 1/(2 sqrt x); wrap it so the analytic side is off by 10%.
  auto fn = [](const std::vector<Tensor>& in) { return sqrt(in[0]); };
  Tensor x = Tensor::uniform({5}, 0.5, 2.0, DType::f64);
  CHECK(gradcheck(fn, {x}).ok);
  auto wrong = [](const std::vector<Tensor>& in) {
    Tensor y = sqrt(in[0]);  // value of sqrt, gradient of 1.1 * sqrt
    return add(mul(y, 1.1), mul(y.detach(), -0.1));
  };
  auto r = gradcheck(wrong, {x});
  CHECK_FALSE(r.ok);
  CHECK(r.max_error > 0.05);
}

TEST_CASE("arith: broadcasting by suffix, by column (keepdim shape) and by one element") {
  Tensor x = Tensor::from_vector<double>({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor row = Tensor::from_vector<double>({10, 20, 30}, {3});
  Tensor col = Tensor::from_vector<double>({100, 200}, {2, 1});
  Tensor one = Tensor::from_vector<double>({0.5}, {1});
  CHECK((x + row).to_vector<double>() == std::vector<double>{11, 22, 33, 14, 25, 36});
  CHECK((col - x).to_vector<double>() == std::vector<double>{99, 98, 97, 196, 195, 194});
  CHECK((x * one).to_vector<double>() == std::vector<double>{0.5, 1, 1.5, 2, 2.5, 3});
  CHECK((x / col).to_vector<double>()[5] == doctest::Approx(0.03));
  Tensor bad = Tensor::ones({2}, DType::f64);
  CHECK_THROWS_WITH_AS(add(x, bad), doctest::Contains("add: shapes (2, 3) and (2)"), Error);
  for (auto [a, b] : std::vector<std::pair<Tensor, Tensor>>{{x, row}, {row, x}, {x, col}, {col, x}, {x, one}}) {
    using Fn = Tensor (*)(const Tensor&, const Tensor&);
    for (Fn fn : {Fn(add), Fn(sub), Fn(mul), Fn(div)}) {
      auto r = gradcheck([&](const std::vector<Tensor>& in) { return fn(in[0], in[1]); },
                         {add(a, 0.5), add(b, 0.25)});
      CHECK_MESSAGE(r.ok, r.report());
    }
  }
}
