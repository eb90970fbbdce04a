// ops/softmax.h — softmax, log_softmax and the cross-entropy loss.
//
// softmax and log_softmax work along one dimension `dim` (default the last; negative counts
// from the end), viewing x as (outer, n, inner) like the reductions in ops/reduce.h. For one
// slice x_k, k = 0..n-1, with m = max_k x_k (subtracted so that no exp overflows: every
// exponent is <= 0 and at least one term is 1, so the sum S lies in [1, n]):
//
//   S = sum_k exp(x_k - m)
//   softmax      y_k = exp(x_k - m) / S
//   log_softmax  y_k = x_k - m - log S
//
// Backward (saved: the output y only):
//   softmax      dx_k = y_k (dy_k - sum_j dy_j y_j)
//   log_softmax  dx_k = dy_k - exp(y_k) sum_j dy_j          (exp(y) is the softmax)
//
// cross_entropy(logits (N, V), targets (N) i32, ignore_index = -100) -> scalar:
//
//   lse_r = m_r + log sum_v exp(logits[r, v] - m_r)            (log-sum-exp of row r)
//   loss  = (1 / C) sum_{r : t_r != ignore_index} (lse_r - logits[r, t_r])
//   C     = #{r : t_r != ignore_index}
//   dlogits[r, v] = dloss (exp(logits[r, v] - lse_r) - [v == t_r]) / C    for kept rows
//   dlogits[r, v] = 0                                                      for ignored rows
//
// Saved for backward: logits, targets and lse (N). When every target is ignored (C = 0, or
// N = 0) the loss is 0 and its gradient is all zeros (PyTorch would return NaN); this keeps a
// batch made only of padding from poisoning a training run. A target outside [0, V) that is
// not ignore_index throws mg::Error naming the op, the bad id, its position and V.
//
// Numerics: sums (S, sum dy y, sum dy, the loss over rows) accumulate in double and are
// rounded once; every slice / row is computed by one thread in a fixed order, so results are
// bitwise the same for any thread count. Over the last dim (the common case) a slice is
// contiguous; over another dim it is read with stride inner, which is correct but several
// times slower (no tiling yet). exp(-inf - m) = 0, so -inf logits (masks) are fine as
// long as one entry of the slice is finite.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace mg {

namespace cpu {
template <typename T>
void softmax_forward(const T* x, T* y, int64_t outer, int64_t n, int64_t inner);
template <typename T>
void log_softmax_forward(const T* x, T* y, int64_t outer, int64_t n, int64_t inner);
// y is the forward's output.
template <typename T>
void softmax_backward(const T* y, const T* dy, T* dx, int64_t outer, int64_t n, int64_t inner);
template <typename T>
void log_softmax_backward(const T* y, const T* dy, T* dx, int64_t outer, int64_t n, int64_t inner);
// Writes loss[0] and lse[r] (0 for ignored rows). `count` = C, the number of kept rows; the
// targets must already be validated.
template <typename T>
void cross_entropy_forward(const T* logits, const int32_t* targets, T* loss, T* lse, int64_t N,
                           int64_t V, int32_t ignore_index, int64_t count);
// dlogits as above; dloss points at the one-element upstream gradient.
template <typename T>
void cross_entropy_backward(const T* logits, const int32_t* targets, const T* lse,
                            const T* dloss, T* dlogits, int64_t N, int64_t V,
                            int32_t ignore_index, int64_t count);
}  // namespace cpu

// The CUDA twins (cuda/softmax.cu): the cpu:: kernels' arguments in the same order, f32,
// device pointers, enqueued on the backend's stream. Declared in every build, defined only
// in a CUDA build (core/dispatch.h says why that links).
namespace cuda {
void softmax_forward(const float* x, float* y, int64_t outer, int64_t n, int64_t inner);
void log_softmax_forward(const float* x, float* y, int64_t outer, int64_t n, int64_t inner);
void softmax_backward(const float* y, const float* dy, float* dx, int64_t outer, int64_t n,
                      int64_t inner);
void log_softmax_backward(const float* y, const float* dy, float* dx, int64_t outer, int64_t n,
                          int64_t inner);

struct TargetCheck {
  int64_t count = 0;       // C: targets that are not ignore_index
  int64_t first_bad = -1;  // the first position whose id is outside [0, V) (and not ignored)
  int32_t bad_id = 0;      // the id found there
};
// Synchronises the stream (reads back the result).
TargetCheck count_kept_targets(const int32_t* targets, int64_t N, int64_t V, int32_t ignore_index);

void cross_entropy_forward(const float* logits, const int32_t* targets, float* loss, float* lse,
                           int64_t N, int64_t V, int32_t ignore_index, int64_t count);
void cross_entropy_backward(const float* logits, const int32_t* targets, const float* lse,
                            const float* dloss, float* dlogits, int64_t N, int64_t V,
                            int32_t ignore_index, int64_t count);
}  // namespace cuda

Tensor softmax(const Tensor& x, int64_t dim = -1);
Tensor log_softmax(const Tensor& x, int64_t dim = -1);
// Mean negative log-likelihood over the targets that are not ignore_index (0 if there are none).
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int32_t ignore_index = -100);

}  // namespace mg
