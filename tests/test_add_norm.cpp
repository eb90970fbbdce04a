// The fused residual add + RMSNorm (ops/add_norm.h) on the CPU, against the unfused
// composition it replaces: f32 outputs and every gradient bit for bit equal to
// rms_norm(residual + x) through the tape; bf16 x / bf16 y against widen, the f32 op, round;
// an undefined residual; thread counts; errors naming the argument; and the Mamba LM's fused
// layer loop against the unfused `h = h + mixer(norm(h))` loop (loss and every gradient), in
// f32 and bf16. gradcheck (f64) and CUDA-vs-CPU of the op run through the op harness
// (tests/test_op_harness.cpp); the CUDA kernels against these in tests/test_cuda_add_norm.cpp.
#include <doctest/doctest.h>

#include <cstring>

#include "autograd/tape.h"
#include "nn/mamba.h"
#include "ops/add_norm.h"
#include "ops/arith.h"
#include "ops/convert.h"
#include "ops/matmul.h"
#include "ops/norm.h"
#include "ops/reduce.h"
#include "ops/shape.h"
#include "ops/softmax.h"
#include "test_util.h"

using namespace mg;
using test::error_of;
using test::has;

namespace {

Tensor randn(const Shape& s, uint64_t seed, DType dt = DType::f32) {
  Generator g(seed);
  return Tensor::randn(s, DType::f32, &g).cast(dt);
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.defined() && b.defined() && a.dtype() == b.dtype() && a.shape() == b.shape() &&
         std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0;
}

// y, s and the gradients of x, residual, w for the cotangents dy (of y) and ds (of s).
struct Run {
  Tensor y, s, dx, dres, dw;
};

// The fused op. dy has y's dtype (out_dtype), ds is f32, or undefined: nothing reads s, and
// the op is asked for y alone (return_residual = false, as the final norm is).
Run fused(const Tensor& x, const Tensor& res, const Tensor& w, const Tensor& dy,
          const Tensor& ds, DType out = DType::f32) {
  Tensor xl = x.clone().requires_grad_(), wl = w.clone().requires_grad_();
  Tensor rl = res.defined() ? res.clone().requires_grad_() : Tensor();
  AddNormResult r = add_rms_norm(xl, rl, wl, 1e-5, out, /*return_residual=*/ds.defined());
  CHECK(r.residual.defined() == ds.defined());
  Tensor loss = sum(to(r.y, DType::f32) * to(dy, DType::f32));
  if (ds.defined()) loss = loss + sum(r.residual * ds);
  backward(loss);
  return {r.y, r.residual, xl.grad(), rl.defined() ? rl.grad() : Tensor(), wl.grad()};
}

// The composition it replaces, as the model ran it: s = residual + x (x widened when bf16,
// by add itself), y = rms_norm(s), rounded to bf16 when asked (linear's cast did it).
Run unfused(const Tensor& x, const Tensor& res, const Tensor& w, const Tensor& dy,
            const Tensor& ds, DType out = DType::f32) {
  Tensor xl = x.clone().requires_grad_(), wl = w.clone().requires_grad_();
  Tensor rl = res.defined() ? res.clone().requires_grad_() : Tensor();
  Tensor s = rl.defined() ? rl + xl : to(xl, DType::f32);
  Tensor y = to(rms_norm(s, wl), out);
  Tensor loss = sum(to(y, DType::f32) * to(dy, DType::f32));
  if (ds.defined()) loss = loss + sum(s * ds);
  backward(loss);
  return {y, s, xl.grad(), rl.defined() ? rl.grad() : Tensor(), wl.grad()};
}

void check_same(const Run& a, const Run& b) {
  CHECK(same_bits(a.y, b.y));
  if (a.s.defined()) CHECK(same_bits(a.s, b.s));
  CHECK(same_bits(a.dx, b.dx));
  CHECK(a.dres.defined() == b.dres.defined());
  if (a.dres.defined()) CHECK(same_bits(a.dres, b.dres));
  CHECK(same_bits(a.dw, b.dw));
}

}  // namespace

