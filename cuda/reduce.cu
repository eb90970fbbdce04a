// cuda/reduce.cu — the CUDA twins of ops/reduce.h's kernels (declared there, with the math
// and the (outer, n, inner) view): sum, mean and max. f32 data, device pointers, enqueued on
// the stream, no host sync.
//
// How they reduce (all deterministic, with no atomics, in every mode):
//   sum over the last dim (inner = 1): one block of 256 threads per row (per fixed chunk of
//     32768 elements when the row is longer, then a second pass over the chunk sums); each
//     thread adds a strided run in double, then cub::BlockReduce adds the 256 thread sums in
//     its fixed tree order.
//   sum over another dim: one thread per output (o, i), adding k = 0..n-1 in order (reads are
//     coalesced across i); when there are few outputs and n is long, fixed chunks of 512 k's
//     are summed in parallel first, then their partial sums in chunk order.
//   full sum: cub::DeviceReduce::Reduce in double, then one rounding (run-to-run
//     deterministic on a given GPU; the association differs from the CPU's, so f32 results
//     agree with the CPU to rounding, not bitwise).
//   max: the first maximum (NaN beats numbers), combined by a total order on (value, index),
//     so any combining order gives exactly the CPU's answer, argmax included.
// Partition sizes depend on the shape only, never on the GPU, so results do not either
// (except the full sum, see above).
#include "ops/reduce.h"

#include <cub/block/block_reduce.cuh>
#include <cub/device/device_reduce.cuh>

#include "core/tensor.h"
#include "cuda/check.cuh"

