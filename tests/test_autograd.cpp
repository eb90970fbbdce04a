// Autograd: reuse, accumulation, zero_grad, no-grad, long chains, freeing on clear, and
// backward(root) differentiating exactly root's graph (several graphs on one tape).
#include <doctest/doctest.h>

#include <cmath>

#include "autograd/gradcheck.h"
#include "autograd/tape.h"
#include "core/allocator.h"
#include "ops/arith.h"
#include "ops/convert.h"
#include "ops/reduce.h"
#include "ops/shape.h"
#include "ops/unary.h"

using namespace mg;

TEST_CASE("autograd: a tensor used twice receives both contributions (b = a + a)") {
  Tensor a = Tensor::from_vector<double>({1.0, -2.0, 3.0}, {3}).requires_grad_();
  Tensor b = a + a;
  backward(b, Tensor::ones({3}, DType::f64));
  auto g = a.grad().to_vector<double>();
  CHECK(g == std::vector<double>{2.0, 2.0, 2.0});
}

TEST_CASE("autograd: Tensor's view/cast/copy_to record nothing; ops' reshape/to record and pass gradients") {
  tape().clear();  // this test counts nodes from an empty tape
  Tensor a = Tensor::from_vector<double>({1.0, 2.0, 3.0, 4.0}, {4}).requires_grad_();
  Tensor v = a.view({2, 2}), c = a.cast(DType::f32), h = a.copy_to(Device::cpu());
  CHECK_FALSE(v.requires_grad());
  CHECK_FALSE(c.requires_grad());
  CHECK(v.raw_data() == a.raw_data());  // a view shares the storage
  CHECK(tape().size() == 0);
  // reshape: the same storage, one node; d(sum(w * reshape(a))) / da = w, back in a's shape.
  Tensor w = Tensor::from_vector<double>({0.5, -1.0, 2.0, 3.0}, {2, 2});
  Tensor r = reshape(a, {2, 2});
  CHECK(r.raw_data() == a.raw_data());
  CHECK(tape().size() == 1);
  backward(sum(r * w));
  CHECK(a.grad().shape() == Shape{4});
  CHECK(a.grad().to_vector<double>() == std::vector<double>{0.5, -1.0, 2.0, 3.0});
  // to(f32) and back: the gradient arrives in a's dtype; to(own dtype / device) is a itself.
  a.zero_grad();
  backward(sum(to(to(a, DType::f32), DType::f64) * 2.0));
  CHECK(a.grad().dtype() == DType::f64);
  CHECK(a.grad().to_vector<double>() == std::vector<double>(4, 2.0));
  CHECK(to(a, DType::f64).same(a));
  CHECK(to(a, Device::cpu()).same(a));
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
  tape().clear();  // this test counts nodes from an empty tape
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
}

TEST_CASE("autograd: detach cuts the tape") {
  Tensor a = Tensor::ones({2}, DType::f64).requires_grad_();
  Tensor d = (a * 2.0).detach();
  CHECK_FALSE(d.requires_grad());
  CHECK(d.to_vector<double>() == std::vector<double>{2.0, 2.0});
}

TEST_CASE("autograd: backward over a 100,000-node chain neither recurses nor overflows") {
  const size_t before = tape().size();
  Tensor x = Tensor::from_vector<double>({1.0}, {1}).requires_grad_();
  Tensor y = x;
  for (int i = 0; i < 100000; ++i) y = y * 1.0 + 0.0;  // 200,000 nodes
  CHECK(tape().size() == before + 200000);
  backward(y);
  CHECK(x.grad().item() == doctest::Approx(1.0));
  CHECK(tape().size() == before);
}

TEST_CASE("autograd: clearing the tape frees what the nodes saved") {
  tape().clear();  // `before` must not count nodes that the clear below would free too
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
}

// ---- backward(root) differentiates exactly root's graph ------------------------------------
namespace {
// Leaves with fixed values: w shared by both graphs, a only in the first, b only in the second.
struct Leaves {
  Tensor w = Tensor::from_vector<double>({0.5, -1.5, 2.0}, {3}).requires_grad_();
  Tensor a = Tensor::from_vector<double>({1.0, 2.0, 3.0}, {3}).requires_grad_();
  Tensor b = Tensor::from_vector<double>({-0.5, 0.25, 4.0}, {3}).requires_grad_();
};
// loss1 = sum(w * a * a), loss2 = sum(exp(w) * b): by hand,
//   dloss1/dw = a^2, dloss1/da = 2 w a;  dloss2/dw = exp(w) b, dloss2/db = exp(w).
Tensor loss1(const Leaves& l) { return sum(l.w * l.a * l.a); }
Tensor loss2(const Leaves& l) { return sum(exp(l.w) * l.b); }
std::vector<double> vals(const Tensor& t) { return t.to_vector<double>(); }
void check_close(const std::vector<double>& got, const std::vector<double>& want) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) CHECK(got[i] == doctest::Approx(want[i]).epsilon(1e-14));
}
}  // namespace