TEST_CASE("add_rms_norm: f32 outputs and every gradient equal the unfused rms_norm(residual + x) bit for bit") {
  for (int64_t rows : {1, 7, 130})
    for (int64_t D : {1, 7, 33, 300}) {
      CAPTURE(rows);
      CAPTURE(D);
      const uint64_t k = (uint64_t)(rows * 1000 + D);
      const Tensor x = randn({rows, D}, k), res = randn({rows, D}, k + 1), w = randn({D}, k + 2);
      const Tensor dy = randn({rows, D}, k + 3), ds = randn({rows, D}, k + 4);
      check_same(fused(x, res, w, dy, ds), unfused(x, res, w, dy, ds));
      // Nothing reads s (the final norm): its gradient is the norm's alone.
      check_same(fused(x, res, w, dy, Tensor()), unfused(x, res, w, dy, Tensor()));
      // The first layer: no residual, s = x.
      check_same(fused(x, Tensor(), w, dy, ds), unfused(x, Tensor(), w, dy, ds));
    }
}

TEST_CASE("add_rms_norm: bf16 x and bf16 y equal widen, the f32 op, round, bit for bit") {
  const int64_t rows = 37, D = 96;
  const Tensor x32 = randn({3, rows, D}, 1), res = randn({3, rows, D}, 2), w = randn({D}, 3);
  const Tensor ds = randn({3, rows, D}, 5);
  for (DType xd : {DType::f32, DType::bf16})
    for (DType yd : {DType::f32, DType::bf16}) {
      CAPTURE(dtype_name(xd));
      CAPTURE(dtype_name(yd));
      const Tensor x = x32.cast(xd), dy = randn({3, rows, D}, 4, yd);
      const Run got = fused(x, res, w, dy, ds, yd);
      CHECK(got.y.dtype() == yd);
      CHECK(got.s.dtype() == DType::f32);
      CHECK(got.dx.dtype() == xd);   // rounded to x's dtype
      CHECK(got.dres.dtype() == DType::f32);
      check_same(got, unfused(x, res, w, dy, ds, yd));
      // And against the explicit reference: the f32 op on the widened x, y rounded once.
      const Run ref = fused(x.cast(DType::f32), res, w, dy, ds, DType::f32);
      CHECK(same_bits(got.y, ref.y.cast(yd)));
      CHECK(same_bits(got.s, ref.s));
      CHECK(same_bits(got.dx, ref.dx.cast(xd)));
      CHECK(same_bits(got.dres, ref.dres));
      CHECK(same_bits(got.dw, ref.dw));
    }
}

TEST_CASE("add_rms_norm: an undefined residual is zero; s is a copy of x, not x itself") {
  const Tensor x = randn({5, 13}, 10), w = randn({13}, 11);
  NoGradGuard no_grad;
  AddNormResult r = add_rms_norm(x, Tensor(), w);
  CHECK(same_bits(r.residual, x));
  CHECK(r.residual.raw_data() != x.raw_data());
  CHECK(same_bits(r.y, rms_norm(x, w)));
  AddNormResult z = add_rms_norm(x, Tensor::zeros({5, 13}), w);
  CHECK(same_bits(z.y, r.y));
  // A bf16 x with no residual: s is its exact widening.
  AddNormResult b = add_rms_norm(x.cast(DType::bf16), Tensor(), w, 1e-5, DType::bf16);
  CHECK(same_bits(b.residual, x.cast(DType::bf16).cast(DType::f32)));
  CHECK(same_bits(b.y, rms_norm(x.cast(DType::bf16).cast(DType::f32), w).cast(DType::bf16)));
}

TEST_CASE("add_rms_norm: bitwise identical across runs and thread counts; zero rows") {
  const Tensor x = randn({600, 96}, 20, DType::bf16), res = randn({600, 96}, 21);
  const Tensor w = randn({96}, 22), dy = randn({600, 96}, 23, DType::bf16), ds = randn({600, 96}, 24);
  auto run = [&] {
    Run r = fused(x, res, w, dy, ds, DType::bf16);
    std::vector<std::vector<float>> out;
    for (const Tensor& t : {r.y, r.s, r.dx, r.dres, r.dw}) out.push_back(t.cast(DType::f32).to_vector<float>());
    return out;
  };
  auto one = test::with_threads(1, run);
  CHECK(test::with_threads(2, run) == one);
  CHECK(test::with_threads(3, run) == one);
  Tensor w64 = Tensor::ones({4}, DType::f64).requires_grad_();
  AddNormResult e = add_rms_norm(Tensor::zeros({0, 4}, DType::f64), Tensor(), w64);
  CHECK(e.y.shape() == Shape{0, 4});
  backward(sum(e.y));
  CHECK(w64.grad().to_vector<double>() == std::vector<double>(4, 0.0));
}

