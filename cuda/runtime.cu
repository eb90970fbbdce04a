// cuda/runtime.cu — device discovery, the stream, lazy initialisation, checked-call errors.
#include "cuda/runtime.h"

#include <cuda_runtime.h>

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <sstream>

#include "core/allocator.h"
#include "core/error.h"
#include "core/settings.h"
#include "cuda/check.cuh"

#ifndef MG_CUDA_ARCHITECTURES_STR
#define MG_CUDA_ARCHITECTURES_STR "unknown"
#endif

namespace mg::cuda {

namespace {

// cudaGetDeviceCount is asked once: its answer (and error) does not change within a process.
struct DeviceCount {
  int count = 0;
  std::string error;  // why count is 0
};
const DeviceCount& query_device_count() {
  static const DeviceCount result = [] {
    DeviceCount r;
    cudaError_t err = cudaGetDeviceCount(&r.count);
    if (err != cudaSuccess) {
      r.count = 0;
      r.error = std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err);
      if (err == cudaErrorInsufficientDriver)
        r.error += " (no NVIDIA driver is loaded, or it is older than this CUDA runtime)";
      (void)cudaGetLastError();  // clear it so later calls start clean
    } else if (r.count == 0) {
      r.error = "the driver reports 0 devices";
    }
    return r;
  }();
  return result;
}

std::mutex g_init_mutex;
std::atomic<bool> g_initialized{false};
cudaStream_t g_stream = nullptr;
int g_device = 0;

bool sync_check_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("MG_CUDA_SYNC_CHECK");
    return v && v[0] && v[0] != '0';
  }();
  return on;
}

// The last two path components ("cuda/arith.cu") rather than an absolute build path.
std::string short_file(const char* file) {
  std::string f(file);
  size_t last = f.find_last_of('/');
  if (last == std::string::npos || last == 0) return f;
  size_t prev = f.find_last_of('/', last - 1);
  return prev == std::string::npos ? f : f.substr(prev + 1);
}

std::string gib(size_t bytes) {
  std::ostringstream os;
  os.setf(std::ios::fixed);
  os.precision(1);
  os << (double)bytes / (1024.0 * 1024.0 * 1024.0) << " GiB";
  return os.str();
}

// An empty kernel launched once at start-up: "no kernel image is available" is caught here,
// with advice, instead of inside the first op.
__global__ void probe_kernel() {}

}  // namespace

// ---- errors ------------------------------------------------------------------------------

namespace detail {

void throw_cuda_error(cudaError_t err, const char* call, const char* file, int line) {
  (void)cudaGetLastError();  // clear a non-sticky error so the process can go on
  throw Error(cuda_error_message((int)err, call, file, line));
}

void throw_cublas_error(cublasStatus_t st, const char* call, const char* file, int line) {
  throw Error(cublas_error_message((int)st, call, file, line));
}

}  // namespace detail

std::string cuda_error_message(int status, const char* call, const char* file, int line) {
  auto err = static_cast<cudaError_t>(status);
  return mg::detail::cat("CUDA error: ", call, " failed at ", short_file(file), ":", line, ": ",
                         cudaGetErrorName(err), " (", cudaGetErrorString(err), ")");
}

std::string cublas_error_message(int status, const char* call, const char* file, int line) {
  auto st = static_cast<cublasStatus_t>(status);
  return mg::detail::cat("cuBLAS error: ", call, " failed at ", short_file(file), ":", line, ": ",
                         cublasGetStatusName(st), " (", cublasGetStatusString(st), ")");
}

void check_launch(const char* op) {
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    throw Error(mg::detail::cat(op, ": CUDA kernel launch failed: ", cudaGetErrorName(err), " (",
                                cudaGetErrorString(err), ")"));
  if (sync_check_enabled()) {
    err = cudaStreamSynchronize(g_stream);
    if (err != cudaSuccess)
      throw Error(mg::detail::cat(op, ": CUDA kernel failed (MG_CUDA_SYNC_CHECK): ",
                                  cudaGetErrorName(err), " (", cudaGetErrorString(err), ")"));
  }
}

