// cuda/matmul.cu — the CUDA twins of ops/matmul.h's kernels (declared there, with the
// derivation), through cuBLAS: cuBLAS GEMMs in row-major form, and linear's bias kernels.
// f32, device pointers, every call enqueued on the stream without a host sync.
//
// Row-major on a column-major library: a row-major (r, c) matrix is, byte for byte, the
// column-major (c, r) matrix X^T. So C (M, N) = op(A) op(B) row-major is computed as the
// column-major product C^T (N, M) = op(B)^T op(A)^T, i.e. cuBLAS is called with A and B swapped
// and M and N swapped; no transpose is ever materialised.
//
// TF32: settings().precision == Precision::tf32 (core/settings.h), off by default, so that f32 GEMMs match the
// CPU to ~1e-6 relative. On, cuBLAS may use TF32 tensor cores (about 10 mantissa bits in the
// products: much faster on Ampere and later, ~1e-3 relative error). The math mode is set from
// the setting on every GEMM call, so a change takes effect at the next GEMM.
//
// bf16 (mixed precision, ops/matmul.h): cublasGemmEx with CUDA_R_16BF operands and result and
// CUBLAS_COMPUTE_32F (products and sums in f32, the result rounded to bf16 once): tensor cores
// at the bf16 rate (~790 TFLOP/s dense on an H200 against ~50 for f32). Compiled, not yet run
// on a GPU.
//
// Determinism: cuBLAS GEMMs are bitwise reproducible run to run on the same GPU model and
// toolkit (one stream, atomics mode off, which is cuBLAS's default). linear_backward's dbias is
// a fixed-order two-pass column sum (no atomics).
#include "ops/matmul.h"

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <mutex>
#include <vector>

#include "core/settings.h"
#include "core/tensor.h"
#include "cuda/check.cuh"
#include "cuda/partial_sums.h"
#include "cuda/runtime.h"

namespace mg::cuda {

namespace {

// One cuBLAS handle per device, created on first use and kept for the process (destroying
// handles at exit races with the driver's own teardown, so they are deliberately leaked).
cublasHandle_t handle_for_current_device() {
  static std::mutex mutex;
  static std::vector<cublasHandle_t> handles;
  int dev = 0;
  MG_CUDA_CHECK(cudaGetDevice(&dev));
  std::lock_guard<std::mutex> lock(mutex);
  if ((int)handles.size() <= dev) handles.resize(dev + 1, nullptr);
  if (!handles[dev]) MG_CUBLAS_CHECK(cublasCreate(&handles[dev]));
  return handles[dev];
}

// The handle, bound to mambagrad's stream and to the current TF32 setting. CUBLAS_DEFAULT_MATH
// runs f32 GEMMs in full f32 (CUBLAS_PEDANTIC_MATH would also forbid some fast f32 kernels).
cublasHandle_t ready_handle() {
  cublasHandle_t h = handle_for_current_device();
  MG_CUBLAS_CHECK(cublasSetStream(h, cuda_stream()));
  MG_CUBLAS_CHECK(cublasSetMathMode(h, settings().precision == Precision::tf32 ? CUBLAS_TF32_TENSOR_OP_MATH
                                                    : CUBLAS_DEFAULT_MATH));
  return h;
}

// C (rows, cols) row-major with every row = bias.
__global__ void fill_rows_kernel(const float* __restrict__ bias, float* __restrict__ y,
                                 int64_t rows, int64_t cols) {
  int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x)
    y[i] = bias[i % cols];
}

// Pass 1 of column_sum: block (32, 8) sums column `col` over the rows of chunk blockIdx.y
// (thread row ty takes rows ty, ty + 8, ...), in double; the 8 thread partials are then
// added in ty order. part[chunk * cols + col].
constexpr int kColTile = 32, kRowThreads = 8;
__global__ void column_partial_kernel(const float* __restrict__ src, double* __restrict__ part,
                                      int64_t rows, int64_t cols, int64_t rows_per_chunk) {
  __shared__ double acc[kRowThreads][kColTile];
  int64_t col = blockIdx.x * (int64_t)kColTile + threadIdx.x;
  int64_t r0 = blockIdx.y * rows_per_chunk;
  int64_t r1 = min(rows, r0 + rows_per_chunk);
  double s = 0;
  if (col < cols)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += kRowThreads) s += (double)src[r * cols + col];
  acc[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && col < cols) {
    double t = 0;
    for (int k = 0; k < kRowThreads; ++k) t += acc[k][threadIdx.x];
    part[blockIdx.y * cols + col] = t;
  }
}

