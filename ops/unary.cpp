#include "ops/unary.h"

#include <cmath>

#include "autograd/tape.h"
#include "core/dispatch.h"
#include "core/parallel.h"
#ifdef MG_WITH_CUDA
#include "cuda/unary.h"
#endif

namespace mg {

namespace cpu {

template <typename T> static inline T sigmoid_of(T x) {
  if (x >= 0) return T(1) / (T(1) + std::exp(-x));
  T e = std::exp(x);
  return e / (T(1) + e);
}
constexpr double kSoftplusThreshold = 20.0;

// Runs `f(i)` for every i in [0, n), in parallel blocks.
template <typename F> static void map(int64_t n, F&& f) {
  parallel_for(n, kElementwiseGrain, [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) f(i);
  });
}

template <typename T>
void unary_forward(UnaryOp op, const T* x, T* y, int64_t n, T p) {
  switch (op) {
    case UnaryOp::exp:      map(n, [&](int64_t i) { y[i] = std::exp(x[i]); }); break;
    case UnaryOp::log:      map(n, [&](int64_t i) { y[i] = std::log(x[i]); }); break;
    case UnaryOp::sqrt:     map(n, [&](int64_t i) { y[i] = std::sqrt(x[i]); }); break;
    case UnaryOp::rsqrt:    map(n, [&](int64_t i) { y[i] = T(1) / std::sqrt(x[i]); }); break;
    case UnaryOp::pow:      map(n, [&](int64_t i) { y[i] = std::pow(x[i], p); }); break;
    case UnaryOp::sigmoid:  map(n, [&](int64_t i) { y[i] = sigmoid_of(x[i]); }); break;
    case UnaryOp::silu:     map(n, [&](int64_t i) { y[i] = x[i] * sigmoid_of(x[i]); }); break;
    case UnaryOp::softplus:
      map(n, [&](int64_t i) {
        y[i] = x[i] > T(kSoftplusThreshold) ? x[i] : std::log1p(std::exp(x[i]));
      });
      break;
    case UnaryOp::tanh:     map(n, [&](int64_t i) { y[i] = std::tanh(x[i]); }); break;
    case UnaryOp::relu:     map(n, [&](int64_t i) { y[i] = x[i] > T(0) ? x[i] : T(0); }); break;
  }
}

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
      map(n, [&](int64_t i) {
        T s = sigmoid_of(x[i]);
        dx[i] = dy[i] * s * (T(1) + x[i] * (T(1) - s));
      });
      break;
    case UnaryOp::softplus:
      map(n, [&](int64_t i) { dx[i] = x[i] > T(kSoftplusThreshold) ? dy[i] : dy[i] * sigmoid_of(x[i]); });
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

// checks -> allocate -> dispatch -> record backward: the shape of every public op.
static Tensor unary(UnaryOp op, const Tensor& x, double p = 0) {
  const char* name = op_name(op);
  check_float(name, x, "x");
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  dispatch_device(x.device(), x.dtype(), name,
      [&] { MG_CUDA_ONLY(cuda::unary_forward(op, x.data<float>(), y.data<float>(), x.numel(), (float)p)); },
      [&]<typename T>() { cpu::unary_forward<T>(op, x.data<T>(), y.data<T>(), x.numel(), (T)p); });
  record(name, {x}, {y}, [op, x, y, p, name](const std::vector<Tensor>& d) {
    Tensor dx = Tensor::empty(x.shape(), x.dtype(), x.device());
    dispatch_device(x.device(), x.dtype(), name,
        [&] {
          MG_CUDA_ONLY(cuda::unary_backward(op, x.data<float>(), y.data<float>(),
                                            d[0].data<float>(), dx.data<float>(), x.numel(), (float)p));
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
