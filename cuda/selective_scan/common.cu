// cuda/selective_scan/common.cu — host helpers shared by the CUDA scans (common.cuh): scratch
// tensors, the fixed-order sum of per-batch parameter partials, and empty sizes.
#include "cuda/selective_scan/common.cuh"

#include <cuda_runtime.h>

#include <algorithm>

#include "cuda/check.cuh"
#include "cuda/partial_sums.h"
#include "cuda/runtime.h"

namespace mg::cuda::scan_detail {

Tensor scratch_empty(int64_t n) {
  int dev = 0;
  MG_CUDA_CHECK(cudaGetDevice(&dev));
  return Tensor::empty({std::max<int64_t>(n, 1)}, DType::f32, Device::cuda(dev));
}
Tensor scratch_zeros(int64_t n) {
  int dev = 0;
  MG_CUDA_CHECK(cudaGetDevice(&dev));
  return Tensor::zeros({std::max<int64_t>(n, 1)}, DType::f32, Device::cuda(dev));
}

namespace {
// out[k] = sum_b part[b * K + k] for k < K, in b order (cuda/partial_sums.h). part: (B, K).
void sum_over_batch(const float* part, float* out, int64_t batch, int64_t K) {
  if (!out || K == 0) return;
  sum_partials(part, out, PartialsLayout::rows(batch, K), /*accumulate=*/false,
               "selective_scan backward (parameter sums)");
}
}  // namespace

void copy_or_zero(float* dst, const float* src, int64_t n) {
  if (!dst || n == 0) return;
  if (src)
    MG_CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyDeviceToDevice, cuda_stream()));
  else
    MG_CUDA_CHECK(cudaMemsetAsync(dst, 0, n * sizeof(float), cuda_stream()));
}

void zero_bytes(void* dst, int64_t bytes) {
  if (dst && bytes > 0) MG_CUDA_CHECK(cudaMemsetAsync(dst, 0, size_t(bytes), cuda_stream()));
}

void reduce_param_partials(const float* dA_part, const float* dD_part, const float* dbias_part,
                           float* dA, float* dD, float* dbias, int64_t batch, int64_t ED,
                           int64_t N) {
  sum_over_batch(dA_part, dA, batch, ED * N);
  sum_over_batch(dD_part, dD, batch, ED);
  sum_over_batch(dbias_part, dbias, batch, ED);
}

// forward_if_empty / backward_if_empty (templates on the activation type) are in common.cuh.
// (Found in review: the versions returned early on empty sizes and left outputs unwritten.)

}  // namespace mg::cuda::scan_detail
