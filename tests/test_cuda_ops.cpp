// CUDA twins of matmul/linear, shape ops, embedding, causal conv1d and the norms, tested
// against their CPU kernels (the CPU kernel is the spec: docs/architecture.md) on odd shapes
// (1, 7, 13, 33) and one realistic size, forward and backward, f32 with TF32 off:
//   err = max |cuda - cpu| / max(1, max |cpu|) < 1e-5,
// plus bitwise repeatability in deterministic mode, and the public ops end to end (dispatch,
// tape backward) on CUDA tensors. Without a visible GPU every case reports itself skipped.
#ifdef MG_WITH_CUDA
#include <doctest/doctest.h>

#include <array>
#include <cmath>
#include <cstring>
#include <vector>

#include "autograd/grad_mode.h"
#include "autograd/tape.h"
#include "cuda/runtime.h"
#include "ops/conv1d.h"
#include "ops/embedding.h"
#include "ops/matmul.h"
#include "ops/norm.h"
#include "ops/shape.h"
#include "test_util.h"

using namespace mg;
using test::bitwise_equal;
using test::settings_with;

namespace {

const Device kGpu = Device::cuda(0);

// A tensor and its copy on the GPU (same values); `h` is written by the CPU kernel, `d` by
// the CUDA kernel.
struct Pair {
  Tensor h, d;
  float* hp() const { return h.data_or_null<float>(); }
  float* dp() const { return d.data_or_null<float>(); }
};
Pair randn_pair(const Shape& s, uint64_t seed) {
  Generator gen(seed);
  Tensor h = Tensor::randn(s, DType::f32, &gen);
  return {h, h.copy_to(kGpu)};
}
Pair empty_pair(const Shape& s) { return {Tensor::zeros(s), Tensor::zeros(s, DType::f32, kGpu)}; }
Pair none() { return {}; }

// max |got - want| / max(1, max |want|); got may live on the GPU.
double err(const Tensor& got, const Tensor& want) {
  std::vector<float> g = got.to_vector<float>(), w = want.to_vector<float>();
  REQUIRE(g.size() == w.size());
  double diff = 0, scale = 1;
  for (size_t i = 0; i < g.size(); ++i) {
    diff = std::max(diff, std::abs((double)g[i] - (double)w[i]));
    scale = std::max(scale, std::abs((double)w[i]));
  }
  return diff / scale;
}
double err(const Pair& p) { return err(p.d, p.h); }


const std::vector<int64_t> kOdd = {1, 7, 13, 33};
constexpr double kTol = 1e-5;

}  // namespace

TEST_CASE("cuda gemm matches cpu::gemm for every transpose, alpha and beta") {
  MG_SKIP_WITHOUT_GPU();
  mg::cuda::backend_init();
  SettingsGuard full_f32(settings_with(&Settings::precision, Precision::f32));
  std::vector<std::array<int64_t, 3>> shapes;
  for (int64_t M : kOdd) for (int64_t N : kOdd) for (int64_t K : kOdd) shapes.push_back({M, N, K});
  shapes.push_back({512, 1536, 768});
  shapes.push_back({7, 13, 0});  // K = 0: C = beta C
  for (auto [M, N, K] : shapes)
    for (int t = 0; t < 4; ++t) {
      bool ta = t & 1, tb = t & 2;
      for (float beta : {0.f, 1.f, 0.5f}) {
        CAPTURE(M); CAPTURE(N); CAPTURE(K); CAPTURE(ta); CAPTURE(tb); CAPTURE(beta);
        Pair A = randn_pair(ta ? Shape{K, M} : Shape{M, K}, 1);
        Pair B = randn_pair(tb ? Shape{N, K} : Shape{K, N}, 2);
        Pair C = randn_pair({M, N}, 3);
        cpu::gemm<float>(ta, tb, M, N, K, 1.5f, A.hp(), B.hp(), beta, C.hp());
        cuda::gemm(ta, tb, M, N, K, 1.5f, A.dp(), B.dp(), beta, C.dp());
        CHECK(err(C) < kTol);
      }
    }
}

