// Generation on the GPU against the CPU: the per-token CUDA twins (causal_conv1d_step,
// causal_conv1d_state, selective_scan_step), sampling on the device, the step captured in a
// CUDA graph, and step-vs-parallel parity of a model on the GPU. Without a visible GPU every
// case reports itself skipped (these are compiled in CI, run where a GPU is).
#ifdef MG_WITH_CUDA
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "autograd/grad_mode.h"
#include "cuda/runtime.h"
#include "nn/decoder.h"
#include "nn/mamba.h"
#include "nn/sampling.h"
#include "ops/arith.h"
#include "ops/conv1d.h"
#include "ops/graph.h"
#include "ops/sampling.h"
#include "ops/selective_scan/selective_scan.h"
#include "ops/shape.h"
#include "test_util.h"

using namespace mg;
using namespace mg::nn;

namespace {

const Device kGpu = Device::cuda(0);

// max |got - want| / max(1e-30, max |want|); either may live on the GPU.
double rel_err(const Tensor& got, const Tensor& want) {
  std::vector<float> g = got.to_vector<float>(), w = want.to_vector<float>();
  REQUIRE(g.size() == w.size());
  double diff = 0, scale = 1e-30;
  for (size_t i = 0; i < g.size(); ++i) {
    diff = std::max(diff, std::abs((double)g[i] - (double)w[i]));
    scale = std::max(scale, std::abs((double)w[i]));
  }
  return diff / scale;
}

MambaConfig small_config() {
  MambaConfig c;
  c.d_model = 64;
  c.n_layer = 3;
  c.vocab_size = 100;  // V_pad 104
  return c;
}

}  // namespace

TEST_CASE("cuda causal_conv1d_step and causal_conv1d_state equal their CPU twins") {
  MG_SKIP_WITHOUT_GPU();
  NoGradGuard no_grad;
  for (int64_t K : {1, 2, 4}) {
    for (int64_t C : {1, 7, 33, 1536}) {
      CAPTURE(K); CAPTURE(C);
      const int64_t B = 3, L = 5;
      Generator g(K * 100 + C);
      Tensor x = Tensor::randn({B, L, C}, DType::f32, &g);
      Tensor w = Tensor::randn({C, 1, K}, DType::f32, &g), bias = Tensor::randn({C}, DType::f32, &g);
      Tensor win_h = causal_conv1d_state(x, K), win_d = causal_conv1d_state(x.copy_to(kGpu), K);
      CHECK(win_d.to_vector<float>() == win_h.to_vector<float>());  // a copy: exact
      Tensor wd = w.copy_to(kGpu), bd = bias.copy_to(kGpu);
      for (int t = 0; t < 3; ++t) {
        Tensor xt = Tensor::randn({B, C}, DType::f32, &g);
        for (bool with_bias : {true, false}) {
          Tensor wh2 = win_h.clone(), wd2 = win_d.clone();
          Tensor yh = causal_conv1d_step(xt, w, with_bias ? bias : Tensor(), wh2);
          Tensor yd = causal_conv1d_step(xt.copy_to(kGpu), wd, with_bias ? bd : Tensor(), wd2);
          CHECK(yd.to_vector<float>() == yh.to_vector<float>());  // same roundings, no FMA
          CHECK(wd2.to_vector<float>() == wh2.to_vector<float>());
        }
        causal_conv1d_step(xt, w, bias, win_h);
        causal_conv1d_step(xt.copy_to(kGpu), wd, bd, win_d);
      }
    }
  }
}

TEST_CASE("cuda selective_scan_step equals the CPU step, every optional input") {
  MG_SKIP_WITHOUT_GPU();
  NoGradGuard no_grad;
  for (int64_t N : {1, 5, 16, 33}) {
    for (int mask = 0; mask < 16; ++mask) {  // D, z, delta_bias, softplus
      const bool has_D = mask & 1, has_z = mask & 2, has_bias = mask & 4, softplus = mask & 8;
      CAPTURE(N); CAPTURE(mask);
      const int64_t B = 2, ED = 37;
      Generator g(7 * N + mask);
      Tensor A = -Tensor::uniform({ED, N}, 0.5, 4.0, DType::f32, &g);
      Tensor D = has_D ? Tensor::randn({ED}, DType::f32, &g) : Tensor();
      Tensor bias = has_bias ? Tensor::uniform({ED}, -4.0, -1.0, DType::f32, &g) : Tensor();
      Tensor sh = Tensor::randn({B, ED, N}, DType::f32, &g), sd = sh.copy_to(kGpu);
      auto gpu = [&](const Tensor& t) { return t.defined() ? t.copy_to(kGpu) : Tensor(); };
      for (int t = 0; t < 4; ++t) {
        Tensor u = Tensor::randn({B, ED}, DType::f32, &g);
        Tensor delta = softplus ? Tensor::randn({B, ED}, DType::f32, &g) * 0.5
                                : Tensor::uniform({B, ED}, 0.001, 0.5, DType::f32, &g);
        Tensor Bm = Tensor::randn({B, N}, DType::f32, &g), C = Tensor::randn({B, N}, DType::f32, &g);
        Tensor z = has_z ? Tensor::randn({B, ED}, DType::f32, &g) : Tensor();
        Tensor yh = selective_scan_step(u, delta, A, Bm, C, D, z, bias, softplus, sh);
        Tensor yd = selective_scan_step(gpu(u), gpu(delta), gpu(A), gpu(Bm), gpu(C), gpu(D),
                                        gpu(z), gpu(bias), softplus, sd);
        CHECK(rel_err(yd, yh) < 1e-5);
        CHECK(rel_err(sd, sh) < 1e-5);
      }
    }
  }
}

