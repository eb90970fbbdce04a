#include "ops/embedding.h"

#include <algorithm>

#include "autograd/tape.h"
#include "core/dispatch.h"
#include "core/parallel.h"

namespace mg {

namespace cpu {

// ids (n_ids) in [0, V), weight (V, D) -> y (n_ids, D).
template <typename T>
void embedding_forward(const int32_t* ids, const T* weight, T* y, int64_t n_ids, int64_t D) {
  parallel_for(n_ids, std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(D, 1)),
               [&](int64_t s, int64_t e) {
                 for (int64_t n = s; n < e; ++n) {
                   const T* row = weight + (int64_t)ids[n] * D;
                   std::copy(row, row + D, y + n * D);
                 }
               });
}

// ids (n_ids), dy (n_ids, D) -> dweight (V, D), overwritten.
template <typename T>
void embedding_backward(const int32_t* ids, const T* dy, T* dweight, int64_t n_ids, int64_t V,
                        int64_t D) {
  // Threads own disjoint column ranges [s, e); each walks all ids in order.
  int64_t work_per_column = std::max<int64_t>(n_ids + V, 1);
  parallel_for(D, std::max<int64_t>(8, kElementwiseGrain / work_per_column),
               [&](int64_t s, int64_t e) {
                 for (int64_t v = 0; v < V; ++v) std::fill(dweight + v * D + s, dweight + v * D + e, T(0));
                 for (int64_t n = 0; n < n_ids; ++n) {
                   T* dst = dweight + (int64_t)ids[n] * D;
                   const T* src = dy + n * D;
                   for (int64_t j = s; j < e; ++j) dst[j] += src[j];
                 }
               });
}

#define MG_INSTANTIATE(T)                                                                  \
  template void embedding_forward<T>(const int32_t*, const T*, T*, int64_t, int64_t);      \
  template void embedding_backward<T>(const int32_t*, const T*, T*, int64_t, int64_t, int64_t);
MG_INSTANTIATE(float)
MG_INSTANTIATE(double)
#undef MG_INSTANTIATE

}  // namespace cpu

Tensor embedding(const Tensor& ids, const Tensor& weight, bool check_ids) {
  const char* op = "embedding";
  check_dtype(op, ids, DType::i32, "ids");
  check_float(op, weight, "weight");
  check_same_device(op, ids, weight);
  MG_CHECK(weight.dim() == 2, op, ": weight must be (V, D), got ", shape_str(weight.shape()));
  int64_t V = weight.size(0), D = weight.size(1), n_ids = ids.numel();
  const int32_t* id = ids.data<int32_t>();
  auto reject_id = [&](int64_t n, int32_t value) {  // checked before anything is written
    throw Error(detail::cat(op, ": id ", value, " at flat position ", n, " of ids ",
                            shape_str(ids.shape()), " is outside [0, V) with V = ", V));
  };
  if (check_ids) dispatch_device(weight.device(), op,
      [&]<typename>() {
        int32_t bad = 0;
        int64_t n = cuda::first_invalid_id(id, n_ids, V, &bad);  // reads back one integer
        if (n >= 0) reject_id(n, bad);
      },
      [&] {
        for (int64_t n = 0; n < n_ids; ++n)
          if (id[n] < 0 || id[n] >= V) reject_id(n, id[n]);
      });
  Shape y_shape = ids.shape();
  y_shape.push_back(D);
  Tensor y = Tensor::empty(y_shape, weight.dtype(), weight.device());
  dispatch_device(weight.device(), weight.dtype(), op,
      [&]<typename T>() { cuda::embedding_forward(id, weight.data<T>(), y.data<T>(), n_ids, D); },
      [&]<typename T>() { cpu::embedding_forward<T>(id, weight.data<T>(), y.data<T>(), n_ids, D); });
  record(op, {ids, weight}, {y},
         [ids, V, D, wshape = weight.shape(), dtype = weight.dtype()](const std::vector<Tensor>& d) {
           Tensor dweight = Tensor::empty(wshape, dtype, d[0].device());
           dispatch_device(dweight.device(), dtype, "embedding backward",
               [&]<typename T>() {
                 cuda::embedding_backward(ids.data<int32_t>(), d[0].data<T>(), dweight.data<T>(),
                                          ids.numel(), V, D);
               },
               [&]<typename T>() {
                 cpu::embedding_backward<T>(ids.data<int32_t>(), d[0].data<T>(), dweight.data<T>(),
                                            ids.numel(), V, D);
               });
           return std::vector<Tensor>{Tensor(), dweight};
         });
  return y;
}

}  // namespace mg
