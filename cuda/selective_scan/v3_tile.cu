// cuda/selective_scan/v3_tile.cu — v3's bwd_tile (replay + adjoint + every gradient, per tile
// and channel group) and the ordered sums of the backward; its tile copies are in
// v3_tile_io.cuh. The design is in cuda/selective_scan/v3.cuh; the math in ops/selective_scan.h.
#include <cuda_runtime.h>

#include <type_traits>

#include "core/error.h"
#include "cuda/check.cuh"
#include "cuda/partial_sums.h"
#include "cuda/runtime.h"
#include "cuda/selective_scan/v3.cuh"
#include "cuda/selective_scan/v3_tile_io.cuh"

namespace mg::cuda::v3 {
namespace {

// The running sums of du, ddelta, dz over the earlier state groups (N > kNG): f32 keeps them
// in the outputs (as before the templates); bf16 in f32 scratch, the outputs rounded once by
// the last group (the end of the sub-batch loop).
__device__ __forceinline__ float* run_du(const TileArgs<float>& p) { return p.g.du; }
__device__ __forceinline__ float* run_ddelta(const TileArgs<float>& p) { return p.g.ddelta; }
__device__ __forceinline__ float* run_dz(const TileArgs<float>& p) { return p.g.dz; }
__device__ __forceinline__ float* run_du(const TileArgs<bf16>& p) { return p.run_du; }
__device__ __forceinline__ float* run_ddelta(const TileArgs<bf16>& p) { return p.run_ddelta; }
__device__ __forceinline__ float* run_dz(const TileArgs<bf16>& p) { return p.run_dz; }

// Block (b, tile tau, channel group grp): blockIdx.x = (b * ntiles + tau) * G + grp. Warp w
// takes channel sb * kW + w of each sub-batch sb of the group in turn; lane l owns tile steps
// 8l .. 8l+7. Every __syncthreads below is reached by all threads: the loops over groups ng,
// sub-batches sb and states nn have block-uniform bounds (n >= N breaks for all), and only
// work without barriers sits under `active` (warp-uniform) or per-lane validity.
template <typename Act>
__global__ void __launch_bounds__(kTileThreads, 2) v3_bwd_tile_kernel(TileArgs<Act> p) {
  extern __shared__ __align__(16) float smem[];
  float* const sB = smem;                    // [kNG][kRow]: B of the tile, this group's states
  float* const sC = sB + kNG * kRow;         // [kNG][kRow]
  float* const sAccB = sC + kNG * kRow;      // [kNG][kAccRow]: dB summed over the group's channels
  float* const sAccC = sAccB + kNG * kAccRow;
  float* const sX = sAccC + kNG * kAccRow;   // 4 x [kW][kRow]: tiles, or contributions
  const ScanArgs<Act, float>& a = p.a;
  const ScanGrads<Act, float>& gr = p.g;
  const Plan& pl = p.pl;
  const int64_t L = a.L, ED = a.ED, N = a.N;
  const int tid = threadIdx.x, w = tid >> 5, lane = tid & 31;
  int64_t blk = blockIdx.x;
  const int64_t grp = blk % pl.G;
  blk /= pl.G;
  const int64_t tau = blk % pl.ntiles, b = blk / pl.ntiles;
  const int64_t t0 = tau * pl.Kt;
  const int tl = (int)min(pl.Kt, L - t0);  // valid steps of the tile
  const int64_t sb0 = grp * pl.spg, sb1 = min(sb0 + pl.spg, pl.nsb);
  const bool has_z = a.z != nullptr;
  const int64_t pbt = b * pl.ntiles + tau;  // the (b, tile) row of the parameter partials

  for (int64_t ng = 0; ng < pl.ngroups; ++ng) {
    const int64_t n0 = ng * kNG;
    const bool last = ng == pl.ngroups - 1;
    __syncthreads();  // the previous group's readers of sB, sC, sAcc are done
    for (int k = tid; k < kTile * kNG; k += kTileThreads) {
      const int tt = k >> 4, j = k & 15;
      const bool ok = tt < tl && n0 + j < N;
      const int64_t at = (b * L + t0 + tt) * N + n0 + j;
      sB[j * kRow + pos(tt)] = ok ? ldg(a.Bm, at) : 0.f;
      sC[j * kRow + pos(tt)] = ok ? ldg(a.C, at) : 0.f;
    }
    for (int64_t sb = sb0; sb < sb1; ++sb) {
      const int64_t c0 = sb * kW, d = c0 + w;
      const bool active = d < ED;  // warp-uniform
      const float bias = (active && a.delta_bias) ? a.delta_bias[d] : 0.f;
      const float Dd = (active && a.D) ? a.D[d] : 0.f;
      float* const my0 = sX + w * kRow;  // this warp's row of tile q: my0 + q * kW * kRow
      __syncthreads();  // sB, sC staged; the previous readers of sX are done
      tile_in<Act>(a.u, b, L, ED, t0, tl, c0, p.vec4, sX);
      tile_in<Act>(a.delta, b, L, ED, t0, tl, c0, p.vec4, sX + kW * kRow);
      tile_in<Act>(gr.dy, b, L, ED, t0, tl, c0, p.vec4, sX + 2 * kW * kRow);
      if (has_z) tile_in<Act>(a.z, b, L, ED, t0, tl, c0, p.vec4, sX + 3 * kW * kRow);
      __syncthreads();
      // Per lane item i (step t0 + 8 lane + i), kept through the states: delta_t (0 past the
      // tile: identity maps), delta_t u_t, g = dL/dy_pre, y_pre (from D u) and the sums over
      // states slB = <lambda, B>, ddt = sum lambda A A_bar h_prev. (u, the dz factor and the
      // softplus slope are recomputed from reloaded tiles at the end: fewer registers.)
      float dt_r[kK], dtu_r[kK], g_r[kK], yp_r[kK], slB_r[kK], ddt_r[kK];
      {
        float u_r[kK], z_r[kK];
        row_to_regs(my0, lane, u_r);
        row_to_regs(my0 + kW * kRow, lane, dt_r);
        row_to_regs(my0 + 2 * kW * kRow, lane, g_r);
        if (has_z) row_to_regs(my0 + 3 * kW * kRow, lane, z_r);
        float gu = 0.f;
#pragma unroll
        for (int i = 0; i < kK; ++i) {
          dt_r[i] = lane * kK + i < tl ? delta_of(dt_r[i] + bias, a.delta_softplus) : 0.f;
          dtu_r[i] = dt_r[i] * u_r[i];
          if (has_z) g_r[i] = g_r[i] * (z_r[i] * sigmoidf_(z_r[i]));  // g = dy silu(z)
          yp_r[i] = Dd * u_r[i];
          slB_r[i] = 0.f;
          ddt_r[i] = 0.f;
          gu = fmaf(g_r[i], u_r[i], gu);
        }
        if (ng == 0 && a.D && gr.dD && active) {  // dD partial: sum over the tile of g u
          gu = warp_sum(gu);
          if (lane == 0) p.part_D[pbt * ED + d] = gu;
        }
      }
      if (ng > 0) {  // the earlier groups' sums, kept by this block (run_du, ...: f32 in du, ...)
        __syncthreads();  // every lane has read its items of the input tiles
        tile_in<Act>(run_du(p), b, L, ED, t0, tl, c0, p.vec4, sX);
        tile_in<Act>(run_ddelta(p), b, L, ED, t0, tl, c0, p.vec4, sX + kW * kRow);
        if (has_z) tile_in<Act>(run_dz(p), b, L, ED, t0, tl, c0, p.vec4, sX + 2 * kW * kRow);
        __syncthreads();
        row_to_regs(my0, lane, slB_r);
        row_to_regs(my0 + kW * kRow, lane, ddt_r);
        if (has_z) row_to_regs(my0 + 2 * kW * kRow, lane, yp_r);
      }
      __syncthreads();  // every lane has its items: sX now holds the contributions
      // This channel's rows (pointers; dereferenced only when active).
      const int64_t dd = active ? d : 0;
      const float* const A_row = a.A + dd * N;
      const float* const st_row = p.st + ((b * p.nc_s + t0 / p.T_s) * ED + dd) * N;
      const float* const me_row = p.mend + ((b * pl.nseg_a + tau * pl.m + pl.m - 1) * ED + dd) * N;
      float* const pA_row = p.part_A + (pbt * ED + dd) * N;

#pragma unroll 1
      for (int nn = 0; nn < kNG; ++nn) {
        const int64_t n = n0 + nn;
        if (n >= N) break;  // block-uniform
        const int par = nn & 1;  // double buffer: one barrier per state
        float* const rowB = sX + (2 * par) * kW * kRow + w * kRow;
        float* const rowC = sX + (2 * par + 1) * kW * kRow + w * kRow;
        const float* const Brow = sB + nn * kRow;
        const float* const Crow = sC + nn * kRow;
        if (active) {
          const float An = A_row[n], a2 = An * kLog2e;
          float Ab[kK], hp[kK];
          {  // (1) replay h_t = A_bar_t h_{t-1} + delta_t u_t B_t from the saved state at t0
            float x[kK], v[kK];
            row_to_regs(Brow, lane, x);
            Aff F{1.f, 0.f};
#pragma unroll
            for (int i = 0; i < kK; ++i) {
              Ab[i] = ex2(dt_r[i] * a2);
              F = compose(F, Aff{Ab[i], dtu_r[i] * x[i]});
            }
            const Aff pre = warp_excl_fwd(F, lane);
            float h = fmaf(pre.a, st_row[n], pre.b);  // the state entering this lane's first step
            row_to_regs(Crow, lane, v);
#pragma unroll
            for (int i = 0; i < kK; ++i) {
              hp[i] = h;
              h = fmaf(Ab[i], h, dtu_r[i] * x[i]);
              yp_r[i] = fmaf(v[i], h, yp_r[i]);
              v[i] = lane * kK + i < tl ? g_r[i] * h : 0.f;  // dC contribution
            }
            regs_to_row(rowC, lane, v);
          }
          {  // (2) the adjoint mu_t = A_bar_t (g_t C_t + mu_{t+1}) from mu at the tile's end
            float x[kK], v[kK];
            row_to_regs(Crow, lane, v);
#pragma unroll
            for (int i = 0; i < kK; ++i) v[i] *= g_r[i];  // g_t C_t
            Aff R{1.f, 0.f};
#pragma unroll
            for (int i = kK - 1; i >= 0; --i) R = compose(R, Aff{Ab[i], Ab[i] * v[i]});
            const Aff suf = warp_excl_rev(R, lane);
            float mu = fmaf(suf.a, me_row[n], suf.b);  // mu_{t+1} for this lane's last step
            float dA_l = 0.f;
            row_to_regs(Brow, lane, x);
#pragma unroll
            for (int i = kK - 1; i >= 0; --i) {
              const float lam = v[i] + mu;              // dL/dh_t = g_t C_t + mu_{t+1}
              const float lAh = lam * (Ab[i] * hp[i]);  // lambda A_bar h_{t-1}
              slB_r[i] = fmaf(lam, x[i], slB_r[i]);
              ddt_r[i] = fmaf(lAh, An, ddt_r[i]);
              dA_l = fmaf(lAh, dt_r[i], dA_l);
              mu = Ab[i] * lam;
              v[i] = lane * kK + i < tl ? lam * dtu_r[i] : 0.f;  // dB contribution
            }
            regs_to_row(rowB, lane, v);
            dA_l = warp_sum(dA_l);
            if (lane == 0) pA_row[n] = dA_l;
          }
        } else {
          const float zero[kK] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
          regs_to_row(rowB, lane, zero);
          regs_to_row(rowC, lane, zero);
        }
        __syncthreads();
        {  // thread tt: the kW warps' contributions at step tt, in warp order, into sAcc
          const int tt = tid;
          const float* cB = sX + (2 * par) * kW * kRow + pos(tt);
          const float* cC = sX + (2 * par + 1) * kW * kRow + pos(tt);
          float vb = cB[0], vc = cC[0];
#pragma unroll
          for (int k = 1; k < kW; ++k) {
            vb += cB[k * kRow];
            vc += cC[k * kRow];
          }
          float* aB = sAccB + nn * kAccRow + tt;
          float* aC = sAccC + nn * kAccRow + tt;
          if (sb == sb0) {
            *aB = vb, *aC = vc;
          } else {
            *aB += vb, *aC += vc;
          }
        }
      }

      // This sub-batch's du, ddelta, dz (or, before the last group, the running sums).
      __syncthreads();  // the sum pass's reads of sX are done
      if (last) {  // u, raw delta, dy, z again (L2): the softplus slope and the dz factor
        tile_in<Act>(a.u, b, L, ED, t0, tl, c0, p.vec4, sX);
        tile_in<Act>(a.delta, b, L, ED, t0, tl, c0, p.vec4, sX + kW * kRow);
        if (has_z) {
          tile_in<Act>(gr.dy, b, L, ED, t0, tl, c0, p.vec4, sX + 2 * kW * kRow);
          tile_in<Act>(a.z, b, L, ED, t0, tl, c0, p.vec4, sX + 3 * kW * kRow);
        }
        __syncthreads();
        // Item by item, in place in this warp's rows (each lane touches only its own items):
        // tile 0 <- du, tile 1 <- d(delta_raw), tile 2 <- dz.
        float dbias = 0.f;
#pragma unroll
        for (int i = 0; i < kK; ++i) {
          const int at = pos(lane * kK + i);
          const float uv = my0[at], rv = my0[kW * kRow + at];
          const float slope = delta_grad_of(rv + bias, a.delta_softplus);
          const float draw = lane * kK + i < tl ? fmaf(uv, slB_r[i], ddt_r[i]) * slope : 0.f;
          my0[at] = fmaf(dt_r[i], slB_r[i], Dd * g_r[i]);  // du = D g + delta <lambda, B>
          my0[kW * kRow + at] = draw;
          if (has_z) {  // dz = dy y_pre s (1 + z (1 - s))
            const float dyv = my0[2 * kW * kRow + at], zv = my0[3 * kW * kRow + at];
            const float sz = sigmoidf_(zv);
            my0[2 * kW * kRow + at] = yp_r[i] * (dyv * sz * (1.f + zv * (1.f - sz)));
          }
          dbias += draw;
        }
        if (gr.ddelta_bias && active) {
          dbias = warp_sum(dbias);
          if (lane == 0) p.part_bias[pbt * ED + d] = dbias;
        }
      } else {
        regs_to_row(my0, lane, slB_r);
        regs_to_row(my0 + kW * kRow, lane, ddt_r);
        if (has_z) regs_to_row(my0 + 2 * kW * kRow, lane, yp_r);
      }
      __syncthreads();
      if constexpr (std::is_same_v<Act, float>) {  // (written out: the f32 code as before)
        tile_out<Act>(sX, b, L, ED, t0, tl, c0, p.vec4, gr.du);
        tile_out<Act>(sX + kW * kRow, b, L, ED, t0, tl, c0, p.vec4, gr.ddelta);
        if (has_z) tile_out<Act>(sX + 2 * kW * kRow, b, L, ED, t0, tl, c0, p.vec4, gr.dz);
      } else if (last) {  // bf16: rounded once, after the last group
        tile_out<Act>(sX, b, L, ED, t0, tl, c0, p.vec4, gr.du);
        tile_out<Act>(sX + kW * kRow, b, L, ED, t0, tl, c0, p.vec4, gr.ddelta);
        if (has_z) tile_out<Act>(sX + 2 * kW * kRow, b, L, ED, t0, tl, c0, p.vec4, gr.dz);
      } else {  // bf16: the f32 running sums
        tile_out<Act>(sX, b, L, ED, t0, tl, c0, p.vec4, run_du(p));
        tile_out<Act>(sX + kW * kRow, b, L, ED, t0, tl, c0, p.vec4, run_ddelta(p));
        if (has_z) tile_out<Act>(sX + 2 * kW * kRow, b, L, ED, t0, tl, c0, p.vec4, run_dz(p));
      }
    }

    // dB, dC of this group's states: every sum pass is behind the barriers above.
    for (int k = tid; k < kTile * kNG; k += kTileThreads) {
      const int tt = k >> 4, nn = k & 15;
      if (tt >= tl || n0 + nn >= N) continue;
      const int64_t at = (b * L + t0 + tt) * N + n0 + nn;
      const float vb = sAccB[nn * kAccRow + tt], vc = sAccC[nn * kAccRow + tt];
      if (p.atomic) {
        atomicAdd(p.outB + at, vb);
        atomicAdd(p.outC + at, vc);
      } else {
        p.outB[grp * p.out_stride + at] = vb;
        p.outC[grp * p.out_stride + at] = vc;
      }
    }
  }
}

// ---- the ordered sums ---------------------------------------------------------------------
}  // namespace

template <typename Act>
void launch_bwd_tile(const TileArgs<Act>& t) {
  const int64_t blocks = t.a.B * t.pl.ntiles * t.pl.G;
  MG_CHECK(blocks <= INT32_MAX, "selective_scan (CUDA v3 backward): ", blocks, " blocks exceed the grid");
  // bwd_tile's 107.6 KB of shared memory fit sm_80 (163 KB a block) and sm_90 (227 KB), not
  // sm_86/89 (99 KB) or sm_75 (64 KB): say so instead of a bare CUDA error (found in review).
  int device = 0, smem_optin = 0;
  MG_CUDA_CHECK(cudaGetDevice(&device));
  MG_CUDA_CHECK(cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  MG_CHECK(smem_optin >= (int)kTileSmemBytes, "selective_scan (CUDA v3 backward): needs ",
           kTileSmemBytes, " bytes of shared memory per block, this GPU allows ", smem_optin,
           "; use the v2 scan on it (Settings::cuda_scan = CudaScanVersion::v2)");
  MG_CUDA_CHECK(cudaFuncSetAttribute(v3_bwd_tile_kernel<Act>,
                                     cudaFuncAttributeMaxDynamicSharedMemorySize, (int)kTileSmemBytes));
  v3_bwd_tile_kernel<Act><<<(unsigned)blocks, kTileThreads, kTileSmemBytes, cuda_stream()>>>(t);
  check_launch("selective_scan backward (CUDA v3, bwd_tile)");
}
template void launch_bwd_tile(const TileArgs<float>&);
template void launch_bwd_tile(const TileArgs<bf16>&);

// dB[k] = sum over groups g of partB[g][k] in g order (and dC): cuda/partial_sums.h.
void launch_sum_groups(const float* partB, const float* partC, float* dB, float* dC, int64_t G,
                       int64_t BLN) {
  const PartialsLayout by_group = PartialsLayout::rows(G, BLN);
  sum_partials(partB, dB, by_group, false, "selective_scan backward (CUDA v3, dB sums)");
  sum_partials(partC, dC, by_group, false, "selective_scan backward (CUDA v3, dC sums)");
}

// dA, dD, d(delta_bias): the per-(b, tile) partials summed in (b, tile) order.
void launch_param_sums(const float* part_A, const float* part_D, const float* part_bias,
                       int64_t BT, int64_t ED, int64_t N, float* dA, float* dD, float* dbias) {
  const char* op = "selective_scan backward (CUDA v3, parameter sums)";
  sum_partials(part_A, dA, PartialsLayout::rows(BT, ED * N), false, op);
  if (dD) sum_partials(part_D, dD, PartialsLayout::rows(BT, ED), false, op);
  if (dbias) sum_partials(part_bias, dbias, PartialsLayout::rows(BT, ED), false, op);
}

void append_tile_occupancy(std::vector<KernelOccupancy>& out) {
  out.push_back(occupancy_of("v3_bwd_tile_kernel", v3_bwd_tile_kernel<float>, kTileThreads, kTileSmemBytes));
  out.push_back(occupancy_of("v3_bwd_tile_kernel<bf16>", v3_bwd_tile_kernel<bf16>, kTileThreads,
                             kTileSmemBytes));
}

}  // namespace mg::cuda::v3
