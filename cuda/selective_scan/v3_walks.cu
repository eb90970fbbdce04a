// cuda/selective_scan/v3_walks.cu — v3's thread-per-channel kernels: the walks (walk_local,
// walk, the re-derivation), the combine over segments (both directions) and bwd_local. The
// design is in cuda/selective_scan/v3.cuh; the math in ops/selective_scan.h.
#include <cuda_runtime.h>

#include <type_traits>

#include "core/error.h"
#include "cuda/check.cuh"
#include "cuda/runtime.h"
#include "cuda/selective_scan/v3.cuh"

namespace mg::cuda::v3 {
namespace {

// ---- the walks ----------------------------------------------------------------------------
// Block: kWalkThreads consecutive channels d of one (b, segment s); blockIdx.x =
// (b * nseg + s) * ndblk + dblk. Thread d walks t = ts .. te-1 with the kNG states of a group
// in registers (groups in turn). B (and C) are staged kWin rows at a time in shared memory
// and read as broadcast float4s; u, delta (kForward: delta_t from walk_local), z are read per
// step, 4 steps' loads issued before their updates.
// Resident blocks per SM asked of the compiler (registers <= 65536 / (128 x blocks)): the
// unbounded heuristics spilled walk<kLocal> at 72 registers; these bounds give no spills.
constexpr int walk_min_blocks(WalkMode m) {
  return m == WalkMode::kLocal ? 7 : m == WalkMode::kForward ? 4 : 5;
}

// y's partial sum over the earlier groups (N > kNG), and y's store: f32 keeps the partial
// sums in y itself (as before the templates); bf16 in the f32 y_acc, y rounded once at the end.
__device__ __forceinline__ float y_partial(const WalkArgs<float>& w, int64_t i) { return w.y[i]; }
__device__ __forceinline__ float y_partial(const WalkArgs<bf16>& w, int64_t i) { return w.y_acc[i]; }
__device__ __forceinline__ void store_y(const WalkArgs<float>& w, int64_t i, float v, bool) {
  if (w.y) w.y[i] = v;
}
__device__ __forceinline__ void store_y(const WalkArgs<bf16>& w, int64_t i, float v, bool final) {
  if (final) {
    if (w.y) st(w.y, i, v);
  } else {
    w.y_acc[i] = v;
  }
}

template <WalkMode kMode, typename Act>
__global__ void __launch_bounds__(kWalkThreads, walk_min_blocks(kMode))
    v3_walk_kernel(WalkArgs<Act> w) {
  constexpr bool kY = kMode == WalkMode::kForward;  // y, C, z, h_last
  __shared__ __align__(16) float sB[kWin * kNG];
  __shared__ __align__(16) float sC[kY ? kWin * kNG : 4];
  const ScanArgs<Act, float>& a = w.a;
  const int64_t L = a.L, ED = a.ED, N = a.N;
  const int64_t ndblk = cdiv(ED, kWalkThreads);
  int64_t blk = blockIdx.x;
  const int64_t dblk = blk % ndblk;
  blk /= ndblk;
  const int64_t s = blk % w.nseg, b = blk / w.nseg;
  const int64_t d = dblk * kWalkThreads + threadIdx.x;
  const bool active = d < ED;
  const int64_t ts = s * w.S, te = min(ts + w.S, L);
  const float bias = (active && a.delta_bias) ? a.delta_bias[d] : 0.f;
  const float Dd = (active && a.D) ? a.D[d] : 0.f;
  const int64_t ngroups = cdiv(N, kNG);

  for (int64_t ng = 0; ng < ngroups; ++ng) {
    const int64_t n0 = ng * kNG;
    float h[kNG], a2[kNG];  // lanes n >= N: A = 0, h = 0, B = C = 0: they stay 0
#pragma unroll
    for (int j = 0; j < kNG; ++j) {
      const bool ok = active && n0 + j < N;
      a2[j] = ok ? a.A[d * N + n0 + j] * kLog2e : 0.f;
      h[j] = (ok && kMode != WalkMode::kLocal) ? w.hin[((b * w.nseg + s) * ED + d) * N + n0 + j] : 0.f;
    }
    float sum_dt = 0.f;
    int64_t next_state = cdiv(ts, w.T_out) * w.T_out;  // the first t >= ts with t % T_out == 0
    for (int64_t w0 = ts; w0 < te; w0 += kWin) {
      const int wl = (int)min((int64_t)kWin, te - w0);
      __syncthreads();  // the previous window's readers of sB, sC are done
      stage_rows(a.Bm, sB, b, w0, wl, n0, L, N);
      if (kY) stage_rows(a.C, sC, b, w0, wl, n0, L, N);
      __syncthreads();
      if (!active) continue;  // (no barrier below until the next window)
      const int64_t i0 = (b * L + w0) * ED + d;
      for (int tt0 = 0; tt0 < wl; tt0 += 4) {
        // The loads of 4 steps are issued together (memory-level parallelism); the steps then
        // run one at a time (unroll 1: the 16 states already give each step ILP 16, and
        // interleaving steps would only raise the register count), shifting the batch down.
        float uu[4], dd[4], zz[4];
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          const bool ok = tt0 + k < wl;
          const int64_t i = i0 + (int64_t)(tt0 + k) * ED;
          uu[k] = ok ? ldg(a.u, i) : 0.f;
          dd[k] = ok ? (kY ? ldg(w.dt, i) : ldg(a.delta, i)) : 0.f;  // kForward: delta_t itself
          zz[k] = (kY && ok && a.z) ? ldg(a.z, i) : 0.f;
        }
        const int nk = min(4, wl - tt0);
#pragma unroll 1
        for (int k = 0; k < nk; ++k) {
          const int tt = tt0 + k;
          const int64_t t = w0 + tt;
          if (kMode != WalkMode::kLocal && t == next_state) {  // the state entering step t
            if (w.states) {
              float* o = w.states + ((b * w.nc_out + t / w.T_out) * ED + d) * N + n0;
#pragma unroll
              for (int j = 0; j < kNG; ++j)
                if (n0 + j < N) o[j] = h[j];
            }
            next_state += w.T_out;
          }
          const float dt = kY ? dd[0] : delta_of(dd[0] + bias, a.delta_softplus);
          if (kMode == WalkMode::kLocal && ng == 0) w.dt[i0 + (int64_t)tt * ED] = dt;
          const float dtu = dt * uu[0];
          sum_dt += dt;
          const float4* B4 = reinterpret_cast<const float4*>(sB + tt * kNG);
          const float4* C4 = reinterpret_cast<const float4*>(sC + (kY ? tt * kNG : 0));
          float yv = 0.f;
#pragma unroll
          for (int q = 0; q < kNG / 4; ++q) {
            const float4 bq = B4[q];
            const float bj[4] = {bq.x, bq.y, bq.z, bq.w};
            float cj[4] = {0.f, 0.f, 0.f, 0.f};
            if (kY) {
              const float4 cq = C4[q];
              cj[0] = cq.x, cj[1] = cq.y, cj[2] = cq.z, cj[3] = cq.w;
            }
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const int j = 4 * q + e;
              h[j] = fmaf(ex2(dt * a2[j]), h[j], dtu * bj[e]);  // h_t = A_bar h_{t-1} + delta u B
              if (kY) yv = fmaf(cj[e], h[j], yv);              // <C_t, h_t>
            }
          }
          if (kY) {
            const int64_t i = i0 + (int64_t)tt * ED;
            if (ng == 0) {
              if (a.D) yv = fmaf(Dd, uu[0], yv);  // + D u
            } else {
              yv = y_partial(w, i) + yv;  // the earlier groups' sum (written by this thread)
            }
            if (ng == ngroups - 1 && a.z) yv *= zz[0] * sigmoidf_(zz[0]);  // * silu(z)
            store_y(w, i, yv, ng == ngroups - 1);
          }
#pragma unroll
          for (int q = 0; q < 3; ++q) uu[q] = uu[q + 1], dd[q] = dd[q + 1], zz[q] = zz[q + 1];
        }
      }
    }
    if (!active) continue;
    if (kMode == WalkMode::kLocal) {
      float* o = w.hloc + ((b * w.nseg + s) * ED + d) * N + n0;
#pragma unroll
      for (int j = 0; j < kNG; ++j)
        if (n0 + j < N) o[j] = h[j];
      if (ng == 0) w.sdt[(b * w.nseg + s) * ED + d] = sum_dt;
    }
    if (kY && w.h_last && te == L) {
      float* o = w.h_last + (b * ED + d) * N + n0;
#pragma unroll
      for (int j = 0; j < kNG; ++j)
        if (n0 + j < N) o[j] = h[j];
    }
  }
}

