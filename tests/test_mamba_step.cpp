// Recurrent inference (prefill + step) against the parallel forward; sampling; generation;
// the byte tokenizer.
#include <doctest/doctest.h>

#include <cmath>
#include <map>

#include "autograd/grad_mode.h"
#include "data/byte_tokenizer.h"
#include "nn/mamba.h"
#include "nn/sampling.h"
#include "ops/convert.h"
#include "ops/arith.h"
#include "ops/conv1d.h"
#include "ops/selective_scan/selective_scan.h"
#include "ops/shape.h"
#include "test_util.h"

using namespace mg;
using namespace mg::nn;

namespace {

MambaConfig step_config() {
  MambaConfig c;
  c.d_model = 32;
  c.n_layer = 2;
  c.vocab_size = 50;  // -> 56
  return c;           // ED 64, N 16, R 2, K 4
}

Tensor random_ids(const Shape& shape, int32_t V, uint64_t seed) {
  Generator g(seed);
  std::vector<int32_t> v(shape_numel(shape));
  for (auto& x : v) x = (int32_t)g.next_below(V);
  return Tensor::from_vector(v, shape);
}

// max |a - b| / max |b| of two same-shaped tensors.
double rel_error(const Tensor& a, const Tensor& b) {
  auto x = to(a, DType::f64).to_vector<double>(), y = to(b, DType::f64).to_vector<double>();
  REQUIRE(x.size() == y.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    num = std::max(num, std::abs(x[i] - y[i]));
    den = std::max(den, std::abs(y[i]));
  }
  return num / den;
}

// Prefill the first t tokens, then step through the rest; compare every position's logits
// with the parallel forward. Returns the worst relative error.
double prefill_then_step_error(const MambaLM& m, const Tensor& ids, int64_t t) {
  const int64_t B = ids.size(0), L = ids.size(1), V = m.config().padded_vocab();
  Tensor full = m.forward(ids);  // (B, L, V)
  InferenceState state;
  Tensor pre = m.prefill(slice(ids, 1, 0, t), state);
  CHECK(state.seqlen == t);
  double worst = rel_error(pre, slice(full, 1, 0, t));
  for (int64_t s = t; s < L; ++s) {
    Tensor tok = reshape(slice(ids, 1, s, s + 1), {B});
    Tensor logits = m.step(tok, state);  // (B, V)
    REQUIRE(shape_str(logits.shape()) == shape_str({B, V}));
    worst = std::max(worst, rel_error(logits, reshape(slice(full, 1, s, s + 1), {B, V})));
  }
  CHECK(state.seqlen == L);
  return worst;
}

}  // namespace

TEST_CASE("mamba step: prefill + step-by-step decoding equals the parallel forward (f32)") {
  MambaLM m(step_config(), 21);
  Tensor ids = random_ids({2, 37}, 50, 4);
  for (int64_t t : {1, 3, 36}) {
    double err = prefill_then_step_error(m, ids, t);
    INFO("prompt length " << t << ": relative error " << err);
    CHECK(err < 1e-5);
  }
}

TEST_CASE("mamba step: the same in f64 to near machine precision") {
  MambaLM m(step_config(), 22);
  m.to(DType::f64);
  Tensor ids = random_ids({1, 37}, 50, 5);
  for (int64_t t : {1, 3, 36}) CHECK(prefill_then_step_error(m, ids, t) < 1e-12);
}

TEST_CASE("mamba step: under bf16 precision, decoding follows the parallel forward (f32 logits)") {
  SettingsGuard bf(test::settings_with(&Settings::precision, Precision::bf16));
  MambaLM m(step_config(), 23);
  Tensor ids = random_ids({2, 20}, 50, 6);
  CHECK(m.forward(ids).dtype() == DType::f32);
  for (int64_t t : {1, 19}) {
    double err = prefill_then_step_error(m, ids, t);
    INFO("prompt length " << t << ": relative error " << err);
    CHECK(err < 3e-2);  // the same bf16 roundings; sums in another order may flip a last bit
  }
}

