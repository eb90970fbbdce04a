// Mixed precision (Settings::precision = bf16; docs/mixed_precision.md), on the CPU, whose bf16
// ops are the exact emulation (widen, f32 kernel, round) and so the reference for the CUDA
// kernels: the bf16 linear against a hand computation, a small Mamba LM's loss and every
// parameter gradient against the f32 run, 300 training steps tracking the f32 loss curve,
// checkpoints crossing precisions, and bitwise resume in bf16.
#include <doctest/doctest.h>

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "autograd/tape.h"
#include "ops/arith.h"
#include "ops/conv1d.h"
#include "ops/convert.h"
#include "ops/matmul.h"
#include "ops/norm.h"
#include "ops/reduce.h"
#include "ops/selective_scan/selective_scan.h"
#include "ops/softmax.h"
#include "ops/unary.h"
#include "train/trainer.h"
#include "test_util.h"

using namespace mg;
namespace fs = std::filesystem;

namespace {

SettingsGuard precision(Precision p) { return SettingsGuard(test::settings_with(&Settings::precision, p)); }

double cosine(const Tensor& a, const Tensor& b) {
  std::vector<float> x = a.cast(DType::f32).to_vector<float>(), y = b.cast(DType::f32).to_vector<float>();
  double xy = 0, xx = 0, yy = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    xy += (double)x[i] * y[i];
    xx += (double)x[i] * x[i];
    yy += (double)y[i] * y[i];
  }
  return xx == 0 && yy == 0 ? 1.0 : xy / std::sqrt(xx * yy);
}

Tensor random_ids(int64_t B, int64_t L, int64_t V, uint64_t seed) {
  Generator g(seed);
  std::vector<int32_t> ids((size_t)(B * L));
  for (auto& v : ids) v = (int32_t)g.next_below((uint64_t)V);
  return Tensor::from_vector(ids, {B, L});
}

// Next-token loss and every parameter's gradient of `model` on `ids`.
std::pair<double, std::vector<Tensor>> loss_and_grads(nn::MambaLM& model, const Tensor& ids) {
  model.zero_grad();
  Tensor loss = model.loss(ids);
  backward(loss);
  std::vector<Tensor> grads;
  for (auto& p : model.named_parameters()) grads.push_back(p.tensor.grad());
  return {loss.item(), grads};
}

}  // namespace

TEST_CASE("mixed precision: linear rounds its operands and result to bf16; dW reaches the f32 weight") {
  Generator gen(3);
  Tensor x = Tensor::randn({3, 7}, DType::f32, &gen).requires_grad_();
  Tensor W = Tensor::randn({5, 7}, DType::f32, &gen).requires_grad_();
  Tensor y;
  {
    auto bf = precision(Precision::bf16);
    y = linear(x, W);
  }
  REQUIRE(y.dtype() == DType::bf16);
  // Hand reference: products of the rounded operands summed in double, rounded to bf16 (the
  // f32 accumulation may differ from double by an f32 rounding: at most one bf16 step).
  const std::vector<float> xv = x.to_vector<float>(), Wv = W.to_vector<float>();
  const std::vector<float> got = y.cast(DType::f32).to_vector<float>();
  int exact = 0;
  for (int r = 0; r < 3; ++r)
    for (int o = 0; o < 5; ++o) {
      double s = 0;
      for (int k = 0; k < 7; ++k) s += (double)round_to_bf16(xv[r * 7 + k]) * round_to_bf16(Wv[o * 7 + k]);
      const float want = round_to_bf16((float)s);
      CHECK(std::fabs(got[r * 5 + o] - want) <= std::fabs(want) * (1.0 / 128));
      exact += got[r * 5 + o] == want;
    }
  CHECK(exact >= 13);  // nearly all equal bit for bit
  // The f32 master weight gets an f32 gradient: dW = dy^T x with dy = 1, rounded to bf16.
  backward(sum(to(y, DType::f32)));
  REQUIRE(W.grad().defined());
  CHECK(W.grad().dtype() == DType::f32);
  CHECK(x.grad().dtype() == DType::f32);
  const std::vector<float> dW = W.grad().to_vector<float>();
  for (int o = 0; o < 5; ++o)
    for (int k = 0; k < 7; ++k) {
      double s = 0;
      for (int r = 0; r < 3; ++r) s += round_to_bf16(xv[r * 7 + k]);
      CHECK(std::fabs(dW[o * 7 + k] - s) <= std::fabs(s) * (1.0 / 128) + 1e-6);
    }
  // Under precision f32 (and for f64 under any precision) linear stays in its input dtype.
  CHECK(linear(x, W).dtype() == DType::f32);
  auto bf = precision(Precision::bf16);
  CHECK(linear(x.detach().cast(DType::f64), W.detach().cast(DType::f64)).dtype() == DType::f64);
}

