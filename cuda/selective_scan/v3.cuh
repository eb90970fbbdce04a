// cuda/selective_scan/v3.cuh — v3's plan, device helpers and launchers, shared by
// cuda/selective_scan/v3.cu (entry points), v3_walks.cu and v3_tile.cu (kernels). CUDA-only.
//
// ==== Design (issue #12; the full bytes model and table are in docs/cuda_scan.md, "v3") =====
// The two numbers at B 1, ED 1024, N 16, L 2^15 (T 64; D, z, bias present, as bench_scan):
//   bytes: the forward must move 574 MB (0.141 ms at the measured 4.06 TB/s), the backward
//     982 MB (0.242 ms);
//   work: B L ED N = 537 M state updates, each one exp (MUFU ex2, 16/clk/SM x 132 SMs x
//     1.98 GHz = 4.18 T/s -> 0.128 ms) and 4-5 FMA-pipe ops, plus per (b, t, d) a softplus
//     (~45 instructions) and a sigmoid (~25) shared by the 16 states; the issue rate is
//     128 instructions/clk/SM (33.4 T/s).
// So the forward is a three-way tie (memory ~ MUFU ~ issue), the backward (~47 instructions
// per update in bwd_tile: two warp scans per state, the gradients, the dB/dC sums) is
// issue-bound. Parallelism: B ED N = 16 K independent recurrences at B 1, far too few for
// 132 SMs: L itself is split, the affine maps h -> a h + b composed across the pieces.
//
// Forward: three kernels, a thread per channel d (lanes = consecutive channels: every u, delta,
// z, y access of the (B, L, ED) layout is one 128-byte line per warp) with the 16 states of a
// group in registers, walking a SEGMENT of S steps sequentially:
//   walk<kLocal>    per (b, segment s, d): the state at the segment's end from zero (hloc),
//                   the segment's sum of delta (sdt), and delta_t itself (dt, (B, L, ED)
//                   scratch: one softplus per step in the whole forward). Reads u, delta, B.
//   combine<fwd>    per (b, d, n), sequentially over segments: h_in[s] = h,
//                   h <- exp2(A log2e sdt[s]) h + hloc[s] (a segment's product of A_bar is
//                   exp(A sum delta), A being constant in time); h_in overwrites hloc.
//   walk<kForward>  per (b, s, d): from h_in[s], the real walk: y, the chunk states at
//                   t % T == 0, h_last (last segment). Reads u, dt, z, B, C.
// S (v3_plan) gives B ED ceil(L/S) >= 128 K threads, with S >= max(64, 4N) so the hloc/h_in
// round trip costs <= 1/4 of one (B, L, ED) tensor. The price of the split: every exp twice
// (walk_local, walk) and u, delta read twice, dt written once: the forward does ~17
// instructions and 2.25 MUFU ops per update. The alternative, one pass with a chained scan
// across blocks (decoupled look-back), was rejected: its inter-block spin-waits cannot be
// checked without a GPU, and a scan across lanes instead costs ~16 instructions per update too.
//
// Backward: tiles of Kt steps (Kt = T floor(256/T) for T <= 256, so each tile starts on a
// saved state; T > 256: Kt = 256 and walk<kRederive> first re-derives the states at multiples
// of 256 from the saved chunk starts). Then:
//   bwd_local       per (b, sub-segment, d) (m sub-segments per tile, for parallelism),
//                   backwards from zero: the adjoint mu at the sub-segment's start (mloc) and
//                   sdt; reads dy, z, delta, C. It needs no states: mu_t = A_bar_t (g_t C_t +
//                   mu_{t+1}).
//   combine<rev>    per (b, d, n), last sub-segment first, from dh_last: mend[s] = mu (mu at
//                   its end), mu <- exp2(A log2e sdt[s]) mu + mloc[s]; the final mu is dh0.
//   bwd_tile        block (b, tile, channel group g): 8 warps = the 8 channels of a
//                   sub-batch, looping over the group's sub-batches; lane l owns steps
//                   t0 + 8l .. +7. Per state n: replay the states (forward warp scan seeded
//                   with the saved state at t0), the adjoint (reverse warp scan seeded with
//                   mend at the tile's end), every gradient. dB, dC (sums over channels): the 8
//                   warps in warp order, then the group's sub-batches in order, in shared
//                   memory; over groups by per-group partials summed in g order (deterministic;
//                   G <= ED / 2N bounds them to one (B, L, ED) tensor) or float atomics
//                   (deterministic off). dA, dD, dbias: per-(b, tile, d) partials summed over
//                   (b, tile) in order.
// Where values live: registers: the 16 states (walks), 8 items x (delta, delta u, g, y_pre,
// <lambda, B>, ddelta sums) + per-state A_bar, h_prev (bwd_tile); shared memory: 32-step B/C
// windows (walks), the tile's B/C (16 states x 256 steps), channel tiles, per-warp dB/dC
// contributions and their accumulators (bwd_tile, 107.6 KB); global scratch (caching
// allocator): dt, hloc/h_in, mloc/mend, sdt, the partials. Nothing of size (B, L, ED, N).
//
// Predicted (docs/cuda_scan.md has the per-kernel arithmetic): a walk is bound by MUFU/issue
// at ~14 updates/clk/SM (walk_local 8.1 instructions and 1.125 MUFU ops per update, walk 9.1
// and 1.125), bwd_local at 128/9.7 = 13.2, bwd_tile at 128/47 = 2.7; each time is
// updates / (132 x 1.98e9 x rate), divided by an assumed efficiency (0.8 walks, 0.7
// bwd_tile), plus ~2 us per launch:
//   B 1, ED 1024, L 2^12: fwd 0.055 ms (32% of memcpy), fwd+bwd 0.24 ms (20%)
//   B 1, ED 1024, L 2^15: fwd 0.375 ms (38%),            fwd+bwd 1.67 ms (23%)   (v2: 5.28, 12.2)
//   B 8, ED 1536, L 2048: fwd 0.28 ms (38%),             fwd+bwd 1.25 ms (23%)   (v2: 2.24, 7.30)
// (targets: 30% and 15%). Compiled, not run on a GPU: these are predictions.
//
// N: states in groups of 16 (kNG), zero-filled past N (an unused lane's A, B, C, h are 0, so it
// stays 0): N = 16 is one full group; any N >= 1 works (N = 17 costs two groups; in the
// forward walk and bwd_tile later groups re-walk, y and the gradient sums carried in the
// outputs). Numerics: f32 state and accumulation; A_bar = ex2.approx.ftz(delta A log2 e) (one
// MUFU op; below 2^-126 it flushes to exactly 0); softplus = log1pf(expf) below 20, linear
// above, in both directions; no division by a product of A_bar anywhere.
// Activations: f32, or bf16 (ScanArgs<bf16, float>): every kernel that reads or writes u,
// delta, z, B, C, y, dy or their gradients is a template on the activation type (ldg/ld/st
// below); the state, all scratch and every sum stay f32, and each bf16 output is rounded once
// (v3.cu: y's and du/ddelta/dz's running sums over state groups and dB/dC in f32 scratch).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/bf16.h"
#include "core/tensor.h"
#include "cuda/act_io.cuh"
#include "cuda/check.cuh"
#include "cuda/selective_scan/common.cuh"
#include "cuda/selective_scan/v3.h"
#include "cuda/selective_scan/v3_plan.h"
#include "ops/selective_scan/scan_args.h"

