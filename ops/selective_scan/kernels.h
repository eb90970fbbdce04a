// ops/selective_scan/kernels.h — every selective-scan kernel, CPU and CUDA, in one list.
//
// Each takes the arguments defined once in scan_args.h (sizes, inputs, outputs; optional ones
// null) and nothing else:
//
//   forward:  void (const ScanArgs<T>& a)                         writes y, h_last, chunk_states
//   backward: void (const ScanArgs<T>& a, const ScanGrads<T>& g)  reads chunk_states (or h0)
//
// The math is in selective_scan.h; which kernel runs is decided in one place,
// choose_scan_kernel() (selective_scan.cpp), from settings() and the sizes. The kernels never
// call each other. A forward and the backward of the same family go together: the backward
// reads what its forward saved (every family except the sequential saves chunk_states, the
// state entering each chunk of a.T steps, in one layout: CPU and CUDA can read each other's).
#pragma once
#include <cstdint>
#include <optional>

#include "core/bf16.h"
#include "core/device.h"
#include "ops/selective_scan/scan_args.h"

namespace mg {

template <typename T, typename S = T> using ScanForwardFn = void(const ScanArgs<T, S>& a);
template <typename T, typename S = T>
using ScanBackwardFn = void(const ScanArgs<T, S>& a, const ScanGrads<T, S>& g);

namespace cpu {

// ---- the readable spec (sequential.cpp): one (b, d) at a time, scalar std:: math, one thread.
// Saves nothing: the backward replays each (b, d) from a.h0 keeping its (L+1)*N states.
// S (state, parameters, every sum) may be wider than T (activations); instantiated for S = T
// (f32, f64) and for <bf16, float>: the reference of the bf16 CUDA kernels (bf16 read widened,
// the state and every sum in f32, each output rounded to bf16 once: exactly the f32 spec run
// on widened inputs with its outputs rounded).
template <typename T, typename S>
void selective_scan_sequential_forward(const ScanArgs<T, S>& a);
template <typename T, typename S>
void selective_scan_sequential_backward(const ScanArgs<T, S>& a, const ScanGrads<T, S>& g);

// ---- the fused kernel (fast.cpp): vectorised over channels, OpenMP over (batch, channel
// block), chunked recomputation. Any N; f32 and f64.
template <typename T> void selective_scan_forward(const ScanArgs<T>& a);
template <typename T> void selective_scan_backward(const ScanArgs<T>& a, const ScanGrads<T>& g);

// ---- the same algorithm for f32 with N a compile-time constant (fixed.cpp): the state in
// registers. Only for the N below; any other N throws.
constexpr bool fixed_kernel_supports(int64_t N) { return N == 4 || N == 8 || N == 16 || N == 32; }
void selective_scan_fixed_forward(const ScanArgs<float>& a);
void selective_scan_fixed_backward(const ScanArgs<float>& a, const ScanGrads<float>& g);

// ---- one token (step.cpp), recurrent inference: a.L == 1, a.h0 = the state before the token,
// a.h_last = the state after it (h0 == h_last updates the state in place, as decoding does).
// The fast kernels' functions and order of operations, so a step reproduces their numbers
// (bitwise the N-specialised kernel's). No backward (inference only); a.chunk_states ignored.
template <typename T, typename S>
void selective_scan_step_forward(const ScanArgs<T, S>& a);

}  // namespace cpu

// ---- the CUDA twins (cuda/selective_scan/, docs/cuda_scan.md): f32 (v2, v3 also bf16 activations),
// device pointers, enqueued on the backend's stream. Declared in every build; defined (and
// callable) in a CUDA build.
//   v1 (v1.cu): the teaching port of the CPU loop, one thread per (b, d).
//   v2 (v2.cuh, v2_forward.cu, v2_backward.cu): parallel along L, one warp per channel,
//      warp scans over 256-step tiles.
//   v3 (v3.cuh, v3.cu, v3_walks.cu, v3_tile.cu): L split into segments walked by one thread
//      per channel and combined per state, a tiled warp-scan backward (issue 12; compiled, not
//      yet run on a GPU).
// All accept empty sizes (B = 0 or L = 0) with the CPU kernels' results.
#ifdef MG_WITH_CUDA
inline constexpr bool kHaveCudaScan = true;  // the kernels below are defined in this build
#else
inline constexpr bool kHaveCudaScan = false;
#endif
namespace cuda {
void selective_scan_forward_v1(const ScanArgs<float>& a);
void selective_scan_backward_v1(const ScanArgs<float>& a, const ScanGrads<float>& g);
void selective_scan_forward_v2(const ScanArgs<float>& a);
void selective_scan_backward_v2(const ScanArgs<float>& a, const ScanGrads<float>& g);
// v2 with bf16 activations (mixed precision): u, delta, z, B, C, y and du, ddelta, dz, dB, dC in
// bf16 (read widened, written rounded to nearest even once); A, D, delta_bias, h0, h_last,
// chunk_states, dA, dD, ddelta_bias, dh0, dh_last and every sum in f32. The same kernels as
// the f32 v2 (templates on the activation type). Compiled, not yet run on a GPU.
void selective_scan_forward_v2(const ScanArgs<bf16, float>& a);
void selective_scan_backward_v2(const ScanArgs<bf16, float>& a, const ScanGrads<bf16, float>& g);
void selective_scan_forward_v3(const ScanArgs<float>& a);
void selective_scan_backward_v3(const ScanArgs<float>& a, const ScanGrads<float>& g);
// v3 with bf16 activations: the same contract as v2's bf16 overloads above (the same kernels as
// the f32 v3, templates on the activation type). Compiled, not yet run on a GPU.
void selective_scan_forward_v3(const ScanArgs<bf16, float>& a);
void selective_scan_backward_v3(const ScanArgs<bf16, float>& a, const ScanGrads<bf16, float>& g);
// One token (step.cu), the twin of cpu::selective_scan_step_forward: a.L == 1, a.h0 (may be
// null) and a.h_last (required) the state before and after, possibly the same buffer.
void selective_scan_step_forward(const ScanArgs<float>& a);
}  // namespace cuda

// ---- the choice -------------------------------------------------------------------------------
// A forward kernel and the backward that reads what it saved.
template <typename T, typename S = T>
struct ScanKernelPair {
  const char* name;  // "sequential", "fast", "fixed", "cuda v1", "cuda v2", "cuda v2 bf16", ...
  ScanForwardFn<T, S>* forward;
  ScanBackwardFn<T, S>* backward;
  bool saves_chunk_states = true;  // false: the backward replays from h0 (the sequential spec)
};

// The kernel the op runs for tensors on `device` with N states, under the current settings()
// (scan_kernel for CPU tensors, cuda_scan for CUDA ones). Defined in selective_scan.cpp, the
// one place that decides; tests and benchmarks call it to run exactly what the op runs.
// T = float or double; a CUDA device needs float and a CUDA build (else mg::Error).
template <typename T>
ScanKernelPair<T> choose_scan_kernel(Device device, int64_t N);
// Mixed precision (every activation bf16): the kernel that reads and writes bf16 natively, if
// there is one for `device` under the current settings (CUDA v2 or v3 in a CUDA build; the CPU's
// sequential spec when settings().scan_kernel is sequential); nullopt
// means the op widens the bf16 activations for choose_scan_kernel<float>'s kernel instead.
// Defined next to choose_scan_kernel, which says why.
std::optional<ScanKernelPair<bf16, float>> choose_scan_kernel_bf16(Device device, int64_t N);

// ---- the bytes a pass must move at least (every input read once, every output written once;
// optional tensors counted when their pointer is set), for GB/s in the CUDA benchmark:
//   forward:  reads u, delta, z (3 B*L*ED) + Bm, C (2 B*L*N) + A, D, bias, h0;
//             writes y (B*L*ED) + h_last + chunk_states (B*ceil(L/T)*ED*N)
//   backward: reads u, delta, z, dy (4 B*L*ED) + Bm, C + chunk_states + dh_last;
//             writes du, ddelta, dz (3 B*L*ED) + dB, dC (2 B*L*N) + dA, dD, dbias, dh0
// Activations (the BLE and BLN terms) count sizeof(T) bytes each, the parameters and states
// sizeof(S): with bf16 activations (T = bf16, S = float) the (B, L, .) tensors cost half.
struct ScanBytes {
  double forward = 0, backward = 0;
};
template <typename T, typename S = T>
ScanBytes scan_bytes_moved(const ScanArgs<T, S>& a) {
  const bool has_D = a.D, has_z = a.z, has_bias = a.delta_bias, has_h0 = a.h0;
  const double f = sizeof(T), fs = sizeof(S);
  const double BLE = double(a.B) * a.L * a.ED, BLN = double(a.B) * a.L * a.N;
  const double EN = double(a.ED) * a.N, state = double(a.B) * a.ED * a.N;
  const double saved = double(a.B) * scan_num_chunks(a.L, a.T) * a.ED * a.N;
  const double vec = (has_D ? a.ED : 0) + (has_bias ? a.ED : 0);
  ScanBytes r;
  r.forward = f * ((2 + has_z) * BLE + 2 * BLN + BLE)                           // u, delta, z, B, C; y
              + fs * (EN + vec + (has_h0 ? state : 0) + state + saved);         // A, D, bias, h0; h_last, states
  r.backward = f * ((3 + has_z) * BLE + 2 * BLN + (2 + has_z) * BLE + 2 * BLN)  // u, delta, z, dy, B, C; du, ddelta, dz, dB, dC
               + fs * (EN + vec + saved + state + EN + vec + (has_h0 ? state : 0));  // A, D, bias, states, dh_last; dA, dD, dbias, dh0
  return r;
}

}  // namespace mg
