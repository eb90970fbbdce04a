#include "autograd/gradcheck.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "autograd/tape.h"

namespace mg {

std::string GradcheckResult::report() const {
  std::ostringstream os;
  os << (ok ? "gradcheck passed" : "gradcheck FAILED") << ": max error " << max_error << " over "
     << elements_checked << " elements";
  if (worst_index >= 0)
    os << "; worst at input " << worst_input << " element " << worst_index << " (analytic "
       << worst_analytic << ", numeric " << worst_numeric << ")";
  return os.str();
}

// <r, y> in double precision.
static double dot(const Tensor& r, const Tensor& y) {
  Tensor y64 = y.cast(DType::f64);
  const double* a = r.data<double>();
  const double* b = y64.data<double>();
  double s = 0;
  for (int64_t i = 0; i < y64.numel(); ++i) s += a[i] * b[i];
  return s;
}

GradcheckResult gradcheck(const GradcheckFn& fn, const std::vector<Tensor>& inputs,
                          const GradcheckOptions& opts) {
  std::vector<size_t> which = opts.check_inputs;
  if (which.empty())
    for (size_t k = 0; k < inputs.size(); ++k)
      if (inputs[k].defined() && is_floating(inputs[k].dtype())) which.push_back(k);

  // Fresh leaf copies, so the caller's tensors and their .grad are untouched.
  std::vector<Tensor> xs;
  for (const auto& t : inputs) xs.push_back(t.defined() ? t.clone() : Tensor());
  for (size_t k : which) {
    MG_CHECK(xs[k].dtype() == DType::f64, "gradcheck: input ", k, " must be f64, got ",
             dtype_name(xs[k].dtype()));
    xs[k].requires_grad_(true);
  }

  Tensor y = fn(xs);  // its graph is consumed by the backward below; other graphs stay
  Generator gen(opts.seed);
  Tensor r = Tensor::randn(y.shape(), DType::f64, &gen);
  MG_CHECK(y.requires_grad(), "gradcheck: the function's output does not depend on any input");
  backward(y, r.cast(y.dtype()));

  GradcheckResult res;
  NoGradGuard no_grad;
  for (size_t k : which) {
    Tensor g = xs[k].grad();
    Tensor analytic = g.defined() ? g.cast(DType::f64) : Tensor::zeros(xs[k].shape(), DType::f64);
    double* x = xs[k].data<double>();
    for (int64_t i = 0; i < xs[k].numel(); ++i) {
      double saved = x[i];
      x[i] = saved + opts.eps;
      double fp = dot(r, fn(xs));
      x[i] = saved - opts.eps;
      double fm = dot(r, fn(xs));
      x[i] = saved;
      double numeric = (fp - fm) / (2 * opts.eps);
      double a = analytic.data<double>()[i];
      double err = std::abs(a - numeric) / std::max({std::abs(a), std::abs(numeric), opts.floor});
      if (!std::isfinite(err)) err = INFINITY;
      ++res.elements_checked;
      if (err > res.max_error || res.worst_index < 0) {
        res.max_error = err;
        res.worst_input = k;
        res.worst_index = i;
        res.worst_analytic = a;
        res.worst_numeric = numeric;
      }
    }
  }
  res.ok = res.max_error <= opts.tolerance;
  return res;
}

}  // namespace mg