namespace mg::cuda {

namespace {

constexpr int kThreads = 256;          // block size of the row kernels (fixes the sum order)
constexpr int64_t kRowChunk = 32768;   // a longer row is summed in chunks of this many
constexpr int64_t kColChunk = 512;     // k's per chunk when a column reduction is split
constexpr int64_t kFewOutputs = 32768; // ... which it is when it has fewer outputs than this
constexpr int64_t kMaxBlocks = 65535;  // grid-stride loops over segments beyond this

// A scratch buffer from the caching allocator; freeing it right after enqueuing the kernels
// that use it is safe (one stream).
Tensor scratch_doubles(int64_t count) { return Tensor::empty({count}, DType::f64, Device::cuda(0)); }

unsigned blocks_for_segments(int64_t segments) {
  return (unsigned)std::clamp<int64_t>(segments, 1, kMaxBlocks);
}

// ---- sums ---------------------------------------------------------------------------------

// Segment s = (row r, chunk c) sums x[r*n + c*chunk ... min(n, (c+1)*chunk)) in double.
// Final: y[r] = (float)(sum / divisor) (one chunk per row). Else: partial[s] = sum.
template <typename In, bool kFinal>
__global__ void row_sum_kernel(const In* __restrict__ x, float* __restrict__ y,
                               double* __restrict__ partial, int64_t rows, int64_t n,
                               int64_t chunk, int64_t chunks, double divisor) {
  using BlockReduce = cub::BlockReduce<double, kThreads>;
  __shared__ typename BlockReduce::TempStorage tmp;
  for (int64_t s = blockIdx.x; s < rows * chunks; s += gridDim.x) {
    int64_t r = s / chunks, c = s % chunks;
    int64_t begin = c * chunk, end = min(n, begin + chunk);
    const In* xr = x + r * n;
    double acc = 0;
    for (int64_t k = begin + threadIdx.x; k < end; k += kThreads) acc += (double)xr[k];
    double total = BlockReduce(tmp).Sum(acc);
    if (threadIdx.x == 0) {
      if constexpr (kFinal) y[r] = (float)(total / divisor);
      else partial[s] = total;
    }
    __syncthreads();  // tmp is reused by the next segment
  }
}

// Output t = (o, c, i) sums x[(o*n + k)*inner + i] for k in chunk c, in order, in double.
// Final: y[o*inner + i] = (float)(sum / divisor) (one chunk). Else: partial[t] = sum,
// laid out (outer, chunks, inner).
template <typename In, bool kFinal>
__global__ void col_sum_kernel(const In* __restrict__ x, float* __restrict__ y,
                               double* __restrict__ partial, int64_t outer, int64_t n,
                               int64_t inner, int64_t chunk, int64_t chunks, double divisor) {
  const int64_t total = outer * chunks * inner;
  for (int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; t < total;
       t += (int64_t)gridDim.x * blockDim.x) {
    int64_t i = t % inner, c = (t / inner) % chunks, o = t / (inner * chunks);
    int64_t begin = c * chunk, end = min(n, begin + chunk);
    const In* xo = x + o * n * inner + i;
    double acc = 0;
    for (int64_t k = begin; k < end; ++k) acc += (double)xo[k * inner];
    if constexpr (kFinal) y[o * inner + i] = (float)(acc / divisor);
    else partial[t] = acc;
  }
}

void sum_last_dim(const float* x, float* y, int64_t rows, int64_t n, double divisor) {
  cudaStream_t s = cuda_stream();
  if (n <= kRowChunk) {
    row_sum_kernel<float, true><<<blocks_for_segments(rows), kThreads, 0, s>>>(
        x, y, nullptr, rows, n, n, 1, divisor);
    check_launch("sum (rows)");
    return;
  }
  int64_t chunks = (n + kRowChunk - 1) / kRowChunk;
  Tensor partial = scratch_doubles(rows * chunks);
  double* p = partial.data<double>();
  row_sum_kernel<float, false><<<blocks_for_segments(rows * chunks), kThreads, 0, s>>>(
      x, nullptr, p, rows, n, kRowChunk, chunks, divisor);
  check_launch("sum (row chunks)");
  row_sum_kernel<double, true><<<blocks_for_segments(rows), kThreads, 0, s>>>(
      p, y, nullptr, rows, chunks, chunks, 1, divisor);
  check_launch("sum (row chunk sums)");
}

void sum_other_dim(const float* x, float* y, int64_t outer, int64_t n, int64_t inner,
                   double divisor) {
  cudaStream_t s = cuda_stream();
  if (n <= kColChunk || outer * inner >= kFewOutputs) {
    Launch1d l = launch_1d(outer * inner);
    col_sum_kernel<float, true><<<l.grid, l.block, 0, s>>>(x, y, nullptr, outer, n, inner, n, 1,
                                                           divisor);
    check_launch("sum (columns)");
    return;
  }
  int64_t chunks = (n + kColChunk - 1) / kColChunk;
  Tensor partial = scratch_doubles(outer * chunks * inner);
  double* p = partial.data<double>();
  Launch1d l = launch_1d(outer * chunks * inner);
  col_sum_kernel<float, false><<<l.grid, l.block, 0, s>>>(x, nullptr, p, outer, n, inner,
                                                          kColChunk, chunks, divisor);
  check_launch("sum (column chunks)");
  Launch1d l2 = launch_1d(outer * inner);
  col_sum_kernel<double, true><<<l2.grid, l2.block, 0, s>>>(p, y, nullptr, outer, chunks, inner,
                                                            chunks, 1, divisor);
  check_launch("sum (column chunk sums)");
}

struct AddDouble {
  __device__ double operator()(double a, double b) const { return a + b; }
};

// total () -> y () = total / divisor, rounded once to f32.
__global__ void finish_sum_kernel(const double* total, float* y, double divisor) {
  y[0] = (float)(total[0] / divisor);
}

// dx[r*inner + i] = dy[(r / n)*inner + i] / divisor, r = o*n + k.
__global__ void sum_backward_kernel(const float* __restrict__ dy, float* __restrict__ dx,
                                    int64_t total, int64_t n, int64_t inner, float divisor) {
  for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total;
       e += (int64_t)gridDim.x * blockDim.x) {
    int64_t r = e / inner, i = e % inner;
    dx[e] = dy[(r / n) * inner + i] / divisor;
  }
}

// ---- max ----------------------------------------------------------------------------------

struct ValueIndex {
  float v;
  int64_t i;
};

// The first-maximum rule as a total order: NaN above every number; equal values (or two NaNs)
// ordered by smaller index. So the combination is associative and commutative, and every
// reduction order returns the CPU's answer.
struct FirstMax {
  __device__ ValueIndex operator()(const ValueIndex& a, const ValueIndex& b) const {
    bool a_nan = a.v != a.v, b_nan = b.v != b.v;
    if (a_nan != b_nan) return a_nan ? a : b;
    if (!a_nan && a.v != b.v) return a.v > b.v ? a : b;
    return a.i <= b.i ? a : b;
  }
};

// Segment s = (row r, chunk c): the first max of x[r*n + k], k in the chunk (In = float), or
// of the chunk winners in[r*n + k] (In = ValueIndex). Final: y[r], argmax[r]; else out[s].
template <typename In, bool kFinal>
__global__ void row_max_kernel(const In* __restrict__ x, float* __restrict__ y,
                               int32_t* __restrict__ argmax, ValueIndex* __restrict__ out,
                               int64_t rows, int64_t n, int64_t chunk, int64_t chunks) {
  using BlockReduce = cub::BlockReduce<ValueIndex, kThreads>;
  __shared__ typename BlockReduce::TempStorage tmp;
  for (int64_t s = blockIdx.x; s < rows * chunks; s += gridDim.x) {
    int64_t r = s / chunks, c = s % chunks;
    int64_t begin = c * chunk, end = min(n, begin + chunk);
    ValueIndex best{-INFINITY, INT64_MAX};  // loses to every element (ties by index)
    for (int64_t k = begin + threadIdx.x; k < end; k += kThreads) {
      ValueIndex cand;
      if constexpr (std::is_same_v<In, float>) cand = {x[r * n + k], k};
      else cand = x[r * n + k];
      best = FirstMax{}(best, cand);
    }
    ValueIndex winner = BlockReduce(tmp).Reduce(best, FirstMax{});
    if (threadIdx.x == 0) {
      if constexpr (kFinal) {
        y[r] = winner.v;
        argmax[r] = (int32_t)winner.i;
      } else {
        out[s] = winner;
      }
    }
    __syncthreads();
  }
}

// One thread per output (o, i), k in order: the CPU loop.
__global__ void col_max_kernel(const float* __restrict__ x, float* __restrict__ y,
                               int32_t* __restrict__ argmax, int64_t outer, int64_t n,
                               int64_t inner) {
  for (int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; t < outer * inner;
       t += (int64_t)gridDim.x * blockDim.x) {
    int64_t o = t / inner, i = t % inner;
    const float* xo = x + o * n * inner + i;
    float best = xo[0];
    int32_t at = 0;
    for (int64_t k = 1; k < n; ++k) {
      float v = xo[k * inner];
      if (v > best || (v != v && best == best)) { best = v; at = (int32_t)k; }
    }
    y[t] = best;
    argmax[t] = at;
  }
}

void max_rows(const float* x, float* y, int32_t* argmax, int64_t rows, int64_t n) {
  cudaStream_t s = cuda_stream();
  if (n <= kRowChunk) {
    row_max_kernel<float, true><<<blocks_for_segments(rows), kThreads, 0, s>>>(
        x, y, argmax, nullptr, rows, n, n, 1);
    check_launch("max (rows)");
    return;
  }
  int64_t chunks = (n + kRowChunk - 1) / kRowChunk;
  static_assert(sizeof(ValueIndex) == 2 * sizeof(double));
  Tensor partial = scratch_doubles(2 * rows * chunks);
  auto* p = reinterpret_cast<ValueIndex*>(partial.data<double>());
  row_max_kernel<float, false><<<blocks_for_segments(rows * chunks), kThreads, 0, s>>>(
      x, nullptr, nullptr, p, rows, n, kRowChunk, chunks);
  check_launch("max (row chunks)");
  row_max_kernel<ValueIndex, true><<<blocks_for_segments(rows), kThreads, 0, s>>>(
      p, y, argmax, nullptr, rows, chunks, chunks, 1);
  check_launch("max (row chunk winners)");
}

// dx[o,k,i] = dy[o,i] if k == argmax[o,i] else 0.
__global__ void max_backward_kernel(const float* __restrict__ dy, const int32_t* __restrict__ argmax,
                                    float* __restrict__ dx, int64_t total, int64_t n,
                                    int64_t inner) {
  for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total;
       e += (int64_t)gridDim.x * blockDim.x) {
    int64_t r = e / inner, i = e % inner;
    int64_t o = r / n, k = r % n;
    int64_t out = o * inner + i;
    dx[e] = argmax[out] == k ? dy[out] : 0.f;
  }
}

}  // namespace

