// cuda/check.cuh — checked CUDA/cuBLAS calls and 1-D launch helpers, for .cu files only.
//
//   MG_CUDA_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, s));
//   MG_CUBLAS_CHECK(cublasSgemm(...));
//   auto [grid, block] = launch_1d(n);
//   my_kernel<<<grid, block, 0, cuda_stream()>>>(...);
//   check_launch("exp_forward");
//
// A failed call throws mg::Error naming the call's text, file:line and the CUDA error string.
// Kernel launches are asynchronous: check_launch catches launch errors (bad configuration),
// while a fault inside a kernel surfaces at the next synchronising call. Set the environment
// variable MG_CUDA_SYNC_CHECK=1 to synchronise after every launch so the error names the op
// that caused it (slow; for debugging).
#pragma once
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "core/bf16.h"
#include "core/error.h"
#include "cuda/runtime.h"

namespace mg::cuda {

namespace detail {
[[noreturn]] void throw_cuda_error(cudaError_t err, const char* call, const char* file, int line);
[[noreturn]] void throw_cublas_error(cublasStatus_t st, const char* call, const char* file,
                                     int line);
}  // namespace detail

// After each kernel launch: throws mg::Error naming `op` if the launch failed (and, with
// MG_CUDA_SYNC_CHECK=1, if the kernel itself faulted).
void check_launch(const char* op);

// The stream as its CUDA type.
inline cudaStream_t cuda_stream() { return static_cast<cudaStream_t>(stream()); }

// Grid-stride 1-D launches: 256 threads a block, at most kMaxGrid1d blocks (each thread then
// loops with stride gridDim.x * blockDim.x), at least one block so n == 0 is a valid launch.
constexpr int kBlock1d = 256;
constexpr int64_t kMaxGrid1d = 65535;
struct Launch1d {
  unsigned grid;
  unsigned block;
};
inline Launch1d launch_1d(int64_t n, int block = kBlock1d) {
  int64_t blocks = (n + block - 1) / block;
  return {(unsigned)std::clamp<int64_t>(blocks, 1, kMaxGrid1d), (unsigned)block};
}

// ---- elementwise maps -------------------------------------------------------------------
// y[i] = f(a[i], b[i], c[i]) for i in [0, n); a null input passes 0. When every pointer is
// 16-byte aligned (always, for a tensor's own storage: cudaMalloc blocks are 256-aligned) the
// loop moves float4s (one 16-byte load per input per thread and step), then finishes the
// n % 4 tail element by element. f is a __device__ lambda or functor (float, float, float).
template <typename F>
__global__ void map_kernel(const float* __restrict__ a, const float* __restrict__ b,
                           const float* __restrict__ c, float* __restrict__ y, int64_t n,
                           bool vec4, F f) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  const int64_t tid = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  int64_t done = 0;
  if (vec4) {
    const float4 zero = make_float4(0.f, 0.f, 0.f, 0.f);
    const int64_t n4 = n / 4;
    for (int64_t q = tid; q < n4; q += stride) {
      float4 av = a ? reinterpret_cast<const float4*>(a)[q] : zero;
      float4 bv = b ? reinterpret_cast<const float4*>(b)[q] : zero;
      float4 cv = c ? reinterpret_cast<const float4*>(c)[q] : zero;
      float4 r;
      r.x = f(av.x, bv.x, cv.x);
      r.y = f(av.y, bv.y, cv.y);
      r.z = f(av.z, bv.z, cv.z);
      r.w = f(av.w, bv.w, cv.w);
      reinterpret_cast<float4*>(y)[q] = r;
    }
    done = n4 * 4;
  }
  for (int64_t i = done + tid; i < n; i += stride)
    y[i] = f(a ? a[i] : 0.f, b ? b[i] : 0.f, c ? c[i] : 0.f);
}

inline bool aligned16(const void* p) { return p == nullptr || (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

template <typename F>
void launch_map(const char* op, const float* a, const float* b, const float* c, float* y,
                int64_t n, F f) {
  if (n <= 0) return;
  bool vec4 = aligned16(a) && aligned16(b) && aligned16(c) && aligned16(y);
  Launch1d l = launch_1d(vec4 ? (n + 3) / 4 : n);
  map_kernel<<<l.grid, l.block, 0, cuda_stream()>>>(a, b, c, y, n, vec4, f);
  check_launch(op);
}

// The same map on bf16 storage (mixed precision): every input widened to f32 (exact), f applied
// in f32, the result rounded once to nearest even. Scalar loads (2 bytes a value).
template <typename F>
__global__ void map_bf16_kernel(const __nv_bfloat16* __restrict__ a,
                                const __nv_bfloat16* __restrict__ b,
                                const __nv_bfloat16* __restrict__ c, __nv_bfloat16* __restrict__ y,
                                int64_t n, F f) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
    y[i] = __float2bfloat16_rn(f(a ? __bfloat162float(a[i]) : 0.f, b ? __bfloat162float(b[i]) : 0.f,
                                 c ? __bfloat162float(c[i]) : 0.f));
}

template <typename F>
void launch_map(const char* op, const bf16* a, const bf16* b, const bf16* c, bf16* y, int64_t n,
                F f) {
  if (n <= 0) return;
  auto dev = [](const bf16* p) { return reinterpret_cast<const __nv_bfloat16*>(p); };
  Launch1d l = launch_1d(n);
  map_bf16_kernel<<<l.grid, l.block, 0, cuda_stream()>>>(
      dev(a), dev(b), dev(c), reinterpret_cast<__nv_bfloat16*>(y), n, f);
  check_launch(op);
}

}  // namespace mg::cuda

#define MG_CUDA_CHECK(call)                                                        \
  do {                                                                             \
    cudaError_t mg_cuda_err_ = (call);                                             \
    if (mg_cuda_err_ != cudaSuccess)                                               \
      ::mg::cuda::detail::throw_cuda_error(mg_cuda_err_, #call, __FILE__, __LINE__); \
  } while (0)

#define MG_CUBLAS_CHECK(call)                                                          \
  do {                                                                                 \
    cublasStatus_t mg_cublas_st_ = (call);                                             \
    if (mg_cublas_st_ != CUBLAS_STATUS_SUCCESS)                                        \
      ::mg::cuda::detail::throw_cublas_error(mg_cublas_st_, #call, __FILE__, __LINE__); \
  } while (0)
