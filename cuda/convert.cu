// cuda/convert.cu — the f32 <-> bf16 cast kernels and the bf16 add (declared in ops/convert.h).
//
// mg::bf16 (core/bf16.h) and __nv_bfloat16 are both the top 16 bits of an IEEE f32 in 2 bytes,
// so the device pointers are reinterpreted. __float2bfloat16_rn rounds to nearest, ties to
// even, and keeps NaN a NaN: the CPU's bf16::from_f32 (tests/test_cuda_bf16.cpp compares them
// bit for bit). One grid-stride elementwise loop each; memory-bound (2 + 4 bytes an element).
#include <cuda_bf16.h>

#include "cuda/check.cuh"
#include "ops/convert.h"

namespace mg::cuda {

namespace {

static_assert(sizeof(__nv_bfloat16) == sizeof(bf16), "bf16 layouts must match");

// src, dst (n).
__global__ void f32_to_bf16_kernel(const float* __restrict__ src, __nv_bfloat16* __restrict__ dst,
                                   int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x)
    dst[i] = __float2bfloat16_rn(src[i]);
}

// src, dst (n).
__global__ void bf16_to_f32_kernel(const __nv_bfloat16* __restrict__ src, float* __restrict__ dst,
                                   int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x)
    dst[i] = __bfloat162float(src[i]);
}

// a, b, y (n); y may alias a or b.
__global__ void add_bf16_kernel(const __nv_bfloat16* a, const __nv_bfloat16* b,
                                __nv_bfloat16* y, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x)
    y[i] = __float2bfloat16_rn(__bfloat162float(a[i]) + __bfloat162float(b[i]));
}

const __nv_bfloat16* dev(const bf16* p) { return reinterpret_cast<const __nv_bfloat16*>(p); }
__nv_bfloat16* dev(bf16* p) { return reinterpret_cast<__nv_bfloat16*>(p); }

}  // namespace

void f32_to_bf16(const float* src, bf16* dst, int64_t n) {
  if (n <= 0) return;
  Launch1d l = launch_1d(n);
  f32_to_bf16_kernel<<<l.grid, l.block, 0, cuda_stream()>>>(src, dev(dst), n);
  check_launch("f32_to_bf16");
}

void bf16_to_f32(const bf16* src, float* dst, int64_t n) {
  if (n <= 0) return;
  Launch1d l = launch_1d(n);
  bf16_to_f32_kernel<<<l.grid, l.block, 0, cuda_stream()>>>(dev(src), dst, n);
  check_launch("bf16_to_f32");
}

void add_bf16(const bf16* a, const bf16* b, bf16* y, int64_t n) {
  if (n <= 0) return;
  Launch1d l = launch_1d(n);
  add_bf16_kernel<<<l.grid, l.block, 0, cuda_stream()>>>(dev(a), dev(b), dev(y), n);
  check_launch("add_bf16");
}

}  // namespace mg::cuda
