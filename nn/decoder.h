// nn/decoder.h — batched decoding on the model's device: the per-token step (captured in a
// CUDA graph on the GPU), sampling on that device, and the generation loop.
//
// Decoder holds a batch's InferenceState after prefill and advances it one token at a time.
// On CUDA the first step() records the whole per-token step — embedding, 24 x (norm, in_proj,
// conv step, x_proj, dt_proj, scan step, out_proj, residual), norm_f, lm_head — into a CUDA
// graph (ops/graph.h), after one eager warm-up on a copy of the state (it fills the caching
// allocator and starts cuBLAS, so the capture allocates nothing new); every later step()
// copies the ids into the graph's input tensor and replays it: one launch per token. The
// graph reads and writes fixed addresses, so the state's tensors must stay where prefill put
// them (Decoder owns them). If capture fails, graph_note() says why and steps run eagerly.
//
// generate_batch: every prompt is prefilled through the parallel path (together when their
// lengths are equal, else one by one, and the states stacked along the batch: Mamba has no
// attention mask, so padding would change the state), then all sequences decode together.
// Sampling runs where the logits are: on CUDA sample_tokens (ops/sampling.h) returns B ids
// and only those B ints come back to the host per token (the repetition penalty needs the
// context on the host: with it, the logits are copied back and nn::sample_next picks); on the
// CPU nn::sample_next (the double-precision spec). A sequence stops at one of `eos` (the EOS
// token is reported, then nothing more) or after max_new_tokens; finished rows keep being
// stepped (their output ignored) until every row is done.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"
#include "nn/inference.h"
#include "nn/sampling.h"

namespace mg {
class CapturedGraph;
}

namespace mg::nn {

class MambaLM;

class Decoder {
 public:
  // state: a prefilled batch (MambaLM::prefill) on the model's device. use_graph: capture the
  // step in a CUDA graph (ignored on the CPU).
  Decoder(const MambaLM& model, InferenceState state, bool use_graph = true);
  ~Decoder();
  // ids (B) i32 on the model's device, each in [0, V_pad) -> logits (B, V_pad) of the next
  // position. The returned tensor is overwritten by the next step().
  Tensor step(const Tensor& ids);
  int64_t batch() const { return state_.batch(); }
  const InferenceState& state() const { return state_; }
  bool graph_used() const;
  const std::string& graph_note() const { return note_; }  // why no graph ("" when used)

 private:
  const MambaLM& model_;
  InferenceState state_;
  bool use_graph_;
  Tensor ids_;     // (B) i32: the graph's input (fixed address)
  Tensor logits_;  // (B, V_pad): the graph's output
  std::unique_ptr<CapturedGraph> graph_;
  std::string note_;
};

// Prefill B prompts (each non-empty) into one batch state; returns the last position's logits
// (B, V_pad) and fills `state`.
Tensor prefill_batch(const MambaLM& model, const std::vector<std::vector<int32_t>>& prompts,
                     InferenceState& state);

struct BatchGeneration {
  std::vector<std::vector<int32_t>> tokens;  // per sequence, the prompt excluded (EOS included)
  int64_t prompt_tokens = 0;                 // all prompts together
  int64_t decode_steps = 0;                  // Decoder::step calls (batch-wide)
  double prefill_seconds = 0;                // the prompts through the parallel path
  double decode_seconds = 0;                 // sampling + steps after the prefill
  bool graph_used = false;
  std::string graph_note;
  int64_t generated() const;                 // total tokens over the sequences
};

struct BatchOptions {
  int64_t max_new_tokens = 256;
  SamplingOptions sampling;
  std::vector<int32_t> eos;   // stop tokens (empty: none)
  bool use_graph = true;
};

// Called with (sequence, token) as each token is chosen; return false to stop everything.
using BatchTokenCallback = std::function<bool(int64_t seq, int32_t token)>;

BatchGeneration generate_batch(const MambaLM& model,
                               const std::vector<std::vector<int32_t>>& prompts,
                               const BatchOptions& opts, Generator& gen,
                               const BatchTokenCallback& on_token = {});

}  // namespace mg::nn
