// cuda/conv1d.cu — the CUDA twins of ops/conv1d.h's causal depthwise conv1d kernels
// (declared there, with the math): channel-last x, y (B, L, C); w (C, 1, K); bias (C); f32,
// device pointers, enqueued on the stream.
//
// Forward and dx: one thread per (b, t, c) element, c fastest, so a warp reads and writes
// 32 consecutive channels (coalesced); each thread sums its K taps in the CPU's tap order,
// with explicit round-to-nearest multiply and add (no FMA contraction), so y and dx agree with
// the CPU kernel to the last bit unless the host compiler contracted the CPU loop into FMAs
// (then to rounding).
//
// dw and dbias (sums over all B*L rows per channel) are deterministic, with no atomics:
//   pass 1: the rows are split into a fixed number of chunks (a function of B*L only);
//           block (32 channels, 8 row-threads) x (chunk) x (tap k, or k = K for the bias) sums
//           its rows in double and adds its 8 row-thread partials in a fixed order;
//   pass 2: sum_partials (cuda/partial_sums.h) adds the chunk partials in chunk order.
// Accumulation in double, as on the CPU.
//
// Recurrent inference (one token; the CPU references are cpu::causal_conv1d_step_forward and
// cpu::causal_conv1d_state_forward in ops/conv1d.cpp): one thread per (b, c), its K-tap window
// row read once, shifted in registers and written back; the taps summed in the CPU's order with
// the same explicit roundings, so a step equals the CPU step to the bit.
//
// bf16 activations (mixed precision, ops/conv1d.h): the same kernels with x, y, dy, dx in bf16
// (read widened to f32, y and dx rounded once), the weight, bias and their gradients f32.
// Compiled, not yet run on a GPU.
#include "ops/conv1d.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>

#include "core/tensor.h"
#include "cuda/act_io.cuh"
#include "cuda/check.cuh"
#include "cuda/partial_sums.h"
#include "cuda/runtime.h"

namespace mg::cuda {

namespace {

// Activation loads and stores (ld, st) and dev(): cuda/act_io.cuh.


unsigned grid_for(int64_t n, int threads) {
  return (unsigned)std::max<int64_t>(1, std::min<int64_t>((n + threads - 1) / threads, 65535 * 16));
}

// y[b,t,c] = bias[c] + sum_{k >= K-1-t} w[c,k] x[b, t-(K-1)+k, c]
template <typename Act>
__global__ void conv_forward_kernel(const Act* __restrict__ x, const float* __restrict__ w,
                                    const float* __restrict__ bias, Act* __restrict__ y,
                                    int64_t rows, int64_t L, int64_t C, int64_t K) {
  int64_t n = rows * C;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    int64_t row = i / C, c = i - row * C, t = row % L;
    float acc = bias ? bias[c] : 0.f;
    for (int64_t k = max((int64_t)0, K - 1 - t); k < K; ++k)
      acc = __fadd_rn(acc, __fmul_rn(w[c * K + k], ld(x, (row - (K - 1) + k) * C + c)));
    st(y, i, acc);
  }
}

// dx[b,s,c] = sum_{k : s+(K-1)-k < L} w[c,k] dy[b, s+(K-1)-k, c]
template <typename Act>
__global__ void conv_dx_kernel(const float* __restrict__ w, const Act* __restrict__ dy,
                               Act* __restrict__ dx, int64_t rows, int64_t L, int64_t C,
                               int64_t K) {
  int64_t n = rows * C;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    int64_t row = i / C, c = i - row * C, s = row % L;
    float acc = 0.f;
    for (int64_t k = max((int64_t)0, s + K - L); k < K; ++k)
      acc = __fadd_rn(acc, __fmul_rn(w[c * K + k], ld(dy, (row + (K - 1) - k) * C + c)));
    st(dx, i, acc);
  }
}

