// nn/sampling.h — choosing the next token from logits, and the generation loop.
//
// sample_next applies, in this order (the order of state-spaces' `sample` / HF's processors):
//   1. vocabulary limit: only ids < vocab_limit (drops the padding rows of V_pad)
//   2. repetition penalty (CTRL, Keskar et al. 2019): for every token already in the context,
//      logit /= penalty if logit > 0, logit *= penalty otherwise (penalty > 1 discourages)
//   3. greedy (temperature == 0 or top_k == 1): the argmax, lowest id on ties
//   4. logits /= temperature;  p = softmax(logits)
//   5. top-k: keep the k most probable
//   6. top-p (nucleus): keep the smallest prefix of the tokens sorted by probability whose
//      mass is >= top_p
//   7. min-p: keep tokens with p >= min_p * max p
//   8. draw from the renormalised kept set with one uniform number from the Generator
// Ties in the sort are broken by lower id, so everything is deterministic given the seed.
#pragma once
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"

namespace mg::nn {

class MambaLM;

struct SamplingOptions {
  double temperature = 1.0;        // 0 = greedy
  int64_t top_k = 0;               // 0 = off; 1 = greedy
  double top_p = 1.0;              // 1 = off
  double min_p = 0.0;              // 0 = off
  double repetition_penalty = 1.0; // 1 = off
  int64_t vocab_limit = 0;         // 0 = all logits; else only ids < vocab_limit
  void validate() const;           // throws mg::Error naming the bad option
};

// logits: one row of V values. `context`: the tokens the repetition penalty applies to.
int32_t sample_next(std::span<const float> logits, const SamplingOptions& opts,
                    std::span<const int32_t> context, Generator& gen);
// The same for a logits tensor of shape (V) (f32 or f64, CPU).
int32_t sample_next(const Tensor& logits, const SamplingOptions& opts,
                    std::span<const int32_t> context, Generator& gen);

// The kept set after steps 1-7 as (id, probability) sorted by probability, renormalised.
// Exposed for tests; sample_next draws from it.
std::vector<std::pair<int32_t, double>> sampling_distribution(std::span<const float> logits,
                                                              const SamplingOptions& opts,
                                                              std::span<const int32_t> context);

struct GenerateResult {
  std::vector<int32_t> tokens;   // the generated tokens (the prompt excluded)
  int64_t prompt_tokens = 0;
  double prefill_seconds = 0;    // the prompt through the parallel path
  double decode_seconds = 0;     // every step after it (sampling included)
};

// Called with each new token as soon as it is chosen; return false to stop early.
using TokenCallback = std::function<bool(int32_t token)>;

// Batch-1 generation: prefill the prompt (non-empty), then sample and step max_new_tokens
// times. The repetition penalty sees the prompt and the generated tokens.
GenerateResult generate(const MambaLM& model, const std::vector<int32_t>& prompt,
                        int64_t max_new_tokens, const SamplingOptions& opts, Generator& gen,
                        const TokenCallback& on_token = {});

}  // namespace mg::nn
