// core/dtype.h — the element types a Tensor can hold.
//
// f32 is the working type everywhere; f64 exists on the CPU so that every gradient
// can be checked by finite differences in double precision; i32 holds token ids; bf16
// (core/bf16.h) holds activations and GEMM operands under mixed precision
// (Settings::precision, docs/mixed_precision.md): a storage type that ops compute on in f32.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/bf16.h"

namespace mg {

enum class DType : uint8_t { f32, f64, i32, bf16 };

inline size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::f64: return 8;
    case DType::i32: return 4;
    case DType::bf16: return 2;
  }
  return 0;
}

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::f64: return "f64";
    case DType::i32: return "i32";
    case DType::bf16: return "bf16";
  }
  return "?";
}

inline bool is_floating(DType t) {
  return t == DType::f32 || t == DType::f64 || t == DType::bf16;
}

// C++ type -> DType, for templated kernels and typed accessors.
template <typename T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::f32; }
template <> constexpr DType dtype_of<double>() { return DType::f64; }
template <> constexpr DType dtype_of<int32_t>() { return DType::i32; }
template <> constexpr DType dtype_of<bf16>() { return DType::bf16; }

}  // namespace mg
