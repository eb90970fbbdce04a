#include "ops/reduce.h"

#include <algorithm>
#include <limits>
#include <vector>

#include "autograd/tape.h"
#include "core/dispatch.h"
#include "core/parallel.h"

namespace mg {

namespace cpu {

// A dim reduction works on tiles of up to kTile neighbouring outputs (o, i0..i1) of one row o:
// for each k it adds the contiguous run x[o,k,i0..i1) to kTile accumulators. That reads memory
// in order (fast for inner > 1) while still adding every output's terms in the order k = 0..n-1.
constexpr int64_t kTile = 64;

// Calls f(o, i0, i1) for the tiles that cover the flat output range [s, e), flat = o*inner + i.
template <typename F>
static void for_each_tile(int64_t s, int64_t e, int64_t inner, F&& f) {
  for (int64_t p = s; p < e;) {
    int64_t o = p / inner, i0 = p % inner;
    int64_t i1 = std::min({inner, i0 + kTile, e - o * inner});
    f(o, i0, i1);
    p = o * inner + i1;
  }
}

// Outputs per parallel block: enough that a block reads about kElementwiseGrain inputs.
static int64_t outputs_grain(int64_t n) { return std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(n, 1)); }

// The max rule: v replaces the current best if larger, or if v is the first NaN.
template <typename T> static inline bool beats(T v, T best) {
  return v > best || (v != v && best == best);
}

// sum_j x[j] of a contiguous run, in double. Four interleaved accumulators (lane j % 4) break
// the chain of dependent adds; the order is still fixed, so the result is too.
template <typename T> static double sum_contiguous(const T* x, int64_t n) {
  double acc[4] = {0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 4 <= n; j += 4)
    for (int lane = 0; lane < 4; ++lane) acc[lane] += (double)x[j + lane];
  for (; j < n; ++j) acc[j % 4] += (double)x[j];
  return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

// x (outer, n, inner) -> y (outer, inner) = sum over n / divisor.
template <typename T>
void sum_forward(const T* x, T* y, int64_t outer, int64_t n, int64_t inner, double divisor) {
  if (inner == 1) {  // reducing the last dim: each output sums one contiguous run
    parallel_for(outer, outputs_grain(n), [&](int64_t s, int64_t e) {
      for (int64_t o = s; o < e; ++o) y[o] = (T)(sum_contiguous(x + o * n, n) / divisor);
    });
    return;
  }
  parallel_for(outer * inner, outputs_grain(n), [&](int64_t s, int64_t e) {
    for_each_tile(s, e, inner, [&](int64_t o, int64_t i0, int64_t i1) {
      double acc[kTile] = {};
      int64_t w = i1 - i0;
      for (int64_t k = 0; k < n; ++k) {
        const T* xr = x + (o * n + k) * inner + i0;
        for (int64_t j = 0; j < w; ++j) acc[j] += (double)xr[j];
      }
      for (int64_t j = 0; j < w; ++j) y[o * inner + i0 + j] = (T)(acc[j] / divisor);
    });
  });
}

// x (n) -> y () = sum / divisor.
template <typename T>
void sum_all_forward(const T* x, T* y, int64_t n, double divisor) {
  int64_t blocks = (n + kSumBlock - 1) / kSumBlock;
  std::vector<double> partial(blocks, 0.0);
  parallel_for(blocks, 8, [&](int64_t s, int64_t e) {
    for (int64_t b = s; b < e; ++b) {
      int64_t start = b * kSumBlock;
      partial[b] = sum_contiguous(x + start, std::min(kSumBlock, n - start));
    }
  });
  double total = 0;
  for (double p : partial) total += p;  // in block order: independent of the thread count
  y[0] = (T)(total / divisor);
}

// dy (outer, inner) -> dx (outer, n, inner) = dy / divisor along n.
template <typename T>
void sum_backward(const T* dy, T* dx, int64_t outer, int64_t n, int64_t inner, double divisor) {
  // One "row" r = o*n + k is the run dx[o,k,0..inner), a copy of dy[o,0..inner) / divisor.
  T div = (T)divisor;
  parallel_for(outer * n, std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(inner, 1)),
               [&](int64_t s, int64_t e) {
                 for (int64_t r = s; r < e; ++r) {
                   const T* dyr = dy + (r / n) * inner;
                   T* dxr = dx + r * inner;
                   for (int64_t i = 0; i < inner; ++i) dxr[i] = dyr[i] / div;
                 }
               });
}

// x (outer, n, inner) -> y, argmax (outer, inner).
template <typename T>
void max_forward(const T* x, T* y, int32_t* argmax, int64_t outer, int64_t n, int64_t inner) {
  parallel_for(outer * inner, outputs_grain(n), [&](int64_t s, int64_t e) {
    for_each_tile(s, e, inner, [&](int64_t o, int64_t i0, int64_t i1) {
      T best[kTile];
      int32_t at[kTile];
      int64_t w = i1 - i0;
      const T* x0 = x + o * n * inner + i0;  // k = 0 starts every slice
      for (int64_t j = 0; j < w; ++j) { best[j] = x0[j]; at[j] = 0; }
      for (int64_t k = 1; k < n; ++k) {
        const T* xr = x + (o * n + k) * inner + i0;
        for (int64_t j = 0; j < w; ++j)
          if (beats(xr[j], best[j])) { best[j] = xr[j]; at[j] = (int32_t)k; }
      }
      for (int64_t j = 0; j < w; ++j) {
        y[o * inner + i0 + j] = best[j];
        argmax[o * inner + i0 + j] = at[j];
      }
    });
  });
}

// x (n) -> y, argmax ().
template <typename T>
void max_all_forward(const T* x, T* y, int32_t* argmax, int64_t n) {
  int64_t blocks = (n + kSumBlock - 1) / kSumBlock;
  std::vector<T> block_max(blocks);
  std::vector<int64_t> block_at(blocks);
  parallel_for(blocks, 8, [&](int64_t s, int64_t e) {
    for (int64_t b = s; b < e; ++b) {
      int64_t at = b * kSumBlock;
      for (int64_t j = at + 1; j < std::min(n, (b + 1) * kSumBlock); ++j)
        if (beats(x[j], x[at])) at = j;
      block_max[b] = x[at];
      block_at[b] = at;
    }
  });
  int64_t best = 0;  // blocks in order with a strict rule: the first maximum wins
  for (int64_t b = 1; b < blocks; ++b)
    if (beats(block_max[b], block_max[best])) best = b;
  y[0] = block_max[best];
  argmax[0] = (int32_t)block_at[best];
}

// dy, argmax (outer, inner) -> dx (outer, n, inner): dy at the argmax, 0 elsewhere.
template <typename T>
void max_backward(const T* dy, const int32_t* argmax, T* dx, int64_t outer, int64_t n,
                  int64_t inner) {
  parallel_for(outer * n, std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(inner, 1)),
               [&](int64_t s, int64_t e) {
                 for (int64_t r = s; r < e; ++r) {
                   int64_t o = r / n, k = r % n;
                   const T* dyr = dy + o * inner;
                   const int32_t* ar = argmax + o * inner;
                   T* dxr = dx + r * inner;
                   for (int64_t i = 0; i < inner; ++i) dxr[i] = ar[i] == k ? dyr[i] : T(0);
                 }
               });
}