TEST_CASE("cuda sample_tokens picks what the CPU spec gives: greedy, top-k, top-p, min-p") {
  // The expected token of a uniform u is read off nn::sampling_distribution (the double CPU
  // spec): u at the middle of a kept token's bucket must select that token. Only buckets wider
  // than 1e-4 are probed, so the f32 rounding of expf and of the sums (~1e-7) cannot move u
  // across a boundary.
  MG_SKIP_WITHOUT_GPU();
  const int64_t B = 4, Vp = 50280, V = 50277;
  Generator g(3);
  Tensor logits = Tensor::randn({B, Vp}, DType::f32, &g) * 3.0;
  const std::vector<float> l = logits.to_vector<float>();
  Tensor ld = logits.copy_to(kGpu);
  struct Opt { double T; int64_t k; double p, minp; };
  int probed = 0;
  for (Opt o : {Opt{1, 0, 1, 0}, Opt{0.8, 40, 1, 0}, Opt{1, 0, 0.9, 0}, Opt{0.7, 100, 0.5, 0.05},
                Opt{1.5, 0, 1, 0.01}}) {
    SamplingOptions so;
    so.temperature = o.T, so.top_k = o.k, so.top_p = o.p, so.min_p = o.minp, so.vocab_limit = V;
    SampleParams sp{.temperature = (float)o.T, .top_k = o.k, .top_p = (float)o.p,
                    .min_p = (float)o.minp, .vocab_limit = V};
    for (int64_t b = 0; b < B; ++b) {
      auto dist = sampling_distribution(std::span<const float>(l.data() + b * Vp, Vp), so, {});
      double cum = 0;
      int in_row = 0;
      for (auto [id, prob] : dist) {
        const double mid = cum + prob / 2;
        cum += prob;
        if (prob < 1e-4 || in_row >= 12) continue;
        ++in_row;
        std::vector<float> u(B, 0.5f);
        u[b] = (float)mid;
        Tensor ids = sample_tokens(ld, sp, Tensor::from_vector(u, {B}).copy_to(kGpu));
        CAPTURE(o.T); CAPTURE(o.k); CAPTURE(o.p); CAPTURE(o.minp); CAPTURE(b); CAPTURE(mid);
        CHECK(ids.device().is_cuda());
        CHECK(ids.to_vector<int32_t>()[b] == id);
        ++probed;
      }
    }
  }
  CHECK(probed > 100);
  // Greedy: the first maximum among ids < V.
  std::vector<int32_t> ids = sample_tokens(ld, SampleParams{.temperature = 0, .vocab_limit = V},
                                           Tensor()).to_vector<int32_t>();
  for (int64_t b = 0; b < B; ++b) {
    auto best = std::max_element(l.begin() + b * Vp, l.begin() + b * Vp + V);
    CHECK(ids[b] == (int32_t)(best - (l.begin() + b * Vp)));
  }
}

TEST_CASE("cuda step-vs-parallel parity: prefill + steps on the GPU == the parallel forward") {
  MG_SKIP_WITHOUT_GPU();
  NoGradGuard no_grad;
  MambaLM cpu_model(small_config(), 11);
  MambaLM gpu_model(small_config(), 11);
  gpu_model.to(kGpu);
  const int64_t B = 2, L = 21, t0 = 6;
  Generator g(1);
  std::vector<int32_t> v(B * L);
  for (auto& x : v) x = (int32_t)g.next_below(100);
  Tensor ids = Tensor::from_vector(v, {B, L});
  Tensor full_cpu = cpu_model.forward(ids);                 // (B, L, V_pad)
  Tensor full_gpu = gpu_model.forward(ids.copy_to(kGpu));
  CHECK(rel_err(full_gpu, full_cpu) < 1e-4);
  InferenceState st;
  Tensor pre = gpu_model.prefill(slice(ids, 1, 0, t0).copy_to(kGpu), st);
  CHECK(rel_err(pre, slice(full_gpu, 1, 0, t0)) < 1e-5);
  for (int64_t s = t0; s < L; ++s) {
    Tensor tok = reshape(slice(ids, 1, s, s + 1), {B}).copy_to(kGpu);
    Tensor logits = gpu_model.step(tok, st);  // (B, V_pad)
    CAPTURE(s);
    CHECK(rel_err(logits, reshape(slice(full_gpu, 1, s, s + 1), {B, 104})) < 1e-5);
    CHECK(rel_err(logits, reshape(slice(full_cpu, 1, s, s + 1), {B, 104})) < 1e-4);
  }
}

