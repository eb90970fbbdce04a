// cuda/gelu.h — the CUDA twins of ops/gelu.h's kernels (f32, device pointers, enqueued on
// mg::cuda::stream(), no host sync). Same math as cpu::gelu_forward / cpu::gelu_backward, the
// exact (erf) form:
//   forward   y  = x Phi(x),                   Phi(x) = (1 + erf(x / sqrt 2)) / 2
//   backward  dx = dy (Phi(x) + x phi(x)),     phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
// libdevice erff/expf (no fast math), so results agree with the CPU to a few ulp.
#pragma once
#include <cstdint>

namespace mg::cuda {

void gelu_forward(const float* x, float* y, int64_t n);
void gelu_backward(const float* x, const float* dy, float* dx, int64_t n);

}  // namespace mg::cuda
