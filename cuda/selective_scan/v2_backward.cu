// cuda/selective_scan/v2_backward.cu — v2's backward (the plan is in v2.cuh).
#include <cuda_runtime.h>

#include <algorithm>
#include <type_traits>

#include "core/error.h"
#include "core/settings.h"
#include "core/tensor.h"
#include "cuda/check.cuh"
#include "cuda/partial_sums.h"
#include "cuda/runtime.h"
#include "cuda/selective_scan/common.cuh"
#include "cuda/selective_scan/v2.cuh"
#include "ops/convert.h"
#include "ops/selective_scan/kernels.h"

namespace mg::cuda {

using namespace scan_detail;
using namespace v2_detail;

namespace {

// ---- backward -------------------------------------------------------------------------------
// Act: the activations' type (dy, du, ddelta, dz here; u, delta, z, B, C in ScanArgs), float
// or bf16. Everything else is f32, dB and dC included (sums over channels: rounded to bf16
// once, after the last block's contribution, by the host code below).
template <typename Act>
struct BwdOut {
  const float* states;
  const Act* dy;
  int64_t sT, snc;  // the boundary states used: chunk length and count
  Act *du, *ddelta, *dz;
  float* mu;                          // (B, ED, N): the adjoint carry, in and out
  float *dB, *dC;                     // f32 atomic targets (partB == null) or sums' outputs
  float *partB, *partC;               // (B, G, win_len, N) window partials, or null
  float *dA_part, *dD_part, *dbias_part;  // (B, ED, N), (B, ED), (B, ED): accumulated (+=)
};

// Tiles [tile_begin, tile_end) of Kb steps, last first. p: the ScanArgs layouts (inputs); o: the
// gradients, the boundary states (B, snc, ED, N) and the partials, layouts in BwdOut.
// Grid (G = ceil(ED/8), B), 256 threads.
template <typename Act>
__global__ void __launch_bounds__(kThreads)
    v2_bwd_kernel(ScanArgs<Act, float> p, BwdOut<Act> o, int64_t Kb, int64_t tile_begin,
                  int64_t tile_end) {
  __shared__ float s_tile[kWarps * kRow];
  __shared__ float s_B[kNGroup * kRow], s_C[kNGroup * kRow];
  __shared__ float s_rB[kWarps * kRow], s_rC[kWarps * kRow];  // dB, dC per channel, to be summed
  __shared__ typename WarpScan::TempStorage s_scan[kWarps];
  extern __shared__ float s_dyn[];  // mu carry and dA accumulators, kWarps x N each
  const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t b = blockIdx.y, G = gridDim.x, c0 = (int64_t)blockIdx.x * kWarps, d = c0 + w;
  const int64_t L = p.L, ED = p.ED, N = p.N;
  const bool active = d < ED;
  float* s_mu = s_dyn + w * N;
  float* s_dA = s_dyn + kWarps * N + w * N;
  for (int64_t n = lane; n < N; n += 32) {
    s_mu[n] = active ? o.mu[(b * ED + d) * N + n] : 0.f;
    s_dA[n] = 0.f;
  }
  const float bias = (active && p.delta_bias) ? p.delta_bias[d] : 0.f;
  const float Dd = (active && p.D) ? p.D[d] : 0.f;
  float dD_acc = 0.f, dbias_acc = 0.f;
  const int64_t win0 = tile_begin * Kb;  // first step of the partials window

  for (int64_t tile = tile_end - 1; tile >= tile_begin; --tile) {
    const int64_t t0 = tile * Kb, t_end = imin(L, t0 + Kb);
    float u_r[kItems], dt_r[kItems], g_r[kItems], gz_r[kItems], yp_r[kItems];
    float slB_r[kItems], ddt_r[kItems];
    // Per step: u, delta_t, g = dL/dy_pre, the dz factor, y_pre starts at D u.
    load_u_delta(p, b, t0, t_end, c0, bias, s_tile, u_r, dt_r);
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      yp_r[i] = Dd * u_r[i];
      slB_r[i] = ddt_r[i] = gz_r[i] = 0.f;
    }
    tile_to_regs(o.dy, p, b, t0, t_end, c0, s_tile, g_r);
    if (p.z) {
      float z_r[kItems];
      tile_to_regs(p.z, p, b, t0, t_end, c0, s_tile, z_r);
#pragma unroll
      for (int i = 0; i < kItems; ++i) {
        const float zt = z_r[i], s = sigmoidf_(zt);
        gz_r[i] = g_r[i] * s * (1.f + zt * (1.f - s));  // dz = dy s (1 + z (1 - s)) y_pre
        g_r[i] = g_r[i] * zt * s;
      }
    }
#pragma unroll
    for (int i = 0; i < kItems; ++i) dD_acc = fmaf(g_r[i], u_r[i], dD_acc);

    for (int64_t n0 = 0; n0 < N; n0 += kNGroup) {
      const int ng = (int)imin(kNGroup, N - n0);
      __syncthreads();
      stage_states(p.Bm, b, L, N, t0, t_end, n0, ng, s_B);
      stage_states(p.C, b, L, N, t0, t_end, n0, ng, s_C);
      __syncthreads();
      for (int nn = 0; nn < ng; ++nn) {
        const int64_t n = n0 + nn;
        if (active) {
          const float An = p.A[d * N + n];
          // (1) replay the tile's states from the saved boundary (the forward's scan).
          float Abar[kItems], hprev[kItems];
          Affine agg{1.f, 0.f};
#pragma unroll
          for (int i = 0; i < kItems; ++i) {
            Abar[i] = dt_r[i] != 0.f ? expf(dt_r[i] * An) : 1.f;
            agg = Compose()(agg, Affine{Abar[i], dt_r[i] * u_r[i] * s_B[nn * kRow + slot(lane, i)]});
          }
          const float h_start = o.states[((b * o.snc + t0 / o.sT) * ED + d) * N + n];
          Affine pre;
          WarpScan(s_scan[w]).ExclusiveScan(agg, pre, Affine{1.f, h_start}, Compose());
          float h = pre.b;
#pragma unroll
          for (int i = 0; i < kItems; ++i) {
            const float Bi = s_B[nn * kRow + slot(lane, i)], Ci = s_C[nn * kRow + slot(lane, i)];
            hprev[i] = h;
            h = fmaf(Abar[i], h, (dt_r[i] * u_r[i]) * Bi);
            yp_r[i] = fmaf(Ci, h, yp_r[i]);
            s_rC[w * kRow + slot(lane, i)] = g_r[i] * h;  // dC contribution
          }
          __syncwarp();
          // (2) the adjoint: reverse scan of mu over the tile, lanes mirrored.
          Affine ragg{1.f, 0.f};
#pragma unroll
          for (int i = kItems - 1; i >= 0; --i) {
            const float Ci = s_C[nn * kRow + slot(lane, i)];
            ragg = Compose()(ragg, Affine{Abar[i], Abar[i] * (g_r[i] * Ci)});
          }
          Affine rex;
          WarpScan(s_scan[w]).ExclusiveScan(shfl_affine(ragg, 31 - lane), rex,
                                            Affine{1.f, s_mu[n]}, Compose());
          float mu = shfl_affine(rex, 31 - lane).b;  // mu_{t+1} for this lane's last step
          float dA_lane = 0.f;
#pragma unroll
          for (int i = kItems - 1; i >= 0; --i) {
            const float Bi = s_B[nn * kRow + slot(lane, i)], Ci = s_C[nn * kRow + slot(lane, i)];
            const float lambda = fmaf(g_r[i], Ci, mu);  // dL/dh_t
            const float lam_Abar_h = lambda * (Abar[i] * hprev[i]);
            s_rB[w * kRow + slot(lane, i)] = lambda * (dt_r[i] * u_r[i]);  // dB contribution
            slB_r[i] = fmaf(lambda, Bi, slB_r[i]);
            ddt_r[i] = fmaf(lam_Abar_h, An, ddt_r[i]);
            dA_lane = fmaf(lam_Abar_h, dt_r[i], dA_lane);
            mu = Abar[i] * lambda;
          }
          const float mu_start = __shfl_sync(0xffffffffu, mu, 0);  // mu_{t0}
          const float dA_sum = warp_sum(dA_lane);
          __syncwarp();
          if (lane == 0) {
            s_mu[n] = mu_start;
            s_dA[n] += dA_sum;
          }
          __syncwarp();
        } else {
#pragma unroll
          for (int i = 0; i < kItems; ++i) s_rB[w * kRow + slot(lane, i)] = s_rC[w * kRow + slot(lane, i)] = 0.f;
        }
        // dB[b, t, n], dC[b, t, n]: this block's channels summed in warp order, one step per thread.
        __syncthreads();
        const int tt = threadIdx.x;
        const int64_t t = t0 + tt;
        if (t < t_end) {
          float sb = 0.f, sc = 0.f;
          for (int k = 0; k < kWarps; ++k) {
            sb += s_rB[k * kRow + slot(tt / kItems, tt % kItems)];
            sc += s_rC[k * kRow + slot(tt / kItems, tt % kItems)];
          }
          if (o.partB) {
            const int64_t win_len = (tile_end - tile_begin) * Kb;
            const int64_t at = ((b * G + blockIdx.x) * win_len + (t - win0)) * N + n;
            o.partB[at] = sb;
            o.partC[at] = sc;
          } else {
            atomicAdd(o.dB + (b * L + t) * N + n, sb);
            atomicAdd(o.dC + (b * L + t) * N + n, sc);
          }
        }
        __syncthreads();  // s_rB, s_rC are rewritten for the next state
      }
    }
    // du, ddelta, dz of this tile.
    float du_r[kItems];
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      du_r[i] = fmaf(dt_r[i], slB_r[i], Dd * g_r[i]);
    }
    __syncthreads();
    load_tile(p.delta, b, L, ED, t0, t_end, c0, s_tile);  // raw delta again: softplus' slope
    __syncthreads();
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      const bool valid = t0 + lane * kItems + i < t_end;
      const float r = s_tile[w * kRow + slot(lane, i)] + bias;
      const float draw = valid ? fmaf(u_r[i], slB_r[i], ddt_r[i]) * delta_grad_of(r, p.delta_softplus) : 0.f;
      ddt_r[i] = draw;
      dbias_acc += draw;
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < kItems; ++i) s_tile[w * kRow + slot(lane, i)] = du_r[i];
    __syncthreads();
    store_tile(s_tile, b, L, ED, t0, t_end, c0, o.du);
    __syncthreads();
#pragma unroll
    for (int i = 0; i < kItems; ++i) s_tile[w * kRow + slot(lane, i)] = ddt_r[i];
    __syncthreads();
    store_tile(s_tile, b, L, ED, t0, t_end, c0, o.ddelta);
    if (p.z) {
      __syncthreads();
#pragma unroll
      for (int i = 0; i < kItems; ++i) s_tile[w * kRow + slot(lane, i)] = yp_r[i] * gz_r[i];
      __syncthreads();
      store_tile(s_tile, b, L, ED, t0, t_end, c0, o.dz);
    }
  }
  // Carry out; per-(b, d) parameter partials (each owned by one warp: no race).
  __syncwarp();
  if (active) {
    for (int64_t n = lane; n < N; n += 32) {
      o.mu[(b * ED + d) * N + n] = s_mu[n];
      o.dA_part[(b * ED + d) * N + n] += s_dA[n];
    }
    dD_acc = warp_sum(dD_acc);
    dbias_acc = warp_sum(dbias_acc);
    if (lane == 0) {
      o.dD_part[b * ED + d] += dD_acc;
      o.dbias_part[b * ED + d] += dbias_acc;
    }
  }
}

