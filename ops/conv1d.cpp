#include "ops/conv1d.h"

#include <algorithm>
#include <vector>

#include "autograd/tape.h"
#include "core/allocator.h"
#include "core/dispatch.h"
#include "ops/convert.h"
#include "core/parallel.h"

namespace mg {

namespace cpu {

// w (C, 1, K) -> wt (K, C), so that tap k of every channel is one contiguous row.
template <typename T>
static std::vector<T> taps_by_row(const T* w, int64_t C, int64_t K) {
  std::vector<T> wt((size_t)(K * C));
  for (int64_t c = 0; c < C; ++c)
    for (int64_t k = 0; k < K; ++k) wt[k * C + c] = w[c * K + k];
  return wt;
}

// Rows (b, t) per parallel block: about kElementwiseGrain multiply-adds each.
static int64_t row_grain(int64_t C, int64_t K) {
  return std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(1, C * K));
}

// x (B, L, C), w (C, 1, K), bias (C) or null -> y (B, L, C).
template <typename T>
void causal_conv1d_forward(const T* x, const T* w, const T* bias, T* y, int64_t B, int64_t L,
                           int64_t C, int64_t K) {
  std::vector<T> wt = taps_by_row(w, C, K);
  parallel_for(B * L, row_grain(C, K), [&](int64_t r0, int64_t r1) {
    for (int64_t row = r0; row < r1; ++row) {
      int64_t t = row % L;
      T* yr = y + row * C;
      for (int64_t c = 0; c < C; ++c) yr[c] = bias ? bias[c] : T(0);
      // Tap k reads time t-(K-1)+k, which must be >= 0.
      for (int64_t k = std::max<int64_t>(0, K - 1 - t); k < K; ++k) {
        const T* xr = x + (row - (K - 1) + k) * C;
        const T* wk = wt.data() + k * C;
        for (int64_t c = 0; c < C; ++c) yr[c] += wk[c] * xr[c];
      }
    }
  });
}

// x, dy, dx (B, L, C); w, dw (C, 1, K); dbias (C). A null dx, dw or dbias is skipped.
template <typename T>
void causal_conv1d_backward(const T* x, const T* w, const T* dy, T* dx, T* dw, T* dbias,
                            int64_t B, int64_t L, int64_t C, int64_t K) {
  if (dx) {
    std::vector<T> wt = taps_by_row(w, C, K);
    parallel_for(B * L, row_grain(C, K), [&](int64_t r0, int64_t r1) {
      for (int64_t row = r0; row < r1; ++row) {
        int64_t s = row % L;
        T* dxr = dx + row * C;
        for (int64_t c = 0; c < C; ++c) dxr[c] = T(0);
        // x_s feeds y_t with t = s+(K-1)-k, which must be < L.
        for (int64_t k = std::max<int64_t>(0, s + K - L); k < K; ++k) {
          const T* dyr = dy + (row + (K - 1) - k) * C;
          const T* wk = wt.data() + k * C;
          for (int64_t c = 0; c < C; ++c) dxr[c] += wk[c] * dyr[c];
        }
      }
    });
  }
  if (!dw && !dbias) return;
  // Each block of channels [c0, c1) is summed by one thread over (b, t) in order; tiles of
  // kTile channels keep the double accumulators in L1.
  constexpr int64_t kTile = 256;
  int64_t grain = std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(1, B * L * K));
  parallel_for(C, grain, [&](int64_t c0, int64_t c1) {
    std::vector<double> acc_w((size_t)(K * kTile)), acc_b((size_t)kTile);
    for (int64_t ct = c0; ct < c1; ct += kTile) {
      int64_t n = std::min(kTile, c1 - ct);
      std::fill(acc_w.begin(), acc_w.end(), 0.0);
      std::fill(acc_b.begin(), acc_b.end(), 0.0);
      for (int64_t b = 0; b < B; ++b) {
        for (int64_t t = 0; t < L; ++t) {
          int64_t row = b * L + t;
          const T* dyr = dy + row * C + ct;
          for (int64_t j = 0; j < n; ++j) acc_b[j] += (double)dyr[j];
          for (int64_t k = std::max<int64_t>(0, K - 1 - t); k < K; ++k) {
            const T* xr = x + (row - (K - 1) + k) * C + ct;
            double* aw = acc_w.data() + k * kTile;
            for (int64_t j = 0; j < n; ++j) aw[j] += (double)dyr[j] * (double)xr[j];
          }
        }
      }
      for (int64_t j = 0; j < n; ++j) {
        if (dbias) dbias[ct + j] = (T)acc_b[j];
        if (dw)
          for (int64_t k = 0; k < K; ++k) dw[(ct + j) * K + k] = (T)acc_w[k * kTile + j];
      }
    }
  });
}

