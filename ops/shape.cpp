#include "ops/shape.h"

#include <cstring>
#include <numeric>

#include "autograd/tape.h"
#include "core/dispatch.h"
#include "core/parallel.h"

namespace mg {

namespace cpu {

// src (blocks, src_stride bytes) -> dst (blocks, dst_stride bytes), block_bytes of each row.
void copy_blocks(const void* src, int64_t src_stride, void* dst, int64_t dst_stride,
                 int64_t blocks, int64_t block_bytes) {
  if (blocks <= 0 || block_bytes <= 0) return;
  const char* s = static_cast<const char*>(src);
  char* d = static_cast<char*>(dst);
  // Aim for ~256 KB per task so that small copies run inline.
  int64_t grain = std::max<int64_t>(1, (int64_t(1) << 18) / block_bytes);
  parallel_for(blocks, grain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      std::memcpy(d + i * dst_stride, s + i * src_stride, (size_t)block_bytes);
  });
}

// y[a, j, b, i, c] = x[a, i, b, j, c] with x (A, n0, B, n1, C); Word is a same-size stand-in
// for the element type (the copy does not care what the bits mean).
template <typename Word>
static void transpose_words(const Word* x, Word* y, int64_t A, int64_t n0, int64_t B, int64_t n1,
                            int64_t C) {
  int64_t rows = A * n1;  // one task = one (a, j): a contiguous stretch of y
  int64_t per_row = std::max<int64_t>(1, B * n0 * C);
  parallel_for(rows, std::max<int64_t>(1, kElementwiseGrain / per_row), [&](int64_t s, int64_t e) {
    for (int64_t r = s; r < e; ++r) {
      int64_t a = r / n1, j = r % n1;
      Word* dst = y + r * B * n0 * C;
      for (int64_t b = 0; b < B; ++b)
        for (int64_t i = 0; i < n0; ++i) {
          const Word* src = x + (((a * n0 + i) * B + b) * n1 + j) * C;
          for (int64_t c = 0; c < C; ++c) dst[c] = src[c];
          dst += C;
        }
    }
  });
}

// x (A, n0, B, n1, C) -> y (A, n1, B, n0, C), elements of elem_bytes.
void transpose_forward(const void* x, void* y, int64_t A, int64_t n0, int64_t B, int64_t n1,
                       int64_t C, int64_t elem_bytes) {
  if (elem_bytes == 4)
    transpose_words(static_cast<const uint32_t*>(x), static_cast<uint32_t*>(y), A, n0, B, n1, C);
  else if (elem_bytes == 8)
    transpose_words(static_cast<const uint64_t*>(x), static_cast<uint64_t*>(y), A, n0, B, n1, C);
  else
    throw Error(detail::cat("transpose: unsupported element size ", elem_bytes));
}

}  // namespace cpu

