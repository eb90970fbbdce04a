// ops/gelu.h — the Gaussian error linear unit (Hendrycks & Gimpel 2016), exact (erf) form.
//
// Mamba does not use it; it is here as the worked example of docs/adding_an_op.md — the
// smallest complete op: math, CPU kernel, public op with its backward, harness line, fixture.
//
//   forward   y = x Phi(x),  Phi(x) = (1 + erf(x / sqrt 2)) / 2    (the standard normal CDF)
//   backward  dx = dy (Phi(x) + x phi(x)),  phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
//
// Saved for backward: x (y is not needed). Numerics: erf saturates to +-1 for |x| > ~6, so y
// tends to x (or 0) smoothly; exp(-x^2/2) underflows to 0 harmlessly for large |x|.
//
// Devices: CPU (f32, f64) and CUDA (f32). The CUDA twins are declared below beside the CPU
// kernels, with the same arguments (float only), defined in cuda/gelu.cu, and picked by
// dispatch_device in ops/gelu.cpp.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace mg {

namespace cpu {
template <typename T> void gelu_forward(const T* x, T* y, int64_t n);
template <typename T> void gelu_backward(const T* x, const T* dy, T* dx, int64_t n);
}  // namespace cpu

// The CUDA twins (cuda/gelu.cu): the cpu:: kernels' arguments in the same order, f32,
// device pointers, enqueued on the backend's stream. Declared in every build, defined only
// in a CUDA build (core/dispatch.h says why that links).
namespace cuda {
void gelu_forward(const float* x, float* y, int64_t n);
void gelu_backward(const float* x, const float* dy, float* dx, int64_t n);
}  // namespace cuda

Tensor gelu(const Tensor& x);

}  // namespace mg
