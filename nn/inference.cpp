// Recurrent inference: prefill through the parallel path, then O(1) steps. The two loops here
// (the conv window and the SSM state update) are the per-token forms of causal_conv1d and
// selective_scan; the SSM update uses the scan's own scalar functions (core/vmath.h: vsoftplus,
// vexp, vsigmoid) in the scan's order of operations, so a step reproduces the scan's numbers.
#include "nn/inference.h"

#include <cmath>

#include "autograd/grad_mode.h"
#include "core/dispatch.h"
#include "core/parallel.h"
#include "core/vmath.h"
#include "nn/mamba.h"
#include "ops/arith.h"
#include "ops/matmul.h"
#include "ops/shape.h"
#include "ops/unary.h"

namespace mg::nn {

namespace {

template <typename T>
void conv_state_from_inputs_kernel(const T* x, T* state, int64_t B, int64_t L, int64_t ED,
                                   int64_t K) {
  for (int64_t b = 0; b < B; ++b)
    for (int64_t d = 0; d < ED; ++d)
      for (int64_t k = 0; k < K; ++k) {
        const int64_t t = L - K + k;  // slot K-1 holds the newest step, L-1
        state[(b * ED + d) * K + k] = t >= 0 ? x[(b * L + t) * ED + d] : T(0);
      }
}

// One step of the depthwise causal conv: shift the window left, append x, and
//   xc[b, d] = bias[d] + sum_k w[d, 0, k] * window[b, d, k]        (tap K-1 = the new x)
template <typename T>
void conv_step_kernel(const T* x, const T* w, const T* bias, T* window, T* xc, int64_t B,
                      int64_t ED, int64_t K) {
  for (int64_t b = 0; b < B; ++b)
    for (int64_t d = 0; d < ED; ++d) {
      T* win = window + (b * ED + d) * K;
      for (int64_t k = 0; k + 1 < K; ++k) win[k] = win[k + 1];
      win[K - 1] = x[b * ED + d];
      T acc = bias[d];
      for (int64_t k = 0; k < K; ++k) acc += w[d * K + k] * win[k];
      xc[b * ED + d] = acc;
    }
}

// One step of the selective scan for every (b, d), updating h (B, ED, N) in place:
//   delta = softplus(delta_raw + bias);  A_bar = exp(delta A);  h = A_bar h + (delta u) B_t
//   y = (D u + <C_t, h>) * silu(z)
// Same functions and the same operation order as cpu::selective_scan_fwd (the <C_t, h> sum
// runs as even/odd partials there too), so the numbers match the parallel path.
template <typename T>
void ssm_step_kernel(const T* u, const T* delta_raw, const T* A, const T* Bm, const T* C,
                     const T* D, const T* z, const T* delta_bias, T* h, T* y, int64_t B,
                     int64_t ED, int64_t N) {
  using namespace vmath;
  parallel_for(B * ED, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / ED, d = i % ED;
      const T dt = vsoftplus(delta_raw[i] + delta_bias[d]);  // the scan's vdelta(r, true)
      const T dtu = dt * u[i];
      const T* a = A + d * N;
      const T* Bt = Bm + b * N;
      const T* Ct = C + b * N;
      T* hd = h + i * N;
      T y_even = 0, y_odd = 0;
      for (int64_t n = 0; n < N; ++n) {
        const T A_bar = vexp(dt * a[n]);
        hd[n] = std::fma(A_bar, hd[n], dtu * Bt[n]);
        T& part = (n % 2 == 0) ? y_even : y_odd;
        part = std::fma(Ct[n], hd[n], part);
      }
      T out = D[d] * u[i];
      out += y_even + y_odd;
      y[i] = out * (z[i] * vsigmoid(z[i]));
    }
  });
}

}  // namespace

Tensor conv_state_from_inputs(const Tensor& x, int64_t K) {
  check_cpu("conv_state_from_inputs", x);
  check_dim("conv_state_from_inputs", x, 3, "x");
  const int64_t B = x.size(0), L = x.size(1), ED = x.size(2);
  Tensor state = Tensor::empty({B, ED, K}, x.dtype());
  dispatch_float(x.dtype(), "conv_state_from_inputs", [&]<typename T>() {
    conv_state_from_inputs_kernel(x.data<T>(), state.data<T>(), B, L, ED, K);
  });
  return state;
}

