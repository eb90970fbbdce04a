// core/allocator.h — every tensor byte is allocated here, so memory claims are measured.
//
// Each device has an allocator with the same statistics: bytes currently held by tensors,
// the peak since the last reset, and (for caching allocators) bytes cached but unused.
// The CPU allocator hands out 64-byte aligned blocks (a cache line, an AVX-512 vector).
//
// DeviceAllocator is the whole of what core needs from a device: memory (allocate, copies,
// zero fill, dtype conversion) and one piece of arithmetic, y = a + b, with which autograd adds
// gradient contributions (docs/decisions.md, "Layers"). The CUDA backend registers itself here when the
// program starts (cuda/runtime.cu), so core reaches it through a registration and never
// includes cuda/.
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/device.h"
#include "core/dtype.h"

namespace mg {

struct MemoryStats {
  int64_t current_bytes = 0;  // held by live tensors now
  int64_t peak_bytes = 0;     // most ever held at once since reset_peak_memory
  int64_t cached_bytes = 0;   // kept by a caching allocator for reuse (0 on CPU)
  int64_t num_allocs = 0;     // allocations served since start
};

class DeviceAllocator {
 public:
  virtual ~DeviceAllocator() = default;
  virtual void* allocate(size_t nbytes) = 0;
  virtual void deallocate(void* p, size_t nbytes) = 0;
  virtual MemoryStats stats() const = 0;
  virtual void reset_peak() = 0;
  // Byte copies between this device and the host (or within the device), and zero fill.
  virtual void copy_from_host(void* dst, const void* src, size_t n) = 0;
  virtual void copy_to_host(void* dst, const void* src, size_t n) = 0;
  virtual void copy_on_device(void* dst, const void* src, size_t n) = 0;
  virtual void fill_zero(void* p, size_t n) = 0;
  // y = a + b for n elements of a floating dtype, all on this device (y may alias a or b).
  // Bitwise the same as the add op (one rounding per element).
  virtual void add_into(void* y, const void* a, const void* b, int64_t n, DType dtype) = 0;
  // y (n, dtype y_t) = x (n, dtype x_t) converted, both on this device: Tensor::cast. Into
  // bf16 rounds to nearest even (core/bf16.h); out of bf16 is exact. CPU: every pair of
  // dtypes; CUDA: f32 <-> bf16 (an mg::Error names any other pair).
  virtual void convert(void* y, DType y_t, const void* x, DType x_t, int64_t n) = 0;
};

// The CPU conversion every CPU cast runs (also the reference of the CUDA cast kernel).
void convert_on_host(void* y, DType y_t, const void* x, DType x_t, int64_t n);

// The allocator for a device. The first CUDA request starts the registered CUDA backend, which
// throws a clear mg::Error when no GPU is visible; without a backend it is an mg::Error too.
DeviceAllocator& allocator_for(Device d);

// Called once by the CUDA backend at program start (a static registrar in cuda/runtime.cu).
// `start` runs at the first CUDA request: it initialises the backend (or throws) and returns
// its caching allocator.
using CudaBackendStart = DeviceAllocator& (*)();
void register_cuda_backend(CudaBackendStart start);

inline MemoryStats memory_stats(Device d = Device::cpu()) { return allocator_for(d).stats(); }
inline void reset_peak_memory(Device d = Device::cpu()) { allocator_for(d).reset_peak(); }
// Returns cached (free but kept) CPU blocks to the system.
void empty_cpu_cache();

}  // namespace mg
