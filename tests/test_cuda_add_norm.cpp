// The CUDA twin of the fused residual add + RMSNorm (cuda/add_norm.cu) against the CPU kernel
// (the spec), for every storage pair <X, Y> (f32 / bf16 x and y), with and without a residual,
// with and without ds, on odd shapes, D past the shared-memory dw partial (the global path)
// and one realistic size: s bit for bit (one add on both sides), f32 results to 1e-5 relative
// (the row sums add in another order), bf16 results to one bf16 step; the backward bitwise
// repeatable; and the public op end to end with the tape, bf16 in and out. Without a visible
// GPU every case reports itself skipped (compiled, not yet run on a GPU).
#ifdef MG_WITH_CUDA
#include <doctest/doctest.h>

#include <array>
#include <cstring>
#include <type_traits>
#include <vector>

#include "autograd/tape.h"
#include "cuda/runtime.h"
#include "ops/add_norm.h"
#include "ops/arith.h"
#include "ops/convert.h"
#include "ops/reduce.h"
#include "test_util.h"

using namespace mg;

namespace {

const Device kGpu = Device::cuda(0);

template <typename S> DType dtype_of() { return std::is_same_v<S, bf16> ? DType::bf16 : DType::f32; }

bool same_bytes(const Tensor& a, const Tensor& b) {
  const Tensor x = a.copy_to(Device::cpu()), y = b.copy_to(Device::cpu());
  return x.nbytes() == y.nbytes() && std::memcmp(x.raw_data(), y.raw_data(), x.nbytes()) == 0;
}

// A kernel's outputs (forward and backward) on one device.
struct Out {
  Tensor y, s, rstd, dres, dx, dw;
};

// f32 results agree to 1e-5; a bf16 result to one bf16 step (2^-8 relative).
double tol(DType d) { return d == DType::bf16 ? 1e-2 : 1e-5; }

template <typename X, typename Y>
void compare(int64_t rows, int64_t D, bool with_residual, bool with_ds, uint64_t seed) {
  const DType xd = dtype_of<X>(), yd = dtype_of<Y>();
  Generator gen(seed);
  const Tensor x = Tensor::randn({rows, D}, DType::f32, &gen).cast(xd);
  const Tensor res = with_residual ? Tensor::randn({rows, D}, DType::f32, &gen) : Tensor();
  const Tensor w = Tensor::randn({D}, DType::f32, &gen);
  const Tensor dy = Tensor::randn({rows, D}, DType::f32, &gen).cast(yd);
  const Tensor ds = with_ds ? Tensor::randn({rows, D}, DType::f32, &gen) : Tensor();
  auto on = [](const Tensor& t, Device d) { return t.defined() ? t.copy_to(d) : Tensor(); };
  auto outs = [&](Device d) {
    return Out{Tensor::empty({rows, D}, yd, d), Tensor::empty({rows, D}, DType::f32, d),
               Tensor::empty({rows}, DType::f32, d), Tensor::empty({rows, D}, DType::f32, d),
               Tensor::empty({rows, D}, xd, d), Tensor::empty({D}, DType::f32, d)};
  };
  Out h = outs(Device::cpu()), g = outs(kGpu);
  const Tensor xg = on(x, kGpu), resg = on(res, kGpu), wg = on(w, kGpu), dyg = on(dy, kGpu), dsg = on(ds, kGpu);
  cpu::add_rms_norm_forward<float, X, Y>(x.data<X>(), res.data_or_null<float>(), w.data<float>(),
                                         h.y.data<Y>(), h.s.data<float>(), h.rstd.data<float>(), rows, D, 1e-5f);
  cuda::add_rms_norm_forward<X, Y>(xg.data<X>(), resg.data_or_null<float>(), wg.data<float>(),
                                   g.y.data<Y>(), g.s.data<float>(), g.rstd.data<float>(), rows, D, 1e-5f);
  CHECK(same_bytes(g.s, h.s));
  CHECK(test::rel_err(g.rstd, h.rstd) < 1e-5);
  CHECK(test::rel_err(g.y, h.y) < tol(yd));
  // The backward reads the CPU's s and rstd on both sides, so it is compared on its own.
  const Tensor sg = h.s.copy_to(kGpu), rstdg = h.rstd.copy_to(kGpu);
  cpu::add_rms_norm_backward<float, X, Y>(h.s.data<float>(), w.data<float>(), h.rstd.data<float>(),
                                          dy.data<Y>(), ds.data_or_null<float>(), h.dres.data<float>(),
                                          h.dx.data<X>(), h.dw.data<float>(), rows, D);
  cuda::add_rms_norm_backward<X, Y>(sg.data<float>(), wg.data<float>(), rstdg.data<float>(),
                                    dyg.data<Y>(), dsg.data_or_null<float>(), g.dres.data<float>(),
                                    g.dx.data<X>(), g.dw.data<float>(), rows, D);
  CHECK(test::rel_err(g.dres, h.dres) < 1e-5);
  CHECK(test::rel_err(g.dx, h.dx) < tol(xd));
  CHECK(test::rel_err(g.dw, h.dw) < 1e-5);
  // Again, with dresidual and dx skipped (dw alone) and then dw skipped: the same bits.
  Out g2 = outs(kGpu);
  cuda::add_rms_norm_backward<X, Y>(sg.data<float>(), wg.data<float>(), rstdg.data<float>(),
                                    dyg.data<Y>(), dsg.data_or_null<float>(), nullptr, nullptr,
                                    g2.dw.data<float>(), rows, D);
  cuda::add_rms_norm_backward<X, Y>(sg.data<float>(), wg.data<float>(), rstdg.data<float>(),
                                    dyg.data<Y>(), dsg.data_or_null<float>(), g2.dres.data<float>(),
                                    g2.dx.data<X>(), nullptr, rows, D);
  CHECK(same_bytes(g2.dw, g.dw));
  CHECK(same_bytes(g2.dres, g.dres));
  CHECK(same_bytes(g2.dx, g.dx));
}

}  // namespace