TEST_CASE("autograd: two graphs with shared and disjoint leaves, backward in either order") {
  const std::vector<double> w{0.5, -1.5, 2.0}, a{1.0, 2.0, 3.0}, b{-0.5, 0.25, 4.0};
  for (bool first_is_1 : {true, false}) {
    CAPTURE(first_is_1);
    const size_t before = tape().size();
    Leaves l;
    Tensor L1 = loss1(l), L2 = loss2(l);  // both graphs on the tape
    CHECK(tape().size() == before + 6);   // mul, mul, sum; exp, mul, sum
    backward(first_is_1 ? L1 : L2);
    // After the first backward only that graph's gradients exist; the other graph is intact.
    if (first_is_1) {
      CHECK_FALSE(l.b.grad().defined());
      for (size_t i = 0; i < 3; ++i) CHECK(vals(l.w.grad())[i] == doctest::Approx(a[i] * a[i]));
    } else {
      CHECK_FALSE(l.a.grad().defined());
    }
    backward(first_is_1 ? L2 : L1);
    std::vector<double> dw(3), da(3), db(3);
    for (size_t i = 0; i < 3; ++i) {
      dw[i] = a[i] * a[i] + std::exp(w[i]) * b[i];
      da[i] = 2 * w[i] * a[i];
      db[i] = std::exp(w[i]);
    }
    check_close(vals(l.w.grad()), dw);
    check_close(vals(l.a.grad()), da);
    check_close(vals(l.b.grad()), db);
    CHECK(tape().size() == before);  // both graphs consumed, nothing else touched
  }
}

TEST_CASE("autograd: interleaved forward passes are differentiated independently") {
  const size_t before = tape().size();
  Leaves l;
  Tensor p1 = l.w * l.a;     // graph 1 starts
  Tensor q2 = exp(l.w);      // graph 2 starts
  Tensor L1 = sum(p1 * l.a); // graph 1 ends
  Tensor L2 = sum(q2 * l.b); // graph 2 ends
  backward(L2);
  CHECK(tape().size() == before + 3);  // graph 1's three nodes remain
  check_close(vals(l.b.grad()), vals(exp(l.w.detach())));
  CHECK_FALSE(l.a.grad().defined());
  backward(L1);
  CHECK(tape().size() == before);
  check_close(vals(l.a.grad()), vals(l.w.detach() * l.a.detach() * 2.0));
}

TEST_CASE("autograd: a second backward through a consumed graph is an error, not a no-op") {
  Leaves l;
  Tensor L1 = loss1(l).set_name("loss1");
  backward(L1);
  const std::vector<double> dw = vals(l.w.grad());
  CHECK_THROWS_WITH_AS(backward(L1),
                       doctest::Contains("the root 'loss1' of shape () was produced by a node "
                                         "that is no longer on the tape"),
                       Error);
  // A new graph that reaches into the consumed one: h's producing node is gone.
  Tensor h = (l.w * l.a).set_name("h");
  Tensor La = sum(h), Lb = sum(exp(h));
  backward(La);
  CHECK_THROWS_WITH_AS(backward(Lb), doctest::Contains("a tensor 'h' of shape (3)"), Error);
  // The failed calls touched no gradient (the check runs before any node does).
  std::vector<double> want = dw;
  for (size_t i = 0; i < 3; ++i) want[i] += vals(l.a)[i];  // + dLa/dw = a
  check_close(vals(l.w.grad()), want);
}

TEST_CASE("autograd: a forward pass never differentiated keeps its nodes; NoGradGuard records none") {
  tape().clear();  // this test counts nodes from an empty tape
  Leaves l;
  Tensor evaluated = loss1(l);  // e.g. an evaluation forgotten outside NoGradGuard
  CHECK(tape().size() == 3);
  {
    NoGradGuard no_grad;  // how evaluation should run
    Tensor e = loss1(l);
    CHECK_FALSE(e.requires_grad());
  }
  CHECK(tape().size() == 3);
  Tensor L2 = loss2(l);
  backward(L2);
  CHECK(tape().size() == 3);  // the evaluation's nodes are still there...
  tape().clear();             // ...until cleared (or differentiated)
  CHECK(tape().size() == 0);
}

TEST_CASE("autograd: backward on a leaf adds the seed to its gradient") {
  Tensor w = Tensor::from_vector<double>({1.0, 2.0}, {2}).requires_grad_();
  backward(w, Tensor::from_vector<double>({0.5, -1.0}, {2}));
  check_close(vals(w.grad()), {0.5, -1.0});
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