// x (outer, n, inner) -> y (outer, inner) = sum over n / divisor.
void sum_forward(const float* x, float* y, int64_t outer, int64_t n, int64_t inner, double divisor) {
  if (outer * inner == 0) return;
  if (inner == 1) sum_last_dim(x, y, outer, n, divisor);
  else sum_other_dim(x, y, outer, n, inner, divisor);
}

// x (n) -> y () = sum / divisor.
void sum_all_forward(const float* x, float* y, int64_t n, double divisor) {
  cudaStream_t s = cuda_stream();
  Tensor total = scratch_doubles(1);
  double* t = total.data<double>();
  if (n == 0) {
    MG_CUDA_CHECK(cudaMemsetAsync(t, 0, sizeof(double), s));
  } else {
    size_t temp_bytes = 0;
    MG_CUDA_CHECK(cub::DeviceReduce::Reduce(nullptr, temp_bytes, x, t, n, AddDouble{}, 0.0, s));
    Tensor temp = scratch_doubles((int64_t)((temp_bytes + 7) / 8 + 1));
    MG_CUDA_CHECK(cub::DeviceReduce::Reduce(temp.raw_data(), temp_bytes, x, t, n, AddDouble{},
                                            0.0, s));
  }
  finish_sum_kernel<<<1, 1, 0, s>>>(t, y, divisor);
  check_launch("sum (all)");
}

