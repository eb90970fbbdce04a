#include "ops/matmul.h"

// Eigen's AVX-512 packet code trips a known GCC false positive (-Wmaybe-uninitialized on
// _mm256_undefined_pd); it is silenced for this file only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <Eigen/Core>

#include "autograd/tape.h"
#include "core/dispatch.h"
#include "core/parallel.h"

namespace mg {

namespace cpu {

template <typename T>
using RowMajorMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// C (M, N) = alpha op(A) op(B) + beta C; A (M, K) or (K, M), B (K, N) or (N, K).
template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
          const T* B, T beta, T* C) {
  if (M == 0 || N == 0) return;
  Eigen::Map<RowMajorMatrix<T>> c(C, M, N);
  if (K == 0) {  // an empty sum: C = beta C
    if (beta == T(0)) c.setZero(); else c *= beta;
    return;
  }
  // Maps of the matrices as stored; op(X) is the map or its (lazy, never materialised)
  // transpose, and Eigen folds alpha and the transposes into one GEMM call.
  Eigen::Map<const RowMajorMatrix<T>> a(A, trans_a ? K : M, trans_a ? M : K);
  Eigen::Map<const RowMajorMatrix<T>> b(B, trans_b ? N : K, trans_b ? K : N);
  auto run = [&](const auto& op_a, const auto& op_b) {
    if (beta == T(0)) {
      c.noalias() = alpha * (op_a * op_b);
    } else {
      if (beta != T(1)) c *= beta;
      c.noalias() += alpha * (op_a * op_b);
    }
  };
  if (!trans_a && !trans_b) run(a, b);
  else if (!trans_a && trans_b) run(a, b.transpose());
  else if (trans_a && !trans_b) run(a.transpose(), b);
  else run(a.transpose(), b.transpose());
}

// Runs f(i) for every batch element. Large products run one after another (Eigen spreads
// each over the threads); many small ones run in parallel over the batch instead (Eigen
// detects the enclosing parallel region and stays single-threaded inside).
template <typename F>
static void for_each_matrix(int64_t batch, int64_t flops_per_matrix, F&& f) {
  constexpr int64_t kSmallProduct = 64 * 64 * 64;
  if (flops_per_matrix >= kSmallProduct) {
    for (int64_t i = 0; i < batch; ++i) f(i);
    return;
  }
  int64_t grain = std::max<int64_t>(1, kSmallProduct / std::max<int64_t>(flops_per_matrix, 1));
  parallel_for(batch, grain, [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) f(i);
  });
}

// a (batch, M, K), b (K, N) when b_shared else (batch, K, N) -> y (batch, M, N).
template <typename T>
void matmul_forward(const T* a, const T* b, T* y, int64_t batch, int64_t M, int64_t K,
                    int64_t N, bool b_shared) {
  if (b_shared) {  // all batch rows against one weight: one (batch*M, K) x (K, N) GEMM
    gemm<T>(false, false, batch * M, N, K, T(1), a, b, T(0), y);
    return;
  }
  for_each_matrix(batch, M * N * K, [&](int64_t i) {
    gemm<T>(false, false, M, N, K, T(1), a + i * M * K, b + i * K * N, T(0), y + i * M * N);
  });
}

// dy (batch, M, N) -> da like a, db like b (either may be null).
template <typename T>
void matmul_backward(const T* a, const T* b, const T* dy, T* da, T* db, int64_t batch,
                     int64_t M, int64_t K, int64_t N, bool b_shared) {
  if (b_shared) {
    int64_t rows = batch * M;
    if (da) gemm<T>(false, true, rows, K, N, T(1), dy, b, T(0), da);   // dy b^T
    if (db) gemm<T>(true, false, K, N, rows, T(1), a, dy, T(0), db);   // a^T dy, all rows
    return;
  }
  for_each_matrix(batch, M * N * K, [&](int64_t i) {
    const T* ai = a + i * M * K;
    const T* bi = b + i * K * N;
    const T* dyi = dy + i * M * N;
    if (da) gemm<T>(false, true, M, K, N, T(1), dyi, bi, T(0), da + i * M * K);
    if (db) gemm<T>(true, false, K, N, M, T(1), ai, dyi, T(0), db + i * K * N);
  });
}

