// cuda/bench.h — timing helpers for examples/bench_ops --device cuda (plain C++ header).
//
// Everything is timed with cudaEvents recorded on mg::cuda::stream() around each run, after
// one warm-up run; the functions return the median in milliseconds. The peers are called
// directly on raw buffers (no mambagrad tensors, no caching allocator in the timed region):
// cuBLAS for GEMMs (the bound a matmul op can reach), cudaMemcpyAsync device-to-device for
// memory-bound kernels (the bandwidth an elementwise or norm kernel can reach).
#pragma once
#include <cstdint>
#include <functional>

namespace mg::cuda::bench {

// Median ms of f(), where f enqueues GPU work on mg::cuda::stream().
double median_ms(const std::function<void()>& f, int repeats);

// Median ms of `batch` row-major f32 GEMMs (M, K) x (K, N) through cublasSgemm (batch == 1)
// or cublasSgemmStridedBatched, with TF32 as mg::settings().precision says.
double cublas_sgemm_ms(int64_t batch, int64_t M, int64_t N, int64_t K, int repeats);

// Median ms of one device-to-device cudaMemcpyAsync of `bytes` bytes (reads and writes
// `bytes` each: count 2 * bytes of traffic).
double memcpy_d2d_ms(int64_t bytes, int repeats);

}  // namespace mg::cuda::bench
