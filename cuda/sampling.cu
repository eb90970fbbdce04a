// cuda/sampling.cu — the CUDA twin of cpu::sample_rows (ops/sampling.cpp; the math is in
// ops/sampling.h): one token per row of logits, chosen on the GPU. Nothing is read back here:
// the ids stay on the device (the caller copies B ints to the host, one per sequence).
//
// Greedy: one block per row, a strided scan for (max, lowest id) and a shared-memory tree.
// Sampling: the rows' first V logits are sorted descending with their ids by CUB's segmented
// radix sort (stable, so equal logits keep the lower id first: the CPU's stable sort), then one
// block per row walks the sorted row in 256-wide chunks: p = expf((l - max) / temperature),
// an inclusive block scan (cub::BlockScan, double) gives the running sums, and a block-wide
// minimum finds the first position where a sum passes its target (top-p's mass, the draw
// u * kept mass); min-p's cut is the first p < min_p. The sums' order differs from the CPU's
// sequential loop only in rounding.
#include "ops/sampling.h"

#include <cuda_runtime.h>

#include <cfloat>
#include <climits>
#include <cub/block/block_scan.cuh>
#include <cub/device/device_segmented_radix_sort.cuh>

#include "core/tensor.h"
#include "cuda/check.cuh"
#include "cuda/runtime.h"

namespace mg::cuda {

namespace {

constexpr int kThreads = 256;

Device current_device() {
  int dev = 0;
  MG_CUDA_CHECK(cudaGetDevice(&dev));
  return Device::cuda(dev);
}

// logits (B, V_pad) -> out (B): argmax over the first V columns, lowest id on ties.
__global__ void __launch_bounds__(kThreads)
    argmax_kernel(const float* __restrict__ logits, int32_t* __restrict__ out, int64_t V_pad,
                  int64_t V) {
  __shared__ float best_v[kThreads];
  __shared__ int32_t best_i[kThreads];
  const float* row = logits + blockIdx.x * V_pad;
  float v = -FLT_MAX;
  int32_t idx = INT_MAX;
  for (int64_t j = threadIdx.x; j < V; j += kThreads)
    if (row[j] > v || idx == INT_MAX) v = row[j], idx = (int32_t)j;  // j ascends: first max kept
  best_v[threadIdx.x] = v;
  best_i[threadIdx.x] = idx;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s /= 2) {
    if (threadIdx.x < s) {
      const float v2 = best_v[threadIdx.x + s];
      const int32_t i2 = best_i[threadIdx.x + s];
      if (i2 != INT_MAX && (best_i[threadIdx.x] == INT_MAX || v2 > best_v[threadIdx.x] ||
                            (v2 == best_v[threadIdx.x] && i2 < best_i[threadIdx.x]))) {
        best_v[threadIdx.x] = v2;
        best_i[threadIdx.x] = i2;
      }
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = best_i[0];
}

// ids (B, V_pad): j % V_pad; begin[b] = b V_pad, end[b] = b V_pad + V (the sorted segments).
__global__ void sort_inputs_kernel(int32_t* __restrict__ ids, int* __restrict__ begin,
                                   int* __restrict__ end, int64_t B, int64_t V_pad, int64_t V) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < B * V_pad;
       i += (int64_t)gridDim.x * blockDim.x) {
    ids[i] = (int32_t)(i % V_pad);
    if (i < B) {
      begin[i] = (int)(i * V_pad);
      end[i] = (int)(i * V_pad + V);
    }
  }
}

using BlockScan = cub::BlockScan<double, kThreads>;

struct RowScan {
  const float* keys;  // the row's sorted logits
  float max, temperature;
  BlockScan::TempStorage* scan;
  int* first;         // shared: the block-wide minimum position

  __device__ float prob(int64_t j) const { return expf((keys[j] - max) / temperature); }