#define MG_INSTANTIATE(T)                                                                   \
  template void sum_forward<T>(const T*, T*, int64_t, int64_t, int64_t, double);            \
  template void sum_all_forward<T>(const T*, T*, int64_t, double);                          \
  template void sum_backward<T>(const T*, T*, int64_t, int64_t, int64_t, double);           \
  template void max_forward<T>(const T*, T*, int32_t*, int64_t, int64_t, int64_t);          \
  template void max_all_forward<T>(const T*, T*, int32_t*, int64_t);                        \
  template void max_backward<T>(const T*, const int32_t*, T*, int64_t, int64_t, int64_t);
MG_INSTANTIATE(float)
MG_INSTANTIATE(double)
#undef MG_INSTANTIATE

}  // namespace cpu

ReduceView reduce_view(const char* op, const Tensor& x, int64_t dim) {
  const Shape& s = x.shape();
  int64_t nd = (int64_t)s.size();
  int64_t d = dim < 0 ? dim + nd : dim;
  MG_CHECK(d >= 0 && d < nd, op, ": dim ", dim, " is out of range for x of shape ", shape_str(s),
           " (", nd, " dimensions: valid dims are ", -nd, " to ", nd - 1, ")");
  ReduceView v{d, 1, s[d], 1};
  for (int64_t k = 0; k < d; ++k) v.outer *= s[k];
  for (int64_t k = d + 1; k < nd; ++k) v.inner *= s[k];
  return v;
}

static Shape reduced_shape(const Shape& s, int64_t d, bool keepdim) {
  Shape r = s;
  if (keepdim) r[d] = 1;
  else r.erase(r.begin() + d);
  return r;
}

static void check_input(const char* op, const Tensor& x) { check_float(op, x, "x"); }

// sum (divide_by_n = false) and mean (true) over one dim.
static Tensor sum_dim(const char* op, const Tensor& x, int64_t dim, bool keepdim, bool divide_by_n) {
  check_input(op, x);
  ReduceView v = reduce_view(op, x, dim);
  double divisor = divide_by_n ? (double)v.n : 1.0;
  Tensor y = Tensor::empty(reduced_shape(x.shape(), v.dim, keepdim), x.dtype(), x.device());
  dispatch_device(x.device(), x.dtype(), op,
      [&]<typename T>() { cuda::sum_forward(x.data<T>(), y.data<T>(), v.outer, v.n, v.inner, divisor); },
      [&]<typename T>() { cpu::sum_forward<T>(x.data<T>(), y.data<T>(), v.outer, v.n, v.inner, divisor); });
  record(op, {x}, {y}, [xs = x.shape(), dt = x.dtype(), dev = x.device(), v, divisor, op](const std::vector<Tensor>& d) {
    Tensor dx = Tensor::empty(xs, dt, dev);
    dispatch_device(dev, dt, op,
        [&]<typename T>() { cuda::sum_backward(d[0].data<T>(), dx.data<T>(), v.outer, v.n, v.inner, divisor); },
        [&]<typename T>() { cpu::sum_backward<T>(d[0].data<T>(), dx.data<T>(), v.outer, v.n, v.inner, divisor); });
    return std::vector<Tensor>{dx};
  });
  return y;
}