TEST_CASE("cuda Decoder: the graph-captured step equals the eager step, token after token") {
  MG_SKIP_WITHOUT_GPU();
  NoGradGuard no_grad;
  MambaLM m(small_config(), 12);
  m.to(kGpu);
  const std::vector<std::vector<int32_t>> prompts = {{1, 2, 3, 4}, {5, 6, 7, 8}, {9, 10, 11, 12}};
  InferenceState s1, s2;
  prefill_batch(m, prompts, s1);
  prefill_batch(m, prompts, s2);
  Decoder graph(m, std::move(s1), /*use_graph=*/true), eager(m, std::move(s2), false);
  for (int t = 0; t < 6; ++t) {
    Tensor ids = Tensor::from_vector(std::vector<int32_t>{t, 2 * t + 1, 99 - t}, {3}).copy_to(kGpu);
    Tensor a = graph.step(ids).clone(), b = eager.step(ids);
    CAPTURE(t);
    CHECK(a.to_vector<float>() == b.to_vector<float>());  // the same kernels on the same data
  }
  INFO(graph.graph_note());
  CHECK(graph.graph_used());
  CHECK_FALSE(eager.graph_used());
}

TEST_CASE("cuda CapturedGraph replays its kernels; a host sync in the capture falls back to eager") {
  MG_SKIP_WITHOUT_GPU();
  NoGradGuard no_grad;
  Tensor x = Tensor::from_vector<float>({1, 2, 3}, {3}).copy_to(kGpu);
  Tensor acc = Tensor::zeros({3}, DType::f32, kGpu);
  Tensor out;
  {
    CapturedGraph g(kGpu, [&] { out = acc + x; });  // out = acc + x at a fixed address
    REQUIRE(g.captured());
    g.replay();
    CHECK(out.to_vector<float>() == std::vector<float>{1, 2, 3});
    acc.copy_values_from(Tensor::from_vector<float>({10, 20, 30}, {3}));
    g.replay();  // reads acc's new values
    CHECK(out.to_vector<float>() == std::vector<float>{11, 22, 33});
  }
  int calls = 0;
  CapturedGraph bad(kGpu, [&] { ++calls; (void)(acc + x).item(); });  // item(): a D2H sync
  CHECK_FALSE(bad.captured());
  CHECK(bad.why_not() != "");
  bad.replay();  // runs eagerly, and the stream works again
  CHECK(calls == 2);
  CHECK((acc + x).to_vector<float>() == std::vector<float>{11, 22, 33});
}

TEST_CASE("cuda generate_batch: greedy ids follow the parallel forward's argmax chain") {
  // Each generated id must be the argmax of the CPU parallel forward over the sequence so far,
  // up to f32 rounding (its logit within 1e-4 x max |logit| of the maximum): the GPU path's
  // numbers differ from the CPU's in the last bits, so an exact near-tie could go either way.
  MG_SKIP_WITHOUT_GPU();
  MambaLM cpu_model(small_config(), 13), gpu_model(small_config(), 13);
  gpu_model.to(kGpu);
  const std::vector<std::vector<int32_t>> prompts = {{4, 8, 15, 16, 23, 42}, {1, 1, 2}};
  BatchOptions o;
  o.max_new_tokens = 10;
  o.sampling.temperature = 0;
  Generator g1(0), g2(0);
  BatchGeneration a = generate_batch(cpu_model, prompts, o, g1);
  BatchGeneration b = generate_batch(gpu_model, prompts, o, g2);
  INFO(b.graph_note);
  CHECK(b.graph_used);
  for (size_t s = 0; s < prompts.size(); ++s) {
    REQUIRE(b.tokens[s].size() == 10);
    std::vector<int32_t> seq = prompts[s];
    for (int32_t t : b.tokens[s]) {
      const int64_t L = (int64_t)seq.size();
      std::vector<float> last =
          slice(cpu_model.forward(Tensor::from_vector(seq, {1, L})), 1, L - 1, L).to_vector<float>();
      const float best = *std::max_element(last.begin(), last.begin() + 100);
      float scale = 0;
      for (int v = 0; v < 100; ++v) scale = std::max(scale, std::abs(last[v]));
      CHECK(last[t] >= best - 1e-4f * scale);
      seq.push_back(t);
    }
    WARN(a.tokens[s] == b.tokens[s]);  // expected, barring an exact near-tie
  }
}

#endif  // MG_WITH_CUDA