// The forward's layouts; dy, du, ddelta, dz: (B, L, ED); dB, dC: (B, L, N); dA: (ED, N);
// dD, ddelta_bias: (ED); dh_last, dh0: (B, ED, N). Device pointers.
template <typename Act>
void backward_v2(const ScanArgs<Act, float>& p, const ScanGrads<Act, float>& g) {
  if (backward_if_empty(p, g)) return;
  check_v2(p.B, p.N, p.T);
  if (p.B == 0 || p.L == 0 || p.ED == 0) return;
  const int64_t B = p.B, L = p.L, ED = p.ED, N = p.N, T = p.T;
  const int64_t nc = (L + T - 1) / T, G = (ED + kWarps - 1) / kWarps;
  cudaStream_t s = cuda_stream();
  BwdOut<Act> o{};
  o.dy = g.dy;
  o.du = g.du;
  o.ddelta = g.ddelta;
  o.dz = g.dz;
  // Boundary states: every tile of Kb steps must start on one.
  int64_t Kb = kTile;
  Tensor rederived;
  if (T <= kTile) {
    Kb = T * (kTile / T);
    o.states = p.chunk_states;
    o.sT = T;
    o.snc = nc;
  } else {  // one forward pass from the saved chunk starts re-derives kTile-step boundaries
    o.snc = (L + kTile - 1) / kTile;
    rederived = scratch_empty(B * o.snc * ED * N);
    launch_forward<Act>(p, p.chunk_states, nc * ED * N, nullptr, nullptr,
                        rederived.data<float>(), kTile);
    o.states = rederived.data<float>();
    o.sT = kTile;
  }
  const int64_t ntiles = (L + Kb - 1) / Kb;
  Tensor carry_t = g.dh0 ? Tensor() : scratch_empty(B * ED * N);
  o.mu = g.dh0 ? g.dh0 : carry_t.data<float>();
  if (g.dh_last)
    MG_CUDA_CHECK(cudaMemcpyAsync(o.mu, g.dh_last, B * ED * N * sizeof(float),
                                  cudaMemcpyDeviceToDevice, s));
  else
    MG_CUDA_CHECK(cudaMemsetAsync(o.mu, 0, B * ED * N * sizeof(float), s));
  Tensor parts = scratch_zeros(B * ED * (N + 2));
  o.dA_part = parts.data<float>();
  o.dD_part = o.dA_part + B * ED * N;
  o.dbias_part = o.dD_part + B * ED;

  // dB, dC: f32 sums. f32 activations: straight into the outputs; bf16: into an f32 scratch
  // (B L N floats each, N/ED of one activation tensor) rounded to bf16 once at the end.
  Tensor dBC32;
  float *dB32, *dC32;
  if constexpr (std::is_same_v<Act, float>) {
    dB32 = g.dB;
    dC32 = g.dC;
  } else {
    dBC32 = scratch_empty(2 * B * L * N);
    dB32 = dBC32.data<float>();
    dC32 = dB32 + B * L * N;
  }

  const dim3 grid((unsigned)G, (unsigned)B);
  const size_t dyn = 2 * kWarps * N * sizeof(float);
  allow_dynamic_smem(v2_bwd_kernel<Act>, dyn);
  if (!settings().deterministic) {  // one launch, dB/dC by atomicAdd
    MG_CUDA_CHECK(cudaMemsetAsync(dB32, 0, B * L * N * sizeof(float), s));
    MG_CUDA_CHECK(cudaMemsetAsync(dC32, 0, B * L * N * sizeof(float), s));
    o.dB = dB32;
    o.dC = dC32;
    v2_bwd_kernel<Act><<<grid, kThreads, dyn, s>>>(p, o, Kb, 0, ntiles);
    check_launch("selective_scan_backward (CUDA v2)");
  } else {  // windows of tiles, last first; partials summed over channel groups in order
    const int64_t per_tile = 2 * B * G * Kb * N * (int64_t)sizeof(float);
    // The window's partials: at most 1/8 of one (B, L, ED) tensor (so they never dominate the
    // op's memory), at least one tile, at most 64 MiB.
    const int64_t budget = std::clamp<int64_t>(B * L * ED * (int64_t)sizeof(float) / 8, per_tile,
                                               std::max<int64_t>(per_tile, int64_t(64) << 20));
    const int64_t tiles_per_window = std::clamp<int64_t>(budget / per_tile, 1, ntiles);
    Tensor part = scratch_empty(2 * B * G * tiles_per_window * Kb * N);
    o.partB = part.data<float>();
    o.partC = o.partB + B * G * tiles_per_window * Kb * N;
    for (int64_t tile_end = ntiles; tile_end > 0; tile_end -= tiles_per_window) {
      const int64_t tile_begin = std::max<int64_t>(0, tile_end - tiles_per_window);
      const int64_t win0 = tile_begin * Kb, win_len = (tile_end - tile_begin) * Kb;
      v2_bwd_kernel<Act><<<grid, kThreads, dyn, s>>>(p, o, Kb, tile_begin, tile_end);
      check_launch("selective_scan_backward (CUDA v2)");
      const int64_t count = std::min(L, win0 + win_len) - win0;
      // dB[b, win0 + k, n] = sum_g partB[b, g, k, n] in g order (and dC), k < count
      // (cuda/partial_sums.h). partB, partC: (B, G, win_len, N); dB, dC: (B, L, N).
      const PartialsLayout per_group{.groups = B, .n = count * N, .parts = G,
                                     .part_group = G * win_len * N, .part_stride = win_len * N,
                                     .out_group = L * N};
      sum_partials(o.partB, dB32 + win0 * N, per_group, false,
                   "selective_scan_backward (CUDA v2, dB sums)");
      sum_partials(o.partC, dC32 + win0 * N, per_group, false,
                   "selective_scan_backward (CUDA v2, dC sums)");
    }
  }
  if constexpr (!std::is_same_v<Act, float>) {  // the one rounding of dB and dC
    mg::cuda::f32_to_bf16(dB32, g.dB, B * L * N);  // (qualified: ADL would find the CPU one)
    mg::cuda::f32_to_bf16(dC32, g.dC, B * L * N);
  }
  reduce_param_partials(o.dA_part, o.dD_part, o.dbias_part, g.dA, g.dD, g.ddelta_bias, B, ED,
                        N);
}

}  // namespace

void selective_scan_backward_v2(const ScanArgs<float>& p, const ScanGrads<float>& g) {
  backward_v2(p, g);
}
// bf16 activations and their gradients (du, ddelta, dz, dB, dC rounded once); dA, dD,
// ddelta_bias, dh0, dh_last and the saved chunk states f32.
void selective_scan_backward_v2(const ScanArgs<bf16, float>& p, const ScanGrads<bf16, float>& g) {
  backward_v2(p, g);
}

}  // namespace mg::cuda