TEST_CASE("mixed precision: ops given bf16 tensors compute on the widened values; which dtype comes out") {
  Generator gen(8);
  auto bf = [&](const Shape& s, double lo, double hi) {
    return Tensor::uniform(s, lo, hi, DType::f32, &gen).cast(DType::bf16);
  };
  auto wide = [](const Tensor& t) { return t.cast(DType::f32); };
  // The reference: the f32 op on the exact widenings, rounded once to bf16 (or kept f32).
  auto same_bits = [](const Tensor& a, const Tensor& b) {
    return a.dtype() == b.dtype() && a.nbytes() == b.nbytes() &&
           std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0;
  };
  const Tensor x = bf({2, 7, 6}, -3, 3), z = bf({2, 7, 6}, -3, 3), dt = bf({2, 7, 6}, -2, 1);
  const Tensor Bm = bf({2, 7, 4}, -1, 1), C = bf({2, 7, 4}, -1, 1);
  const Tensor w = Tensor::uniform({6, 1, 4}, -0.5, 0.5, DType::f32, &gen), b = Tensor::zeros({6});
  const Tensor A = Tensor::uniform({6, 4}, -2, -0.5, DType::f32, &gen), D = Tensor::ones({6});
  CHECK(same_bits(silu(x), silu(wide(x)).cast(DType::bf16)));
  {  // silu's backward: the f32 backward on the widened x and dy, rounded
    Tensor xs = x.detach().requires_grad_(), dy = bf({2, 7, 6}, -1, 1);
    backward(sum(to(silu(xs), DType::f32) * to(dy, DType::f32)));
    Tensor x32 = wide(x).requires_grad_();
    backward(sum(silu(x32) * wide(dy)));
    CHECK(same_bits(xs.grad(), x32.grad().cast(DType::bf16)));
  }
  CHECK(same_bits(causal_conv1d(x, w, b), causal_conv1d(wide(x), w, b).cast(DType::bf16)));
  CHECK(same_bits(x * z, (wide(x) * wide(z)).cast(DType::bf16)));
  CHECK(same_bits(x + Tensor::ones({2, 7, 6}), wide(x) + 1.0));  // bf16 + f32 -> f32
  {  // bf16 * f32 (broadcast): the f32 gradients, rounded for the bf16 operand
    Tensor xb = x.detach().requires_grad_();
    Tensor w16 = Tensor::uniform({6}, -2, 2, DType::f32, &gen).requires_grad_();
    Tensor y = xb * w16;
    CHECK(y.dtype() == DType::f32);
    backward(sum(y));
    Tensor x32 = wide(x).requires_grad_(), w32 = w16.detach().requires_grad_();
    backward(sum(x32 * w32));
    CHECK(same_bits(xb.grad(), x32.grad().cast(DType::bf16)));
    CHECK(same_bits(w16.grad(), w32.grad()));
  }
  const Tensor g = Tensor::ones({6});
  CHECK(same_bits(rms_norm(x, g), rms_norm(wide(x), g)));         // norms return f32
  const Tensor logits = bf({5, 9}, -4, 4), targets = Tensor::from_vector(std::vector<int32_t>{0, 3, 8, 1, 2}, {5});
  CHECK(same_bits(cross_entropy(logits, targets), cross_entropy(wide(logits), targets)));  // f32
  {  // its backward: the f32 dlogits on the widened logits, rounded to bf16
    Tensor l16 = logits.detach().requires_grad_(), l32 = wide(logits).requires_grad_();
    backward(cross_entropy(l16, targets));
    backward(cross_entropy(l32, targets));
    CHECK(same_bits(l16.grad(), l32.grad().cast(DType::bf16)));
  }
  const ScanResult s16 = selective_scan(x, dt, A, Bm, C, D, z, b, true);
  const ScanResult s32 = selective_scan(wide(x), wide(dt), A, wide(Bm), wide(C), D, wide(z), b, true);
  CHECK(same_bits(s16.y, s32.y.cast(DType::bf16)));  // y bf16
  CHECK(same_bits(s16.h_last, s32.h_last));          // the state f32
  // The scan's backward: the f32 gradients of the widened inputs, activations' rounded to bf16.
  const Tensor dy = bf({2, 7, 6}, -1, 1);
  std::vector<Tensor> leaves16{x.detach().requires_grad_(), dt.detach().requires_grad_(),
                               Bm.detach().requires_grad_(), C.detach().requires_grad_(),
                               z.detach().requires_grad_(), A.detach().requires_grad_()};
  std::vector<Tensor> leaves32;
  for (const Tensor& t : leaves16) leaves32.push_back(wide(t).detach().requires_grad_());
  auto [l16, l32] = std::pair{leaves16, leaves32};
  backward(sum(to(selective_scan(l16[0], l16[1], l16[5], l16[2], l16[3], D, l16[4], b, true).y,
                  DType::f32) * to(dy, DType::f32)));
  backward(sum(selective_scan(l32[0], l32[1], l32[5], l32[2], l32[3], D, l32[4], b, true).y * wide(dy)));
  for (int k = 0; k < 5; ++k) CHECK(same_bits(l16[k].grad(), l32[k].grad().cast(DType::bf16)));
  CHECK(same_bits(l16[5].grad(), l32[5].grad()));  // dA in f32
}

