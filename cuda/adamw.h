// cuda/adamw.h — the optimizer's device kernels: the fused AdamW (and SGD) update and the
// sums of squares for the global gradient norm (f32, device pointers, on mg::cuda::stream()).
//
// Why a header in cuda/ (the op twins are declared in ops/<op>.h instead): the CPU twins live
// in train/ (train/optimizer.h, train/grad_utils.cpp), and cuda/ must not include train/. So
// train/ includes this plain C++ header; its calls sit in dispatch_device's CUDA lambda (or
// under `if constexpr (kWithCuda)`), so a build without CUDA never references them.
//
// adamw_update / sgd_update are the twins of cpu::adamw_update / cpu::sgd_update
// (train/optimizer.h, the formulas are there): one grid-stride pass reads p, g, m, v once and
// writes p, m, v once (float4 where aligned). The *_device_scale variants read an extra factor
// from device memory (the clipping factor computed by clip_scale_device), so a clipped step
// needs no host sync.
//
// Global norm without a host sync (the loss is the only thing the loop reads back):
//   double* acc = <one f64 on the device>;  fill it with 0
//   for each grad g (list order): accumulate_sum_of_squares(g, n, acc)
//   clip_scale_device(acc, max_norm, scale, norm)     // scale, norm: device floats
//   for each param: adamw_update_device_scale(..., grad_scale = 1, scale)
// Each tensor's sum of g^2 is deterministic: fixed 64 Ki-element chunks (the CPU's partition,
// train::global_grad_norm), each summed in double by one block (a fixed tree order inside the
// chunk, so it agrees with the CPU to double rounding, not bitwise), the chunk sums added in
// order by one thread; tensors are added to acc in stream (list) order.
#pragma once
#include <cstdint>

namespace mg::cuda {

// cpu::adamw_update's signature and formula.
void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, float lr, float beta1,
                  float beta2, float eps, float weight_decay, float bias_c1, float bias_c2,
                  float grad_scale);
// The same with g multiplied by grad_scale * (*grad_scale_device).
void adamw_update_device_scale(float* p, const float* g, float* m, float* v, int64_t n, float lr,
                               float beta1, float beta2, float eps, float weight_decay,
                               float bias_c1, float bias_c2, float grad_scale,
                               const float* grad_scale_device);

// cpu::sgd_update's signature and formula.
void sgd_update(float* p, const float* g, float* buf, int64_t n, float lr, float momentum,
                bool nesterov, float weight_decay, float grad_scale);

// *out_device = sum_i g[i]^2, in double (overwritten; one f64 on the device).
void sum_of_squares(const float* g, int64_t n, double* out_device);
// *acc_device += sum_i g[i]^2, in double.
void accumulate_sum_of_squares(const float* g, int64_t n, double* acc_device);
// norm = sqrt(*sumsq); scale = min(1, max_norm / (norm + 1e-6)), or 1 when max_norm <= 0 —
// train::clip_scale's rule. Either output pointer may be null.
void clip_scale_device(const double* sumsq_device, double max_norm, float* scale_device,
                       float* norm_device);

}  // namespace mg::cuda
