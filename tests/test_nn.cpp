// nn: parameter names and shapes, parameter counts, initialisation, state dicts, config
// metadata, the loss against a naive loop, and a finite-difference check of the whole model.
#include <doctest/doctest.h>

#include <cmath>
#include <set>

#include "autograd/gradcheck.h"
#include "autograd/tape.h"
#include "nn/init.h"
#include "nn/mamba.h"
#include "ops/shape.h"
#include "test_util.h"

using namespace mg;
using namespace mg::nn;

namespace {

// V 50 (padded to 56), N 4: ED 32, R 1, K 4.
MambaConfig small_config() { return test::tiny_lm_config(/*V=*/50, /*N=*/4); }

Tensor random_ids(const Shape& shape, int32_t V, uint64_t seed) {
  Generator g(seed);
  std::vector<int32_t> v(shape_numel(shape));
  for (auto& x : v) x = (int32_t)g.next_below(V);
  return Tensor::from_vector(v, shape);
}

double max_abs(const Tensor& t) {
  double m = 0;
  for (double v : t.cast(DType::f64).to_vector<double>()) m = std::max(m, std::abs(v));
  return m;
}

}  // namespace

TEST_CASE("nn: Mamba parameter names and shapes follow Hugging Face MambaForCausalLM") {
  MambaLM model(small_config(), 1);
  std::vector<std::pair<std::string, Shape>> want = {{"backbone.embeddings.weight", {56, 16}}};
  for (int i = 0; i < 2; ++i) {
    std::string p = "backbone.layers." + std::to_string(i) + ".";
    want.push_back({p + "norm.weight", {16}});
    want.push_back({p + "mixer.in_proj.weight", {64, 16}});
    want.push_back({p + "mixer.conv1d.weight", {32, 1, 4}});
    want.push_back({p + "mixer.conv1d.bias", {32}});
    want.push_back({p + "mixer.x_proj.weight", {1 + 2 * 4, 32}});
    want.push_back({p + "mixer.dt_proj.weight", {32, 1}});
    want.push_back({p + "mixer.dt_proj.bias", {32}});
    want.push_back({p + "mixer.A_log", {32, 4}});
    want.push_back({p + "mixer.D", {32}});
    want.push_back({p + "mixer.out_proj.weight", {16, 32}});
  }
  want.push_back({"backbone.norm_f.weight", {16}});
  auto got = model.named_parameters();
  REQUIRE(got.size() == want.size());
  int64_t total = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    CHECK(got[i].name == want[i].first);
    CHECK(shape_str(got[i].tensor.shape()) == shape_str(want[i].second));
    CHECK(got[i].tensor.requires_grad());
    CHECK(got[i].tensor.is_leaf());
    total += shape_numel(want[i].second);
  }
  CHECK(model.num_parameters() == total);
  CHECK(model.parameter("backbone.layers.1.mixer.D").same(model.layers[1].mixer.D));
  CHECK_THROWS_AS(model.parameter("backbone.layers.9.mixer.D"), Error);

  // Roles: no weight decay on A_log, D, biases, norms; custom init on dt bias, A_log, D, out_proj.
  std::set<std::string> no_decay, custom;
  for (auto& p : got) {
    if (!p.info.weight_decay) no_decay.insert(p.name);
    if (p.info.custom_init) custom.insert(p.name);
  }
  CHECK(no_decay.count("backbone.layers.0.mixer.A_log"));
  CHECK(no_decay.count("backbone.layers.0.mixer.D"));
  CHECK(no_decay.count("backbone.layers.0.mixer.conv1d.bias"));
  CHECK(no_decay.count("backbone.layers.0.mixer.dt_proj.bias"));
  CHECK(no_decay.count("backbone.layers.0.norm.weight"));
  CHECK(no_decay.count("backbone.norm_f.weight"));
  CHECK(no_decay.size() == 2 * 5 + 1);
  CHECK(custom == std::set<std::string>{
                      "backbone.layers.0.mixer.dt_proj.bias", "backbone.layers.0.mixer.A_log",
                      "backbone.layers.0.mixer.D", "backbone.layers.0.mixer.out_proj.weight",
                      "backbone.layers.1.mixer.dt_proj.bias", "backbone.layers.1.mixer.A_log",
                      "backbone.layers.1.mixer.D", "backbone.layers.1.mixer.out_proj.weight"});

  MambaConfig untied = small_config();
  untied.tie_embeddings = false;
  MambaLM m2(untied, 1);
  CHECK(m2.named_parameters().back().name == "lm_head.weight");
  CHECK(m2.num_parameters() == total + 56 * 16);
}

