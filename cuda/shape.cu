// cuda/shape.cu — the CUDA twins of ops/shape.h's kernels (declared there): strided block
// copies (split, cat, slice and their backwards) and the 5-d transpose. Device pointers; byte
// copies, so every dtype works. Enqueued on the stream, no host sync.
//
// copy_blocks moves the widest word (16, 8, 4 or 1 bytes) that divides both pointers, both
// strides and the block size; one contiguous block is a single cudaMemcpyAsync.
// transpose_forward with C == 1 (a plain matrix transpose per (a, b)) goes through 32x32
// shared-memory tiles so that both the reads and the writes are coalesced; with C > 1 every
// thread copies one element and runs of C are contiguous on both sides.
#include "ops/shape.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "core/error.h"
#include "cuda/check.cuh"
#include "cuda/runtime.h"

namespace mg::cuda {

namespace {

unsigned grid_for(int64_t n, int threads) {
  return (unsigned)std::max<int64_t>(1, std::min<int64_t>((n + threads - 1) / threads, 65535 * 16));
}

// dst[b * dst_stride + w] = src[b * src_stride + w] for b < blocks, w < words (all in Words).
template <typename Word>
__global__ void copy_blocks_kernel(const Word* __restrict__ src, int64_t src_stride,
                                   Word* __restrict__ dst, int64_t dst_stride, int64_t blocks,
                                   int64_t words) {
  int64_t n = blocks * words;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    int64_t b = i / words, w = i - b * words;
    dst[b * dst_stride + w] = src[b * src_stride + w];
  }
}

template <typename Word>
void launch_copy(const void* src, int64_t src_stride, void* dst, int64_t dst_stride,
                 int64_t blocks, int64_t block_bytes) {
  constexpr int64_t w = sizeof(Word);
  copy_blocks_kernel<Word><<<grid_for(blocks * (block_bytes / w), 256), 256, 0, cuda_stream()>>>(
      static_cast<const Word*>(src), src_stride / w, static_cast<Word*>(dst), dst_stride / w,
      blocks, block_bytes / w);
  check_launch("copy_blocks");
}

// y (A, n1, B, n0) from x (A, n0, B, n1), C == 1: per (a, b) a matrix transpose through a
// 32x32 tile in shared memory (padded to 33 columns against bank conflicts). Block (32, 8):
// each thread moves 4 elements of the tile in each direction.
constexpr int kTile = 32, kTileRows = 8;
template <typename Word>
__global__ void transpose_tiled_kernel(const Word* __restrict__ x, Word* __restrict__ y,
                                       int64_t A, int64_t n0, int64_t B, int64_t n1) {
  __shared__ Word tile[kTile][kTile + 1];
  int64_t tiles_i = (n0 + kTile - 1) / kTile, tiles_j = (n1 + kTile - 1) / kTile;
  for (int64_t ab = blockIdx.z; ab < A * B; ab += gridDim.z) {
    int64_t a = ab / B, b = ab - a * B;
    for (int64_t ti = blockIdx.y; ti < tiles_i; ti += gridDim.y) {
      for (int64_t tj = blockIdx.x; tj < tiles_j; tj += gridDim.x) {
        int64_t i0 = ti * kTile, j0 = tj * kTile;
        // Read rows i of x[a, :, b, :] (coalesced along j).
        for (int r = threadIdx.y; r < kTile; r += kTileRows) {
          int64_t i = i0 + r, j = j0 + threadIdx.x;
          if (i < n0 && j < n1) tile[r][threadIdx.x] = x[((a * n0 + i) * B + b) * n1 + j];
        }
        __syncthreads();
        // Write rows j of y[a, :, b, :] (coalesced along i).
        for (int r = threadIdx.y; r < kTile; r += kTileRows) {
          int64_t j = j0 + r, i = i0 + threadIdx.x;
          if (i < n0 && j < n1) y[((a * n1 + j) * B + b) * n0 + i] = tile[threadIdx.x][r];
        }
        __syncthreads();
      }
    }
  }
}

// General C: one thread per element of y (A, n1, B, n0, C), runs of C contiguous both sides.
template <typename Word>
__global__ void transpose_general_kernel(const Word* __restrict__ x, Word* __restrict__ y,
                                         int64_t A, int64_t n0, int64_t B, int64_t n1, int64_t C) {
  int64_t n = A * n1 * B * n0 * C;
  for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < n;
       idx += (int64_t)gridDim.x * blockDim.x) {
    int64_t rest = idx;
    int64_t c = rest % C; rest /= C;
    int64_t i = rest % n0; rest /= n0;
    int64_t b = rest % B; rest /= B;
    int64_t j = rest % n1;
    int64_t a = rest / n1;
    y[idx] = x[(((a * n0 + i) * B + b) * n1 + j) * C + c];
  }
}

