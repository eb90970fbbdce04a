// The CUDA bf16 kernels against their CPU references (the CPU kernel is the spec): the cast
// kernels bit for bit (4096 PyTorch-made values, specials included), autograd's bf16 sum, the
// bf16 GEMMs of linear (cublasGemmEx, f32 accumulation) and conv1d with bf16 activations on
// odd shapes and one realistic size, and a mixed-precision
// Mamba LM step on CUDA against the CPU emulation. Without a visible GPU every case reports
// itself skipped (compiled, not yet run on a GPU).
#ifdef MG_WITH_CUDA
#include <doctest/doctest.h>

#include <array>
#include <cmath>
#include <cstring>
#include <vector>

#include "autograd/tape.h"
#include "core/safetensors.h"
#include "cuda/runtime.h"
#include "ops/arith.h"
#include "ops/conv1d.h"
#include "ops/convert.h"
#include "ops/matmul.h"
#include "ops/reduce.h"
#include "ops/unary.h"
#include "test_util.h"

using namespace mg;

namespace {
const Device kGpu = Device::cuda(0);

bool same_bytes(const Tensor& a, const Tensor& b) {
  const Tensor x = a.copy_to(Device::cpu()), y = b.copy_to(Device::cpu());
  return x.nbytes() == y.nbytes() && std::memcmp(x.raw_data(), y.raw_data(), x.nbytes()) == 0;
}
}  // namespace

TEST_CASE("cuda bf16: the cast kernels equal the CPU's round to nearest even, bit for bit") {
  MG_SKIP_WITHOUT_GPU();
  SafetensorsFile f = load_safetensors(std::string(MG_TEST_DATA_DIR) + "/bf16_fixtures.safetensors");
  const Tensor x = f.tensors.at("x");  // f32, specials and random bit patterns
  const Tensor want = x.cast(DType::bf16);
  const Tensor got = x.copy_to(kGpu).cast(DType::bf16);
  CHECK(got.device() == kGpu);
  // NaN payloads may differ; compare NaN-ness there, bits elsewhere.
  const Tensor g = got.copy_to(Device::cpu());
  int64_t mismatches = 0;
  for (int64_t i = 0; i < x.numel(); ++i) {
    const uint16_t a = g.data<bf16>()[i].bits, b = want.data<bf16>()[i].bits;
    const bool nan_a = std::isnan(bf16::to_f32(a)), nan_b = std::isnan(bf16::to_f32(b));
    mismatches += nan_b ? !nan_a : a != b;
  }
  CHECK(mismatches == 0);
  CHECK(same_bytes(got.cast(DType::f32), want.cast(DType::f32)) == true);  // widening: exact
  for (int64_t n : {1, 7, 13, 33, 100003}) {
    const Tensor r = Tensor::randn({n}, DType::f32);
    CHECK(same_bytes(r.copy_to(kGpu).cast(DType::bf16), r.cast(DType::bf16)));
  }
}

TEST_CASE("cuda bf16: a bf16 tensor used twice sums its gradients like the CPU") {
  MG_SKIP_WITHOUT_GPU();
  Tensor grads[2];
  for (int k = 0; k < 2; ++k) {
    const Device dev = k ? kGpu : Device::cpu();
    Generator gen(4);
    Tensor x = Tensor::randn({33}, DType::f32, &gen).copy_to(dev).requires_grad_();
    Tensor xb = to(x, DType::bf16);
    backward(sum(to(xb, DType::f32) * 3.0 + to(xb, DType::f32) * 0.3));
    grads[k] = x.grad();
  }
  CHECK(same_bytes(grads[0], grads[1]));
}

