// cuda/runtime.h — the CUDA backend's runtime: devices, the stream, initialisation.
//
// A plain C++ header (no CUDA headers), so train/, the examples and the tests can include it;
// everything here is implemented in cuda/runtime.cu, so calls belong in CUDA-only code
// (`if constexpr (kWithCuda)`, core/dispatch.h). core/ and ops/ never include it: core reaches
// the backend through the registration below.
//
// The backend uses one device (cuda:0, or the device current when it initialises) and one
// stream: every kernel, cuBLAS call and copy is enqueued on stream(), so work is ordered
// without host synchronisation, and a memory block freed by the caching allocator can be
// reused by the next op at once (stream order guarantees the old kernels ran first).
//
// Initialisation is lazy: at program start cuda/runtime.cu registers the backend with core
// (mg::register_cuda_backend); the first CUDA tensor (allocator_for(Device::cuda())) then calls
// backend_init(), which picks the device and creates the stream, and core keeps the caching
// allocator (cuda/allocator.cu) it is handed. A build with CUDA on a machine without a visible
// GPU keeps working on CPU: device_count() returns 0, available() is false, and asking for a
// CUDA tensor throws mg::Error saying no device is visible and why.
#pragma once
#include <cstddef>
#include <string>

namespace mg {
class DeviceAllocator;
}

namespace mg::cuda {

struct DeviceInfo {
  int index = 0;
  std::string name;         // e.g. "NVIDIA H100 80GB HBM3"
  int cc_major = 0, cc_minor = 0;  // compute capability, e.g. 9.0
  size_t total_memory = 0;  // bytes
};

// Number of visible CUDA devices; 0 when there is no GPU or no driver. Never throws.
int device_count();
// True when at least one device is visible (device_count() > 0).
bool available();
// Properties of device i; throws mg::Error when i is out of range.
DeviceInfo device_info(int i);
// One line for logs: "CUDA: 1 device(s): cuda:0 NVIDIA H100 (sm_90, 79.1 GiB); built for 90;
// scan fast (T 64), cuda scan v2, deterministic on, tf32 off" (describe_settings() at the end)
// or "CUDA: built in, but no GPU is visible (cudaGetDeviceCount: no CUDA-capable device ...)".
std::string describe();
// Why device_count() is 0: the CUDA error string of cudaGetDeviceCount ("" when devices exist).
std::string no_device_reason();
// The architectures this binary was compiled for (CMAKE_CUDA_ARCHITECTURES), e.g. "90".
std::string compiled_architectures();

// The cudaStream_t every kernel runs on, as void* (cast with static_cast<cudaStream_t>).
// Initialises the backend on first use.
void* stream();
// Waits for all work queued on stream(); reports any asynchronous kernel error.
void synchronize();

// Picks the device and creates the stream. Idempotent; throws mg::Error with a clear message
// when no device is visible. Called lazily through core (allocator_for) — users need not.
void backend_init();

// The caching allocator (cuda/allocator.cu); core gets it when the backend starts, so users
// reach it through mg::allocator_for(Device::cuda()) and mg::memory_stats(Device::cuda()).
DeviceAllocator& caching_allocator();

// Returns the caching allocator's free blocks to the driver (cudaFree). Waits for the stream.
void empty_cache();

// The caching allocator's pool for a CUDA graph being captured (cuda/graph.cu): between
// graph_pool_begin() and graph_pool_end() every freed block is kept in the returned pool
// instead of the cache (the graph's replays keep using it); graph_pool_release gives the
// pool's blocks back to the cache once the graph is destroyed (stream order makes that safe).
void* graph_pool_begin();
void graph_pool_end();
void graph_pool_release(void* pool);

// The messages of a failed checked call (MG_CUDA_CHECK / MG_CUBLAS_CHECK in cuda/check.cuh):
//   "CUDA error: cudaMalloc(&p, size) failed at cuda/allocator.cu:112: cudaErrorMemoryAllocation
//    (out of memory)"
// `status` is the cudaError_t / cublasStatus_t value; `file` is shortened to its last two parts.
std::string cuda_error_message(int status, const char* call, const char* file, int line);
std::string cublas_error_message(int status, const char* call, const char* file, int line);

}  // namespace mg::cuda