// ---- devices -----------------------------------------------------------------------------

int device_count() { return query_device_count().count; }
bool available() { return device_count() > 0; }
std::string no_device_reason() { return query_device_count().error; }
std::string compiled_architectures() { return MG_CUDA_ARCHITECTURES_STR; }

DeviceInfo device_info(int i) {
  int n = device_count();
  MG_CHECK(i >= 0 && i < n, "cuda::device_info: device ", i, " does not exist (", n,
           " visible device(s))");
  cudaDeviceProp prop{};
  MG_CUDA_CHECK(cudaGetDeviceProperties(&prop, i));
  return {i, prop.name, prop.major, prop.minor, prop.totalGlobalMem};
}

std::string describe() {
  std::ostringstream os;
  int n = device_count();
  if (n == 0) {
    os << "CUDA: built in (architectures " << compiled_architectures()
       << "), but no GPU is visible (cudaGetDeviceCount: " << no_device_reason()
       << "); tensors stay on the CPU";
    return os.str();
  }
  int driver = 0, runtime = 0;
  (void)cudaDriverGetVersion(&driver);
  (void)cudaRuntimeGetVersion(&runtime);
  os << "CUDA: " << n << " device(s):";
  for (int i = 0; i < n; ++i) {
    DeviceInfo d = device_info(i);
    os << (i ? "," : "") << " cuda:" << i << " " << d.name << " (sm_" << d.cc_major << d.cc_minor
       << ", " << gib(d.total_memory) << ")";
  }
  os << "; driver " << driver / 1000 << "." << (driver % 1000) / 10 << ", runtime "
     << runtime / 1000 << "." << (runtime % 1000) / 10 << "; built for "
     << compiled_architectures() << "; " << describe_settings();
  return os.str();
}

// ---- initialisation and the stream -------------------------------------------------------

void backend_init() {
  if (g_initialized.load(std::memory_order_acquire)) return;
  std::lock_guard<std::mutex> lock(g_init_mutex);
  if (g_initialized.load(std::memory_order_relaxed)) return;
  MG_CHECK(available(), "built with CUDA, but no CUDA device is visible (cudaGetDeviceCount: ",
           no_device_reason(), "). CPU tensors keep working; check nvidia-smi, the driver and ",
           "CUDA_VISIBLE_DEVICES.");
  MG_CUDA_CHECK(cudaGetDevice(&g_device));
  MG_CUDA_CHECK(cudaSetDevice(g_device));
  // A blocking stream (not cudaStreamNonBlocking): it still orders with the legacy default
  // stream, so a stray synchronous cudaMemcpy elsewhere cannot race our kernels.
  MG_CUDA_CHECK(cudaStreamCreate(&g_stream));
  probe_kernel<<<1, 1, 0, g_stream>>>();
  cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess) err = cudaStreamSynchronize(g_stream);
  if (err != cudaSuccess) {
    DeviceInfo d = device_info(g_device);
    throw Error(mg::detail::cat(
        "CUDA: cannot run kernels on cuda:", g_device, " ", d.name, " (sm_", d.cc_major,
        d.cc_minor, "): ", cudaGetErrorName(err), " (", cudaGetErrorString(err),
        "). This binary was built for architectures ", compiled_architectures(),
        "; rebuild with -DCMAKE_CUDA_ARCHITECTURES=native (or ", d.cc_major, d.cc_minor, ")."));
  }
  g_initialized.store(true, std::memory_order_release);
}

namespace {
DeviceAllocator& start_backend() {
  backend_init();
  return caching_allocator();
}
// Registers the backend with core when the program starts (static initialisation), so
// core/allocator.cpp reaches it through a function pointer, never an include of cuda/.
[[maybe_unused]] const bool g_registered = (register_cuda_backend(&start_backend), true);
}  // namespace

void* stream() {
  backend_init();
  return g_stream;
}

void synchronize() {
  if (!g_initialized.load(std::memory_order_acquire)) return;  // nothing was ever queued
  MG_CUDA_CHECK(cudaStreamSynchronize(g_stream));
}

}  // namespace mg::cuda
