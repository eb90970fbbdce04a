// cuda/softmax.h — the CUDA twins of ops/softmax.h's kernels (f32 data, i32 targets, device
// pointers, enqueued on mg::cuda::stream()). The math is in ops/softmax.h.
//
// Over the last dim (inner = 1, the common case) one block of 256 threads handles a row:
// cub::BlockReduce for the max and for the sums (in double, fixed tree order, so results are
// deterministic); rows are spread over the grid. Over another dim one thread handles a
// strided slice, as the CPU does. cross_entropy: one block per row writes lse[r] and the row's
// loss (double, in a scratch buffer); one block then adds the row losses in a fixed order and
// divides by C. dloss is read on the device, so the backward needs no host sync.
//
// The one host sync: count_kept_targets validates the target ids on the GPU and reads back C
// and the first bad position (two integers), so that a bad id raises mg::Error instead of
// reading out of bounds.
#pragma once
#include <cstdint>

namespace mg::cuda {

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

}  // namespace mg::cuda
