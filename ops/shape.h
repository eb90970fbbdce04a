// ops/shape.h — reshape (a view), transpose, split, chunk, cat, slice (copies). Tensors are
// always contiguous, so only reshape can be a view: it shares x's storage.
//
// Every op here sees a tensor around one dimension `dim` as (outer, n, inner):
// outer = prod(shape[:dim]), n = shape[dim], inner = prod(shape[dim+1:]). A piece along dim
// is then `outer` contiguous blocks of (piece_n * inner) elements, so split, cat and slice are
// byte copies of blocks and work for every dtype (i32 included); only the backward needs a
// floating dtype (only floating tensors can require grad).
//
//   op                          forward                                   backward
//   reshape(x, shape)           y = x seen as `shape` (one dim may be -1)  dx = reshape(dy, x.shape)
//   transpose(x, d0, d1)        y[.., j, .., i, ..] = x[.., i, .., j, ..] dx = transpose(dy, d0, d1)
//   split(x, sizes, dim)        y_k = x[.., o_k : o_k + sizes[k], ..]     dx = cat(dy_k, dim)
//                               o_k = sizes[0] + .. + sizes[k-1]
//   chunk(x, c, dim)            split into c equal pieces                 (as split)
//   cat(xs, dim)                y = [x_0; x_1; ..] along dim              dx_k = split(dy)_k
//   slice(x, dim, start, end)   y = x[.., start:end, ..]                  dx = zeros, with
//                                                                         dx[.., start:end, ..] = dy
//
// split and chunk record ONE tape node with all the pieces as outputs; the tape hands zeros
// for pieces that received no gradient, so dx = cat(dy_k) is always complete.
// Dimensions may be negative (counted from the end); slice's start and end may be negative
// too (start + size, like Python), and must then satisfy 0 <= start <= end <= size.
#pragma once
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace mg {

namespace cpu {
// Copies `blocks` blocks of `block_bytes` bytes; block i is read at src + i * src_stride and
// written at dst + i * dst_stride (strides in bytes).
void copy_blocks(const void* src, int64_t src_stride, void* dst, int64_t dst_stride,
                 int64_t blocks, int64_t block_bytes);
// x viewed as (A, n0, B, n1, C) -> y (A, n1, B, n0, C), elements of `elem_bytes` (4 or 8).
void transpose_forward(const void* x, void* y, int64_t A, int64_t n0, int64_t B, int64_t n1,
                       int64_t C, int64_t elem_bytes);
}  // namespace cpu

// The CUDA twins (cuda/shape.cu): the same arguments, device pointers, byte copies (so every
// dtype), enqueued on the backend's stream. Declared in every build, defined only in a CUDA
// build (core/dispatch.h says why that links).
namespace cuda {
void copy_blocks(const void* src, int64_t src_stride, void* dst, int64_t dst_stride,
                 int64_t blocks, int64_t block_bytes);
void transpose_forward(const void* x, void* y, int64_t A, int64_t n0, int64_t B, int64_t n1,
                       int64_t C, int64_t elem_bytes);
}  // namespace cuda

// The differentiable form of x.view(shape) (core/tensor.h): the same storage, recorded.
Tensor reshape(const Tensor& x, const Shape& shape);
Tensor transpose(const Tensor& x, int64_t d0, int64_t d1);
// Pieces of sizes[k] along dim; the sizes must sum to x.size(dim).
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim);
// `chunks` equal pieces along dim; x.size(dim) must be divisible by chunks.
std::vector<Tensor> chunk(const Tensor& x, int64_t chunks, int64_t dim);
// Concatenation along dim; all shapes equal except at dim, all dtypes equal.
Tensor cat(const std::vector<Tensor>& xs, int64_t dim);
// x[.., start:end, ..] along dim.
Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end);

}  // namespace mg