static Tensor sum_all(const char* op, const Tensor& x, bool divide_by_n) {
  check_input(op, x);
  int64_t n = x.numel();
  double divisor = divide_by_n ? (double)n : 1.0;
  Tensor y = Tensor::empty({}, x.dtype(), x.device());
  dispatch_device(x.device(), x.dtype(), op,
      [&]<typename T>() { cuda::sum_all_forward(x.data<T>(), y.data<T>(), n, divisor); },
      [&]<typename T>() { cpu::sum_all_forward<T>(x.data<T>(), y.data<T>(), n, divisor); });
  record(op, {x}, {y}, [xs = x.shape(), dt = x.dtype(), dev = x.device(), n, divisor, op](const std::vector<Tensor>& d) {
    Tensor dx = Tensor::empty(xs, dt, dev);
    dispatch_device(dev, dt, op,
        [&]<typename T>() { cuda::sum_backward(d[0].data<T>(), dx.data<T>(), 1, n, 1, divisor); },
        [&]<typename T>() { cpu::sum_backward<T>(d[0].data<T>(), dx.data<T>(), 1, n, 1, divisor); });
    return std::vector<Tensor>{dx};
  });
  return y;
}

// The backward of both max forms: route dy to the saved first argmax.
static BackwardFn max_backward_fn(const Shape& xs, DType dt, ReduceView v, const Tensor& argmax) {
  return [xs, dt, v, argmax](const std::vector<Tensor>& d) {
    Tensor dx = Tensor::empty(xs, dt, argmax.device());
    dispatch_device(argmax.device(), dt, "max",
        [&]<typename T>() {
          cuda::max_backward(d[0].data<T>(), argmax.data<int32_t>(), dx.data<T>(), v.outer, v.n, v.inner);
        },
        [&]<typename T>() {
          cpu::max_backward<T>(d[0].data<T>(), argmax.data<int32_t>(), dx.data<T>(), v.outer, v.n, v.inner);
        });
    return std::vector<Tensor>{dx};
  };
}

static void check_max_extent(const Tensor& x, int64_t n, const char* what) {
  MG_CHECK(n > 0, "max: cannot take the maximum of an empty ", what, " (x of shape ",
           shape_str(x.shape()), ")");
  MG_CHECK(n <= std::numeric_limits<int32_t>::max(), "max: the reduced ", what, " has ", n,
           " elements; the saved argmax is i32 (x of shape ", shape_str(x.shape()), ")");
}

Tensor sum(const Tensor& x) { return sum_all("sum", x, false); }
Tensor sum(const Tensor& x, int64_t dim, bool keepdim) { return sum_dim("sum", x, dim, keepdim, false); }
Tensor mean(const Tensor& x) { return sum_all("mean", x, true); }
Tensor mean(const Tensor& x, int64_t dim, bool keepdim) { return sum_dim("mean", x, dim, keepdim, true); }

Tensor max(const Tensor& x) {
  check_input("max", x);
  check_max_extent(x, x.numel(), "tensor");
  Tensor y = Tensor::empty({}, x.dtype(), x.device());
  Tensor argmax = Tensor::empty({}, DType::i32, x.device());
  dispatch_device(x.device(), x.dtype(), "max",
      [&]<typename T>() { cuda::max_all_forward(x.data<T>(), y.data<T>(), argmax.data<int32_t>(), x.numel()); },
      [&]<typename T>() { cpu::max_all_forward<T>(x.data<T>(), y.data<T>(), argmax.data<int32_t>(), x.numel()); });
  record("max", {x}, {y}, max_backward_fn(x.shape(), x.dtype(), ReduceView{0, 1, x.numel(), 1}, argmax));
  return y;
}

Tensor max(const Tensor& x, int64_t dim, bool keepdim) {
  check_input("max", x);
  ReduceView v = reduce_view("max", x, dim);
  check_max_extent(x, v.n, "dimension");
  Shape ys = reduced_shape(x.shape(), v.dim, keepdim);
  Tensor y = Tensor::empty(ys, x.dtype(), x.device());
  Tensor argmax = Tensor::empty(ys, DType::i32, x.device());
  dispatch_device(x.device(), x.dtype(), "max",
      [&]<typename T>() {
        cuda::max_forward(x.data<T>(), y.data<T>(), argmax.data<int32_t>(), v.outer, v.n, v.inner);
      },
      [&]<typename T>() {
        cpu::max_forward<T>(x.data<T>(), y.data<T>(), argmax.data<int32_t>(), v.outer, v.n, v.inner);
      });
  record("max", {x}, {y}, max_backward_fn(x.shape(), x.dtype(), v, argmax));
  return y;
}

}  // namespace mg
