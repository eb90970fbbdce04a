// ops/add_norm.h — the residual add fused with the RMSNorm that reads it (the reference's
// fused_add_norm: state-spaces mamba_ssm `Block`, `layer_norm_fn(..., residual=...,
// prenorm=True, residual_in_fp32=True)`).
//
// x, residual, y, s are (..., D), viewed as `rows` rows of D; weight is (D). Per row:
//
//   s  = residual + x                          (the new residual stream; residual undefined
//                                               means zero: s = x, the first layer)
//   r  = 1 / sqrt(mean_j(s_j^2) + eps)         (saved: rstd, one per row)
//   y  = (s r) * w                             (written in out_dtype)
//
// and both y and s are returned, or y alone (return_residual = false: the reference's
// prenorm=False, for the final norm, whose sum nothing else reads). Backward, with dy reaching
// y and ds reaching s (none without return_residual), g = dy * w, sh = s r (ops/norm.h's
// RMSNorm backward):
//
//   dn_i      = r (g_i - sh_i * mean_j(g_j sh_j))     the norm's input gradient
//   ds_tot_i  = ds_i + dn_i  (dn_i without ds)        everything s feeds
//   dresidual = ds_tot,   dx = ds_tot rounded to x's dtype
//   dw        = sum_rows dy * sh
//
// Why fused: unfused, every layer runs an add kernel (read x and residual, write s), a norm
// (read s, write y), under bf16 a widening of x before the add and a rounding of y inside the
// next linear; the backward an add of the two gradients of s and a rounding of dx. Fused,
// the forward reads x and residual once and writes s and y, the backward reads s, dy and ds
// once and writes dresidual and dx (docs/decisions.md, "Ops").
//
// Dtypes. The compute dtype T is the weight's (f32 or f64); residual and s are T, rstd and dw
// too. x is T or, for T = f32, bf16 (widened exactly on load); y is out_dtype: T or, for
// T = f32, bf16 (the next op is a bf16 GEMM: rounded to nearest even once, on store). So
// under mixed precision the residual stream stays f32 (the reference's residual_in_fp32) while
// the mixer's bf16 output goes in and the bf16 GEMM input comes out.
//
// Numerics: exactly ops/norm.h's RMSNorm on s (row statistics in double, the elementwise work
// in T with the saved r, dw in double over fixed row blocks added in block order), and
// s = residual + x, ds_tot = ds + dn are one T addition each: f32 results are bitwise those
// of the unfused rms_norm(residual + x) and its tape backward, for any thread count.
#pragma once
#include <cstdint>
#include <optional>

#include "core/bf16.h"
#include "core/tensor.h"

namespace mg {

namespace cpu {
// x (rows, D) of X; residual (rows, D) of T or null (zero); w (D); y (rows, D) of Y;
// s (rows, D) and rstd (rows), written. <T, X, Y>: <f64, f64, f64>, <f32, f32|bf16, f32|bf16>.
template <typename T, typename X, typename Y>
void add_rms_norm_forward(const X* x, const T* residual, const T* w, Y* y, T* s, T* rstd,
                          int64_t rows, int64_t D, T eps);
// s, ds (rows, D) of T, ds may be null (zero); dy (rows, D) of Y; w, dw (D); rstd (rows).
// Writes dresidual = ds + dn (rows, D) of T and dx = that rounded (rows, D) of X; any of
// dresidual, dx, dw may be null to skip it.
template <typename T, typename X, typename Y>
void add_rms_norm_backward(const T* s, const T* w, const T* rstd, const Y* dy, const T* ds,
                           T* dresidual, X* dx, T* dw, int64_t rows, int64_t D);
}  // namespace cpu

// The CUDA twins (cuda/add_norm.cu): the cpu:: kernels' arguments in the same order, T = f32,
// X and Y each float or bf16, device pointers, enqueued on the backend's stream. One kernel
// pass for the forward; one for the backward's rows (dresidual, dx and dw's per-chunk
// partials), then the chunk partials added in order. Declared in every build, defined (and
// instantiated for the four <X, Y>) only in a CUDA build (core/dispatch.h says why that links).
namespace cuda {
template <typename X, typename Y>
void add_rms_norm_forward(const X* x, const float* residual, const float* w, Y* y, float* s,
                          float* rstd, int64_t rows, int64_t D, float eps);
template <typename X, typename Y>
void add_rms_norm_backward(const float* s, const float* w, const float* rstd, const Y* dy,
                           const float* ds, float* dresidual, X* dx, float* dw, int64_t rows,
                           int64_t D);
}  // namespace cuda

struct AddNormResult {
  Tensor y;         // (..., D) rms_norm(residual + x) * w, in out_dtype
  Tensor residual;  // (..., D) s = residual + x, in the weight's dtype: the next layer's
                    // residual (undefined when return_residual is false)
};

// x (..., D) (the weight's dtype, or bf16 with an f32 weight); residual (..., D) of the
// weight's dtype, or undefined (zero); weight (D) f32 or f64; out_dtype: the weight's dtype
// (the default) or bf16 with an f32 weight; return_residual = false returns y alone (the
// sum is still computed and kept for the backward, but is no output: no gradient can reach
// it). CPU: f32, f64; CUDA: f32 (x, y f32 or bf16).
AddNormResult add_rms_norm(const Tensor& x, const Tensor& residual, const Tensor& weight,
                           double eps = 1e-5, std::optional<DType> out_dtype = std::nullopt,
                           bool return_residual = true);

}  // namespace mg
