// Batched decoding (nn/decoder.h) and sampling on the logits' device (ops/sampling.h), on the
// CPU; their CUDA twins are tested in test_cuda_decode.cpp.
//   - sample_tokens' CPU kernel against nn::sampling_distribution (the double-precision spec):
//     for every option combination, a uniform at the middle of each kept token's bucket picks
//     that token;
//   - Decoder steps == MambaLM::step; a ragged batch's stacked prefill == each prompt alone;
//   - generate_batch under greedy decoding == the parallel forward's argmax chain.
#include <doctest/doctest.h>

#include <cmath>

#include "autograd/grad_mode.h"
#include "nn/decoder.h"
#include "nn/mamba.h"
#include "ops/arith.h"
#include "ops/convert.h"
#include "ops/graph.h"
#include "ops/sampling.h"
#include "ops/shape.h"

using namespace mg;
using namespace mg::nn;

namespace {

MambaConfig small_config() {
  MambaConfig c;
  c.d_model = 32;
  c.n_layer = 2;
  c.vocab_size = 50;  // V_pad 56
  return c;
}

// The parallel forward's greedy chain: each next id = argmax over ids < V of the last logits.
std::vector<int32_t> argmax_chain(const MambaLM& m, std::vector<int32_t> seq, int64_t n) {
  std::vector<int32_t> out;
  const int64_t V = m.config().vocab_size, Vp = m.config().padded_vocab();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t L = (int64_t)seq.size();
    Tensor logits = m.forward(Tensor::from_vector(seq, {1, L}));  // (1, L, V_pad)
    std::vector<float> last = slice(logits, 1, L - 1, L).to_vector<float>();
    REQUIRE((int64_t)last.size() == Vp);
    const int32_t best = (int32_t)(std::max_element(last.begin(), last.begin() + V) - last.begin());
    out.push_back(best);
    seq.push_back(best);
  }
  return out;
}

// Row b of a (B, V) tensor has the values of one (1, V) tensor, to f32 rounding: a GEMM of B
// rows may add in another order than one of 1 row (max |diff| / max |value| < 1e-5).
bool test_equal_rows(const Tensor& all, int64_t b, const Tensor& row) {
  std::vector<float> x = slice(all, 0, b, b + 1).to_vector<float>(), y = row.to_vector<float>();
  if (x.size() != y.size()) return false;
  double diff = 0, scale = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    diff = std::max(diff, std::abs((double)x[i] - y[i]));
    scale = std::max(scale, std::abs((double)y[i]));
  }
  return diff <= 1e-5 * scale;
}

}  // namespace

TEST_CASE("sample_tokens (CPU kernel) picks what nn::sampling_distribution gives") {
  const int64_t B = 3, Vp = 40, V = 37;
  Generator g(5);
  Tensor logits = Tensor::randn({B, Vp}, DType::f32, &g) * 2.0;
  std::vector<float> l = logits.to_vector<float>();
  l[1 * Vp + 4] = l[1 * Vp + 9] = 9.f;  // a tie for the max in row 1: the lower id first
  logits = Tensor::from_vector(l, {B, Vp});
  struct Opt { float T; int64_t k; float p, minp; };
  int checked = 0;
  for (Opt o : {Opt{1, 0, 1, 0}, Opt{0.7f, 5, 1, 0}, Opt{1.3f, 0, 0.8f, 0}, Opt{1, 10, 0.5f, 0},
                Opt{1, 0, 1, 0.05f}, Opt{0.5f, 7, 0.9f, 0.01f}}) {
    SamplingOptions so;
    so.temperature = o.T, so.top_k = o.k, so.top_p = o.p, so.min_p = o.minp, so.vocab_limit = V;
    SampleParams sp{.temperature = o.T, .top_k = o.k, .top_p = o.p, .min_p = o.minp,
                    .vocab_limit = V};
    for (int64_t b = 0; b < B; ++b) {
      auto dist = sampling_distribution(std::span<const float>(l.data() + b * Vp, Vp), so, {});
      double cum = 0;
      for (auto [id, prob] : dist) {  // the middle of this token's bucket selects it
        std::vector<float> u(B, 0.f);
        u[b] = (float)(cum + prob / 2);
        cum += prob;
        Tensor ids = sample_tokens(logits, sp, Tensor::from_vector(u, {B}));
        CAPTURE(o.T); CAPTURE(o.k); CAPTURE(o.p); CAPTURE(o.minp); CAPTURE(b);
        CHECK(ids.to_vector<int32_t>()[b] == id);
        ++checked;
      }
    }
  }
  CHECK(checked > 40);
  // Greedy: the first maximum among ids < V, no uniforms needed.
  SampleParams greedy{.temperature = 0, .vocab_limit = V};
  std::vector<int32_t> ids = sample_tokens(logits, greedy, Tensor()).to_vector<int32_t>();
  CHECK(ids[1] == 4);
  for (int64_t b = 0; b < B; ++b) {
    auto best = std::max_element(l.begin() + b * Vp, l.begin() + b * Vp + V);
    CHECK(ids[b] == (int32_t)(best - (l.begin() + b * Vp)));
  }
  CHECK_THROWS_WITH_AS(sample_tokens(logits, SampleParams{}, Tensor()),
                       doctest::Contains("needs uniforms"), Error);
  CHECK_THROWS_WITH_AS(sample_tokens(logits, SampleParams{.top_p = 0}, Tensor()),
                       doctest::Contains("top_p"), Error);
}