int blocks_for(int64_t n, int threads) {
  return (int)std::max<int64_t>(1, std::min<int64_t>((n + threads - 1) / threads, 65535 * 8));
}

}  // namespace

// C (M, N) = alpha op(A) op(B) + beta C; A (M, K) or (K, M), B (K, N) or (N, K).
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
          const float* A, const float* B, float beta, float* C) {
  if (M == 0 || N == 0) return;
  cublasHandle_t h = ready_handle();
  if (K == 0) {  // an empty sum: C = beta C (not left to cuBLAS, whose k = 0 path is terse)
    if (beta == 0.f)
      MG_CUDA_CHECK(cudaMemsetAsync(C, 0, (size_t)(M * N) * sizeof(float), cuda_stream()));
    else if (beta != 1.f)
      MG_CUBLAS_CHECK(cublasSscal_64(h, M * N, &beta, C, 1));
    return;
  }
  // Column-major C^T (N, M) = op(B)^T (N, K) op(A)^T (K, M); see the top of this file.
  MG_CUBLAS_CHECK(cublasSgemm_64(h, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                                 trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha, B,
                                 trans_b ? K : N, A, trans_a ? M : K, &beta, C, N));
}

// batch GEMMs C[i] = op(A[i]) op(B[i]) with element strides between the matrices (a stride
// of 0 shares one matrix), as one strided-batched cuBLAS call.
static void gemm_batched(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
                         const float* A, int64_t stride_a, const float* B, int64_t stride_b,
                         float* C, int64_t stride_c, int64_t batch) {
  if (batch == 0 || M == 0 || N == 0) return;
  if (K == 0) {
    MG_CUDA_CHECK(cudaMemsetAsync(C, 0, (size_t)(batch * M * N) * sizeof(float), cuda_stream()));
    return;
  }
  cublasHandle_t h = ready_handle();
  const float one = 1.f, zero = 0.f;
  MG_CUBLAS_CHECK(cublasSgemmStridedBatched_64(
      h, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &one,
      B, trans_b ? K : N, stride_b, A, trans_a ? M : K, stride_a, &zero, C, N, stride_c, batch));
}

// a (batch, M, K), b (K, N) when b_shared else (batch, K, N) -> y (batch, M, N).
void matmul_forward(const float* a, const float* b, float* y, int64_t batch, int64_t M,
                    int64_t K, int64_t N, bool b_shared) {
  if (b_shared) {  // one (batch*M, K) x (K, N) GEMM
    gemm(false, false, batch * M, N, K, 1.f, a, b, 0.f, y);
    return;
  }
  gemm_batched(false, false, M, N, K, a, M * K, b, K * N, y, M * N, batch);
}

// dy (batch, M, N) -> da like a, db like b (either may be null).
void matmul_backward(const float* a, const float* b, const float* dy, float* da, float* db,
                     int64_t batch, int64_t M, int64_t K, int64_t N, bool b_shared) {
  if (b_shared) {
    int64_t rows = batch * M;
    if (da) gemm(false, true, rows, K, N, 1.f, dy, b, 0.f, da);  // dy b^T
    if (db) gemm(true, false, K, N, rows, 1.f, a, dy, 0.f, db);  // a^T dy over all rows
    return;
  }
  if (da) gemm_batched(false, true, M, K, N, dy, M * N, b, K * N, da, M * K, batch);
  if (db) gemm_batched(true, false, K, N, M, a, M * K, dy, M * N, db, K * N, batch);
}