TEST_CASE("cuda matmul and linear kernels match the CPU, forward and backward") {
  MG_SKIP_WITHOUT_GPU();
  mg::cuda::backend_init();
  SettingsGuard full_f32(settings_with(&Settings::precision, Precision::f32));
  for (bool shared : {true, false})
    for (int64_t batch : {1, 3})
      for (int64_t M : kOdd)
        for (int64_t K : {1, 13, 33})
          for (int64_t N : {7, 33}) {
            CAPTURE(shared); CAPTURE(batch); CAPTURE(M); CAPTURE(K); CAPTURE(N);
            Pair a = randn_pair({batch, M, K}, 4), dy = randn_pair({batch, M, N}, 6);
            Pair b = randn_pair(shared ? Shape{K, N} : Shape{batch, K, N}, 5);
            Pair y = empty_pair({batch, M, N}), da = empty_pair(a.h.shape()), db = empty_pair(b.h.shape());
            cpu::matmul_forward<float>(a.hp(), b.hp(), y.hp(), batch, M, K, N, shared);
            cuda::matmul_forward(a.dp(), b.dp(), y.dp(), batch, M, K, N, shared);
            cpu::matmul_backward<float>(a.hp(), b.hp(), dy.hp(), da.hp(), db.hp(), batch, M, K, N, shared);
            cuda::matmul_backward(a.dp(), b.dp(), dy.dp(), da.dp(), db.dp(), batch, M, K, N, shared);
            CHECK(err(y) < kTol);
            CHECK(err(da) < kTol);
            CHECK(err(db) < kTol);
          }
  std::vector<std::array<int64_t, 3>> shapes = {{1, 1, 1}, {7, 13, 33}, {33, 7, 13}, {13, 33, 1},
                                                {2048, 768, 1536}};
  for (auto [rows, in, out] : shapes)
    for (bool with_bias : {true, false}) {
      CAPTURE(rows); CAPTURE(in); CAPTURE(out); CAPTURE(with_bias);
      Pair x = randn_pair({rows, in}, 7), W = randn_pair({out, in}, 8), dy = randn_pair({rows, out}, 10);
      Pair bias = with_bias ? randn_pair({out}, 9) : none();
      Pair y = empty_pair({rows, out}), dx = empty_pair({rows, in}), dW = empty_pair({out, in});
      Pair dbias = empty_pair({out});
      cpu::linear_forward<float>(x.hp(), W.hp(), bias.hp(), y.hp(), rows, in, out);
      cuda::linear_forward(x.dp(), W.dp(), bias.dp(), y.dp(), rows, in, out);
      cpu::linear_backward<float>(x.hp(), W.hp(), dy.hp(), dx.hp(), dW.hp(), dbias.hp(), rows, in, out);
      cuda::linear_backward(x.dp(), W.dp(), dy.dp(), dx.dp(), dW.dp(), dbias.dp(), rows, in, out);
      CHECK(err(y) < kTol);
      CHECK(err(dx) < kTol);
      CHECK(err(dW) < kTol);
      CHECK(err(dbias) < kTol);
      // Deterministic: a second backward is bitwise identical.
      Pair dW2 = empty_pair({out, in}), db2 = empty_pair({out});
      cuda::linear_backward(x.dp(), W.dp(), dy.dp(), nullptr, dW2.dp(), db2.dp(), rows, in, out);
      CHECK(bitwise_equal(dW2.d, dW.d));
      CHECK(bitwise_equal(db2.d, dbias.d));
    }
}

