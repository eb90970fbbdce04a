#include "core/allocator.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>

#include "core/error.h"

namespace mg {
namespace {

// The CPU allocator: aligned malloc plus atomic counters. No caching: the C library's
// allocator already reuses freed blocks well on the CPU.
class CpuAllocator final : public DeviceAllocator {
 public:
  void* allocate(size_t nbytes) override {
    size_t rounded = (nbytes + 63) / 64 * 64;
    if (rounded == 0) rounded = 64;
    void* p = std::aligned_alloc(64, rounded);
    if (!p) throw Error(detail::cat("cpu allocator: out of memory allocating ", nbytes, " bytes"));
    int64_t now = current_.fetch_add((int64_t)nbytes) + (int64_t)nbytes;
    int64_t peak = peak_.load();
    while (now > peak && !peak_.compare_exchange_weak(peak, now)) {
    }
    allocs_.fetch_add(1);
    return p;
  }
  void deallocate(void* p, size_t nbytes) override {
    std::free(p);
    current_.fetch_sub((int64_t)nbytes);
  }
  MemoryStats stats() const override {
    return {current_.load(), peak_.load(), 0, allocs_.load()};
  }
  void reset_peak() override { peak_.store(current_.load()); }
  void copy_from_host(void* d, const void* s, size_t n) override { std::memcpy(d, s, n); }
  void copy_to_host(void* d, const void* s, size_t n) override { std::memcpy(d, s, n); }
  void copy_on_device(void* d, const void* s, size_t n) override { std::memcpy(d, s, n); }
  void fill_zero(void* p, size_t n) override { std::memset(p, 0, n); }

 private:
  std::atomic<int64_t> current_{0}, peak_{0}, allocs_{0};
};

CpuAllocator& cpu_allocator() {
  static CpuAllocator a;
  return a;
}
DeviceAllocator* g_cuda_allocator = nullptr;

}  // namespace

DeviceAllocator& allocator_for(Device d) {
  if (d.is_cpu()) return cpu_allocator();
  MG_CHECK(g_cuda_allocator != nullptr, "allocator: no CUDA backend is available for ", d.str(),
           cuda_compiled() ? " (no CUDA device is visible)" : " (this build has no CUDA backend: configure with -DMG_CUDA=ON)");
  return *g_cuda_allocator;
}

void register_cuda_allocator(DeviceAllocator* a) { g_cuda_allocator = a; }

Device parse_device(const std::string& s) {
  if (s == "cpu") return Device::cpu();
  if (s == "cuda") return Device::cuda(0);
  if (s.rfind("cuda:", 0) == 0) {
    try {
      return Device::cuda(std::stoi(s.substr(5)));
    } catch (...) {
    }
  }
  throw Error(detail::cat("parse_device: expected 'cpu', 'cuda' or 'cuda:N', got '", s, "'"));
}

bool cuda_compiled() {
#ifdef MG_WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace mg
