// matmul / linear, shape ops and embedding: values against naive loops, gradients against
// finite differences (mg::gradcheck in f64), and the errors bad input must raise.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>

#include "autograd/gradcheck.h"
#include "autograd/tape.h"
#include "ops/arith.h"
#include "ops/embedding.h"
#include "ops/matmul.h"
#include "ops/shape.h"
#include "test_util.h"

using namespace mg;
using test::error_of;
using test::has;

namespace {

Tensor random(const Shape& shape, DType dtype, uint64_t seed) {
  Generator gen(seed);
  return Tensor::randn(shape, dtype, &gen);
}

std::vector<double> values(const Tensor& t) { return t.cast(DType::f64).to_vector<double>(); }

// max |a - b| / max(1, |b|) over all elements.
double max_rel_diff(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i)
    m = std::max(m, std::abs(a[i] - b[i]) / std::max(1.0, std::abs(b[i])));
  return m;
}

double tolerance(DType t) { return t == DType::f32 ? 1e-5 : 1e-12; }

// Naive y[i] (M, N) = a[i] (M, K) b[i or 0] (K, N).
std::vector<double> naive_matmul(const std::vector<double>& a, const std::vector<double>& b,
                                 int64_t batch, int64_t M, int64_t K, int64_t N, bool shared) {
  std::vector<double> y(batch * M * N, 0.0);
  for (int64_t i = 0; i < batch; ++i)
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        double s = 0;
        for (int64_t k = 0; k < K; ++k)
          s += a[(i * M + m) * K + k] * b[(shared ? 0 : i * K * N) + k * N + n];
        y[(i * M + m) * N + n] = s;
      }
  return y;
}

void check_grad(const GradcheckFn& fn, const std::vector<Tensor>& inputs,
                std::vector<size_t> which = {}) {
  GradcheckOptions opts;
  opts.tolerance = 1e-6;
  opts.check_inputs = std::move(which);
  GradcheckResult r = gradcheck(fn, inputs, opts);
  INFO(r.report());
  CHECK(r.ok);
  CHECK(r.elements_checked > 0);
}

}  // namespace

// ---- matmul / linear values ---------------------------------------------------------------

TEST_CASE("matmul: shared and batched forms match a naive loop at odd sizes, f32 and f64") {
  const int64_t sizes[] = {1, 7, 13, 33};
  const Shape leads[] = {{}, {3}, {2, 3}};
  uint64_t seed = 1;
  for (DType dt : {DType::f32, DType::f64})
    for (int64_t M : sizes)
      for (int64_t K : sizes)
        for (int64_t N : {int64_t(1), int64_t(13)})
          for (const Shape& lead : leads)
            for (bool shared : {true, false}) {
              Shape as = lead, bs = shared ? Shape{} : lead;
              as.insert(as.end(), {M, K});
              bs.insert(bs.end(), {K, N});
              Tensor a = random(as, dt, seed++), b = random(bs, dt, seed++);
              Tensor y = matmul(a, b);
              Shape want = lead;
              want.insert(want.end(), {M, N});
              CHECK(y.shape() == want);
              int64_t batch = shape_numel(lead);
              CHECK(max_rel_diff(values(y), naive_matmul(values(a), values(b), batch, M, K, N,
                                                         shared)) < tolerance(dt));
            }
}

TEST_CASE("matmul: a large batch of small matrices (the batch-parallel path) is exact") {
  Tensor a = random({100, 7, 5}, DType::f64, 11), b = random({100, 5, 3}, DType::f64, 12);
  CHECK(max_rel_diff(values(matmul(a, b)), naive_matmul(values(a), values(b), 100, 7, 5, 3,
                                                         false)) < 1e-12);
}