// Pass 1 of dw / dbias. Block (32 channels, 8 row-threads); blockIdx.y = chunk of rows;
// tap = tap0 + blockIdx.z (tap K means the bias). part[(tap * chunks + chunk) * C + c].
constexpr int kChannels = 32, kRowThreads = 8;
template <typename Act>
__global__ void conv_dw_partial_kernel(const Act* __restrict__ x, const Act* __restrict__ dy,
                                       double* __restrict__ part, int64_t rows, int64_t L,
                                       int64_t C, int64_t K, int64_t rows_per_chunk, int tap0) {
  __shared__ double acc[kRowThreads][kChannels];
  int64_t c = blockIdx.x * (int64_t)kChannels + threadIdx.x;
  int64_t chunk = blockIdx.y, chunks = gridDim.y;
  int64_t tap = tap0 + blockIdx.z;
  int64_t r0 = chunk * rows_per_chunk, r1 = min(rows, r0 + rows_per_chunk);
  double s = 0;
  if (c < C) {
    for (int64_t row = r0 + threadIdx.y; row < r1; row += kRowThreads) {
      double g = (double)ld(dy, row * C + c);
      if (tap == K) {
        s += g;
      } else if (row % L - (K - 1) + tap >= 0) {  // the tap reads time t-(K-1)+tap >= 0
        s += g * (double)ld(x, (row - (K - 1) + tap) * C + c);
      }
    }
  }
  acc[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    double t = 0;
    for (int k = 0; k < kRowThreads; ++k) t += acc[k][threadIdx.x];
    part[(tap * chunks + chunk) * C + c] = t;
  }
}

// One token. x, y (B, C); w (C, 1, K); bias (C) or null; window (B, C, K) in place:
// window[b,c,:] shifted left, window[b,c,K-1] = x[b,c]; y[b,c] = bias[c] + sum_k w[c,k] win[k].
// One thread per (b, c), c fastest (coalesced x, y; the window row is K contiguous floats).
__global__ void conv_step_kernel(const float* __restrict__ x, const float* __restrict__ w,
                                 const float* __restrict__ bias, float* __restrict__ window,
                                 float* __restrict__ y, int64_t B, int64_t C, int64_t K) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < B * C;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t c = i % C;
    float* win = window + i * K;
    for (int64_t k = 0; k + 1 < K; ++k) win[k] = win[k + 1];
    win[K - 1] = x[i];
    float acc = bias ? bias[c] : 0.f;
    for (int64_t k = 0; k < K; ++k) acc = __fadd_rn(acc, __fmul_rn(w[c * K + k], win[k]));
    y[i] = acc;
  }
}

// x (B, L, C) -> window (B, C, K): window[b,c,k] = x[b, L-K+k, c], 0 where L-K+k < 0.
// One thread per window element (b, c, k), k fastest (the window's layout).
__global__ void conv_state_kernel(const float* __restrict__ x, float* __restrict__ window,
                                  int64_t B, int64_t L, int64_t C, int64_t K) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < B * C * K;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t k = i % K, bc = i / K, c = bc % C, b = bc / C;
    const int64_t t = L - K + k;  // slot K-1 holds the newest step, L-1
    window[i] = t >= 0 ? x[(b * L + t) * C + c] : 0.f;
  }
}

}  // namespace

// x, y (B, C); w (C, 1, K); bias (C) or null; window (B, C, K) updated in place.
void causal_conv1d_step_forward(const float* x, const float* w, const float* bias, float* window,
                                float* y, int64_t B, int64_t C, int64_t K) {
  if (B * C == 0) return;
  conv_step_kernel<<<grid_for(B * C, 256), 256, 0, cuda_stream()>>>(x, w, bias, window, y, B, C,
                                                                      K);
  check_launch("causal_conv1d_step_forward");
}

// x (B, L, C) -> window (B, C, K).
void causal_conv1d_state_forward(const float* x, float* window, int64_t B, int64_t L, int64_t C,
                                 int64_t K) {
  if (B * C * K == 0) return;
  conv_state_kernel<<<grid_for(B * C * K, 256), 256, 0, cuda_stream()>>>(x, window, B, L, C, K);
  check_launch("causal_conv1d_state_forward");
}

// x (B, L, C), w (C, 1, K), bias (C) or null -> y (B, L, C).
template <typename Act>
static void conv_forward(const Act* x, const float* w, const float* bias, Act* y, int64_t B,
                         int64_t L, int64_t C, int64_t K) {
  int64_t rows = B * L;
  if (rows * C == 0) return;
  conv_forward_kernel<<<grid_for(rows * C, 256), 256, 0, cuda_stream()>>>(x, w, bias, y, rows,
                                                                            L, C, K);
  check_launch("causal_conv1d_forward");
}

