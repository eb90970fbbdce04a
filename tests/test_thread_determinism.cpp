// Every CPU result is bitwise independent of the thread count (core/parallel.h's promise):
// the loss and every parameter gradient of a small Mamba LM, and 20 AdamW training steps, at
// 1, 2 and 3 OpenMP threads. The gradient's shapes are chosen so that every threaded path runs
// threaded: the GEMMs are split into several tiles (ops/matmul.cpp), the scan has several
// (batch, channel-group) tasks, and the elementwise ops exceed their grain. The training run
// adds clipping and AdamW (whose larger tensors exceed the grain) on a smaller batch.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "test_util.h"
#include "autograd/tape.h"
#include "core/rng.h"
#include "ops/matmul.h"
#include "train/trainer.h"

using namespace mg;

namespace {

nn::MambaConfig det_config() {
  nn::MambaConfig c;
  c.d_model = 96;  // ED = 192: two scan channel groups of 128 (one ragged)
  c.n_layer = 2;
  c.vocab_size = 200;
  c.d_state = 8;
  return c;
}

Tensor det_tokens(uint64_t seed, int64_t B, int64_t L) {
  Generator g(seed);
  std::vector<int32_t> ids(B * L);
  for (auto& v : ids) v = (int32_t)g.next_below(200);
  return Tensor::from_vector(ids, {B, L});
}

// The raw bytes of every named tensor, concatenated in a fixed order.
std::vector<std::vector<char>> snapshot(const std::vector<Tensor>& ts) {
  std::vector<std::vector<char>> out;
  for (const Tensor& t : ts) {
    const char* p = static_cast<const char*>(t.raw_data());
    out.emplace_back(p, p + t.nbytes());
  }
  return out;
}

// Loss and every parameter gradient after one forward + backward.
std::vector<std::vector<char>> loss_and_grads() {
  tape().clear();
  nn::MambaLM model(det_config(), 5);
  Tensor loss = model.loss(det_tokens(11, 4, 65));  // (B, L + 1) = (4, 65)
  backward(loss);
  std::vector<Tensor> ts{loss.detach()};
  for (auto& p : model.named_parameters()) ts.push_back(p.tensor.grad());
  return snapshot(ts);
}

// The weights after 20 AdamW steps (clipping on, warm-up and cosine decay).
std::vector<std::vector<char>> weights_after_training() {
  tape().clear();
  nn::MambaLM model(det_config(), 5);
  Generator data(3);
  train::TrainTask task;
  task.tokens_per_micro_batch = 2 * 32;
  task.micro_batch_loss = [&](const nn::MambaLM& m) {
    return m.loss(det_tokens(data.next_below(1u << 30), 2, 33));
  };
  train::TrainConfig cfg;
  cfg.steps = 20;
  cfg.quiet = true;
  cfg.handle_sigint = false;
  cfg.schedule = train::LrSchedule::parse("cosine", 3e-3, 3e-4, 3, cfg.steps);
  train::train(model, cfg, task);
  std::vector<Tensor> ts;
  for (auto& p : model.named_parameters()) ts.push_back(p.tensor);
  return snapshot(ts);
}


// The index of the first tensor that differs, or -1.
int first_difference(const std::vector<std::vector<char>>& a, const std::vector<std::vector<char>>& b) {
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i] != b[i]) return (int)i;
  return a.size() == b.size() ? -1 : (int)a.size();
}

}  // namespace

TEST_CASE("determinism: loss and every gradient are bitwise equal at 1, 2 and 3 threads") {
  auto one = test::with_threads(1, loss_and_grads);
  auto names = nn::MambaLM(det_config(), 5).named_parameters();
  for (int nt : {2, 3}) {
    CAPTURE(nt);
    int i = first_difference(one, test::with_threads(nt, loss_and_grads));
    CAPTURE((i <= 0 ? std::string(i == 0 ? "loss" : "none") : "grad of " + names[i - 1].name));
    CHECK(i == -1);
  }
}

TEST_CASE("determinism: 20 training steps give bitwise equal weights at 1, 2 and 3 threads") {
  auto one = test::with_threads(1, weights_after_training);
  auto names = nn::MambaLM(det_config(), 5).named_parameters();
  for (int nt : {2, 3}) {
    CAPTURE(nt);
    int i = first_difference(one, test::with_threads(nt, weights_after_training));
    CAPTURE((i < 0 ? std::string("none") : names[i].name));
    CHECK(i == -1);
  }
}

TEST_CASE("determinism: the tiled GEMM matches a double loop for every transpose, at any thread count") {
  // 600 x 520 with K = 50 is cut into several tiles with ragged edges (a tile boundary that
  // mis-offsets A, B or C shows up as a wrong value; a thread-dependent tile as a difference).
  const int64_t M = 600, N = 520, K = 50;
  cpu::GemmTiling g = cpu::gemm_tiling(M, N, K);
  REQUIRE(g.count() >= 4);
  REQUIRE(M % g.tm != 0);
  REQUIRE(N % g.tn != 0);
  CHECK(cpu::gemm_tiling(1000, 1, 1000).count() >= 1);
  Generator rng(4);
  auto fill = [&](int64_t n) {
    std::vector<float> v(n);
    for (auto& x : v) x = (float)rng.normal_at(rng.reserve(1));
    return v;
  };
  std::vector<float> A = fill(M * K), B = fill(K * N), C0 = fill(M * N);
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      std::vector<double> product(M * N);  // op(A) op(B) in double, once per transpose pair
      for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j) {
          double s = 0;
          for (int64_t k = 0; k < K; ++k)
            s += (double)(ta ? A[k * M + i] : A[i * K + k]) * (tb ? B[j * K + k] : B[k * N + j]);
          product[i * N + j] = s;
        }
      for (float beta : {0.0f, 0.25f}) {
        CAPTURE(ta);
        CAPTURE(tb);
        CAPTURE(beta);
        auto run = [&] {
          std::vector<float> C = C0;
          cpu::gemm<float>(ta, tb, M, N, K, 0.5f, A.data(), B.data(), beta, C.data());
          return C;
        };
        std::vector<float> C = test::with_threads(1, run);
        double worst = 0;
        for (int64_t i = 0; i < M * N; ++i) {
          double want = 0.5 * product[i] + (beta == 0 ? 0.0 : (double)beta * C0[i]);
          worst = std::max(worst, std::abs(want - (double)C[i]));
        }
        CHECK(worst < 1e-4);
        CHECK(test::with_threads(2, run) == C);
        CHECK(test::with_threads(3, run) == C);
      }
    }
}