// ---- the combine --------------------------------------------------------------------------
// Thread (b, d, n), sequentially over the segments (reverse: last first). The 8 loads of a
// batch are issued before the chain that uses them.
template <bool kReverse>
__global__ void v3_combine_kernel(float* __restrict__ agg, const float* __restrict__ sdt,
                                  const float* __restrict__ A, const float* __restrict__ seed,
                                  float* __restrict__ final_out, int64_t B, int64_t nseg,
                                  int64_t ED, int64_t N) {
  const int64_t total = B * ED * N;
  for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < total;
       k += (int64_t)gridDim.x * blockDim.x) {
    const int64_t n = k % N, d = (k / N) % ED, b = k / (N * ED);
    const float a2 = A[d * N + n] * kLog2e;
    float h = seed ? seed[k] : 0.f;  // seed, final_out: (B, ED, N), index k
    for (int64_t j0 = 0; j0 < nseg; j0 += 8) {
      float hl[8], sd[8];
#pragma unroll
      for (int q = 0; q < 8; ++q) {
        const int64_t j = j0 + q, s = kReverse ? nseg - 1 - j : j;
        hl[q] = j < nseg ? agg[((b * nseg + s) * ED + d) * N + n] : 0.f;
        sd[q] = j < nseg ? sdt[(b * nseg + s) * ED + d] : 0.f;
      }
#pragma unroll
      for (int q = 0; q < 8; ++q) {
        const int64_t j = j0 + q, s = kReverse ? nseg - 1 - j : j;
        if (j < nseg) {
          agg[((b * nseg + s) * ED + d) * N + n] = h;  // entering segment s
          h = fmaf(ex2(a2 * sd[q]), h, hl[q]);      // prod of A_bar over s = exp(A sum delta)
        }
      }
    }
    if (final_out) final_out[k] = h;
  }
}

