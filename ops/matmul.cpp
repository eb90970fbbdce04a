#include "ops/matmul.h"

// Eigen's AVX-512 packet code trips a known GCC false positive (-Wmaybe-uninitialized on
// _mm256_undefined_pd); it is silenced for this file only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <Eigen/Core>

#include <algorithm>
#include <array>
#include <vector>

#include "autograd/tape.h"
#include "core/allocator.h"
#include "core/settings.h"
#include "ops/arith.h"
#include "ops/convert.h"
#include "core/dispatch.h"
#include "core/parallel.h"

namespace mg {

namespace cpu {

template <typename T>
using RowMajorMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// ---- Thread-count independence --------------------------------------------------------------
// Eigen's own OpenMP GEMM picks its depth blocking (kc) from the thread count, so the order in
// which it sums over K, and with it the last bits of C, changed with OMP_NUM_THREADS. Here C
// is instead cut into fixed tiles, a pure function of (M, N, K) (gemm_tiling), and each tile is
// one single-threaded Eigen GEMM over the whole K: whichever thread runs a tile computes it
// the same way, so C is bitwise the same at any thread count. Vector-shaped products (M or N
// = 1, e.g. the decode step) and tiny ones go through Eigen's GEMV / coefficient path, which
// is sequential; they never reach Eigen's threaded GEMM either.
// Tiles start as the whole of C; the longer side (rows first on a tie: row tiles of a row-major
// A and C are contiguous) is halved, rounded up to a multiple of 16, while a tile keeps at
// least kMinSide on that side and kMinTileFlops of work and there are fewer than kMaxTiles.
// The packing cost of a tile is (tm + tn) K against 2 tm tn K flops: under 1% at the minimum.
// Sizes measured with bench_train --config tiny at one thread (where tiling only costs): with
// 16 tiles of at least 128 x 128 a step takes what Eigen's untiled GEMM took (~117 ms); 64
// tiles of 32 x 32 were ~14% slower (the dW GEMMs, K = 4096, became 32 x 32 tiles).
GemmTiling gemm_tiling(int64_t M, int64_t N, int64_t K) {
  constexpr int64_t kMinSide = 128, kMaxTiles = 16, kMinTileFlops = int64_t(1) << 22;
  auto halve = [](int64_t t) { return (((t + 1) / 2) + 15) / 16 * 16; };
  GemmTiling g;
  g.tm = M;
  g.tn = N;
  for (;;) {
    const int64_t tiles = ((M + g.tm - 1) / g.tm) * ((N + g.tn - 1) / g.tn);
    if (tiles >= kMaxTiles) break;
    const bool rows_first = g.tm >= g.tn;
    int64_t* side = nullptr;
    for (int64_t* s : rows_first ? std::array{&g.tm, &g.tn} : std::array{&g.tn, &g.tm}) {
      const int64_t h = halve(*s);
      const int64_t other = s == &g.tm ? g.tn : g.tm;
      if (h >= kMinSide && h < *s && 2 * h * other * K >= kMinTileFlops) {
        side = s;
        break;
      }
    }
    if (!side) break;
    *side = halve(*side);
  }
  g.row_tiles = (M + g.tm - 1) / g.tm;
  g.col_tiles = (N + g.tn - 1) / g.tn;
  return g;
}

// Eigen's cache blocking with fixed sizes: kc (the depth of a packed panel), mc and nc (the
// rows / columns of the packed blocks, in Eigen's column-major terms). Eigen's own heuristic
// (computeProductBlockingSizes) has cliffs: a 128 x 128 tile with K = 384..1024 and a packed
// row stride of 128 floats ran at ~18 GFLOP/s instead of ~140 (one EPYC core); kc = 256 ran
// every tile shape tried at 129..153 GFLOP/s (bench: docs/benchmarks.md, "GEMM tiles").
template <typename T>
struct FixedBlocking : Eigen::internal::level3_blocking<T, T> {
  FixedBlocking(Eigen::Index mc, Eigen::Index nc, Eigen::Index kc) {
    this->m_mc = mc;
    this->m_nc = nc;
    this->m_kc = kc;
  }
};

// C (m, n; row stride ldc) += alpha op(A) op(B) on raw pointers, single-threaded: Eigen's
// sequential GEMM kernel (what its own product calls for one thread) with FixedBlocking (its
// packing buffers are allocated by the kernel). op(A) is (m, k): A row-major with stride lda,
// or A^T (then A is read column-major with that stride); op(B) likewise.
template <typename T>
void gemm_kernel(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha,
                 const T* A, int64_t lda, const T* B, int64_t ldb, T* C, int64_t ldc) {
  namespace ei = Eigen::internal;
  using Index = Eigen::Index;
  constexpr int R = Eigen::RowMajor, Cm = Eigen::ColMajor;
  // A row-major C is computed as the column-major C^T = op(B)^T op(A)^T: Eigen's "rows" are
  // our n, its "columns" our m.
  FixedBlocking<T> blocking(std::min<int64_t>(n, 512), std::min<int64_t>(m, 2048),
                            std::min<int64_t>(k, 256));
  auto run = [&]<int OrderA, int OrderB>() {
    ei::general_matrix_matrix_product<Index, T, OrderA, false, T, OrderB, false, R, 1>::run(
        m, n, k, A, lda, B, ldb, C, 1, ldc, alpha, blocking);
  };
  if (!trans_a && !trans_b) run.template operator()<R, R>();
  else if (!trans_a && trans_b) run.template operator()<R, Cm>();
  else if (trans_a && !trans_b) run.template operator()<Cm, R>();
  else run.template operator()<Cm, Cm>();
}

// ---- One row times a row-major matrix transposed: the decode step's GEMVs -------------------
// c (N) = alpha B a + beta c with a (K) and B (N, K) row-major: every output is the dot product
// of a with one contiguous row of B. At batch 1 a decode step is nothing but these (in_proj,
// x_proj, dt_proj, out_proj, the LM head): all of B is streamed from memory once, so the speed
// is the memory bandwidth, and one thread cannot draw all of it. The rows are split into fixed
// blocks of kGemvRows (a function of N only), each dot product is Eigen's vectorised dot over
// the whole K, so every output is computed the same way at any thread count.
constexpr int64_t kGemvRows = 64;

template <typename T>
void gemv_rows(int64_t N, int64_t K, T alpha, const T* a, const T* B, T beta, T* c) {
  Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, 1>> x(a, K);
  parallel_for((N + kGemvRows - 1) / kGemvRows, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t j = b0 * kGemvRows; j < std::min(N, b1 * kGemvRows); ++j) {
      const T dot = Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, 1>>(B + j * K, K).dot(x);
      c[j] = beta == T(0) ? alpha * dot : alpha * dot + beta * c[j];
    }
  });
}