TEST_CASE("cuda TF32 switch: off by default, and on it stays close to the CPU") {
  MG_SKIP_WITHOUT_GPU();
  mg::cuda::backend_init();
  CHECK(settings().precision == Precision::f32);
  int64_t M = 512, N = 512, K = 1024;
  Pair A = randn_pair({M, K}, 11), B = randn_pair({K, N}, 12), C = empty_pair({M, N});
  cpu::gemm<float>(false, false, M, N, K, 1.f, A.hp(), B.hp(), 0.f, C.hp());
  {
    SettingsGuard tf32(settings_with(&Settings::precision, Precision::tf32));
    cuda::gemm(false, false, M, N, K, 1.f, A.dp(), B.dp(), 0.f, C.dp());
  }
  double tf32_err = err(C);
  MESSAGE("TF32 relative error: " << tf32_err);
  CHECK(tf32_err < 1e-2);  // ~10 mantissa bits in the products
  cuda::gemm(false, false, M, N, K, 1.f, A.dp(), B.dp(), 0.f, C.dp());
  CHECK(err(C) < kTol);
}

TEST_CASE("cuda shape kernels copy exactly what the CPU kernels copy") {
  MG_SKIP_WITHOUT_GPU();
  mg::cuda::backend_init();
  // transpose_forward: (A, n0, B, n1, C) with C == 1 (tiled path) and C > 1, 4- and 8-byte words.
  std::vector<std::array<int64_t, 5>> dims = {{1, 1, 1, 1, 1}, {1, 33, 1, 7, 1}, {7, 13, 1, 33, 1},
                                              {2, 33, 3, 13, 1}, {1, 7, 13, 1, 33}, {3, 13, 1, 7, 5},
                                              {1, 1024, 1, 768, 1}, {4, 256, 1, 96, 16}};
  for (auto [A, n0, B, n1, C] : dims)
    for (DType dt : {DType::f32, DType::f64}) {
      CAPTURE(A); CAPTURE(n0); CAPTURE(B); CAPTURE(n1); CAPTURE(C);
      Tensor x = Tensor::randn({A, n0, B, n1, C}, dt), y = Tensor::empty({A, n1, B, n0, C}, dt);
      Tensor xd = x.copy_to(kGpu), yd = Tensor::empty(y.shape(), dt, kGpu);
      int64_t eb = (int64_t)dtype_size(dt);
      cpu::transpose_forward(x.raw_data(), y.raw_data(), A, n0, B, n1, C, eb);
      cuda::transpose_forward(xd.raw_data(), yd.raw_data(), A, n0, B, n1, C, eb);
      CHECK(yd.copy_to(Device::cpu()).cast(DType::f64).to_vector<double>() ==
            y.cast(DType::f64).to_vector<double>());
    }
  // copy_blocks at byte offsets and strides that force 1-, 4-, 8- and 16-byte words.
  for (int64_t shift : {0, 1, 4, 8})
    for (int64_t block_bytes : {1, 12, 16, 52, 4096})
      for (int64_t blocks : {1, 7, 33}) {
        CAPTURE(shift); CAPTURE(block_bytes); CAPTURE(blocks);
        int64_t src_stride = block_bytes + 16 * 3, dst_stride = block_bytes + shift;
        int64_t n = (blocks * std::max(src_stride, dst_stride) + 64) / 4 + 1;
        Tensor src = Tensor::arange(0, n, DType::i32), dst = Tensor::zeros({n}, DType::i32);
        Tensor src_d = src.copy_to(kGpu), dst_d = dst.copy_to(kGpu);
        auto at = [shift](const Tensor& t) { return static_cast<char*>(t.raw_data()) + shift; };
        cpu::copy_blocks(at(src), src_stride, at(dst), dst_stride, blocks, block_bytes);
        cuda::copy_blocks(at(src_d), src_stride, at(dst_d), dst_stride, blocks, block_bytes);
        CHECK(dst_d.to_vector<int32_t>() == dst.to_vector<int32_t>());
      }
}

