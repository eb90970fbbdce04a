// cuda/softmax.cu — the CUDA twins of ops/softmax.h's kernels (declared there, with the
// math): softmax, log_softmax and cross-entropy. f32 data, i32 targets, device pointers,
// enqueued on the stream.
//
// Over the last dim (inner = 1, the common case) one block of 256 threads handles a row:
// cub::BlockReduce for the max and for the sums (in double, fixed tree order, so results are
// deterministic); rows are spread over the grid. Over another dim one thread handles a
// strided slice, as the CPU does. cross_entropy: one block per row writes lse[r] and the row's
// loss (double, in a scratch buffer); one block then adds the row losses in a fixed order and
// divides by C. dloss is read on the device, so the backward needs no host sync.
//
// The one host sync: count_kept_targets validates the target ids on the GPU and reads back C
// and the first bad position (two integers), so that a bad id raises mg::Error instead of
// reading out of bounds.
#include "ops/softmax.h"

#include <cub/block/block_reduce.cuh>

#include "core/tensor.h"
#include "cuda/check.cuh"

namespace mg::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65535;

unsigned row_blocks(int64_t rows) { return (unsigned)std::clamp<int64_t>(rows, 1, kMaxBlocks); }

struct MaxF {
  __device__ float operator()(float a, float b) const { return b > a ? b : a; }
};

// Block-wide reductions whose result every thread gets. Each call ends with a barrier, so the
// shared temp storage can be reused by the next call.
struct RowReducer {
  using FloatReduce = cub::BlockReduce<float, kThreads>;
  using DoubleReduce = cub::BlockReduce<double, kThreads>;
  union Temp {
    typename FloatReduce::TempStorage f;
    typename DoubleReduce::TempStorage d;
  };
  Temp& tmp;
  float& f_out;
  double& d_out;

  __device__ float max(float v) {
    float r = FloatReduce(tmp.f).Reduce(v, MaxF{});
    if (threadIdx.x == 0) f_out = r;
    __syncthreads();
    r = f_out;
    __syncthreads();
    return r;
  }
  __device__ double sum(double v) {
    double r = DoubleReduce(tmp.d).Sum(v);
    if (threadIdx.x == 0) d_out = r;
    __syncthreads();
    r = d_out;
    __syncthreads();
    return r;
  }
};

#define MG_ROW_REDUCER(name)                                  \
  __shared__ typename RowReducer::Temp name##_tmp;            \
  __shared__ float name##_f;                                  \
  __shared__ double name##_d;                                 \
  RowReducer name{name##_tmp, name##_f, name##_d}

// max_k x[k] of the row, over the block.
__device__ float row_max(RowReducer& red, const float* xr, int64_t n) {
  float m = -INFINITY;
  for (int64_t k = threadIdx.x; k < n; k += kThreads) m = xr[k] > m ? xr[k] : m;
  return red.max(m);
}

template <bool kLog>
__global__ void softmax_rows_kernel(const float* __restrict__ x, float* __restrict__ y,
                                    int64_t rows, int64_t n) {
  MG_ROW_REDUCER(red);
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* xr = x + r * n;
    float* yr = y + r * n;
    float m = row_max(red, xr, n);
    double part = 0;
    for (int64_t k = threadIdx.x; k < n; k += kThreads) {
      float e = expf(xr[k] - m);
      if constexpr (!kLog) yr[k] = e;
      part += e;
    }
    double S = red.sum(part);
    if constexpr (kLog) {
      double log_S = log(S);
      for (int64_t k = threadIdx.x; k < n; k += kThreads)
        yr[k] = (float)((double)xr[k] - (double)m - log_S);
    } else {
      for (int64_t k = threadIdx.x; k < n; k += kThreads) yr[k] = (float)((double)yr[k] / S);
    }
  }
}