namespace mg::cuda::v3 {

// ---- device math --------------------------------------------------------------------------
// The activation math shared with v1/v2 (common.cuh): the sequential spec's functions.
using scan_detail::delta_grad_of;
using scan_detail::delta_of;
using scan_detail::kSoftplusThreshold;
using scan_detail::sigmoidf_;

// 2^x in one MUFU op; results below 2^-126 (and subnormal inputs) flush to 0.
__device__ __forceinline__ float ex2(float x) {
  float r;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
  return r;
}

// The affine map h -> a h + b. compose(x, y) = "x first, then y".
struct Aff {
  float a, b;
};
__device__ __forceinline__ Aff compose(Aff x, Aff y) { return {x.a * y.a, fmaf(y.a, x.b, y.b)}; }

// Lane l gets the composite of lanes 0 .. l-1 (lane 0 first); identity for lane 0.
// Kogge-Stone with shuffle-up, 5 levels, then shifted by one lane. Whole warp must call.
__device__ __forceinline__ Aff warp_excl_fwd(Aff v, int lane) {
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const Aff p{__shfl_up_sync(0xffffffffu, v.a, o), __shfl_up_sync(0xffffffffu, v.b, o)};
    if (lane >= o) v = compose(p, v);
  }
  const Aff e{__shfl_up_sync(0xffffffffu, v.a, 1), __shfl_up_sync(0xffffffffu, v.b, 1)};
  return lane == 0 ? Aff{1.f, 0.f} : e;
}
// Lane l gets the composite of lanes 31 .. l+1 (lane 31 first); identity for lane 31.
__device__ __forceinline__ Aff warp_excl_rev(Aff v, int lane) {
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const Aff q{__shfl_down_sync(0xffffffffu, v.a, o), __shfl_down_sync(0xffffffffu, v.b, o)};
    if (lane + o < 32) v = compose(q, v);
  }
  const Aff e{__shfl_down_sync(0xffffffffu, v.a, 1), __shfl_down_sync(0xffffffffu, v.b, 1)};
  return lane == 31 ? Aff{1.f, 0.f} : e;
}
// A fixed xor tree (every lane gets the same sum). Whole warp must call.
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Activation loads and stores, the only place the activation type shows (the kernels are
// templates on Act = float or mg::bf16, the bits of an __nv_bfloat16; as v2's ld/st): f32 as
// is (the same instructions as before the templates); bf16 widened exactly on load, rounded to
// nearest even once on store. Everything in between (shared tiles, registers, every sum, the
// scratch: dt, hloc/h_in, mloc/mend, sdt, partials) is f32.
// They are ld, st and ldg of cuda/act_io.cuh.

// Rows [t0, t0 + nrows) x states [n0, n0 + kNG) of B or C (B, L, N) -> s[tt * kNG + j]
// (0 past nrows or N), by a block of kWalkThreads threads. Row-major: with N = 16 the block
// reads one contiguous run. Rows are 64 bytes, 16-byte aligned: the walks read them from shared
// memory as float4 (the global loads here are scalar; a warp still reads whole 128-byte lines).
template <typename Act>
__device__ __forceinline__ void stage_rows(const Act* __restrict__ X, float* s, int64_t b,
                                           int64_t t0, int nrows, int64_t n0, int64_t L,
                                           int64_t N) {
  for (int k = threadIdx.x; k < kWin * kNG; k += kWalkThreads) {
    const int tt = k / kNG, j = k % kNG;
    s[k] = (tt < nrows && n0 + j < N) ? ldg(X, (b * L + t0 + tt) * N + n0 + j) : 0.f;
  }
}

// ---- launchers (v3_walks.cu, v3_tile.cu) --------------------------------------------------------------------
enum class WalkMode { kLocal, kForward, kRederive };

// walk<kLocal>: hloc, sdt, dt out. walk<kForward>: from hin and dt; y, h_last, states
// (chunk_states).
// walk<kRederive>: from hin = the saved chunk starts (segments = chunks of T); states out.
// Act: the activations' type (u, delta, z, B, C, y), float or bf16 (instantiated for both).
template <typename Act>
struct WalkArgs {
  ScanArgs<Act, float> a;
  const float* hin = nullptr;  // (B, nseg, ED, N): state entering each segment (not kLocal)
  int64_t S = 0, nseg = 0;     // segment length, count
  float* hloc = nullptr;       // kLocal: (B, nseg, ED, N) state at the segment end from 0
  float* sdt = nullptr;        // kLocal: (B, nseg, ED) sum of delta over the segment
  float* dt = nullptr;         // (B, L, ED) delta_t = softplus(delta + bias): kLocal writes it,
                               // kForward reads it (one softplus per step, not two)
  Act* y = nullptr;            // kForward
  float* h_last = nullptr;     // kForward
  float* states = nullptr;     // kForward / kRederive: state at t % T_out == 0, may be null
  int64_t T_out = 1, nc_out = 0;
  // kForward, bf16 with N > kNG: (B, L, ED) f32, y's partial sums over the earlier groups (y
  // itself is rounded once, by the last group). f32: unused (y holds them, as before).
  float* y_acc = nullptr;
};
template <typename Act>
void launch_walk(WalkMode mode, const WalkArgs<Act>& w);
// Sequential over segments (reverse: last first), in place: agg[s] <- the state (mu) entering
// segment s from the left (right); `seed` (h0 / dh_last, may be null: 0); `final_out` gets the
// final value (dh0) when not null.
void launch_combine(bool reverse, float* agg, const float* sdt, const float* A, const float* seed,
                    float* final_out, int64_t B, int64_t nseg, int64_t ED, int64_t N);

// Argument checks shared by both passes (sizes, T, N, required inputs); `pass` names it.
template <typename Act>
void check_args(const ScanArgs<Act, float>& a, const char* pass);
using scan_detail::copy_or_zero;  // (common.cuh)

// ---- occupancy (scan_v3_occupancy) --------------------------------------------------------
template <typename Kernel>
KernelOccupancy occupancy_of(const char* name, Kernel kernel, int threads, size_t dynamic_smem) {
  cudaFuncAttributes fa{};
  MG_CUDA_CHECK(cudaFuncGetAttributes(&fa, kernel));
  if (dynamic_smem > 48 * 1024)
    MG_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       (int)dynamic_smem));
  int blocks = 0;
  MG_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, threads, dynamic_smem));
  KernelOccupancy o;
  o.kernel = name;
  o.threads = threads;
  o.registers = fa.numRegs;
  o.static_smem = (int)fa.sharedSizeBytes;
  o.dynamic_smem = (int)dynamic_smem;
  o.local_bytes = (int)fa.localSizeBytes;
  o.blocks_per_sm = blocks;
  o.warps_per_sm = blocks * threads / 32;
  return o;
}
void append_walk_occupancy(std::vector<KernelOccupancy>& out);  // v3_walks.cu
void append_tile_occupancy(std::vector<KernelOccupancy>& out);  // v3_tile.cu