TEST_CASE("add_rms_norm: bad inputs throw errors naming the argument") {
  const Tensor x = Tensor::zeros({2, 3, 7}), w = Tensor::ones({7}), res = Tensor::zeros({2, 3, 7});
  std::string m = error_of([&] { add_rms_norm(x, Tensor::zeros({2, 3, 6}), w); });
  CHECK(has(m, "add_rms_norm")); CHECK(has(m, "residual")); CHECK(has(m, "(2, 3, 6)"));
  m = error_of([&] { add_rms_norm(x, res.cast(DType::f64), w); });
  CHECK(has(m, "residual")); CHECK(has(m, "f64"));
  m = error_of([&] { add_rms_norm(x, res.cast(DType::bf16), w); });
  CHECK(has(m, "residual")); CHECK(has(m, "bf16"));
  m = error_of([&] { add_rms_norm(x, res, Tensor::ones({6})); });
  CHECK(has(m, "weight")); CHECK(has(m, "(6)")); CHECK(has(m, "(2, 3, 7)"));
  m = error_of([&] { add_rms_norm(x, res, w.cast(DType::bf16)); });
  CHECK(has(m, "weight")); CHECK(has(m, "bf16"));
  m = error_of([&] { add_rms_norm(x.cast(DType::f64), res, w); });
  CHECK(has(m, "x must be f32 or bf16")); CHECK(has(m, "f64"));
  m = error_of([&] { add_rms_norm(x.cast(DType::bf16).cast(DType::f32).cast(DType::bf16), Tensor(),
                                  w.cast(DType::f64)); });
  CHECK(has(m, "x must be f64")); CHECK(has(m, "bf16"));
  m = error_of([&] { add_rms_norm(x, res, w, 1e-5, DType::f64); });
  CHECK(has(m, "out_dtype")); CHECK(has(m, "f64"));
  m = error_of([&] { add_rms_norm(x.cast(DType::f64), Tensor(), w.cast(DType::f64), 1e-5, DType::bf16); });
  CHECK(has(m, "out_dtype")); CHECK(has(m, "bf16"));
  m = error_of([&] { add_rms_norm(x, res, w, -1.0); });
  CHECK(has(m, "eps"));
  m = error_of([&] { add_rms_norm(Tensor::zeros({2, 7}, DType::i32), Tensor(), w); });
  CHECK(has(m, "add_rms_norm")); CHECK(has(m, "i32"));
  m = error_of([&] { add_rms_norm(Tensor::scalar(1.0f), Tensor(), Tensor::ones({1})); });
  CHECK(has(m, "x must be (..., D)"));
  m = error_of([&] { add_rms_norm(x, res, Tensor()); });
  CHECK(has(m, "weight"));
}

