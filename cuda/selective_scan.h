// cuda/selective_scan.h — the CUDA twins of the fused selective scan (f32), issue #7.
//
// Same arguments, layouts, optional inputs and saved set as mg::cpu::selective_scan_fwd /
// _bwd (ops/selective_scan_kernels.h; the math is in ops/selective_scan.h): device pointers,
// enqueued on mg::cuda::stream(). The saved set is the CPU's: chunk_states (B, ceil(L/T), ED,
// N), the state ENTERING each chunk of T steps (T = `chunk`), so the CUDA backward also
// accepts states saved by the CPU forward and vice versa. Two versions (docs/cuda_scan.md):
//
// v1 — the teaching port of the CPU loop: one thread per (b, d), the N states in registers
//   (N <= 256; N > 64 spills to local memory), t sequential. Consecutive threads are
//   consecutive channels, so u, delta, z, y loads of the (B, L, ED) layout are coalesced;
//   B_t, C_t are warp-wide broadcasts. Backward: one launch per chunk of T steps (last first):
//   replay the chunk's states from the saved boundary into a scratch (T+1, N, B*ED), run the
//   adjoint backwards, write per-(b, d) dB/dC contributions to scratch and sum them over d in
//   channel order (a second kernel): deterministic always, no atomics.
//
// v2 (default) — parallel along L. A block is (batch b, 8 consecutive channels), one WARP per
//   channel; a tile of 256 time steps is 8 consecutive steps per lane. Per state n: every lane
//   composes its 8 affine maps h -> A_bar h + delta u B (f32 FMAs), one cub::WarpScan
//   exclusive scan over the 32 lane aggregates, seeded with the carried state (the prefix
//   carried across tiles, in shared memory), then each lane walks its 8 steps: h_t, y += C h.
//   Memory hierarchy: u/delta/z/y tiles move through shared memory as (256 steps x 8
//   channels) blocks (a 32-byte row segment per step: full DRAM sectors, coalesced), then
//   live in registers; B and C tiles (256 steps x 8 states at a time) are staged in shared
//   memory once and read by all 8 channel-warps; A, D, bias are read once per (channel, n);
//   states never leave registers except the chunk-boundary states (every T steps) written
//   for the backward, and h_last.
//   Backward: tiles of Kb steps (Kb = T*floor(256/T) when T <= 256, so every tile starts on a
//   saved boundary; for T > 256 one extra forward pass re-derives 256-step boundary states
//   from the saved ones into a scratch) in reverse. Per tile and n: replay the tile's states
//   with the same warp scan from the saved boundary, then the adjoint as a REVERSE warp scan
//   (lanes mirrored with one shuffle) of mu_t = A_bar_t lambda_t = A_bar_t mu_{t+1} +
//   A_bar_t g_t C_t, seeded with mu carried from the later tile (dh_last at the end; the
//   final carry is dh0). Every gradient comes from lambda_t = g_t C_t + mu_{t+1}.
//   Cross-thread sums: dB/dC over the 8 channels of a block through shared memory in warp
//   order; across blocks either atomicAdd (deterministic() off) or, when deterministic() is
//   on, per-block partials for a bounded window of tiles (at most max(one tile, 64 MiB))
//   summed over blocks in block order by a second kernel, window by window. dA, dD,
//   d(delta_bias): per-(b, d) partials (warp shuffle trees in a fixed order), summed over b
//   in order by a final kernel. Deterministic mode is bitwise reproducible run to run.
//
// Bytes each pass must move (f32; optional tensors counted when present), for the bench:
//   forward:  reads u, delta, z (3 B*L*ED) + B, C (2 B*L*N) + A, D, bias, h0;
//             writes y (B*L*ED) + h_last + chunk_states (B*ceil(L/T)*ED*N)
//   backward: reads u, delta, z, dy (4 B*L*ED) + B, C + chunk_states + dh_last;
//             writes du, ddelta, dz (3 B*L*ED) + dB, dC (2 B*L*N) + dA, dD, dbias, dh0
//   scan_bytes_moved() returns these sums.
#pragma once
#include <cstdint>

namespace mg::cuda {

enum class ScanVersion { v1, v2 };
// The version selective_scan_fwd / _bwd run (default v2). Process-wide.
ScanVersion scan_version();
void set_scan_version(ScanVersion v);
const char* scan_version_name(ScanVersion v);

// The signatures of every forward and backward entry point below: exactly
// cpu::selective_scan_fwd<float> / _bwd<float>'s arguments (ops/selective_scan_kernels.h),
// device pointers. (C++ lets a function type declare functions, not define them: the
// definitions in the .cu files spell the parameter lists out.)
using ScanFwdFn = void(const float* u, const float* delta, const float* A, const float* Bm,
                       const float* C, const float* D, const float* z, const float* delta_bias,
                       bool delta_softplus, const float* h0, float* y, float* h_last,
                       float* chunk_states, int64_t batch, int64_t length, int64_t channels,
                       int64_t states, int64_t chunk);
using ScanBwdFn = void(const float* u, const float* delta, const float* A, const float* Bm,
                       const float* C, const float* D, const float* z, const float* delta_bias,
                       bool delta_softplus, const float* chunk_states, const float* dy,
                       const float* dh_last, float* du, float* ddelta, float* dA, float* dB,
                       float* dC, float* dD, float* dz, float* ddelta_bias, float* dh0,
                       int64_t batch, int64_t length, int64_t channels, int64_t states,
                       int64_t chunk);

// The dispatching entry points, run by scan_version().
ScanFwdFn selective_scan_fwd;
ScanBwdFn selective_scan_bwd;
// The two versions directly (same arguments), for tests and benchmarks.
ScanFwdFn selective_scan_fwd_v1, selective_scan_fwd_v2;
ScanBwdFn selective_scan_bwd_v1, selective_scan_bwd_v2;

// The bytes a forward / backward must move at least (see above), for GB/s in the benchmark.
struct ScanBytes {
  double forward = 0, backward = 0;
};
ScanBytes scan_bytes_moved(int64_t batch, int64_t length, int64_t channels, int64_t states,
                           int64_t chunk, bool has_D, bool has_z, bool has_bias, bool has_h0);

}  // namespace mg::cuda