TEST_CASE("nn: mamba-130m has 129,135,360 parameters (vocab 50277 padded to 50280)") {
  MambaConfig c;  // the defaults are mamba-130m: d_model 768, 24 layers, vocab 50277
  CHECK(c.padded_vocab() == 50280);
  CHECK(c.d_inner() == 1536);
  CHECK(c.rank() == 48);
  MambaLM model(c, 0);
  CHECK(model.num_parameters() == 129135360);
  // By hand (mamba-reference.md 1.2): per layer 2ED D + ED K + ED + ED(R+2N) + R ED + ED
  // + ED N + ED + D ED + D; plus V_pad D + D.
  const int64_t D = 768, ED = 1536, R = 48, N = 16, K = 4;
  int64_t per_layer = 2 * ED * D + ED * K + ED + ED * (R + 2 * N) + R * ED + ED + ED * N + ED +
                      D * ED + D;
  CHECK(per_layer == 3771648);
  CHECK(24 * per_layer + 50280 * D + D == 129135360);
}

TEST_CASE("nn: Mamba initialisation follows the reference (dt, A_log, D, bounds, std)") {
  MambaConfig c;
  c.d_model = 64;
  c.n_layer = 4;
  c.vocab_size = 1000;
  MambaLM model(c, 7);
  const int64_t ED = 128, N = 16, R = 4;
  REQUIRE(c.rank() == R);
  for (const MambaBlock& layer : model.layers) {
    const MambaMixer& m = layer.mixer;
    // delta at init: softplus(bias) log-uniform in [dt_min, dt_max].
    double sum_log = 0, lo = 1, hi = 0;
    for (float b : m.dt_proj.bias.to_vector<float>()) {
      double dt = std::log1p(std::exp((double)b));
      lo = std::min(lo, dt);
      hi = std::max(hi, dt);
      sum_log += std::log(dt);
    }
    CHECK(lo >= 1e-3 * (1 - 1e-5));
    CHECK(hi <= 1e-1 * (1 + 1e-5));
    CHECK(lo < 3e-3);  // spread over the range, not a constant
    CHECK(hi > 3e-2);
    CHECK(sum_log / ED == doctest::Approx((std::log(1e-3) + std::log(1e-1)) / 2).epsilon(0.1));
    auto a = m.A_log.to_vector<float>();
    for (int64_t d = 0; d < ED; ++d)
      for (int64_t n = 0; n < N; ++n) REQUIRE(a[d * N + n] == (float)std::log((double)n + 1));
    for (float v : m.D.to_vector<float>()) REQUIRE(v == 1.0f);
    for (float v : layer.norm.weight.to_vector<float>()) REQUIRE(v == 1.0f);
    // Uniform bounds: max |w| within the bound and close to it (many draws).
    auto check_bound = [](const Tensor& w, double bound) {
      double m = max_abs(w);
      CHECK(m <= bound);
      CHECK(m > 0.9 * bound);
    };
    check_bound(m.in_proj.weight, 1 / std::sqrt(64.0));
    check_bound(m.x_proj.weight, 1 / std::sqrt(128.0));
    check_bound(m.dt_proj.weight, 1 / std::sqrt(4.0));
    check_bound(m.conv1d.weight, 0.5);
    check_bound(m.conv1d.bias, 0.5);
    check_bound(m.out_proj.weight, 1 / std::sqrt(128.0) / std::sqrt(4.0));
  }
  for (float v : model.norm_f.weight.to_vector<float>()) REQUIRE(v == 1.0f);
  auto e = model.embeddings.weight.to_vector<float>();  // 1000 * 64 values ~ N(0, 0.02^2)
  double mean = 0, sq = 0;
  for (float v : e) mean += v;
  mean /= e.size();
  for (float v : e) sq += (v - mean) * (v - mean);
  CHECK(std::abs(mean) < 1e-3);
  CHECK(std::sqrt(sq / e.size()) == doctest::Approx(0.02).epsilon(0.02));

  // Seeded: same seed, same model; another seed, another model.
  MambaLM same(c, 7), other(c, 8);
  CHECK(same.embeddings.weight.to_vector<float>() == e);
  CHECK(other.embeddings.weight.to_vector<float>() != e);
  CHECK(inverse_softplus(std::log1p(std::exp(0.01))) == doctest::Approx(0.01).epsilon(1e-12));
}