// The Mamba LM's layer loop (nn/mamba.cpp: the reference's (hidden, residual) blocks with the
// add fused into the norm) against the loop it replaced, h = h + mixer(norm(h)) and
// norm_f(h) with separate ops: the same loss and every parameter gradient, bit for bit, in f32
// and under bf16 precision. (Gradients compare as values: a gradient of exactly zero may
// differ in its sign, -0 == +0.)
TEST_CASE("add_rms_norm in the Mamba LM: the fused layer loop equals the unfused one, loss and gradients") {
  nn::MambaConfig cfg = test::tiny_lm_config(/*V=*/40, /*N=*/8);
  nn::MambaLM model(cfg, 5);
  Generator g(9);
  for (auto& p : model.named_parameters())  // norms with weights away from 1, some negative
    if (p.name.find("norm") != std::string::npos)
    {
      const Tensor u = Tensor::uniform(p.tensor.shape(), -1.5, 1.5, DType::f32, &g);
      std::memcpy(p.tensor.raw_data(), u.raw_data(), u.nbytes());
    }
  std::vector<int32_t> id(2 * 9);
  for (auto& v : id) v = (int32_t)g.next_below(40);
  const Tensor ids = Tensor::from_vector(id, {2, 9});
  auto unfused_loss = [&] {
    Tensor h = model.embeddings.forward(ids);
    for (const nn::MambaBlock& layer : model.layers) h = h + layer.mixer.forward(layer.norm.forward(h));
    Tensor hf = slice(model.norm_f.forward(h), 1, 0, 8);
    Tensor logits = linear(hf, model.embeddings.weight);  // (2, 8, V_pad)
    return cross_entropy(reshape(logits, {16, logits.size(-1)}), slice(ids, 1, 1, 9).view({16}));
  };
  auto loss_and_grads = [&](auto&& loss_fn) {
    model.zero_grad();
    Tensor loss = loss_fn();
    backward(loss);
    std::vector<std::vector<float>> out{loss.to_vector<float>()};
    for (auto& p : model.named_parameters()) out.push_back(p.tensor.grad().to_vector<float>());
    return out;
  };
  for (Precision p : {Precision::f32, Precision::bf16}) {
    CAPTURE(precision_name(p));
    SettingsGuard guard(test::settings_with(&Settings::precision, p));
    auto fused = loss_and_grads([&] { return model.loss(ids); });
    auto plain = loss_and_grads(unfused_loss);
    CHECK(fused == plain);
    // One fused node per norm and no separate add; the norm writes the GEMM's dtype, so
    // under bf16 in_proj and the head take its output as it is: every cast to bf16 left on
    // the tape is a weight's (a leaf), none an activation's.
    Tensor hidden = model.hidden_states(ids);
    CHECK(hidden.dtype() == (p == Precision::bf16 ? DType::bf16 : DType::f32));
    Tensor logits = model.forward(ids);
    int fused_nodes = 0, adds = 0, activation_casts = 0;
    for (const Node& n : tape().nodes()) {
      fused_nodes += n.name == "add_rms_norm";
      adds += n.name == "add";
      activation_casts += n.name == "to_bf16" && !n.inputs[0].is_leaf();
    }
    CHECK(fused_nodes == 2 * (cfg.n_layer + 1));  // hidden_states, then forward
    CHECK(adds == 0);
    CHECK(activation_casts == 0);
    tape().clear();
  }
}

// Generation (nn/inference.cpp): prefill and the O(1) step through the fused norms give the
// logits of the unfused composition bit for bit (prefill's last position, then each step).
TEST_CASE("add_rms_norm in generation: prefill and step logits equal the unfused composition bit for bit") {
  nn::MambaConfig cfg = test::tiny_lm_config(/*V=*/40, /*N=*/8);
  nn::MambaLM model(cfg, 6);
  NoGradGuard no_grad;
  const Tensor ids = Tensor::from_vector(std::vector<int32_t>{3, 17, 5, 29, 1, 8, 8, 33}, {2, 4});
  nn::InferenceState fused_state;
  const Tensor fused_prefill = model.prefill(ids, fused_state, 1);  // (2, 1, V_pad)
  // Unfused: the old layer loop, h = h + mixer(norm(h)), filling its own state.
  nn::InferenceState plain_state;
  plain_state.layers.assign(model.layers.size(), nn::LayerState{});
  Tensor h = model.embeddings.forward(ids);
  for (size_t i = 0; i < model.layers.size(); ++i)
    h = h + model.layers[i].mixer.forward(model.layers[i].norm.forward(h), &plain_state.layers[i]);
  const Tensor plain_prefill = linear(model.norm_f.forward(slice(h, 1, 3, 4)), model.embeddings.weight);
  CHECK(same_bits(fused_prefill, plain_prefill));
  for (int32_t t : {7, 21, 39}) {
    const Tensor next = Tensor::from_vector(std::vector<int32_t>{t, (int32_t)(t / 2)}, {2});
    const Tensor fused_step = model.step(next, fused_state);
    Tensor hs = model.embeddings.forward(next);  // (2, D)
    for (size_t i = 0; i < model.layers.size(); ++i)
      hs = hs + model.layers[i].mixer.step(model.layers[i].norm.forward(hs), plain_state.layers[i]);
    const Tensor plain_step = linear(model.norm_f.forward(hs), model.embeddings.weight);
    CHECK(same_bits(fused_step, plain_step));
  }
}