TEST_CASE("cpu::gemm: all four transpose forms, alpha and beta (beta = 0 ignores NaN in C)") {
  const int64_t M = 7, N = 5, K = 13;
  std::vector<double> A(M * K), B(K * N);  // op(A) (M, K), op(B) (K, N) as plain matrices
  for (int64_t i = 0; i < M * K; ++i) A[i] = std::sin(0.3 * i);
  for (int64_t i = 0; i < K * N; ++i) B[i] = std::cos(0.7 * i);
  std::vector<double> At(K * M), Bt(N * K);  // stored transposed
  for (int64_t m = 0; m < M; ++m) for (int64_t k = 0; k < K; ++k) At[k * M + m] = A[m * K + k];
  for (int64_t k = 0; k < K; ++k) for (int64_t n = 0; n < N; ++n) Bt[n * K + k] = B[k * N + n];
  std::vector<double> AB = naive_matmul(A, B, 1, M, K, N, true);
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      CAPTURE(ta);
      CAPTURE(tb);
      std::vector<double> C(M * N, std::numeric_limits<double>::quiet_NaN());
      cpu::gemm<double>(ta, tb, M, N, K, 2.0, ta ? At.data() : A.data(), tb ? Bt.data() : B.data(),
                        0.0, C.data());
      std::vector<double> want(M * N);
      for (int64_t i = 0; i < M * N; ++i) want[i] = 2.0 * AB[i];
      CHECK(max_rel_diff(C, want) < 1e-12);
      // beta = 0.5: C = 2 AB + 0.5 (2 AB) = 3 AB
      cpu::gemm<double>(ta, tb, M, N, K, 2.0, ta ? At.data() : A.data(), tb ? Bt.data() : B.data(),
                        0.5, C.data());
      for (int64_t i = 0; i < M * N; ++i) want[i] = 3.0 * AB[i];
      CHECK(max_rel_diff(C, want) < 1e-12);
    }
}

TEST_CASE("linear: x W^T + b matches a naive loop, 3-D x, with and without bias") {
  for (DType dt : {DType::f32, DType::f64}) {
    const int64_t B = 2, L = 7, in = 13, out = 33;
    Tensor x = random({B, L, in}, dt, 21), W = random({out, in}, dt, 22), b = random({out}, dt, 23);
    auto xv = values(x), Wv = values(W), bv = values(b);
    for (bool with_bias : {false, true}) {
      Tensor y = with_bias ? linear(x, W, b) : linear(x, W);
      CHECK(y.shape() == Shape{B, L, out});
      std::vector<double> want(B * L * out);
      for (int64_t r = 0; r < B * L; ++r)
        for (int64_t o = 0; o < out; ++o) {
          double s = with_bias ? bv[o] : 0.0;
          for (int64_t i = 0; i < in; ++i) s += xv[r * in + i] * Wv[o * in + i];
          want[r * out + o] = s;
        }
      CHECK(max_rel_diff(values(y), want) < tolerance(dt));
    }
  }
}

TEST_CASE("linear: hand-computed bias gradient is the column sum of dy") {
  Tensor x = Tensor::ones({3, 2}, DType::f64);
  Tensor W = Tensor::ones({2, 2}, DType::f64);
  Tensor b = Tensor::zeros({2}, DType::f64).requires_grad_();
  Tensor dy = Tensor::from_vector<double>({1, 2, 3, 4, 5, 6}, {3, 2});
  backward(linear(x, W, b), dy);
  CHECK(b.grad().to_vector<double>() == std::vector<double>{9, 12});
}

// ---- matmul / linear gradients -------------------------------------------------------------

TEST_CASE("gradcheck: matmul, 2-D, shared weight, batched 3-D and 4-D") {
  auto mm = [](const std::vector<Tensor>& t) { return matmul(t[0], t[1]); };
  check_grad(mm, {random({7, 5}, DType::f64, 31), random({5, 3}, DType::f64, 32)});
  check_grad(mm, {random({2, 3, 4}, DType::f64, 33), random({4, 5}, DType::f64, 34)});
  check_grad(mm, {random({3, 4, 2}, DType::f64, 35), random({3, 2, 5}, DType::f64, 36)});
  check_grad(mm, {random({2, 2, 3, 4}, DType::f64, 37), random({2, 2, 4, 1}, DType::f64, 38)});
  // only one side requiring grad (the other's gradient is skipped)
  check_grad(mm, {random({2, 3, 4}, DType::f64, 39), random({4, 5}, DType::f64, 40)}, {0});
  check_grad(mm, {random({2, 3, 4}, DType::f64, 41), random({2, 4, 5}, DType::f64, 42)}, {1});
}