TEST_CASE("cuda bf16: linear's bf16 GEMMs (cublasGemmEx, f32 accumulation) against the CPU reference") {
  MG_SKIP_WITHOUT_GPU();
  for (auto [rows, in, out] : {std::array<int64_t, 3>{1, 1, 1}, {7, 13, 33}, {33, 7, 13},
                               {13, 33, 1}, {512, 768, 1536}}) {
    CAPTURE(rows);
    CAPTURE(in);
    CAPTURE(out);
    Generator gen(rows + in + out);
    const Tensor x = Tensor::randn({rows, in}, DType::f32, &gen).cast(DType::bf16);
    const Tensor W = Tensor::randn({out, in}, DType::f32, &gen).cast(DType::bf16);
    const Tensor dy = Tensor::randn({rows, out}, DType::f32, &gen).cast(DType::bf16);
    Tensor y = Tensor::empty({rows, out}, DType::bf16), dx = Tensor::empty({rows, in}, DType::bf16),
           dW = Tensor::empty({out, in}, DType::bf16);
    cpu::linear_forward_bf16(x.data<bf16>(), W.data<bf16>(), y.data<bf16>(), rows, in, out);
    cpu::linear_backward_bf16(x.data<bf16>(), W.data<bf16>(), dy.data<bf16>(), dx.data<bf16>(),
                              dW.data<bf16>(), rows, in, out);
    const Tensor xg = x.copy_to(kGpu), Wg = W.copy_to(kGpu), dyg = dy.copy_to(kGpu);
    Tensor yg = Tensor::empty({rows, out}, DType::bf16, kGpu),
           dxg = Tensor::empty({rows, in}, DType::bf16, kGpu),
           dWg = Tensor::empty({out, in}, DType::bf16, kGpu);
    cuda::linear_forward_bf16(xg.data<bf16>(), Wg.data<bf16>(), yg.data<bf16>(), rows, in, out);
    cuda::linear_backward_bf16(xg.data<bf16>(), Wg.data<bf16>(), dyg.data<bf16>(),
                               dxg.data<bf16>(), dWg.data<bf16>(), rows, in, out);
    // Same products, other summation order: the results differ by at most a bf16 rounding.
    CHECK(test::rel_err(yg, y) < 1e-2);
    CHECK(test::rel_err(dxg, dx) < 1e-2);
    CHECK(test::rel_err(dWg, dW) < 1e-2);
  }
}

TEST_CASE("cuda bf16: causal_conv1d with bf16 activations against the CPU reference") {
  MG_SKIP_WITHOUT_GPU();
  for (auto [B, L, C, K] : {std::array<int64_t, 4>{1, 1, 1, 1}, {2, 7, 13, 4}, {3, 33, 7, 3},
                            {8, 1024, 1536, 4}}) {
    CAPTURE(L);
    CAPTURE(C);
    Generator gen(B * L + C);
    const Tensor x = Tensor::randn({B, L, C}, DType::f32, &gen).cast(DType::bf16);
    const Tensor dy = Tensor::randn({B, L, C}, DType::f32, &gen).cast(DType::bf16);
    const Tensor w = Tensor::randn({C, 1, K}, DType::f32, &gen), b = Tensor::randn({C}, DType::f32, &gen);
    Tensor y = Tensor::empty({B, L, C}, DType::bf16), dx = Tensor::empty({B, L, C}, DType::bf16);
    Tensor dw = Tensor::empty({C, 1, K}), db = Tensor::empty({C});
    cpu::causal_conv1d_forward_bf16(x.data<bf16>(), w.data<float>(), b.data<float>(), y.data<bf16>(), B, L, C, K);
    cpu::causal_conv1d_backward_bf16(x.data<bf16>(), w.data<float>(), dy.data<bf16>(), dx.data<bf16>(),
                                     dw.data<float>(), db.data<float>(), B, L, C, K);
    const Tensor xg = x.copy_to(kGpu), dyg = dy.copy_to(kGpu), wg = w.copy_to(kGpu), bg = b.copy_to(kGpu);
    Tensor yg = Tensor::empty({B, L, C}, DType::bf16, kGpu), dxg = Tensor::empty({B, L, C}, DType::bf16, kGpu);
    Tensor dwg = Tensor::empty({C, 1, K}, DType::f32, kGpu), dbg = Tensor::empty({C}, DType::f32, kGpu);
    cuda::causal_conv1d_forward_bf16(xg.data<bf16>(), wg.data<float>(), bg.data<float>(), yg.data<bf16>(), B, L, C, K);
    cuda::causal_conv1d_backward_bf16(xg.data<bf16>(), wg.data<float>(), dyg.data<bf16>(), dxg.data<bf16>(),
                                      dwg.data<float>(), dbg.data<float>(), B, L, C, K);
    // The taps are summed in the CPU's order with round-to-nearest products (no FMA) and the
    // rows in double: y and dx equal bit for bit unless the host contracted its loop.
    CHECK(test::rel_err(yg, y) < 1e-2);
    CHECK(test::rel_err(dxg, dx) < 1e-2);
    CHECK(test::rel_err(dwg, dw) < 1e-5);
    CHECK(test::rel_err(dbg, db) < 1e-5);
  }
}