TEST_CASE("mixed precision: a small Mamba LM in bf16 against f32: loss within 1e-2, gradients' cosine >= 0.999") {
  nn::MambaConfig cfg = test::tiny_lm_config(/*V=*/48, /*N=*/8);
  cfg.d_model = 32;
  nn::MambaLM model(cfg, 11);
  const Tensor ids = random_ids(2, 24, 48, 5);
  auto [loss32, g32] = loss_and_grads(model, ids);
  auto [loss32_again, g32_again] = loss_and_grads(model, ids);
  CHECK(loss32_again == loss32);  // the f32 path does not depend on what ran before
  double loss16;
  std::vector<Tensor> g16;
  {
    auto bf = precision(Precision::bf16);
    std::tie(loss16, g16) = loss_and_grads(model, ids);
  }
  CHECK(loss16 != loss32);  // bf16 really ran
  CHECK(std::fabs(loss16 - loss32) <= 1e-2 * std::fabs(loss32));
  const auto params = model.named_parameters();
  double worst = 1;
  for (size_t i = 0; i < params.size(); ++i) {
    CAPTURE(params[i].name);
    REQUIRE(g16[i].defined());
    CHECK(g16[i].dtype() == DType::f32);  // master gradients stay f32
    const double c = cosine(g16[i], g32[i]);
    CHECK(c >= 0.999);
    worst = std::min(worst, c);
  }
  MESSAGE("loss f32 " << loss32 << ", bf16 " << loss16 << "; worst gradient cosine " << worst);
}

