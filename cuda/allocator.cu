// cuda/allocator.cu — the caching device allocator.
//
// cudaMalloc and cudaFree are slow (cudaFree also synchronises the device), and a training
// step allocates and frees the same sizes over and over. So freed blocks are kept in
// size-bucketed free lists and handed out again; cudaMalloc is only called when a bucket is
// empty, i.e. in the first step, and cudaFree only by empty_cache() or when an allocation
// fails (then the cache is released and the allocation retried once).
//
// Buckets: below 1 MiB, sizes round up to a multiple of 512 bytes; above, to a multiple of 1/8
// of the size's power of two (at most 12.5% waste), so that close sizes share a free list.
// Every block is its own cudaMalloc, hence 256-byte aligned (16-byte vector loads are safe on
// a tensor's base pointer).
//
// Reuse is safe without events because every kernel and copy runs on the one stream
// (cuda/runtime.h): work that used a freed block was enqueued before work that reuses it.
//
// Statistics match the CPU allocator's: current (bytes held by live tensors, as requested),
// peak since reset, cached (bytes of free blocks kept), and the number of allocations served.
#include <cuda_runtime.h>

#include <atomic>
#include <bit>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "core/allocator.h"
#include "core/error.h"
#include "cuda/check.cuh"
#include "cuda/runtime.h"

namespace mg::cuda {

namespace {

class CudaCachingAllocator final : public DeviceAllocator {
 public:
  static constexpr size_t kSmallLimit = size_t(1) << 20;  // 1 MiB
  static constexpr size_t kSmallStep = 512;

  void* allocate(size_t nbytes) override {
    size_t size = bucket(nbytes);
    void* p = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = free_.find(size);
      if (it != free_.end() && !it->second.empty()) {
        p = it->second.back();
        it->second.pop_back();
        cached_ -= (int64_t)size;
      }
    }
    if (!p) p = device_malloc(size, nbytes);
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
    std::lock_guard<std::mutex> lock(mu_);
    free_[size].push_back(p);
    cached_ += (int64_t)size;
  }

  MemoryStats stats() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return {current_.load(), peak_.load(), cached_, allocs_.load()};
  }
  void reset_peak() override { peak_.store(current_.load()); }

  // Host -> device: from pageable memory the call returns once the source has been staged,
  // so the caller may free it at once; the copy is ordered on the stream.
  void copy_from_host(void* dst, const void* src, size_t n) override {
    if (n == 0) return;
    MG_CUDA_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, cuda_stream()));
  }
  // Device -> host waits for the stream: this is where the host reads results (item()).
  void copy_to_host(void* dst, const void* src, size_t n) override {
    if (n == 0) return;
    MG_CUDA_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, cuda_stream()));
    MG_CUDA_CHECK(cudaStreamSynchronize(cuda_stream()));
  }
  void copy_on_device(void* dst, const void* src, size_t n) override {
    if (n == 0) return;
    MG_CUDA_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, cuda_stream()));
  }
  void fill_zero(void* p, size_t n) override {
    if (n == 0) return;
    MG_CUDA_CHECK(cudaMemsetAsync(p, 0, n, cuda_stream()));
  }

  // Frees every cached block (after the stream has finished with them).
  void release_cache() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (cached_ == 0) return;  // nothing kept (and no reason to start the backend)
    }
    MG_CUDA_CHECK(cudaStreamSynchronize(cuda_stream()));
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [size, blocks] : free_)
      for (void* p : blocks) MG_CUDA_CHECK(cudaFree(p));
    free_.clear();
    cached_ = 0;
  }

 private:
  static size_t bucket(size_t n) {
    if (n < kSmallLimit) return n == 0 ? kSmallStep : (n + kSmallStep - 1) / kSmallStep * kSmallStep;
    size_t step = std::bit_floor(n) / 8;
    return (n + step - 1) / step * step;
  }

  void* device_malloc(size_t size, size_t requested) {
    void* p = nullptr;
    cudaError_t err = cudaMalloc(&p, size);
    if (err == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();
      release_cache();
      err = cudaMalloc(&p, size);
    }
    if (err == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();
      size_t free_b = 0, total_b = 0;
      (void)cudaMemGetInfo(&free_b, &total_b);
      throw Error(mg::detail::cat("cuda allocator: out of memory allocating ", requested,
                                  " bytes (held by tensors: ", current_.load(),
                                  " bytes; device free ", free_b, " of ", total_b, " bytes)"));
    }
    if (err != cudaSuccess) detail::throw_cuda_error(err, "cudaMalloc", __FILE__, __LINE__);
    return p;
  }

  std::atomic<int64_t> current_{0}, peak_{0}, allocs_{0};
  mutable std::mutex mu_;
  std::unordered_map<size_t, std::vector<void*>> free_;
  int64_t cached_ = 0;
};

// Never destroyed: tensors in static storage may be freed after main returns, and cudaFree
// after the driver has shut down would fail.
CudaCachingAllocator& the_allocator() {
  static CudaCachingAllocator* a = new CudaCachingAllocator();
  return *a;
}

}  // namespace

DeviceAllocator& caching_allocator() { return the_allocator(); }

void empty_cache() {
  if (!available()) return;
  the_allocator().release_cache();
}

}  // namespace mg::cuda