TEST_CASE("mamba step: prefill state layout and num_last_tokens") {
  // conv_state holds the last K raw inputs, newest at K-1, zero padded in front when L < K.
  Tensor x = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {1, 3, 2});  // (B, L, ED)
  Tensor s = causal_conv1d_state(x, 4);                             // (B, ED, K)
  CHECK(s.to_vector<float>() == std::vector<float>{0, 1, 3, 5, 0, 2, 4, 6});
  CHECK(causal_conv1d_state(x, 2).to_vector<float>() == std::vector<float>{3, 5, 4, 6});

  MambaLM m(step_config(), 23);
  Tensor ids = random_ids({2, 9}, 50, 6);
  InferenceState st;
  Tensor last = m.prefill(ids, st, 1);
  CHECK(shape_str(last.shape()) == "(2, 1, 56)");
  CHECK(rel_error(last, slice(m.forward(ids), 1, 8, 9)) < 1e-6);
  REQUIRE(st.layers.size() == 2);
  CHECK(shape_str(st.layers[0].conv_state.shape()) == "(2, 64, 4)");
  CHECK(shape_str(st.layers[0].ssm_state.shape()) == "(2, 64, 16)");
  CHECK_FALSE(st.layers[1].ssm_state.requires_grad());
  // Errors: wrong batch, out-of-range id.
  CHECK_THROWS_AS(m.step(Tensor::from_vector(std::vector<int32_t>{1}, {1}), st), Error);
  CHECK_THROWS_WITH_AS(m.step(Tensor::from_vector(std::vector<int32_t>{1, 70}, {2}), st),
                       doctest::Contains("token id 70"), Error);
  InferenceState fresh = m.new_state(2);
  CHECK(fresh.layers.size() == 2);
  CHECK(shape_str(m.step(Tensor::from_vector(std::vector<int32_t>{1, 2}, {2}), fresh).shape()) ==
        "(2, 56)");
}

// ---- the per-token kernels against their parallel forms ------------------------------------
// Every value in double (exact for f32): == compares the bits up to the sign of zero.
std::vector<double> values(const Tensor& t) { return to(t, DType::f64).to_vector<double>(); }

TEST_CASE("selective_scan_step: token by token == the parallel scan, every optional input") {
  // Against the N-specialised f32 kernel (N 16: the model's case) the step gives the same bits;
  // against the generic kernel (f32 N 5, f64 N 4) it may differ by an ulp where D is given
  // (the generic kernel rounds D u before adding <C_t, h>; the step fuses them, as GCC does in
  // the N-specialised kernel). ED 19: a padded lane block in the parallel kernels.
  struct Case { DType dt; int64_t N; bool bitwise; double tol; };
  int checked = 0;
  for (Case c : {Case{DType::f32, 16, true, 0}, Case{DType::f32, 5, false, 1e-6},
                 Case{DType::f64, 4, false, 1e-14}}) {
    for (int mask = 0; mask < 32; ++mask) {  // D, z, delta_bias, h0, softplus
      const bool has_D = mask & 1, has_z = mask & 2, has_bias = mask & 4, has_h0 = mask & 8;
      const bool softplus = mask & 16;
      CAPTURE(c.N); CAPTURE(mask);
      const int64_t B = 2, L = 7, ED = 19, N = c.N;
      Generator g(100 + mask);
      Tensor u = Tensor::randn({B, L, ED}, c.dt, &g);
      Tensor delta = softplus ? Tensor::randn({B, L, ED}, c.dt, &g) * 0.5
                              : Tensor::uniform({B, L, ED}, 0.001, 0.5, c.dt, &g);
      Tensor A = -Tensor::uniform({ED, N}, 0.5, 4.0, c.dt, &g);
      Tensor Bm = Tensor::randn({B, L, N}, c.dt, &g), C = Tensor::randn({B, L, N}, c.dt, &g);
      Tensor D = has_D ? Tensor::randn({ED}, c.dt, &g) : Tensor();
      Tensor z = has_z ? Tensor::randn({B, L, ED}, c.dt, &g) : Tensor();
      Tensor bias;  // softplus(bias) in Mamba's dt range; without softplus delta + bias > 0
      if (has_bias) bias = softplus ? Tensor::uniform({ED}, -4.0, -1.0, c.dt, &g)
                                    : Tensor::uniform({ED}, 0.0, 0.1, c.dt, &g);
      Tensor h0 = has_h0 ? Tensor::randn({B, ED, N}, c.dt, &g) : Tensor();
      ScanResult whole = selective_scan(u, delta, A, Bm, C, D, z, bias, softplus, h0);
      Tensor state = has_h0 ? h0.clone() : Tensor::zeros({B, ED, N}, c.dt);
      auto at = [&](const Tensor& x, int64_t t) {  // (B, L, X) -> step t's (B, X)
        return x.defined() ? reshape(slice(x, 1, t, t + 1), {B, x.size(2)}) : Tensor();
      };
      auto same = [&](const Tensor& got, const Tensor& want) {
        return c.bitwise ? values(got) == values(want) : rel_error(got, want) < c.tol;
      };
      for (int64_t t = 0; t < L; ++t) {
        Tensor y = selective_scan_step(at(u, t), at(delta, t), A, at(Bm, t), at(C, t), D, at(z, t),
                                       bias, softplus, state);
        CHECK(same(y, at(whole.y, t)));
      }
      CHECK(same(state, whole.h_last));
      ++checked;
    }
  }
  CHECK(checked == 96);
  Tensor u = Tensor::zeros({2, 3}), A = Tensor::zeros({3, 4}), BC = Tensor::zeros({2, 4});
  CHECK_THROWS_WITH_AS(
      selective_scan_step(u, u, A, BC, BC, {}, {}, {}, true, Tensor::zeros({2, 3, 5})),
      doctest::Contains("selective_scan_step"), Error);
  // No backward: a step that would need one says so instead of cutting the graph silently.
  Tensor A_leaf = A.clone().requires_grad_();
  CHECK_THROWS_WITH_AS(
      selective_scan_step(u, u, A_leaf, BC, BC, {}, {}, {}, true, Tensor::zeros({2, 3, 4})),
      doctest::Contains("inference only"), Error);
  {
    NoGradGuard no_grad;
    CHECK(selective_scan_step(u, u, A_leaf, BC, BC, {}, {}, {}, true, Tensor::zeros({2, 3, 4}))
              .defined());
  }
}

