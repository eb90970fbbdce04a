#include "ops/softmax.h"

#include <cmath>
#include <vector>

#include "autograd/tape.h"
#include "core/dispatch.h"
#include "ops/convert.h"
#include "core/parallel.h"
#include "ops/reduce.h"

namespace mg {

namespace cpu {

// Calls f(base) for every slice of an (outer, n, inner) view, in parallel over the outer*inner
// slices; slice (o, i) holds the elements base + k*inner, k = 0..n-1, with base = o*n*inner + i.
// Each slice is handled by one thread, start to end.
template <typename F>
static void for_each_slice(int64_t outer, int64_t n, int64_t inner, F&& f) {
  int64_t grain = std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(n, 1));
  parallel_for(outer * inner, grain, [&](int64_t s, int64_t e) {
    for (int64_t p = s; p < e; ++p) f((p / inner) * n * inner + p % inner);
  });
}

// max_k x[k*stride] of a non-empty slice.
template <typename T> static T slice_max(const T* x, int64_t n, int64_t stride) {
  T m = x[0];
  for (int64_t k = 1; k < n; ++k) m = x[k * stride] > m ? x[k * stride] : m;
  return m;
}

// x, y (outer, n, inner): softmax over n.
template <typename T>
void softmax_forward(const T* x, T* y, int64_t outer, int64_t n, int64_t inner) {
  if (n == 0) return;
  for_each_slice(outer, n, inner, [&](int64_t b) {
    const T* xs = x + b;
    T* ys = y + b;
    T m = slice_max(xs, n, inner);
    double S = 0;
    for (int64_t k = 0; k < n; ++k) {
      T e = std::exp(xs[k * inner] - m);
      ys[k * inner] = e;
      S += e;
    }
    for (int64_t k = 0; k < n; ++k) ys[k * inner] = (T)((double)ys[k * inner] / S);
  });
}

// x, y (outer, n, inner): log_softmax over n.
template <typename T>
void log_softmax_forward(const T* x, T* y, int64_t outer, int64_t n, int64_t inner) {
  if (n == 0) return;
  for_each_slice(outer, n, inner, [&](int64_t b) {
    const T* xs = x + b;
    T m = slice_max(xs, n, inner);
    double S = 0;
    for (int64_t k = 0; k < n; ++k) S += std::exp(xs[k * inner] - m);
    double log_S = std::log(S);
    // x - m is exact in double for f32 inputs: the only rounding is the final one.
    for (int64_t k = 0; k < n; ++k) y[b + k * inner] = (T)((double)xs[k * inner] - (double)m - log_S);
  });
}

// y, dy, dx (outer, n, inner).
template <typename T>
void softmax_backward(const T* y, const T* dy, T* dx, int64_t outer, int64_t n, int64_t inner) {
  for_each_slice(outer, n, inner, [&](int64_t b) {
    double dot = 0;  // sum_j dy_j y_j
    for (int64_t k = 0; k < n; ++k) dot += (double)dy[b + k * inner] * y[b + k * inner];
    for (int64_t k = 0; k < n; ++k) {
      int64_t j = b + k * inner;
      dx[j] = (T)(y[j] * ((double)dy[j] - dot));
    }
  });
}

// y, dy, dx (outer, n, inner).
template <typename T>
void log_softmax_backward(const T* y, const T* dy, T* dx, int64_t outer, int64_t n, int64_t inner) {
  for_each_slice(outer, n, inner, [&](int64_t b) {
    double sum_dy = 0;
    for (int64_t k = 0; k < n; ++k) sum_dy += dy[b + k * inner];
    for (int64_t k = 0; k < n; ++k) {
      int64_t j = b + k * inner;
      dx[j] = (T)((double)dy[j] - std::exp((double)y[j]) * sum_dy);
    }
  });
}

// logits (N, V), targets (N) -> loss () (the mean over the C kept rows), lse (N).
template <typename T>
void cross_entropy_forward(const T* logits, const int32_t* targets, T* loss, T* lse, int64_t N,
                           int64_t V, int32_t ignore_index, int64_t count) {
  std::vector<double> row_loss(N, 0.0);
  parallel_for(N, std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(V, 1)), [&](int64_t s, int64_t e) {
    for (int64_t r = s; r < e; ++r) {
      int32_t t = targets[r];
      lse[r] = 0;
      if (t == ignore_index) continue;  // row_loss[r] stays 0
      const T* xr = logits + r * V;
      T m = slice_max(xr, V, 1);
      double S = 0;
      for (int64_t v = 0; v < V; ++v) S += std::exp(xr[v] - m);
      double row_lse = (double)m + std::log(S);
      lse[r] = (T)row_lse;
      row_loss[r] = row_lse - (double)xr[t];
    }
  });
  double total = 0;
  for (double l : row_loss) total += l;  // in row order: independent of the thread count
  loss[0] = count > 0 ? (T)(total / (double)count) : T(0);
}