namespace {

// cpu::copy_blocks or its CUDA twin, for tensors on `device`.
void copy_blocks_on(Device device, const void* src, int64_t src_stride, void* dst,
                    int64_t dst_stride, int64_t blocks, int64_t block_bytes) {
  dispatch_device(device, "shape ops",
      [&]<typename>() { cuda::copy_blocks(src, src_stride, dst, dst_stride, blocks, block_bytes); },
      [&] { cpu::copy_blocks(src, src_stride, dst, dst_stride, blocks, block_bytes); });
}

// A dimension argument, negative counting from the end; the error names the op and shape.
int64_t dim_arg(const char* op, const Tensor& x, int64_t d) {
  MG_CHECK(d >= -x.dim() && d < x.dim(), op, ": dimension ", d, " out of range for x of shape ",
           shape_str(x.shape()), " (", x.dim(), " dimensions)");
  return d < 0 ? d + x.dim() : d;
}

int64_t prod(const Shape& s, int64_t from, int64_t to) {
  int64_t p = 1;
  for (int64_t i = from; i < to; ++i) p *= s[i];
  return p;
}

// x around `dim` as (outer, n, inner), with inner counted in bytes.
struct Around {
  int64_t outer, n, inner_bytes;
};
Around around(const Tensor& x, int64_t dim) {
  const Shape& s = x.shape();
  return {prod(s, 0, dim), s[dim], prod(s, dim + 1, (int64_t)s.size()) * (int64_t)dtype_size(x.dtype())};
}

std::vector<Tensor> split_impl(const char* op, const Tensor& x, const std::vector<int64_t>& sizes,
                               int64_t dim) {
  check_defined(op, x, "x");
  dim = dim_arg(op, x, dim);
  int64_t total = 0;
  std::string listed;
  for (int64_t s : sizes) {
    listed += (listed.empty() ? "" : ", ") + std::to_string(s);
    total += s;
  }
  bool nonnegative = std::all_of(sizes.begin(), sizes.end(), [](int64_t s) { return s >= 0; });
  MG_CHECK(nonnegative && total == x.size(dim), op, ": sizes [", listed, "] must be >= 0 and sum to ",
           x.size(dim), " (dimension ", dim, " of x ", shape_str(x.shape()), "), they sum to ", total);
  Around ar = around(x, dim);
  const char* src = static_cast<const char*>(x.raw_data());
  std::vector<Tensor> pieces;
  int64_t offset = 0;
  for (int64_t s : sizes) {
    Shape ps = x.shape();
    ps[dim] = s;
    Tensor p = Tensor::empty(ps, x.dtype(), x.device());
    copy_blocks_on(x.device(), src + offset * ar.inner_bytes, ar.n * ar.inner_bytes,
                   p.raw_data(), s * ar.inner_bytes, ar.outer, s * ar.inner_bytes);
    offset += s;
    pieces.push_back(p);
  }
  // One node with every piece as an output: dx = cat of the piece gradients (zeros for
  // pieces that got none, supplied by the tape).
  record(op, {x}, pieces, [dim](const std::vector<Tensor>& d) {
    return std::vector<Tensor>{cat(d, dim)};
  });
  return pieces;
}

}  // namespace

Tensor reshape(const Tensor& x, const Shape& shape) {
  check_defined("reshape", x, "x");
  Tensor y = x.view(shape);  // shares x's storage
  record("reshape", {x}, {y}, [xs = x.shape()](const std::vector<Tensor>& d) {
    return std::vector<Tensor>{reshape(d[0], xs)};
  });
  return y;
}

Tensor transpose(const Tensor& x, int64_t d0, int64_t d1) {
  const char* op = "transpose";
  check_defined(op, x, "x");
  int64_t a0 = dim_arg(op, x, d0), a1 = dim_arg(op, x, d1);
  if (a0 > a1) std::swap(a0, a1);
  Shape ys = x.shape();
  std::swap(ys[a0], ys[a1]);
  Tensor y = Tensor::empty(ys, x.dtype(), x.device());
  const Shape& s = x.shape();
  int64_t nbytes = (int64_t)x.nbytes();
  if (a0 == a1) {
    copy_blocks_on(x.device(), x.raw_data(), nbytes, y.raw_data(), nbytes, 1, nbytes);
  } else {
    // x as (A, n0, B, n1, C) with n0, n1 the swapped dims -> y (A, n1, B, n0, C).
    const int64_t A = prod(s, 0, a0), n0 = s[a0], B = prod(s, a0 + 1, a1), n1 = s[a1];
    const int64_t C = prod(s, a1 + 1, x.dim()), eb = (int64_t)dtype_size(x.dtype());
    dispatch_device(x.device(), op,
        [&]<typename>() { cuda::transpose_forward(x.raw_data(), y.raw_data(), A, n0, B, n1, C, eb); },
        [&] { cpu::transpose_forward(x.raw_data(), y.raw_data(), A, n0, B, n1, C, eb); });
  }
  record(op, {x}, {y}, [a0, a1](const std::vector<Tensor>& d) {
    return std::vector<Tensor>{transpose(d[0], a0, a1)};
  });
  return y;
}

std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim) {
  return split_impl("split", x, sizes, dim);
}

