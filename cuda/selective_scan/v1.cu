// cuda/selective_scan.cu — the version switch, shared helpers, and v1: the direct port of the
// CPU loop (one thread per (batch, channel), the N states in registers). The plan of both
// versions is in cuda/selective_scan.h; v2 is in cuda/selective_scan_v2.cu; the math in
// ops/selective_scan.h.
#include "cuda/selective_scan.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>

#include "core/error.h"
#include "core/tensor.h"
#include "cuda/check.cuh"
#include "cuda/runtime.h"
#include "cuda/selective_scan/common.cuh"

namespace mg::cuda {

// ---- shared helpers -----------------------------------------------------------------------
namespace scan_detail {

Tensor scratch_empty(int64_t n) {
  int dev = 0;
  MG_CUDA_CHECK(cudaGetDevice(&dev));
  return Tensor::empty({std::max<int64_t>(n, 1)}, DType::f32, Device::cuda(dev));
}
Tensor scratch_zeros(int64_t n) {
  int dev = 0;
  MG_CUDA_CHECK(cudaGetDevice(&dev));
  return Tensor::zeros({std::max<int64_t>(n, 1)}, DType::f32, Device::cuda(dev));
}

namespace {
// out[k] = sum_b part[b * K + k] for k < K, in b order.
__global__ void sum_over_batch_kernel(const float* __restrict__ part, float* __restrict__ out,
                                      int64_t batch, int64_t K) {
  for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < K;
       k += (int64_t)gridDim.x * blockDim.x) {
    float s = 0.f;
    for (int64_t b = 0; b < batch; ++b) s += part[b * K + k];
    out[k] = s;
  }
}
void sum_over_batch(const float* part, float* out, int64_t batch, int64_t K) {
  if (!out || K == 0) return;
  Launch1d l = launch_1d(K);
  sum_over_batch_kernel<<<l.grid, l.block, 0, cuda_stream()>>>(part, out, batch, K);
  check_launch("selective_scan backward (parameter sums)");
}
}  // namespace

void reduce_param_partials(const float* dA_part, const float* dD_part, const float* dbias_part,
                           float* dA, float* dD, float* dbias, int64_t batch, int64_t ED,
                           int64_t N) {
  sum_over_batch(dA_part, dA, batch, ED * N);
  sum_over_batch(dD_part, dD, batch, ED);
  sum_over_batch(dbias_part, dbias, batch, ED);
}

}  // namespace scan_detail

using namespace scan_detail;

// ---- version switch and dispatch ------------------------------------------------------------
namespace {
std::atomic<ScanVersion> g_version{ScanVersion::v2};
}
ScanVersion scan_version() { return g_version.load(); }
void set_scan_version(ScanVersion v) { g_version.store(v); }
const char* scan_version_name(ScanVersion v) { return v == ScanVersion::v1 ? "v1" : "v2"; }

// Empty sizes, for both versions, with the CPU kernel's results (found in review: the versions
// returned early and left outputs unwritten): with L = 0 the scan is the identity on the state
// (h_last = h0, dh0 = dh_last, zeros where absent); the parameter gradients are sums over an
// empty range (B = 0 or L = 0), so zero.
namespace {
void copy_or_zero(float* dst, const float* src, int64_t n) {
  if (!dst || n == 0) return;
  if (src)
    MG_CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyDeviceToDevice, cuda_stream()));
  else
    MG_CUDA_CHECK(cudaMemsetAsync(dst, 0, n * sizeof(float), cuda_stream()));
}
}  // namespace

void selective_scan_fwd(const float* u, const float* delta, const float* A, const float* Bm,
                        const float* C, const float* D, const float* z, const float* delta_bias,
                        bool delta_softplus, const float* h0, float* y, float* h_last,
                        float* chunk_states, int64_t batch, int64_t length, int64_t channels,
                        int64_t states, int64_t chunk) {
  if (length == 0) {
    copy_or_zero(h_last, h0, batch * channels * states);
    return;
  }
  ScanFwdFn* f = scan_version() == ScanVersion::v1 ? selective_scan_fwd_v1 : selective_scan_fwd_v2;
  f(u, delta, A, Bm, C, D, z, delta_bias, delta_softplus, h0, y, h_last, chunk_states, batch,
    length, channels, states, chunk);
}

