// cuda/matmul.h — the CUDA twins of ops/matmul.h's kernels (f32 only), through cuBLAS.
//
// Same signatures and the same math as mg::cpu::gemm / matmul_forward / matmul_backward /
// linear_forward / linear_backward (ops/matmul.h has the derivation); every pointer is a
// device pointer and every call is enqueued on mg::cuda::stream() without a host sync.
//
// Row-major on a column-major library: a row-major (r, c) matrix is, byte for byte, the
// column-major (c, r) matrix X^T. So C (M, N) = op(A) op(B) row-major is computed as the
// column-major product C^T (N, M) = op(B)^T op(A)^T, i.e. cuBLAS is called with A and B swapped
// and M and N swapped; no transpose is ever materialised.
//
// TF32: off by default, so that f32 GEMMs match the CPU to ~1e-6 relative. With
// mg::cuda::set_allow_tf32(true) cuBLAS may use TF32 tensor cores (about 10 mantissa bits in
// the products: much faster on Ampere and later, ~1e-3 relative error). The mode is read on
// every call, so the switch takes effect immediately.
//
// Determinism: cuBLAS GEMMs are bitwise reproducible run to run on the same GPU model and
// toolkit (one stream, atomics mode off, which is cuBLAS's default). linear_backward's dbias is
// a fixed-order two-pass column sum (no atomics).
#pragma once
#include <cstdint>

namespace mg::cuda {

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

}  // namespace mg::cuda