TEST_CASE("cuda shape ops end to end: transpose, split, cat, slice and their gradients") {
  MG_SKIP_WITHOUT_GPU();
  mg::cuda::backend_init();
  Generator gen(13);
  Tensor x = Tensor::randn({7, 13, 33}, DType::f32, &gen);
  Tensor xd = x.copy_to(kGpu).requires_grad_();
  Tensor t = transpose(xd, 0, 2);                 // (33, 13, 7)
  std::vector<Tensor> parts = split(t, {1, 12}, 1);
  Tensor c = cat({parts[1], parts[0]}, 1);        // (33, 13, 7), rows of dim 1 rotated
  Tensor y = slice(c, 0, 2, 31);                  // (29, 13, 7)
  Tensor dy = Tensor::randn(y.shape(), DType::f32, &gen);
  backward(y, dy.copy_to(kGpu));
  // Reference gradient on the CPU through the same ops.
  Tensor xh = x.clone().requires_grad_();
  Tensor th = transpose(xh, 0, 2);
  std::vector<Tensor> ph = split(th, {1, 12}, 1);
  Tensor yh = slice(cat({ph[1], ph[0]}, 1), 0, 2, 31);
  backward(yh, dy);
  CHECK(bitwise_equal(y, yh));
  REQUIRE(xd.grad().defined());
  CHECK(bitwise_equal(xd.grad(), xh.grad()));
}

TEST_CASE("cuda embedding: gather, deterministic scatter-add, atomic mode, bad ids") {
  MG_SKIP_WITHOUT_GPU();
  mg::cuda::backend_init();
  std::vector<std::array<int64_t, 3>> shapes = {{1, 1, 1}, {7, 13, 33}, {33, 7, 13}, {13, 33, 7},
                                                {8192, 50280, 768}};
  for (auto [n_ids, V, D] : shapes) {
    CAPTURE(n_ids); CAPTURE(V); CAPTURE(D);
    // Ids with many repeats (a few frequent values), as in real text.
    std::vector<int32_t> id(n_ids);
    for (int64_t n = 0; n < n_ids; ++n) id[n] = (int32_t)((n * 7919 % 97 < 30 ? n % 3 : n * 31) % V);
    Tensor ids = Tensor::from_vector(id, {n_ids}), ids_d = ids.copy_to(kGpu);
    Pair w = randn_pair({V, D}, 14), dy = randn_pair({n_ids, D}, 15);
    Pair y = empty_pair({n_ids, D}), dw = empty_pair({V, D});
    cpu::embedding_forward<float>(ids.data<int32_t>(), w.hp(), y.hp(), n_ids, D);
    cuda::embedding_forward(ids_d.data<int32_t>(), w.dp(), y.dp(), n_ids, D);
    CHECK(bitwise_equal(y.d, y.h));
    cpu::embedding_backward<float>(ids.data<int32_t>(), dy.hp(), dw.hp(), n_ids, V, D);
    {
      SettingsGuard deterministic(settings_with(&Settings::deterministic, true));
      cuda::embedding_backward(ids_d.data<int32_t>(), dy.dp(), dw.dp(), n_ids, V, D);
    }
    // The same additions in the same (flat id) order as the CPU: bitwise equal.
    CHECK(bitwise_equal(dw.d, dw.h));
    Pair dw2 = empty_pair({V, D});
    {
      SettingsGuard atomics(settings_with(&Settings::deterministic, false));
      cuda::embedding_backward(ids_d.data<int32_t>(), dy.dp(), dw2.dp(), n_ids, V, D);
    }
    CHECK(err(dw2.d, dw.h) < kTol);
  }
  // The public op: the range check runs on the GPU and raises mg::Error.
  Tensor w = Tensor::randn({10, 4}).copy_to(kGpu);
  Tensor bad = Tensor::from_vector(std::vector<int32_t>{1, 2, 10, -1}, {2, 2}).copy_to(kGpu);
  CHECK_THROWS_WITH_AS(embedding(bad, w), doctest::Contains("id 10 at flat position 2"), Error);
  Tensor good = Tensor::from_vector(std::vector<int32_t>{3, 3, 9}, {3}).copy_to(kGpu);
  CHECK(bitwise_equal(embedding(good, w), embedding(good.copy_to(Device::cpu()), w.copy_to(Device::cpu()))));
}

