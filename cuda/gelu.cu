// cuda/gelu.cu — the CUDA twins of ops/gelu.h's kernels (declared there, with the math):
//   forward   y  = x Phi(x),                   Phi(x) = (1 + erf(x / sqrt 2)) / 2
//   backward  dx = dy (Phi(x) + x phi(x)),     phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
// f32, device pointers, enqueued on the stream, no host sync. Each is one grid-stride
// elementwise map (cuda/check.cuh: float4 loads where aligned). libdevice erff/expf (no fast
// math), so results agree with the CPU to a few ulp.
#include "ops/gelu.h"

#include "cuda/check.cuh"

namespace mg::cuda {

namespace {
// The CPU kernel's constants, rounded to float as the CPU's f32 path rounds them (T(k)).
constexpr float kInvSqrt2 = 0.70710678118654752440f;
constexpr float kInvSqrt2Pi = 0.39894228040143267794f;
}  // namespace

// x, y (n).
void gelu_forward(const float* x, float* y, int64_t n) {
  launch_map("gelu_forward", x, nullptr, nullptr, y, n, [] __device__(float v, float, float) {
    float phi_cdf = 0.5f * (1.f + erff(v * kInvSqrt2));  // Phi(x)
    return v * phi_cdf;
  });
}

// The map's inputs are (x, dy); the third is unused.
void gelu_backward(const float* x, const float* dy, float* dx, int64_t n) {
  launch_map("gelu_backward", x, dy, nullptr, dx, n, [] __device__(float v, float d, float) {
    float phi_cdf = 0.5f * (1.f + erff(v * kInvSqrt2));   // Phi(x)
    float phi_pdf = kInvSqrt2Pi * expf(-0.5f * v * v);    // phi(x)
    return d * (phi_cdf + v * phi_pdf);
  });
}

}  // namespace mg::cuda
