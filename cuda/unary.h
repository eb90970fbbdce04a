// cuda/unary.h — the CUDA twins of ops/unary.h's kernels (f32, device pointers, enqueued on
// mg::cuda::stream(), no host sync). Same formulas as the CPU kernels (the spec): the same
// overflow-safe sigmoid and the softplus threshold 20; libdevice expf/logf/tanhf (no fast math),
// so results agree with the CPU to a few ulp.
#pragma once
#include <cstdint>

#include "ops/unary.h"  // UnaryOp

namespace mg::cuda {

void unary_forward(UnaryOp op, const float* x, float* y, int64_t n, float p);
void unary_backward(UnaryOp op, const float* x, const float* y, const float* dy, float* dx,
                    int64_t n, float p);

}  // namespace mg::cuda
