// cuda/adamw.cu — fused optimizer updates and the gradient sum of squares; see cuda/adamw.h.
#include "cuda/adamw.h"

#include <cub/block/block_reduce.cuh>

#include "core/tensor.h"
#include "cuda/check.cuh"
#include "cuda/partial_sums.h"

namespace mg::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kChunk = 65536;  // train::global_grad_norm's block size

// One element of AdamW; the CPU loop body in float.
__device__ __forceinline__ void adamw_element(float& p, float g, float& m, float& v, float lr,
                                              float beta1, float beta2, float eps, float decay,
                                              float step_size, float sqrt_c2) {
  m = beta1 * m + (1.f - beta1) * g;
  v = beta2 * v + (1.f - beta2) * g * g;
  float denom = sqrtf(v) / sqrt_c2 + eps;
  p = p * decay - step_size * (m / denom);
}

// p, m, v are updated in place, so the generic map (y separate from inputs) does not fit.
__global__ void adamw_kernel(float* __restrict__ p, const float* __restrict__ g,
                             float* __restrict__ m, float* __restrict__ v, int64_t n, float lr,
                             float beta1, float beta2, float eps, float decay, float step_size,
                             float sqrt_c2, float grad_scale, const float* grad_scale_device,
                             bool vec4) {
  float scale = grad_scale * (grad_scale_device ? *grad_scale_device : 1.f);
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  const int64_t tid = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  int64_t done = 0;
  if (vec4) {
    for (int64_t q = tid; q < n / 4; q += stride) {
      float4 P = reinterpret_cast<float4*>(p)[q], G = reinterpret_cast<const float4*>(g)[q];
      float4 M = reinterpret_cast<float4*>(m)[q], V = reinterpret_cast<float4*>(v)[q];
      adamw_element(P.x, G.x * scale, M.x, V.x, lr, beta1, beta2, eps, decay, step_size, sqrt_c2);
      adamw_element(P.y, G.y * scale, M.y, V.y, lr, beta1, beta2, eps, decay, step_size, sqrt_c2);
      adamw_element(P.z, G.z * scale, M.z, V.z, lr, beta1, beta2, eps, decay, step_size, sqrt_c2);
      adamw_element(P.w, G.w * scale, M.w, V.w, lr, beta1, beta2, eps, decay, step_size, sqrt_c2);
      reinterpret_cast<float4*>(p)[q] = P;
      reinterpret_cast<float4*>(m)[q] = M;
      reinterpret_cast<float4*>(v)[q] = V;
    }
    done = n / 4 * 4;
  }
  for (int64_t i = done + tid; i < n; i += stride)
    adamw_element(p[i], g[i] * scale, m[i], v[i], lr, beta1, beta2, eps, decay, step_size, sqrt_c2);
}

// p, g, buf (n): one SGD step per element, p and buf in place.
__global__ void sgd_kernel(float* __restrict__ p, const float* __restrict__ g,
                           float* __restrict__ buf, int64_t n, float lr, float momentum,
                           bool nesterov, float weight_decay, float grad_scale) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    float gi = g[i] * grad_scale + weight_decay * p[i];
    float d = gi;
    if (momentum != 0.f) {
      buf[i] = momentum * buf[i] + gi;
      d = nesterov ? gi + momentum * buf[i] : buf[i];
    }
    p[i] -= lr * d;
  }
}

// partial[c] = sum of g^2 over chunk c (kChunk elements), one block per chunk, in double.
__global__ void chunk_squares_kernel(const float* __restrict__ g, int64_t n, int64_t chunks,
                                     double* __restrict__ partial) {
  using BlockReduce = cub::BlockReduce<double, kThreads>;
  __shared__ typename BlockReduce::TempStorage tmp;
  for (int64_t c = blockIdx.x; c < chunks; c += gridDim.x) {
    int64_t begin = c * kChunk, end = min(n, begin + kChunk);
    double acc = 0;
    for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) acc += (double)g[i] * g[i];
    double s = BlockReduce(tmp).Sum(acc);
    if (threadIdx.x == 0) partial[c] = s;
    __syncthreads();
  }
}

