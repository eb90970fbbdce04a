// core/block_cache.h — the size-bucketed cache of freed blocks and the memory statistics that
// the CPU allocator (core/allocator.cpp) and the CUDA caching allocator (cuda/allocator.cu)
// share. Plain C++: nvcc compiles it for cuda/allocator.cu.
//
// Why cache: getting fresh memory is slow on both devices (a fresh large host block is mmap'd
// and every page is faulted in and zeroed on first touch; cudaMalloc is slow and cudaFree
// synchronises the device), while a training step frees and allocates the same sizes over and
// over. So freed blocks go to free lists keyed by their bucket size and are handed out again.
//
// Buckets: a request of n bytes is served by a block of bucket(n) bytes,
//   n <  small_limit:  n rounded up to a multiple of small_step (n = 0 takes one step);
//   n >= small_limit:  n rounded up to a multiple of bit_floor(n) / 8, i.e. 1/8 of its power
//                      of two: at most 12.5% waste, and close sizes share a free list.
// Only blocks of bucket size >= cache_min are cached; smaller ones go straight back to the
// system (CPU: malloc's own free lists are good enough below 64 KiB).
//
// Statistics (MemoryStats, core/allocator.h): current = bytes held by live blocks as
// requested (not rounded), peak = most of that since reset_peak, cached = bucket bytes of
// kept free blocks, num_allocs = allocations served. current/peak/num_allocs are atomics
// (no lock on the hot path's counters); the free lists and `cached` share one mutex.
//
// `Raw` supplies the device's raw memory, as static functions:
//   static void* alloc(size_t size);  // nullptr when out of memory; other failures throw
//   static void free(void* p);
//   static void sync();               // before cached blocks are freed (CUDA: the stream may
//                                     // still use them; CPU: nothing)
#pragma once
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "core/allocator.h"

namespace mg {

struct BucketRule {
  size_t small_limit;  // below: multiples of small_step; from here on: 1/8 of the power of two
  size_t small_step;
  size_t cache_min;    // blocks whose bucket is smaller are freed, not cached
};

template <typename Raw>
class BlockCache {
 public:
  explicit BlockCache(BucketRule rule) : rule_(rule) {}

  size_t bucket(size_t n) const {
    if (n < rule_.small_limit)
      return n == 0 ? rule_.small_step : (n + rule_.small_step - 1) / rule_.small_step * rule_.small_step;
    const size_t step = std::bit_floor(n) / 8;
    return (n + step - 1) / step * step;
  }

  // A block of at least `nbytes`: a cached block of its bucket, else fresh memory; when the
  // system has none, the cache is released and the allocation tried once more. nullptr when
  // that fails too (the caller throws its device's message).
  void* allocate(size_t nbytes) {
    const size_t size = bucket(nbytes);
    void* p = take(size);
    if (!p) p = Raw::alloc(size);
    if (!p) {
      release();
      p = Raw::alloc(size);
    }
    if (!p) return nullptr;
    const int64_t now = current_.fetch_add((int64_t)nbytes) + (int64_t)nbytes;
    int64_t peak = peak_.load();
    while (now > peak && !peak_.compare_exchange_weak(peak, now)) {
    }
    allocs_.fetch_add(1);
    return p;
  }

  // `nbytes` must be what allocate() was asked for (it names the bucket).
  void deallocate(void* p, size_t nbytes) {
    current_.fetch_sub((int64_t)nbytes);
    const size_t size = bucket(nbytes);
    if (size < rule_.cache_min) {
      Raw::free(p);
      return;
    }
    std::lock_guard<std::mutex> lock(mu_);
    free_[size].push_back(p);
    cached_ += (int64_t)size;
  }

  // Frees every cached block (after Raw::sync(), skipped when nothing is cached).
  void release() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (cached_ == 0) return;
    }
    Raw::sync();
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [size, blocks] : free_)
      for (void* p : blocks) Raw::free(p);
    free_.clear();
    cached_ = 0;
  }

  MemoryStats stats() const {
    std::lock_guard<std::mutex> lock(mu_);
    return {current_.load(), peak_.load(), cached_, allocs_.load()};
  }
  void reset_peak() { peak_.store(current_.load()); }
  int64_t current_bytes() const { return current_.load(); }

 private:
  // Pops a cached block of exactly `size` bytes, or nullptr.
  void* take(size_t size) {
    if (size < rule_.cache_min) return nullptr;
    std::lock_guard<std::mutex> lock(mu_);
    auto it = free_.find(size);
    if (it == free_.end() || it->second.empty()) return nullptr;
    void* p = it->second.back();
    it->second.pop_back();
    cached_ -= (int64_t)size;
    return p;
  }

  const BucketRule rule_;
  std::atomic<int64_t> current_{0}, peak_{0}, allocs_{0};
  mutable std::mutex mu_;
  std::unordered_map<size_t, std::vector<void*>> free_;
  int64_t cached_ = 0;
};

}  // namespace mg
