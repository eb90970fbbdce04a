#include "core/allocator.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "core/block_cache.h"
#include "core/error.h"
#include "core/parallel.h"

namespace mg {
namespace {

// The CPU allocator: 64-byte aligned malloc, with a cache of freed large blocks
// (core/block_cache.h). Small sizes round up to a multiple of 64; blocks of >= 64 KiB are
// rounded to 1/8 of their power of two and cached, because a fresh large block comes from
// mmap and the kernel must fault in and zero every page on first touch — for a streaming op
// like add that costs as much as the op itself. `cached_bytes` reports what is kept; an
// allocation that fails first releases the cache.
struct CpuMemory {
  static void* alloc(size_t size) { return std::aligned_alloc(64, size); }
  static void free(void* p) { std::free(p); }
  static void sync() {}
};

// bf16 y = a + b: widened to f32, added, rounded once (what the add op does on bf16 tensors).
void add_bf16(void* y, const void* a, const void* b, int64_t n) {
  bf16* py = static_cast<bf16*>(y);
  const bf16 *pa = static_cast<const bf16*>(a), *pb = static_cast<const bf16*>(b);
  parallel_for(n, kElementwiseGrain, [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) py[i] = bf16(float(pa[i]) + float(pb[i]));
  });
}

// Element conversion: through float for bf16 (into bf16 rounds to nearest even; from double
// that is double -> float -> bf16, two roundings, which only a value within 2^-29 relative of
// a bf16 tie can notice), a C++ conversion otherwise (the float <-> double <-> int32 casts).
template <typename Dst, typename Src>
Dst convert_one(Src v) {
  if constexpr (std::is_same_v<Dst, bf16>) return bf16((float)v);
  else if constexpr (std::is_same_v<Src, bf16>) return (Dst)(float)v;
  else return (Dst)v;
}

template <typename F>
void with_type(DType t, F&& f) {
  switch (t) {
    case DType::f32: f.template operator()<float>(); return;
    case DType::f64: f.template operator()<double>(); return;
    case DType::i32: f.template operator()<int32_t>(); return;
    case DType::bf16: f.template operator()<bf16>(); return;
  }
}

class CpuAllocator final : public DeviceAllocator {
 public:
  static constexpr size_t kCacheMin = size_t(1) << 16;  // cache blocks of >= 64 KiB

  void* allocate(size_t nbytes) override {
    void* p = cache_.allocate(nbytes);
    if (!p) throw Error(detail::cat("cpu allocator: out of memory allocating ", nbytes, " bytes"));
    return p;
  }
  void deallocate(void* p, size_t nbytes) override { cache_.deallocate(p, nbytes); }
  MemoryStats stats() const override { return cache_.stats(); }
  void reset_peak() override { cache_.reset_peak(); }
  void copy_from_host(void* d, const void* s, size_t n) override { std::memcpy(d, s, n); }
  void copy_to_host(void* d, const void* s, size_t n) override { std::memcpy(d, s, n); }
  void copy_on_device(void* d, const void* s, size_t n) override { std::memcpy(d, s, n); }
  void fill_zero(void* p, size_t n) override { std::memset(p, 0, n); }
  void add_into(void* y, const void* a, const void* b, int64_t n, DType dtype) override {
    auto add = [&]<typename T>() {
      T* py = static_cast<T*>(y);
      const T *pa = static_cast<const T*>(a), *pb = static_cast<const T*>(b);
      parallel_for(n, kElementwiseGrain, [&](int64_t s, int64_t e) {
        for (int64_t i = s; i < e; ++i) py[i] = pa[i] + pb[i];
      });
    };
    if (dtype == DType::f32) add.template operator()<float>();
    else if (dtype == DType::f64) add.template operator()<double>();
    else if (dtype == DType::bf16) add_bf16(y, a, b, n);
    else throw Error(detail::cat("add_into: expected f32, f64 or bf16, got ", dtype_name(dtype)));
  }
  void convert(void* y, DType y_t, const void* x, DType x_t, int64_t n) override {
    convert_on_host(y, y_t, x, x_t, n);
  }

  void release_cache() { cache_.release(); }

 private:
  BlockCache<CpuMemory> cache_{BucketRule{kCacheMin, 64, kCacheMin}};
};

}  // namespace

void convert_on_host(void* y, DType y_t, const void* x, DType x_t, int64_t n) {
  with_type(y_t, [&]<typename Dst>() {
    with_type(x_t, [&]<typename Src>() {
      Dst* py = static_cast<Dst*>(y);
      const Src* px = static_cast<const Src*>(x);
      parallel_for(n, kElementwiseGrain, [&](int64_t s, int64_t e) {
        for (int64_t i = s; i < e; ++i) py[i] = convert_one<Dst>(px[i]);
      });
    });
  });
}

namespace {

// Never destroyed: tensors in static storage may be freed after main returns.
CpuAllocator& cpu_allocator() {
  static CpuAllocator* a = new CpuAllocator();
  return *a;
}
// Set by the CUDA backend's static registrar before main; read at the first CUDA request.
std::atomic<CudaBackendStart> g_cuda_start{nullptr};
// The started backend's allocator (set once; starting again is harmless: it is idempotent).
std::atomic<DeviceAllocator*> g_cuda_allocator{nullptr};

}  // namespace

DeviceAllocator& allocator_for(Device d) {
  if (d.is_cpu()) return cpu_allocator();
  DeviceAllocator* cuda_allocator = g_cuda_allocator.load(std::memory_order_acquire);
  if (cuda_allocator == nullptr) {
    CudaBackendStart start = g_cuda_start.load(std::memory_order_acquire);
    MG_CHECK(start != nullptr, "allocator: no CUDA backend is available for ", d.str(),
             cuda_compiled() ? " (the CUDA backend is not linked into this program)"
                             : " (this build has no CUDA backend: configure with -DMG_CUDA=ON)");
    // With no visible GPU this throws a clear mg::Error ("built with CUDA, but no CUDA device
    // is visible ...") and CPU keeps working.
    cuda_allocator = &start();
    g_cuda_allocator.store(cuda_allocator, std::memory_order_release);
  }
  MG_CHECK(d.index == 0, "allocator: ", d.str(), " requested, but the CUDA backend uses one ",
           "device, cuda:0 (select the GPU with CUDA_VISIBLE_DEVICES)");
  return *cuda_allocator;
}

void register_cuda_backend(CudaBackendStart start) {
  g_cuda_start.store(start, std::memory_order_release);
}

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
