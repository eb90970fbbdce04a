// cuda/embedding.cu — the CUDA twins of ops/embedding.h's kernels (declared there): row
// gather forward, sorted (deterministic) or atomic scatter-add backward. f32 only; ids i32.
//
// Forward: one thread per (n, j), y[n, j] = weight[ids[n], j].
//
// Backward, dweight[v, :] = sum_{n : ids[n] = v} dy[n, :]:
//   settings().deterministic (the default): no float atomics. The pairs (ids[n], n) are
//     radix-sorted by id with CUB (a stable sort, so equal ids keep n in increasing order);
//     then the first position of every run of equal ids sums that run's dy rows in flat order
//     n, one thread per column. That is exactly the CPU's summation order, so the result is
//     bitwise equal to cpu::embedding_backward<float> and reproducible.
//   deterministic off: dweight = 0, then one float atomicAdd per (n, j) (faster with many
//     repeated ids; the last bits depend on the scheduling).
//
// ids are device memory; the range check needs them, so first_invalid_id scans them on the
// GPU and reads back ONE integer (a host sync: the price of raising mg::Error instead of
// reading out of bounds).
#include "ops/embedding.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cub/device/device_radix_sort.cuh>

#include "core/settings.h"
#include "core/tensor.h"
#include "cuda/check.cuh"
#include "cuda/runtime.h"

namespace mg::cuda {

namespace {

unsigned grid_for(int64_t n, int threads) {
  return (unsigned)std::max<int64_t>(1, std::min<int64_t>((n + threads - 1) / threads, 65535 * 16));
}

Device current_device() {
  int dev = 0;
  MG_CUDA_CHECK(cudaGetDevice(&dev));
  return Device::cuda(dev);
}

// *first = min n with ids[n] outside [0, V) (an integer atomic: the result is exact).
__global__ void find_invalid_kernel(const int32_t* __restrict__ ids, int64_t n_ids, int64_t V,
                                    unsigned long long* first) {
  for (int64_t n = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; n < n_ids;
       n += (int64_t)gridDim.x * blockDim.x)
    if (ids[n] < 0 || ids[n] >= V) atomicMin(first, (unsigned long long)n);
}

// ids (n_ids), weight (V, D) -> y (n_ids, D): one thread per element of y.
__global__ void gather_rows_kernel(const int32_t* __restrict__ ids, const float* __restrict__ weight,
                                   float* __restrict__ y, int64_t n_ids, int64_t D) {
  int64_t total = n_ids * D;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    int64_t n = i / D, j = i - n * D;
    y[i] = weight[(int64_t)ids[n] * D + j];
  }
}

// out (n) = 0, 1, ..., n - 1: the positions the radix sort carries along with the ids.
__global__ void iota_kernel(int32_t* __restrict__ out, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x)
    out[i] = (int32_t)i;
}

// Block s (grid-stride) handles sorted position s if it starts a run of equal ids: its
// threads split the D columns and each sums the run's dy rows in increasing n (the order the
// stable sort kept), starting from 0 as the CPU does.
__global__ void sum_runs_kernel(const uint32_t* __restrict__ sorted_ids,
                                const int32_t* __restrict__ sorted_pos, const float* __restrict__ dy,
                                float* __restrict__ dweight, int64_t n_ids, int64_t D) {
  for (int64_t s = blockIdx.x; s < n_ids; s += gridDim.x) {
    uint32_t v = sorted_ids[s];
    if (s > 0 && sorted_ids[s - 1] == v) continue;
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
      float acc = 0.f;
      for (int64_t t = s; t < n_ids && sorted_ids[t] == v; ++t)
        acc = __fadd_rn(acc, dy[(int64_t)sorted_pos[t] * D + j]);
      dweight[(int64_t)v * D + j] = acc;
    }
  }
}

// ids (n_ids), dy (n_ids, D) -> dweight (V, D) += dy rows: one float atomicAdd per element.
__global__ void scatter_add_atomic_kernel(const int32_t* __restrict__ ids, const float* __restrict__ dy,
                                          float* __restrict__ dweight, int64_t n_ids, int64_t D) {
  int64_t total = n_ids * D;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    int64_t n = i / D, j = i - n * D;
    atomicAdd(dweight + (int64_t)ids[n] * D + j, dy[i]);
  }
}

// Bits needed for keys in [0, V): the radix sort skips the always-zero high bits.
int key_bits(int64_t V) {
  int bits = 1;
  while (bits < 32 && (int64_t(1) << bits) < V) ++bits;
  return bits;
}

}  // namespace