template <bool kLog>
__global__ void softmax_backward_rows_kernel(const float* __restrict__ y, const float* __restrict__ dy,
                                             float* __restrict__ dx, int64_t rows, int64_t n) {
  MG_ROW_REDUCER(red);
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* yr = y + r * n;
    const float* dyr = dy + r * n;
    float* dxr = dx + r * n;
    double part = 0;  // softmax: sum dy y; log_softmax: sum dy
    for (int64_t k = threadIdx.x; k < n; k += kThreads)
      part += kLog ? (double)dyr[k] : (double)dyr[k] * yr[k];
    double s = red.sum(part);
    for (int64_t k = threadIdx.x; k < n; k += kThreads) {
      if constexpr (kLog) dxr[k] = (float)((double)dyr[k] - exp((double)yr[k]) * s);
      else dxr[k] = (float)(yr[k] * ((double)dyr[k] - s));
    }
  }
}

// Slices along a non-last dim: one thread per slice (o, i), elements base + k*inner (the CPU loop).
template <bool kLog>
__global__ void softmax_slices_kernel(const float* __restrict__ x, float* __restrict__ y,
                                      int64_t outer, int64_t n, int64_t inner) {
  for (int64_t p = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; p < outer * inner;
       p += (int64_t)gridDim.x * blockDim.x) {
    int64_t b = (p / inner) * n * inner + p % inner;
    const float* xs = x + b;
    float* ys = y + b;
    float m = xs[0];
    for (int64_t k = 1; k < n; ++k) m = xs[k * inner] > m ? xs[k * inner] : m;
    double S = 0;
    for (int64_t k = 0; k < n; ++k) {
      float e = expf(xs[k * inner] - m);
      if constexpr (!kLog) ys[k * inner] = e;
      S += e;
    }
    if constexpr (kLog) {
      double log_S = log(S);
      for (int64_t k = 0; k < n; ++k) ys[k * inner] = (float)((double)xs[k * inner] - (double)m - log_S);
    } else {
      for (int64_t k = 0; k < n; ++k) ys[k * inner] = (float)((double)ys[k * inner] / S);
    }
  }
}

template <bool kLog>
__global__ void softmax_backward_slices_kernel(const float* __restrict__ y, const float* __restrict__ dy,
                                               float* __restrict__ dx, int64_t outer, int64_t n,
                                               int64_t inner) {
  for (int64_t p = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; p < outer * inner;
       p += (int64_t)gridDim.x * blockDim.x) {
    int64_t b = (p / inner) * n * inner + p % inner;
    double s = 0;
    for (int64_t k = 0; k < n; ++k)
      s += kLog ? (double)dy[b + k * inner] : (double)dy[b + k * inner] * y[b + k * inner];
    for (int64_t k = 0; k < n; ++k) {
      int64_t j = b + k * inner;
      if constexpr (kLog) dx[j] = (float)((double)dy[j] - exp((double)y[j]) * s);
      else dx[j] = (float)(y[j] * ((double)dy[j] - s));
    }
  }
}

template <bool kLog>
void softmax_like(const float* x, float* y, int64_t outer, int64_t n, int64_t inner) {
  if (n == 0 || outer * inner == 0) return;
  cudaStream_t s = cuda_stream();
  if (inner == 1) {
    softmax_rows_kernel<kLog><<<row_blocks(outer), kThreads, 0, s>>>(x, y, outer, n);
  } else {
    Launch1d l = launch_1d(outer * inner);
    softmax_slices_kernel<kLog><<<l.grid, l.block, 0, s>>>(x, y, outer, n, inner);
  }
  check_launch(kLog ? "log_softmax_forward" : "softmax_forward");
}

