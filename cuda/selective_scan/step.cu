// cuda/selective_scan/step.cu — one token of the selective scan on the GPU (recurrent
// inference), the twin of cpu::selective_scan_step_forward (ops/selective_scan/step.cpp,
// declared in ops/selective_scan/kernels.h). Per (b, d), over the N states:
//   delta = softplus(delta_raw + bias);  h = exp(delta A) h + (delta u) B_t
//   y = (D u + <C_t, h>) * silu(z)
// The CUDA scans' scalar functions (common.cuh: libdevice expf/log1pf, the non-overflowing
// sigmoid), so a step continues a prefill made by the CUDA parallel scan with its numbers; the
// CPU step uses core/vmath.h's, so the two agree to f32 rounding, not bitwise.
//
// Parallelisation: a decode step at batch 1 has only ED (1536 for mamba-130m) channels, so one
// thread per channel would leave most of an H100 idle. Instead a group of G lanes (G = N
// rounded up to a power of two, at most 32) owns one (b, d): lane j updates the states
// n = j, j + G, ... (coalesced: the group reads its N contiguous floats of h), and the group
// adds its lanes' C_t h products with xor shuffles (a fixed tree: deterministic).
#include <cuda_runtime.h>

#include <algorithm>

#include "cuda/check.cuh"
#include "cuda/runtime.h"
#include "cuda/selective_scan/common.cuh"
#include "ops/selective_scan/kernels.h"

namespace mg::cuda {

using namespace scan_detail;

namespace {

constexpr int kStepThreads = 256;

// u, delta, z, y (B, ED); Bm, C (B, N); A (ED, N); D, delta_bias (ED); h0 (state in) and
// h_last (state out) (B, ED, N), possibly the same buffer (each element is read, then written,
// by the same lane). G lanes per (b, d); `groups` = B * ED.
__global__ void __launch_bounds__(kStepThreads)
    step_kernel(ScanArgs<float> a, int G, int64_t groups) {
  const int64_t tid = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  const int64_t i = tid / G;  // (b, d)
  const int lane = (int)(tid % G);
  const bool active = i < groups;
  const int64_t N = a.N;
  float part = 0.f, u = 0.f;
  if (active) {
    const int64_t b = i / a.ED, d = i % a.ED;
    u = a.u[i];
    const float r = a.delta[i] + (a.delta_bias ? a.delta_bias[d] : 0.f);
    const float dt = delta_of(r, a.delta_softplus), dtu = dt * u;
    const float* A_d = a.A + d * N;
    const float* B_t = a.Bm + b * N;
    const float* C_t = a.C + b * N;
    for (int64_t n = lane; n < N; n += G) {
      const float h_prev = a.h0 ? a.h0[i * N + n] : 0.f;
      const float h = fmaf(expf(dt * A_d[n]), h_prev, dtu * B_t[n]);
      a.h_last[i * N + n] = h;
      part = fmaf(C_t[n], h, part);
    }
  }
  // Sum the group's partials (groups are aligned G-lane slices of a warp; inactive lanes add 0).
  for (int off = G / 2; off > 0; off /= 2) part += __shfl_xor_sync(0xffffffffu, part, off, G);
  if (active && lane == 0) {
    const int64_t d = i % a.ED;
    float y = fmaf(a.D ? a.D[d] : 0.f, u, part);
    if (a.z) y *= a.z[i] * sigmoidf_(a.z[i]);  // silu(z)
    a.y[i] = y;
  }
}

}  // namespace

// a.L == 1; a.h0 = the state before the token (null: zeros), a.h_last = after it (required).
void selective_scan_step_forward(const ScanArgs<float>& a) {
  MG_CHECK(a.L == 1, "cuda selective_scan_step_forward: one token (L = 1), got L = ", a.L);
  MG_CHECK(a.h_last != nullptr, "cuda selective_scan_step_forward: h_last (the state) is required");
  const int64_t groups = a.B * a.ED;
  if (groups == 0) return;
  int G = 1;
  while (G < a.N && G < 32) G *= 2;
  const int64_t threads = groups * G;
  const unsigned grid = (unsigned)((threads + kStepThreads - 1) / kStepThreads);
  MG_CHECK(grid <= 0x7fffffffu, "cuda selective_scan_step_forward: B * ED = ", groups,
           " is too large for one launch");
  step_kernel<<<grid, kStepThreads, 0, cuda_stream()>>>(a, G, groups);
  check_launch("selective_scan_step_forward");
}

}  // namespace mg::cuda