#define MG_INSTANTIATE(T)                                                                    \
  template void causal_conv1d_forward<T>(const T*, const T*, const T*, T*, int64_t, int64_t, \
                                         int64_t, int64_t);                                  \
  template void causal_conv1d_backward<T>(const T*, const T*, const T*, T*, T*, T*, int64_t, \
                                          int64_t, int64_t, int64_t);
MG_INSTANTIATE(float)
MG_INSTANTIATE(double)
#undef MG_INSTANTIATE

void causal_conv1d_forward_bf16(const bf16* x, const float* w, const float* bias, bf16* y,
                                int64_t B, int64_t L, int64_t C, int64_t K) {
  const F32Scratch xf(x, B * L * C), yf(B * L * C);
  causal_conv1d_forward<float>(xf.data(), w, bias, yf.data(), B, L, C, K);
  yf.round_into(y);
}

void causal_conv1d_backward_bf16(const bf16* x, const float* w, const bf16* dy, bf16* dx,
                                 float* dw, float* dbias, int64_t B, int64_t L, int64_t C,
                                 int64_t K) {
  const F32Scratch xf(x, B * L * C), dyf(dy, B * L * C), dxf(dx ? B * L * C : 0);
  causal_conv1d_backward<float>(xf.data(), w, dyf.data(), dx ? dxf.data() : nullptr, dw, dbias,
                                B, L, C, K);
  if (dx) dxf.round_into(dx);
}

}  // namespace cpu

namespace {

// causal_conv1d with bf16 activations and f32 weight and bias (checked by the caller).
Tensor causal_conv1d_bf16(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t B,
                          int64_t L, int64_t C, int64_t K) {
  const char* op = "causal_conv1d (bf16)";
  Tensor y = Tensor::empty(x.shape(), DType::bf16, x.device());
  dispatch_device(x.device(), op,
      [&]<typename>() {
        cuda::causal_conv1d_forward_bf16(x.data<bf16>(), weight.data<float>(),
                                         bias.data_or_null<float>(), y.data<bf16>(), B, L, C, K);
      },
      [&] {
        cpu::causal_conv1d_forward_bf16(x.data<bf16>(), weight.data<float>(),
                                        bias.data_or_null<float>(), y.data<bf16>(), B, L, C, K);
      });
  record(op, {x, weight, bias}, {y}, [x, weight, bias, B, L, C, K, op](const std::vector<Tensor>& d) {
    Tensor dx, dw, dbias;
    if (x.requires_grad()) dx = Tensor::empty(x.shape(), DType::bf16, x.device());
    if (weight.requires_grad()) dw = Tensor::empty(weight.shape(), DType::f32, x.device());
    if (bias.defined() && bias.requires_grad()) dbias = Tensor::empty({C}, DType::f32, x.device());
    dispatch_device(x.device(), op,
        [&]<typename>() {
          cuda::causal_conv1d_backward_bf16(x.data<bf16>(), weight.data<float>(), d[0].data<bf16>(),
                                            dx.data_or_null<bf16>(), dw.data_or_null<float>(),
                                            dbias.data_or_null<float>(), B, L, C, K);
        },
        [&] {
          cpu::causal_conv1d_backward_bf16(x.data<bf16>(), weight.data<float>(), d[0].data<bf16>(),
                                           dx.data_or_null<bf16>(), dw.data_or_null<float>(),
                                           dbias.data_or_null<float>(), B, L, C, K);
        });
    return std::vector<Tensor>{dx, dw, dbias};
  });
  return y;
}

}  // namespace

