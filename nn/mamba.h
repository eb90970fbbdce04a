// nn/mamba.h — the Mamba language model (Gu & Dao 2023), in the Hugging Face
// `MambaForCausalLM` parameter layout.
//
// ---- Dimension glossary (used in every shape comment of nn/) ----------------------------
//   B   batch                       L   sequence length
//   D   d_model (residual width)    E   expand (2)          ED  d_inner = E * D
//   N   d_state (16)                R   dt_rank = ceil(D / 16)
//   K   d_conv (4)                  V   vocabulary (padded up to a multiple of 8: V_pad)
//
// ---- The model ----------------------------------------------------------------------------
//   h = embeddings[ids]                                   (B, L, D)
//   for each layer:  h = h + mixer(rms_norm(h))           (the residual stream, f32)
//   logits = rms_norm_f(h) @ embeddings^T                 (B, L, V_pad)   (tied lm_head)
//
// computed as the reference (state-spaces mamba_ssm MixerModel / Block, fused_add_norm)
// computes it, with each residual add fused into the norm that reads it (ops/add_norm.h):
//   hidden = embeddings[ids], residual = none (zero)
//   for each layer:  residual = hidden + residual         (B, L, D) f32: the residual stream
//                    hidden   = mixer(norm(residual))     (one add_rms_norm, then the mixer)
//   logits = norm_f(hidden + residual) @ embeddings^T     (one add_rms_norm, then the head)
// (residual_i is h_i above, hidden_i the mixer's output: the same sums, bit for bit.) Under
// Settings::precision = bf16 each norm writes its output in bf16, the dtype of the GEMM that
// reads it (in_proj, the head), so linear has no cast to make.
//
// The mixer (paper Figure 3; one op per line in MambaMixer::forward):
//   x, z  = split(in_proj(h))                  (B, L, ED) each: x = SSM branch, z = gate
//   u     = silu(causal_conv1d(x))             (B, L, ED)
//   dt, B, C = split(x_proj(u))                (B, L, R), (B, L, N), (B, L, N)
//   delta = dt @ dt_proj.weight^T              (B, L, ED)  raw: the bias and softplus are
//                                                           applied inside the scan
//   A     = -exp(A_log)                        (ED, N)
//   y     = selective_scan(u, delta, A, B, C, D, z, dt_proj.bias, softplus)   (B, L, ED)
//   out   = out_proj(y)                        (B, L, D)
//
// Parameter names (exactly Hugging Face's; `backbone.embedding.weight` of state-spaces files
// and a tied `lm_head.weight` are accepted by load_state_dict):
//   backbone.embeddings.weight (V_pad, D), backbone.layers.{i}.norm.weight (D),
//   backbone.layers.{i}.mixer.{in_proj.weight (2ED, D), conv1d.weight (ED, 1, K),
//   conv1d.bias (ED), x_proj.weight (R+2N, ED), dt_proj.weight (ED, R), dt_proj.bias (ED),
//   A_log (ED, N), D (ED), out_proj.weight (D, ED)}, backbone.norm_f.weight (D),
//   lm_head.weight (V_pad, D) only when tie_embeddings = false.
//
// Recurrent inference (prefill + O(1) step) lives in nn/inference.h/.cpp.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/rng.h"
#include "nn/inference.h"
#include "nn/layers.h"
#include "nn/module.h"

namespace mg::nn {

struct MambaConfig {
  int64_t d_model = 768;       // D
  int64_t n_layer = 24;
  int64_t vocab_size = 50277;  // V before padding
  int64_t d_state = 16;        // N
  int64_t d_conv = 4;          // K
  int64_t expand = 2;          // E
  int64_t dt_rank = 0;         // R; 0 = auto = ceil(D / 16)
  double eps = 1e-5;           // RMSNorm epsilon
  int64_t pad_vocab_multiple = 8;  // V_pad = V rounded up to a multiple of this (when > 1)
  bool tie_embeddings = true;
  // Initialisation of delta (nn/init.h): softplus(dt_proj.bias) log-uniform in [dt_min, dt_max].
  double dt_min = 1e-3, dt_max = 1e-1, dt_init_floor = 1e-4;

  int64_t padded_vocab() const;  // V_pad
  int64_t d_inner() const;       // ED
  int64_t rank() const;          // R, resolved
  void validate() const;         // throws mg::Error naming the bad field

  // Checkpoint metadata: every field as a string ("d_model" -> "768", ...) plus
  // "architecture" -> "mamba". from_metadata requires d_model, n_layer and vocab_size, takes
  // defaults for the rest, ignores unknown keys, and names the key of any unparsable value.
  std::map<std::string, std::string> to_metadata() const;
  static MambaConfig from_metadata(const std::map<std::string, std::string>& meta);
  std::string str() const;  // one line, for logs
};

class MambaMixer : public Module {
 public:
  MambaMixer() = default;
  explicit MambaMixer(const MambaConfig& cfg);  // shapes only (zeros); nn/init.h fills them
  // h (B, L, D) -> (B, L, D). With `state`, also stores what recurrent decoding continues from
  // (the last K raw conv inputs and the final scan state).
  Tensor forward(const Tensor& h, LayerState* state = nullptr) const;
  // One token: h (B, D) -> (B, D), advancing `state` in place (nn/inference.cpp).
  Tensor step(const Tensor& h, LayerState& state) const;
  void visit(ParamVisitor& v) override;

