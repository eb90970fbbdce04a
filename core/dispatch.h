// core/dispatch.h — run the right kernel for a tensor's device and floating dtype.
//
//   dispatch_float(x.dtype(), "exp", [&]<typename T>() { cpu::exp_forward<T>(...); });
//
// Ops with a CUDA twin use dispatch_device: the first lambda runs for a CUDA tensor (f32 only;
// anything else throws mg::Error naming the op), the second for a CPU tensor, per dtype:
//
//   dispatch_device(x.device(), x.dtype(), "exp",
//       [&] { MG_CUDA_ONLY(cuda::exp_forward(x.data<float>(), y.data<float>(), n)); },
//       [&]<typename T>() { cpu::exp_forward<T>(x.data<T>(), y.data<T>(), n); });
//
// MG_CUDA_ONLY(...) keeps its argument only in a CUDA build (where cuda/<family>.h is
// included), so the same op source compiles with a plain C++ compiler.
#pragma once
#include "core/device.h"
#include "core/dtype.h"
#include "core/error.h"

#ifdef MG_WITH_CUDA
#define MG_CUDA_ONLY(...) __VA_ARGS__
#else
#define MG_CUDA_ONLY(...)
#endif

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

// Throws unless a CUDA kernel can take this dtype (CUDA kernels are f32 only).
inline void check_cuda_f32(const char* op, DType t, Device d) {
  MG_CHECK(t == DType::f32, op, ": CUDA kernels are f32 only, got ", dtype_name(t), " on ",
           d.str(), " (convert with .to(DType::f32), or run f64 on the CPU)");
}

template <typename CudaF, typename CpuF>
void dispatch_device(Device device, DType t, const char* op, CudaF&& cuda_kernel, CpuF&& cpu_kernel) {
  if (device.is_cuda()) {
#ifdef MG_WITH_CUDA
    check_cuda_f32(op, t, device);
    cuda_kernel();
    return;
#else
    throw Error(detail::cat(op, ": a ", device.str(), " tensor in a build without CUDA"));
#endif
  }
  dispatch_float(t, op, cpu_kernel);
}

}  // namespace mg
