// core/dispatch.h — run a templated kernel for a tensor's floating dtype.
//
//   dispatch_float(x.dtype(), "exp", [&]<typename T>() { cpu::exp_forward<T>(...); });
#pragma once
#include "core/dtype.h"
#include "core/error.h"

namespace mg {

template <typename F>
void dispatch_float(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::f32: f.template operator()<float>(); return;
    case DType::f64: f.template operator()<double>(); return;
    default:
      throw Error(detail::cat(op, ": expected a floating dtype (f32 or f64), got ", dtype_name(t)));
  }
}

}  // namespace mg
