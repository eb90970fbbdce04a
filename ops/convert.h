// ops/convert.h — to(x, dtype) and to(x, device): the differentiable forms of core's
// x.cast(dtype) and x.copy_to(device) (core/tensor.h), which record nothing.
//
//   op               forward                          backward
//   to(x, dtype)     y = x converted to dtype         dx = to(dy, x.dtype)   (f32, f64, bf16)
//   to(x, device)    y = a copy of x on device        dx = to(dy, x.device)
//
// A conversion to x's own dtype or device returns x itself (no copy, no node). Only floating
// dtypes are recorded (an i32 tensor never requires grad). Into bf16 rounds to nearest, ties
// to even (core/bf16.h); out of bf16 is exact. Conversions run on the tensor's device (CUDA:
// f32 <-> bf16, the kernels below); copies between two GPUs go through the CPU.
//
// The CUDA cast kernels (cuda/convert.cu), twins of core/bf16.h's CPU loops mg::f32_to_bf16
// and mg::bf16_to_f32 (same arguments): __float2bfloat16_rn, the same round to nearest even.
// add_bf16 is autograd's gradient sum for bf16 tensors (core/allocator.h add_into): widen,
// add in f32, round once.
#pragma once
#include "core/allocator.h"
#include "core/tensor.h"

namespace mg {

namespace cuda {
void f32_to_bf16(const float* src, bf16* dst, int64_t n);
void bf16_to_f32(const bf16* src, float* dst, int64_t n);
void add_bf16(const bf16* a, const bf16* b, bf16* y, int64_t n);
}  // namespace cuda

Tensor to(const Tensor& x, DType dtype);
Tensor to(const Tensor& x, Device device);

// ---- bf16 compute (Settings::precision = bf16; docs/mixed_precision.md) -------------------
// bf16 is a storage type. An op given bf16 tensors that has no bf16 kernel of its own (the
// norms, the recurrent steps; linear, conv1d and the unary ops have _bf16 kernels; the scan,
// cross-entropy and the binary ops widen into unrecorded temporaries) computes on f32
// widenings of them and rounds its result back to bf16 (the norms return f32): exactly what a
// bf16 kernel does (read bf16, compute in f32, write bf16), since widening is exact.
// Each op says so in one line at its top, through these two, recorded on the tape, so the
// gradients flowing back into bf16 tensors are rounded to bf16 as well:
//   if (is_bf16(x)) return to(silu(widen_bf16(x)), DType::bf16);
namespace cpu {
// The CPU bf16 twins' working copies: an f32 host buffer from the CPU allocator (cached: no
// page faults, no zero fill, counted in memory_stats), optionally the widening of n bf16
// values; round_into writes it back rounded to nearest even.
struct F32Scratch {
  Tensor t;
  explicit F32Scratch(int64_t n) : t(Tensor::empty({n})) {}
  F32Scratch(const bf16* src, int64_t n) : F32Scratch(n) {
    convert_on_host(data(), DType::f32, src, DType::bf16, n);
  }
  float* data() const { return t.data<float>(); }
  void round_into(bf16* dst) const {
    convert_on_host(dst, DType::bf16, data(), DType::f32, t.numel());
  }
};
}  // namespace cpu

bool is_bf16(const Tensor& x);          // defined and bf16
Tensor widen_bf16(const Tensor& x);     // to(x, f32) for a bf16 x, else x (undefined stays so)

}  // namespace mg
