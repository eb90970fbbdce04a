// cuda/norm_rows.cuh — the row machinery shared by the CUDA norm kernels (cuda/norm.cu,
// cuda/add_norm.cu): one thread block per row, a block size chosen from D only, and a block
// sum in a fixed order (so the row statistics are bitwise reproducible). Internal to cuda/.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

namespace mg::cuda {

// Threads per row block: a function of D only (so the reduction order is too).
inline int row_threads(int64_t D) { return D <= 256 ? 64 : D <= 1024 ? 128 : 256; }

inline unsigned row_blocks(int64_t rows) { return (unsigned)std::min<int64_t>(rows, 1 << 20); }

// The sum of v over the block, in a fixed order: shuffle tree within each warp, then the warp
// sums in warp order. Every thread gets the result. blockDim.x is a multiple of 32 (<= 1024);
// `scratch` holds 32 doubles in shared memory.
__device__ inline double block_sum(double v, double* scratch) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  __syncthreads();  // the previous call's readers are done with scratch
  if ((threadIdx.x & 31) == 0) scratch[threadIdx.x >> 5] = v;
  __syncthreads();
  double total = 0;
  for (int k = 0; k < (int)(blockDim.x >> 5); ++k) total += scratch[k];
  return total;
}

}  // namespace mg::cuda