TEST_CASE("causal_conv1d_step: token by token == causal_conv1d, with and without bias") {
  // The same K products in the same order; the compiler may fuse the parallel form's
  // multiply-adds differently, so the outputs agree to rounding, the window exactly.
  for (DType dt : {DType::f32, DType::f64})
    for (int64_t K : {1, 4})
      for (bool with_bias : {false, true}) {
        CAPTURE(K); CAPTURE(with_bias);
        const int64_t B = 2, L = 6, C = 5;
        const double tol = dt == DType::f32 ? 1e-6 : 1e-15;
        Generator g(7 + K);
        Tensor x = Tensor::randn({B, L, C}, dt, &g), w = Tensor::randn({C, 1, K}, dt, &g);
        Tensor bias = with_bias ? Tensor::randn({C}, dt, &g) : Tensor();
        Tensor y = causal_conv1d(x, w, bias);                       // (B, L, C)
        Tensor window = causal_conv1d_state(slice(x, 1, 0, 2), K);  // after a prefix of 2
        for (int64_t t = 2; t < L; ++t) {
          Tensor yt = causal_conv1d_step(reshape(slice(x, 1, t, t + 1), {B, C}), w, bias, window);
          CHECK(rel_error(yt, reshape(slice(y, 1, t, t + 1), {B, C})) < tol);
        }
        CHECK(values(window) == values(causal_conv1d_state(x, K)));
      }
  Tensor w = Tensor::ones({3, 1, 2}).requires_grad_(), window = Tensor::zeros({1, 3, 2});
  CHECK_THROWS_WITH_AS(causal_conv1d_step(Tensor::ones({1, 3}), w, {}, window),
                       doctest::Contains("causal_conv1d_step: inference only"), Error);
}

// ---- sampling ------------------------------------------------------------------------------
TEST_CASE("sampling: greedy is the argmax; top_k = 1 is greedy") {
  std::vector<float> logits = {0.1f, 2.5f, -1.0f, 2.4f, 0.0f};
  Generator g(1);
  SamplingOptions greedy;
  greedy.temperature = 0;
  CHECK(sample_next(logits, greedy, {}, g) == 1);
  SamplingOptions k1;
  k1.top_k = 1;
  k1.temperature = 5.0;
  for (int i = 0; i < 20; ++i) CHECK(sample_next(logits, k1, {}, g) == 1);
  // vocab_limit hides padded ids.
  greedy.vocab_limit = 1;
  CHECK(sample_next(logits, greedy, {}, g) == 0);
  greedy.temperature = -1;
  CHECK_THROWS_AS(sample_next(logits, greedy, {}, g), Error);
}

TEST_CASE("sampling: seeded draws are deterministic and follow the probabilities") {
  std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
  SamplingOptions o;
  Generator a(42), b(42), c(43);
  std::vector<int32_t> sa, sb, sc;
  for (int i = 0; i < 50; ++i) {
    sa.push_back(sample_next(logits, o, {}, a));
    sb.push_back(sample_next(logits, o, {}, b));
    sc.push_back(sample_next(logits, o, {}, c));
  }
  CHECK(sa == sb);
  CHECK(sa != sc);
  std::map<int32_t, int> count;
  Generator g(7);
  const int n = 20000;
  for (int i = 0; i < n; ++i) count[sample_next(logits, o, {}, g)]++;
  CHECK(count[0] / (double)n == doctest::Approx(0.5).epsilon(0.04));
  CHECK(count[3] / (double)n == doctest::Approx(0.05).epsilon(0.15));
}

