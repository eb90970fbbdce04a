// cuda/shape.h — the CUDA twins of ops/shape.h's kernels: strided block copies (split, cat,
// slice and their backwards) and the 5-d transpose. Same signatures as mg::cpu::copy_blocks
// and mg::cpu::transpose_forward; pointers are device pointers; byte copies, so every dtype
// works. Enqueued on mg::cuda::stream(), no host sync.
//
// copy_blocks moves the widest word (16, 8, 4 or 1 bytes) that divides both pointers, both
// strides and the block size; one contiguous block is a single cudaMemcpyAsync.
// transpose_forward with C == 1 (a plain matrix transpose per (a, b)) goes through 32x32
// shared-memory tiles so that both the reads and the writes are coalesced; with C > 1 every
// thread copies one element and runs of C are contiguous on both sides.
#pragma once
#include <cstdint>

namespace mg::cuda {

// blocks blocks of block_bytes bytes: block i from src + i * src_stride to dst + i * dst_stride.
void copy_blocks(const void* src, int64_t src_stride, void* dst, int64_t dst_stride,
                 int64_t blocks, int64_t block_bytes);

// x viewed as (A, n0, B, n1, C) -> y (A, n1, B, n0, C), elements of elem_bytes (4 or 8).
void transpose_forward(const void* x, void* y, int64_t A, int64_t n0, int64_t B, int64_t n1,
                       int64_t C, int64_t elem_bytes);

}  // namespace mg::cuda