TEST_CASE("cuda causal conv1d matches the CPU, forward and backward, deterministically") {
  MG_SKIP_WITHOUT_GPU();
  mg::cuda::backend_init();
  std::vector<std::array<int64_t, 4>> shapes;  // B, L, C, K
  for (int64_t L : kOdd) for (int64_t C : kOdd) for (int64_t K : {1, 4, 7}) shapes.push_back({2, L, C, K});
  shapes.push_back({8, 1024, 1536, 4});
  for (auto [B, L, C, K] : shapes)
    for (bool with_bias : {true, false}) {
      CAPTURE(B); CAPTURE(L); CAPTURE(C); CAPTURE(K); CAPTURE(with_bias);
      Pair x = randn_pair({B, L, C}, 16), w = randn_pair({C, 1, K}, 17), dy = randn_pair({B, L, C}, 19);
      Pair bias = with_bias ? randn_pair({C}, 18) : none();
      Pair y = empty_pair({B, L, C}), dx = empty_pair({B, L, C}), dw = empty_pair({C, 1, K});
      Pair db = with_bias ? empty_pair({C}) : none();
      cpu::causal_conv1d_forward<float>(x.hp(), w.hp(), bias.hp(), y.hp(), B, L, C, K);
      cuda::causal_conv1d_forward(x.dp(), w.dp(), bias.dp(), y.dp(), B, L, C, K);
      cpu::causal_conv1d_backward<float>(x.hp(), w.hp(), dy.hp(), dx.hp(), dw.hp(), db.hp(), B, L, C, K);
      cuda::causal_conv1d_backward(x.dp(), w.dp(), dy.dp(), dx.dp(), dw.dp(), db.dp(), B, L, C, K);
      CHECK(err(y) < kTol);
      CHECK(err(dx) < kTol);
      CHECK(err(dw) < kTol);
      if (with_bias) CHECK(err(db) < kTol);
      Pair dw2 = empty_pair({C, 1, K});
      cuda::causal_conv1d_backward(x.dp(), w.dp(), dy.dp(), nullptr, dw2.dp(), nullptr, B, L, C, K);
      CHECK(bitwise_equal(dw2.d, dw.d));
    }
}

TEST_CASE("cuda rms_norm and layer_norm match the CPU, forward and backward, deterministically") {
  MG_SKIP_WITHOUT_GPU();
  mg::cuda::backend_init();
  std::vector<std::array<int64_t, 2>> shapes;  // rows, D
  for (int64_t rows : kOdd) for (int64_t D : {1, 7, 13, 33, 300, 1100}) shapes.push_back({rows, D});
  shapes.push_back({4096, 1536});
  shapes.push_back({2048, 2560});
  for (auto [rows, D] : shapes) {
    CAPTURE(rows); CAPTURE(D);
    Pair x = randn_pair({rows, D}, 20), w = randn_pair({D}, 21), b = randn_pair({D}, 22);
    Pair dy = randn_pair({rows, D}, 23);
    Pair y = empty_pair({rows, D}), mean = empty_pair({rows}), rstd = empty_pair({rows});
    Pair dx = empty_pair({rows, D}), dw = empty_pair({D}), db = empty_pair({D});
    cpu::rms_norm_forward<float>(x.hp(), w.hp(), y.hp(), rstd.hp(), rows, D, 1e-5f);
    cuda::rms_norm_forward(x.dp(), w.dp(), y.dp(), rstd.dp(), rows, D, 1e-5f);
    CHECK(err(y) < kTol);
    CHECK(err(rstd) < kTol);
    cpu::rms_norm_backward<float>(x.hp(), w.hp(), rstd.hp(), dy.hp(), dx.hp(), dw.hp(), rows, D);
    cuda::rms_norm_backward(x.dp(), w.dp(), rstd.dp(), dy.dp(), dx.dp(), dw.dp(), rows, D);
    CHECK(err(dx) < kTol);
    CHECK(err(dw) < kTol);
    for (bool with_bias : {true, false}) {
      CAPTURE(with_bias);
      const float* bh = with_bias ? b.hp() : nullptr;
      const float* bd = with_bias ? b.dp() : nullptr;
      cpu::layer_norm_forward<float>(x.hp(), w.hp(), bh, y.hp(), mean.hp(), rstd.hp(), rows, D, 1e-5f);
      cuda::layer_norm_forward(x.dp(), w.dp(), bd, y.dp(), mean.dp(), rstd.dp(), rows, D, 1e-5f);
      CHECK(err(y) < kTol);
      CHECK(err(mean) < kTol);
      CHECK(err(rstd) < kTol);
    }
    cpu::layer_norm_backward<float>(x.hp(), w.hp(), mean.hp(), rstd.hp(), dy.hp(), dx.hp(), dw.hp(),
                                    db.hp(), rows, D);
    cuda::layer_norm_backward(x.dp(), w.dp(), mean.dp(), rstd.dp(), dy.dp(), dx.dp(), dw.dp(),
                              db.dp(), rows, D);
    CHECK(err(dx) < kTol);
    CHECK(err(dw) < kTol);
    CHECK(err(db) < kTol);
    Pair dw2 = empty_pair({D}), db2 = empty_pair({D});
    cuda::layer_norm_backward(x.dp(), w.dp(), mean.dp(), rstd.dp(), dy.dp(), nullptr, dw2.dp(),
                              db2.dp(), rows, D);
    CHECK(bitwise_equal(dw2.d, dw.d));
    CHECK(bitwise_equal(db2.d, db.d));
  }
}