// logits (N, V), targets, lse (N), dloss () -> dlogits (N, V).
template <typename T>
void cross_entropy_backward(const T* logits, const int32_t* targets, const T* lse,
                            const T* dloss, T* dlogits, int64_t N, int64_t V,
                            int32_t ignore_index, int64_t count) {
  double scale = count > 0 ? (double)dloss[0] / (double)count : 0.0;
  parallel_for(N, std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(V, 1)), [&](int64_t s, int64_t e) {
    for (int64_t r = s; r < e; ++r) {
      int32_t t = targets[r];
      T* dr = dlogits + r * V;
      if (t == ignore_index || count == 0) {
        for (int64_t v = 0; v < V; ++v) dr[v] = T(0);
        continue;
      }
      const T* xr = logits + r * V;
      for (int64_t v = 0; v < V; ++v) {
        double p = std::exp(xr[v] - lse[r]);  // softmax(logits[r])[v]
        dr[v] = (T)((p - (v == t ? 1.0 : 0.0)) * scale);
      }
    }
  });
}

#define MG_INSTANTIATE(T)                                                                      \
  template void softmax_forward<T>(const T*, T*, int64_t, int64_t, int64_t);                   \
  template void log_softmax_forward<T>(const T*, T*, int64_t, int64_t, int64_t);               \
  template void softmax_backward<T>(const T*, const T*, T*, int64_t, int64_t, int64_t);        \
  template void log_softmax_backward<T>(const T*, const T*, T*, int64_t, int64_t, int64_t);    \
  template void cross_entropy_forward<T>(const T*, const int32_t*, T*, T*, int64_t, int64_t,   \
                                         int32_t, int64_t);                                    \
  template void cross_entropy_backward<T>(const T*, const int32_t*, const T*, const T*, T*,    \
                                          int64_t, int64_t, int32_t, int64_t);
MG_INSTANTIATE(float)
MG_INSTANTIATE(double)
#undef MG_INSTANTIATE

}  // namespace cpu

// softmax (log = false) and log_softmax (log = true): checks -> allocate -> dispatch -> record.
static Tensor softmax_like(const char* op, bool log, const Tensor& x, int64_t dim) {
  check_float(op, x, "x");
  ReduceView v = reduce_view(op, x, dim);
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  dispatch_device(x.device(), x.dtype(), op,
      [&]<typename T>() {
        if (log) cuda::log_softmax_forward(x.data<T>(), y.data<T>(), v.outer, v.n, v.inner);
        else     cuda::softmax_forward(x.data<T>(), y.data<T>(), v.outer, v.n, v.inner);
      },
      [&]<typename T>() {
        if (log) cpu::log_softmax_forward<T>(x.data<T>(), y.data<T>(), v.outer, v.n, v.inner);
        else     cpu::softmax_forward<T>(x.data<T>(), y.data<T>(), v.outer, v.n, v.inner);
      });
  record(op, {x}, {y}, [op, log, y, v](const std::vector<Tensor>& d) {
    Tensor dx = Tensor::empty(y.shape(), y.dtype(), y.device());
    dispatch_device(y.device(), y.dtype(), op,
        [&]<typename T>() {
          if (log) cuda::log_softmax_backward(y.data<T>(), d[0].data<T>(), dx.data<T>(), v.outer, v.n, v.inner);
          else     cuda::softmax_backward(y.data<T>(), d[0].data<T>(), dx.data<T>(), v.outer, v.n, v.inner);
        },
        [&]<typename T>() {
          if (log) cpu::log_softmax_backward<T>(y.data<T>(), d[0].data<T>(), dx.data<T>(), v.outer, v.n, v.inner);
          else     cpu::softmax_backward<T>(y.data<T>(), d[0].data<T>(), dx.data<T>(), v.outer, v.n, v.inner);
        });
    return std::vector<Tensor>{dx};
  });
  return y;
}

