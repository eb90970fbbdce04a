// core/dispatch.h — run the right kernel for a tensor's device and floating dtype.
//
// The one pattern every op with a CUDA twin uses (ops/gelu.cpp is the smallest example):
//
//   dispatch_device(x.device(), x.dtype(), "gelu",
//       [&]<typename T>() { cuda::gelu_forward(x.data<T>(), y.data<T>(), x.numel()); },
//       [&]<typename T>() { cpu::gelu_forward<T>(x.data<T>(), y.data<T>(), x.numel()); });
//
// The first lambda runs for a CUDA tensor with T = float (CUDA kernels are f32 only; any other
// dtype is an mg::Error naming the op), the second for a CPU tensor with T = float or double.
// The two lambdas read alike on purpose: the twins take the same arguments in the same order.
//
// Why the CUDA lambda is a template, and needs no #ifdef: the twins `cuda::gelu_forward` are
// DECLARED in ops/<op>.h in every build, but DEFINED only by cuda/<op>.cu in a CUDA build. A
// call in ordinary code would reference the missing symbol and fail to link without CUDA. A
// template's body is only compiled into a call when the template is instantiated, and
// dispatch_device instantiates the CUDA lambda only under `if constexpr (kWithCuda)`. So a
// build without CUDA never references a cuda:: symbol, yet the compiler still parses the call
// and looks the twin up in every build (a misspelt or undeclared twin fails without CUDA too).
//
// Ops without a dtype (byte copies, i32 id checks) use the second form, whose CUDA lambda is a
// template for the same reason but takes no type it uses:
//
//   dispatch_device(x.device(), "transpose",
//       [&]<typename>() { cuda::transpose_forward(...); },
//       [&] { cpu::transpose_forward(...); });
//
// A CUDA tensor in a build without CUDA is an mg::Error naming the op (it cannot normally
// exist: allocator_for(cuda) throws first).
#pragma once
#include "core/device.h"
#include "core/dtype.h"
#include "core/error.h"

namespace mg {

#ifdef MG_WITH_CUDA
inline constexpr bool kWithCuda = true;
#else
inline constexpr bool kWithCuda = false;
#endif

template <typename F>
void dispatch_float(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::f32: f.template operator()<float>(); return;
    case DType::f64: f.template operator()<double>(); return;
    default:
      throw Error(detail::cat(op, ": expected f32 or f64, got ", dtype_name(t),
                              t == DType::bf16 ? " (this op has no bf16 form: convert with to(x, "
                                                 "DType::f32))" : ""));
  }
}

// Throws unless a CUDA kernel can take this dtype (CUDA kernels are f32 only).
inline void check_cuda_f32(const char* op, DType t, Device d) {
  MG_CHECK(t == DType::f32, op, ": CUDA kernels are f32 only, got ", dtype_name(t), " on ",
           d.str(), " (convert with to(x, DType::f32), or run f64 on the CPU)");
}

namespace detail {
[[noreturn]] inline void throw_no_cuda(const char* op, Device d) {
  throw Error(cat(op, ": a ", d.str(), " tensor in a build without CUDA (configure with "
                  "-DMG_CUDA=ON)"));
}
// Runs the CUDA lambda with T = float.
template <typename CudaF>
void run_cuda_float(CudaF& cuda_kernel) {
  cuda_kernel.template operator()<float>();
}
}  // namespace detail

// The typed form: CUDA (f32) or CPU (f32, f64) by device and dtype.
template <typename CudaF, typename CpuF>
void dispatch_device(Device device, DType t, const char* op, CudaF&& cuda_kernel, CpuF&& cpu_kernel) {
  if (device.is_cuda()) {
    if constexpr (kWithCuda) {
      check_cuda_f32(op, t, device);
      detail::run_cuda_float(cuda_kernel);
      return;
    } else {
      detail::throw_no_cuda(op, device);
    }
  }
  dispatch_float(t, op, cpu_kernel);
}

// The untyped form: CUDA or CPU by device only.
template <typename CudaF, typename CpuF>
void dispatch_device(Device device, const char* op, CudaF&& cuda_kernel, CpuF&& cpu_kernel) {
  if (device.is_cuda()) {
    if constexpr (kWithCuda) {
      cuda_kernel.template operator()<void>();
      return;
    } else {
      detail::throw_no_cuda(op, device);
    }
  }
  cpu_kernel();
}

}  // namespace mg
