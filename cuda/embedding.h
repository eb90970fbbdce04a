// cuda/embedding.h — the CUDA twins of ops/embedding.h's kernels (f32 only; ids i32).
//
// Forward: one thread per (n, j), y[n, j] = weight[ids[n], j].
//
// Backward, dweight[v, :] = sum_{n : ids[n] = v} dy[n, :]:
//   deterministic mode (mg::cuda::deterministic(), the default): no float atomics. The pairs
//     (ids[n], n) are radix-sorted by id with CUB (a stable sort, so equal ids keep n in
//     increasing order); then the first position of every run of equal ids sums that run's dy
//     rows in flat order n, one thread per column. That is exactly the CPU's summation order,
//     so the result is bitwise equal to cpu::embedding_backward<float> and reproducible.
//   deterministic mode off: dweight = 0, then one float atomicAdd per (n, j) (faster with many
//     repeated ids; the last bits depend on the scheduling).
//
// ids are device memory; the range check needs them, so first_invalid_id scans them on the
// GPU and reads back ONE integer (a host sync: the price of raising mg::Error instead of
// reading out of bounds).
#pragma once
#include <cstdint>

namespace mg::cuda {

// The smallest flat position n with ids[n] outside [0, V), or -1 when all are valid; the id
// found there is written to *bad_id (a host pointer; may be null). Synchronises the stream.
int64_t first_invalid_id(const int32_t* ids, int64_t n_ids, int64_t V, int32_t* bad_id);

// y[n*D + j] = weight[ids[n]*D + j]; ids must already be in [0, V).
void embedding_forward(const int32_t* ids, const float* weight, float* y, int64_t n_ids,
                       int64_t D);
// dweight (V, D) = scatter-add of dy rows by id (see above).
void embedding_backward(const int32_t* ids, const float* dy, float* dweight, int64_t n_ids,
                        int64_t V, int64_t D);

}  // namespace mg::cuda