TEST_CASE("Decoder: steps equal MambaLM::step; a ragged batch equals each prompt alone") {
  MambaLM m(small_config(), 3);
  NoGradGuard no_grad;
  const std::vector<std::vector<int32_t>> prompts = {{1, 2, 3, 4, 5}, {7}, {9, 8, 7}};
  InferenceState batch_state;
  Tensor first = prefill_batch(m, prompts, batch_state);  // (3, V_pad)
  REQUIRE(shape_str(first.shape()) == "(3, 56)");
  Decoder dec(m, std::move(batch_state));
  CHECK_FALSE(dec.graph_used());
  std::vector<InferenceState> alone(3);
  std::vector<Tensor> alone_logits;
  for (int b = 0; b < 3; ++b) {
    const int64_t L = (int64_t)prompts[b].size();
    alone_logits.push_back(
        reshape(m.prefill(Tensor::from_vector(prompts[b], {1, L}), alone[b], 1), {1, 56}));
    CHECK(test_equal_rows(first, b, alone_logits[b]));
  }
  for (int step = 0; step < 4; ++step) {
    std::vector<int32_t> tok = {(int32_t)(3 + step), (int32_t)(11 * step % 50), 49};
    Tensor logits = dec.step(Tensor::from_vector(tok, {3}));
    for (int b = 0; b < 3; ++b) {
      Tensor want = m.step(Tensor::from_vector(std::vector<int32_t>{tok[b]}, {1}), alone[b]);
      CHECK(test_equal_rows(logits, b, want));
    }
  }
  CHECK_THROWS_WITH_AS(dec.step(Tensor::from_vector(std::vector<int32_t>{1, 2, 60}, {3})),
                       doctest::Contains("token id 60"), Error);
}

TEST_CASE("generate_batch: greedy ids equal the parallel forward's argmax chain, stop at EOS") {
  MambaLM m(small_config(), 4);
  const std::vector<std::vector<int32_t>> prompts = {{3, 1, 4, 1, 5}, {9, 2, 6}};
  BatchOptions opts;
  opts.max_new_tokens = 12;
  opts.sampling.temperature = 0;
  Generator gen(0);
  std::vector<std::vector<int32_t>> streamed(2);
  BatchGeneration r = generate_batch(m, prompts, opts, gen, [&](int64_t b, int32_t t) {
    streamed[b].push_back(t);
    return true;
  });
  for (int b = 0; b < 2; ++b) {
    CHECK(r.tokens[b] == argmax_chain(m, prompts[b], 12));
    CHECK(streamed[b] == r.tokens[b]);
  }
  CHECK(r.prompt_tokens == 8);
  CHECK(r.decode_steps == 11);
  // EOS: the first sequence's 4th token ends it (reported, then nothing more).
  opts.eos = {r.tokens[0][3]};
  Generator gen2(0);
  BatchGeneration stopped = generate_batch(m, prompts, opts, gen2);
  const auto first_eos = std::find(r.tokens[0].begin(), r.tokens[0].end(), opts.eos[0]);
  CHECK(stopped.tokens[0] == std::vector<int32_t>(r.tokens[0].begin(), first_eos + 1));
  // Sampling is reproducible from the seed.
  opts.eos.clear();
  opts.sampling.temperature = 1.0;
  opts.sampling.top_p = 0.9;
  Generator a(7), b(7);
  CHECK(generate_batch(m, prompts, opts, a).tokens == generate_batch(m, prompts, opts, b).tokens);
}

TEST_CASE("CapturedGraph on the CPU captures nothing and replays by calling the function") {
  int calls = 0;
  CapturedGraph g(Device::cpu(), [&] { ++calls; });
  CHECK_FALSE(g.captured());
  CHECK(calls == 0);
  g.replay();
  g.replay();
  CHECK(calls == 2);
}
