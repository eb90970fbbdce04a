// cuda/selective_scan/v2.cuh — v2, the selective scan parallel along L (the default CUDA
// version): the plan, and what its forward (v2_forward.cu) and backward (v2_backward.cu)
// share. The math is in ops/selective_scan/selective_scan.h, the arguments in scan_args.h,
// the teaching version v1 in v1.cu; docs/cuda_scan.md has the measurements. CUDA-only.
//
// Plan. A block is (batch b, 8 consecutive channels), one WARP per channel; a tile of 256 time
// steps is 8 consecutive steps per lane. Per state n: every lane composes its 8 affine maps
// h -> A_bar h + delta u B (f32 FMAs), one cub::WarpScan exclusive scan over the 32 lane
// aggregates, seeded with the carried state (the prefix carried across tiles, in shared
// memory), then each lane walks its 8 steps: h_t, y += C h.
// Memory hierarchy: u/delta/z/y tiles move through shared memory as (256 steps x 8 channels)
// blocks (a 32-byte row segment per step: full DRAM sectors, coalesced), then live in
// registers; B and C tiles (256 steps x 8 states at a time) are staged in shared memory once
// and read by all 8 channel-warps; A, D, bias are read once per (channel, n); states never
// leave registers except the chunk-boundary states (every T steps) written for the backward,
// and h_last.
// Backward: tiles of Kb steps (Kb = T*floor(256/T) when T <= 256, so every tile starts on a
// saved boundary; for T > 256 one extra forward pass re-derives 256-step boundary states from
// the saved ones into a scratch) in reverse. Per tile and n: replay the tile's states with the
// same warp scan from the saved boundary, then the adjoint as a REVERSE warp scan (lanes
// mirrored with one shuffle) of mu_t = A_bar_t lambda_t = A_bar_t mu_{t+1} + A_bar_t g_t C_t,
// seeded with mu carried from the later tile (dh_last at the end; the final carry is dh0).
// Every gradient comes from lambda_t = g_t C_t + mu_{t+1}.
// Cross-thread sums: dB/dC over the 8 channels of a block through shared memory in warp order;
// across blocks either atomicAdd (settings().deterministic off) or, when it is on, per-block
// partials for a bounded window of tiles (at most max(one tile, 64 MiB)) summed over blocks in
// block order by a second kernel, window by window. dA, dD, d(delta_bias): per-(b, d)
// partials (warp shuffle trees in a fixed order), summed over b in order by a final kernel.
// Deterministic mode is bitwise reproducible run to run.
//
// Indexing.
// Block = (batch b = blockIdx.y, channel group g = blockIdx.x): kWarps warps, warp w owns
// channel d = g*kWarps + w. A tile is kTile = 32*kItems time steps; lane l owns steps
// t0 + l*kItems + i, i < kItems. The scan element is the affine map h -> a h + b:
//   forward:  a = A_bar_t = exp(delta_t A_n), b = delta_t u_t B_t[n];  h_t = a h_{t-1} + b
//   backward: mu_t = A_bar_t lambda_t = A_bar_t mu_{t+1} + A_bar_t g_t C_t[n]  (time reversed)
// Compose(x, y) = "x first, then y" = (x.a y.a, y.a x.b + y.b): associative, so a lane folds
// its kItems maps sequentially and cub::WarpScan scans the 32 lane aggregates.
#pragma once
#include <cub/warp/warp_scan.cuh>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "core/bf16.h"
#include "core/error.h"
#include "cuda/act_io.cuh"
#include "cuda/check.cuh"
#include "cuda/selective_scan/common.cuh"
#include "ops/selective_scan/scan_args.h"