Tensor softmax(const Tensor& x, int64_t dim) { return softmax_like("softmax", false, x, dim); }
Tensor log_softmax(const Tensor& x, int64_t dim) { return softmax_like("log_softmax", true, x, dim); }

static void check_target_id(const Tensor& logits, int32_t id, int64_t r, int32_t ignore_index) {
  int64_t V = logits.size(1);
  MG_CHECK(id >= 0 && id < V, "cross_entropy: target id ", id, " at position ", r,
           " is out of range [0, V) with V = ", V, " (logits ", shape_str(logits.shape()),
           ", ignore_index ", ignore_index, ")");
}

// Validates the targets and returns C, the number that are not ignore_index. For CUDA targets
// the check runs on the GPU and reads back two integers (a host sync).
static int64_t count_kept_targets(const Tensor& logits, const Tensor& targets, int32_t ignore_index) {
  int64_t N = logits.size(0), count = 0;
  dispatch_device(targets.device(), "cross_entropy",
      [&]<typename>() {
        cuda::TargetCheck c = cuda::count_kept_targets(targets.data<int32_t>(), N, logits.size(1),
                                                       ignore_index);
        if (c.first_bad >= 0) check_target_id(logits, c.bad_id, c.first_bad, ignore_index);
        count = c.count;
      },
      [&] {
        const int32_t* t = targets.data<int32_t>();
        for (int64_t r = 0; r < N; ++r) {
          if (t[r] == ignore_index) continue;
          check_target_id(logits, t[r], r, ignore_index);
          ++count;
        }
      });
  return count;
}

Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int32_t ignore_index) {
  const char* op = "cross_entropy";
  check_float(op, logits, "logits");
  check_defined(op, targets, "targets");
  MG_CHECK(logits.dim() == 2, op, ": logits must have shape (N, V), got ", shape_str(logits.shape()));
  MG_CHECK(targets.dtype() == DType::i32, op, ": targets must be i32 class ids, got ",
           dtype_name(targets.dtype()), " of shape ", shape_str(targets.shape()));
  MG_CHECK(targets.dim() == 1 && targets.size(0) == logits.size(0), op, ": targets must have shape (",
           logits.size(0), ") to match logits ", shape_str(logits.shape()), ", got ",
           shape_str(targets.shape()));
  check_same_device(op, logits, targets);
  // bf16 logits (mixed precision): the softmax and the loss in f32 on a widened temporary,
  // widened again in the backward, so the tape keeps only the bf16 logits (at V 50280 the f32
  // copy would be the largest tensor of the step); the loss is f32, dlogits rounded to bf16.
  const DType dt = logits.dtype() == DType::bf16 ? DType::f32 : logits.dtype();
  if (logits.device().is_cuda()) check_cuda_f32(op, dt, logits.device());
  int64_t N = logits.size(0), V = logits.size(1);
  int64_t count = count_kept_targets(logits, targets, ignore_index);
  Tensor loss = Tensor::empty({}, dt, logits.device());
  Tensor lse = Tensor::empty({N}, dt, logits.device());
  {
    const Tensor x = logits.cast(dt);  // logits itself unless bf16
    dispatch_device(x.device(), dt, op,
        [&]<typename T>() {
          cuda::cross_entropy_forward(x.data<T>(), targets.data<int32_t>(), loss.data<T>(),
                                      lse.data<T>(), N, V, ignore_index, count);
        },
        [&]<typename T>() {
          cpu::cross_entropy_forward<T>(x.data<T>(), targets.data<int32_t>(), loss.data<T>(),
                                        lse.data<T>(), N, V, ignore_index, count);
        });
  }
  record(op, {logits}, {loss},
         [op, logits, targets, lse, N, V, ignore_index, count, dt](const std::vector<Tensor>& d) {
           const Tensor x = logits.cast(dt);
           Tensor dlogits = Tensor::empty(x.shape(), dt, x.device());
           dispatch_device(x.device(), dt, op,
               [&]<typename T>() {
                 cuda::cross_entropy_backward(x.data<T>(), targets.data<int32_t>(), lse.data<T>(),
                                              d[0].data<T>(), dlogits.data<T>(), N, V, ignore_index, count);
               },
               [&]<typename T>() {
                 cpu::cross_entropy_backward<T>(x.data<T>(), targets.data<int32_t>(), lse.data<T>(),
                                                d[0].data<T>(), dlogits.data<T>(), N, V, ignore_index, count);
               });
           return std::vector<Tensor>{dlogits.cast(logits.dtype())};
         });
  return loss;
}

}  // namespace mg
