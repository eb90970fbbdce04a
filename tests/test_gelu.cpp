// gelu: the op added by following docs/adding_an_op.md (values, and errors naming the op).
#include <doctest/doctest.h>

#include "ops/gelu.h"

using namespace mg;

TEST_CASE("gelu: values at hand-computed points") {
  // gelu(1) = Phi(1) = 0.8413447460685429; gelu(-1) = -(1 - Phi(1)); gelu(0) = 0.
  Tensor x = Tensor::from_vector<double>({-1.0, 0.0, 1.0, 8.0}, {4});
  auto y = gelu(x).to_vector<double>();
  CHECK(y[0] == doctest::Approx(-0.15865525393145707).epsilon(1e-14));
  CHECK(y[1] == 0.0);
  CHECK(y[2] == doctest::Approx(0.8413447460685429).epsilon(1e-14));
  CHECK(y[3] == doctest::Approx(8.0).epsilon(1e-14));
}

TEST_CASE("gelu: rejects integer tensors with an error naming the op") {
  Tensor ids = Tensor::zeros({3}, DType::i32);
  CHECK_THROWS_WITH_AS(gelu(ids), doctest::Contains("gelu: argument 'x' must be f32 or f64"), Error);
}