TEST_CASE("cuda add_rms_norm: the twin matches the CPU kernel for f32 and bf16 x / y, forward and backward") {
  MG_SKIP_WITHOUT_GPU();
  mg::cuda::backend_init();
  std::vector<std::array<int64_t, 2>> shapes;  // rows, D
  for (int64_t rows : {1, 7, 33, 130})
    for (int64_t D : {1, 7, 33, 300, 1100}) shapes.push_back({rows, D});
  shapes.push_back({9, 7000});     // the dw partial past 48 KB of shared memory: accumulated in global
  shapes.push_back({2048, 768});   // the 130m model's rows of one L 256 batch
  uint64_t seed = 1;
  for (auto [rows, D] : shapes)
    for (bool with_residual : {true, false})
      for (bool with_ds : {true, false}) {
        CAPTURE(rows); CAPTURE(D); CAPTURE(with_residual); CAPTURE(with_ds);
        compare<float, float>(rows, D, with_residual, with_ds, ++seed);
        compare<bf16, float>(rows, D, with_residual, with_ds, ++seed);
        compare<float, bf16>(rows, D, with_residual, with_ds, ++seed);
        compare<bf16, bf16>(rows, D, with_residual, with_ds, ++seed);
      }
}

TEST_CASE("cuda add_rms_norm: the public op with the tape, bf16 x and y, against the CPU") {
  MG_SKIP_WITHOUT_GPU();
  Generator gen(77);
  const Tensor x = Tensor::randn({3, 17, 96}, DType::f32, &gen).cast(DType::bf16);
  const Tensor res = Tensor::randn({3, 17, 96}, DType::f32, &gen), w = Tensor::randn({96}, DType::f32, &gen);
  const Tensor dy = Tensor::randn({3, 17, 96}, DType::f32, &gen), ds = Tensor::randn({3, 17, 96}, DType::f32, &gen);
  auto run = [&](Device d) {
    Tensor xl = x.copy_to(d).requires_grad_(), rl = res.copy_to(d).requires_grad_(), wl = w.copy_to(d).requires_grad_();
    AddNormResult r = add_rms_norm(xl, rl, wl, 1e-5, DType::bf16);
    backward(sum(to(r.y, DType::f32) * dy.copy_to(d)) + sum(r.residual * ds.copy_to(d)));
    return std::vector<Tensor>{r.y, r.residual, xl.grad(), rl.grad(), wl.grad()};
  };
  std::vector<Tensor> c = run(Device::cpu()), g = run(kGpu);
  CHECK(g[0].dtype() == DType::bf16);
  CHECK(g[2].dtype() == DType::bf16);
  CHECK(test::rel_err(g[0], c[0]) < 1e-2);
  CHECK(same_bytes(g[1], c[1]));
  CHECK(test::rel_err(g[2], c[2]) < 1e-2);
  CHECK(test::rel_err(g[3], c[3]) < 1e-5);
  CHECK(test::rel_err(g[4], c[4]) < 1e-5);
}

#endif  // MG_WITH_CUDA