Tensor causal_conv1d(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  const char* op = "causal_conv1d";
  check_float(op, x, "x");
  MG_CHECK(x.dim() == 3, op, ": x must be (B, L, C) (channel-last), got ", shape_str(x.shape()));
  int64_t B = x.size(0), L = x.size(1), C = x.size(2);
  check_float(op, weight, "weight");
  MG_CHECK(weight.dim() == 3 && weight.size(0) == C && weight.size(1) == 1 && weight.size(2) >= 1,
           op, ": weight must be (C, 1, K) = (", C, ", 1, K) with K >= 1 for x of shape ",
           shape_str(x.shape()), ", got ", shape_str(weight.shape()));
  int64_t K = weight.size(2);
  check_same_device(op, x, weight);
  if (bias.defined()) {
    check_float(op, bias, "bias");
    MG_CHECK(bias.shape() == Shape{C}, op, ": bias must be (C) = (", C, ") for x of shape ",
             shape_str(x.shape()), ", got ", shape_str(bias.shape()));
    check_same_device(op, x, bias);
  }
  if (is_bf16(x)) {  // mixed precision: bf16 activations, f32 weight and bias
    check_dtype(op, weight, DType::f32, "weight (f32 with a bf16 x)");
    if (bias.defined()) check_dtype(op, bias, DType::f32, "bias (f32 with a bf16 x)");
    return causal_conv1d_bf16(x, weight, bias, B, L, C, K);
  }
  check_same_dtype(op, x, weight);
  if (bias.defined()) check_same_dtype(op, x, bias);

  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  dispatch_device(x.device(), x.dtype(), op,
      [&]<typename T>() {
        cuda::causal_conv1d_forward(x.data<T>(), weight.data<T>(), bias.data_or_null<T>(),
                                    y.data<T>(), B, L, C, K);
      },
      [&]<typename T>() {
        cpu::causal_conv1d_forward<T>(x.data<T>(), weight.data<T>(), bias.data_or_null<T>(),
                                      y.data<T>(), B, L, C, K);
      });
  auto backward_fn = [x, weight, bias, B, L, C, K, op](const std::vector<Tensor>& d) {
    const Tensor& dy = d[0];
    Tensor dx, dw, dbias;
    if (x.requires_grad()) dx = Tensor::empty(x.shape(), x.dtype(), x.device());
    if (weight.requires_grad()) dw = Tensor::empty(weight.shape(), x.dtype(), x.device());
    if (bias.defined() && bias.requires_grad()) dbias = Tensor::empty({C}, x.dtype(), x.device());
    dispatch_device(x.device(), x.dtype(), op,
        [&]<typename T>() {
          cuda::causal_conv1d_backward(x.data<T>(), weight.data<T>(), dy.data<T>(),
                                       dx.data_or_null<T>(), dw.data_or_null<T>(),
                                       dbias.data_or_null<T>(), B, L, C, K);
        },
        [&]<typename T>() {
          cpu::causal_conv1d_backward<T>(x.data<T>(), weight.data<T>(), dy.data<T>(),
                                         dx.data_or_null<T>(), dw.data_or_null<T>(),
                                         dbias.data_or_null<T>(), B, L, C, K);
        });
    return std::vector<Tensor>{dx, dw, dbias};
  };
  record(op, {x, weight, bias}, {y}, backward_fn);
  return y;
}

// ---- recurrent inference: one token at a time, and the window it carries ----------------------
// window (B, C, K) holds the last K inputs of each channel, newest at index K-1: what the
// parallel form's taps read at the last step. The step shifts it and applies the taps.
namespace cpu {

// x, y: (B, C) one token; w: (C, 1, K); bias: (C) or null; window: (B, C, K), updated in place:
//   window[b, c, :] <- shift left, window[b, c, K-1] = x[b, c]
//   y[b, c] = bias[c] + sum_k w[c, 0, k] * window[b, c, k]          (tap K-1 = the new x)
template <typename T>
void causal_conv1d_step_forward(const T* x, const T* w, const T* bias, T* window, T* y,
                                int64_t B, int64_t C, int64_t K) {
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < C; ++c) {
      T* win = window + (b * C + c) * K;
      for (int64_t k = 0; k + 1 < K; ++k) win[k] = win[k + 1];
      win[K - 1] = x[b * C + c];
      T acc = bias ? bias[c] : T(0);
      for (int64_t k = 0; k < K; ++k) acc += w[c * K + k] * win[k];
      y[b * C + c] = acc;
    }
}