constexpr int kCombineThreads = 256;

// ---- bwd_local ----------------------------------------------------------------------------
// Block: kWalkThreads channels of one (b, sub-segment sg); blockIdx.x = (b * nseg_a + sg) *
// ndblk + dblk. Sub-segment sg = (tile tau, part j) covers [tau Kt + j sa, tau Kt +
// min((j+1) sa, Kt)) clipped to L (possibly empty). Walking t backwards from mu = 0:
// lambda = g_t C_t + mu, mu = A_bar_t lambda; the final mu is mloc. C is staged kWin rows at
// a time, windows last first.

// Resident blocks asked of the compiler: f32 none (0: its heuristics, 80 registers, 6 blocks,
// as before the templates); bf16 5 (its heuristics gave 80 registers with 4 bytes spilled;
// at 5 blocks it takes 95 registers and spills nothing).
template <typename Act>
__global__ void __launch_bounds__(kWalkThreads, std::is_same_v<Act, float> ? 0 : 5)
    v3_bwd_local_kernel(LocalArgs<Act> p) {
  __shared__ __align__(16) float sC[kWin * kNG];
  const ScanArgs<Act, float>& a = p.a;
  const int64_t L = a.L, ED = a.ED, N = a.N;
  const int64_t ndblk = cdiv(ED, kWalkThreads);
  int64_t blk = blockIdx.x;
  const int64_t dblk = blk % ndblk;
  blk /= ndblk;
  const int64_t sg = blk % p.nseg_a, b = blk / p.nseg_a;
  const int64_t d = dblk * kWalkThreads + threadIdx.x;
  const bool active = d < ED;
  const int64_t tau = sg / p.m, part = sg % p.m;
  const int64_t ts = min(tau * p.Kt + min(part * p.sa, p.Kt), L);
  const int64_t te = min(tau * p.Kt + min((part + 1) * p.sa, p.Kt), L);
  const float bias = (active && a.delta_bias) ? a.delta_bias[d] : 0.f;
  const int64_t ngroups = cdiv(N, kNG);

  for (int64_t ng = 0; ng < ngroups; ++ng) {
    const int64_t n0 = ng * kNG;
    float mu[kNG], a2[kNG];
#pragma unroll
    for (int j = 0; j < kNG; ++j) {
      mu[j] = 0.f;
      a2[j] = (active && n0 + j < N) ? a.A[d * N + n0 + j] * kLog2e : 0.f;
    }
    float sum_dt = 0.f;
    int64_t we = te;
    while (we > ts) {  // windows [w0, we), last first
      const int64_t w0 = max(ts, we - kWin);
      const int wl = (int)(we - w0);
      __syncthreads();  // the previous window's readers of sC are done
      stage_rows(a.C, sC, b, w0, wl, n0, L, N);
      __syncthreads();
      if (active) {
        const int64_t i0 = (b * L + w0) * ED + d;
        for (int tt0 = wl - 1; tt0 >= 0; tt0 -= 4) {
          float gy[4], dd[4], zz[4];
#pragma unroll
          for (int k = 0; k < 4; ++k) {
            const bool ok = tt0 - k >= 0;
            const int64_t i = i0 + (int64_t)(tt0 - k) * ED;
            gy[k] = ok ? ldg(p.dy, i) : 0.f;
            dd[k] = ok ? ldg(a.delta, i) : 0.f;
            zz[k] = (ok && a.z) ? ldg(a.z, i) : 0.f;
          }
#pragma unroll
          for (int k = 0; k < 4; ++k) {
            const int tt = tt0 - k;
            if (tt < 0) break;
            const float dt = delta_of(dd[k] + bias, a.delta_softplus);
            const float g = a.z ? gy[k] * (zz[k] * sigmoidf_(zz[k])) : gy[k];  // dL/dy_pre
            sum_dt += dt;
            const float4* C4 = reinterpret_cast<const float4*>(sC + tt * kNG);
#pragma unroll
            for (int q = 0; q < kNG / 4; ++q) {
              const float4 cq = C4[q];
              const float cj[4] = {cq.x, cq.y, cq.z, cq.w};
#pragma unroll
              for (int e = 0; e < 4; ++e) {
                const int j = 4 * q + e;
                const float lam = fmaf(g, cj[e], mu[j]);  // lambda_t = g_t C_t + mu_{t+1}
                mu[j] = ex2(dt * a2[j]) * lam;           // mu_t = A_bar_t lambda_t
              }
            }
          }
        }
      }
      we = w0;
    }
    if (!active) continue;
    float* o = p.mloc + ((b * p.nseg_a + sg) * ED + d) * N + n0;
#pragma unroll
    for (int j = 0; j < kNG; ++j)
      if (n0 + j < N) o[j] = mu[j];
    if (ng == 0) p.sdt[(b * p.nseg_a + sg) * ED + d] = sum_dt;
  }
}

}  // namespace