TEST_CASE("sampling: top-p keeps the smallest set with mass >= p; min-p and top-k cut") {
  std::vector<float> logits = {std::log(0.15f), std::log(0.5f), std::log(0.05f), std::log(0.3f)};
  auto kept = [&](SamplingOptions o) {
    std::vector<int32_t> ids;
    for (auto& [id, p] : sampling_distribution(logits, o, {})) ids.push_back(id);
    return ids;
  };
  SamplingOptions o;
  o.top_p = 0.45;
  CHECK(kept(o) == std::vector<int32_t>{1});
  o.top_p = 0.75;
  CHECK(kept(o) == std::vector<int32_t>{1, 3});
  o.top_p = 0.85;
  CHECK(kept(o) == std::vector<int32_t>{1, 3, 0});
  o.top_p = 1.0;
  CHECK(kept(o) == std::vector<int32_t>{1, 3, 0, 2});
  auto dist = sampling_distribution(logits, SamplingOptions{.top_p = 0.75}, {});
  CHECK(dist[0].second == doctest::Approx(0.5 / 0.8));  // renormalised
  SamplingOptions mp;
  mp.min_p = 0.25;  // keep p >= 0.125
  CHECK(kept(mp) == std::vector<int32_t>{1, 3, 0});
  SamplingOptions tk;
  tk.top_k = 2;
  CHECK(kept(tk) == std::vector<int32_t>{1, 3});
  // Temperature sharpens: p ~ p0^(1/T).
  SamplingOptions t;
  t.temperature = 0.5;
  auto d = sampling_distribution(logits, t, {});
  double z = 0.25 + 0.09 + 0.0225 + 0.0025;
  CHECK(d[0].second == doctest::Approx(0.25 / z).epsilon(1e-5));
}

TEST_CASE("sampling: the repetition penalty divides positive and multiplies negative logits") {
  std::vector<float> logits = {2.0f, 1.5f, -1.0f, 0.0f};
  std::vector<int32_t> context = {0, 2, 0};  // token 0 twice: penalised once
  SamplingOptions o;
  o.repetition_penalty = 2.0;
  auto d = sampling_distribution(logits, o, context);  // logits become {1, 1.5, -2, 0}
  double z = std::exp(1.0) + std::exp(1.5) + std::exp(-2.0) + 1.0;
  std::map<int32_t, double> p(d.begin(), d.end());
  CHECK(p[0] == doctest::Approx(std::exp(1.0) / z));
  CHECK(p[1] == doctest::Approx(std::exp(1.5) / z));
  CHECK(p[2] == doctest::Approx(std::exp(-2.0) / z));
  Generator g(0);
  o.temperature = 0;
  CHECK(sample_next(logits, o, context, g) == 1);     // penalised: 1.5 now wins
  CHECK(sample_next(logits, o, {}, g) == 0);          // no context: 2.0 wins
}

TEST_CASE("generate: greedy generation continues the argmax of the parallel forward") {
  MambaLM m(step_config(), 31);
  std::vector<int32_t> prompt = {3, 14, 15, 9, 26};
  SamplingOptions greedy;
  greedy.temperature = 0;
  Generator g(0);
  std::vector<int32_t> streamed;
  GenerateResult r = generate(m, prompt, 8, greedy, g, [&](int32_t t) {
    streamed.push_back(t);
    return true;
  });
  REQUIRE(r.tokens.size() == 8);
  CHECK(streamed == r.tokens);
  CHECK(r.prompt_tokens == 5);
  // Each generated token is the argmax (over the real vocabulary) of the full forward.
  std::vector<int32_t> seq = prompt;
  for (int32_t tok : r.tokens) {
    Tensor logits = m.forward(Tensor::from_vector(seq, {1, (int64_t)seq.size()}));
    auto lg = logits.to_vector<float>();
    const float* last = &lg[(seq.size() - 1) * 56];
    int32_t best = (int32_t)(std::max_element(last, last + 50) - last);
    CHECK(tok == best);
    seq.push_back(tok);
  }
  // The callback can stop early.
  GenerateResult r2 = generate(m, prompt, 8, greedy, g, [](int32_t) { return false; });
  CHECK(r2.tokens.size() == 1);
  CHECK_THROWS_AS(generate(m, {}, 4, greedy, g), Error);
}

TEST_CASE("byte tokenizer: bytes round-trip; ids >= 256 decode to U+FFFD") {
  data::ByteTokenizer tok;
  std::string text = "Mamba \xC3\xA9t\xC3\xA9\n\x01";
  auto ids = tok.encode(text);
  CHECK(ids.size() == text.size());
  CHECK(ids[6] == 0xC3);
  CHECK(tok.decode(ids) == text);
  std::vector<int32_t> odd = {72, 300, 105, -1};
  CHECK(tok.decode(odd) == "H\xEF\xBF\xBDi\xEF\xBF\xBD");
}