TEST_CASE("gradcheck: linear with and without bias, 2-D and 3-D x") {
  auto lin_b = [](const std::vector<Tensor>& t) { return linear(t[0], t[1], t[2]); };
  auto lin = [](const std::vector<Tensor>& t) { return linear(t[0], t[1]); };
  check_grad(lin_b, {random({2, 3, 4}, DType::f64, 51), random({5, 4}, DType::f64, 52),
                     random({5}, DType::f64, 53)});
  check_grad(lin, {random({2, 3, 4}, DType::f64, 54), random({5, 4}, DType::f64, 55)});
  check_grad(lin_b, {random({7, 3}, DType::f64, 56), random({1, 3}, DType::f64, 57),
                     random({1}, DType::f64, 58)});
  // frozen weight: only x and b require grad
  check_grad(lin_b, {random({2, 3, 4}, DType::f64, 59), random({5, 4}, DType::f64, 60),
                     random({5}, DType::f64, 61)}, {0, 2});
}

// ---- shape ops ---------------------------------------------------------------------------

TEST_CASE("transpose: any two dims (negative too) matches index arithmetic, f32/f64/i32") {
  for (DType dt : {DType::f32, DType::f64, DType::i32}) {
    Tensor x = Tensor::arange(0, 2 * 3 * 4 * 5, dt).view({2, 3, 4, 5});
    Tensor y = transpose(x, 1, -1);  // (2, 5, 4, 3)
    CHECK(y.shape() == Shape{2, 5, 4, 3});
    auto yv = values(y);
    bool ok = true;
    for (int a = 0; a < 2; ++a)
      for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 4; ++j)
          for (int k = 0; k < 5; ++k)
            ok = ok && yv[((a * 5 + k) * 4 + j) * 3 + i] == ((a * 3 + i) * 4 + j) * 5 + k;
    CHECK(ok);
    CHECK(values(transpose(y, 3, 1)) == values(x));
    CHECK(values(transpose(x, 2, 2)) == values(x));
  }
  Tensor m = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  CHECK(transpose(m, 0, 1).to_vector<float>() == std::vector<float>{1, 4, 2, 5, 3, 6});
}

TEST_CASE("split / chunk / cat / slice: values, any dtype") {
  for (DType dt : {DType::f32, DType::f64, DType::i32}) {
    Tensor x = Tensor::arange(0, 2 * 6 * 2, dt).view({2, 6, 2});
    auto parts = split(x, {1, 3, 2}, 1);
    REQUIRE(parts.size() == 3);
    CHECK(parts[0].shape() == Shape{2, 1, 2});
    CHECK(parts[1].shape() == Shape{2, 3, 2});
    CHECK(values(parts[0]) == std::vector<double>{0, 1, 12, 13});
    CHECK(values(parts[2]) == std::vector<double>{8, 9, 10, 11, 20, 21, 22, 23});
    CHECK(values(cat(parts, 1)) == values(x));
    CHECK(values(cat({parts[2], parts[0]}, -2)) ==
          std::vector<double>{8, 9, 10, 11, 0, 1, 20, 21, 22, 23, 12, 13});
    auto halves = chunk(x, 2, 0);
    CHECK(values(halves[1]) == values(Tensor::arange(12, 24, dt)));
    CHECK(values(slice(x, 1, 2, 4)) == std::vector<double>{4, 5, 6, 7, 16, 17, 18, 19});
    CHECK(values(slice(x, 1, -2, -1)) == values(slice(x, 1, 4, 5)));
    CHECK(slice(x, 1, 3, 3).shape() == Shape{2, 0, 2});
    std::vector<double> odd;
    for (int v = 1; v < 24; v += 2) odd.push_back(v);
    CHECK(values(slice(x, -1, 1, 2)) == odd);  // x[..., 1]
  }
}

TEST_CASE("split records ONE tape node with all pieces as outputs") {
  tape().clear();  // this test counts nodes from an empty tape
  Tensor x = random({4, 6}, DType::f64, 71).requires_grad_();
  auto parts = chunk(x, 3, 1);
  REQUIRE(tape().size() == 1);
  CHECK(tape().nodes()[0].outputs.size() == 3);
  CHECK(tape().nodes()[0].name == "chunk");
  // Only the middle piece is used: x gets dy there and zeros elsewhere.
  backward(parts[1], Tensor::ones({4, 2}, DType::f64));
  auto g = x.grad().to_vector<double>();
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 6; ++c) CHECK(g[r * 6 + c] == ((c == 2 || c == 3) ? 1.0 : 0.0));
}

