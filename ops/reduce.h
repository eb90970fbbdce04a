// ops/reduce.h — sum, mean and max, over all elements or over one dimension.
//
// A reduction over dimension `dim` views x as (outer, n, inner): n = x.shape[dim], outer the
// product of the sizes before it, inner the product of those after it. The output y has shape
// (outer, inner) laid out as x's shape with `dim` removed (keepdim=false) or set to 1
// (keepdim=true); both have the same memory layout. A full reduction is the case outer =
// inner = 1, n = numel(x), and returns a scalar of shape {}. Negative dims count from the end.
//
//   op     forward                                    backward
//   sum    y[o,i] = sum_k x[o,k,i]                    dx[o,k,i] = dy[o,i]
//   mean   y[o,i] = (1/n) sum_k x[o,k,i]              dx[o,k,i] = dy[o,i] / n
//   max    y[o,i] = x[o,k*,i], k* = first argmax_k    dx[o,k,i] = dy[o,i] if k == k*, else 0
//
// max saves k* (as i32, so n must be < 2^31) for its backward: the gradient goes to the FIRST
// maximum of each reduced slice only (a subgradient; ties do not split it). NaN counts as
// larger than every number, so a slice holding NaN gives NaN (the first one), as in PyTorch.
//
// Numerics and determinism: sums accumulate in double (for f32 and f64) and are rounded once.
// A dim reduction is parallel over the outer*inner outputs; each output is summed by one
// thread in a fixed order (k = 0..n-1; over the last dim, four interleaved lanes k % 4 added
// as (l0 + l1) + (l2 + l3), which breaks the chain of dependent adds). A full sum adds fixed
// blocks of kSumBlock elements (each the same way, in parallel) and then the block sums in
// order. Either way the result is bitwise the same for any thread count.
//
// Empty slices: sum gives 0, mean gives NaN (0/0), max throws mg::Error (no maximum).
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace mg {

// Full sums add blocks of this many elements; the grouping is fixed so results never depend
// on the thread count.
constexpr int64_t kSumBlock = 4096;

namespace cpu {
// y[o,i] = (sum_k x[o,k,i]) / divisor   (divisor 1 for sum, n for mean)
template <typename T>
void sum_forward(const T* x, T* y, int64_t outer, int64_t n, int64_t inner, double divisor);
// y[0] = (sum_j x[j]) / divisor, summed in blocks of kSumBlock.
template <typename T>
void sum_all_forward(const T* x, T* y, int64_t n, double divisor);
// dx[o,k,i] = dy[o,i] / divisor
template <typename T>
void sum_backward(const T* dy, T* dx, int64_t outer, int64_t n, int64_t inner, double divisor);
// y[o,i] = max_k x[o,k,i]; argmax[o,i] = the first k attaining it.
template <typename T>
void max_forward(const T* x, T* y, int32_t* argmax, int64_t outer, int64_t n, int64_t inner);
// y[0] = max_j x[j]; argmax[0] = the first j attaining it (blocks of kSumBlock, combined in order).
template <typename T>
void max_all_forward(const T* x, T* y, int32_t* argmax, int64_t n);
// dx[o,k,i] = dy[o,i] if k == argmax[o,i], else 0 (writes every element of dx).
template <typename T>
void max_backward(const T* dy, const int32_t* argmax, T* dx, int64_t outer, int64_t n,
                  int64_t inner);
}  // namespace cpu

// The CUDA twins (cuda/reduce.cu): the cpu:: kernels' arguments in the same order, f32,
// device pointers, enqueued on the backend's stream. Declared in every build, defined only
// in a CUDA build (core/dispatch.h says why that links).
namespace cuda {
void sum_forward(const float* x, float* y, int64_t outer, int64_t n, int64_t inner, double divisor);
void sum_all_forward(const float* x, float* y, int64_t n, double divisor);
void sum_backward(const float* dy, float* dx, int64_t outer, int64_t n, int64_t inner, double divisor);
void max_forward(const float* x, float* y, int32_t* argmax, int64_t outer, int64_t n, int64_t inner);
void max_all_forward(const float* x, float* y, int32_t* argmax, int64_t n);
void max_backward(const float* dy, const int32_t* argmax, float* dx, int64_t outer, int64_t n,
                  int64_t inner);
}  // namespace cuda

// (outer, n, inner) of a reduction of `x` over `dim` (negative counts from the end). Throws
// mg::Error naming `op` and x's shape when dim is out of range. Shared by the softmax family.
struct ReduceView {
  int64_t dim, outer, n, inner;
};
ReduceView reduce_view(const char* op, const Tensor& x, int64_t dim);

Tensor sum(const Tensor& x);                                   // -> shape {}
Tensor sum(const Tensor& x, int64_t dim, bool keepdim = false);
Tensor mean(const Tensor& x);                                  // -> shape {}
Tensor mean(const Tensor& x, int64_t dim, bool keepdim = false);
Tensor max(const Tensor& x);                                   // -> shape {}
Tensor max(const Tensor& x, int64_t dim, bool keepdim = false);

}  // namespace mg
