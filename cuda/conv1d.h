// cuda/conv1d.h — the CUDA twins of ops/conv1d.h's causal depthwise conv1d kernels (f32).
//
// Same signatures and math as mg::cpu::causal_conv1d_forward / _backward (channel-last
// x, y (B, L, C); w (C, 1, K); bias (C)); device pointers; enqueued on mg::cuda::stream().
//
// Forward and dx: one thread per (b, t, c) element, c fastest, so a warp reads and writes
// 32 consecutive channels (coalesced); each thread sums its K taps in the CPU's tap order.
//
// dw and dbias (sums over all B*L rows per channel) are deterministic, with no atomics:
//   pass 1: the rows are split into a fixed number of chunks (a function of B*L only);
//           block (32 channels, 8 row-threads) x (chunk) x (tap k, or k = K for the bias) sums
//           its rows in double and adds its 8 row-thread partials in a fixed order;
//   pass 2: one thread per (channel, tap) adds the chunk partials in chunk order.
// Accumulation in double, as on the CPU.
#pragma once
#include <cstdint>

namespace mg::cuda {

// x (B, L, C), w (C, 1, K), bias (C) or null, y (B, L, C).
void causal_conv1d_forward(const float* x, const float* w, const float* bias, float* y, int64_t B,
                           int64_t L, int64_t C, int64_t K);
// dx (B, L, C), dw (C, 1, K), dbias (C); any of the three may be null to skip it.
void causal_conv1d_backward(const float* x, const float* w, const float* dy, float* dx, float* dw,
                            float* dbias, int64_t B, int64_t L, int64_t C, int64_t K);

}  // namespace mg::cuda
