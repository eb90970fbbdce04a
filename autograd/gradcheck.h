// autograd/gradcheck.h — check an op's backward against central finite differences in f64.
//
// For y = fn(inputs) we draw a fixed random cotangent r (same shape as y) and compare, for
// every element x_i of every floating input,
//
//   analytic_i = d<r, y>/dx_i      from one backward pass seeded with r
//   numeric_i  = (<r, fn(x + eps e_i)> - <r, fn(x - eps e_i)>) / (2 eps)
//
// Checking the vector-Jacobian product with a random r tests every column of the Jacobian at
// once. The error of element i is |analytic - numeric| / max(|analytic|, |numeric|, floor):
// relative where gradients are large, absolute (scaled by 1/floor) where they are near zero.
// The report names the worst element: input, flat index, analytic and numeric values.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace mg {

struct GradcheckOptions {
  double eps = 1e-5;        // finite-difference step: truncation error ~eps^2 f'''/6 ~ 1e-11,
                            // rounding noise ~1e-16 |<r, y>| / eps stays below 1e-8
  double tolerance = 1e-6;  // max allowed error (see above)
  double floor = 1e-2;      // denominator floor
  uint64_t seed = 1234;     // for the cotangent r
  // Indices of inputs to check; empty = every floating input.
  std::vector<size_t> check_inputs;
};

struct GradcheckResult {
  bool ok = true;
  double max_error = 0;
  size_t worst_input = 0;
  int64_t worst_index = -1;
  double worst_analytic = 0, worst_numeric = 0;
  int64_t elements_checked = 0;
  std::string report() const;
};

using GradcheckFn = std::function<Tensor(const std::vector<Tensor>&)>;

// Inputs that are checked must be f64 (the point is to check in double precision).
GradcheckResult gradcheck(const GradcheckFn& fn, const std::vector<Tensor>& inputs,
                          const GradcheckOptions& opts = {});

}  // namespace mg