namespace {

// Sequences that follow a fixed random permutation cycle, each next token replaced by a random
// one with probability 1/4: learnable down to an entropy floor (~1.2 nats for V 16), so the
// final loss is a number the two precisions can be compared on.
struct CycleTask {
  Generator gen{17};
  std::vector<int32_t> next;
  explicit CycleTask(int64_t V) : next((size_t)V) {
    Generator g(99);
    std::vector<int32_t> perm((size_t)V);
    for (int64_t i = 0; i < V; ++i) perm[i] = (int32_t)i;
    for (int64_t i = V - 1; i > 0; --i) std::swap(perm[i], perm[g.next_below((uint64_t)i + 1)]);
    for (int64_t i = 0; i < V; ++i) next[perm[i]] = perm[(i + 1) % V];
  }
  train::TrainTask task() {
    train::TrainTask t;
    t.tokens_per_micro_batch = 4 * 15;
    t.micro_batch_loss = [this](const nn::MambaLM& m) {
      std::vector<int32_t> ids(4 * 16);
      for (int b = 0; b < 4; ++b) {
        ids[b * 16] = (int32_t)gen.next_below(next.size());
        for (int t = 1; t < 16; ++t)
          ids[b * 16 + t] = gen.next_below(4) == 0 ? (int32_t)gen.next_below(next.size())
                                                   : next[ids[b * 16 + t - 1]];
      }
      return m.loss(Tensor::from_vector(ids, {4, 16}));
    };
    t.save_state = [this] { return std::map<std::string, uint64_t>{{"seed", gen.seed()}, {"offset", gen.offset()}}; };
    t.load_state = [this](const std::map<std::string, uint64_t>& s) { gen.set_state(s.at("seed"), s.at("offset")); };
    return t;
  }
};

train::TrainConfig run_config(const std::string& dir, int64_t steps, int64_t planned = 0) {
  train::TrainConfig c;
  c.steps = steps;
  c.run_dir = dir;
  c.quiet = true;
  if (planned == 0) planned = steps;
  c.schedule = train::LrSchedule::parse("cosine", 1e-2, 1e-3, planned >= 100 ? 10 : 1, planned);
  return c;
}

std::string temp_dir(const char* name) {
  fs::path p = fs::temp_directory_path() / (std::string("mg_mixed_") + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  return p.string();
}

double mean_tail(const std::vector<double>& v, size_t n) {
  double s = 0;
  for (size_t i = v.size() - n; i < v.size(); ++i) s += v[i];
  return s / (double)n;
}

}  // namespace

TEST_CASE("mixed precision: 300 steps in bf16 track the f32 loss curve within 2% at the end") {
  const nn::MambaConfig cfg = test::tiny_lm_config(/*V=*/16, /*N=*/4);
  std::vector<double> curves[2];
  for (Precision p : {Precision::f32, Precision::bf16}) {
    auto guard = precision(p);
    nn::MambaLM model(cfg, 1);
    CycleTask data(16);
    auto task = data.task();
    curves[p == Precision::bf16] = train::train(model, run_config("", 300), task).losses;
  }
  REQUIRE(curves[0].size() == 300);
  REQUIRE(curves[1].size() == 300);
  const double end32 = mean_tail(curves[0], 20), end16 = mean_tail(curves[1], 20);
  MESSAGE("loss: start " << curves[0][0] << " / " << curves[1][0] << "; mean of the last 20 steps f32 "
          << end32 << ", bf16 " << end16);
  CHECK(end32 < 0.6 * curves[0][0]);  // it learned (uniform: ln 16 = 2.77; floor ~1.2)
  CHECK(std::fabs(end16 - end32) <= 0.02 * end32);
}

TEST_CASE("mixed precision: checkpoints cross precisions, and resume is bitwise in bf16") {
  const nn::MambaConfig cfg = test::tiny_lm_config(/*V=*/16, /*N=*/4);
  const int64_t N = 3;
  // Straight: 2N steps in bf16.
  std::vector<double> straight;
  nn::MambaLM a(cfg, 1);
  {
    auto bf = precision(Precision::bf16);
    CycleTask d(16);
    auto t = d.task();
    straight = train::train(a, run_config(temp_dir("straight"), 2 * N), t).losses;
  }
  // N steps in bf16, then a fresh model resumes in bf16: bitwise the straight run.
  const std::string dir = temp_dir("resumed");
  std::vector<double> joined;
  {
    auto bf = precision(Precision::bf16);
    nn::MambaLM first(cfg, 1);
    CycleTask d(16);
    auto t = d.task();
    joined = train::train(first, run_config(dir, N, 2 * N), t).losses;
    nn::MambaLM resumed(cfg, 999);
    CycleTask d2(16);
    auto t2 = d2.task();
    auto c = run_config(dir, 2 * N);
    c.resume = "latest";
    auto rest = train::train(resumed, c, t2).losses;
    joined.insert(joined.end(), rest.begin(), rest.end());
    const auto pa = a.named_parameters(), pb = resumed.named_parameters();
    for (size_t i = 0; i < pa.size(); ++i)
      CHECK(std::memcmp(pa[i].tensor.raw_data(), pb[i].tensor.raw_data(), pa[i].tensor.nbytes()) == 0);
  }
  REQUIRE(joined.size() == straight.size());
  for (size_t i = 0; i < joined.size(); ++i) CHECK(joined[i] == straight[i]);
  // The bf16 run's checkpoint (f32 master weights) resumes under f32 and continues; an f32
  // checkpoint resumes under bf16. Both keep every parameter f32 and learn on.
  int64_t at = 2 * N;
  for (Precision p : {Precision::f32, Precision::bf16}) {
    auto guard = precision(p);
    nn::MambaLM m(cfg, 5);
    CycleTask d(16);
    auto t = d.task();
    auto c = run_config(dir, at + 2, 2 * N);
    c.resume = "latest";
    auto r = train::train(m, c, t);
    CHECK(r.first_step == at);
    REQUIRE(r.losses.size() == 2);
    at += 2;
    for (auto& prm : m.named_parameters()) CHECK(prm.tensor.dtype() == DType::f32);
    CHECK(std::isfinite(r.losses.back()));
  }
  fs::remove_all(temp_dir("straight"));
  fs::remove_all(dir);
}
