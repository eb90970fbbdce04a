// ops/matmul.h — matrix products: matmul (plain and batched) and linear (x W^T + b).
//
// Everything is built on ONE kernel, cpu::gemm, a row-major GEMM through Eigen:
//
//   C (M, N) = alpha op(A) op(B) + beta C        op(X) = X or X^T
//
// where A is stored (M, K) row-major, or (K, M) when trans_a, and B is stored (K, N), or
// (N, K) when trans_b. Transposes are never materialised: Eigen reads the stored matrix
// through a transposed map. With beta == 0 the old contents of C are ignored (C may be
// uninitialised memory).
//
// matmul(a, b): a (..., M, K) with either
//   b (K, N)        a weight shared by every batch element:  y (..., M, N) = a b.
//                   a's leading dims and M are rows of one matrix (rows = prod(...) * M), so
//                   the forward is ONE GEMM (rows, K) x (K, N), not a loop over the batch.
//   b (..., K, N)   the same leading batch dims as a:       y[i] = a[i] b[i]  (a loop of GEMMs)
// Backward (saved: a, b):
//   da[i] = dy[i] b[i]^T                      (rows, K) = (rows, N) (K, N)^T
//   db[i] = a[i]^T dy[i]                      one per batch element, or for a shared b
//   db    = sum_i a[i]^T dy[i] = a_flat^T dy_flat        (one GEMM over all rows: the
//                                                        batch sum happens inside the GEMM)
//
// linear(x, W, b): x (..., in), W (out, in) stored as in PyTorch, b (out) optional.
//   y (..., out) = x W^T + b       computed on the flattened x (rows, in), rows = prod(...):
//                                  y is first filled with b's rows, then one GEMM with beta = 1.
// Backward (saved: x, W), all on the flattened (rows, .) views:
//   dx (rows, in)  = dy W          (rows, out) (out, in)
//   dW (out, in)   = dy^T x        (out, rows) (rows, in): one GEMM that sums over every row
//   db (out)       = sum_r dy[r]   column sums, in row order (deterministic)
//
// Mixed precision (Settings::precision = bf16, or a bf16 x or W; docs/mixed_precision.md):
// linear casts x and W to bf16 (recorded on the tape, so the f32 master weight receives its
// gradient widened back to f32), multiplies with f32 accumulation and returns y in bf16; a
// bias is then added in f32 and the sum rounded to bf16. The backward's dx and dW come out in
// bf16 too (as under PyTorch's autocast). The bf16 kernels below: on CUDA cublasGemmEx with
// bf16 operands and CUBLAS_COMPUTE_32F; on the CPU the reference: the operands widened
// exactly to f32, the f32 GEMM, the result rounded to nearest even.
//
// Determinism: every result is bitwise the same at any thread count. cpu::gemm cuts C into
// fixed tiles (a function of M, N and K only: cpu::gemm_tiling) and runs each tile as one
// single-threaded Eigen GEMM over the whole K, the tiles spread over the threads; Eigen's own
// OpenMP GEMM is never used (it picks its K-blocking from the thread count, so its last bits
// changed with OMP_NUM_THREADS). Vector-shaped products (M or N = 1) use Eigen's sequential GEMV.
//
// Eigen is included only in ops/matmul.cpp (compile time). Batched matmul of many small
// matrices runs the batch in parallel instead (each GEMM on one thread).
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace mg {

namespace cpu {
// Row-major C (M, N) = alpha op(A) op(B) + beta C, op(X) = X^T when trans_x (see above).
template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
          const T* B, T beta, T* C);

// The fixed tiles gemm cuts C (M, N) into: tm x tn each (edge tiles smaller), in row-major
// tile order. A pure function of the sizes, never of the thread count.
struct GemmTiling {
  int64_t tm = 0, tn = 0;
  int64_t row_tiles = 0, col_tiles = 0;
  int64_t count() const { return row_tiles * col_tiles; }
};
GemmTiling gemm_tiling(int64_t M, int64_t N, int64_t K);

// y[i] (M, N) = a[i] (M, K) b[i] (K, N) for i < batch; b_shared: every a[i] uses b.
template <typename T>
void matmul_forward(const T* a, const T* b, T* y, int64_t batch, int64_t M, int64_t K,
                    int64_t N, bool b_shared);
// da[i] = dy[i] b[i]^T, db[i] = a[i]^T dy[i] (summed over i when b_shared). A null da or db
// is skipped.
template <typename T>
void matmul_backward(const T* a, const T* b, const T* dy, T* da, T* db, int64_t batch,
                     int64_t M, int64_t K, int64_t N, bool b_shared);

// y (rows, out) = x (rows, in) W (out, in)^T + bias (out); bias may be null.
template <typename T>
void linear_forward(const T* x, const T* W, const T* bias, T* y, int64_t rows, int64_t in,
                    int64_t out);
// dx = dy W, dW = dy^T x, dbias = column sums of dy. A null dx, dW or dbias is skipped.
template <typename T>
void linear_backward(const T* x, const T* W, const T* dy, T* dx, T* dW, T* dbias, int64_t rows,
                     int64_t in, int64_t out);

// bf16 operands and results, f32 accumulation: y = x W^T; dx = dy W, dW = dy^T x (null skipped).
void linear_forward_bf16(const bf16* x, const bf16* W, bf16* y, int64_t rows, int64_t in,
                         int64_t out);
void linear_backward_bf16(const bf16* x, const bf16* W, const bf16* dy, bf16* dx, bf16* dW,
                          int64_t rows, int64_t in, int64_t out);
}  // namespace cpu

