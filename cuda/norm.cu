// cuda/norm.cu — the CUDA twins of ops/norm.h's RMSNorm and LayerNorm kernels (declared
// there, with the derivation): a block per row, deterministic weight gradients. f32, device
// pointers, enqueued on the stream.
//
// Row work (y, rstd, mean, dx): one thread block per row (64, 128 or 256 threads, chosen from
// D only). The row statistics (sum x^2, mean, two-pass variance, and the backward's mean(g),
// mean(g xh)) are accumulated in double like the CPU: every thread sums a strided part, the
// warps reduce with shuffles and the warp sums are added in warp order — a fixed order, so
// the results are bitwise reproducible. The elementwise formulas are evaluated in f32 in the
// CPU's operation order with explicit round-to-nearest operations (no FMA contraction).
//
// Weight gradients (dw = sum_rows dy * xh, db = sum_rows dy): no atomics. Pass 1 splits the
// rows into a fixed number of chunks (a function of `rows` only); block (32 columns, 8
// row-threads) x (chunk) accumulates in double and adds its 8 partials in a fixed order.
// Pass 2 (sum_partials, cuda/partial_sums.h) adds the chunk partials per column in chunk
// order. Deterministic in every mode.
#include "ops/norm.h"

#include <cuda_runtime.h>

#include <algorithm>

#include "core/tensor.h"
#include "cuda/check.cuh"
#include "cuda/norm_rows.cuh"
#include "cuda/partial_sums.h"
#include "cuda/runtime.h"

namespace mg::cuda {

namespace {

// r = 1/sqrt(mean(x^2) + eps); y = (x r) w.
__global__ void rms_forward_kernel(const float* __restrict__ x, const float* __restrict__ w,
                                   float* __restrict__ y, float* __restrict__ rstd, int64_t rows,
                                   int64_t D, float eps) {
  __shared__ double scratch[32];
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const float* xr = x + row * D;
    double s = 0;
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x) s += (double)xr[j] * (double)xr[j];
    double ms = block_sum(s, scratch) / (double)D;
    float r = (float)(1.0 / sqrt(ms + (double)eps));
    if (threadIdx.x == 0) rstd[row] = r;
    float* yr = y + row * D;
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x) yr[j] = __fmul_rn(__fmul_rn(xr[j], r), w[j]);
  }
}

// dx = r (g - xh mean(g xh)), g = dy w, xh = x r.
__global__ void rms_dx_kernel(const float* __restrict__ x, const float* __restrict__ w,
                              const float* __restrict__ rstd, const float* __restrict__ dy,
                              float* __restrict__ dx, int64_t rows, int64_t D) {
  __shared__ double scratch[32];
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const float* xr = x + row * D;
    const float* dyr = dy + row * D;
    float r = rstd[row];
    double s = 0;
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x)
      s += (double)__fmul_rn(dyr[j], w[j]) * (double)__fmul_rn(xr[j], r);
    float m = (float)(block_sum(s, scratch) / (double)D);
    float* dxr = dx + row * D;
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x)
      dxr[j] = __fmul_rn(r, __fsub_rn(__fmul_rn(dyr[j], w[j]), __fmul_rn(__fmul_rn(xr[j], r), m)));
  }
}

// mu = mean(x), var = mean((x - mu)^2) (two passes), r = 1/sqrt(var + eps);
// y = (x - mu) r w + b.
__global__ void ln_forward_kernel(const float* __restrict__ x, const float* __restrict__ w,
                                  const float* __restrict__ b, float* __restrict__ y,
                                  float* __restrict__ mean, float* __restrict__ rstd,
                                  int64_t rows, int64_t D, float eps) {
  __shared__ double scratch[32];
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const float* xr = x + row * D;
    double s = 0;
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x) s += (double)xr[j];
    double mu = block_sum(s, scratch) / (double)D;
    double v = 0;
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
      double c = (double)xr[j] - mu;
      v += c * c;
    }
    double var = block_sum(v, scratch) / (double)D;
    float mt = (float)mu, r = (float)(1.0 / sqrt(var + (double)eps));
    if (threadIdx.x == 0) {
      mean[row] = mt;
      rstd[row] = r;
    }
    float* yr = y + row * D;
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x)
      yr[j] = __fadd_rn(__fmul_rn(__fmul_rn(__fsub_rn(xr[j], mt), r), w[j]), b ? b[j] : 0.f);
  }
}

// dx = r (g - mean(g) - xh mean(g xh)), g = dy w, xh = (x - mu) r.
__global__ void ln_dx_kernel(const float* __restrict__ x, const float* __restrict__ w,
                             const float* __restrict__ mean, const float* __restrict__ rstd,
                             const float* __restrict__ dy, float* __restrict__ dx, int64_t rows,
                             int64_t D) {
  __shared__ double scratch[32];
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const float* xr = x + row * D;
    const float* dyr = dy + row * D;
    float mu = mean[row], r = rstd[row];
    double sg = 0, sgx = 0;
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
      float g = __fmul_rn(dyr[j], w[j]);
      sg += (double)g;
      sgx += (double)g * (double)__fmul_rn(__fsub_rn(xr[j], mu), r);
    }
    float mg = (float)(block_sum(sg, scratch) / (double)D);
    float mgx = (float)(block_sum(sgx, scratch) / (double)D);
    float* dxr = dx + row * D;
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
      float xh_m = __fmul_rn(__fmul_rn(__fsub_rn(xr[j], mu), r), mgx);
      dxr[j] = __fmul_rn(r, __fsub_rn(__fsub_rn(__fmul_rn(dyr[j], w[j]), mg), xh_m));
    }
  }
}

