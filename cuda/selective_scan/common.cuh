// cuda/selective_scan/common.cuh — device math and host helpers shared by the CUDA scans
// (v1.cu, v2.cu; defined in common.cu). CUDA-only. The kernels themselves are declared with
// their CPU twins in ops/selective_scan/kernels.h; the plan of each version is in its file
// and in docs/cuda_scan.md.
// The scalar functions are the sequential CPU spec's (ops/selective_scan/sequential.cpp):
// softplus linear above 20 in both directions, sigmoid that never overflows, expf/log1pf
// (full-precision libdevice, no fast-math).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "core/tensor.h"
#include "ops/selective_scan/scan_args.h"

namespace mg::cuda::scan_detail {

constexpr float kSoftplusThreshold = 20.f;

__device__ __forceinline__ float sigmoidf_(float x) {
  if (x >= 0.f) return 1.f / (1.f + expf(-x));
  const float e = expf(x);
  return e / (1.f + e);
}
// delta_t from r = delta_raw + bias, and d(delta_t)/dr.
__device__ __forceinline__ float delta_of(float r, bool softplus) {
  if (!softplus) return r;
  return r > kSoftplusThreshold ? r : log1pf(expf(r));
}
__device__ __forceinline__ float delta_grad_of(float r, bool softplus) {
  if (!softplus || r > kSoftplusThreshold) return 1.f;
  return sigmoidf_(r);
}

// A zero-filled f32 scratch tensor on the current device (caching allocator, stream order).
Tensor scratch_zeros(int64_t n);
// A scratch tensor without fill.
Tensor scratch_empty(int64_t n);

// dA[d, n] = sum_b dA_part[b, d, n], dD[d] = sum_b dD_part[b, d], dbias likewise, each in
// b order (deterministic). Outputs may be null (then skipped).
void reduce_param_partials(const float* dA_part, const float* dD_part, const float* dbias_part,
                           float* dA, float* dD, float* dbias, int64_t batch, int64_t ED,
                           int64_t N);

// Empty sizes, called first by every version, with the CPU kernels' results: L = 0 is the
// identity on the state (h_last = h0, dh0 = dh_last, zeros where absent); the parameter
// gradients are sums over an empty range (B = 0 or L = 0), so zero. True when the sizes were
// empty (the outputs are then written and there is nothing to launch). Act: the activations'
// type (float or bf16); what is written here is all f32 (state and parameter gradients).
void copy_or_zero(float* dst, const float* src, int64_t n);  // below
// ED = 0 (no channel): nothing to compute (and a grid of 0 blocks is a launch error); dB and
// dC, sums over no channel, are zero.
void zero_bytes(void* dst, int64_t bytes);  // below
template <typename Act>
bool forward_if_empty(const ScanArgs<Act, float>& a) {
  if (a.L != 0 && a.ED != 0) return false;
  copy_or_zero(a.h_last, a.h0, a.B * a.ED * a.N);
  return true;
}
template <typename Act>
bool backward_if_empty(const ScanArgs<Act, float>& a, const ScanGrads<Act, float>& g) {
  if (a.B != 0 && a.L != 0 && a.ED == 0) {
    if (g.dB) zero_bytes(g.dB, a.B * a.L * a.N * int64_t(sizeof(Act)));
    if (g.dC) zero_bytes(g.dC, a.B * a.L * a.N * int64_t(sizeof(Act)));
    return true;
  }
  if (a.B != 0 && a.L != 0) return false;
  copy_or_zero(g.dA, nullptr, a.ED * a.N);
  copy_or_zero(g.dD, nullptr, a.ED);
  copy_or_zero(g.ddelta_bias, nullptr, a.ED);
  copy_or_zero(g.dh0, g.dh_last, a.B * a.ED * a.N);
  return true;
}

// dst[0, n) = src (device copy) or zeros when src is null; nothing when dst is null.
void copy_or_zero(float* dst, const float* src, int64_t n);

}  // namespace mg::cuda::scan_detail