TEST_CASE("cuda public ops end to end: linear, matmul, conv1d, norms, embedding with the tape") {
  MG_SKIP_WITHOUT_GPU();
  mg::cuda::backend_init();
  SettingsGuard full_f32(settings_with(&Settings::precision, Precision::f32));
  Generator gen(30);
  auto rnd = [&](const Shape& s) { return Tensor::randn(s, DType::f32, &gen); };
  Tensor x = rnd({3, 13, 33}), W = rnd({7, 33}), bl = rnd({7}), wc = rnd({7, 1, 4}), bc = rnd({7});
  Tensor wn = rnd({7}), bn = rnd({7}), m = rnd({7, 5}), E = rnd({11, 33});
  Tensor ids = Tensor::from_vector(std::vector<int32_t>{0, 3, 3, 10, 5, 0}, {2, 3});
  Tensor dy = rnd({3, 13, 5}), dz = rnd({2, 3, 33});
  // One graph per device; every leaf is used once, so its gradient is exactly one op's output.
  auto run = [&](Device dev) {
    std::vector<Tensor> leaves;
    for (const Tensor& t : {x, W, bl, wc, bc, wn, bn, m, E})
      leaves.push_back((dev.is_cpu() ? t.clone() : t.copy_to(dev)).requires_grad_());
    Tensor h = linear(leaves[0], leaves[1], leaves[2]);                  // (3, 13, 7)
    h = causal_conv1d(h, leaves[3], leaves[4]);
    h = layer_norm(rms_norm(h, leaves[5]), leaves[5].detach(), leaves[6]);
    Tensor y = matmul(h, leaves[7]);                                     // (3, 13, 5)
    backward(y, dy.copy_to(dev));
    Tensor z = embedding(ids.copy_to(dev), leaves[8]);                        // (2, 3, 33)
    backward(z, dz.copy_to(dev));
    std::vector<Tensor> out = {y, z};
    for (const Tensor& l : leaves) out.push_back(l.grad());
    return out;
  };
  std::vector<Tensor> on_cpu = run(Device::cpu()), on_gpu = run(kGpu);
  for (size_t i = 0; i < on_cpu.size(); ++i) {
    CAPTURE(i);
    REQUIRE(on_gpu[i].defined());
    CHECK(on_gpu[i].device() == kGpu);
    CHECK(err(on_gpu[i], on_cpu[i]) < kTol);
  }
}

#endif  // MG_WITH_CUDA
