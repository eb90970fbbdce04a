// ops/arith.h — add, sub, mul, div, neg, with broadcasting of a trailing shape.
//
// Broadcasting (the two kinds mambagrad has, and all a Mamba model needs): the operands have
// the same shape, or one of them ("small") broadcasts against the other ("big") in one of two
// ways, and the output has the big shape:
//   - row:    small's shape is a suffix of big's, e.g. x (B, L, D) + bias (D), or small has one
//             element. View big as (outer, inner) with inner = numel(small):
//             y[o, j] = a[o, j] (op) b[j]
//   - column: small has big's rank with trailing 1s, the shape a keepdim reduction returns,
//             e.g. x (R, D) / s (R, 1). View big as (outer, inner) with outer = numel(small):
//             y[o, j] = a[o, j] (op) b[o]
//
// Backward (the small operand's gradient sums over the broadcast rows o):
//   add: da = dy                      db = dy
//   sub: da = dy                      db = -dy
//   mul: da = dy * b                  db = dy * a
//   div: da = dy / b                  db = -dy * a / b^2
//   neg: dx = -dy
// then da, db are summed to the operand's shape (sum_to_shape).
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace mg {

enum class BinaryOp { add, sub, mul, div };
// Which operand is small and how it is indexed in y[o*inner + j] (see above).
enum class Broadcast { none, a_row, b_row, a_col, b_col };

namespace cpu {
template <typename T>
void binary_forward(BinaryOp op, const T* a, const T* b, T* y, int64_t outer, int64_t inner,
                    Broadcast bc);
// y = a op s (scalar on the right) or s op a (scalar on the left).
template <typename T>
void scalar_forward(BinaryOp op, const T* a, T s, T* y, int64_t n, bool scalar_left);
// y[j] = sum_o x[o*inner + j] (rows) or y[o] = sum_j x[o*inner + j] (columns), in double.
template <typename T>
void sum_rows(const T* x, T* y, int64_t outer, int64_t inner);
template <typename T>
void sum_cols(const T* x, T* y, int64_t outer, int64_t inner);
}  // namespace cpu

// The CUDA twins (cuda/arith.cu): the cpu:: kernels' arguments in the same order, f32,
// device pointers, enqueued on the backend's stream. Declared in every build, defined only
// in a CUDA build (core/dispatch.h says why that links).
namespace cuda {
void binary_forward(BinaryOp op, const float* a, const float* b, float* y, int64_t outer,
                    int64_t inner, Broadcast bc);
void scalar_forward(BinaryOp op, const float* a, float s, float* y, int64_t n, bool scalar_left);
void sum_rows(const float* x, float* y, int64_t outer, int64_t inner);
void sum_cols(const float* x, float* y, int64_t outer, int64_t inner);
}  // namespace cuda

Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor neg(const Tensor& x);

Tensor add(const Tensor& a, double s);
Tensor sub(const Tensor& a, double s);
Tensor rsub(double s, const Tensor& a);  // s - a
Tensor mul(const Tensor& a, double s);
Tensor div(const Tensor& a, double s);
Tensor rdiv(double s, const Tensor& a);  // s / a

// Sums x so that it takes `shape`: over leading dims (shape a suffix of x's) or over trailing
// dims (shape = x's leading dims followed by 1s). The gradient of a broadcast operand.
Tensor sum_to_shape(const Tensor& x, const Shape& shape);

inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator-(const Tensor& x) { return neg(x); }
inline Tensor operator+(const Tensor& a, double s) { return add(a, s); }
inline Tensor operator+(double s, const Tensor& a) { return add(a, s); }
inline Tensor operator-(const Tensor& a, double s) { return sub(a, s); }
inline Tensor operator-(double s, const Tensor& a) { return rsub(s, a); }
inline Tensor operator*(const Tensor& a, double s) { return mul(a, s); }
inline Tensor operator*(double s, const Tensor& a) { return mul(a, s); }
inline Tensor operator/(const Tensor& a, double s) { return div(a, s); }
inline Tensor operator/(double s, const Tensor& a) { return rdiv(s, a); }

}  // namespace mg
