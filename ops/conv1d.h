// ops/conv1d.h — causal depthwise 1-D convolution over time (the Mamba mixer's conv1d).
//
// Layout: channel-last. x and y are (B, L, C), the layout the in_proj linear produces, so the
// Mamba block feeds its x half straight in with no transpose. The weight keeps the
// checkpoint layout (C, 1, K) (PyTorch/Hugging Face `conv1d.weight`), bias is (C).
//
// Forward (per batch b, time t, channel c; K taps, x = 0 before t = 0):
//
//   y[b,t,c] = bias[c] + sum_{k=0}^{K-1} w[c,0,k] * x[b, t-(K-1)+k, c]
//
// Tap k = K-1 multiplies the current token, tap 0 the token K-1 steps back; y_t never sees
// x_{t+1}. This equals PyTorch's
//   Conv1d(C, C, K, groups=C, padding=K-1)(x.transpose(1, 2))[..., :L].transpose(1, 2)
// (padding K-1 on both sides, keep the first L outputs).
//
// Backward (dy = dL/dy, same shape as y). Each x[b,s,c] feeds y[b,t,c] for t = s+(K-1)-k:
//
//   dx[b,s,c] = sum_{k : s+(K-1)-k < L} w[c,0,k] * dy[b, s+(K-1)-k, c]
//   dw[c,0,k] = sum_{b,t} dy[b,t,c] * x[b, t-(K-1)+k, c]        (terms with negative time are 0)
//   dbias[c]  = sum_{b,t} dy[b,t,c]
//
// Saved for backward: x and w (nothing else; the op is linear in each of them).
//
// Kernels. The channel loop is innermost and contiguous, so it vectorises; the weight is
// transposed once to (K, C) for the same reason. y and dx are parallel over (b, t) rows,
// each row written by one thread. dw and dbias are parallel over channels: each thread owns
// whole channels and sums over (b, t) in a fixed order, so they are bitwise identical for any
// thread count. dw and dbias accumulate in double (also for f32 inputs, where they sum B*L
// products); y and dx sum only K terms and stay in T.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace mg {

namespace cpu {
// x (B, L, C), w (C, 1, K), bias (C) or null, y (B, L, C).
template <typename T>
void causal_conv1d_forward(const T* x, const T* w, const T* bias, T* y, int64_t B, int64_t L,
                           int64_t C, int64_t K);
// dx (B, L, C), dw (C, 1, K), dbias (C); any of the three may be null to skip it.
template <typename T>
void causal_conv1d_backward(const T* x, const T* w, const T* dy, T* dx, T* dw, T* dbias,
                            int64_t B, int64_t L, int64_t C, int64_t K);
// Mixed precision (docs/mixed_precision.md): bf16 x, y, dy, dx; f32 w, bias, dw, dbias. The
// reference: the f32 kernels on the exact widenings, y and dx rounded to bf16 once.
void causal_conv1d_forward_bf16(const bf16* x, const float* w, const float* bias, bf16* y,
                                int64_t B, int64_t L, int64_t C, int64_t K);
void causal_conv1d_backward_bf16(const bf16* x, const float* w, const bf16* dy, bf16* dx,
                                 float* dw, float* dbias, int64_t B, int64_t L, int64_t C,
                                 int64_t K);
}  // namespace cpu

// The CUDA twins (cuda/conv1d.cu): the cpu:: kernels' arguments in the same order, f32,
// device pointers, enqueued on the backend's stream. Declared in every build, defined only
// in a CUDA build (core/dispatch.h says why that links).
namespace cuda {
// x (B, L, C), w (C, 1, K), bias (C) or null, y (B, L, C).
void causal_conv1d_forward(const float* x, const float* w, const float* bias, float* y, int64_t B,
                           int64_t L, int64_t C, int64_t K);
// dx (B, L, C), dw (C, 1, K), dbias (C); any of the three may be null to skip it.
void causal_conv1d_backward(const float* x, const float* w, const float* dy, float* dx, float* dw,
                            float* dbias, int64_t B, int64_t L, int64_t C, int64_t K);
void causal_conv1d_forward_bf16(const bf16* x, const float* w, const float* bias, bf16* y,
                                int64_t B, int64_t L, int64_t C, int64_t K);
void causal_conv1d_backward_bf16(const bf16* x, const float* w, const bf16* dy, bf16* dx,
                                 float* dw, float* dbias, int64_t B, int64_t L, int64_t C,
                                 int64_t K);
}  // namespace cuda

// x (B, L, C), weight (C, 1, K), bias (C) or undefined -> y (B, L, C). CPU: f32, f64; CUDA: f32.
// A bf16 x (mixed precision) with f32 weight and bias: y bf16, through the _bf16 kernels.
Tensor causal_conv1d(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());

// ---- recurrent inference (one token at a time; no backward: the step throws if one is needed) -
// window (B, C, K): the last K inputs of each channel, newest at index K-1 (zeros before t = 0).
namespace cpu {
// x, y (B, C); w (C, 1, K); bias (C) or null; window (B, C, K) shifted and x appended in place.
template <typename T>
void causal_conv1d_step_forward(const T* x, const T* w, const T* bias, T* window, T* y,
                                int64_t B, int64_t C, int64_t K);
// x (B, L, C) -> window (B, C, K): its last K steps.
template <typename T>
void causal_conv1d_state_forward(const T* x, T* window, int64_t B, int64_t L, int64_t C,
                                 int64_t K);
}  // namespace cpu

// The CUDA twins (cuda/conv1d.cu): the same arguments, f32, device pointers, on the stream.
namespace cuda {
// x, y (B, C); w (C, 1, K); bias (C) or null; window (B, C, K) shifted and x appended in place.
void causal_conv1d_step_forward(const float* x, const float* w, const float* bias, float* window,
                                float* y, int64_t B, int64_t C, int64_t K);
// x (B, L, C) -> window (B, C, K): its last K steps.
void causal_conv1d_state_forward(const float* x, float* window, int64_t B, int64_t L, int64_t C,
                                 int64_t K);
}  // namespace cuda

// One token: x (B, C) is appended to `window` (B, C, K, updated in place) and y (B, C) is
// causal_conv1d's output at x's position of the sequence the window has seen.
Tensor causal_conv1d_step(const Tensor& x, const Tensor& weight, const Tensor& bias,
                          const Tensor& window);
// The window a step needs after the prefix x (B, L, C): (B, C, K), zeros in front when L < K.
Tensor causal_conv1d_state(const Tensor& x, int64_t K);

}  // namespace mg