// bwd_local: block (b, sub-segment sg, 128 channels); see v3_walks.cu.
template <typename Act>
struct LocalArgs {
  ScanArgs<Act, float> a;
  const Act* dy;
  int64_t Kt, m, sa, nseg_a;  // the plan's tiles and sub-segments
  float *mloc, *sdt;          // (B, nseg_a, ED, N), (B, nseg_a, ED): out
};
template <typename Act>
void launch_bwd_local(const LocalArgs<Act>& l);

// bwd_tile: block (b, tile, channel group); see v3_tile.cu.
template <typename Act>
struct TileArgs {
  ScanArgs<Act, float> a;
  ScanGrads<Act, float> g;
  Plan pl;
  const float* st;       // states at the tile starts: st[b][t0 / T_s][d][n]
  int64_t T_s, nc_s;
  const float* mend;     // mu at each sub-segment's end: mend[b][sg][d][n]
  float *part_A, *part_D, *part_bias;  // (B, ntiles, ED, N), (B, ntiles, ED) x 2
  float *outB, *outC;    // dB/dC (G == 1), the partials (B, L, N) per group, or atomic targets
  int64_t out_stride;    // between groups' partials (0 when G == 1 or atomic)
  bool atomic;
  bool vec4;             // ED % 4 == 0 and every (B, L, ED) pointer aligned to 4 elements
  // bf16 with N > kNG: (B, L, ED) f32 each, du, ddelta, dz's running sums over the earlier
  // groups (the outputs are rounded once, by the last group). f32: unused (the outputs hold
  // them, as before).
  float *run_du = nullptr, *run_ddelta = nullptr, *run_dz = nullptr;
};

template <typename Act>
void launch_bwd_tile(const TileArgs<Act>& t);
// dB[k] = sum over g of partB[g * BLN + k], in g order (and dC).
void launch_sum_groups(const float* partB, const float* partC, float* dB, float* dC, int64_t G,
                       int64_t BLN);
// dA, dD, dbias = the (b, tile) partials summed in order (null outputs skipped); BT = B ntiles.
void launch_param_sums(const float* part_A, const float* part_D, const float* part_bias,
                       int64_t BT, int64_t ED, int64_t N, float* dA, float* dD, float* dbias);

// ---- scratch ------------------------------------------------------------------------------
// An f32 tensor of max(n, 1) elements on the current device, not filled (caching allocator:
// freeing it after the launches that use it are enqueued is safe, stream order).
Tensor scratch(int64_t n);

}  // namespace mg::cuda::v3
