#include "nn/sampling.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <set>

#include "autograd/grad_mode.h"
#include "nn/mamba.h"

namespace mg::nn {

void SamplingOptions::validate() const {
  MG_CHECK(temperature >= 0 && std::isfinite(temperature),
           "sampling: temperature must be >= 0 (0 = greedy), got ", temperature);
  MG_CHECK(top_k >= 0, "sampling: top_k must be >= 0 (0 = off), got ", top_k);
  MG_CHECK(top_p > 0 && top_p <= 1, "sampling: top_p must be in (0, 1], got ", top_p);
  MG_CHECK(min_p >= 0 && min_p <= 1, "sampling: min_p must be in [0, 1], got ", min_p);
  MG_CHECK(repetition_penalty > 0 && std::isfinite(repetition_penalty),
           "sampling: repetition_penalty must be > 0 (1 = off), got ", repetition_penalty);
  MG_CHECK(vocab_limit >= 0, "sampling: vocab_limit must be >= 0, got ", vocab_limit);
}

static bool is_greedy(const SamplingOptions& o) { return o.temperature == 0 || o.top_k == 1; }

std::vector<std::pair<int32_t, double>> sampling_distribution(std::span<const float> logits,
                                                              const SamplingOptions& opts,
                                                              std::span<const int32_t> context) {
  opts.validate();
  int64_t V = (int64_t)logits.size();
  if (opts.vocab_limit > 0) V = std::min(V, opts.vocab_limit);
  MG_CHECK(V > 0, "sampling: empty logits");
  std::vector<double> l(logits.begin(), logits.begin() + V);

  if (opts.repetition_penalty != 1.0) {  // once per distinct token of the context
    std::set<int32_t> seen(context.begin(), context.end());
    for (int32_t t : seen)
      if (t >= 0 && t < V) l[t] = l[t] > 0 ? l[t] / opts.repetition_penalty : l[t] * opts.repetition_penalty;
  }
  if (is_greedy(opts)) {
    int32_t best = (int32_t)(std::max_element(l.begin(), l.end()) - l.begin());  // first max
    return {{best, 1.0}};
  }

  // Softmax at the temperature, in double, max-subtracted.
  const double m = *std::max_element(l.begin(), l.end());
  std::vector<double> p(V);
  for (int64_t i = 0; i < V; ++i) p[i] = std::exp((l[i] - m) / opts.temperature);
  std::vector<int32_t> order(V);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return p[a] > p[b]; });

  int64_t keep = V;
  if (opts.top_k > 0) keep = std::min<int64_t>(keep, opts.top_k);
  double total = 0;
  for (int64_t i = 0; i < keep; ++i) total += p[order[i]];
  if (opts.top_p < 1.0) {  // smallest prefix with mass >= top_p (of the top-k set)
    double cum = 0;
    int64_t n = 0;
    while (n < keep) {
      cum += p[order[n++]] / total;
      if (cum >= opts.top_p) break;
    }
    keep = n;
  }
  if (opts.min_p > 0) {  // p >= min_p * p_max; the ratio is unchanged by renormalising
    const double threshold = opts.min_p * p[order[0]];
    int64_t n = 1;
    while (n < keep && p[order[n]] >= threshold) ++n;
    keep = n;
  }
  double kept_mass = 0;
  for (int64_t i = 0; i < keep; ++i) kept_mass += p[order[i]];
  std::vector<std::pair<int32_t, double>> dist(keep);
  for (int64_t i = 0; i < keep; ++i) dist[i] = {order[i], p[order[i]] / kept_mass};
  return dist;
}

int32_t sample_next(std::span<const float> logits, const SamplingOptions& opts,
                    std::span<const int32_t> context, Generator& gen) {
  auto dist = sampling_distribution(logits, opts, context);
  if (dist.size() == 1) return dist[0].first;
  const double u = gen.next_uniform();
  double cum = 0;
  for (auto& [id, prob] : dist) {
    cum += prob;
    if (u < cum) return id;
  }
  return dist.back().first;  // rounding left u >= the final sum
}

int32_t sample_next(const Tensor& logits, const SamplingOptions& opts,
                    std::span<const int32_t> context, Generator& gen) {
  check_dim("sample_next", logits, 1, "logits");
  check_float("sample_next", logits, "logits");
  std::vector<float> row = logits.cast(DType::f32).to_vector<float>();
  return sample_next(std::span<const float>(row), opts, context, gen);
}

GenerateResult generate(const MambaLM& model, const std::vector<int32_t>& prompt,
                        int64_t max_new_tokens, const SamplingOptions& options, Generator& gen,
                        const TokenCallback& on_token) {
  using Clock = std::chrono::steady_clock;
  auto seconds = [](Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double>(b - a).count();
  };
  MG_CHECK(!prompt.empty(), "generate: the prompt is empty (it needs at least one token)");
  MG_CHECK(max_new_tokens >= 0, "generate: max_new_tokens must be >= 0, got ", max_new_tokens);
  SamplingOptions opts = options;
  if (opts.vocab_limit == 0) opts.vocab_limit = model.config().vocab_size;  // drop padding rows
  opts.validate();
  NoGradGuard no_grad;

  GenerateResult res;
  res.prompt_tokens = (int64_t)prompt.size();
  std::vector<int32_t> context = prompt;
  InferenceState state;
  auto t0 = Clock::now();
  Tensor ids = Tensor::from_vector(prompt, {1, (int64_t)prompt.size()});
  Tensor logits = model.prefill(ids, state, /*num_last_tokens=*/1);  // (1, 1, V_pad)
  logits = logits.view({logits.size(-1)});
  auto t1 = Clock::now();
  res.prefill_seconds = seconds(t0, t1);
  for (int64_t i = 0; i < max_new_tokens; ++i) {
    int32_t next = sample_next(logits, opts, context, gen);
    context.push_back(next);
    res.tokens.push_back(next);
    if (on_token && !on_token(next)) break;
    if (i + 1 == max_new_tokens) break;  // no step needed after the last token
    logits = model.step(Tensor::from_vector(std::vector<int32_t>{next}, {1}), state);
    logits = logits.view({logits.size(-1)});
  }
  res.decode_seconds = seconds(t1, Clock::now());
  return res;
}

}  // namespace mg::nn