// The CUDA twins (cuda/matmul.cu): the cpu:: kernels' arguments in the same order, f32,
// device pointers, enqueued on the backend's stream. Declared in every build, defined only
// in a CUDA build (core/dispatch.h says why that links).
namespace cuda {
// Row-major C (M, N) = alpha op(A) op(B) + beta C (see ops/matmul.h for the layouts).
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
          const float* A, const float* B, float beta, float* C);

void matmul_forward(const float* a, const float* b, float* y, int64_t batch, int64_t M,
                    int64_t K, int64_t N, bool b_shared);
void matmul_backward(const float* a, const float* b, const float* dy, float* da, float* db,
                     int64_t batch, int64_t M, int64_t K, int64_t N, bool b_shared);

void linear_forward(const float* x, const float* W, const float* bias, float* y, int64_t rows,
                    int64_t in, int64_t out);
void linear_backward(const float* x, const float* W, const float* dy, float* dx, float* dW,
                     float* dbias, int64_t rows, int64_t in, int64_t out);

// dst (cols) = column sums of src (rows, cols), each column summed in a fixed order (in
// double); used for linear's dbias. Deterministic.
void column_sum(const float* src, float* dst, int64_t rows, int64_t cols);

void linear_forward_bf16(const bf16* x, const bf16* W, bf16* y, int64_t rows, int64_t in,
                         int64_t out);
void linear_backward_bf16(const bf16* x, const bf16* W, const bf16* dy, bf16* dx, bf16* dW,
                          int64_t rows, int64_t in, int64_t out);
}  // namespace cuda

// a (..., M, K) times b (K, N) or b (..., K, N) with a's leading dims -> (..., M, N).
Tensor matmul(const Tensor& a, const Tensor& b);

// x (..., in), W (out, in), b (out) optional -> (..., out) = x W^T + b.
Tensor linear(const Tensor& x, const Tensor& W, const Tensor& b = Tensor());

// The dtype linear multiplies in for an x of dtype x_dtype and a W of W_dtype: bf16 when
// either is bf16, or both are f32 under Settings::precision = bf16 (mixed precision, above);
// x_dtype otherwise. An op that produces linear's input can write it in this dtype (the fused
// add + norm, ops/add_norm.h), and linear's cast of x then has nothing to do.
DType linear_input_dtype(DType x_dtype, DType W_dtype);

}  // namespace mg
