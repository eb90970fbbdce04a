// ops/unary.h — elementwise functions of one tensor.
//
//   op        forward y = f(x)                              backward dx = dy * f'(x)
//   exp       e^x                                           dy * y
//   log       ln x                                          dy / x
//   sqrt      x^(1/2)                                       dy / (2 y)
//   rsqrt     x^(-1/2)                                      -dy y^3 / 2
//   pow       x^p (p a scalar)                              dy p x^(p-1)
//   sigmoid   s = 1 / (1 + e^-x)                            dy s (1 - s)
//   silu      x s                                           dy s (1 + x (1 - s))
//   softplus  ln(1 + e^x), or x when x > 20                 dy s(x), or dy when x > 20
//   tanh      tanh x                                        dy (1 - y^2)
//   relu      max(x, 0)                                     dy [x > 0]
//
// softplus uses the reference Mamba kernel's threshold (linear above 20, where
// ln(1 + e^x) == x in f32) in both directions; below the threshold log1p(exp(x)) is exact for
// very negative x too (it underflows gracefully to 0). sigmoid is evaluated in the form that
// never overflows: e^x / (1 + e^x) for x < 0.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace mg {

enum class UnaryOp { exp, log, sqrt, rsqrt, pow, sigmoid, silu, softplus, tanh, relu };

namespace cpu {
// `p` is the exponent for pow and ignored otherwise.
template <typename T>
void unary_forward(UnaryOp op, const T* x, T* y, int64_t n, T p);
// dx = dy * f'(x); x and y are the forward's input and output.
template <typename T>
void unary_backward(UnaryOp op, const T* x, const T* y, const T* dy, T* dx, int64_t n, T p);
// bf16 storage (mixed precision): the f32 kernels on the exact widenings, rounded once.
void unary_forward_bf16(UnaryOp op, const bf16* x, bf16* y, int64_t n, float p);
void unary_backward_bf16(UnaryOp op, const bf16* x, const bf16* y, const bf16* dy, bf16* dx,
                         int64_t n, float p);
}  // namespace cpu

// The CUDA twins (cuda/unary.cu): the cpu:: kernels' arguments in the same order, f32,
// device pointers, enqueued on the backend's stream. Declared in every build, defined only
// in a CUDA build (core/dispatch.h says why that links).
namespace cuda {
void unary_forward(UnaryOp op, const float* x, float* y, int64_t n, float p);
void unary_backward(UnaryOp op, const float* x, const float* y, const float* dy, float* dx,
                    int64_t n, float p);
void unary_forward_bf16(UnaryOp op, const bf16* x, bf16* y, int64_t n, float p);
void unary_backward_bf16(UnaryOp op, const bf16* x, const bf16* y, const bf16* dy, bf16* dx,
                         int64_t n, float p);
}  // namespace cuda

Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor rsqrt(const Tensor& x);
Tensor pow(const Tensor& x, double p);
Tensor sigmoid(const Tensor& x);
Tensor silu(const Tensor& x);
Tensor softplus(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor relu(const Tensor& x);

}  // namespace mg