template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
          const T* B, T beta, T* C) {
  if (M == 0 || N == 0) return;
  Eigen::Map<RowMajorMatrix<T>> c(C, M, N);
  if (K == 0) {  // an empty sum: C = beta C
    if (beta == T(0)) c.setZero(); else c *= beta;
    return;
  }
  if (M == 1 && trans_b && N * K >= (int64_t(1) << 15)) {  // x W^T of one row (op(A) = A: 1 row)
    gemv_rows<T>(N, K, alpha, A, B, beta, C);
    return;
  }
  if (M == 1 || N == 1 || M + N + K < 20) {
    // Eigen's GEMV and coefficient-based products: sequential. Maps of the matrices as stored;
    // op(X) is the map or its (lazy) transpose, and Eigen folds alpha and the transposes in.
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
    return;
  }
  const GemmTiling g = gemm_tiling(M, N, K);
  const int64_t lda = trans_a ? M : K, ldb = trans_b ? K : N;
  parallel_for(g.count(), 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t i0 = (t / g.col_tiles) * g.tm, j0 = (t % g.col_tiles) * g.tn;
      const int64_t m = std::min(g.tm, M - i0), n = std::min(g.tn, N - j0);
      T* ct = C + i0 * N + j0;
      for (int64_t i = 0; i < m; ++i) {  // C = beta C first; the kernel accumulates
        T* row = ct + i * N;
        if (beta == T(0)) std::fill(row, row + n, T(0));
        else if (beta != T(1)) for (int64_t j = 0; j < n; ++j) row[j] *= beta;
      }
      // The tile's rows of op(A) and columns of op(B), as stored.
      const T* at = trans_a ? A + i0 : A + i0 * K;
      const T* bt = trans_b ? B + j0 * K : B + j0;
      gemm_kernel<T>(trans_a, trans_b, m, n, K, alpha, at, lda, bt, ldb, ct, N);
    }
  });
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

// x (rows, in), W (out, in) -> y (rows, out), all bf16: the f32 kernel on exact widenings.
void linear_forward_bf16(const bf16* x, const bf16* W, bf16* y, int64_t rows, int64_t in,
                         int64_t out) {
  const F32Scratch xf(x, rows * in), Wf(W, out * in), yf(rows * out);
  linear_forward<float>(xf.data(), Wf.data(), nullptr, yf.data(), rows, in, out);
  yf.round_into(y);
}

