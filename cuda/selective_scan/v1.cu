// cuda/selective_scan/v1.cu — v1, the teaching port of the CPU loop: one thread per
// (batch, channel), the N states in registers (N <= 256; N > 64 spills to local memory), t
// sequential. The math is in ops/selective_scan/selective_scan.h, the arguments in
// scan_args.h, v2 (parallel along L, the default) in v2.cu; docs/cuda_scan.md compares them.
//
// Consecutive threads are consecutive channels, so u, delta, z, y loads of the (B, L, ED)
// layout are coalesced; B_t, C_t are warp-wide broadcasts. Backward: one launch per chunk of
// T steps (last first): replay the chunk's states from the saved boundary into a scratch
// (T+1, N, B*ED), run the adjoint backwards, write per-(b, d) dB/dC contributions to scratch
// and sum them over d in channel order (a second kernel): deterministic always, no atomics.
#include <cuda_runtime.h>

#include <algorithm>

#include "core/error.h"
#include "core/tensor.h"
#include "cuda/check.cuh"
#include "cuda/partial_sums.h"
#include "cuda/runtime.h"
#include "cuda/selective_scan/common.cuh"
#include "ops/selective_scan/kernels.h"

namespace mg::cuda {

using namespace scan_detail;

// ---- v1: one thread per (b, d) ----------------------------------------------------------------
namespace {

constexpr int kV1Threads = 128;

// The kernels read the sizes and inputs from `a` (by value) and take the outputs and scratch
// as __restrict__ parameters; nc = ceil(L / T), the saved states per (b, d).

// Forward: the sequential spec, t by t, states h[0..N) in registers (NMAX >= N, every loop
// over n fully unrolled with a guard so the array is indexed by constants only).
// a: the ScanArgs layouts; h0, h_last: (B, ED, N); y: (B, L, ED); states: (B, nc, ED, N).
template <int NMAX>
__global__ void __launch_bounds__(kV1Threads)
    v1_fwd_kernel(ScanArgs<float> a, int64_t nc, const float* __restrict__ h0,
                  float* __restrict__ y, float* __restrict__ h_last, float* __restrict__ states) {
  const int64_t bd = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (bd >= a.B * a.ED) return;
  const int64_t b = bd / a.ED, d = bd % a.ED, N = a.N;
  float h[NMAX], Ad[NMAX];
#pragma unroll
  for (int n = 0; n < NMAX; ++n) {
    h[n] = (n < N && h0) ? h0[bd * N + n] : 0.f;
    Ad[n] = n < N ? a.A[d * N + n] : 0.f;
  }
  const float bias = a.delta_bias ? a.delta_bias[d] : 0.f, Dd = a.D ? a.D[d] : 0.f;
  for (int64_t t = 0; t < a.L; ++t) {
    if (states && t % a.T == 0) {  // the state entering chunk t / T
      float* s = states + ((b * nc + t / a.T) * a.ED + d) * N;
#pragma unroll
      for (int n = 0; n < NMAX; ++n)
        if (n < N) s[n] = h[n];
    }
    const int64_t i = (b * a.L + t) * a.ED + d;
    const float ut = a.u[i], dt = delta_of(a.delta[i] + bias, a.delta_softplus), dtu = dt * ut;
    const float* Bt = a.Bm + (b * a.L + t) * N;
    const float* Ct = a.C + (b * a.L + t) * N;
    float yt = 0.f;
#pragma unroll
    for (int n = 0; n < NMAX; ++n)
      if (n < N) {
        h[n] = fmaf(expf(dt * Ad[n]), h[n], dtu * Bt[n]);  // h_t = A_bar h_{t-1} + delta u B_t
        yt = fmaf(Ct[n], h[n], yt);                        // <C_t, h_t>
      }
    yt = fmaf(Dd, ut, yt);
    if (a.z) yt *= a.z[i] * sigmoidf_(a.z[i]);  // silu(z_t)
    y[i] = yt;
  }
  if (h_last) {
#pragma unroll
    for (int n = 0; n < NMAX; ++n)
      if (n < N) h_last[bd * N + n] = h[n];
  }
}

// Backward of chunk c (steps t0 .. t0+len-1) for every (b, d), one thread each.
//   1. replay the chunk from its saved entering state: S_h[(i, n, bd)] = h_{t0+i-1}, i = 0..len;
//   2. the adjoint, i = len-1 .. 0, from mu = A_bar_{t+1} lambda_{t+1} (carried in `carry`):
//      lambda = g C_t + mu; dC contribution g h_t -> S_dC[(i, n, bd)]; dB contribution
//      lambda delta u -> S_h[(i+1, n, bd)] (h_t is not needed any more); du, ddelta, dz
//      written; dA, dD, d(bias) accumulated into per-(b, d) partials.
// The scratch layout (row, n, bd) puts consecutive threads on consecutive addresses.
// a: the ScanArgs layouts; states: (B, nc, ED, N); dy, du, ddelta, dz: (B, L, ED);
// carry: (B, ED, N); S_h: (T+1, N, B*ED); S_dC: (T, N, B*ED); dA_part: (B, ED, N);
// dD_part, dbias_part: (B, ED).
template <int NMAX>
__global__ void __launch_bounds__(kV1Threads)
    v1_bwd_chunk_kernel(ScanArgs<float> a, int64_t nc, int64_t c,
                        const float* __restrict__ states,
                        const float* __restrict__ dy, float* __restrict__ du,
                        float* __restrict__ ddelta, float* __restrict__ dz,
                        float* __restrict__ carry, float* __restrict__ S_h,
                        float* __restrict__ S_dC, float* __restrict__ dA_part,
                        float* __restrict__ dD_part, float* __restrict__ dbias_part) {
  const int64_t BD = a.B * a.ED, bd = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (bd >= BD) return;
  const int64_t b = bd / a.ED, d = bd % a.ED, N = a.N;
  const int64_t t0 = c * a.T, len = a.T < a.L - t0 ? a.T : a.L - t0;
  const float bias = a.delta_bias ? a.delta_bias[d] : 0.f, Dd = a.D ? a.D[d] : 0.f;
  float Ad[NMAX], h[NMAX];
#pragma unroll
  for (int n = 0; n < NMAX; ++n) {
    Ad[n] = n < N ? a.A[d * N + n] : 0.f;
    h[n] = n < N ? states[((b * nc + c) * a.ED + d) * N + n] : 0.f;
    if (n < N) S_h[n * BD + bd] = h[n];
  }
  for (int64_t i = 0; i < len; ++i) {  // 1. replay
    const int64_t t = t0 + i, idx = (b * a.L + t) * a.ED + d;
    const float dt = delta_of(a.delta[idx] + bias, a.delta_softplus), dtu = dt * a.u[idx];
    const float* Bt = a.Bm + (b * a.L + t) * N;
#pragma unroll
    for (int n = 0; n < NMAX; ++n)
      if (n < N) {
        h[n] = fmaf(expf(dt * Ad[n]), h[n], dtu * Bt[n]);
        S_h[((i + 1) * N + n) * BD + bd] = h[n];
      }
  }
  float mu[NMAX], dA_acc[NMAX];  // h is dead from here on: the registers are reused
#pragma unroll
  for (int n = 0; n < NMAX; ++n) {
    mu[n] = n < N ? carry[bd * N + n] : 0.f;
    dA_acc[n] = 0.f;
  }
  float dD_acc = 0.f, dbias_acc = 0.f;
  for (int64_t i = len - 1; i >= 0; --i) {  // 2. the adjoint
    const int64_t t = t0 + i, idx = (b * a.L + t) * a.ED + d;
    const float ut = a.u[idx], r = a.delta[idx] + bias, dt = delta_of(r, a.delta_softplus);
    const float* Bt = a.Bm + (b * a.L + t) * N;
    const float* Ct = a.C + (b * a.L + t) * N;
    const float* h_t = S_h + (i + 1) * N * BD + bd;  // h_t[n * BD]
    const float* h_prev = S_h + i * N * BD + bd;
    float g = dy[idx];
    if (a.z) {  // out = y_pre silu(z): dz, and g = dL/dy_pre
      float y_pre = Dd * ut;
#pragma unroll
      for (int n = 0; n < NMAX; ++n)
        if (n < N) y_pre = fmaf(Ct[n], h_t[n * BD], y_pre);
      const float zt = a.z[idx], s = sigmoidf_(zt);
      dz[idx] = g * y_pre * s * (1.f + zt * (1.f - s));
      g = g * zt * s;
    }
    dD_acc = fmaf(g, ut, dD_acc);
    float sum_lB = 0.f, ddt = 0.f;
#pragma unroll
    for (int n = 0; n < NMAX; ++n)
      if (n < N) {
        const float lambda = fmaf(g, Ct[n], mu[n]);  // dL/dh_t
        const float A_bar = expf(dt * Ad[n]);
        const float lam_Abar_h = lambda * (A_bar * h_prev[n * BD]);
        S_dC[(i * N + n) * BD + bd] = g * h_t[n * BD];
        S_h[((i + 1) * N + n) * BD + bd] = lambda * (dt * ut);  // dB contribution
        sum_lB = fmaf(lambda, Bt[n], sum_lB);
        ddt = fmaf(lam_Abar_h, Ad[n], ddt);
        dA_acc[n] = fmaf(lam_Abar_h, dt, dA_acc[n]);
        mu[n] = A_bar * lambda;
      }
    du[idx] = fmaf(dt, sum_lB, Dd * g);
    const float draw = fmaf(ut, sum_lB, ddt) * delta_grad_of(r, a.delta_softplus);
    ddelta[idx] = draw;
    dbias_acc += draw;
  }
#pragma unroll
  for (int n = 0; n < NMAX; ++n)
    if (n < N) {
      carry[bd * N + n] = mu[n];
      dA_part[bd * N + n] += dA_acc[n];
    }
  dD_part[bd] += dD_acc;
  dbias_part[bd] += dbias_acc;
}

int v1_state_slots(int64_t N) {
  MG_CHECK(N >= 1 && N <= 256, "selective_scan (CUDA v1): supports 1 <= N <= 256 states, got ",
           N);
  return N <= 16 ? 16 : N <= 64 ? 64 : 256;
}

}  // namespace

// u, delta, z, y: (B, L, ED); Bm, C: (B, L, N); A: (ED, N); D, delta_bias: (ED);
// h0, h_last: (B, ED, N); chunk_states: (B, ceil(L/T), ED, N). Device pointers.
void selective_scan_forward_v1(const ScanArgs<float>& a) {
  if (forward_if_empty(a)) return;
  MG_CHECK(a.T >= 1, "selective_scan (CUDA v1): chunk T must be >= 1, got ", a.T);
  if (a.B == 0 || a.L == 0 || a.ED == 0) return;
  const int slots = v1_state_slots(a.N);
  const int64_t nc = scan_num_chunks(a.L, a.T);
  const unsigned grid = (unsigned)((a.B * a.ED + kV1Threads - 1) / kV1Threads);
  cudaStream_t s = cuda_stream();
#define MG_V1_FWD(S) \
  v1_fwd_kernel<S><<<grid, kV1Threads, 0, s>>>(a, nc, a.h0, a.y, a.h_last, a.chunk_states)
  if (slots == 16) MG_V1_FWD(16);
  else if (slots == 64) MG_V1_FWD(64);
  else MG_V1_FWD(256);
#undef MG_V1_FWD
  check_launch("selective_scan_forward (CUDA v1)");
}

// The forward's layouts; dy, du, ddelta, dz: (B, L, ED); dB, dC: (B, L, N); dA: (ED, N);
// dD, ddelta_bias: (ED); dh_last, dh0: (B, ED, N). Device pointers.
void selective_scan_backward_v1(const ScanArgs<float>& a, const ScanGrads<float>& g) {
  if (backward_if_empty(a, g)) return;
  MG_CHECK(a.T >= 1, "selective_scan (CUDA v1): chunk T must be >= 1, got ", a.T);
  if (a.B == 0 || a.L == 0 || a.ED == 0) return;
  const int slots = v1_state_slots(a.N);
  const int64_t B = a.B, L = a.L, ED = a.ED, N = a.N, T = a.T;
  const int64_t nc = scan_num_chunks(L, T), BD = B * ED, Tlen = std::min(T, L);
  cudaStream_t s = cuda_stream();
  // The adjoint carried between chunks: dh0 itself when requested (its final value), else scratch.
  Tensor carry_t = g.dh0 ? Tensor() : scratch_empty(BD * N);
  float* carry = g.dh0 ? g.dh0 : carry_t.data<float>();
  if (g.dh_last)
    MG_CUDA_CHECK(cudaMemcpyAsync(carry, g.dh_last, BD * N * sizeof(float),
                                  cudaMemcpyDeviceToDevice, s));
  else
    MG_CUDA_CHECK(cudaMemsetAsync(carry, 0, BD * N * sizeof(float), s));
  Tensor S_h = scratch_empty((Tlen + 1) * N * BD), S_dC = scratch_empty(Tlen * N * BD);
  Tensor parts = scratch_zeros(BD * (N + 2));
  float *dA_part = parts.data<float>(), *dD_part = dA_part + BD * N, *dbias_part = dD_part + BD;
  const unsigned grid = (unsigned)((BD + kV1Threads - 1) / kV1Threads);
  for (int64_t c = nc - 1; c >= 0; --c) {
    const int64_t len = std::min(T, L - c * T);
#define MG_V1_BWD(S)                                                                            \
  v1_bwd_chunk_kernel<S><<<grid, kV1Threads, 0, s>>>(                                           \
      a, nc, c, a.chunk_states, g.dy, g.du, g.ddelta, g.dz, carry, S_h.data<float>(),           \
      S_dC.data<float>(), dA_part, dD_part, dbias_part)
    if (slots == 16) MG_V1_BWD(16);
    else if (slots == 64) MG_V1_BWD(64);
    else MG_V1_BWD(256);
#undef MG_V1_BWD
    check_launch("selective_scan_backward (CUDA v1, chunk)");
    // dB[b, t0+i, n] = sum_d S_h[(i+1, n, b*ED+d)], dC[..] = sum_d S_dC[(i, n, b*ED+d)], d in
    // order (cuda/partial_sums.h). S_h: (T+1, N, B*ED); S_dC: (T, N, B*ED); dB, dC: (B, L, N).
    const int64_t BD = B * ED, t0 = c * T;
    const PartialsLayout per_channel{.groups = B, .n = len * N, .parts = ED, .part_group = ED,
                                     .part_stride = 1, .part_elem = BD, .out_group = L * N};
    sum_partials(S_h.data<float>() + N * BD, g.dB + t0 * N, per_channel, false,
                 "selective_scan_backward (CUDA v1, dB sums)");
    sum_partials(S_dC.data<float>(), g.dC + t0 * N, per_channel, false,
                 "selective_scan_backward (CUDA v1, dC sums)");
  }
  reduce_param_partials(dA_part, dD_part, dbias_part, g.dA, g.dD, g.ddelta_bias, B, ED, N);
}

}  // namespace mg::cuda
