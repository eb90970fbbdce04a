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
// conv_state = the last K raw x columns (left zero padded when L < K), ssm_state = the scan's
// h_last. MambaLM::step(ids (B), state) then advances one token (mamba-reference.md 6.3):
//
//   x, z     = split(in_proj(h_t))                       (B, ED) each
//   conv_state <- shift left, conv_state[:, :, K-1] = x
//   u        = silu(bias + sum_k conv_state[:, :, k] w[:, 0, k])          (B, ED)
//   dt, B_t, C_t = split(x_proj(u));  r = dt @ dt_proj.weight^T + dt_proj.bias
//   delta    = softplus(r) (r above 20)   A_bar = exp(delta A)            (the scan's own
//   h        = A_bar * h + (delta u) B_t                                    scalar functions)
//   y        = (<C_t, h> + D u) * silu(z);   out = out_proj(y)
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

// conv_state (B, ED, K) from the raw conv inputs x (B, L, ED): the last K time steps, newest
// at index K-1, zeros in front when L < K.
Tensor conv_state_from_inputs(const Tensor& x, int64_t K);

}  // namespace mg::nn
