// cuda/act_io.cuh — activation loads and stores, the one place a kernel's activation type shows.
//
// Kernels templated on the activation type (f32, or bf16 under mixed precision) read and write
// through these: f32 as is (the same instructions as an untemplated f32 kernel); bf16 widened
// exactly on load and rounded to nearest even once on store. Everything in between (shared
// tiles, registers, sums) is f32. bf16 pointers may be mg::bf16 (the host storage type, the bits
// of an __nv_bfloat16) or __nv_bfloat16. Used by conv1d, the fused add + norm and scans v2, v3.
#pragma once
#include <cstdint>

#include <cuda_bf16.h>

#include "core/bf16.h"

namespace mg::cuda {

static_assert(sizeof(bf16) == sizeof(__nv_bfloat16), "bf16 layouts must match");

__device__ __forceinline__ float ld(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float ld(const __nv_bfloat16* p, int64_t i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ float ld(const bf16* p, int64_t i) {
  return ld(reinterpret_cast<const __nv_bfloat16*>(p), i);
}
__device__ __forceinline__ void st(float* p, int64_t i, float v) { p[i] = v; }
__device__ __forceinline__ void st(__nv_bfloat16* p, int64_t i, float v) { p[i] = __float2bfloat16_rn(v); }
__device__ __forceinline__ void st(bf16* p, int64_t i, float v) {
  st(reinterpret_cast<__nv_bfloat16*>(p), i, v);
}
// Host side: a tensor's pointer as the kernels' type (mg::bf16 -> __nv_bfloat16; float stays).
template <typename S> struct Dev { using type = S; };
template <> struct Dev<bf16> { using type = __nv_bfloat16; };
template <typename S> using dev_t = typename Dev<S>::type;
template <typename S> const dev_t<S>* dev(const S* p) { return reinterpret_cast<const dev_t<S>*>(p); }
template <typename S> dev_t<S>* dev(S* p) { return reinterpret_cast<dev_t<S>*>(p); }

// Through the read-only data cache (__ldg): inputs a kernel never writes.
__device__ __forceinline__ float ldg(const float* p, int64_t i) { return __ldg(p + i); }
__device__ __forceinline__ float ldg(const bf16* p, int64_t i) {
  return __bfloat162float(__ldg(reinterpret_cast<const __nv_bfloat16*>(p) + i));
}

}  // namespace mg::cuda
