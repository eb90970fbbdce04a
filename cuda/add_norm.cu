// cuda/add_norm.cu — the CUDA twin of ops/add_norm.h's fused residual add + RMSNorm (declared
// there, with the derivation). T = f32; x and y (dy, dx) f32 or bf16, widened on load and
// rounded to nearest even on store. Device pointers, enqueued on the stream.
//
// Forward, one kernel: a block per row (cuda/norm_rows.cuh) reads x and residual once, writes
// s, sums s^2 in double (fixed-order block sum), then writes y from s (each thread re-reads the
// s values it wrote itself).
//
// Backward, one kernel over the rows plus the partials' sum: the rows are split into a fixed
// number of chunks (a function of `rows` only), one block per chunk, rows in order. Per row:
// mean(g sh) (block sum in double), then dresidual = ds + dn and dx = its rounding, and each
// thread adds dy * sh of its own columns into the chunk's dw partial (shared memory, or the
// global partial row when D is too large for it). Pass 2 (sum_partials) adds the chunk
// partials per column in chunk order. No atomics: deterministic in every mode. The
// elementwise formulas follow the CPU's operation order with explicit round-to-nearest
// operations (no FMA contraction).
#include "ops/add_norm.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <type_traits>

#include "core/tensor.h"
#include "cuda/act_io.cuh"
#include "cuda/check.cuh"
#include "cuda/norm_rows.cuh"
#include "cuda/partial_sums.h"
#include "cuda/runtime.h"

namespace mg::cuda {

namespace {

// Loads and stores (ld, st) and dev(): cuda/act_io.cuh.


// s = residual + x (or x); r = 1/sqrt(mean(s^2) + eps); y = (s r) w.
template <typename X, typename Y>
__global__ void add_rms_forward_kernel(const X* __restrict__ x, const float* __restrict__ residual,
                                       const float* __restrict__ w, Y* __restrict__ y,
                                       float* __restrict__ s, float* __restrict__ rstd,
                                       int64_t rows, int64_t D, float eps) {
  __shared__ double scratch[32];
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const X* xr = x + row * D;
    float* sr = s + row * D;
    double acc = 0;
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
      float v = ld(xr, j);
      if (residual) v = __fadd_rn(residual[row * D + j], v);
      sr[j] = v;
      acc += (double)v * (double)v;
    }
    double ms = block_sum(acc, scratch) / (double)D;
    float r = (float)(1.0 / sqrt(ms + (double)eps));
    if (threadIdx.x == 0) rstd[row] = r;
    Y* yr = y + row * D;
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x)
      st(yr, j, __fmul_rn(__fmul_rn(sr[j], r), w[j]));
  }
}

// Block k = chunk k of rows [k * per_chunk, min(rows, (k + 1) * per_chunk)).
// dn = r (g - sh mean(g sh)), g = dy w, sh = s r; dresidual = ds + dn, dx = rounded;
// part_w[k * D + j] = sum over the chunk's rows of dy sh (null part_w: no dw).
// acc_shared: the partial lives in dynamic shared memory (D doubles) until the chunk is done;
// otherwise it is accumulated in place in part_w (each thread owns its columns either way).
template <typename X, typename Y>
__global__ void add_rms_backward_kernel(const float* __restrict__ s, const float* __restrict__ w,
                                        const float* __restrict__ rstd, const Y* __restrict__ dy,
                                        const float* __restrict__ ds,
                                        float* __restrict__ dresidual, X* __restrict__ dx,
                                        double* __restrict__ part_w, int64_t rows, int64_t D,
                                        int64_t per_chunk, bool acc_shared) {
  __shared__ double scratch[32];
  extern __shared__ double shared_acc[];
  double* acc = part_w ? (acc_shared ? shared_acc : part_w + blockIdx.x * D) : nullptr;
  if (acc)
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x) acc[j] = 0;
  const bool rows_out = dresidual || dx;
  const int64_t r0 = blockIdx.x * per_chunk, r1 = min(rows, r0 + per_chunk);
  for (int64_t row = r0; row < r1; ++row) {
    const float* sr = s + row * D;
    const Y* dyr = dy + row * D;
    const float r = rstd[row];
    if (rows_out) {
      double sum = 0;
      for (int64_t j = threadIdx.x; j < D; j += blockDim.x)
        sum += (double)__fmul_rn(ld(dyr, j), w[j]) * (double)__fmul_rn(sr[j], r);
      const float m = (float)(block_sum(sum, scratch) / (double)D);
      for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
        float dn = __fmul_rn(r, __fsub_rn(__fmul_rn(ld(dyr, j), w[j]),
                                          __fmul_rn(__fmul_rn(sr[j], r), m)));
        float total = ds ? __fadd_rn(ds[row * D + j], dn) : dn;
        if (dresidual) dresidual[row * D + j] = total;
        if (dx) st(dx + row * D, j, total);
      }
    }
    if (acc)
      for (int64_t j = threadIdx.x; j < D; j += blockDim.x)
        acc[j] += (double)ld(dyr, j) * (double)__fmul_rn(sr[j], r);
  }
  if (acc && acc_shared)
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x) part_w[blockIdx.x * D + j] = acc[j];
}