TEST_CASE("cuda bf16: the unary maps on bf16 storage against the CPU reference") {
  MG_SKIP_WITHOUT_GPU();
  for (UnaryOp op : {UnaryOp::exp, UnaryOp::log, UnaryOp::sqrt, UnaryOp::rsqrt, UnaryOp::pow,
                     UnaryOp::sigmoid, UnaryOp::silu, UnaryOp::softplus, UnaryOp::tanh, UnaryOp::relu}) {
    for (int64_t n : {1, 7, 33, 100003}) {
      CAPTURE((int)op);
      CAPTURE(n);
      Generator gen(n);
      const bool positive = op == UnaryOp::log || op == UnaryOp::sqrt || op == UnaryOp::rsqrt || op == UnaryOp::pow;
      const Tensor x = Tensor::uniform({n}, positive ? 0.1 : -4, 4, DType::f32, &gen).cast(DType::bf16);
      const Tensor dy = Tensor::randn({n}, DType::f32, &gen).cast(DType::bf16);
      Tensor y = Tensor::empty({n}, DType::bf16), dx = Tensor::empty({n}, DType::bf16);
      cpu::unary_forward_bf16(op, x.data<bf16>(), y.data<bf16>(), n, 1.5f);
      cpu::unary_backward_bf16(op, x.data<bf16>(), y.data<bf16>(), dy.data<bf16>(), dx.data<bf16>(), n, 1.5f);
      const Tensor xg = x.copy_to(kGpu), yg_in = y.copy_to(kGpu), dyg = dy.copy_to(kGpu);
      Tensor yg = Tensor::empty({n}, DType::bf16, kGpu), dxg = Tensor::empty({n}, DType::bf16, kGpu);
      cuda::unary_forward_bf16(op, xg.data<bf16>(), yg.data<bf16>(), n, 1.5f);
      cuda::unary_backward_bf16(op, xg.data<bf16>(), yg_in.data<bf16>(), dyg.data<bf16>(), dxg.data<bf16>(), n, 1.5f);
      // libdevice vs the CPU's math differ by a few f32 ulp: at most one bf16 rounding apart.
      CHECK(test::rel_err(yg, y) < 1e-2);
      CHECK(test::rel_err(dxg, dx) < 1e-2);
    }
  }
}

TEST_CASE("cuda bf16: a mixed-precision Mamba LM step on CUDA follows the CPU emulation") {
  MG_SKIP_WITHOUT_GPU();
  SettingsGuard bf(test::settings_with(&Settings::precision, Precision::bf16));
  const nn::MambaConfig cfg = test::tiny_lm_config(/*V=*/40, /*N=*/8);
  std::vector<int32_t> v(2 * 17);
  for (size_t i = 0; i < v.size(); ++i) v[i] = (int32_t)((i * 7 + 3) % 40);
  const Tensor ids = Tensor::from_vector(v, {2, 17});
  double loss[2];
  std::vector<Tensor> grads[2];
  for (int k = 0; k < 2; ++k) {
    nn::MambaLM m(cfg, 3);
    if (k) m.to(kGpu);
    Tensor l = m.loss(k ? ids.copy_to(kGpu) : ids);
    backward(l);
    loss[k] = l.item();
    for (auto& p : m.named_parameters()) grads[k].push_back(p.tensor.grad());
  }
  CHECK(std::fabs(loss[1] - loss[0]) <= 1e-2 * std::fabs(loss[0]));
  for (size_t i = 0; i < grads[0].size(); ++i) CHECK(test::rel_err(grads[1][i], grads[0][i]) < 5e-2);
}

#endif  // MG_WITH_CUDA