// x (rows, in), W (out, in), bias (out) or null -> y (rows, out).
void linear_forward(const float* x, const float* W, const float* bias, float* y, int64_t rows,
                    int64_t in, int64_t out) {
  if (rows == 0 || out == 0) return;
  if (bias) {  // y = bias rows, then y += x W^T
    fill_rows_kernel<<<blocks_for(rows * out, 256), 256, 0, cuda_stream()>>>(bias, y, rows, out);
    check_launch("linear_forward (bias rows)");
  }
  gemm(false, true, rows, out, in, 1.f, x, W, bias ? 1.f : 0.f, y);
}

// src (rows, cols) -> dst (cols): column sums, deterministic (two passes).
void column_sum(const float* src, float* dst, int64_t rows, int64_t cols) {
  if (cols == 0) return;
  // A fixed split of the rows into chunks (a function of `rows` only): deterministic.
  int64_t chunks = std::max<int64_t>(1, std::min<int64_t>((rows + 255) / 256, 128));
  int64_t per_chunk = std::max<int64_t>(1, (rows + chunks - 1) / chunks);
  chunks = std::max<int64_t>(1, (rows + per_chunk - 1) / per_chunk);
  int dev = 0;
  MG_CUDA_CHECK(cudaGetDevice(&dev));
  Tensor part = Tensor::empty({chunks * cols}, DType::f64, Device::cuda(dev));
  dim3 grid((unsigned)((cols + kColTile - 1) / kColTile), (unsigned)chunks);
  column_partial_kernel<<<grid, dim3(kColTile, kRowThreads), 0, cuda_stream()>>>(
      src, part.data<double>(), rows, cols, per_chunk);
  check_launch("column_sum (partials)");
  // Pass 2: dst[col] = the chunk partials added in chunk order.
  sum_partials(part.data<double>(), dst, PartialsLayout::rows(chunks, cols), false,
               "column_sum (finish)");
}

// dy (rows, out) -> dx (rows, in), dW (out, in), dbias (out); null ones are skipped.
void linear_backward(const float* x, const float* W, const float* dy, float* dx, float* dW,
                     float* dbias, int64_t rows, int64_t in, int64_t out) {
  if (dx) gemm(false, false, rows, in, out, 1.f, dy, W, 0.f, dx);  // dy W
  if (dW) gemm(true, false, out, in, rows, 1.f, dy, x, 0.f, dW);   // dy^T x
  if (dbias) column_sum(dy, dbias, rows, out);
}

// Row-major C (M, N) = op(A) op(B), bf16 A, B and C, f32 accumulation (see the top of the file).
static void gemm_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const bf16* A,
                      const bf16* B, bf16* C) {
  if (M == 0 || N == 0) return;
  if (K == 0) {  // an empty sum
    MG_CUDA_CHECK(cudaMemsetAsync(C, 0, (size_t)(M * N) * sizeof(bf16), cuda_stream()));
    return;
  }
  cublasHandle_t h = ready_handle();
  const float one = 1.f, zero = 0.f;
  MG_CUBLAS_CHECK(cublasGemmEx_64(h, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                                  trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &one, B,
                                  CUDA_R_16BF, trans_b ? K : N, A, CUDA_R_16BF, trans_a ? M : K,
                                  &zero, C, CUDA_R_16BF, N, CUBLAS_COMPUTE_32F,
                                  CUBLAS_GEMM_DEFAULT));
}

// x (rows, in), W (out, in) -> y (rows, out), bf16.
void linear_forward_bf16(const bf16* x, const bf16* W, bf16* y, int64_t rows, int64_t in,
                         int64_t out) {
  gemm_bf16(false, true, rows, out, in, x, W, y);
}

// dy (rows, out) -> dx (rows, in) = dy W, dW (out, in) = dy^T x; bf16, null ones skipped.
void linear_backward_bf16(const bf16* x, const bf16* W, const bf16* dy, bf16* dx, bf16* dW,
                          int64_t rows, int64_t in, int64_t out) {
  if (dx) gemm_bf16(false, false, rows, in, out, dy, W, dx);
  if (dW) gemm_bf16(true, false, out, in, rows, dy, x, dW);
}

}  // namespace mg::cuda