std::vector<Tensor> chunk(const Tensor& x, int64_t chunks, int64_t dim) {
  const char* op = "chunk";
  check_defined(op, x, "x");
  int64_t d = dim_arg(op, x, dim);
  MG_CHECK(chunks >= 1 && x.size(d) % chunks == 0, op, ": dimension ", dim, " of x ",
           shape_str(x.shape()), " (size ", x.size(d), ") is not divisible into ", chunks,
           " equal chunks");
  return split_impl(op, x, std::vector<int64_t>(chunks, x.size(d) / chunks), d);
}

Tensor cat(const std::vector<Tensor>& xs, int64_t dim) {
  const char* op = "cat";
  MG_CHECK(!xs.empty(), op, ": needs at least one tensor");
  const Tensor& x0 = xs[0];
  check_defined(op, x0, "xs[0]");
  dim = dim_arg(op, x0, dim);
  std::vector<int64_t> sizes;
  int64_t total = 0;
  for (size_t k = 0; k < xs.size(); ++k) {
    const Tensor& x = xs[k];
    check_defined(op, x, "xs[k]");
    check_same_dtype(op, x0, x);
    check_same_device(op, x0, x);
    bool fits = x.dim() == x0.dim();
    for (int64_t i = 0; fits && i < x.dim(); ++i) fits = i == dim || x.size(i) == x0.size(i);
    MG_CHECK(fits, op, ": xs[", k, "] has shape ", shape_str(x.shape()), " but xs[0] has ",
             shape_str(x0.shape()), "; all shapes must match except at dimension ", dim);
    sizes.push_back(x.size(dim));
    total += x.size(dim);
  }
  Shape ys = x0.shape();
  ys[dim] = total;
  Tensor y = Tensor::empty(ys, x0.dtype(), x0.device());
  Around ar = around(y, dim);
  char* dst = static_cast<char*>(y.raw_data());
  int64_t offset = 0;
  for (size_t k = 0; k < xs.size(); ++k) {
    copy_blocks_on(y.device(), xs[k].raw_data(), sizes[k] * ar.inner_bytes,
                   dst + offset * ar.inner_bytes, total * ar.inner_bytes, ar.outer,
                   sizes[k] * ar.inner_bytes);
    offset += sizes[k];
  }
  record(op, xs, {y}, [sizes, dim](const std::vector<Tensor>& d) {
    return split(d[0], sizes, dim);
  });
  return y;
}

Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end) {
  const char* op = "slice";
  check_defined(op, x, "x");
  dim = dim_arg(op, x, dim);
  int64_t n = x.size(dim);
  int64_t s = start < 0 ? start + n : start;
  int64_t e = end < 0 ? end + n : end;
  MG_CHECK(0 <= s && s <= e && e <= n, op, ": range [", start, ", ", end, ") is not within ",
           "dimension ", dim, " (size ", n, ") of x ", shape_str(x.shape()),
           "; need 0 <= start <= end <= size after adding size to negative values");
  Shape ys = x.shape();
  ys[dim] = e - s;
  Tensor y = Tensor::empty(ys, x.dtype(), x.device());
  Around ar = around(x, dim);
  copy_blocks_on(x.device(), static_cast<const char*>(x.raw_data()) + s * ar.inner_bytes,
                 n * ar.inner_bytes, y.raw_data(), (e - s) * ar.inner_bytes, ar.outer,
                 (e - s) * ar.inner_bytes);
  int64_t outer = ar.outer, inner = ar.inner_bytes / (int64_t)dtype_size(x.dtype());
  record(op, {x}, {y}, [xs = x.shape(), s, e, n, outer, inner](const std::vector<Tensor>& d) {
    // dx: zeros, with dy copied into the [s, e) stretch of every outer block.
    Tensor dx = Tensor::zeros(xs, d[0].dtype(), d[0].device());
    int64_t inner_bytes = inner * (int64_t)dtype_size(d[0].dtype());
    copy_blocks_on(dx.device(), d[0].raw_data(), (e - s) * inner_bytes,
                   static_cast<char*>(dx.raw_data()) + s * inner_bytes, n * inner_bytes, outer,
                   (e - s) * inner_bytes);
    return std::vector<Tensor>{dx};
  });
  return y;
}

}  // namespace mg
