#include "ops/unary.h"

#include <cmath>
#include <vector>

#include "autograd/tape.h"
#include "core/allocator.h"
#include "core/dispatch.h"
#include "ops/convert.h"
#include "core/parallel.h"
#include "core/vmath.h"

namespace mg {

namespace cpu {

// exp, sigmoid, silu and softplus (and the sigmoids of the silu / softplus backward) use
// core/vmath.h: branch-free scalar templates (range-reduced polynomial exp, f32 within ~1 ulp,
// f64 within 2.2e-16 relative) that GCC vectorises inside `#pragma omp simd` loops, where
// std::exp would be one libm call per element. Same forms as documented in ops/unary.h:
// softplus is x above 20 and max(x, 0) + ln(1 + e^-|x|) below, sigmoid never overflows
// (e^-|x| <= 1); NaN stays NaN, exp overflows to inf and underflows to 0 as std::exp does.
using vmath::kSoftplusThreshold;

// Runs `f(i)` for every i in [0, n), in parallel blocks.
template <typename F> static void map(int64_t n, F&& f) {
  parallel_for(n, kElementwiseGrain, [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) f(i);
  });
}
// The same, each block's loop vectorised: for bodies built from vmath's branch-free functions
// (every i is independent, so a vector of consecutive i is safe, in place too).
template <typename F> static void map_simd(int64_t n, F&& f) {
  parallel_for(n, kElementwiseGrain, [&](int64_t s, int64_t e) {
#pragma omp simd
    for (int64_t i = s; i < e; ++i) f(i);
  });
}

// x, y (n): y = f(x).
template <typename T>
void unary_forward(UnaryOp op, const T* x, T* y, int64_t n, T p) {
  switch (op) {
    case UnaryOp::exp:      map_simd(n, [&](int64_t i) { y[i] = vmath::vexp(x[i]); }); break;
    case UnaryOp::log:      map(n, [&](int64_t i) { y[i] = std::log(x[i]); }); break;
    case UnaryOp::sqrt:     map(n, [&](int64_t i) { y[i] = std::sqrt(x[i]); }); break;
    case UnaryOp::rsqrt:    map(n, [&](int64_t i) { y[i] = T(1) / std::sqrt(x[i]); }); break;
    case UnaryOp::pow:      map(n, [&](int64_t i) { y[i] = std::pow(x[i], p); }); break;
    case UnaryOp::sigmoid:  map_simd(n, [&](int64_t i) { y[i] = vmath::vsigmoid(x[i]); }); break;
    case UnaryOp::silu:     map_simd(n, [&](int64_t i) { y[i] = vmath::vsilu(x[i]); }); break;
    case UnaryOp::softplus: map_simd(n, [&](int64_t i) { y[i] = vmath::vsoftplus(x[i]); }); break;
    case UnaryOp::tanh:     map(n, [&](int64_t i) { y[i] = std::tanh(x[i]); }); break;
    case UnaryOp::relu:     map(n, [&](int64_t i) { y[i] = x[i] > T(0) ? x[i] : T(0); }); break;
  }
}

// x, y, dy, dx (n): dx = dy f'(x).
template <typename T>
void unary_backward(UnaryOp op, const T* x, const T* y, const T* dy, T* dx, int64_t n, T p) {
  switch (op) {
    case UnaryOp::exp:   map(n, [&](int64_t i) { dx[i] = dy[i] * y[i]; }); break;
    case UnaryOp::log:   map(n, [&](int64_t i) { dx[i] = dy[i] / x[i]; }); break;
    case UnaryOp::sqrt:  map(n, [&](int64_t i) { dx[i] = dy[i] / (T(2) * y[i]); }); break;
    case UnaryOp::rsqrt: map(n, [&](int64_t i) { dx[i] = T(-0.5) * dy[i] * y[i] * y[i] * y[i]; }); break;
    case UnaryOp::pow:   map(n, [&](int64_t i) { dx[i] = dy[i] * p * std::pow(x[i], p - T(1)); }); break;
    case UnaryOp::sigmoid: map(n, [&](int64_t i) { dx[i] = dy[i] * y[i] * (T(1) - y[i]); }); break;
    case UnaryOp::silu:
      map_simd(n, [&](int64_t i) {
        const T s = vmath::vsigmoid(x[i]);
        dx[i] = dy[i] * s * (T(1) + x[i] * (T(1) - s));
      });
      break;
    case UnaryOp::softplus:
      map_simd(n, [&](int64_t i) {
        dx[i] = x[i] > T(kSoftplusThreshold) ? dy[i] : dy[i] * vmath::vsigmoid(x[i]);
      });
      break;
    case UnaryOp::tanh: map(n, [&](int64_t i) { dx[i] = dy[i] * (T(1) - y[i] * y[i]); }); break;
    case UnaryOp::relu: map(n, [&](int64_t i) { dx[i] = x[i] > T(0) ? dy[i] : T(0); }); break;
  }
}

template void unary_forward<float>(UnaryOp, const float*, float*, int64_t, float);
template void unary_forward<double>(UnaryOp, const double*, double*, int64_t, double);
template void unary_backward<float>(UnaryOp, const float*, const float*, const float*, float*, int64_t, float);
template void unary_backward<double>(UnaryOp, const double*, const double*, const double*, double*, int64_t, double);

}  // namespace cpu