// dy (outer, inner) -> dx (outer, n, inner) = dy / divisor along n.
void sum_backward(const float* dy, float* dx, int64_t outer, int64_t n, int64_t inner,
                  double divisor) {
  int64_t total = outer * n * inner;
  if (total == 0) return;
  Launch1d l = launch_1d(total);
  sum_backward_kernel<<<l.grid, l.block, 0, cuda_stream()>>>(dy, dx, total, n, inner,
                                                             (float)divisor);
  check_launch("sum_backward");
}

// x (outer, n, inner) -> y, argmax (outer, inner).
void max_forward(const float* x, float* y, int32_t* argmax, int64_t outer, int64_t n,
                 int64_t inner) {
  if (outer * inner == 0) return;  // n >= 1 is checked by the op
  if (inner == 1) {
    max_rows(x, y, argmax, outer, n);
    return;
  }
  Launch1d l = launch_1d(outer * inner);
  col_max_kernel<<<l.grid, l.block, 0, cuda_stream()>>>(x, y, argmax, outer, n, inner);
  check_launch("max (columns)");
}

// x (n) -> y, argmax ().
void max_all_forward(const float* x, float* y, int32_t* argmax, int64_t n) {
  max_rows(x, y, argmax, 1, n);
}

// dy, argmax (outer, inner) -> dx (outer, n, inner).
void max_backward(const float* dy, const int32_t* argmax, float* dx, int64_t outer, int64_t n,
                  int64_t inner) {
  int64_t total = outer * n * inner;
  if (total == 0) return;
  Launch1d l = launch_1d(total);
  max_backward_kernel<<<l.grid, l.block, 0, cuda_stream()>>>(dy, argmax, dx, total, n, inner);
  check_launch("max_backward");
}

}  // namespace mg::cuda
