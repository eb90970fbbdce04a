#include "ops/arith.h"

#include <utility>
#include <vector>

#include "autograd/grad_mode.h"
#include "autograd/tape.h"
#include "core/dispatch.h"
#include "ops/convert.h"
#include "core/parallel.h"

namespace mg {

namespace cpu {

template <typename T, typename F>
static void binary_loop(F f, const T* a, const T* b, T* y, int64_t outer, int64_t inner,
                        Broadcast bc) {
  if (bc == Broadcast::none) {
    parallel_for(outer * inner, kElementwiseGrain, [&](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; ++i) y[i] = f(a[i], b[i]);
    });
    return;
  }
  if (inner == 1 && (bc == Broadcast::a_row || bc == Broadcast::b_row)) {  // a one-element operand
    parallel_for(outer, kElementwiseGrain, [&](int64_t s, int64_t e) {
      if (bc == Broadcast::b_row) { T bv = b[0]; for (int64_t i = s; i < e; ++i) y[i] = f(a[i], bv); }
      else                        { T av = a[0]; for (int64_t i = s; i < e; ++i) y[i] = f(av, b[i]); }
    });
    return;
  }
  parallel_for(outer, std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(inner, 1)),
               [&](int64_t s, int64_t e) {
    for (int64_t o = s; o < e; ++o) {
      T* yr = y + o * inner;
      const T* ar = a + o * inner;
      const T* br = b + o * inner;
      switch (bc) {
        case Broadcast::b_row: for (int64_t j = 0; j < inner; ++j) yr[j] = f(ar[j], b[j]); break;
        case Broadcast::a_row: for (int64_t j = 0; j < inner; ++j) yr[j] = f(a[j], br[j]); break;
        case Broadcast::b_col: { T bv = b[o]; for (int64_t j = 0; j < inner; ++j) yr[j] = f(ar[j], bv); break; }
        case Broadcast::a_col: { T av = a[o]; for (int64_t j = 0; j < inner; ++j) yr[j] = f(av, br[j]); break; }
        case Broadcast::none: break;
      }
    }
  });
}

template <typename T, typename F>
static void with_op(BinaryOp op, F&& body) {
  switch (op) {
    case BinaryOp::add: body([](T x, T z) { return x + z; }); break;
    case BinaryOp::sub: body([](T x, T z) { return x - z; }); break;
    case BinaryOp::mul: body([](T x, T z) { return x * z; }); break;
    case BinaryOp::div: body([](T x, T z) { return x / z; }); break;
  }
}

// a, b, y (outer, inner); with a broadcast the small operand is (inner) or (outer) (bc).
template <typename T>
void binary_forward(BinaryOp op, const T* a, const T* b, T* y, int64_t outer, int64_t inner,
                    Broadcast bc) {
  with_op<T>(op, [&](auto f) { binary_loop<T>(f, a, b, y, outer, inner, bc); });
}

// a, y (n): y = a op s, or s op a when scalar_left.
template <typename T>
void scalar_forward(BinaryOp op, const T* a, T s, T* y, int64_t n, bool scalar_left) {
  with_op<T>(op, [&](auto f) {
    parallel_for(n, kElementwiseGrain, [&](int64_t b, int64_t e) {
      if (scalar_left) for (int64_t i = b; i < e; ++i) y[i] = f(s, a[i]);
      else             for (int64_t i = b; i < e; ++i) y[i] = f(a[i], s);
    });
  });
}

// x (outer, inner) -> y (inner): y[j] = sum_o x[o, j].
template <typename T>
void sum_rows(const T* x, T* y, int64_t outer, int64_t inner) {
  // Parallel over columns j; each column sums its rows in order, so the result is the same
  // for any thread count.
  parallel_for(inner, 256, [&](int64_t s, int64_t e) {
    std::vector<double> acc(e - s, 0.0);
    for (int64_t o = 0; o < outer; ++o) {
      const T* xr = x + o * inner + s;
      for (int64_t j = 0; j < e - s; ++j) acc[j] += xr[j];
    }
    for (int64_t j = s; j < e; ++j) y[j] = (T)acc[j - s];
  });
}

// x (outer, inner) -> y (outer): y[o] = sum_j x[o, j].
template <typename T>
void sum_cols(const T* x, T* y, int64_t outer, int64_t inner) {
  parallel_for(outer, std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(inner, 1)),
               [&](int64_t s, int64_t e) {
    for (int64_t o = s; o < e; ++o) {
      double acc = 0;
      for (int64_t j = 0; j < inner; ++j) acc += x[o * inner + j];
      y[o] = (T)acc;
    }
  });
}