template <typename Act>
void launch_walk(WalkMode mode, const WalkArgs<Act>& w) {
  const int64_t blocks = w.a.B * w.nseg * cdiv(w.a.ED, kWalkThreads);
  MG_CHECK(blocks <= INT32_MAX, "selective_scan (CUDA v3): ", blocks, " walk blocks exceed the grid");
  const unsigned grid = (unsigned)blocks;
  cudaStream_t s = cuda_stream();
  switch (mode) {
    case WalkMode::kLocal:
      v3_walk_kernel<WalkMode::kLocal, Act><<<grid, kWalkThreads, 0, s>>>(w);
      break;
    case WalkMode::kForward:
      v3_walk_kernel<WalkMode::kForward, Act><<<grid, kWalkThreads, 0, s>>>(w);
      break;
    case WalkMode::kRederive:
      v3_walk_kernel<WalkMode::kRederive, Act><<<grid, kWalkThreads, 0, s>>>(w);
      break;
  }
  check_launch("selective_scan (CUDA v3, walk)");
}

void launch_combine(bool reverse, float* agg, const float* sdt, const float* A, const float* seed,
                    float* final_out, int64_t B, int64_t nseg, int64_t ED, int64_t N) {
  Launch1d l = launch_1d(B * ED * N, kCombineThreads);
  if (reverse)
    v3_combine_kernel<true><<<l.grid, l.block, 0, cuda_stream()>>>(agg, sdt, A, seed, final_out, B, nseg, ED, N);
  else
    v3_combine_kernel<false><<<l.grid, l.block, 0, cuda_stream()>>>(agg, sdt, A, seed, final_out, B, nseg, ED, N);
  check_launch("selective_scan (CUDA v3, combine)");
}

