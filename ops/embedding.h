// ops/embedding.h — token embedding: a row lookup in a (V, D) table.
//
//   forward   y[n, :] = weight[ids[n], :]          ids: i32, any shape (flattened to n < n_ids)
//             y has shape ids.shape + (D)
//   backward  dweight[v, :] = sum_{n : ids[n] = v} dy[n, :]      (a scatter-add; rows of ids
//             that never occur get 0, repeated ids accumulate). ids get no gradient.
//
// Saved for backward: ids (the weight is not needed). The scatter-add processes ids in their
// flat order; the threads split the D columns, never the ids, so every dweight element is the
// same sum in the same order for any thread count (deterministic).
// Every id must lie in [0, V); otherwise mg::Error names the id, its flat position and V
// (checked before anything is written).
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace mg {

namespace cpu {
// y[n*D + j] = weight[ids[n]*D + j]; ids must already be in [0, V).
template <typename T>
void embedding_forward(const int32_t* ids, const T* weight, T* y, int64_t n_ids, int64_t D);
// dweight (V, D) = 0, then dweight[ids[n]] += dy[n] for n = 0, 1, ... in order.
template <typename T>
void embedding_backward(const int32_t* ids, const T* dy, T* dweight, int64_t n_ids, int64_t V,
                        int64_t D);
}  // namespace cpu

// The CUDA twins (cuda/embedding.cu): the cpu:: kernels' arguments in the same order, f32,
// device pointers, enqueued on the backend's stream. Declared in every build, defined only
// in a CUDA build (core/dispatch.h says why that links).
namespace cuda {
// The smallest flat position n with ids[n] outside [0, V), or -1 when all are valid; the id
// found there is written to *bad_id (a host pointer; may be null). Synchronises the stream.
int64_t first_invalid_id(const int32_t* ids, int64_t n_ids, int64_t V, int32_t* bad_id);

// y[n*D + j] = weight[ids[n]*D + j]; ids must already be in [0, V).
void embedding_forward(const int32_t* ids, const float* weight, float* y, int64_t n_ids,
                       int64_t D);
// dweight (V, D) = scatter-add of dy rows by id (see above).
void embedding_backward(const int32_t* ids, const float* dy, float* dweight, int64_t n_ids,
                        int64_t V, int64_t D);
}  // namespace cuda

// ids (i32, any shape), weight (V, D) f32/f64 -> ids.shape + (D).
// check_ids = false skips the range check, for ids the caller knows are in [0, V) (a sampler's
// output): on CUDA the check reads one integer back (a host sync), which a CUDA graph capture
// (ops/graph.h) cannot contain. An out-of-range id is then undefined behaviour.
Tensor embedding(const Tensor& ids, const Tensor& weight, bool check_ids = true);

}  // namespace mg