#define MG_INSTANTIATE(T)                                                                      \
  template void binary_forward<T>(BinaryOp, const T*, const T*, T*, int64_t, int64_t, Broadcast); \
  template void sum_cols<T>(const T*, T*, int64_t, int64_t);                                  \
  template void scalar_forward<T>(BinaryOp, const T*, T, T*, int64_t, bool);                   \
  template void sum_rows<T>(const T*, T*, int64_t, int64_t);
MG_INSTANTIATE(float)
MG_INSTANTIATE(double)
#undef MG_INSTANTIATE

}  // namespace cpu

static const char* op_name(BinaryOp op) {
  switch (op) {
    case BinaryOp::add: return "add";
    case BinaryOp::sub: return "sub";
    case BinaryOp::mul: return "mul";
    case BinaryOp::div: return "div";
  }
  return "?";
}

static bool is_suffix(const Shape& small, const Shape& big) {
  if (small.size() > big.size()) return false;
  return std::equal(small.begin(), small.end(), big.end() - small.size());
}

// small = big's leading dims followed by 1s (same rank), as a keepdim reduction returns.
static bool is_column(const Shape& small, const Shape& big) {
  if (small.size() != big.size()) return false;
  size_t k = 0;
  while (k < small.size() && small[k] == big[k]) ++k;
  for (size_t i = k; i < small.size(); ++i)
    if (small[i] != 1) return false;
  return true;
}

Tensor sum_to_shape(const Tensor& x, const Shape& shape) {
  if (x.shape() == shape) return x;
  int64_t small = shape_numel(shape);
  bool rows = is_suffix(shape, x.shape()) || small == 1;
  MG_CHECK(rows || is_column(shape, x.shape()), "sum_to_shape: cannot sum ",
           shape_str(x.shape()), " to ", shape_str(shape));
  Tensor y = Tensor::empty(shape, x.dtype(), x.device());
  int64_t other = small == 0 ? 0 : x.numel() / small;
  dispatch_device(x.device(), x.dtype(), "sum_to_shape",
      [&]<typename T>() {
        if (rows) cuda::sum_rows(x.data<T>(), y.data<T>(), other, small);
        else cuda::sum_cols(x.data<T>(), y.data<T>(), small, other);
      },
      [&]<typename T>() {
        if (rows) cpu::sum_rows<T>(x.data<T>(), y.data<T>(), other, small);
        else cpu::sum_cols<T>(x.data<T>(), y.data<T>(), small, other);
      });
  record("sum_to_shape", {x}, {y}, [xs = x.shape()](const std::vector<Tensor>& d) {
    // d (shape) broadcast back to xs: add it to zeros of xs.
    return std::vector<Tensor>{add(Tensor::zeros(xs, d[0].dtype(), d[0].device()), d[0])};
  });
  return y;
}

// d(a op b) for the incoming dy: (da, db) before summing over broadcast dimensions.
static std::pair<Tensor, Tensor> binary_grads(BinaryOp op, const Tensor& dy, const Tensor& a,
                                              const Tensor& b) {
  switch (op) {
    case BinaryOp::add: return {dy, dy};
    case BinaryOp::sub: return {dy, neg(dy)};
    case BinaryOp::mul: return {mul(dy, b), mul(dy, a)};
    case BinaryOp::div: return {div(dy, b), neg(div(mul(dy, a), mul(b, b)))};
  }
  return {};
}

static Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b);

// A bf16 operand (mixed precision): computed in f32 on widened temporaries; bf16 with bf16
// gives bf16 (rounded once), bf16 with f32 gives f32 (the residual add). One node on the
// operands as given, widened again in the backward, so the tape keeps no f32 copy of a bf16
// operand; the tape rounds each gradient to its operand's dtype.
static Tensor binary_bf16(BinaryOp op, const Tensor& a, const Tensor& b) {
  Tensor y;
  {
    NoGradGuard no_grad;
    y = binary(op, a.cast(DType::f32), b.cast(DType::f32));
  }
  if (is_bf16(a) && is_bf16(b)) y = y.cast(DType::bf16);
  record(op_name(op), {a, b}, {y}, [op, a, b](const std::vector<Tensor>& d) {
    const Tensor a32 = a.cast(DType::f32), b32 = b.cast(DType::f32);
    auto [da, db] = binary_grads(op, d[0].cast(DType::f32), a32, b32);
    return std::vector<Tensor>{a.requires_grad() ? sum_to_shape(da, a.shape()) : Tensor(),
                               b.requires_grad() ? sum_to_shape(db, b.shape()) : Tensor()};
  });
  return y;
}

static Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b) {
  const char* name = op_name(op);
  check_float(name, a, "a");
  check_float(name, b, "b");
  if (is_bf16(a) || is_bf16(b)) return binary_bf16(op, a, b);
  check_same_dtype(name, a, b);
  check_same_device(name, a, b);
  Broadcast bc = Broadcast::none;
  if (a.shape() != b.shape()) {
    if (is_suffix(b.shape(), a.shape()) || b.numel() == 1) bc = Broadcast::b_row;
    else if (is_suffix(a.shape(), b.shape()) || a.numel() == 1) bc = Broadcast::a_row;
    else if (is_column(b.shape(), a.shape())) bc = Broadcast::b_col;
    else if (is_column(a.shape(), b.shape())) bc = Broadcast::a_col;
    else
      throw Error(detail::cat(name, ": shapes ", shape_str(a.shape()), " and ", shape_str(b.shape()),
                              " do not broadcast (one must equal the other, be a trailing suffix "
                              "of it, have one element, or be its leading dims followed by 1s)"));
  }
  bool a_small = bc == Broadcast::a_row || bc == Broadcast::a_col;
  const Tensor& big = a_small ? b : a;
  const Tensor& small = a_small ? a : b;
  int64_t outer = 1, inner = big.numel();
  if (bc == Broadcast::a_row || bc == Broadcast::b_row) {
    inner = small.numel();
    outer = inner == 0 ? 0 : big.numel() / inner;
  } else if (bc == Broadcast::a_col || bc == Broadcast::b_col) {
    outer = small.numel();
    inner = outer == 0 ? 0 : big.numel() / outer;
  }
  Tensor y = Tensor::empty(big.shape(), a.dtype(), a.device());
  dispatch_device(a.device(), a.dtype(), name,
      [&]<typename T>() {
        cuda::binary_forward(op, a.data<T>(), b.data<T>(), y.data<T>(), outer, inner, bc);
      },
      [&]<typename T>() {
        cpu::binary_forward<T>(op, a.data<T>(), b.data<T>(), y.data<T>(), outer, inner, bc);
      });
  record(name, {a, b}, {y}, [op, a, b](const std::vector<Tensor>& d) {
    auto [da, db] = binary_grads(op, d[0], a, b);
    return std::vector<Tensor>{a.requires_grad() ? sum_to_shape(da, a.shape()) : Tensor(),
                               b.requires_grad() ? sum_to_shape(db, b.shape()) : Tensor()};
  });
  return y;
}

static Tensor scalar_op(BinaryOp op, const Tensor& a, double s, bool scalar_left) {
  const char* name = op_name(op);
  check_float(name, a, "a");
  if (is_bf16(a)) return to(scalar_op(op, widen_bf16(a), s, scalar_left), DType::bf16);
  Tensor y = Tensor::empty(a.shape(), a.dtype(), a.device());
  dispatch_device(a.device(), a.dtype(), name,
      [&]<typename T>() {
        cuda::scalar_forward(op, a.data<T>(), (T)s, y.data<T>(), a.numel(), scalar_left);
      },
      [&]<typename T>() {
        cpu::scalar_forward<T>(op, a.data<T>(), (T)s, y.data<T>(), a.numel(), scalar_left);
      });
  record(std::string(name) + "_scalar", {a}, {y},
         [op, a, s, scalar_left, y](const std::vector<Tensor>& d) {
           const Tensor& dy = d[0];
           Tensor da;
           switch (op) {
             case BinaryOp::add: da = dy; break;
             case BinaryOp::sub: da = scalar_left ? neg(dy) : dy; break;
             case BinaryOp::mul: da = mul(dy, s); break;
             // a / s -> dy / s;   s / a -> -dy * s / a^2 = -dy * y / a
             case BinaryOp::div: da = scalar_left ? neg(div(mul(dy, y), a)) : div(dy, s); break;
           }
           return std::vector<Tensor>{da};
         });
  return y;
}

Tensor add(const Tensor& a, const Tensor& b) { return binary(BinaryOp::add, a, b); }
Tensor sub(const Tensor& a, const Tensor& b) { return binary(BinaryOp::sub, a, b); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary(BinaryOp::mul, a, b); }
Tensor div(const Tensor& a, const Tensor& b) { return binary(BinaryOp::div, a, b); }
Tensor neg(const Tensor& x) { return scalar_op(BinaryOp::mul, x, -1.0, false); }
Tensor add(const Tensor& a, double s) { return scalar_op(BinaryOp::add, a, s, false); }
Tensor sub(const Tensor& a, double s) { return scalar_op(BinaryOp::sub, a, s, false); }
Tensor rsub(double s, const Tensor& a) { return scalar_op(BinaryOp::sub, a, s, true); }
Tensor mul(const Tensor& a, double s) { return scalar_op(BinaryOp::mul, a, s, false); }
Tensor div(const Tensor& a, double s) { return scalar_op(BinaryOp::div, a, s, false); }
Tensor rdiv(double s, const Tensor& a) { return scalar_op(BinaryOp::div, a, s, true); }

}  // namespace mg
