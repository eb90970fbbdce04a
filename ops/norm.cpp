#include "ops/norm.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "autograd/tape.h"
#include "core/dispatch.h"
#include "ops/convert.h"
#include "core/parallel.h"
#include "ops/norm_rows.h"

namespace mg {

namespace cpu {

// x, y (rows, D); w (D); rstd (rows), written.
template <typename T>
void rms_norm_forward(const T* x, const T* w, T* y, T* rstd, int64_t rows, int64_t D, T eps) {
  parallel_for(rows, std::max<int64_t>(1, kElementwiseGrain / D), [&](int64_t r0, int64_t r1) {
    for (int64_t row = r0; row < r1; ++row) {
      const T* xr = x + row * D;
      T* yr = y + row * D;
      double ms = row_sum(D, [&](int64_t j) { return (double)xr[j] * xr[j]; }) / (double)D;
      T r = (T)(1.0 / std::sqrt(ms + (double)eps));
      rstd[row] = r;
      for (int64_t j = 0; j < D; ++j) yr[j] = xr[j] * r * w[j];
    }
  });
}

// x, dy, dx (rows, D); w, dw (D); rstd (rows). A null dx or dw is skipped.
template <typename T>
void rms_norm_backward(const T* x, const T* w, const T* rstd, const T* dy, T* dx, T* dw,
                       int64_t rows, int64_t D) {
  rows_then_reduce<T>(rows, D, dw, nullptr, [&](int64_t row, double* w_part, double*) {
    const T* xr = x + row * D;
    const T* dyr = dy + row * D;
    T r = rstd[row];
    if (dx) {
      // mean_j(g_j xh_j) with g = dy w, xh = x r.
      double m = row_sum(D, [&](int64_t j) {
                   return (double)(dyr[j] * w[j]) * (double)(xr[j] * r);
                 }) / (double)D;
      T mt = (T)m;
      T* dxr = dx + row * D;
      for (int64_t j = 0; j < D; ++j) dxr[j] = r * (dyr[j] * w[j] - xr[j] * r * mt);
    }
    if (w_part)
      for (int64_t j = 0; j < D; ++j) w_part[j] += (double)dyr[j] * (double)(xr[j] * r);
  });
}

// x, y (rows, D); w, b (D), b may be null; mean, rstd (rows), written.
template <typename T>
void layer_norm_forward(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd,
                        int64_t rows, int64_t D, T eps) {
  parallel_for(rows, std::max<int64_t>(1, kElementwiseGrain / D), [&](int64_t r0, int64_t r1) {
    for (int64_t row = r0; row < r1; ++row) {
      const T* xr = x + row * D;
      T* yr = y + row * D;
      // Two passes (mean, then squared deviations): no cancellation for large means.
      double mu = row_sum(D, [&](int64_t j) { return (double)xr[j]; }) / (double)D;
      double var = row_sum(D, [&](int64_t j) {
                     double c = (double)xr[j] - mu;
                     return c * c;
                   }) / (double)D;
      T mt = (T)mu, r = (T)(1.0 / std::sqrt(var + (double)eps));
      mean[row] = mt;
      rstd[row] = r;
      for (int64_t j = 0; j < D; ++j) yr[j] = (xr[j] - mt) * r * w[j] + (b ? b[j] : T(0));
    }
  });
}

// x, dy, dx (rows, D); w, dw, db (D); mean, rstd (rows). Null outputs are skipped.
template <typename T>
void layer_norm_backward(const T* x, const T* w, const T* mean, const T* rstd, const T* dy,
                         T* dx, T* dw, T* db, int64_t rows, int64_t D) {
  rows_then_reduce<T>(rows, D, dw, db, [&](int64_t row, double* w_part, double* b_part) {
    const T* xr = x + row * D;
    const T* dyr = dy + row * D;
    T mu = mean[row], r = rstd[row];
    if (dx) {
      // mean_j(g_j) and mean_j(g_j xh_j) with g = dy w, xh = (x - mu) r.
      double mg = row_sum(D, [&](int64_t j) { return (double)(dyr[j] * w[j]); }) / (double)D;
      double mgx = row_sum(D, [&](int64_t j) {
                     return (double)(dyr[j] * w[j]) * (double)((xr[j] - mu) * r);
                   }) / (double)D;
      T mgt = (T)mg, mgxt = (T)mgx;
      T* dxr = dx + row * D;
      for (int64_t j = 0; j < D; ++j)
        dxr[j] = r * (dyr[j] * w[j] - mgt - (xr[j] - mu) * r * mgxt);
    }
    if (w_part)
      for (int64_t j = 0; j < D; ++j) w_part[j] += (double)dyr[j] * (double)((xr[j] - mu) * r);
    if (b_part)
      for (int64_t j = 0; j < D; ++j) b_part[j] += (double)dyr[j];
  });
}

#define MG_INSTANTIATE(T)                                                                      \
  template void rms_norm_forward<T>(const T*, const T*, T*, T*, int64_t, int64_t, T);          \
  template void rms_norm_backward<T>(const T*, const T*, const T*, const T*, T*, T*, int64_t,  \
                                     int64_t);                                                 \
  template void layer_norm_forward<T>(const T*, const T*, const T*, T*, T*, T*, int64_t,       \
                                      int64_t, T);                                             \
  template void layer_norm_backward<T>(const T*, const T*, const T*, const T*, const T*, T*,   \
                                       T*, T*, int64_t, int64_t);
MG_INSTANTIATE(float)
MG_INSTANTIATE(double)
#undef MG_INSTANTIATE

}  // namespace cpu

// Shared checks of both norms; returns D (the normalised, last dimension).
static int64_t check_norm_args(const char* op, const Tensor& x, const Tensor& weight,
                               const Tensor& bias, double eps) {
  check_float(op, x, "x");
  MG_CHECK(x.dim() >= 1 && x.size(-1) >= 1, op, ": x must be (..., D) with D >= 1, got ",
           shape_str(x.shape()));
  int64_t D = x.size(-1);
  check_float(op, weight, "weight");
  MG_CHECK(weight.shape() == Shape{D}, op, ": weight must be (D) = (", D, ") for x of shape ",
           shape_str(x.shape()), ", got ", shape_str(weight.shape()));
  check_same_dtype(op, x, weight);
  check_same_device(op, x, weight);
  if (bias.defined()) {
    check_float(op, bias, "bias");
    MG_CHECK(bias.shape() == Shape{D}, op, ": bias must be (D) = (", D, ") for x of shape ",
             shape_str(x.shape()), ", got ", shape_str(bias.shape()));
    check_same_dtype(op, x, bias);
    check_same_device(op, x, bias);
  }
  MG_CHECK(eps >= 0 && std::isfinite(eps), op, ": eps must be finite and >= 0, got ", eps);
  return D;
}

Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps) {
  const char* op = "rms_norm";
  if (is_bf16(x)) return rms_norm(widen_bf16(x), weight, eps);  // norms in f32 (ops/convert.h)
  int64_t D = check_norm_args(op, x, weight, Tensor(), eps);
  int64_t rows = x.numel() / D;
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor rstd = Tensor::empty({rows}, x.dtype(), x.device());
  dispatch_device(x.device(), x.dtype(), op,
      [&]<typename T>() {
        cuda::rms_norm_forward(x.data<T>(), weight.data<T>(), y.data<T>(), rstd.data<T>(), rows,
                               D, (T)eps);
      },
      [&]<typename T>() {
        cpu::rms_norm_forward<T>(x.data<T>(), weight.data<T>(), y.data<T>(), rstd.data<T>(), rows,
                                 D, (T)eps);
      });
  record(op, {x, weight}, {y}, [x, weight, rstd, rows, D, op](const std::vector<Tensor>& d) {
    Tensor dx, dw;
    if (x.requires_grad()) dx = Tensor::empty(x.shape(), x.dtype(), x.device());
    if (weight.requires_grad()) dw = Tensor::empty({D}, x.dtype(), x.device());
    dispatch_device(x.device(), x.dtype(), op,
        [&]<typename T>() {
          cuda::rms_norm_backward(x.data<T>(), weight.data<T>(), rstd.data<T>(), d[0].data<T>(),
                                  dx.data_or_null<T>(), dw.data_or_null<T>(), rows, D);
        },
        [&]<typename T>() {
          cpu::rms_norm_backward<T>(x.data<T>(), weight.data<T>(), rstd.data<T>(), d[0].data<T>(),
                                    dx.data_or_null<T>(), dw.data_or_null<T>(), rows, D);
        });
    return std::vector<Tensor>{dx, dw};
  });
  return y;
}

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  const char* op = "layer_norm";
  if (is_bf16(x)) return layer_norm(widen_bf16(x), weight, bias, eps);  // norms in f32
  int64_t D = check_norm_args(op, x, weight, bias, eps);
  int64_t rows = x.numel() / D;
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor mean = Tensor::empty({rows}, x.dtype(), x.device());
  Tensor rstd = Tensor::empty({rows}, x.dtype(), x.device());
  dispatch_device(x.device(), x.dtype(), op,
      [&]<typename T>() {
        cuda::layer_norm_forward(x.data<T>(), weight.data<T>(), bias.data_or_null<T>(), y.data<T>(),
                                 mean.data<T>(), rstd.data<T>(), rows, D, (T)eps);
      },
      [&]<typename T>() {
        cpu::layer_norm_forward<T>(x.data<T>(), weight.data<T>(), bias.data_or_null<T>(),
                                   y.data<T>(), mean.data<T>(), rstd.data<T>(), rows, D, (T)eps);
      });
  record(op, {x, weight, bias}, {y},
         [x, weight, bias, mean, rstd, rows, D, op](const std::vector<Tensor>& d) {
           Tensor dx, dw, db;
           if (x.requires_grad()) dx = Tensor::empty(x.shape(), x.dtype(), x.device());
           if (weight.requires_grad()) dw = Tensor::empty({D}, x.dtype(), x.device());
           if (bias.defined() && bias.requires_grad())
             db = Tensor::empty({D}, x.dtype(), x.device());
           dispatch_device(x.device(), x.dtype(), op,
               [&]<typename T>() {
                 cuda::layer_norm_backward(x.data<T>(), weight.data<T>(), mean.data<T>(),
                                           rstd.data<T>(), d[0].data<T>(), dx.data_or_null<T>(),
                                           dw.data_or_null<T>(), db.data_or_null<T>(), rows, D);
               },
               [&]<typename T>() {
                 cpu::layer_norm_backward<T>(x.data<T>(), weight.data<T>(), mean.data<T>(),
                                             rstd.data<T>(), d[0].data<T>(), dx.data_or_null<T>(),
                                             dw.data_or_null<T>(), db.data_or_null<T>(), rows, D);
               });
           return std::vector<Tensor>{dx, dw, db};
         });
  return y;
}

}  // namespace mg