// ---- one token through a mixer / block ------------------------------------------------------
Tensor MambaMixer::step(const Tensor& h, LayerState& state) const {
  const char* op = "MambaMixer::step";
  check_dim(op, h, 2, "h");
  check_cpu(op, h);
  const int64_t B = h.size(0), ED = d_inner, N = d_state, R = dt_rank, K = d_conv;
  check_shape(op, state.conv_state, {B, ED, K}, "state.conv_state");
  check_shape(op, state.ssm_state, {B, ED, N}, "state.ssm_state");
  check_same_dtype(op, h, state.ssm_state);

  Tensor xz = in_proj.forward(h);                       // (B, 2ED)
  std::vector<Tensor> x_z = split(xz, {ED, ED}, -1);
  const Tensor& x = x_z[0];                             // (B, ED)
  const Tensor& z = x_z[1];                             // (B, ED)
  Tensor xc = Tensor::empty({B, ED}, h.dtype());        // (B, ED) conv output
  dispatch_float(h.dtype(), op, [&]<typename T>() {
    conv_step_kernel(x.data<T>(), conv1d.weight.data<T>(), conv1d.bias.data<T>(),
                     state.conv_state.data<T>(), xc.data<T>(), B, ED, K);
  });
  Tensor u = silu(xc);                                  // (B, ED)
  Tensor x_dbl = x_proj.forward(u);                     // (B, R+2N)
  std::vector<Tensor> dt_B_C = split(x_dbl, {R, N, N}, -1);
  Tensor delta = linear(dt_B_C[0], dt_proj.weight);     // (B, ED), bias added below
  Tensor A = -exp(A_log);                               // (ED, N), as in forward
  Tensor y = Tensor::empty({B, ED}, h.dtype());         // (B, ED)
  dispatch_float(h.dtype(), op, [&]<typename T>() {
    ssm_step_kernel(u.data<T>(), delta.data<T>(), A.data<T>(), dt_B_C[1].data<T>(),
                    dt_B_C[2].data<T>(), D.data<T>(), z.data<T>(), dt_proj.bias.data<T>(),
                    state.ssm_state.data<T>(), y.data<T>(), B, ED, N);
  });
  return out_proj.forward(y);                           // (B, D)
}

Tensor MambaBlock::step(const Tensor& h, LayerState& state) const {
  return h + mixer.step(norm.forward(h), state);        // (B, D)
}

// ---- the model ------------------------------------------------------------------------------
InferenceState MambaLM::new_state(int64_t batch) const {
  MG_CHECK(batch > 0, "MambaLM::new_state: batch must be positive, got ", batch);
  const DType dt = embeddings.weight.dtype();
  const Device dev = embeddings.weight.device();
  InferenceState s;
  for (const MambaBlock& layer : layers) {
    const MambaMixer& m = layer.mixer;
    s.layers.push_back({Tensor::zeros({batch, m.d_inner, m.d_conv}, dt, dev),
                        Tensor::zeros({batch, m.d_inner, m.d_state}, dt, dev)});
  }
  return s;
}

Tensor MambaLM::prefill(const Tensor& ids, InferenceState& state, int64_t num_last_tokens) const {
  NoGradGuard no_grad;
  check_ids("MambaLM::prefill", ids, 2);
  const int64_t L = ids.size(1);
  MG_CHECK(num_last_tokens >= 0, "MambaLM::prefill: num_last_tokens must be >= 0, got ",
           num_last_tokens);
  state.layers.assign(layers.size(), LayerState{});
  Tensor h = embeddings.forward(ids);                   // (B, L, D)
  for (size_t i = 0; i < layers.size(); ++i) h = layers[i].forward(h, &state.layers[i]);
  if (num_last_tokens > 0 && num_last_tokens < L) h = slice(h, 1, L - num_last_tokens, L);
  state.seqlen = L;
  return linear(norm_f.forward(h), lm_head_weight());   // (B, L or num_last_tokens, V_pad)
}

Tensor MambaLM::step(const Tensor& ids, InferenceState& state) const {
  NoGradGuard no_grad;
  check_ids("MambaLM::step", ids, 1);
  MG_CHECK(state.layers.size() == layers.size(), "MambaLM::step: the state has ",
           state.layers.size(), " layers, the model ", layers.size(),
           " (call prefill or new_state first)");
  MG_CHECK(state.batch() == ids.size(0), "MambaLM::step: ids ", shape_str(ids.shape()),
           " for a state of batch ", state.batch());
  Tensor h = embeddings.forward(ids);                   // (B, D)
  for (size_t i = 0; i < layers.size(); ++i) h = layers[i].step(h, state.layers[i]);
  ++state.seqlen;
  return linear(norm_f.forward(h), lm_head_weight());   // (B, V_pad)
}

}  // namespace mg::nn
