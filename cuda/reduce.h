// cuda/reduce.h — the CUDA twins of ops/reduce.h's kernels (f32 data, device pointers,
// enqueued on mg::cuda::stream(), no host sync). The math and the (outer, n, inner) view are in
// ops/reduce.h.
//
// How they reduce (all deterministic, with no atomics, in every mode):
//   sum over the last dim (inner = 1): one block of 256 threads per row (per fixed chunk of
//     32768 elements when the row is longer, then a second pass over the chunk sums); each
//     thread adds a strided run in double, then cub::BlockReduce adds the 256 thread sums in
//     its fixed tree order.
//   sum over another dim: one thread per output (o, i), adding k = 0..n-1 in order (reads are
//     coalesced across i); when there are few outputs and n is long, fixed chunks of 512 k's
//     are summed in parallel first, then their partial sums in chunk order.
//   full sum: cub::DeviceReduce::Reduce in double, then one rounding (run-to-run
//     deterministic on a given GPU; the association differs from the CPU's, so f32 results
//     agree with the CPU to rounding, not bitwise).
//   max: the first maximum (NaN beats numbers), combined by a total order on (value, index),
//     so any combining order gives exactly the CPU's answer, argmax included.
// Partition sizes depend on the shape only, never on the GPU, so results do not either
// (except the full sum, see above).
#pragma once
#include <cstdint>

namespace mg::cuda {

void sum_forward(const float* x, float* y, int64_t outer, int64_t n, int64_t inner, double divisor);
void sum_all_forward(const float* x, float* y, int64_t n, double divisor);
void sum_backward(const float* dy, float* dx, int64_t outer, int64_t n, int64_t inner, double divisor);
void max_forward(const float* x, float* y, int32_t* argmax, int64_t outer, int64_t n, int64_t inner);
void max_all_forward(const float* x, float* y, int32_t* argmax, int64_t n);
void max_backward(const float* dy, const int32_t* argmax, float* dx, int64_t outer, int64_t n,
                  int64_t inner);

}  // namespace mg::cuda