template <typename Act>
void launch_bwd_local(const LocalArgs<Act>& l) {
  const int64_t blocks = l.a.B * l.nseg_a * cdiv(l.a.ED, kWalkThreads);
  MG_CHECK(blocks <= INT32_MAX, "selective_scan (CUDA v3 backward): ", blocks, " blocks exceed the grid");
  v3_bwd_local_kernel<Act><<<(unsigned)blocks, kWalkThreads, 0, cuda_stream()>>>(l);
  check_launch("selective_scan backward (CUDA v3, bwd_local)");
}

template void launch_walk(WalkMode, const WalkArgs<float>&);
template void launch_walk(WalkMode, const WalkArgs<bf16>&);
template void launch_bwd_local(const LocalArgs<float>&);
template void launch_bwd_local(const LocalArgs<bf16>&);

void append_walk_occupancy(std::vector<KernelOccupancy>& out) {
  out.push_back(occupancy_of("v3_walk_kernel<kLocal>", v3_walk_kernel<WalkMode::kLocal, float>, kWalkThreads, 0));
  out.push_back(occupancy_of("v3_walk_kernel<kForward>", v3_walk_kernel<WalkMode::kForward, float>, kWalkThreads, 0));
  out.push_back(occupancy_of("v3_walk_kernel<kRederive>", v3_walk_kernel<WalkMode::kRederive, float>, kWalkThreads, 0));
  out.push_back(occupancy_of("v3_combine_kernel<forward>", v3_combine_kernel<false>, kCombineThreads, 0));
  out.push_back(occupancy_of("v3_combine_kernel<reverse>", v3_combine_kernel<true>, kCombineThreads, 0));
  out.push_back(occupancy_of("v3_bwd_local_kernel", v3_bwd_local_kernel<float>, kWalkThreads, 0));
  // bf16 activations (the same kernels, half the activation bytes).
  out.push_back(occupancy_of("v3_walk_kernel<kLocal, bf16>", v3_walk_kernel<WalkMode::kLocal, bf16>, kWalkThreads, 0));
  out.push_back(occupancy_of("v3_walk_kernel<kForward, bf16>", v3_walk_kernel<WalkMode::kForward, bf16>, kWalkThreads, 0));
  out.push_back(occupancy_of("v3_walk_kernel<kRederive, bf16>", v3_walk_kernel<WalkMode::kRederive, bf16>, kWalkThreads, 0));
  out.push_back(occupancy_of("v3_bwd_local_kernel<bf16>", v3_bwd_local_kernel<bf16>, kWalkThreads, 0));
}

}  // namespace mg::cuda::v3
