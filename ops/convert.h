// ops/convert.h — to(x, dtype) and to(x, device): the differentiable forms of core's
// x.cast(dtype) and x.copy_to(device) (core/tensor.h), which record nothing.
//
//   op               forward                          backward
//   to(x, dtype)     y = x converted to dtype         dx = to(dy, x.dtype)   (f32 <-> f64)
//   to(x, device)    y = a copy of x on device        dx = to(dy, x.device)
//
// A conversion to x's own dtype or device returns x itself (no copy, no node). Only floating
// dtypes are recorded (an i32 tensor never requires grad). Conversions between dtypes run on
// the CPU; copies between two GPUs go through the CPU.
#pragma once
#include "core/tensor.h"

namespace mg {

Tensor to(const Tensor& x, DType dtype);
Tensor to(const Tensor& x, Device device);

}  // namespace mg