TEST_CASE("nn: load_state_dict copies values in place and lists every problem at once") {
  MambaLM a(small_config(), 1), b(small_config(), 2);
  Tensor b_emb = b.embeddings.weight;
  b.load_state_dict(a.state_dict());
  CHECK(b.embeddings.weight.same(b_emb));  // same handle (an optimizer's view stays valid)
  for (auto& p : a.named_parameters())
    CHECK(b.parameter(p.name).to_vector<float>() == p.tensor.to_vector<float>());

  // state-spaces names: "embedding" (singular) and a tied lm_head copy are accepted.
  MambaLM c(small_config(), 3);
  auto ss = a.state_dict();
  ss["backbone.embedding.weight"] = ss["backbone.embeddings.weight"];
  ss.erase("backbone.embeddings.weight");
  ss["lm_head.weight"] = ss["backbone.embedding.weight"];
  c.load_state_dict(ss);
  CHECK(c.embeddings.weight.to_vector<float>() == a.embeddings.weight.to_vector<float>());

  // f64 values load into an f32 model (converted).
  auto f64 = a.state_dict();
  for (auto& [k, t] : f64) t = t.cast(DType::f64);
  MambaLM d(small_config(), 4);
  d.load_state_dict(f64);
  CHECK(d.norm_f.weight.to_vector<float>() == a.norm_f.weight.to_vector<float>());

  auto bad = a.state_dict();
  bad.erase("backbone.layers.1.mixer.D");
  bad.erase("backbone.norm_f.weight");
  bad["backbone.layers.7.mixer.D"] = Tensor::zeros({32});
  bad["backbone.layers.0.mixer.A_log"] = Tensor::zeros({32, 5});
  std::vector<float> before = d.layers[0].mixer.A_log.to_vector<float>();
  std::string msg;
  try {
    d.load_state_dict(bad);
  } catch (const Error& e) {
    msg = e.what();
  }
  CHECK(msg.find("2 missing") != std::string::npos);
  CHECK(msg.find("backbone.layers.1.mixer.D") != std::string::npos);
  CHECK(msg.find("backbone.norm_f.weight") != std::string::npos);
  CHECK(msg.find("1 unexpected") != std::string::npos);
  CHECK(msg.find("backbone.layers.7.mixer.D") != std::string::npos);
  CHECK(msg.find("1 mis-shaped") != std::string::npos);
  CHECK(msg.find("backbone.layers.0.mixer.A_log (expected (32, 4), file has (32, 5))") !=
        std::string::npos);
  CHECK(d.layers[0].mixer.A_log.to_vector<float>() == before);  // nothing was modified

  // Non-strict ignores missing/unexpected names but never a wrong shape.
  bad.erase("backbone.layers.0.mixer.A_log");
  CHECK_NOTHROW(d.load_state_dict(bad, /*strict=*/false));
  bad["backbone.layers.0.mixer.A_log"] = Tensor::zeros({32, 5});
  CHECK_THROWS_AS(d.load_state_dict(bad, false), Error);
}

TEST_CASE("nn: Module conversion to f64 and zero_grad") {
  MambaLM m(small_config(), 1);
  auto before = m.layers[0].mixer.in_proj.weight.to_vector<float>();
  m.to(DType::f64);
  for (auto& p : m.named_parameters()) {
    CHECK(p.tensor.dtype() == DType::f64);
    CHECK(p.tensor.requires_grad());
  }
  auto after = m.layers[0].mixer.in_proj.weight.to_vector<double>();
  for (size_t i = 0; i < before.size(); ++i) REQUIRE(after[i] == (double)before[i]);
  backward(m.loss(random_ids({1, 6}, 50, 3)));
  CHECK(m.layers[1].mixer.A_log.grad().defined());
  m.zero_grad();
  for (auto& p : m.named_parameters()) CHECK_FALSE(p.tensor.grad().defined());
}

TEST_CASE("nn: MambaConfig metadata round-trips and rejects bad values by key") {
  MambaConfig c = small_config();
  c.dt_rank = 3;
  c.tie_embeddings = false;
  c.eps = 1e-6;
  auto meta = c.to_metadata();
  CHECK(meta.at("d_model") == "16");
  CHECK(meta.at("eps") == "1e-06");
  MambaConfig r = MambaConfig::from_metadata(meta);
  CHECK(r.to_metadata() == meta);
  CHECK(r.rank() == 3);
  CHECK_FALSE(r.tie_embeddings);
  meta["extra.training_step"] = "100";  // unknown keys are ignored
  CHECK_NOTHROW(MambaConfig::from_metadata(meta));
  meta["d_state"] = "16x";
  CHECK_THROWS_WITH_AS(MambaConfig::from_metadata(meta), doctest::Contains("'d_state'"), Error);
  meta.erase("d_state");
  meta.erase("n_layer");
  CHECK_THROWS_WITH_AS(MambaConfig::from_metadata(meta), doctest::Contains("'n_layer'"), Error);
}

