// Recurrent inference: prefill through the parallel path, then O(1) steps. The per-token
// kernels live beside their parallel forms in ops/ (causal_conv1d_step in ops/conv1d.h,
// selective_scan_step in ops/selective_scan/); this file only composes ops.
#include "nn/inference.h"

#include "autograd/grad_mode.h"
#include "nn/mamba.h"
#include "ops/arith.h"
#include "ops/conv1d.h"
#include "ops/embedding.h"
#include "ops/matmul.h"
#include "ops/selective_scan/selective_scan.h"
#include "ops/shape.h"
#include "ops/unary.h"

namespace mg::nn {

// ---- one token through a mixer / block ------------------------------------------------------
Tensor MambaMixer::step(const Tensor& h, LayerState& state) const {
  const char* op = "MambaMixer::step";
  check_dim(op, h, 2, "h");
  const int64_t B = h.size(0), ED = d_inner, N = d_state, R = dt_rank, K = d_conv;
  check_shape(op, state.conv_state, {B, ED, K}, "state.conv_state");
  check_shape(op, state.ssm_state, {B, ED, N}, "state.ssm_state");
  check_same_dtype(op, h, state.ssm_state);

  Tensor xz = in_proj.forward(h);                       // (B, 2ED)
  std::vector<Tensor> x_z = split(xz, {ED, ED}, -1);
  const Tensor& x = x_z[0];                             // (B, ED)
  const Tensor& z = x_z[1];                             // (B, ED)
  Tensor xc = causal_conv1d_step(x, conv1d.weight, conv1d.bias, state.conv_state);  // (B, ED)
  Tensor u = silu(xc);                                  // (B, ED)
  Tensor x_dbl = x_proj.forward(u);                     // (B, R+2N)
  std::vector<Tensor> dt_B_C = split(x_dbl, {R, N, N}, -1);
  Tensor delta = linear(dt_B_C[0], dt_proj.weight);     // (B, ED), bias added by the step
  Tensor A = -exp(A_log);                               // (ED, N), as in forward
  Tensor y = selective_scan_step(u, delta, A, dt_B_C[1], dt_B_C[2], D, z, dt_proj.bias,
                                 /*delta_softplus=*/true, state.ssm_state);  // (B, ED)
  return out_proj.forward(y);                           // (B, D)
}

HiddenResidual MambaBlock::step(const HiddenResidual& in, LayerState& state) const {
  // As forward, but the norm's output stays in the model's dtype: MambaMixer::step checks it
  // against the state's (in_proj casts it under bf16 precision).
  AddNormResult n = norm.forward(in.hidden, in.residual);  // (B, D) each
  return {mixer.step(n.y, state), n.residual};
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
  HiddenResidual h{embeddings.forward(ids), Tensor()};  // (B, L, D), no residual yet
  for (size_t i = 0; i < layers.size(); ++i) h = layers[i].forward(h, &state.layers[i]);
  if (num_last_tokens > 0 && num_last_tokens < L)
    h = {slice(h.hidden, 1, L - num_last_tokens, L), slice(h.residual, 1, L - num_last_tokens, L)};
  state.seqlen = L;
  return linear(final_norm(h), lm_head_weight());       // (B, L or num_last_tokens, V_pad)
}

Tensor MambaLM::step(const Tensor& ids, InferenceState& state) const {
  check_ids("MambaLM::step", ids, 1);
  Tensor logits = step_trusted(ids, state);
  ++state.seqlen;
  return logits;
}

// The step without the id range check (which reads the ids on the host: a sync on CUDA) and
// without touching host-side counters, so that a CUDA graph can capture it (ops/graph.h).
Tensor MambaLM::step_trusted(const Tensor& ids, InferenceState& state) const {
  NoGradGuard no_grad;
  MG_CHECK(ids.dtype() == DType::i32 && ids.dim() == 1, "MambaLM::step: ids must be (B) i32, got ",
           dtype_name(ids.dtype()), " ", shape_str(ids.shape()));
  MG_CHECK(state.layers.size() == layers.size(), "MambaLM::step: the state has ",
           state.layers.size(), " layers, the model ", layers.size(),
           " (call prefill or new_state first)");
  MG_CHECK(state.batch() == ids.size(0), "MambaLM::step: ids ", shape_str(ids.shape()),
           " for a state of batch ", state.batch());
  HiddenResidual h{embedding(ids, embeddings.weight, /*check_ids=*/false), Tensor()};  // (B, D)
  for (size_t i = 0; i < layers.size(); ++i) h = layers[i].step(h, state.layers[i]);
  const Tensor hf = norm_f.forward(h.hidden, h.residual, /*out_dtype=*/std::nullopt,
                                   /*return_residual=*/false).y;  // (B, D)
  return linear(hf, lm_head_weight());                  // (B, V_pad)
}

}  // namespace mg::nn
