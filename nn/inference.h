// nn/inference.h — recurrent (step-by-step) inference state of a Mamba model.
//
// Mamba's decoding cost per token is O(1) in the sequence length: each layer carries a fixed
// state instead of a growing KV cache (per layer B * ED * (K + N) numbers):
//
//   conv_state (B, ED, K)  the last K raw (pre-conv, pre-silu) x values, newest at index K-1
//   ssm_state  (B, ED, N)  h_t of the selective scan (in the model's float type: f32, or f64
//                          for checks; kept in f32 when bf16 weights arrive)
//
// MambaLM::prefill(ids (B, L), state) runs the parallel forward once and fills the state:
// conv_state = the last K raw x columns (causal_conv1d_state: left zero padded when L < K),
// ssm_state = the scan's h_last. MambaLM::step(ids (B), state) then advances one token (mamba-reference.md 6.3):
//
//   x, z     = split(in_proj(h_t))                       (B, ED) each
//   u        = silu(causal_conv1d_step(x, conv_state))   (B, ED)   conv_state shifted, x appended
//   dt, B_t, C_t = split(x_proj(u));  r = dt @ dt_proj.weight^T
//   y        = selective_scan_step(u, r, A, B_t, C_t, D, z, dt_proj.bias, ssm_state)   (B, ED)
//              (delta = softplus(r + bias); h = exp(delta A) h + (delta u) B_t;
//               y = (<C_t, h> + D u) silu(z); ssm_state updated in place)
//   out      = out_proj(y)
// The two per-token kernels live beside their parallel forms in ops/ (ops/conv1d.h,
// ops/selective_scan/step.cpp).
//
// prefill followed by steps reproduces the parallel forward's logits at every position
// (tests/test_mamba_step.cpp checks this to 1e-5 relative in f32).
#pragma once
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace mg::nn {

struct LayerState {
  Tensor conv_state;  // (B, ED, K)
  Tensor ssm_state;   // (B, ED, N)
};

struct InferenceState {
  std::vector<LayerState> layers;
  int64_t seqlen = 0;  // tokens consumed so far (prefill + steps)
  int64_t batch() const { return layers.empty() ? 0 : layers[0].ssm_state.size(0); }
};

}  // namespace mg::nn