namespace mg::cuda::v2_detail {

using namespace scan_detail;  // delta_of, sigmoidf_, ...

// One launch of the forward kernel (v2_forward.cu): h0 has batch stride h0_stride (ED*N, or
// the saved-states stride when the backward re-derives boundaries); y, h_last, states may be
// null; states: (B, ceil(L/T), ED, N), the entering state of every T-step chunk.
// Act: the activations' type, float or bf16 (instantiated for both); the state is f32.
template <typename Act>
void launch_forward(const ScanArgs<Act, float>& p, const float* h0, int64_t h0_stride, Act* y,
                    float* h_last, float* states, int64_t T);

// (Internal linkage: each .cu file compiles its own copy, as the one file did before.)
namespace {

constexpr int kWarps = 8;                // channels per block
constexpr int kThreads = kWarps * 32;    // 256
constexpr int kItems = 8;                // consecutive steps per lane
constexpr int kTile = 32 * kItems;       // 256 steps per tile
constexpr int kNGroup = 8;               // B, C states staged in shared memory at once
constexpr int kPad = kItems + 1;         // a lane's row in a transposed tile (odd: no conflicts)
constexpr int kRow = 32 * kPad + 4;      // one channel's (or state's) tile; +4: conflict-free fill
constexpr int kMaxStates = 1024;
static_assert(kThreads == kTile, "the dB/dC channel sum gives each thread one step");

struct Affine {
  float a, b;
};
struct Compose {
  __device__ __forceinline__ Affine operator()(const Affine& x, const Affine& y) const {
    return {x.a * y.a, fmaf(y.a, x.b, y.b)};
  }
};
using WarpScan = cub::WarpScan<Affine>;

__device__ __forceinline__ Affine shfl_affine(Affine v, int src) {
  return {__shfl_sync(0xffffffffu, v.a, src), __shfl_sync(0xffffffffu, v.b, src)};
}
// Activation loads and stores (ld, st): cuda/act_io.cuh, the only place the activation type
// shows (the kernels are templates on Act = float or mg::bf16).

// The position of lane l's item i inside a transposed tile row.
__device__ __forceinline__ int slot(int lane, int i) { return lane * kPad + i; }

// Tile rows [t0, t_end) x channels [c0, c0 + kWarps) of a (B, L, ED) tensor -> s[w * kRow +
// slot] (0 outside). Consecutive threads take consecutive channels of one step: each step's
// kWarps floats are one 32-byte segment (16 bytes in bf16).
template <typename Act>
__device__ void load_tile(const Act* __restrict__ src, int64_t b, int64_t L, int64_t ED,
                          int64_t t0, int64_t t_end, int64_t c0, float* s) {
  for (int k = threadIdx.x; k < kTile * kWarps; k += kThreads) {
    const int tt = k / kWarps, w = k % kWarps;
    const int64_t t = t0 + tt, d = c0 + w;
    s[w * kRow + slot(tt / kItems, tt % kItems)] =
        (t < t_end && d < ED) ? ld(src, (b * L + t) * ED + d) : 0.f;
  }
}
template <typename Act>
__device__ void store_tile(const float* s, int64_t b, int64_t L, int64_t ED, int64_t t0,
                           int64_t t_end, int64_t c0, Act* __restrict__ dst) {
  for (int k = threadIdx.x; k < kTile * kWarps; k += kThreads) {
    const int tt = k / kWarps, w = k % kWarps;
    const int64_t t = t0 + tt, d = c0 + w;
    if (t < t_end && d < ED) {
      const float v = s[w * kRow + slot(tt / kItems, tt % kItems)];  // (read first, as before)
      st(dst, (b * L + t) * ED + d, v);
    }
  }
}
// States [n0, n0 + ng) of B or C (B, L, N), steps [t0, t_end) -> s[nn * kRow + slot].
template <typename Act>
__device__ void stage_states(const Act* __restrict__ src, int64_t b, int64_t L, int64_t N,
                             int64_t t0, int64_t t_end, int64_t n0, int ng, float* s) {
  for (int k = threadIdx.x; k < kTile * ng; k += kThreads) {
    const int tt = k / ng, nn = k % ng;
    const int64_t t = t0 + tt;
    s[nn * kRow + slot(tt / kItems, tt % kItems)] = t < t_end ? ld(src, (b * L + t) * N + n0 + nn) : 0.f;
  }
}

__device__ __forceinline__ int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

__device__ __forceinline__ float warp_sum(float v) {  // a fixed shuffle tree
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// The kernels read the sizes and inputs from `p`, a ScanArgs<Act, float> passed by value; the
// outputs (which the re-derivation pass points elsewhere) come as separate parameters.

// A tile of a (B, L, ED) tensor into registers, through s_tile (free before and after the
// call): r[i] = src at warp w's channel and lane l's step t0 + l*kItems + i (0 past t_end).
template <typename Act>
__device__ __forceinline__ void tile_to_regs(const Act* __restrict__ src,
                                             const ScanArgs<Act, float>& p, int64_t b, int64_t t0,
                                             int64_t t_end, int64_t c0, float* s_tile,
                                             float (&r)[kItems]) {
  const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // the previous readers of s_tile are done
  load_tile(src, b, p.L, p.ED, t0, t_end, c0, s_tile);
  __syncthreads();
#pragma unroll
  for (int i = 0; i < kItems; ++i) r[i] = s_tile[w * kRow + slot(lane, i)];
}
// The first loads of a tile, in the forward and the backward alike: u_r[i] = u_t and
// dt_r[i] = delta_t = softplus(delta_raw_t + bias), 0 on padded steps t >= t_end (which the
// scans then treat as the identity).
template <typename Act>
__device__ __forceinline__ void load_u_delta(const ScanArgs<Act, float>& p, int64_t b, int64_t t0,
                                             int64_t t_end, int64_t c0, float bias,
                                             float* s_tile, float (&u_r)[kItems],
                                             float (&dt_r)[kItems]) {
  const int lane = threadIdx.x % 32;
  tile_to_regs(p.u, p, b, t0, t_end, c0, s_tile, u_r);
  tile_to_regs(p.delta, p, b, t0, t_end, c0, s_tile, dt_r);
#pragma unroll
  for (int i = 0; i < kItems; ++i) {
    const bool valid = t0 + lane * kItems + i < t_end;
    dt_r[i] = valid ? delta_of(dt_r[i] + bias, p.delta_softplus) : 0.f;
  }
}

void check_v2(int64_t B, int64_t N, int64_t chunk) {
  MG_CHECK(chunk >= 1, "selective_scan (CUDA v2): chunk T must be >= 1, got ", chunk);
  // The batch index is blockIdx.y, limited to 65535 by CUDA (v1 has no such limit).
  MG_CHECK(B <= 65535, "selective_scan (CUDA v2): batch ", B,
           " exceeds the grid's 65535 rows; split the batch or use v1 (Settings::cuda_scan)");
  MG_CHECK(N >= 1 && N <= kMaxStates, "selective_scan (CUDA v2): supports 1 <= N <= ",
           kMaxStates, " states, got ", N);
}

template <typename K>
void allow_dynamic_smem(K kernel, size_t bytes) {
  MG_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
}

}  // namespace
}  // namespace mg::cuda::v2_detail