template <typename Word>
void launch_transpose(const void* xv, void* yv, int64_t A, int64_t n0, int64_t B, int64_t n1,
                      int64_t C) {
  const Word* x = static_cast<const Word*>(xv);
  Word* y = static_cast<Word*>(yv);
  if (C == 1) {
    auto cap = [](int64_t v, int64_t m) { return (unsigned)std::max<int64_t>(1, std::min(v, m)); };
    dim3 grid(cap((n1 + kTile - 1) / kTile, 1 << 20), cap((n0 + kTile - 1) / kTile, 65535),
              cap(A * B, 65535));
    transpose_tiled_kernel<Word><<<grid, dim3(kTile, kTileRows), 0, cuda_stream()>>>(x, y, A, n0, B, n1);
  } else {
    transpose_general_kernel<Word><<<grid_for(A * n0 * B * n1 * C, 256), 256, 0, cuda_stream()>>>(
        x, y, A, n0, B, n1, C);
  }
  check_launch("transpose");
}

}  // namespace

// src (blocks, src_stride bytes) -> dst (blocks, dst_stride bytes), block_bytes of each row.
void copy_blocks(const void* src, int64_t src_stride, void* dst, int64_t dst_stride,
                 int64_t blocks, int64_t block_bytes) {
  if (blocks <= 0 || block_bytes <= 0) return;
  if (blocks == 1 || (src_stride == block_bytes && dst_stride == block_bytes)) {
    MG_CUDA_CHECK(cudaMemcpyAsync(dst, src, (size_t)(blocks * block_bytes),
                                  cudaMemcpyDeviceToDevice, cuda_stream()));
    return;
  }
  // The widest word that divides both addresses, both strides and the block size.
  uint64_t bits = (uint64_t)(uintptr_t)src | (uint64_t)(uintptr_t)dst | (uint64_t)src_stride |
                  (uint64_t)dst_stride | (uint64_t)block_bytes;
  if (bits % 16 == 0) launch_copy<uint4>(src, src_stride, dst, dst_stride, blocks, block_bytes);
  else if (bits % 8 == 0) launch_copy<uint2>(src, src_stride, dst, dst_stride, blocks, block_bytes);
  else if (bits % 4 == 0) launch_copy<uint32_t>(src, src_stride, dst, dst_stride, blocks, block_bytes);
  else launch_copy<uint8_t>(src, src_stride, dst, dst_stride, blocks, block_bytes);
}

// x (A, n0, B, n1, C) -> y (A, n1, B, n0, C), elements of elem_bytes.
void transpose_forward(const void* x, void* y, int64_t A, int64_t n0, int64_t B, int64_t n1,
                       int64_t C, int64_t elem_bytes) {
  if (A * n0 * B * n1 * C == 0) return;
  if (elem_bytes == 4) launch_transpose<uint32_t>(x, y, A, n0, B, n1, C);
  else if (elem_bytes == 8) launch_transpose<uint64_t>(x, y, A, n0, B, n1, C);
  else throw Error(::mg::detail::cat("transpose: unsupported element size ", elem_bytes));
}

}  // namespace mg::cuda