// dy (rows, out) -> dx (rows, in), dW (out, in), bf16; null ones are skipped.
void linear_backward_bf16(const bf16* x, const bf16* W, const bf16* dy, bf16* dx, bf16* dW,
                          int64_t rows, int64_t in, int64_t out) {
  const F32Scratch xf(x, rows * in), Wf(W, out * in), dyf(dy, rows * out);
  const F32Scratch dxf(dx ? rows * in : 0), dWf(dW ? out * in : 0);
  linear_backward<float>(xf.data(), Wf.data(), dyf.data(), dx ? dxf.data() : nullptr,
                         dW ? dWf.data() : nullptr, nullptr, rows, in, out);
  if (dx) dxf.round_into(dx);
  if (dW) dWf.round_into(dW);
}

}  // namespace cpu

DType linear_input_dtype(DType x_dtype, DType W_dtype) {
  if (x_dtype == DType::bf16 || W_dtype == DType::bf16) return DType::bf16;
  if (settings().precision == Precision::bf16 && x_dtype == DType::f32 && W_dtype == DType::f32)
    return DType::bf16;
  return x_dtype;
}

namespace {

// Whether linear computes in bf16: a bf16 operand, or f32 operands under Settings::precision
// = bf16 (f64, the gradcheck dtype, never).
bool linear_in_bf16(const Tensor& x, const Tensor& W) {
  return linear_input_dtype(x.dtype(), W.dtype()) == DType::bf16;
}

// y (rows, out) = x (rows, in) W (out, in)^T, bf16 tensors, f32 accumulation.
Tensor linear_bf16(const Tensor& x, const Tensor& W, const Shape& y_shape, int64_t rows,
                   int64_t in, int64_t out) {
  Tensor y = Tensor::empty(y_shape, DType::bf16, x.device());
  dispatch_device(x.device(), "linear (bf16)",
      [&]<typename>() {
        cuda::linear_forward_bf16(x.data<bf16>(), W.data<bf16>(), y.data<bf16>(), rows, in, out);
      },
      [&] { cpu::linear_forward_bf16(x.data<bf16>(), W.data<bf16>(), y.data<bf16>(), rows, in, out); });
  record("linear_bf16", {x, W}, {y}, [x, W, rows, in, out](const std::vector<Tensor>& d) {
    auto grad_like = [](const Tensor& t) {
      return t.requires_grad() ? Tensor::empty(t.shape(), DType::bf16, t.device()) : Tensor();
    };
    Tensor dx = grad_like(x), dW = grad_like(W);
    dispatch_device(x.device(), "linear (bf16) backward",
        [&]<typename>() {
          cuda::linear_backward_bf16(x.data<bf16>(), W.data<bf16>(), d[0].data<bf16>(),
                                     dx.data_or_null<bf16>(), dW.data_or_null<bf16>(), rows, in, out);
        },
        [&] {
          cpu::linear_backward_bf16(x.data<bf16>(), W.data<bf16>(), d[0].data<bf16>(),
                                    dx.data_or_null<bf16>(), dW.data_or_null<bf16>(), rows, in, out);
        });
    return std::vector<Tensor>{dx, dW};
  });
  return y;
}

}  // namespace

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
  check_same_device(op, x, W);
  MG_CHECK(x.dim() >= 1, op, ": x must be (..., in), got a 0-dimensional tensor");
  MG_CHECK(W.dim() == 2, op, ": W must be (out, in), got ", shape_str(W.shape()));
  int64_t in = x.size(-1), out = W.size(0);
  MG_CHECK(W.size(1) == in, op, ": x ", shape_str(x.shape()), " has in = ", in, " but W ",
           shape_str(W.shape()), " (out, in) expects in = ", W.size(1));
  if (b.defined()) {
    check_float(op, b, "b");
    check_same_device(op, x, b);
    check_shape(op, b, {out}, "b");
  }
  int64_t rows = in == 0 ? shape_numel(Shape(x.shape().begin(), x.shape().end() - 1))
                         : x.numel() / in;
  Shape y_shape = x.shape();
  y_shape.back() = out;
  if (linear_in_bf16(x, W)) {  // mixed precision: see the top of ops/matmul.h
    Tensor y = linear_bf16(to(x, DType::bf16), to(W, DType::bf16), y_shape, rows, in, out);
    return b.defined() ? to(y + b, DType::bf16) : y;  // the bias added in f32, rounded once more
  }
  check_same_dtype(op, x, W);
  if (b.defined()) check_same_dtype(op, x, b);
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