TEST_CASE("gradcheck: transpose, split, chunk, cat, slice") {
  auto tr = [](const std::vector<Tensor>& t) { return transpose(t[0], 0, -1); };
  check_grad(tr, {random({3, 2, 4}, DType::f64, 81)});
  // each split piece alone (the others' gradients are the tape's zeros) ...
  for (int k = 0; k < 3; ++k) {
    auto piece = [k](const std::vector<Tensor>& t) { return split(t[0], {2, 0, 3}, 1)[k]; };
    check_grad(piece, {random({2, 5, 3}, DType::f64, 82)});
  }
  // ... and all pieces together, weighted differently
  auto all = [](const std::vector<Tensor>& t) {
    auto p = split(t[0], {1, 4}, -1);
    return cat({p[0] * 2.0, p[1] * 3.0}, -1);
  };
  check_grad(all, {random({3, 5}, DType::f64, 83)});
  auto ch = [](const std::vector<Tensor>& t) { return chunk(t[0], 2, 0)[1] * 5.0; };
  check_grad(ch, {random({4, 3}, DType::f64, 84)});
  auto ct = [](const std::vector<Tensor>& t) { return cat({t[0], t[1], t[2]}, 1); };
  check_grad(ct, {random({2, 1, 3}, DType::f64, 85), random({2, 4, 3}, DType::f64, 86),
                  random({2, 2, 3}, DType::f64, 87)});
  auto sl = [](const std::vector<Tensor>& t) { return slice(t[0], 1, 1, -1); };
  check_grad(sl, {random({2, 5, 3}, DType::f64, 88)});
}

// ---- embedding -----------------------------------------------------------------------------

TEST_CASE("embedding: rows of the table, shape ids.shape + (D), f32 and f64") {
  for (DType dt : {DType::f32, DType::f64}) {
    Tensor W = Tensor::arange(0, 12, dt).view({4, 3});
    Tensor ids = Tensor::from_vector<int32_t>({3, 0, 3, 1}, {2, 2});
    Tensor y = embedding(ids, W);
    CHECK(y.shape() == Shape{2, 2, 3});
    CHECK(values(y) == std::vector<double>{9, 10, 11, 0, 1, 2, 9, 10, 11, 3, 4, 5});
  }
}

TEST_CASE("embedding: repeated ids accumulate in dweight (hand-computed)") {
  Tensor W = Tensor::zeros({3, 2}, DType::f64).requires_grad_();
  Tensor ids = Tensor::from_vector<int32_t>({1, 1, 0, 1}, {4});
  Tensor dy = Tensor::from_vector<double>({1, 2, 3, 4, 5, 6, 7, 8}, {4, 2});
  backward(embedding(ids, W), dy);
  CHECK(W.grad().to_vector<double>() == std::vector<double>{5, 6, 11, 14, 0, 0});
}

TEST_CASE("gradcheck: embedding w.r.t. the weight, ids with repeats, 2-D ids") {
  Tensor ids = Tensor::from_vector<int32_t>({2, 0, 2, 4, 2, 1}, {2, 3});
  auto emb = [](const std::vector<Tensor>& t) { return embedding(t[0], t[1]); };
  check_grad(emb, {ids, random({5, 3}, DType::f64, 91)});
}

// ---- errors ----------------------------------------------------------------------------------

