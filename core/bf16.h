// core/bf16.h — bfloat16: the storage type of mixed-precision training.
//
// A bf16 value is the top 16 bits of an IEEE f32: 1 sign bit, 8 exponent bits (f32's range:
// no overflow where f32 does not overflow, so no loss scaling), 7 mantissa bits (about 2-3
// significant decimal digits: relative spacing 2^-8 = 0.39%). mambagrad computes in f32 and
// uses bf16 only to store and move values (activations, GEMM operands): the CPU converts on
// load and store, CUDA kernels read bf16 and accumulate in f32.
//
// f32 -> bf16 rounds to nearest, ties to even (what cuBLAS, PyTorch and __float2bfloat16_rn
// do): add 0x7FFF plus the lowest kept bit, then drop the low 16 bits. NaN stays NaN (a quiet
// NaN with the sign kept; the add above could otherwise carry a NaN payload into Inf).
// Overflow rounds to +-Inf as IEEE rounding does (values above the largest bf16,
// 3.3895e38, within half a step round down to it, beyond that to Inf). bf16 -> f32 is exact.
#pragma once
#include <bit>
#include <cstdint>

namespace mg {

struct bf16 {
  uint16_t bits = 0;

  bf16() = default;
  explicit bf16(float f) : bits(from_f32(f)) {}
  explicit operator float() const { return to_f32(bits); }

  static constexpr uint16_t from_f32(float f) {
    const uint32_t u = std::bit_cast<uint32_t>(f);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return uint16_t((u >> 16) | 0x0040u);  // NaN: quiet
    const uint32_t lsb = (u >> 16) & 1u;
    return uint16_t((u + 0x7FFFu + lsb) >> 16);
  }
  static constexpr float to_f32(uint16_t b) { return std::bit_cast<float>(uint32_t(b) << 16); }
};
static_assert(sizeof(bf16) == 2, "bf16 must be 2 bytes (it is stored in tensors as such)");

// Bulk conversions (CPU): n values.
void f32_to_bf16(const float* src, bf16* dst, int64_t n);
void bf16_to_f32(const bf16* src, float* dst, int64_t n);

// The f32 nearest to x that a bf16 can hold (x rounded to bf16 and widened back).
inline float round_to_bf16(float x) { return bf16::to_f32(bf16::from_f32(x)); }

}  // namespace mg