// sumsq () -> scale (), norm (): one thread, train::clip_scale's rule.
__global__ void clip_scale_kernel(const double* sumsq, double max_norm, float* scale, float* norm) {
  double nrm = sqrt(*sumsq);
  if (norm) *norm = (float)nrm;
  // train::clip_scale's rule, NaN included: fmin(1, NaN) would return 1, the CPU returns NaN.
  const double c = max_norm / (nrm + 1e-6);
  if (scale) *scale = max_norm <= 0 ? 1.f : (float)(isnan(c) ? c : fmin(1.0, c));
}

// g (n) -> *out (=, or += with accumulate) sum g^2: chunk sums, then their sum in order.
void squares(const float* g, int64_t n, double* out, bool accumulate) {
  cudaStream_t s = cuda_stream();
  int64_t chunks = std::max<int64_t>(1, (n + kChunk - 1) / kChunk);
  Tensor partial = Tensor::empty({chunks}, DType::f64, Device::cuda(0));
  chunk_squares_kernel<<<(unsigned)std::min<int64_t>(chunks, 65535), kThreads, 0, s>>>(
      g, n, chunks, partial.data<double>());
  check_launch("sum_of_squares (chunks)");
  // The chunk sums added in chunk order by one thread: *out = sum, or *out += sum.
  PartialsLayout one_sum;
  one_sum.n = 1;
  one_sum.parts = chunks;
  one_sum.part_stride = 1;
  sum_partials(partial.data<double>(), out, one_sum, accumulate, "sum_of_squares (finish)");
}

}  // namespace

// p, g, m, v (n); grad_scale_device () or null.
void adamw_update_device_scale(float* p, const float* g, float* m, float* v, int64_t n, float lr,
                               float beta1, float beta2, float eps, float weight_decay,
                               float bias_c1, float bias_c2, float grad_scale,
                               const float* grad_scale_device) {
  if (n <= 0) return;
  // The CPU's hoisted constants, computed the same way (in float on the host).
  const float decay = 1.f - lr * weight_decay;
  const float step_size = lr / bias_c1;
  const float sqrt_c2 = std::sqrt(bias_c2);
  bool vec4 = aligned16(p) && aligned16(g) && aligned16(m) && aligned16(v);
  Launch1d l = launch_1d(vec4 ? (n + 3) / 4 : n);
  adamw_kernel<<<l.grid, l.block, 0, cuda_stream()>>>(p, g, m, v, n, lr, beta1, beta2, eps, decay,
                                                      step_size, sqrt_c2, grad_scale,
                                                      grad_scale_device, vec4);
  check_launch("adamw_update");
}

// p, g, m, v (n).
void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, float lr, float beta1,
                  float beta2, float eps, float weight_decay, float bias_c1, float bias_c2,
                  float grad_scale) {
  adamw_update_device_scale(p, g, m, v, n, lr, beta1, beta2, eps, weight_decay, bias_c1, bias_c2,
                            grad_scale, nullptr);
}

// p, g, buf (n).
void sgd_update(float* p, const float* g, float* buf, int64_t n, float lr, float momentum,
                bool nesterov, float weight_decay, float grad_scale) {
  if (n <= 0) return;
  Launch1d l = launch_1d(n);
  sgd_kernel<<<l.grid, l.block, 0, cuda_stream()>>>(p, g, buf, n, lr, momentum, nesterov,
                                                    weight_decay, grad_scale);
  check_launch("sgd_update");
}

// g (n) -> out_device ().
void sum_of_squares(const float* g, int64_t n, double* out_device) {
  squares(g, n, out_device, false);
}

// g (n) -> acc_device () +=.
void accumulate_sum_of_squares(const float* g, int64_t n, double* acc_device) {
  squares(g, n, acc_device, true);
}

// sumsq_device () -> scale_device (), norm_device ().
void clip_scale_device(const double* sumsq_device, double max_norm, float* scale_device,
                       float* norm_device) {
  clip_scale_kernel<<<1, 1, 0, cuda_stream()>>>(sumsq_device, max_norm, scale_device, norm_device);
  check_launch("clip_scale");
}

}  // namespace mg::cuda