// x: (B, L, C) a prefix; window: (B, C, K) its last K steps, newest at K-1, zeros before t = 0.
template <typename T>
void causal_conv1d_state_forward(const T* x, T* window, int64_t B, int64_t L, int64_t C,
                                 int64_t K) {
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t k = 0; k < K; ++k) {
        const int64_t t = L - K + k;  // slot K-1 holds the newest step, L-1
        window[(b * C + c) * K + k] = t >= 0 ? x[(b * L + t) * C + c] : T(0);
      }
}

#define MG_INSTANTIATE(T)                                                                      \
  template void causal_conv1d_step_forward<T>(const T*, const T*, const T*, T*, T*, int64_t,   \
                                              int64_t, int64_t);                               \
  template void causal_conv1d_state_forward<T>(const T*, T*, int64_t, int64_t, int64_t, int64_t);
MG_INSTANTIATE(float)
MG_INSTANTIATE(double)
#undef MG_INSTANTIATE

}  // namespace cpu

Tensor causal_conv1d_step(const Tensor& x, const Tensor& weight, const Tensor& bias,
                          const Tensor& window) {
  const char* op = "causal_conv1d_step";
  check_float(op, x, "x");
  if (is_bf16(x))  // bf16 activations (mixed precision): f32 compute and window, y rounded
    return causal_conv1d_step(x.cast(DType::f32), weight, bias, window).cast(DType::bf16);
  check_dim(op, x, 2, "x (B, C)");
  check_dim(op, window, 3, "window (B, C, K)");
  const int64_t B = x.size(0), C = x.size(1), K = window.size(2);
  check_shape(op, weight, {C, 1, K}, "weight (C, 1, K)");
  check_shape(op, window, {B, C, K}, "window");
  if (bias.defined()) check_shape(op, bias, {C}, "bias");
  for (const Tensor* t : {&weight, &bias, &window}) {
    if (!t->defined()) continue;
    check_same_dtype(op, x, *t);
    check_same_device(op, x, *t);
  }
  MG_CHECK(!needs_grad({x, weight, bias, window}), op,
           ": inference only (no backward): run it under NoGradGuard or on detached tensors");
  Tensor y = Tensor::empty({B, C}, x.dtype(), x.device());
  dispatch_device(x.device(), x.dtype(), op,
                  [&]<typename T>() {
                    cuda::causal_conv1d_step_forward(x.data<T>(), weight.data<T>(),
                                                     bias.data_or_null<T>(), window.data<T>(),
                                                     y.data<T>(), B, C, K);
                  },
                  [&]<typename T>() {
                    cpu::causal_conv1d_step_forward<T>(x.data<T>(), weight.data<T>(),
                                                       bias.data_or_null<T>(), window.data<T>(),
                                                       y.data<T>(), B, C, K);
                  });
  return y;
}

Tensor causal_conv1d_state(const Tensor& x, int64_t K) {
  const char* op = "causal_conv1d_state";
  check_float(op, x, "x");
  if (is_bf16(x)) return causal_conv1d_state(x.cast(DType::f32), K);  // the state is f32
  check_dim(op, x, 3, "x (B, L, C)");
  MG_CHECK(K >= 1, op, ": K (taps) must be >= 1, got ", K);
  const int64_t B = x.size(0), L = x.size(1), C = x.size(2);
  Tensor window = Tensor::empty({B, C, K}, x.dtype(), x.device());
  dispatch_device(x.device(), x.dtype(), op,
                  [&]<typename T>() {
                    cuda::causal_conv1d_state_forward(x.data<T>(), window.data<T>(), B, L, C, K);
                  },
                  [&]<typename T>() {
                    cpu::causal_conv1d_state_forward<T>(x.data<T>(), window.data<T>(), B, L, C, K);
                  });
  return window;
}

}  // namespace mg
