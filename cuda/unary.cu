// cuda/unary.cu — the CUDA twins of ops/unary.h's kernels (declared there, with the math).
// f32, device pointers, enqueued on the stream, no host sync. Every op is one grid-stride map
// (cuda/check.cuh: float4 loads where aligned). Same formulas as the CPU kernels (the spec):
// the same overflow-safe sigmoid and the softplus threshold 20; libdevice expf/logf/tanhf (no
// fast math), so results agree with the CPU to a few ulp. The bf16 forms (mixed precision) run
// the same maps on bf16 storage (cuda/check.cuh): compiled, not yet run on a GPU.
#include "ops/unary.h"

#include "cuda/check.cuh"

namespace mg::cuda {

namespace {

__device__ __forceinline__ float sigmoid_of(float x) {
  if (x >= 0.f) return 1.f / (1.f + expf(-x));
  float e = expf(x);
  return e / (1.f + e);
}
constexpr float kSoftplusThreshold = 20.f;

}  // namespace

// x, y (n): y = f(x). E: float, or bf16 (mixed precision: read widened, written rounded).
template <typename E>
static void unary_forward_impl(UnaryOp op, const E* x, E* y, int64_t n, float p) {
  const char* name = "unary_forward";
  switch (op) {
    case UnaryOp::exp:  launch_map(name, x, nullptr, nullptr, y, n, [] __device__(float v, float, float) { return expf(v); }); break;
    case UnaryOp::log:  launch_map(name, x, nullptr, nullptr, y, n, [] __device__(float v, float, float) { return logf(v); }); break;
    case UnaryOp::sqrt: launch_map(name, x, nullptr, nullptr, y, n, [] __device__(float v, float, float) { return sqrtf(v); }); break;
    case UnaryOp::rsqrt: launch_map(name, x, nullptr, nullptr, y, n, [] __device__(float v, float, float) { return 1.f / sqrtf(v); }); break;
    case UnaryOp::pow:  launch_map(name, x, nullptr, nullptr, y, n, [p] __device__(float v, float, float) { return powf(v, p); }); break;
    case UnaryOp::sigmoid: launch_map(name, x, nullptr, nullptr, y, n, [] __device__(float v, float, float) { return sigmoid_of(v); }); break;
    case UnaryOp::silu: launch_map(name, x, nullptr, nullptr, y, n, [] __device__(float v, float, float) { return v * sigmoid_of(v); }); break;
    case UnaryOp::softplus:
      launch_map(name, x, nullptr, nullptr, y, n, [] __device__(float v, float, float) {
        return v > kSoftplusThreshold ? v : log1pf(expf(v));
      });
      break;
    case UnaryOp::tanh: launch_map(name, x, nullptr, nullptr, y, n, [] __device__(float v, float, float) { return tanhf(v); }); break;
    case UnaryOp::relu: launch_map(name, x, nullptr, nullptr, y, n, [] __device__(float v, float, float) { return v > 0.f ? v : 0.f; }); break;
  }
}

// The map's three inputs are (x, y, dy), in that order.
template <typename E>
static void unary_backward_impl(UnaryOp op, const E* x, const E* y, const E* dy, E* dx,
                                int64_t n, float p) {
  const char* name = "unary_backward";
  switch (op) {
    case UnaryOp::exp:  launch_map(name, x, y, dy, dx, n, [] __device__(float, float yv, float d) { return d * yv; }); break;
    case UnaryOp::log:  launch_map(name, x, y, dy, dx, n, [] __device__(float xv, float, float d) { return d / xv; }); break;
    case UnaryOp::sqrt: launch_map(name, x, y, dy, dx, n, [] __device__(float, float yv, float d) { return d / (2.f * yv); }); break;
    case UnaryOp::rsqrt: launch_map(name, x, y, dy, dx, n, [] __device__(float, float yv, float d) { return -0.5f * d * yv * yv * yv; }); break;
    case UnaryOp::pow:  launch_map(name, x, y, dy, dx, n, [p] __device__(float xv, float, float d) { return d * p * powf(xv, p - 1.f); }); break;
    case UnaryOp::sigmoid: launch_map(name, x, y, dy, dx, n, [] __device__(float, float yv, float d) { return d * yv * (1.f - yv); }); break;
    case UnaryOp::silu:
      launch_map(name, x, y, dy, dx, n, [] __device__(float xv, float, float d) {
        float s = sigmoid_of(xv);
        return d * s * (1.f + xv * (1.f - s));
      });
      break;
    case UnaryOp::softplus:
      launch_map(name, x, y, dy, dx, n, [] __device__(float xv, float, float d) {
        return xv > kSoftplusThreshold ? d : d * sigmoid_of(xv);
      });
      break;
    case UnaryOp::tanh: launch_map(name, x, y, dy, dx, n, [] __device__(float, float yv, float d) { return d * (1.f - yv * yv); }); break;
    case UnaryOp::relu: launch_map(name, x, y, dy, dx, n, [] __device__(float xv, float, float d) { return xv > 0.f ? d : 0.f; }); break;
  }
}

void unary_forward(UnaryOp op, const float* x, float* y, int64_t n, float p) {
  unary_forward_impl(op, x, y, n, p);
}
void unary_backward(UnaryOp op, const float* x, const float* y, const float* dy, float* dx,
                    int64_t n, float p) {
  unary_backward_impl(op, x, y, dy, dx, n, p);
}
void unary_forward_bf16(UnaryOp op, const bf16* x, bf16* y, int64_t n, float p) {
  unary_forward_impl(op, x, y, n, p);
}
void unary_backward_bf16(UnaryOp op, const bf16* x, const bf16* y, const bf16* dy, bf16* dx,
                         int64_t n, float p) {
  unary_backward_impl(op, x, y, dy, dx, n, p);
}

}  // namespace mg::cuda
