// cuda/selective_scan/v3.cuh — v3's plan, device helpers and launchers, shared by
// cuda/selective_scan/v3.cu (forward, entry points) and v3_backward.cu. CUDA-only.
//
// ==== Design (issue #12; the numbers behind it are in docs/cuda_scan.md, "v3") ============
// The two numbers at B 1, ED 1024, N 16, L 2^15 (T 64, D, z, bias present): the forward must
// move 574 MB (0.141 ms at 4.06 TB/s) and do B L ED N = 537 M state updates, each one exp
// (MUFU ex2: 16/clk/SM x 132 SMs x 1.98 GHz = 4.18 T/s -> 0.128 ms) and ~6 FMA-pipe ops
// (33.4 T/s -> 0.1 ms). Memory and MUFU are within 10% of each other, so the forward needs
// every SM busy on both; the backward moves 981 MB (0.24 ms) but does ~40 instructions per
// update (~0.64 ms issue-bound): it is compute-bound. Parallelism: B ED N = 16 K independent
// recurrences at B 1 — so L itself must be split across threads, with the affine maps
// h -> a h + b composed across the pieces (associative).
//
// Forward: three kernels, all with a thread per channel d (consecutive lanes = consecutive
// channels: every u/delta/z/y access of the (B, L, ED) layout is a 128-byte line per warp) and
// the 16 states of a group in registers, walking a SEGMENT of S steps sequentially:
//   walk<kLocal>    per (b, segment s, d): the state at the segment's end from zero (hloc) and
//                   the segment's sum of delta (sdt): reads u, delta, B.
//   combine<fwd>    per (b, d, n), sequentially over segments: h_in[s] = h,
//                   h <- exp2(A log2e sdt[s]) h + hloc[s] (the product of a segment's A_bar is
//                   exp(A sum delta): A is constant in time); h_in overwrites hloc.
//   walk<kForward>  per (b, s, d): from h_in[s], the real walk: y, the chunk states at
//                   t % T == 0, h_last (last segment).
// S is chosen from the shapes (v3_plan) so that B ED ceil(L/S) >= 128 K threads, S >= 64 and
// S >= 4N (the hloc round trip then costs <= 1/4 of one (B, L, ED) tensor).
// Price: each update's exp is computed twice (walk_local and walk) and u, delta are read
// twice; the alternative single pass (a chained scan across blocks with decoupled look-back)
// was rejected for its inter-block spin-waits, which cannot be checked without a GPU.
//
// Backward: tiles of Kt steps (Kt = T floor(256/T) for T <= 256, so every tile starts on a
// saved state; for T > 256, Kt = 256 and walk<kRederive> first re-derives the states at
// multiples of 256 from the saved chunk starts). Three kernels and two sums:
//   bwd_local       per (b, sub-segment, d) (a tile split into m sub-segments for
//                   parallelism), walking backwards from zero: the adjoint mu at the
//                   sub-segment's start (mloc) and sdt; reads dy, z, delta, C. No states
//                   needed: mu_t = A_bar_t (g_t C_t + mu_{t+1}).
//   combine<rev>    per (b, d, n), sub-segments last first, from dh_last: mend[s] = mu (mu at
//                   the sub-segment's end), mu <- exp2(A log2e sdt) mu + mloc; the final mu is
//                   dh0.
//   bwd_tile        block (b, tile, channel group g), 8 warps = 8 channels of a sub-batch,
//                   looping over the group's sub-batches; lane l owns steps t0 + 8l .. +7.
//                   Per state n: replay the tile's states (forward warp scan seeded with the
//                   saved state at t0), the adjoint (reverse warp scan seeded with mend at the
//                   tile's end), every gradient. dB, dC (sums over channels) are added over the
//                   block's 8 warps in warp order and over its sub-batches in order in shared
//                   memory; over groups by partials summed in g order (deterministic) or
//                   atomics (deterministic off). dA, dD, dbias: per-(b, tile, d) partials
//                   summed over (b, tile) in order.
// Where values live: states and adjoints in registers (16 per thread in the walks, 8 items
// per lane in bwd_tile); B/C windows (32 steps x 16 states) and tiles in shared memory;
// hloc/h_in, mloc/mend, sdt, partials in global scratch (caching allocator); nothing of size
// (B, L, ED, N) is ever stored.
//
// N: the states are processed in groups of 16 (kNG), zero-filled past N (an unused lane's
// A, B, C, h are 0, so it stays 0): N = 16 is one full group; any N >= 1 works (N = 17 costs
// two groups). Numerics: f32 state and accumulation; A_bar = ex2.approx.ftz(delta A log2 e)
// (one MUFU op; results below 2^-126 flush to exactly 0); softplus = log1pf(expf) below 20,
// linear above, in both passes; no division by a product of A_bar anywhere.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "cuda/check.cuh"
#include "cuda/selective_scan/v3.h"
#include "ops/selective_scan/scan_args.h"