// Shared memory the backward may use for one chunk's dw partial without an opt-in.
constexpr int64_t kSharedAccBytes = 48 * 1024 - 32 * 8;

}  // namespace

// x (rows, D) of X; residual (rows, D) or null; w (D); y (rows, D) of Y; s, rstd written.
template <typename X, typename Y>
void add_rms_norm_forward(const X* x, const float* residual, const float* w, Y* y, float* s,
                          float* rstd, int64_t rows, int64_t D, float eps) {
  if (rows == 0) return;
  add_rms_forward_kernel<<<row_blocks(rows), row_threads(D), 0, cuda_stream()>>>(
      dev(x), residual, w, dev(y), s, rstd, rows, D, eps);
  check_launch("add_rms_norm_forward");
}

// s, ds (rows, D), ds may be null; dy (rows, D) of Y; w (D); rstd (rows). Writes dresidual,
// dx (X) and dw; null outputs are skipped.
template <typename X, typename Y>
void add_rms_norm_backward(const float* s, const float* w, const float* rstd, const Y* dy,
                           const float* ds, float* dresidual, X* dx, float* dw, int64_t rows,
                           int64_t D) {
  if (rows == 0) {  // no rows: dw = 0
    if (dw) MG_CUDA_CHECK(cudaMemsetAsync(dw, 0, sizeof(float) * D, cuda_stream()));
    return;
  }
  if (!dresidual && !dx && !dw) return;
  // Chunks of >= 8 rows, at most 1024 of them: a function of `rows` only.
  int64_t chunks = std::min<int64_t>((rows + 7) / 8, 1024);
  const int64_t per_chunk = (rows + chunks - 1) / chunks;
  chunks = (rows + per_chunk - 1) / per_chunk;
  Tensor part;
  double* part_w = nullptr;
  if (dw) {
    int dev_id = 0;
    MG_CUDA_CHECK(cudaGetDevice(&dev_id));
    part = Tensor::empty({chunks * D}, DType::f64, Device::cuda(dev_id));
    part_w = part.data<double>();
  }
  const bool acc_shared = dw && D * (int64_t)sizeof(double) <= kSharedAccBytes;
  const size_t shared = acc_shared ? (size_t)D * sizeof(double) : 0;
  add_rms_backward_kernel<<<(unsigned)chunks, row_threads(D), shared, cuda_stream()>>>(
      s, w, rstd, dev(dy), ds, dresidual, dx ? dev(dx) : nullptr, part_w, rows, D, per_chunk,
      acc_shared);
  check_launch("add_rms_norm_backward");
  if (dw)
    sum_partials(part_w, dw, PartialsLayout::rows(chunks, D), false,
                 "add_rms_norm_backward (dw sums)");
}

#define MG_INSTANTIATE(X, Y)                                                                   \
  template void add_rms_norm_forward<X, Y>(const X*, const float*, const float*, Y*, float*,  \
                                           float*, int64_t, int64_t, float);                   \
  template void add_rms_norm_backward<X, Y>(const float*, const float*, const float*,         \
                                            const Y*, const float*, float*, X*, float*,        \
                                            int64_t, int64_t);
MG_INSTANTIATE(float, float)
MG_INSTANTIATE(bf16, float)
MG_INSTANTIATE(float, bf16)
MG_INSTANTIATE(bf16, bf16)
#undef MG_INSTANTIATE

}  // namespace mg::cuda