// Pass 1 of dw / db: block (32 columns, 8 row-threads), blockIdx.y = chunk of rows.
// xh = (x - mean) r, or x r when mean is null (RMSNorm). part_w / part_b[chunk * D + j].
constexpr int kCols = 32, kRowThreads = 8;
__global__ void norm_dw_partial_kernel(const float* __restrict__ x, const float* __restrict__ mean,
                                       const float* __restrict__ rstd, const float* __restrict__ dy,
                                       double* __restrict__ part_w, double* __restrict__ part_b,
                                       int64_t rows, int64_t D, int64_t rows_per_chunk) {
  __shared__ double acc_w[kRowThreads][kCols], acc_b[kRowThreads][kCols];
  int64_t j = blockIdx.x * (int64_t)kCols + threadIdx.x;
  int64_t r0 = blockIdx.y * rows_per_chunk, r1 = min(rows, r0 + rows_per_chunk);
  double sw = 0, sb = 0;
  if (j < D) {
    for (int64_t row = r0 + threadIdx.y; row < r1; row += kRowThreads) {
      float xv = x[row * D + j];
      float xh = mean ? __fmul_rn(__fsub_rn(xv, mean[row]), rstd[row]) : __fmul_rn(xv, rstd[row]);
      double g = (double)dy[row * D + j];
      sw += g * (double)xh;
      sb += g;
    }
  }
  acc_w[threadIdx.y][threadIdx.x] = sw;
  acc_b[threadIdx.y][threadIdx.x] = sb;
  __syncthreads();
  if (threadIdx.y == 0 && j < D) {
    double tw = 0, tb = 0;
    for (int k = 0; k < kRowThreads; ++k) {
      tw += acc_w[k][threadIdx.x];
      tb += acc_b[k][threadIdx.x];
    }
    if (part_w) part_w[blockIdx.y * D + j] = tw;
    if (part_b) part_b[blockIdx.y * D + j] = tb;
  }
}

// dw = sum_rows dy xh and db = sum_rows dy (either may be null), deterministic.
void weight_grads(const float* x, const float* mean, const float* rstd, const float* dy,
                  float* dw, float* db, int64_t rows, int64_t D) {
  if ((!dw && !db) || D == 0) return;
  int64_t chunks = std::max<int64_t>(1, std::min<int64_t>((rows + 127) / 128, 256));
  int64_t per_chunk = std::max<int64_t>(1, (rows + chunks - 1) / chunks);
  chunks = std::max<int64_t>(1, (rows + per_chunk - 1) / per_chunk);
  int dev = 0;
  MG_CUDA_CHECK(cudaGetDevice(&dev));
  Tensor part = Tensor::empty({2 * chunks * D}, DType::f64, Device::cuda(dev));
  double* part_w = dw ? part.data<double>() : nullptr;
  double* part_b = db ? part.data<double>() + chunks * D : nullptr;
  cudaStream_t s = cuda_stream();
  dim3 grid((unsigned)((D + kCols - 1) / kCols), (unsigned)chunks);
  norm_dw_partial_kernel<<<grid, dim3(kCols, kRowThreads), 0, s>>>(x, mean, rstd, dy, part_w,
                                                                   part_b, rows, D, per_chunk);
  check_launch("norm backward (weight partials)");
  // Pass 2: dw[j] (db[j]) = the chunk partials added in chunk order.
  if (dw) sum_partials(part_w, dw, PartialsLayout::rows(chunks, D), false, "norm backward (dw sums)");
  if (db) sum_partials(part_b, db, PartialsLayout::rows(chunks, D), false, "norm backward (db sums)");
}

}  // namespace

// x, y (rows, D); w (D); rstd (rows), written.
void rms_norm_forward(const float* x, const float* w, float* y, float* rstd, int64_t rows,
                      int64_t D, float eps) {
  if (rows == 0) return;
  rms_forward_kernel<<<row_blocks(rows), row_threads(D), 0, cuda_stream()>>>(x, w, y, rstd,
                                                                                rows, D, eps);
  check_launch("rms_norm_forward");
}

// x, dy, dx (rows, D); w, dw (D); rstd (rows). A null dx or dw is skipped.
void rms_norm_backward(const float* x, const float* w, const float* rstd, const float* dy,
                       float* dx, float* dw, int64_t rows, int64_t D) {
  if (dx && rows > 0) {
    rms_dx_kernel<<<row_blocks(rows), row_threads(D), 0, cuda_stream()>>>(x, w, rstd, dy, dx,
                                                                             rows, D);
    check_launch("rms_norm_backward (dx)");
  }
  weight_grads(x, nullptr, rstd, dy, dw, nullptr, rows, D);
}

// x, y (rows, D); w, b (D), b may be null; mean, rstd (rows), written.
void layer_norm_forward(const float* x, const float* w, const float* b, float* y, float* mean,
                        float* rstd, int64_t rows, int64_t D, float eps) {
  if (rows == 0) return;
  ln_forward_kernel<<<row_blocks(rows), row_threads(D), 0, cuda_stream()>>>(
      x, w, b, y, mean, rstd, rows, D, eps);
  check_launch("layer_norm_forward");
}

// x, dy, dx (rows, D); w, dw, db (D); mean, rstd (rows). Null outputs are skipped.
void layer_norm_backward(const float* x, const float* w, const float* mean, const float* rstd,
                         const float* dy, float* dx, float* dw, float* db, int64_t rows,
                         int64_t D) {
  if (dx && rows > 0) {
    ln_dx_kernel<<<row_blocks(rows), row_threads(D), 0, cuda_stream()>>>(x, w, mean, rstd, dy,
                                                                            dx, rows, D);
    check_launch("layer_norm_backward (dx)");
  }
  weight_grads(x, mean, rstd, dy, dw, db, rows, D);
}

}  // namespace mg::cuda