// x, dy, dx (B, L, C); w, dw (C, 1, K); dbias (C). A null dx, dw or dbias is skipped.
template <typename Act>
static void conv_backward(const Act* x, const float* w, const Act* dy, Act* dx, float* dw,
                          float* dbias, int64_t B, int64_t L, int64_t C, int64_t K) {
  cudaStream_t s = cuda_stream();
  int64_t rows = B * L;
  if (dx && rows * C > 0) {
    conv_dx_kernel<<<grid_for(rows * C, 256), 256, 0, s>>>(w, dy, dx, rows, L, C, K);
    check_launch("causal_conv1d_backward (dx)");
  }
  if ((!dw && !dbias) || C == 0) return;
  MG_CHECK(K < 65535, "causal_conv1d backward: K = ", K, " taps exceed the CUDA kernel's limit");
  // Taps to reduce: [0, K) for dw, K for dbias.
  int tap0 = dw ? 0 : (int)K;
  int taps = (int)((dbias ? K + 1 : K) - tap0);
  // A fixed split of the rows (a function of B*L only), so the sums are deterministic.
  int64_t chunks = std::max<int64_t>(1, std::min<int64_t>((rows + 255) / 256, 256));
  int64_t per_chunk = std::max<int64_t>(1, (rows + chunks - 1) / chunks);
  chunks = std::max<int64_t>(1, (rows + per_chunk - 1) / per_chunk);
  int dev = 0;
  MG_CUDA_CHECK(cudaGetDevice(&dev));
  Tensor part = Tensor::empty({(K + 1) * chunks * C}, DType::f64, Device::cuda(dev));
  dim3 grid((unsigned)((C + kChannels - 1) / kChannels), (unsigned)chunks, (unsigned)taps);
  conv_dw_partial_kernel<<<grid, dim3(kChannels, kRowThreads), 0, s>>>(
      x, dy, part.data<double>(), rows, L, C, K, per_chunk, tap0);
  check_launch("causal_conv1d_backward (dw partials)");
  // Pass 2: per (tap, c) the chunk partials added in chunk order; dw is (C, 1, K), so tap k
  // of channel c goes to dw[c * K + k], and "tap" K (the bias) to dbias[c].
  if (dw) {
    PartialsLayout taps_of_w;
    taps_of_w.groups = K;
    taps_of_w.n = C;
    taps_of_w.parts = chunks;
    taps_of_w.part_group = chunks * C;
    taps_of_w.part_stride = C;
    taps_of_w.out_group = 1;
    taps_of_w.out_elem = K;
    sum_partials(part.data<double>(), dw, taps_of_w, false, "causal_conv1d_backward (dw sum)");
  }
  if (dbias)
    sum_partials(part.data<double>() + K * chunks * C, dbias, PartialsLayout::rows(chunks, C),
                 false, "causal_conv1d_backward (dbias sum)");
}

void causal_conv1d_forward(const float* x, const float* w, const float* bias, float* y, int64_t B,
                           int64_t L, int64_t C, int64_t K) {
  conv_forward(x, w, bias, y, B, L, C, K);
}
void causal_conv1d_backward(const float* x, const float* w, const float* dy, float* dx, float* dw,
                            float* dbias, int64_t B, int64_t L, int64_t C, int64_t K) {
  conv_backward(x, w, dy, dx, dw, dbias, B, L, C, K);
}
void causal_conv1d_forward_bf16(const bf16* x, const float* w, const float* bias, bf16* y,
                                int64_t B, int64_t L, int64_t C, int64_t K) {
  conv_forward(dev(x), w, bias, dev(y), B, L, C, K);
}
void causal_conv1d_backward_bf16(const bf16* x, const float* w, const bf16* dy, bf16* dx,
                                 float* dw, float* dbias, int64_t B, int64_t L, int64_t C,
                                 int64_t K) {
  conv_backward(dev(x), w, dev(dy), dx ? dev(dx) : nullptr, dw, dbias, B, L, C, K);
}

}  // namespace mg::cuda
