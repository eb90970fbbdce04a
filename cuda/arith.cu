// cuda/arith.cu — the CUDA twins of ops/arith.h's kernels (declared there; the math and the
// broadcast kinds are there too). f32, device pointers, enqueued on the stream, no host sync.
//   binary_forward (no broadcast), scalar_forward: one grid-stride map with float4 loads.
//   binary_forward (row / column broadcast): one thread per output element, o = e / inner.
//   sum_rows / sum_cols: the deterministic reductions of cuda/reduce.cu (double accumulation,
//   fixed order), as sums over dim 0 of (outer, inner) and over dim 1 respectively.
#include "ops/arith.h"

#include "cuda/check.cuh"
#include "ops/reduce.h"

namespace mg::cuda {

namespace {

template <BinaryOp OP>
__device__ __forceinline__ float apply(float x, float z) {
  if constexpr (OP == BinaryOp::add) return x + z;
  else if constexpr (OP == BinaryOp::sub) return x - z;
  else if constexpr (OP == BinaryOp::mul) return x * z;
  else return x / z;
}

// y[e] = a' op b' with e = o*inner + j; the small operand is read at j (row) or o (column).
template <BinaryOp OP, Broadcast BC>
__global__ void broadcast_kernel(const float* __restrict__ a, const float* __restrict__ b,
                                 float* __restrict__ y, int64_t outer, int64_t inner) {
  const int64_t total = outer * inner;
  for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total;
       e += (int64_t)gridDim.x * blockDim.x) {
    int64_t o = e / inner, j = e - o * inner;
    float av, bv;
    if constexpr (BC == Broadcast::b_row) { av = a[e]; bv = b[j]; }
    else if constexpr (BC == Broadcast::a_row) { av = a[j]; bv = b[e]; }
    else if constexpr (BC == Broadcast::b_col) { av = a[e]; bv = b[o]; }
    else { av = a[o]; bv = b[e]; }
    y[e] = apply<OP>(av, bv);
  }
}

template <BinaryOp OP>
void binary_for_op(const float* a, const float* b, float* y, int64_t outer, int64_t inner,
                   Broadcast bc) {
  int64_t n = outer * inner;
  if (n <= 0) return;
  if (bc == Broadcast::none) {
    launch_map("binary_forward", a, b, nullptr, y, n,
               [] __device__(float x, float z, float) { return apply<OP>(x, z); });
    return;
  }
  Launch1d l = launch_1d(n);
  cudaStream_t s = cuda_stream();
  switch (bc) {
    case Broadcast::b_row: broadcast_kernel<OP, Broadcast::b_row><<<l.grid, l.block, 0, s>>>(a, b, y, outer, inner); break;
    case Broadcast::a_row: broadcast_kernel<OP, Broadcast::a_row><<<l.grid, l.block, 0, s>>>(a, b, y, outer, inner); break;
    case Broadcast::b_col: broadcast_kernel<OP, Broadcast::b_col><<<l.grid, l.block, 0, s>>>(a, b, y, outer, inner); break;
    case Broadcast::a_col: broadcast_kernel<OP, Broadcast::a_col><<<l.grid, l.block, 0, s>>>(a, b, y, outer, inner); break;
    case Broadcast::none: break;
  }
  check_launch("binary_forward (broadcast)");
}

template <BinaryOp OP>
void scalar_for_op(const float* a, float s, float* y, int64_t n, bool scalar_left) {
  if (scalar_left)
    launch_map("scalar_forward", a, nullptr, nullptr, y, n,
               [s] __device__(float x, float, float) { return apply<OP>(s, x); });
  else
    launch_map("scalar_forward", a, nullptr, nullptr, y, n,
               [s] __device__(float x, float, float) { return apply<OP>(x, s); });
}

}  // namespace

// a, b, y (outer, inner); with a broadcast the small operand is (inner) or (outer) (bc).
void binary_forward(BinaryOp op, const float* a, const float* b, float* y, int64_t outer,
                    int64_t inner, Broadcast bc) {
  switch (op) {
    case BinaryOp::add: binary_for_op<BinaryOp::add>(a, b, y, outer, inner, bc); break;
    case BinaryOp::sub: binary_for_op<BinaryOp::sub>(a, b, y, outer, inner, bc); break;
    case BinaryOp::mul: binary_for_op<BinaryOp::mul>(a, b, y, outer, inner, bc); break;
    case BinaryOp::div: binary_for_op<BinaryOp::div>(a, b, y, outer, inner, bc); break;
  }
}

// a, y (n): y = a op s, or s op a when scalar_left.
void scalar_forward(BinaryOp op, const float* a, float s, float* y, int64_t n, bool scalar_left) {
  switch (op) {
    case BinaryOp::add: scalar_for_op<BinaryOp::add>(a, s, y, n, scalar_left); break;
    case BinaryOp::sub: scalar_for_op<BinaryOp::sub>(a, s, y, n, scalar_left); break;
    case BinaryOp::mul: scalar_for_op<BinaryOp::mul>(a, s, y, n, scalar_left); break;
    case BinaryOp::div: scalar_for_op<BinaryOp::div>(a, s, y, n, scalar_left); break;
  }
}

// y[j] = sum_o x[o*inner + j]: a reduction over dim 0 of (outer, inner).
void sum_rows(const float* x, float* y, int64_t outer, int64_t inner) {
  sum_forward(x, y, 1, outer, inner, 1.0);
}

// y[o] = sum_j x[o*inner + j]: a reduction over the last dim.
void sum_cols(const float* x, float* y, int64_t outer, int64_t inner) {
  sum_forward(x, y, outer, inner, 1, 1.0);
}

}  // namespace mg::cuda
