// cuda/selective_scan_common.cuh — device math and helpers shared by the two CUDA scans
// (cuda/selective_scan.cu: v1 and the dispatch; cuda/selective_scan_v2.cu). CUDA-only.
// The scalar functions are the sequential CPU spec's (ops/selective_scan_sequential.cpp):
// softplus linear above 20 in both directions, sigmoid that never overflows, expf/log1pf
// (full-precision libdevice, no fast-math).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "core/tensor.h"

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

}  // namespace mg::cuda::scan_detail