// ids (n_ids) -> the first position whose id is outside [0, V), or -1.
int64_t first_invalid_id(const int32_t* ids, int64_t n_ids, int64_t V, int32_t* bad_id) {
  if (n_ids <= 0) return -1;
  Tensor flag = Tensor::empty({1}, DType::f64, current_device());  // 8 bytes for the u64
  auto* first = static_cast<unsigned long long*>(flag.raw_data());
  cudaStream_t s = cuda_stream();
  MG_CUDA_CHECK(cudaMemsetAsync(first, 0xFF, sizeof(unsigned long long), s));
  find_invalid_kernel<<<grid_for(n_ids, 256), 256, 0, s>>>(ids, n_ids, V, first);
  check_launch("embedding (id range check)");
  unsigned long long host = 0;
  MG_CUDA_CHECK(cudaMemcpyAsync(&host, first, sizeof(host), cudaMemcpyDeviceToHost, s));
  MG_CUDA_CHECK(cudaStreamSynchronize(s));
  if (host == ~0ull) return -1;
  if (bad_id) {
    MG_CUDA_CHECK(cudaMemcpyAsync(bad_id, ids + host, sizeof(int32_t), cudaMemcpyDeviceToHost, s));
    MG_CUDA_CHECK(cudaStreamSynchronize(s));
  }
  return (int64_t)host;
}

// ids (n_ids), weight (V, D) -> y (n_ids, D).
void embedding_forward(const int32_t* ids, const float* weight, float* y, int64_t n_ids,
                       int64_t D) {
  if (n_ids * D == 0) return;
  gather_rows_kernel<<<grid_for(n_ids * D, 256), 256, 0, cuda_stream()>>>(ids, weight, y, n_ids, D);
  check_launch("embedding_forward");
}

// ids (n_ids), dy (n_ids, D) -> dweight (V, D), overwritten.
void embedding_backward(const int32_t* ids, const float* dy, float* dweight, int64_t n_ids,
                        int64_t V, int64_t D) {
  cudaStream_t s = cuda_stream();
  if (V * D == 0) return;
  MG_CUDA_CHECK(cudaMemsetAsync(dweight, 0, (size_t)(V * D) * sizeof(float), s));
  if (n_ids == 0) return;
  if (!settings().deterministic) {
    scatter_add_atomic_kernel<<<grid_for(n_ids * D, 256), 256, 0, s>>>(ids, dy, dweight, n_ids, D);
    check_launch("embedding_backward (atomic)");
    return;
  }
  MG_CHECK(n_ids <= INT_MAX, "embedding backward: ", n_ids,
           " ids exceed the deterministic CUDA path's limit of 2^31 - 1");
  Device dev = current_device();
  int n = (int)n_ids;
  Tensor sorted_ids = Tensor::empty({n_ids}, DType::i32, dev);
  Tensor pos = Tensor::empty({n_ids}, DType::i32, dev);
  Tensor sorted_pos = Tensor::empty({n_ids}, DType::i32, dev);
  iota_kernel<<<grid_for(n_ids, 256), 256, 0, s>>>(pos.data<int32_t>(), n_ids);
  check_launch("embedding_backward (positions)");
  // Valid ids are >= 0, so their bits sort correctly as unsigned keys.
  const uint32_t* keys_in = reinterpret_cast<const uint32_t*>(ids);
  uint32_t* keys_out = reinterpret_cast<uint32_t*>(sorted_ids.data<int32_t>());
  size_t temp_bytes = 0;
  MG_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, keys_in, keys_out,
                                                pos.data<int32_t>(), sorted_pos.data<int32_t>(),
                                                n, 0, key_bits(V), s));
  Tensor temp = Tensor::empty({(int64_t)(temp_bytes / 8 + 1)}, DType::f64, dev);
  MG_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp.raw_data(), temp_bytes, keys_in, keys_out,
                                                pos.data<int32_t>(), sorted_pos.data<int32_t>(),
                                                n, 0, key_bits(V), s));
  int threads = (int)std::min<int64_t>(256, (D + 31) / 32 * 32);
  unsigned blocks = (unsigned)std::min<int64_t>(n_ids, 65535 * 16);
  sum_runs_kernel<<<blocks, threads, 0, s>>>(keys_out, sorted_pos.data<int32_t>(), dy, dweight,
                                             n_ids, D);
  check_launch("embedding_backward (sorted runs)");
}

}  // namespace mg::cuda
