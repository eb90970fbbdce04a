// cuda/norm.h — the CUDA twins of ops/norm.h's RMSNorm and LayerNorm kernels (f32).
//
// Same signatures and math as mg::cpu::rms_norm_forward / _backward and
// layer_norm_forward / _backward (ops/norm.h derives them); device pointers; enqueued on
// mg::cuda::stream().
//
// Row work (y, rstd, mean, dx): one thread block per row (64, 128 or 256 threads, chosen from
// D only). The row statistics (sum x^2, mean, two-pass variance, and the backward's mean(g),
// mean(g xh)) are accumulated in double like the CPU: every thread sums a strided part, the
// warps reduce with shuffles and the warp sums are added in warp order — a fixed order, so
// the results are bitwise reproducible. The elementwise formulas are evaluated in f32 in the
// CPU's operation order with explicit round-to-nearest operations (no FMA contraction).
//
// Weight gradients (dw = sum_rows dy * xh, db = sum_rows dy): no atomics. Pass 1 splits the
// rows into a fixed number of chunks (a function of `rows` only); block (32 columns, 8
// row-threads) x (chunk) accumulates in double and adds its 8 partials in a fixed order.
// Pass 2 adds the chunk partials per column in chunk order. Deterministic in every mode.
#pragma once
#include <cstdint>

namespace mg::cuda {

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

}  // namespace mg::cuda