TEST_CASE("nn: MambaLM loss is the mean next-token cross-entropy (naive loop)") {
  MambaLM m(small_config(), 5);
  Tensor ids = random_ids({2, 7}, 50, 11);
  Tensor logits = m.forward(ids);
  REQUIRE(shape_str(logits.shape()) == "(2, 7, 56)");
  auto lg = logits.to_vector<float>();
  auto id = ids.to_vector<int32_t>();
  double total = 0;
  for (int b = 0; b < 2; ++b)
    for (int t = 0; t + 1 < 7; ++t) {
      const float* row = &lg[(b * 7 + t) * 56];
      double mx = *std::max_element(row, row + 56), s = 0;
      for (int v = 0; v < 56; ++v) s += std::exp(row[v] - mx);
      total += -(row[id[b * 7 + t + 1]] - mx - std::log(s));
    }
  CHECK(m.loss(ids).item() == doctest::Approx(total / 12).epsilon(1e-5));
  // At init the logits are small: the loss is close to ln V_pad.
  CHECK(std::abs(total / 12 - std::log(56.0)) < 0.1);

  // Masked targets: only positions whose target != -100 count.
  std::vector<int32_t> tg(14, -100);
  tg[3] = 9;
  tg[12] = 0;
  LMOutput out = m.forward(ids, Tensor::from_vector(tg, {2, 7}));
  auto nll = [&](int pos, int target) {
    const float* row = &lg[pos * 56];
    double mx = *std::max_element(row, row + 56), s = 0;
    for (int v = 0; v < 56; ++v) s += std::exp(row[v] - mx);
    return -(row[target] - mx - std::log(s));
  };
  CHECK(out.loss.item() == doctest::Approx((nll(3, 9) + nll(12, 0)) / 2).epsilon(1e-5));

  // Bad ids: a clear model-level error.
  Tensor bad = Tensor::from_vector(std::vector<int32_t>{1, 2, 56}, {1, 3});
  CHECK_THROWS_WITH_AS(m.forward(bad), doctest::Contains("token id 56 at (b 0, t 2)"), Error);
  CHECK_THROWS_AS(m.forward(Tensor::zeros({1, 3})), Error);           // f32 ids
  CHECK_THROWS_AS(m.forward(Tensor::arange(0, 3, DType::i32)), Error);  // (L) not (B, L)
  CHECK_THROWS_AS(m.loss(random_ids({2, 1}, 50, 1)), Error);          // L = 1: nothing to predict
}

TEST_CASE("nn: gradcheck (f64) of a tiny Mamba LM's loss w.r.t. its parameters") {
  MambaConfig c;
  c.d_model = 8;
  c.n_layer = 2;
  c.vocab_size = 11;  // -> 16
  c.d_state = 4;
  MambaLM m(c, 3);
  m.to(DType::f64);
  // Move the parameters away from their special init values (D = 1, norms = 1) so every
  // term of the gradient is exercised.
  Generator g(5);
  for (auto& p : m.named_parameters()) {
    Tensor noise = Tensor::uniform(p.tensor.shape(), -0.2, 0.2, DType::f64, &g);
    double* x = p.tensor.data<double>();
    const double* n = noise.data<double>();
    for (int64_t i = 0; i < p.tensor.numel(); ++i) x[i] += n[i];
  }
  Tensor ids = random_ids({2, 5}, 11, 9);
  std::vector<std::string> names = {
      "backbone.embeddings.weight",           "backbone.layers.0.norm.weight",
      "backbone.layers.0.mixer.in_proj.weight", "backbone.layers.0.mixer.conv1d.weight",
      "backbone.layers.0.mixer.conv1d.bias",  "backbone.layers.0.mixer.x_proj.weight",
      "backbone.layers.1.mixer.dt_proj.weight", "backbone.layers.1.mixer.dt_proj.bias",
      "backbone.layers.1.mixer.A_log",        "backbone.layers.1.mixer.D",
      "backbone.layers.1.mixer.out_proj.weight", "backbone.norm_f.weight"};
  std::vector<Tensor> inputs;
  for (auto& n : names) inputs.push_back(m.parameter(n));
  // The model runs on gradcheck's own (perturbed) copies of the parameters.
  auto fn = [&](const std::vector<Tensor>& xs) {
    for (size_t k = 0; k < names.size(); ++k) m.set_parameter(names[k], xs[k]);
    return m.loss(ids);
  };
  GradcheckResult r = gradcheck(fn, inputs);
  INFO(r.report());
  CHECK(r.ok);
  CHECK(r.elements_checked > 500);
}