void selective_scan_bwd(const float* u, const float* delta, const float* A, const float* Bm,
                        const float* C, const float* D, const float* z, const float* delta_bias,
                        bool delta_softplus, const float* chunk_states, const float* dy,
                        const float* dh_last, float* du, float* ddelta, float* dA, float* dB,
                        float* dC, float* dD, float* dz, float* ddelta_bias, float* dh0,
                        int64_t batch, int64_t length, int64_t channels, int64_t states,
                        int64_t chunk) {
  if (batch == 0 || length == 0) {
    copy_or_zero(dA, nullptr, channels * states);
    copy_or_zero(dD, nullptr, channels);
    copy_or_zero(ddelta_bias, nullptr, channels);
    copy_or_zero(dh0, dh_last, batch * channels * states);
    return;
  }
  ScanBwdFn* f = scan_version() == ScanVersion::v1 ? selective_scan_bwd_v1 : selective_scan_bwd_v2;
  f(u, delta, A, Bm, C, D, z, delta_bias, delta_softplus, chunk_states, dy, dh_last, du, ddelta,
    dA, dB, dC, dD, dz, ddelta_bias, dh0, batch, length, channels, states, chunk);
}

ScanBytes scan_bytes_moved(int64_t B, int64_t L, int64_t ED, int64_t N, int64_t T, bool has_D,
                           bool has_z, bool has_bias, bool has_h0) {
  const double f = 4.0, BLE = double(B) * L * ED, BLN = double(B) * L * N, EN = double(ED) * N;
  const double state = double(B) * ED * N, saved = double(B) * ((L + T - 1) / T) * ED * N;
  const double vec = (has_D ? ED : 0) + (has_bias ? ED : 0);
  ScanBytes r;
  r.forward = f * ((2 + has_z) * BLE + 2 * BLN + EN + vec + (has_h0 ? state : 0)  // reads
                   + BLE + state + saved);                                        // writes
  r.backward = f * ((3 + has_z) * BLE + 2 * BLN + EN + vec + saved + state        // reads
                    + (2 + has_z) * BLE + 2 * BLN + EN + vec + (has_h0 ? state : 0));  // writes
  return r;
}

