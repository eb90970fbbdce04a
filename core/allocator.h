// core/allocator.h — every tensor byte is allocated here, so memory claims are measured.
//
// Each device has an allocator with the same statistics: bytes currently held by tensors,
// the peak since the last reset, and (for caching allocators) bytes cached but unused.
// The CPU allocator hands out 64-byte aligned blocks (a cache line, an AVX-512 vector).
// The CUDA backend registers its caching allocator here at start-up (cuda/), so core/
// stays free of CUDA headers.
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/device.h"

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
};

// The allocator for a device; throws mg::Error for CUDA when no backend is registered.
DeviceAllocator& allocator_for(Device d);
// Called by the CUDA backend when it initialises.
void register_cuda_allocator(DeviceAllocator* a);

inline MemoryStats memory_stats(Device d = Device::cpu()) { return allocator_for(d).stats(); }
inline void reset_peak_memory(Device d = Device::cpu()) { allocator_for(d).reset_peak(); }
// Returns cached (free but kept) CPU blocks to the system.
void empty_cpu_cache();

}  // namespace mg
