#include "ops/add_norm.h"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "autograd/tape.h"
#include "core/dispatch.h"
#include "core/parallel.h"
#include "ops/norm_rows.h"

namespace mg {

namespace cpu {

// Loads widen a bf16 exactly; stores round to nearest even (core/bf16.h). For T storage they
// are plain reads and writes.
template <typename T, typename S>
static inline T load(const S* p, int64_t i) {
  if constexpr (std::is_same_v<S, bf16>) return (T)bf16::to_f32(p[i].bits);
  else return p[i];
}
template <typename S, typename T>
static inline void store(S* p, int64_t i, T v) {
  if constexpr (std::is_same_v<S, bf16>) p[i].bits = bf16::from_f32((float)v);
  else p[i] = v;
}

// x (rows, D) of X; residual (rows, D) or null; w (D); y (rows, D) of Y; s (rows, D) and
// rstd (rows), written. The statements are rms_norm_forward's (ops/norm.cpp) on s.
template <typename T, typename X, typename Y>
void add_rms_norm_forward(const X* x, const T* residual, const T* w, Y* y, T* s, T* rstd,
                          int64_t rows, int64_t D, T eps) {
  parallel_for(rows, std::max<int64_t>(1, kElementwiseGrain / D), [&](int64_t r0, int64_t r1) {
    for (int64_t row = r0; row < r1; ++row) {
      const X* xr = x + row * D;
      T* sr = s + row * D;
      Y* yr = y + row * D;
      if (residual) {
        const T* rr = residual + row * D;
        for (int64_t j = 0; j < D; ++j) sr[j] = rr[j] + load<T>(xr, j);
      } else {
        for (int64_t j = 0; j < D; ++j) sr[j] = load<T>(xr, j);
      }
      double ms = row_sum(D, [&](int64_t j) { return (double)sr[j] * sr[j]; }) / (double)D;
      T r = (T)(1.0 / std::sqrt(ms + (double)eps));
      rstd[row] = r;
      for (int64_t j = 0; j < D; ++j) store(yr, j, sr[j] * r * w[j]);
    }
  });
}

// s, ds (rows, D), ds may be null; dy (rows, D) of Y; w (D); rstd (rows). Writes dresidual
// (T) and dx (X) = ds + dn, and dw; null outputs are skipped. dn and dw are
// rms_norm_backward's statements (ops/norm.cpp) on s.
template <typename T, typename X, typename Y>
void add_rms_norm_backward(const T* s, const T* w, const T* rstd, const Y* dy, const T* ds,
                           T* dresidual, X* dx, T* dw, int64_t rows, int64_t D) {
  rows_then_reduce<T>(rows, D, dw, nullptr, [&](int64_t row, double* w_part, double*) {
    const T* sr = s + row * D;
    const Y* dyr = dy + row * D;
    T r = rstd[row];
    if (dresidual || dx) {
      // mean_j(g_j sh_j) with g = dy w, sh = s r.
      double m = row_sum(D, [&](int64_t j) {
                   return (double)(load<T>(dyr, j) * w[j]) * (double)(sr[j] * r);
                 }) / (double)D;
      T mt = (T)m;
      // dn goes through memory (a row of scratch) before ds is added: the compiler contracts
      // a product feeding an add into one FMA (GCC's C++ default), and `ds + r * (...)` would
      // then round once where the unfused norm-then-add rounds twice. Stored first, dn is
      // computed by exactly rms_norm_backward's statement, and the add is a plain add.
      thread_local std::vector<T> scratch;
      if ((int64_t)scratch.size() < D) scratch.resize((size_t)D);
      T* dn = scratch.data();
      for (int64_t j = 0; j < D; ++j) dn[j] = r * (load<T>(dyr, j) * w[j] - sr[j] * r * mt);
      const T* dsr = ds ? ds + row * D : nullptr;
      T* drr = dresidual ? dresidual + row * D : nullptr;
      X* dxr = dx ? dx + row * D : nullptr;
      for (int64_t j = 0; j < D; ++j) {
        T total = dsr ? dsr[j] + dn[j] : dn[j];  // the tape's order: the earlier gradient + dn
        if (drr) drr[j] = total;
        if (dxr) store(dxr, j, total);
      }
    }
    if (w_part)
      for (int64_t j = 0; j < D; ++j)
        w_part[j] += (double)load<T>(dyr, j) * (double)(sr[j] * r);
  });
}

#define MG_INSTANTIATE(T, X, Y)                                                                \
  template void add_rms_norm_forward<T, X, Y>(const X*, const T*, const T*, Y*, T*, T*,       \
                                              int64_t, int64_t, T);                            \
  template void add_rms_norm_backward<T, X, Y>(const T*, const T*, const T*, const Y*,        \
                                               const T*, T*, X*, T*, int64_t, int64_t);
MG_INSTANTIATE(double, double, double)
MG_INSTANTIATE(float, float, float)
MG_INSTANTIATE(float, bf16, float)
MG_INSTANTIATE(float, float, bf16)
MG_INSTANTIATE(float, bf16, bf16)
#undef MG_INSTANTIATE

}  // namespace cpu

namespace {

// Runs f.template operator()<X, Y>() with X, Y the storage types of x and y: T, or bf16 when
// T is float (the checks have made sure that is all there is).
template <typename T, typename F>
void with_storage(DType x, DType y, F&& f) {
  if constexpr (std::is_same_v<T, float>) {
    const bool xb = x == DType::bf16, yb = y == DType::bf16;
    if (xb && yb) f.template operator()<bf16, bf16>();
    else if (xb) f.template operator()<bf16, float>();
    else if (yb) f.template operator()<float, bf16>();
    else f.template operator()<float, float>();
  } else {
    f.template operator()<T, T>();
  }
}

// Throws unless the arguments fit (the messages name the argument and what it should be);
// returns D.
int64_t check_args(const char* op, const Tensor& x, const Tensor& residual,
                   const Tensor& weight, double eps, DType out) {
  check_float(op, x, "x");
  MG_CHECK(x.dim() >= 1 && x.size(-1) >= 1, op, ": x must be (..., D) with D >= 1, got ",
           shape_str(x.shape()));
  const int64_t D = x.size(-1);
  check_float(op, weight, "weight");
  const DType T = weight.dtype();
  MG_CHECK(T == DType::f32 || T == DType::f64, op, ": weight must be f32 or f64 (the dtype the "
           "op computes in), got ", dtype_name(T));
  MG_CHECK(weight.shape() == Shape{D}, op, ": weight must be (D) = (", D, ") for x of shape ",
           shape_str(x.shape()), ", got ", shape_str(weight.shape()));
  check_same_device(op, x, weight);
  MG_CHECK(x.dtype() == T || (x.dtype() == DType::bf16 && T == DType::f32), op, ": x must be ",
           dtype_name(T), T == DType::f32 ? " or bf16" : "", " (the weight's dtype), got ",
           dtype_name(x.dtype()));
  if (residual.defined()) {
    check_float(op, residual, "residual");
    MG_CHECK(residual.shape() == x.shape(), op, ": residual must have x's shape ",
             shape_str(x.shape()), ", got ", shape_str(residual.shape()));
    MG_CHECK(residual.dtype() == T, op, ": residual must be ", dtype_name(T),
             " (the weight's dtype: the residual stream stays in it), got ",
             dtype_name(residual.dtype()));
    check_same_device(op, x, residual);
  }
  MG_CHECK(out == T || (out == DType::bf16 && T == DType::f32), op, ": out_dtype must be ",
           dtype_name(T), T == DType::f32 ? " or bf16" : "", " for a ", dtype_name(T),
           " weight, got ", dtype_name(out));
  MG_CHECK(eps >= 0 && std::isfinite(eps), op, ": eps must be finite and >= 0, got ", eps);
  return D;
}

}  // namespace

AddNormResult add_rms_norm(const Tensor& x, const Tensor& residual, const Tensor& weight,
                           double eps, std::optional<DType> out_dtype, bool return_residual) {
  const char* op = "add_rms_norm";
  check_defined(op, weight, "weight");
  const DType out = out_dtype.value_or(weight.dtype());
  const int64_t D = check_args(op, x, residual, weight, eps, out);
  const int64_t rows = x.numel() / D;
  const DType T = weight.dtype();
  AddNormResult r{Tensor::empty(x.shape(), out, x.device()),
                  Tensor::empty(x.shape(), T, x.device())};
  Tensor rstd = Tensor::empty({rows}, T, x.device());
  dispatch_device(x.device(), T, op,
      [&]<typename U>() {
        with_storage<U>(x.dtype(), out, [&]<typename X, typename Y>() {
          cuda::add_rms_norm_forward<X, Y>(x.data<X>(), residual.data_or_null<U>(),
                                           weight.data<U>(), r.y.data<Y>(), r.residual.data<U>(),
                                           rstd.data<U>(), rows, D, (U)eps);
        });
      },
      [&]<typename U>() {
        with_storage<U>(x.dtype(), out, [&]<typename X, typename Y>() {
          cpu::add_rms_norm_forward<U, X, Y>(x.data<X>(), residual.data_or_null<U>(),
                                             weight.data<U>(), r.y.data<Y>(), r.residual.data<U>(),
                                             rstd.data<U>(), rows, D, (U)eps);
        });
      });
  // The backward saves s, rstd and the weight; never x or the old residual. Without
  // return_residual, s is no output of the node: the backward has no ds.
  const bool x_grad = x.requires_grad(), res_grad = residual.defined() && residual.requires_grad();
  const DType x_dtype = x.dtype();
  const Tensor s = r.residual;
  if (!return_residual) r.residual = Tensor();
  std::vector<Tensor> outputs{r.y};
  if (return_residual) outputs.push_back(s);
  record(op, {x, residual, weight}, outputs,
         [s, weight, rstd, rows, D, x_grad, res_grad, x_dtype, op](const std::vector<Tensor>& d) {
           const Tensor& dy = d[0];
           const Tensor ds = d.size() > 1 ? d[1] : Tensor();
           const DType T = s.dtype();
           // dresidual (T) also serves as dx when x is T; dx (bf16) is its rounding.
           const bool x_low = x_dtype != T;
           Tensor dres, dx, dw;
           if (res_grad || (x_grad && !x_low)) dres = Tensor::empty(s.shape(), T, s.device());
           if (x_grad && x_low) dx = Tensor::empty(s.shape(), x_dtype, s.device());
           if (weight.requires_grad()) dw = Tensor::empty({D}, T, s.device());
           dispatch_device(s.device(), T, op,
               [&]<typename U>() {
                 with_storage<U>(x_dtype, dy.dtype(), [&]<typename X, typename Y>() {
                   cuda::add_rms_norm_backward<X, Y>(s.data<U>(), weight.data<U>(),
                                                     rstd.data<U>(), dy.data<Y>(),
                                                     ds.data_or_null<U>(),
                                                     dres.data_or_null<U>(), dx.data_or_null<X>(),
                                                     dw.data_or_null<U>(), rows, D);
                 });
               },
               [&]<typename U>() {
                 with_storage<U>(x_dtype, dy.dtype(), [&]<typename X, typename Y>() {
                   cpu::add_rms_norm_backward<U, X, Y>(s.data<U>(), weight.data<U>(),
                                                       rstd.data<U>(), dy.data<Y>(),
                                                       ds.data_or_null<U>(),
                                                       dres.data_or_null<U>(),
                                                       dx.data_or_null<X>(), dw.data_or_null<U>(),
                                                       rows, D);
                 });
               });
           return std::vector<Tensor>{x_grad ? (x_low ? dx : dres) : Tensor(),
                                      res_grad ? dres : Tensor(), dw};
         });
  return r;
}

}  // namespace mg
