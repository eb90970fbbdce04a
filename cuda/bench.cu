// cuda/bench.cu — cudaEvent timing and the direct cuBLAS / cudaMemcpy peers for bench_ops.
#include "cuda/bench.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <vector>

#include "core/settings.h"
#include "cuda/check.cuh"
#include "cuda/runtime.h"

namespace mg::cuda::bench {

namespace {

// A raw device buffer freed on scope exit (the peers bypass mambagrad's allocator).
struct DeviceBuffer {
  void* p = nullptr;
  explicit DeviceBuffer(size_t bytes) { MG_CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(bytes, 1))); }
  ~DeviceBuffer() { cudaFree(p); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  float* f() const { return static_cast<float*>(p); }
};

// Deterministic values in [-1, 1] (all-zero inputs would make the GEMM peer draw less power
// than mambagrad's randn inputs).
__global__ void fill_kernel(float* p, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x)
    p[i] = __sinf((float)(i % 4093));
}

void fill(float* p, int64_t n, cudaStream_t s) {
  fill_kernel<<<1024, 256, 0, s>>>(p, n);
  check_launch("bench fill");
}

}  // namespace

double median_ms(const std::function<void()>& f, int repeats) {
  cudaStream_t s = static_cast<cudaStream_t>(stream());
  cudaEvent_t start, stop;
  MG_CUDA_CHECK(cudaEventCreate(&start));
  MG_CUDA_CHECK(cudaEventCreate(&stop));
  f();  // warm-up (and lazy initialisation: handles, allocator blocks)
  std::vector<double> times;
  for (int i = 0; i < std::max(1, repeats); ++i) {
    MG_CUDA_CHECK(cudaEventRecord(start, s));
    f();
    MG_CUDA_CHECK(cudaEventRecord(stop, s));
    MG_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    MG_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    times.push_back(ms);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

double cublas_sgemm_ms(int64_t batch, int64_t M, int64_t N, int64_t K, int repeats) {
  DeviceBuffer a((size_t)(batch * M * K) * 4), b((size_t)(batch * K * N) * 4),
      c((size_t)(batch * M * N) * 4);
  cudaStream_t s = static_cast<cudaStream_t>(stream());
  fill(a.f(), batch * M * K, s);
  fill(b.f(), batch * K * N, s);
  cublasHandle_t h;
  MG_CUBLAS_CHECK(cublasCreate(&h));
  MG_CUBLAS_CHECK(cublasSetStream(h, s));
  MG_CUBLAS_CHECK(cublasSetMathMode(h, settings().precision == Precision::tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
  const float one = 1.f, zero = 0.f;
  // Row-major C = A B as column-major C^T = B^T A^T (the same call mambagrad makes).
  double ms = median_ms([&] {
    if (batch == 1)
      MG_CUBLAS_CHECK(cublasSgemm_64(h, CUBLAS_OP_N, CUBLAS_OP_N, N, M, K, &one, b.f(), N, a.f(),
                                     K, &zero, c.f(), N));
    else
      MG_CUBLAS_CHECK(cublasSgemmStridedBatched_64(h, CUBLAS_OP_N, CUBLAS_OP_N, N, M, K, &one,
                                                   b.f(), N, K * N, a.f(), K, M * K, &zero, c.f(),
                                                   N, M * N, batch));
  }, repeats);
  cublasDestroy(h);
  return ms;
}

double memcpy_d2d_ms(int64_t bytes, int repeats) {
  DeviceBuffer src((size_t)bytes), dst((size_t)bytes);
  cudaStream_t s = static_cast<cudaStream_t>(stream());
  MG_CUDA_CHECK(cudaMemsetAsync(src.p, 0, (size_t)bytes, s));
  return median_ms([&] {
    MG_CUDA_CHECK(cudaMemcpyAsync(dst.p, src.p, (size_t)bytes, cudaMemcpyDeviceToDevice, s));
  }, repeats);
}

}  // namespace mg::cuda::bench
