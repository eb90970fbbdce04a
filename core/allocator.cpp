#include "core/allocator.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <bit>
#include <mutex>
#include <new>
#include <unordered_map>
#include <vector>

#include "core/error.h"
#ifdef MG_WITH_CUDA
#include "cuda/runtime.h"  // plain C++: backend_init() registers the CUDA caching allocator
#endif

namespace mg {
namespace {

// The CPU allocator: aligned malloc for small blocks, and a cache of freed large blocks.
// Why cache: a fresh large block comes from mmap, and the kernel must fault in and zero every
// page on first touch — for a streaming op like add that costs as much as the op itself.
// Large sizes are rounded up to 1/8 of their power of two (at most 12.5% waste) so that
// blocks of similar sizes share a free list. `cached_bytes` reports what is kept; an
// allocation that fails first releases the cache.
class CpuAllocator final : public DeviceAllocator {
 public:
  static constexpr size_t kCacheMin = size_t(1) << 16;  // cache blocks of >= 64 KiB

  void* allocate(size_t nbytes) override {
    size_t size = bucket(nbytes);
    void* p = nullptr;
    if (size >= kCacheMin) {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = free_.find(size);
      if (it != free_.end() && !it->second.empty()) {
        p = it->second.back();
        it->second.pop_back();
        cached_ -= (int64_t)size;
      }
    }
    if (!p) p = std::aligned_alloc(64, size);
    if (!p) {
      release_cache();
      p = std::aligned_alloc(64, size);
    }
    if (!p) throw Error(detail::cat("cpu allocator: out of memory allocating ", nbytes, " bytes"));
    int64_t now = current_.fetch_add((int64_t)nbytes) + (int64_t)nbytes;
    int64_t peak = peak_.load();
    while (now > peak && !peak_.compare_exchange_weak(peak, now)) {
    }
    allocs_.fetch_add(1);
    return p;
  }
  void deallocate(void* p, size_t nbytes) override {
    current_.fetch_sub((int64_t)nbytes);
    size_t size = bucket(nbytes);
    if (size >= kCacheMin) {
      std::lock_guard<std::mutex> lock(mu_);
      free_[size].push_back(p);
      cached_ += (int64_t)size;
      return;
    }
    std::free(p);
  }
  MemoryStats stats() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return {current_.load(), peak_.load(), cached_, allocs_.load()};
  }
  void reset_peak() override { peak_.store(current_.load()); }
  void copy_from_host(void* d, const void* s, size_t n) override { std::memcpy(d, s, n); }
  void copy_to_host(void* d, const void* s, size_t n) override { std::memcpy(d, s, n); }
  void copy_on_device(void* d, const void* s, size_t n) override { std::memcpy(d, s, n); }
  void fill_zero(void* p, size_t n) override { std::memset(p, 0, n); }

  void release_cache() {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [size, blocks] : free_)
      for (void* p : blocks) std::free(p);
    free_.clear();
    cached_ = 0;
  }

 private:
  // Rounds to a multiple of 64 (small) or of 1/8 of the size's power of two (large).
  static size_t bucket(size_t n) {
    if (n < kCacheMin) return n == 0 ? 64 : (n + 63) / 64 * 64;
    size_t step = std::bit_floor(n) / 8;
    return (n + step - 1) / step * step;
  }

  std::atomic<int64_t> current_{0}, peak_{0}, allocs_{0};
  mutable std::mutex mu_;
  std::unordered_map<size_t, std::vector<void*>> free_;
  int64_t cached_ = 0;
};

// Never destroyed: tensors in static storage may be freed after main returns.
CpuAllocator& cpu_allocator() {
  static CpuAllocator* a = new CpuAllocator();
  return *a;
}
// Set once by the CUDA backend (under its init mutex); read by every CUDA allocation.
std::atomic<DeviceAllocator*> g_cuda_allocator{nullptr};

}  // namespace

DeviceAllocator& allocator_for(Device d) {
  if (d.is_cpu()) return cpu_allocator();
#ifdef MG_WITH_CUDA
  // The first CUDA tensor initialises the backend; with no visible GPU this throws a clear
  // mg::Error ("built with CUDA, but no CUDA device is visible ...") and CPU keeps working.
  if (g_cuda_allocator.load(std::memory_order_acquire) == nullptr) cuda::backend_init();
  MG_CHECK(d.index == 0, "allocator: ", d.str(), " requested, but the CUDA backend uses one ",
           "device, cuda:0 (select the GPU with CUDA_VISIBLE_DEVICES)");
#endif
  DeviceAllocator* cuda_allocator = g_cuda_allocator.load(std::memory_order_acquire);
  MG_CHECK(cuda_allocator != nullptr, "allocator: no CUDA backend is available for ", d.str(),
           cuda_compiled() ? " (no CUDA device is visible)" : " (this build has no CUDA backend: configure with -DMG_CUDA=ON)");
  return *cuda_allocator;
}

void register_cuda_allocator(DeviceAllocator* a) { g_cuda_allocator.store(a, std::memory_order_release); }

void empty_cpu_cache() { cpu_allocator().release_cache(); }

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
