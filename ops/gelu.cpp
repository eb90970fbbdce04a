#include "ops/gelu.h"

#include <cmath>

#include "autograd/tape.h"
#include "core/dispatch.h"
#include "core/parallel.h"

namespace mg {

namespace cpu {

constexpr double kInvSqrt2 = 0.70710678118654752440;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;

// x, y (n).
template <typename T>
void gelu_forward(const T* x, T* y, int64_t n) {
  parallel_for(n, kElementwiseGrain, [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) {
      T phi_cdf = T(0.5) * (T(1) + std::erf(x[i] * T(kInvSqrt2)));  // Phi(x)
      y[i] = x[i] * phi_cdf;
    }
  });
}

// x, dy, dx (n).
template <typename T>
void gelu_backward(const T* x, const T* dy, T* dx, int64_t n) {
  parallel_for(n, kElementwiseGrain, [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) {
      T phi_cdf = T(0.5) * (T(1) + std::erf(x[i] * T(kInvSqrt2)));   // Phi(x)
      T phi_pdf = T(kInvSqrt2Pi) * std::exp(T(-0.5) * x[i] * x[i]);  // phi(x)
      dx[i] = dy[i] * (phi_cdf + x[i] * phi_pdf);
    }
  });
}

template void gelu_forward<float>(const float*, float*, int64_t);
template void gelu_forward<double>(const double*, double*, int64_t);
template void gelu_backward<float>(const float*, const float*, float*, int64_t);
template void gelu_backward<double>(const double*, const double*, double*, int64_t);

}  // namespace cpu

Tensor gelu(const Tensor& x) {
  // checks
  check_float("gelu", x, "x");
  // allocate (on x's device)
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  // dispatch: the CUDA twin (f32) or the CPU kernel (f32/f64)
  dispatch_device(x.device(), x.dtype(), "gelu",
      [&]<typename T>() { cuda::gelu_forward(x.data<T>(), y.data<T>(), x.numel()); },
      [&]<typename T>() { cpu::gelu_forward<T>(x.data<T>(), y.data<T>(), x.numel()); });
  // record the backward: it captures x, the one tensor it needs
  record("gelu", {x}, {y}, [x](const std::vector<Tensor>& d) {
    Tensor dx = Tensor::empty(x.shape(), x.dtype(), x.device());
    dispatch_device(x.device(), x.dtype(), "gelu",
        [&]<typename T>() {
          cuda::gelu_backward(x.data<T>(), d[0].data<T>(), dx.data<T>(), x.numel());
        },
        [&]<typename T>() {
          cpu::gelu_backward<T>(x.data<T>(), d[0].data<T>(), dx.data<T>(), x.numel());
        });
    return std::vector<Tensor>{dx};
  });
  return y;
}

}  // namespace mg