TEST_CASE("errors: matmul and linear name the op and the shapes") {
  Tensor a = Tensor::ones({2, 3, 4}), b = Tensor::ones({5, 6});
  std::string m = error_of([&] { matmul(a, b); });
  CHECK(has(m, "matmul"));
  CHECK(has(m, "(2, 3, 4)"));
  CHECK(has(m, "(5, 6)"));
  m = error_of([&] { matmul(a, Tensor::ones({2, 2, 4, 6})); });  // rank mismatch
  CHECK(has(m, "matmul"));
  CHECK(has(m, "(2, 2, 4, 6)"));
  m = error_of([&] { matmul(a, Tensor::ones({3, 4, 6})); });  // batch dims differ
  CHECK(has(m, "matmul"));
  CHECK(has(m, "(3, 4, 6)"));
  m = error_of([&] { matmul(Tensor::ones({4}), Tensor::ones({4, 2})); });
  CHECK(has(m, "matmul"));
  m = error_of([&] { matmul(a, Tensor::ones({4, 6}, DType::f64)); });  // f32 vs f64
  CHECK(has(m, "matmul"));
  CHECK(has(m, "f64"));
  m = error_of([&] { linear(Tensor::ones({2, 3}), Tensor::ones({5, 4})); });
  CHECK(has(m, "linear"));
  CHECK(has(m, "(2, 3)"));
  CHECK(has(m, "(5, 4)"));
  m = error_of([&] { linear(Tensor::ones({2, 4}), Tensor::ones({5, 4}), Tensor::ones({4})); });
  CHECK(has(m, "linear"));
  CHECK(has(m, "(4)"));
  m = error_of([&] { linear(Tensor::ones({2, 4}), Tensor::ones({5, 4}, DType::i32)); });
  CHECK(has(m, "linear"));
  CHECK(has(m, "i32"));
  m = error_of([&] { linear(Tensor::ones({2, 4}, DType::f64), Tensor::ones({5, 4})); });
  CHECK(has(m, "linear"));
  CHECK(has(m, "f32"));
}

TEST_CASE("errors: shape ops name the op, the shape and the bad argument") {
  Tensor x = Tensor::ones({2, 6, 3});
  std::string m = error_of([&] { split(x, {2, 3}, 1); });
  CHECK(has(m, "split"));
  CHECK(has(m, "(2, 6, 3)"));
  CHECK(has(m, "[2, 3]"));
  m = error_of([&] { split(x, {7, -1}, 1); });
  CHECK(has(m, "split"));
  m = error_of([&] { chunk(x, 4, 1); });
  CHECK(has(m, "chunk"));
  CHECK(has(m, "(2, 6, 3)"));
  m = error_of([&] { chunk(x, 0, 1); });
  CHECK(has(m, "chunk"));
  m = error_of([&] { transpose(x, 0, 3); });
  CHECK(has(m, "transpose"));
  CHECK(has(m, "dimension 3"));
  m = error_of([&] { slice(x, -4, 0, 1); });
  CHECK(has(m, "slice"));
  m = error_of([&] { slice(x, 1, 4, 2); });
  CHECK(has(m, "slice"));
  CHECK(has(m, "(2, 6, 3)"));
  m = error_of([&] { slice(x, 1, 0, 7); });
  CHECK(has(m, "slice"));
  m = error_of([&] { cat({x, Tensor::ones({2, 6, 4})}, 1); });
  CHECK(has(m, "cat"));
  CHECK(has(m, "(2, 6, 4)"));
  m = error_of([&] { cat({x, Tensor::ones({2, 6, 3}, DType::f64)}, 0); });
  CHECK(has(m, "cat"));
  CHECK(has(m, "f64"));
  m = error_of([&] { cat({}, 0); });
  CHECK(has(m, "cat"));
}

TEST_CASE("errors: embedding ids out of range name the id, its position and V") {
  Tensor W = Tensor::ones({5, 3});
  std::string m = error_of([&] { embedding(Tensor::from_vector<int32_t>({0, 4, 5, 1}, {2, 2}), W); });
  CHECK(has(m, "embedding"));
  CHECK(has(m, "id 5"));
  CHECK(has(m, "position 2"));
  CHECK(has(m, "V = 5"));
  m = error_of([&] { embedding(Tensor::from_vector<int32_t>({-1}, {1}), W); });
  CHECK(has(m, "id -1"));
  m = error_of([&] { embedding(Tensor::ones({2}), W); });  // f32 ids
  CHECK(has(m, "embedding"));
  CHECK(has(m, "i32"));
  m = error_of([&] { embedding(Tensor::from_vector<int32_t>({0}, {1}), Tensor::ones({5, 3}, DType::i32)); });
  CHECK(has(m, "embedding"));
  CHECK(has(m, "weight"));
  m = error_of([&] { embedding(Tensor::from_vector<int32_t>({0}, {1}), Tensor::ones({5})); });
  CHECK(has(m, "embedding"));
  CHECK(has(m, "(5)"));
}