// x (rows, in), W (out, in), bias (out) or null -> y (rows, out).
template <typename T>
void linear_forward(const T* x, const T* W, const T* bias, T* y, int64_t rows, int64_t in,
                    int64_t out) {
  if (bias) {  // y = bias rows, then y += x W^T: the bias costs no extra pass over y
    parallel_for(rows, std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(out, 1)),
                 [&](int64_t s, int64_t e) {
                   for (int64_t r = s; r < e; ++r) std::copy(bias, bias + out, y + r * out);
                 });
  }
  gemm<T>(false, true, rows, out, in, T(1), x, W, bias ? T(1) : T(0), y);
}

// dy (rows, out) -> dx (rows, in), dW (out, in), dbias (out); null ones are skipped.
template <typename T>
void linear_backward(const T* x, const T* W, const T* dy, T* dx, T* dW, T* dbias, int64_t rows,
                     int64_t in, int64_t out) {
  if (dx) gemm<T>(false, false, rows, in, out, T(1), dy, W, T(0), dx);  // dy W
  if (dW) gemm<T>(true, false, out, in, rows, T(1), dy, x, T(0), dW);   // dy^T x
  if (dbias) {
    // Parallel over columns; each column sums its rows in order (thread-count independent).
    parallel_for(out, 256, [&](int64_t s, int64_t e) {
      for (int64_t j = s; j < e; ++j) dbias[j] = T(0);
      for (int64_t r = 0; r < rows; ++r) {
        const T* dyr = dy + r * out;
        for (int64_t j = s; j < e; ++j) dbias[j] += dyr[j];
      }
    });
  }
}

#define MG_INSTANTIATE(T)                                                                     \
  template void gemm<T>(bool, bool, int64_t, int64_t, int64_t, T, const T*, const T*, T, T*); \
  template void matmul_forward<T>(const T*, const T*, T*, int64_t, int64_t, int64_t, int64_t, \
                                  bool);                                                      \
  template void matmul_backward<T>(const T*, const T*, const T*, T*, T*, int64_t, int64_t,    \
                                   int64_t, int64_t, bool);                                   \
  template void linear_forward<T>(const T*, const T*, const T*, T*, int64_t, int64_t, int64_t); \
  template void linear_backward<T>(const T*, const T*, const T*, T*, T*, T*, int64_t, int64_t, \
                                   int64_t);
MG_INSTANTIATE(float)
MG_INSTANTIATE(double)
#undef MG_INSTANTIATE

}  // namespace cpu

Tensor matmul(const Tensor& a, const Tensor& b) {
  const char* op = "matmul";
  check_float(op, a, "a");
  check_float(op, b, "b");
  check_same_dtype(op, a, b);
  check_same_device(op, a, b);
  MG_CHECK(a.dim() >= 2, op, ": a must be (..., M, K) with at least 2 dimensions, got ",
           shape_str(a.shape()));
  MG_CHECK(b.dim() == 2 || b.dim() == a.dim(), op, ": b must be (K, N) or have a's rank (",
           a.dim(), "), got a ", shape_str(a.shape()), " and b ", shape_str(b.shape()));
  int64_t M = a.size(-2), K = a.size(-1), N = b.size(-1);
  MG_CHECK(b.size(-2) == K, op, ": inner dimensions differ: a ", shape_str(a.shape()),
           " has K = ", K, " but b ", shape_str(b.shape()), " has ", b.size(-2), " rows");
  bool b_shared = b.dim() == 2;
  Shape lead(a.shape().begin(), a.shape().end() - 2);
  if (!b_shared) {
    Shape b_lead(b.shape().begin(), b.shape().end() - 2);
    MG_CHECK(lead == b_lead, op, ": batch dimensions differ: a ", shape_str(a.shape()), " and b ",
             shape_str(b.shape()), " (a batched b needs the same leading dims as a)");
  }
  int64_t batch = shape_numel(lead);
  Shape y_shape = lead;
  y_shape.push_back(M);
  y_shape.push_back(N);
  Tensor y = Tensor::empty(y_shape, a.dtype(), a.device());
  dispatch_device(a.device(), a.dtype(), op,
      [&]<typename T>() {
        cuda::matmul_forward(a.data<T>(), b.data<T>(), y.data<T>(), batch, M, K, N, b_shared);
      },
      [&]<typename T>() {
        cpu::matmul_forward<T>(a.data<T>(), b.data<T>(), y.data<T>(), batch, M, K, N, b_shared);
      });
  record(op, {a, b}, {y}, [a, b, batch, M, K, N, b_shared](const std::vector<Tensor>& d) {
    Tensor da = a.requires_grad() ? Tensor::empty(a.shape(), a.dtype(), a.device()) : Tensor();
    Tensor db = b.requires_grad() ? Tensor::empty(b.shape(), b.dtype(), b.device()) : Tensor();
    dispatch_device(a.device(), a.dtype(), "matmul backward",
        [&]<typename T>() {
          cuda::matmul_backward(a.data<T>(), b.data<T>(), d[0].data<T>(), da.data_or_null<T>(),
                                db.data_or_null<T>(), batch, M, K, N, b_shared);
        },
        [&]<typename T>() {
          cpu::matmul_backward<T>(a.data<T>(), b.data<T>(), d[0].data<T>(), da.data_or_null<T>(),
                                  db.data_or_null<T>(), batch, M, K, N, b_shared);
        });
    return std::vector<Tensor>{da, db};
  });
  return y;
}