  int64_t d_inner = 0, d_state = 0, dt_rank = 0, d_conv = 0;
  Linear in_proj;       // (2ED, D), no bias
  CausalConv1d conv1d;  // (ED, 1, K), bias (ED)
  Linear x_proj;        // (R+2N, ED), no bias
  Linear dt_proj;       // (ED, R), bias (ED): the bias goes into the scan as delta_bias
  Tensor A_log;         // (ED, N): A = -exp(A_log)
  Tensor D;             // (ED): skip connection
  Linear out_proj;      // (D, ED), no bias
};

// What flows between blocks: the last mixer's output and the residual stream before it.
struct HiddenResidual {
  Tensor hidden;    // (B, L, D) or (B, D): the previous mixer's output (the embeddings first)
  Tensor residual;  // same shape, f32 (the model's dtype); undefined before the first block
};

class MambaBlock : public Module {
 public:
  MambaBlock() = default;
  explicit MambaBlock(const MambaConfig& cfg);
  // The reference's Block: residual = hidden + residual; hidden = mixer(norm(residual)), the
  // add and the norm one fused op. (B, L, D) in and out.
  HiddenResidual forward(const HiddenResidual& in, LayerState* state = nullptr) const;
  // One token, (B, D) in and out, advancing `state` in place (nn/inference.cpp).
  HiddenResidual step(const HiddenResidual& in, LayerState& state) const;
  void visit(ParamVisitor& v) override;

  RMSNorm norm;
  MambaMixer mixer;
};

struct LMOutput {
  Tensor logits;  // (B, L, V_pad)
  Tensor loss;    // scalar
};

class MambaLM : public Module {
 public:
  MambaLM() = default;
  // Builds and initialises (nn/init.h) from `gen`, or from Generator(seed).
  MambaLM(const MambaConfig& cfg, Generator& gen);
  explicit MambaLM(const MambaConfig& cfg, uint64_t seed = 0);

  const MambaConfig& config() const { return cfg_; }

  // ids (B, L) i32 in [0, V_pad) -> logits (B, L, V_pad).
  Tensor forward(const Tensor& ids) const;
  // The final normalised hidden states (B, L, D) (logits = hidden @ embeddings^T): f32, or
  // bf16 under Settings::precision = bf16 (the head's GEMM input).
  Tensor hidden_states(const Tensor& ids) const;
  // Mean next-token cross-entropy: logits[:, :-1] against ids[:, 1:] (L >= 2).
  Tensor loss(const Tensor& ids) const;
  // Mean cross-entropy of logits[b, t] against targets[b, t] (B, L) i32 over the positions
  // whose target != ignore_index (the synthetic tasks score only some positions).
  Tensor loss(const Tensor& ids, const Tensor& targets, int32_t ignore_index = -100) const;
  LMOutput forward(const Tensor& ids, const Tensor& targets, int32_t ignore_index = -100) const;

  // ---- recurrent inference (nn/inference.cpp); run under NoGradGuard -------------------
  InferenceState new_state(int64_t batch) const;  // zero states of the model's dtype/device
  // Runs the parallel forward on ids (B, L) from an empty state and fills `state` (resized to
  // the batch). Returns logits (B, L, V_pad), or only the last `num_last_tokens` positions.
  Tensor prefill(const Tensor& ids, InferenceState& state, int64_t num_last_tokens = 0) const;
  // One token per sequence: ids (B) i32 -> logits (B, V_pad); O(1) in the length so far.
  Tensor step(const Tensor& ids, InferenceState& state) const;
  // step() without the id range check and without advancing state.seqlen: for ids a sampler
  // produced (always in range), so that a CUDA graph can capture it (nn/decoder.h).
  Tensor step_trusted(const Tensor& ids, InferenceState& state) const;

  void visit(ParamVisitor& v) override;

  Embedding embeddings;            // (V_pad, D)
  std::vector<MambaBlock> layers;  // n_layer
  RMSNorm norm_f;                  // (D)
  Tensor lm_head;                  // (V_pad, D), only when !tie_embeddings

 protected:
  std::map<std::string, Tensor> canonical_names(
      const std::map<std::string, Tensor>& state) const override;

 private:
  const Tensor& lm_head_weight() const { return cfg_.tie_embeddings ? embeddings.weight : lm_head; }
  // norm_f(hidden + residual), fused, in the head's GEMM dtype: (..., D).
  Tensor final_norm(const HiddenResidual& h) const;
  void build(Generator& gen);
  void check_ids(const char* op, const Tensor& ids, int64_t want_dim) const;
  MambaConfig cfg_;
};

}  // namespace mg::nn
