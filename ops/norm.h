// ops/norm.h — RMSNorm and LayerNorm over the last dimension (fused forward and backward).
//
// x is (..., D), viewed as `rows` rows of D; weight (and LayerNorm's bias) are (D). Every row
// is normalised on its own; the sums over a row are the row statistics.
//
// RMSNorm (the Mamba LM's norm: `rms_norm_ref` in state-spaces, HF `MambaRMSNorm`; no bias):
//
//   r  = 1 / sqrt(mean_j(x_j^2) + eps)          (saved: rstd, one per row)
//   xh = x r
//   y  = xh * w
//
// Backward, with g = dy * w (the gradient reaching xh). From dr/dx_i = -r^3 x_i / D:
//   dx_i = r g_i - (r^3 x_i / D) sum_j g_j x_j  =  r (g_i - xh_i * mean_j(g_j xh_j))
//   dw   = sum_rows dy * xh
//
// LayerNorm (as PyTorch: biased variance, eps inside the square root):
//
//   mu = mean_j(x_j),   var = mean_j((x_j - mu)^2),   r = 1 / sqrt(var + eps)   (saved: mean, rstd)
//   xh = (x - mu) r
//   y  = xh * w + b
//
// Backward, with g = dy * w. From d mu/dx_i = 1/D and dr/dx_i = -r^3 (x_i - mu) / D:
//   dx_i = r (g_i - mean_j(g_j) - xh_i * mean_j(g_j xh_j))
//   dw   = sum_rows dy * xh
//   db   = sum_rows dy
//
// Numerics: the row statistics (sum x^2, the mean, the two-pass variance, and the backward's
// mean(g), mean(g xh)) are accumulated in double for f32 inputs too; rstd and mean are then
// stored in T and the elementwise work is done in T with exactly the saved values, so forward
// and backward see the same r. dw and db are also accumulated in double.
//
// Parallelism and determinism: rows are split into nb fixed blocks (nb = min(ceil(rows/32),
// 128): a function of `rows` only, never of the thread count). Each block writes its own rows
// of y / dx and its own partial sums of dw, db; the partials are then added in block order.
// So every output is bitwise identical for any thread count.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace mg {

namespace cpu {
// x, y (rows, D); w (D); rstd (rows), written for backward.
template <typename T>
void rms_norm_forward(const T* x, const T* w, T* y, T* rstd, int64_t rows, int64_t D, T eps);
// dx (rows, D), dw (D); either may be null to skip it.
template <typename T>
void rms_norm_backward(const T* x, const T* w, const T* rstd, const T* dy, T* dx, T* dw,
                       int64_t rows, int64_t D);
// b may be null (no bias); mean and rstd (rows) are written for backward.
template <typename T>
void layer_norm_forward(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd,
                        int64_t rows, int64_t D, T eps);
// dx (rows, D), dw (D), db (D); any may be null to skip it.
template <typename T>
void layer_norm_backward(const T* x, const T* w, const T* mean, const T* rstd, const T* dy,
                         T* dx, T* dw, T* db, int64_t rows, int64_t D);
}  // namespace cpu

// The CUDA twins (cuda/norm.cu): the cpu:: kernels' arguments in the same order, f32,
// device pointers, enqueued on the backend's stream. Declared in every build, defined only
// in a CUDA build (core/dispatch.h says why that links).
namespace cuda {
void rms_norm_forward(const float* x, const float* w, float* y, float* rstd, int64_t rows,
                      int64_t D, float eps);
// dx (rows, D), dw (D); either may be null to skip it.
void rms_norm_backward(const float* x, const float* w, const float* rstd, const float* dy,
                       float* dx, float* dw, int64_t rows, int64_t D);
// b may be null (no bias); mean and rstd (rows) are written for backward.
void layer_norm_forward(const float* x, const float* w, const float* b, float* y, float* mean,
                        float* rstd, int64_t rows, int64_t D, float eps);
// dx (rows, D), dw (D), db (D); any may be null to skip it.
void layer_norm_backward(const float* x, const float* w, const float* mean, const float* rstd,
                         const float* dy, float* dx, float* dw, float* db, int64_t rows,
                         int64_t D);
}  // namespace cuda

// x (..., D), weight (D) -> (..., D). CPU: f32, f64; CUDA: f32.
Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps = 1e-5);
// x (..., D), weight (D), bias (D) or undefined -> (..., D). CPU: f32, f64; CUDA: f32.
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(),
                  double eps = 1e-5);

}  // namespace mg
