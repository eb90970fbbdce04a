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
// The free lists and the statistics (current, peak, cached, allocations served) are the CPU
// allocator's: core/block_cache.h, with this file's raw memory and bucket sizes.
#include <cuda_runtime.h>

#include <utility>
#include <vector>

#include "core/allocator.h"
#include "core/block_cache.h"
#include "core/error.h"
#include "cuda/check.cuh"
#include "cuda/runtime.h"
#include "ops/arith.h"    // binary_forward: the add kernel
#include "ops/convert.h"  // the f32 <-> bf16 cast kernels and the bf16 add

namespace mg::cuda {

namespace {

// Raw device memory for the BlockCache: cudaMalloc's out-of-memory is reported as nullptr
// (the cache is then released and the allocation retried once); other errors throw.
struct DeviceMemory {
  static void* alloc(size_t size) {
    void* p = nullptr;
    const cudaError_t err = cudaMalloc(&p, size);
    if (err == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();  // reset the last-error state (OOM is not sticky)
      return nullptr;
    }
    if (err != cudaSuccess) detail::throw_cuda_error(err, "cudaMalloc", __FILE__, __LINE__);
    return p;
  }
  static void free(void* p) { MG_CUDA_CHECK(cudaFree(p)); }
  // Cached blocks may still be in use by enqueued work until the stream has finished.
  static void sync() { MG_CUDA_CHECK(cudaStreamSynchronize(cuda_stream())); }
};

// Blocks freed while a CUDA graph was being captured (cuda/graph.cu): the graph's kernels
// read and write them on every replay, so they must not be handed out again until the graph
// is destroyed (PyTorch keeps a private pool per graph for the same reason).
using GraphPool = std::vector<std::pair<void*, size_t>>;

class CudaCachingAllocator final : public DeviceAllocator {
 public:
  static constexpr size_t kSmallLimit = size_t(1) << 20;  // 1 MiB
  static constexpr size_t kSmallStep = 512;

  void* allocate(size_t nbytes) override {
    void* p = cache_.allocate(nbytes);
    if (!p) {
      size_t free_b = 0, total_b = 0;
      (void)cudaMemGetInfo(&free_b, &total_b);
      throw Error(mg::detail::cat("cuda allocator: out of memory allocating ", nbytes,
                                  " bytes (held by tensors: ", cache_.current_bytes(),
                                  " bytes; device free ", free_b, " of ", total_b, " bytes)"));
    }
    return p;
  }
  void deallocate(void* p, size_t nbytes) override {
    if (graph_pool_) {  // capturing a graph: its replays may still write here (graph.cu)
      graph_pool_->push_back({p, nbytes});
      return;
    }
    cache_.deallocate(p, nbytes);
  }
  // While a pool is set, freed blocks go to it instead of the cache.
  void set_graph_pool(GraphPool* pool) { graph_pool_ = pool; }
  void release_graph_pool(GraphPool& pool) {
    for (auto [p, n] : pool) cache_.deallocate(p, n);
    pool.clear();
  }
  MemoryStats stats() const override { return cache_.stats(); }
  void reset_peak() override { cache_.reset_peak(); }

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
  // The add op's kernel (f32), or the bf16 add (widen, add in f32, round once).
  void add_into(void* y, const void* a, const void* b, int64_t n, DType dtype) override {
    if (dtype == DType::bf16) {
      cuda::add_bf16(static_cast<const bf16*>(a), static_cast<const bf16*>(b), static_cast<bf16*>(y), n);
      return;
    }
    MG_CHECK(dtype == DType::f32, "add_into: CUDA kernels are f32 or bf16, got ", dtype_name(dtype));
    binary_forward(BinaryOp::add, static_cast<const float*>(a), static_cast<const float*>(b),
                   static_cast<float*>(y), 1, n, Broadcast::none);
  }
  // The cast kernels of cuda/convert.cu: f32 <-> bf16 only.
  void convert(void* y, DType y_t, const void* x, DType x_t, int64_t n) override {
    if (x_t == DType::f32 && y_t == DType::bf16)
      cuda::f32_to_bf16(static_cast<const float*>(x), static_cast<bf16*>(y), n);
    else if (x_t == DType::bf16 && y_t == DType::f32)
      cuda::bf16_to_f32(static_cast<const bf16*>(x), static_cast<float*>(y), n);
    else
      throw Error(mg::detail::cat("cast: no CUDA conversion from ", dtype_name(x_t), " to ",
                                  dtype_name(y_t), " (CUDA converts f32 <-> bf16; copy the "
                                  "tensor to the CPU for other pairs)"));
  }

  // Frees every cached block after the stream has finished with them (nothing, and no
  // reason to start the backend, when nothing is cached).
  void release_cache() { cache_.release(); }

 private:
  // Every block is cached (cache_min 0).
  BlockCache<DeviceMemory> cache_{BucketRule{kSmallLimit, kSmallStep, 0}};
  GraphPool* graph_pool_ = nullptr;
};

// Never destroyed: tensors in static storage may be freed after main returns, and cudaFree
// after the driver has shut down would fail.
CudaCachingAllocator& the_allocator() {
  static CudaCachingAllocator* a = new CudaCachingAllocator();
  return *a;
}

}  // namespace

DeviceAllocator& caching_allocator() { return the_allocator(); }

void* graph_pool_begin() {
  auto* pool = new GraphPool();
  the_allocator().set_graph_pool(pool);
  return pool;
}

void graph_pool_end() { the_allocator().set_graph_pool(nullptr); }

void graph_pool_release(void* pool) {
  if (!pool) return;
  auto* p = static_cast<GraphPool*>(pool);
  the_allocator().release_graph_pool(*p);
  delete p;
}

void empty_cache() {
  if (!available()) return;
  the_allocator().release_cache();
}

}  // namespace mg::cuda