  // The first i in [0, n) whose inclusive sum S_i = p_0 + ... + p_i passes `target`
  // (strict: target < S_i; else S_i >= target); n when none. *total = S_{n-1} when none passed.
  __device__ int64_t find(int64_t n, double target, bool strict, double* total) {
    double running = 0;
    for (int64_t base = 0; base < n; base += kThreads) {
      const int64_t j = base + threadIdx.x;
      const double p = j < n ? (double)prob(j) : 0.0;
      double incl, chunk;
      BlockScan(*scan).InclusiveSum(p, incl, chunk);
      if (threadIdx.x == 0) *first = INT_MAX;
      __syncthreads();
      const double cum = running + incl;
      if (j < n && (strict ? target < cum : cum >= target)) atomicMin(first, (int)threadIdx.x);
      __syncthreads();
      const int hit = *first;
      __syncthreads();  // everyone read *first (and the scan storage is free) before reuse
      if (hit != INT_MAX) return base + hit;
      running += chunk;
    }
    if (total) *total = running;
    return n;
  }
  // The first i in [0, n) with p_i < threshold, n when none (p is non-increasing).
  __device__ int64_t first_below(int64_t n, float threshold) {
    for (int64_t base = 0; base < n; base += kThreads) {
      const int64_t j = base + threadIdx.x;
      if (threadIdx.x == 0) *first = INT_MAX;
      __syncthreads();
      if (j < n && prob(j) < threshold) atomicMin(first, (int)threadIdx.x);
      __syncthreads();
      const int hit = *first;
      __syncthreads();
      if (hit != INT_MAX) return base + hit;
    }
    return n;
  }
};

// sorted_keys, sorted_ids (B, V_pad): each row's first V sorted descending; uniforms, out (B).
__global__ void __launch_bounds__(kThreads)
    choose_kernel(const float* __restrict__ sorted_keys, const int32_t* __restrict__ sorted_ids,
                  const float* __restrict__ uniforms, int32_t* __restrict__ out, int64_t V_pad,
                  int64_t V, SampleParams p) {
  __shared__ BlockScan::TempStorage scan;
  __shared__ int first;
  const int64_t b = blockIdx.x;
  RowScan row{sorted_keys + b * V_pad, sorted_keys[b * V_pad], p.temperature, &scan, &first};
  int64_t keep = p.top_k > 0 ? min(V, p.top_k) : V;
  if (p.top_p < 1.f) {
    double total = 0;
    row.find(keep, INFINITY, false, &total);
    const int64_t i = row.find(keep, (double)p.top_p * total, false, nullptr);
    if (i < keep) keep = i + 1;
  }
  if (p.min_p > 0.f) keep = max((int64_t)1, min(keep, row.first_below(keep, p.min_p)));
  double kept = 0;
  row.find(keep, INFINITY, false, &kept);
  int64_t i = row.find(keep, (double)uniforms[b] * kept, true, nullptr);
  if (i >= keep) i = keep - 1;  // rounding left u * kept >= the final sum
  if (threadIdx.x == 0) out[b] = sorted_ids[b * V_pad + i];
}

}  // namespace

// logits (B, V_pad), uniforms (B) (null when greedy), out (B).
void sample_rows(const float* logits, const float* uniforms, int32_t* out, int64_t B,
                 int64_t V_pad, const SampleParams& p) {
  if (B == 0) return;
  const int64_t V = p.vocab_limit > 0 ? std::min(V_pad, p.vocab_limit) : V_pad;
  MG_CHECK(B <= 65535, "cuda sample_rows: batch ", B, " exceeds one block per row (65535)");
  cudaStream_t s = cuda_stream();
  if (p.greedy()) {
    argmax_kernel<<<(unsigned)B, kThreads, 0, s>>>(logits, out, V_pad, V);
    check_launch("sample_rows (argmax)");
    return;
  }
  MG_CHECK(uniforms != nullptr, "cuda sample_rows: sampling needs uniforms");
  MG_CHECK(B * V_pad <= INT_MAX, "cuda sample_rows: B * V_pad = ", B * V_pad,
           " exceeds the segmented sort's int offsets");
  const Device dev = current_device();
  Tensor ids = Tensor::empty({B * V_pad}, DType::i32, dev);
  Tensor sorted_ids = Tensor::empty({B * V_pad}, DType::i32, dev);
  Tensor sorted_keys = Tensor::empty({B * V_pad}, DType::f32, dev);
  Tensor offsets = Tensor::empty({2 * B}, DType::i32, dev);
  int* begin = offsets.data<int32_t>();
  int* end = begin + B;
  sort_inputs_kernel<<<launch_1d(B * V_pad).grid, kThreads, 0, s>>>(ids.data<int32_t>(), begin,
                                                                    end, B, V_pad, V);
  check_launch("sample_rows (sort inputs)");
  size_t temp_bytes = 0;
  MG_CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairsDescending(
      nullptr, temp_bytes, logits, sorted_keys.data<float>(), ids.data<int32_t>(),
      sorted_ids.data<int32_t>(), (int)(B * V_pad), (int)B, begin, end, 0, 32, s));
  Tensor temp = Tensor::empty({(int64_t)(temp_bytes / 8 + 1)}, DType::f64, dev);
  MG_CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairsDescending(
      temp.raw_data(), temp_bytes, logits, sorted_keys.data<float>(), ids.data<int32_t>(),
      sorted_ids.data<int32_t>(), (int)(B * V_pad), (int)B, begin, end, 0, 32, s));
  choose_kernel<<<(unsigned)B, kThreads, 0, s>>>(sorted_keys.data<float>(),
                                                 sorted_ids.data<int32_t>(), uniforms, out, V_pad,
                                                 V, p);
  check_launch("sample_rows (choose)");
}

}  // namespace mg::cuda
