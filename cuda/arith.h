// cuda/arith.h — the CUDA twins of ops/arith.h's kernels (f32, device pointers, enqueued on
// mg::cuda::stream(), no host sync). Broadcast kinds and the math are in ops/arith.h.
//   binary_forward (no broadcast), scalar_forward: one grid-stride map with float4 loads.
//   binary_forward (row / column broadcast): one thread per output element, o = e / inner.
//   sum_rows / sum_cols: the deterministic reductions of cuda/reduce.h (double accumulation,
//   fixed order), as sums over dim 0 of (outer, inner) and over dim 1 respectively.
#pragma once
#include <cstdint>

#include "ops/arith.h"  // BinaryOp, Broadcast

namespace mg::cuda {

void binary_forward(BinaryOp op, const float* a, const float* b, float* y, int64_t outer,
                    int64_t inner, Broadcast bc);
void scalar_forward(BinaryOp op, const float* a, float s, float* y, int64_t n, bool scalar_left);
void sum_rows(const float* x, float* y, int64_t outer, int64_t inner);
void sum_cols(const float* x, float* y, int64_t outer, int64_t inner);

}  // namespace mg::cuda