static const char* op_name(UnaryOp op) {
  switch (op) {
    case UnaryOp::exp: return "exp";
    case UnaryOp::log: return "log";
    case UnaryOp::sqrt: return "sqrt";
    case UnaryOp::rsqrt: return "rsqrt";
    case UnaryOp::pow: return "pow";
    case UnaryOp::sigmoid: return "sigmoid";
    case UnaryOp::silu: return "silu";
    case UnaryOp::softplus: return "softplus";
    case UnaryOp::tanh: return "tanh";
    case UnaryOp::relu: return "relu";
  }
  return "?";
}

namespace cpu {
void unary_forward_bf16(UnaryOp op, const bf16* x, bf16* y, int64_t n, float p) {
  const F32Scratch xf(x, n), yf(n);
  unary_forward<float>(op, xf.data(), yf.data(), n, p);
  yf.round_into(y);
}

void unary_backward_bf16(UnaryOp op, const bf16* x, const bf16* y, const bf16* dy, bf16* dx,
                         int64_t n, float p) {
  const F32Scratch xf(x, n), yf(y, n), dyf(dy, n), dxf(n);
  unary_backward<float>(op, xf.data(), yf.data(), dyf.data(), dxf.data(), n, p);
  dxf.round_into(dx);
}
}  // namespace cpu

// bf16 storage (mixed precision): the _bf16 kernels, which read x, y, dy widened and round
// their result once; the backward sees the rounded y, as the CUDA kernel does.
static Tensor unary_bf16(UnaryOp op, const Tensor& x, double p) {
  const char* name = op_name(op);
  Tensor y = Tensor::empty(x.shape(), DType::bf16, x.device());
  dispatch_device(x.device(), name,
      [&]<typename>() { cuda::unary_forward_bf16(op, x.data<bf16>(), y.data<bf16>(), x.numel(), (float)p); },
      [&] { cpu::unary_forward_bf16(op, x.data<bf16>(), y.data<bf16>(), x.numel(), (float)p); });
  record(name, {x}, {y}, [op, x, y, p, name](const std::vector<Tensor>& d) {
    Tensor dx = Tensor::empty(x.shape(), DType::bf16, x.device());
    dispatch_device(x.device(), name,
        [&]<typename>() {
          cuda::unary_backward_bf16(op, x.data<bf16>(), y.data<bf16>(), d[0].data<bf16>(),
                                    dx.data<bf16>(), x.numel(), (float)p);
        },
        [&] {
          cpu::unary_backward_bf16(op, x.data<bf16>(), y.data<bf16>(), d[0].data<bf16>(),
                                   dx.data<bf16>(), x.numel(), (float)p);
        });
    return std::vector<Tensor>{dx};
  });
  return y;
}

// checks -> allocate -> dispatch -> record backward: the shape of every public op.
static Tensor unary(UnaryOp op, const Tensor& x, double p = 0) {
  const char* name = op_name(op);
  check_float(name, x, "x");
  if (is_bf16(x)) return unary_bf16(op, x, p);
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  dispatch_device(x.device(), x.dtype(), name,
      [&]<typename T>() { cuda::unary_forward(op, x.data<T>(), y.data<T>(), x.numel(), (T)p); },
      [&]<typename T>() { cpu::unary_forward<T>(op, x.data<T>(), y.data<T>(), x.numel(), (T)p); });
  record(name, {x}, {y}, [op, x, y, p, name](const std::vector<Tensor>& d) {
    Tensor dx = Tensor::empty(x.shape(), x.dtype(), x.device());
    dispatch_device(x.device(), x.dtype(), name,
        [&]<typename T>() {
          cuda::unary_backward(op, x.data<T>(), y.data<T>(), d[0].data<T>(), dx.data<T>(),
                               x.numel(), (T)p);
        },
        [&]<typename T>() {
          cpu::unary_backward<T>(op, x.data<T>(), y.data<T>(), d[0].data<T>(), dx.data<T>(),
                                 x.numel(), (T)p);
        });
    return std::vector<Tensor>{dx};
  });
  return y;
}

Tensor exp(const Tensor& x) { return unary(UnaryOp::exp, x); }
Tensor log(const Tensor& x) { return unary(UnaryOp::log, x); }
Tensor sqrt(const Tensor& x) { return unary(UnaryOp::sqrt, x); }
Tensor rsqrt(const Tensor& x) { return unary(UnaryOp::rsqrt, x); }
Tensor pow(const Tensor& x, double p) { return unary(UnaryOp::pow, x, p); }
Tensor sigmoid(const Tensor& x) { return unary(UnaryOp::sigmoid, x); }
Tensor silu(const Tensor& x) { return unary(UnaryOp::silu, x); }
Tensor softplus(const Tensor& x) { return unary(UnaryOp::softplus, x); }
Tensor tanh(const Tensor& x) { return unary(UnaryOp::tanh, x); }
Tensor relu(const Tensor& x) { return unary(UnaryOp::relu, x); }

}  // namespace mg