Tensor linear(const Tensor& x, const Tensor& W, const Tensor& b) {
  const char* op = "linear";
  check_float(op, x, "x");
  check_float(op, W, "W");
  check_same_dtype(op, x, W);
  check_same_device(op, x, W);
  MG_CHECK(x.dim() >= 1, op, ": x must be (..., in), got a 0-dimensional tensor");
  MG_CHECK(W.dim() == 2, op, ": W must be (out, in), got ", shape_str(W.shape()));
  int64_t in = x.size(-1), out = W.size(0);
  MG_CHECK(W.size(1) == in, op, ": x ", shape_str(x.shape()), " has in = ", in, " but W ",
           shape_str(W.shape()), " (out, in) expects in = ", W.size(1));
  if (b.defined()) {
    check_float(op, b, "b");
    check_same_dtype(op, x, b);
    check_same_device(op, x, b);
    check_shape(op, b, {out}, "b");
  }
  int64_t rows = in == 0 ? shape_numel(Shape(x.shape().begin(), x.shape().end() - 1))
                         : x.numel() / in;
  Shape y_shape = x.shape();
  y_shape.back() = out;
  Tensor y = Tensor::empty(y_shape, x.dtype(), x.device());
  dispatch_device(x.device(), x.dtype(), op,
      [&]<typename T>() {
        cuda::linear_forward(x.data<T>(), W.data<T>(), b.data_or_null<T>(), y.data<T>(), rows, in,
                             out);
      },
      [&]<typename T>() {
        cpu::linear_forward<T>(x.data<T>(), W.data<T>(), b.data_or_null<T>(), y.data<T>(), rows,
                               in, out);
      });
  record(op, {x, W, b}, {y}, [x, W, b, rows, in, out](const std::vector<Tensor>& d) {
    auto grad_like = [](const Tensor& t) {
      return t.defined() && t.requires_grad() ? Tensor::empty(t.shape(), t.dtype(), t.device())
                                              : Tensor();
    };
    Tensor dx = grad_like(x), dW = grad_like(W), db = grad_like(b);
    dispatch_device(x.device(), x.dtype(), "linear backward",
        [&]<typename T>() {
          cuda::linear_backward(x.data<T>(), W.data<T>(), d[0].data<T>(), dx.data_or_null<T>(),
                                dW.data_or_null<T>(), db.data_or_null<T>(), rows, in, out);
        },
        [&]<typename T>() {
          cpu::linear_backward<T>(x.data<T>(), W.data<T>(), d[0].data<T>(), dx.data_or_null<T>(),
                                  dW.data_or_null<T>(), db.data_or_null<T>(), rows, in, out);
        });
    return std::vector<Tensor>{dx, dW, db};
  });
  return y;
}

}  // namespace mg
