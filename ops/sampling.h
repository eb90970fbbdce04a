// ops/sampling.h — one token per row of logits, chosen on the logits' device (decoding on the
// GPU sends one int per sequence back to the host per token, not a row of V logits).
//
// Per row of logits l (V_pad values; only ids < vocab_limit count), in this order (the order
// of nn/sampling.h's sample_next, which is the double-precision CPU spec with the repetition
// penalty on top):
//   greedy (temperature == 0 or top_k == 1): the argmax, lowest id on ties. Otherwise:
//   order   = the ids sorted by logit, descending, ties by lower id (a stable sort)
//   p_i     = exp((l_i - max l) / temperature)          (f32; p of the first is exactly 1)
//   keep    = min(V, top_k)                             (top_k 0: all)
//   top-p:  keep = the smallest n <= keep with  sum_{j<n} p_order[j] >= top_p * sum_{j<keep} p
//   min-p:  keep = min(keep, #{p >= min_p})             (at least 1; p_max = 1)
//   draw:   the first i < keep with  u * sum_{j<keep} p < sum_{j<=i} p   (u in [0, 1) given)
// Sums in double. The sort is by logit, not by p, so the order is exact on every device; the
// CPU and CUDA kernels differ only in the rounding of exp and of the sums (a draw can differ
// only when u falls within rounding of a bucket boundary).
//
// Greedy needs no uniforms (pass an undefined tensor).
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace mg {

struct SampleParams {
  float temperature = 1.f;   // 0 = greedy
  int64_t top_k = 0;         // 0 = off; 1 = greedy
  float top_p = 1.f;         // 1 = off; in (0, 1]
  float min_p = 0.f;         // 0 = off; in [0, 1]
  int64_t vocab_limit = 0;   // 0 = every column; else only ids < vocab_limit
  bool greedy() const { return temperature == 0.f || top_k == 1; }
  void validate() const;     // throws mg::Error naming the bad field
};

namespace cpu {
// logits (B, V_pad); uniforms (B) (unused when greedy; may be null then); out (B) ids.
void sample_rows(const float* logits, const float* uniforms, int32_t* out, int64_t B,
                 int64_t V_pad, const SampleParams& p);
}  // namespace cpu

// The CUDA twin (cuda/sampling.cu): device pointers, enqueued on the stream (no host sync).
namespace cuda {
void sample_rows(const float* logits, const float* uniforms, int32_t* out, int64_t B,
                 int64_t V_pad, const SampleParams& p);
}  // namespace cuda

// logits (B, V_pad) f32, uniforms (B) f32 on the same device (undefined when greedy)
// -> ids (B) i32 on that device. Inference only (records nothing).
Tensor sample_tokens(const Tensor& logits, const SampleParams& p, const Tensor& uniforms);

}  // namespace mg