// ---- v1: one thread per (b, d) ----------------------------------------------------------------
namespace {

constexpr int kV1Threads = 128;

struct V1Args {
  const float *u, *delta, *A, *Bm, *C, *D, *z, *bias;
  bool softplus;
  int64_t B, L, ED, N, T, nc;
};

// Forward: the sequential spec, t by t, states h[0..N) in registers (NMAX >= N, every loop
// over n fully unrolled with a guard so the array is indexed by constants only).
template <int NMAX>
__global__ void __launch_bounds__(kV1Threads)
    v1_fwd_kernel(V1Args a, const float* __restrict__ h0, float* __restrict__ y,
                  float* __restrict__ h_last, float* __restrict__ states) {
  const int64_t bd = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (bd >= a.B * a.ED) return;
  const int64_t b = bd / a.ED, d = bd % a.ED, N = a.N;
  float h[NMAX], Ad[NMAX];
#pragma unroll
  for (int n = 0; n < NMAX; ++n) {
    h[n] = (n < N && h0) ? h0[bd * N + n] : 0.f;
    Ad[n] = n < N ? a.A[d * N + n] : 0.f;
  }
  const float bias = a.bias ? a.bias[d] : 0.f, Dd = a.D ? a.D[d] : 0.f;
  for (int64_t t = 0; t < a.L; ++t) {
    if (states && t % a.T == 0) {  // the state entering chunk t / T
      float* s = states + ((b * a.nc + t / a.T) * a.ED + d) * N;
#pragma unroll
      for (int n = 0; n < NMAX; ++n)
        if (n < N) s[n] = h[n];
    }
    const int64_t i = (b * a.L + t) * a.ED + d;
    const float ut = a.u[i], dt = delta_of(a.delta[i] + bias, a.softplus), dtu = dt * ut;
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
template <int NMAX>
__global__ void __launch_bounds__(kV1Threads)
    v1_bwd_chunk_kernel(V1Args a, int64_t c, const float* __restrict__ states,
                        const float* __restrict__ dy, float* __restrict__ du,
                        float* __restrict__ ddelta, float* __restrict__ dz,
                        float* __restrict__ carry, float* __restrict__ S_h,
                        float* __restrict__ S_dC, float* __restrict__ dA_part,
                        float* __restrict__ dD_part, float* __restrict__ dbias_part) {
  const int64_t BD = a.B * a.ED, bd = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (bd >= BD) return;
  const int64_t b = bd / a.ED, d = bd % a.ED, N = a.N;
  const int64_t t0 = c * a.T, len = a.T < a.L - t0 ? a.T : a.L - t0;
  const float bias = a.bias ? a.bias[d] : 0.f, Dd = a.D ? a.D[d] : 0.f;
  float Ad[NMAX], h[NMAX];
#pragma unroll
  for (int n = 0; n < NMAX; ++n) {
    Ad[n] = n < N ? a.A[d * N + n] : 0.f;
    h[n] = n < N ? states[((b * a.nc + c) * a.ED + d) * N + n] : 0.f;
    if (n < N) S_h[n * BD + bd] = h[n];
  }
  for (int64_t i = 0; i < len; ++i) {  // 1. replay
    const int64_t t = t0 + i, idx = (b * a.L + t) * a.ED + d;
    const float dt = delta_of(a.delta[idx] + bias, a.softplus), dtu = dt * a.u[idx];
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
    const float ut = a.u[idx], r = a.delta[idx] + bias, dt = delta_of(r, a.softplus);
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
    const float draw = fmaf(ut, sum_lB, ddt) * delta_grad_of(r, a.softplus);
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

// dB[b, t0+i, n] = sum_d S_h[(i+1, n, b*ED+d)], dC[..] = sum_d S_dC[(i, n, b*ED+d)], d in order.
__global__ void v1_sum_channels_kernel(const float* __restrict__ S_h, const float* __restrict__ S_dC,
                                       float* __restrict__ dB, float* __restrict__ dC, int64_t B,
                                       int64_t L, int64_t ED, int64_t N, int64_t t0, int64_t len) {
  const int64_t BD = B * ED, total = B * len * N;
  for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < total;
       k += (int64_t)gridDim.x * blockDim.x) {
    const int64_t n = k % N, i = (k / N) % len, b = k / (N * len);
    const float* pb = S_h + ((i + 1) * N + n) * BD + b * ED;
    const float* pc = S_dC + (i * N + n) * BD + b * ED;
    float sb = 0.f, sc = 0.f;
    for (int64_t d = 0; d < ED; ++d) {
      sb += pb[d];
      sc += pc[d];
    }
    dB[(b * L + t0 + i) * N + n] = sb;
    dC[(b * L + t0 + i) * N + n] = sc;
  }
}

int v1_state_slots(int64_t N) {
  MG_CHECK(N >= 1 && N <= 256, "selective_scan (CUDA v1): supports 1 <= N <= 256 states, got ",
           N);
  return N <= 16 ? 16 : N <= 64 ? 64 : 256;
}

}  // namespace

void selective_scan_fwd_v1(const float* u, const float* delta, const float* A, const float* Bm,
                           const float* C, const float* D, const float* z,
                           const float* delta_bias, bool delta_softplus, const float* h0,
                           float* y, float* h_last, float* chunk_states, int64_t batch,
                           int64_t length, int64_t channels, int64_t states, int64_t chunk) {
  MG_CHECK(chunk >= 1, "selective_scan (CUDA v1): chunk T must be >= 1, got ", chunk);
  if (batch == 0 || length == 0 || channels == 0) return;
  const int slots = v1_state_slots(states);
  V1Args a{u, delta, A, Bm, C, D, z, delta_bias, delta_softplus, batch, length, channels, states,
           chunk, (length + chunk - 1) / chunk};
  const unsigned grid = (unsigned)((batch * channels + kV1Threads - 1) / kV1Threads);
  cudaStream_t s = cuda_stream();
  if (slots == 16) v1_fwd_kernel<16><<<grid, kV1Threads, 0, s>>>(a, h0, y, h_last, chunk_states);
  else if (slots == 64) v1_fwd_kernel<64><<<grid, kV1Threads, 0, s>>>(a, h0, y, h_last, chunk_states);
  else v1_fwd_kernel<256><<<grid, kV1Threads, 0, s>>>(a, h0, y, h_last, chunk_states);
  check_launch("selective_scan_fwd (CUDA v1)");
}

void selective_scan_bwd_v1(const float* u, const float* delta, const float* A, const float* Bm,
                           const float* C, const float* D, const float* z,
                           const float* delta_bias, bool delta_softplus,
                           const float* chunk_states, const float* dy, const float* dh_last,
                           float* du, float* ddelta, float* dA, float* dB, float* dC, float* dD,
                           float* dz, float* ddelta_bias, float* dh0, int64_t batch,
                           int64_t length, int64_t channels, int64_t states, int64_t chunk) {
  MG_CHECK(chunk >= 1, "selective_scan (CUDA v1): chunk T must be >= 1, got ", chunk);
  if (batch == 0 || length == 0 || channels == 0) return;
  const int slots = v1_state_slots(states);
  const int64_t B = batch, L = length, ED = channels, N = states, T = chunk;
  const int64_t nc = (L + T - 1) / T, BD = B * ED, Tlen = std::min(T, L);
  V1Args a{u, delta, A, Bm, C, D, z, delta_bias, delta_softplus, B, L, ED, N, T, nc};
  cudaStream_t s = cuda_stream();
  // The adjoint carried between chunks: dh0 itself when requested (its final value), else scratch.
  Tensor carry_t = dh0 ? Tensor() : scratch_empty(BD * N);
  float* carry = dh0 ? dh0 : carry_t.data<float>();
  if (dh_last)
    MG_CUDA_CHECK(cudaMemcpyAsync(carry, dh_last, BD * N * sizeof(float),
                                  cudaMemcpyDeviceToDevice, s));
  else
    MG_CUDA_CHECK(cudaMemsetAsync(carry, 0, BD * N * sizeof(float), s));
  Tensor S_h = scratch_empty((Tlen + 1) * N * BD), S_dC = scratch_empty(Tlen * N * BD);
  Tensor parts = scratch_zeros(BD * (N + 2));
  float *dA_part = parts.data<float>(), *dD_part = dA_part + BD * N, *dbias_part = dD_part + BD;
  const unsigned grid = (unsigned)((BD + kV1Threads - 1) / kV1Threads);
  for (int64_t c = nc - 1; c >= 0; --c) {
    const int64_t len = std::min(T, L - c * T);
#define MG_V1_BWD(S)                                                                          \
  v1_bwd_chunk_kernel<S><<<grid, kV1Threads, 0, s>>>(                                         \
      a, c, chunk_states, dy, du, ddelta, dz, carry, S_h.data<float>(), S_dC.data<float>(),   \
      dA_part, dD_part, dbias_part)
    if (slots == 16) MG_V1_BWD(16);
    else if (slots == 64) MG_V1_BWD(64);
    else MG_V1_BWD(256);
#undef MG_V1_BWD
    check_launch("selective_scan_bwd (CUDA v1, chunk)");
    Launch1d l = launch_1d(B * len * N);
    v1_sum_channels_kernel<<<l.grid, l.block, 0, s>>>(S_h.data<float>(), S_dC.data<float>(), dB,
                                                       dC, B, L, ED, N, c * T, len);
    check_launch("selective_scan_bwd (CUDA v1, dB/dC sums)");
  }
  reduce_param_partials(dA_part, dD_part, dbias_part, dA, dD, ddelta_bias, B, ED, N);
}

}  // namespace mg::cuda