template <bool kLog>
void softmax_like_backward(const float* y, const float* dy, float* dx, int64_t outer, int64_t n,
                           int64_t inner) {
  if (n == 0 || outer * inner == 0) return;
  cudaStream_t s = cuda_stream();
  if (inner == 1) {
    softmax_backward_rows_kernel<kLog><<<row_blocks(outer), kThreads, 0, s>>>(y, dy, dx, outer, n);
  } else {
    Launch1d l = launch_1d(outer * inner);
    softmax_backward_slices_kernel<kLog><<<l.grid, l.block, 0, s>>>(y, dy, dx, outer, n, inner);
  }
  check_launch(kLog ? "log_softmax_backward" : "softmax_backward");
}

// ---- cross-entropy ------------------------------------------------------------------------

// targets (N) -> out[0] += kept count, out[1] = min bad position (integer atomics: exact).
__global__ void check_targets_kernel(const int32_t* __restrict__ t, int64_t N, int64_t V,
                                     int32_t ignore_index, unsigned long long* out) {
  // out[0]: kept count (integer atomics: exact in any order); out[1]: first bad position.
  for (int64_t r = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; r < N;
       r += (int64_t)gridDim.x * blockDim.x) {
    int32_t id = t[r];
    if (id == ignore_index) continue;
    if (id < 0 || id >= V) atomicMin(&out[1], (unsigned long long)r);
    else atomicAdd(&out[0], 1ull);
  }
}

// logits (N, V), targets (N) -> lse (N), row_loss (N) in double: one block per row.
__global__ void ce_forward_rows_kernel(const float* __restrict__ logits, const int32_t* __restrict__ targets,
                                       float* __restrict__ lse, double* __restrict__ row_loss,
                                       int64_t N, int64_t V, int32_t ignore_index) {
  MG_ROW_REDUCER(red);
  for (int64_t r = blockIdx.x; r < N; r += gridDim.x) {
    int32_t t = targets[r];
    if (t == ignore_index) {  // uniform across the block: no thread reaches a barrier alone
      if (threadIdx.x == 0) { lse[r] = 0.f; row_loss[r] = 0.0; }
      continue;
    }
    const float* xr = logits + r * V;
    float m = row_max(red, xr, V);
    double part = 0;
    for (int64_t v = threadIdx.x; v < V; v += kThreads) part += expf(xr[v] - m);
    double S = red.sum(part);
    if (threadIdx.x == 0) {
      double row_lse = (double)m + log(S);
      lse[r] = (float)row_lse;
      row_loss[r] = row_lse - (double)xr[t];
    }
  }
}

// One block: loss = sum_r row_loss[r] / count (0 when count = 0), in a fixed order.
__global__ void ce_mean_kernel(const double* __restrict__ row_loss, float* __restrict__ loss,
                               int64_t N, int64_t count) {
  MG_ROW_REDUCER(red);
  double part = 0;
  for (int64_t r = threadIdx.x; r < N; r += kThreads) part += row_loss[r];
  double total = red.sum(part);
  if (threadIdx.x == 0) loss[0] = count > 0 ? (float)(total / (double)count) : 0.f;
}

// logits (N, V), targets, lse (N), dloss () -> dlogits (N, V): one block per row.
__global__ void ce_backward_kernel(const float* __restrict__ logits, const int32_t* __restrict__ targets,
                                   const float* __restrict__ lse, const float* __restrict__ dloss,
                                   float* __restrict__ dlogits, int64_t N, int64_t V,
                                   int32_t ignore_index, int64_t count) {
  double scale = count > 0 ? (double)dloss[0] / (double)count : 0.0;
  for (int64_t r = blockIdx.x; r < N; r += gridDim.x) {
    int32_t t = targets[r];
    const float* xr = logits + r * V;
    float* dr = dlogits + r * V;
    bool skip = t == ignore_index || count == 0;
    float l = lse[r];
    for (int64_t v = threadIdx.x; v < V; v += kThreads) {
      if (skip) { dr[v] = 0.f; continue; }
      double p = expf(xr[v] - l);  // softmax(logits[r])[v]
      dr[v] = (float)((p - (v == t ? 1.0 : 0.0)) * scale);
    }
  }
}

}  // namespace