namespace mg::cuda::v3 {

// ---- constants ----------------------------------------------------------------------------
constexpr int kNG = 16;              // states per group (registers of a walk thread)
constexpr int kWalkThreads = 128;    // channels per walk block
constexpr int kWin = 32;             // steps of B/C staged per window in the walks
constexpr int kW = 8;                // warps per bwd_tile block = channels per sub-batch
constexpr int kK = 8;                // consecutive steps per lane in bwd_tile
constexpr int kTile = 32 * kK;       // 256 steps
constexpr int kTileThreads = 32 * kW;  // 256 threads
constexpr int kRow = 292;            // a tile row in shared memory (see pos())
constexpr int64_t kTargetWalkThreads = 131072;  // ~ 132 SMs x 1024 threads
constexpr int64_t kTargetTileBlocks = 264;      // 2 resident bwd_tile blocks x 132 SMs
constexpr float kLog2e = 1.4426950408889634f;
static_assert(kTileThreads == kTile, "the dB/dC sum pass gives each thread one step");

constexpr int kAccRow = kTile + 1;    // a dB/dC accumulator row (odd: the flush is conflict-free)
// Shared memory of bwd_tile, in floats: B, C (kNG rows of kRow), the dB/dC accumulators (kNG
// rows of kAccRow each), and one multi-use area: 4 channel tiles (u, delta, dy, z) or the
// double-buffered per-warp dB/dC contributions (2 x 2 x kW rows).
constexpr int kTileSmemFloats = 2 * kNG * kRow + 2 * kNG * kAccRow + 4 * kW * kRow;
constexpr size_t kTileSmemBytes = kTileSmemFloats * sizeof(float);  // 107,648
static_assert((2 * kNG * kRow + 2 * kNG * kAccRow) % 4 == 0, "the tiles must be 16-byte aligned");

// ---- the plan: every decomposition choice, from the shapes alone (deterministic) ---------
struct Plan {
  int64_t ngroups = 0;  // ceil(N / 16)
  int64_t S = 0, nseg = 0;       // forward segments
  int64_t nc = 0;                // saved chunks, ceil(L / T)
  int64_t Kt = 0, ntiles = 0;    // backward tiles
  bool rederive = false;         // T > 256: states at multiples of Kt re-derived first
  int64_t m = 0, sa = 0, nseg_a = 0;  // bwd_local: m sub-segments of sa steps per tile
  int64_t nsb = 0, spg = 0, G = 0;    // sub-batches of kW channels, per group, groups
};

__host__ __device__ inline int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// A walk segment: enough segments for kTargetWalkThreads threads, at least max(64, 4N) steps.
inline int64_t v3_segment(int64_t L, int64_t lanes, int64_t N) {
  const int64_t smin = std::max<int64_t>(64, 4 * N);
  const int64_t want = std::max<int64_t>(1, cdiv(kTargetWalkThreads, std::max<int64_t>(lanes, 1)));
  return std::min(std::max(cdiv(L, want), smin), std::max<int64_t>(L, 1));
}

inline Plan v3_plan(int64_t B, int64_t L, int64_t ED, int64_t N, int64_t T) {
  Plan p;
  p.ngroups = cdiv(N, kNG);
  const int64_t lanes = B * ED * p.ngroups;
  p.S = v3_segment(L, lanes, N);
  p.nseg = cdiv(L, p.S);
  p.nc = cdiv(L, T);
  p.rederive = T > kTile;
  p.Kt = p.rederive ? kTile : T * (kTile / T);
  p.ntiles = cdiv(L, p.Kt);
  const int64_t sa_want = v3_segment(L, lanes, N);
  p.m = std::min(std::max<int64_t>(cdiv(p.Kt, sa_want), 1), p.Kt);
  p.sa = cdiv(p.Kt, p.m);
  p.nseg_a = p.ntiles * p.m;
  p.nsb = cdiv(ED, kW);
  const int64_t g_want = std::max<int64_t>(1, kTargetTileBlocks / std::max<int64_t>(B * p.ntiles, 1));
  const int64_t g_cap = std::max<int64_t>(1, ED / (2 * N));  // partials <= one (B, L, ED) tensor
  const int64_t G = std::min({g_want, p.nsb, g_cap});
  p.spg = cdiv(p.nsb, G);
  p.G = cdiv(p.nsb, p.spg);  // no empty group
  return p;
}

// ---- device math --------------------------------------------------------------------------
constexpr float kSoftplusThreshold = 20.f;

// 2^x in one MUFU op; results below 2^-126 (and subnormal inputs) flush to 0.
__device__ __forceinline__ float ex2(float x) {
  float r;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
  return r;
}
__device__ __forceinline__ float sigmoidf_(float x) {  // never overflows
  if (x >= 0.f) return 1.f / (1.f + expf(-x));
  const float e = expf(x);
  return e / (1.f + e);
}
// delta_t from r = delta_raw + bias, and d(delta_t)/dr (the sequential spec's functions).
__device__ __forceinline__ float delta_of(float r, bool softplus) {
  if (!softplus) return r;
  return r > kSoftplusThreshold ? r : log1pf(expf(r));
}
__device__ __forceinline__ float delta_grad_of(float r, bool softplus) {
  if (!softplus || r > kSoftplusThreshold) return 1.f;
  return sigmoidf_(r);
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

// Rows [t0, t0 + nrows) x states [n0, n0 + kNG) of B or C (B, L, N) -> s[tt * kNG + j]
// (0 past nrows or N), by a block of kWalkThreads threads. Row-major: with N = 16 the block
// reads one contiguous run. Rows are 64 bytes: 16-byte aligned for the float4 reads.
__device__ __forceinline__ void stage_rows(const float* __restrict__ X, float* s, int64_t b,
                                           int64_t t0, int nrows, int64_t n0, int64_t L,
                                           int64_t N) {
  for (int k = threadIdx.x; k < kWin * kNG; k += kWalkThreads) {
    const int tt = k / kNG, j = k % kNG;
    s[k] = (tt < nrows && n0 + j < N) ? __ldg(X + (b * L + t0 + tt) * N + n0 + j) : 0.f;
  }
}

// ---- launchers (v3.cu) --------------------------------------------------------------------
enum class WalkMode { kLocal, kForward, kRederive };

// walk<kLocal>: hloc, sdt, dt out. walk<kForward>: from hin and dt; y, h_last, states
// (chunk_states).
// walk<kRederive>: from hin = the saved chunk starts (segments = chunks of T); states out.
struct WalkArgs {
  ScanArgs<float> a;
  const float* hin = nullptr;  // (B, nseg, ED, N): state entering each segment (not kLocal)
  int64_t S = 0, nseg = 0;     // segment length, count
  float* hloc = nullptr;       // kLocal: (B, nseg, ED, N) state at the segment end from 0
  float* sdt = nullptr;        // kLocal: (B, nseg, ED) sum of delta over the segment
  float* dt = nullptr;         // (B, L, ED) delta_t = softplus(delta + bias): kLocal writes it,
                               // kForward reads it (one softplus per step, not two)
  float* y = nullptr;          // kForward
  float* h_last = nullptr;     // kForward
  float* states = nullptr;     // kForward / kRederive: state at t % T_out == 0, may be null
  int64_t T_out = 1, nc_out = 0;
};
void launch_walk(WalkMode mode, const WalkArgs& w);
// Sequential over segments (reverse: last first), in place: agg[s] <- the state (mu) entering
// segment s from the left (right); `seed` (h0 / dh_last, may be null: 0); `final_out` gets the
// final value (dh0) when not null.
void launch_combine(bool reverse, float* agg, const float* sdt, const float* A, const float* seed,
                    float* final_out, int64_t B, int64_t nseg, int64_t ED, int64_t N);

// Argument checks shared by both passes (sizes, T, N, required inputs); `pass` names it.
void check_args(const ScanArgs<float>& a, const char* pass);
// dst[0, n) = src (device copy) or zeros when src is null; nothing when dst is null.
void copy_or_zero(float* dst, const float* src, int64_t n);

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
void append_forward_occupancy(std::vector<KernelOccupancy>& out);   // v3.cu
void append_backward_occupancy(std::vector<KernelOccupancy>& out);  // v3_backward.cu

// ---- scratch ------------------------------------------------------------------------------
// An f32 tensor of max(n, 1) elements on the current device, not filled (caching allocator:
// freeing it after the launches that use it are enqueued is safe, stream order).
Tensor scratch(int64_t n);

}  // namespace mg::cuda::v3