// x, y (outer, n, inner): softmax over n.
void softmax_forward(const float* x, float* y, int64_t outer, int64_t n, int64_t inner) {
  softmax_like<false>(x, y, outer, n, inner);
}
// x, y (outer, n, inner): log_softmax over n.
void log_softmax_forward(const float* x, float* y, int64_t outer, int64_t n, int64_t inner) {
  softmax_like<true>(x, y, outer, n, inner);
}
// y, dy, dx (outer, n, inner).
void softmax_backward(const float* y, const float* dy, float* dx, int64_t outer, int64_t n,
                      int64_t inner) {
  softmax_like_backward<false>(y, dy, dx, outer, n, inner);
}
// y, dy, dx (outer, n, inner).
void log_softmax_backward(const float* y, const float* dy, float* dx, int64_t outer, int64_t n,
                          int64_t inner) {
  softmax_like_backward<true>(y, dy, dx, outer, n, inner);
}

// targets (N) -> the kept count and the first bad position (a host sync).
TargetCheck count_kept_targets(const int32_t* targets, int64_t N, int64_t V, int32_t ignore_index) {
  TargetCheck result;
  if (N == 0) return result;
  cudaStream_t s = cuda_stream();
  Tensor scratch = Tensor::empty({2}, DType::f64, Device::cuda(0));  // two u64
  auto* out = static_cast<unsigned long long*>(scratch.raw_data());
  unsigned long long init[2] = {0ull, ~0ull};
  MG_CUDA_CHECK(cudaMemcpyAsync(out, init, sizeof(init), cudaMemcpyHostToDevice, s));
  Launch1d l = launch_1d(N);
  check_targets_kernel<<<l.grid, l.block, 0, s>>>(targets, N, V, ignore_index, out);
  check_launch("cross_entropy (target check)");
  unsigned long long host[2];
  MG_CUDA_CHECK(cudaMemcpyAsync(host, out, sizeof(host), cudaMemcpyDeviceToHost, s));
  MG_CUDA_CHECK(cudaStreamSynchronize(s));
  result.count = (int64_t)host[0];
  if (host[1] != ~0ull) {
    result.first_bad = (int64_t)host[1];
    MG_CUDA_CHECK(cudaMemcpyAsync(&result.bad_id, targets + result.first_bad, sizeof(int32_t),
                                  cudaMemcpyDeviceToHost, s));
    MG_CUDA_CHECK(cudaStreamSynchronize(s));
  }
  return result;
}

// logits (N, V), targets (N) -> loss () (mean over the count kept rows), lse (N).
void cross_entropy_forward(const float* logits, const int32_t* targets, float* loss, float* lse,
                           int64_t N, int64_t V, int32_t ignore_index, int64_t count) {
  cudaStream_t s = cuda_stream();
  Tensor row_loss = Tensor::empty({std::max<int64_t>(N, 1)}, DType::f64, Device::cuda(0));
  double* rl = row_loss.data<double>();
  if (N > 0) {
    ce_forward_rows_kernel<<<row_blocks(N), kThreads, 0, s>>>(logits, targets, lse, rl, N, V,
                                                              ignore_index);
    check_launch("cross_entropy_forward (rows)");
  }
  ce_mean_kernel<<<1, kThreads, 0, s>>>(rl, loss, N, count);
  check_launch("cross_entropy_forward (mean)");
}

// logits (N, V), targets, lse (N), dloss () -> dlogits (N, V).
void cross_entropy_backward(const float* logits, const int32_t* targets, const float* lse,
                            const float* dloss, float* dlogits, int64_t N, int64_t V,
                            int32_t ignore_index, int64_t count) {
  if (N * V == 0) return;
  ce_backward_kernel<<<row_blocks(N), kThreads, 0, cuda_stream()>>>(
      logits, targets, lse, dloss, dlogits, N, V, ignore_index, count);
  check_launch("cross_entropy_backward");
}

}  // namespace mg::cuda
