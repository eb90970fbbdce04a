// The CUDA runtime (devices, lazy init, caching allocator, copies, dispatch) and the CUDA twins
// of arith, unary, reduce, softmax/cross-entropy and the AdamW/grad-norm kernels.
//
// Two kinds of cases:
//   - "no device" cases run on a machine WITHOUT a visible GPU (CI, this build machine): the
//     backend must say so clearly (describe()), device_count() must be 0 without throwing, and
//     asking for a CUDA tensor must throw mg::Error naming the reason, while CPU work goes on.
//   - device cases (skipped, with a message, without a GPU) compare every CUDA kernel with its
//     CPU twin (the spec) on odd sizes (1, 7, 13, 33) and sizes that take the chunked paths:
//       err = max |cuda - cpu| / max(1, max |cpu|) <= tol,
//     and check determinism (two runs bitwise equal) and the allocator statistics.
#ifdef MG_WITH_CUDA
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "autograd/tape.h"
#include "core/allocator.h"
#include "core/dispatch.h"
#include "cuda/adamw.h"
#include "cuda/runtime.h"
#include "ops/arith.h"
#include "ops/convert.h"
#include "ops/reduce.h"
#include "ops/softmax.h"
#include "ops/unary.h"
#include "train/optimizer.h"
#include "test_util.h"

using namespace mg;
using test::bitwise_equal;
using test::settings_with;

namespace {

const Device kGpu = Device::cuda(0);

// Non-finite values are compared too: NaN must match NaN, an infinity the same infinity.
double rel_err(const Tensor& a, const Tensor& b) { return test::rel_err(a, b, /*nonfinite_equal=*/true); }

Tensor randn(const Shape& s, uint64_t seed) {
  Generator g(seed);
  return Tensor::randn(s, DType::f32, &g);
}

// Runs f on x (CPU) and on a GPU copy, with backward of sum(f(x) * w) for a fixed random w,
// and compares outputs and input gradients.
template <typename F>
void check_op_vs_cpu(const char* what, F f, const Tensor& x, double tol) {
  INFO(what << " x " << shape_str(x.shape()));
  Tensor xh = x.clone().requires_grad_();
  Tensor xd = x.copy_to(kGpu).requires_grad_();
  Tensor yh = f(xh), yd = f(xd);
  CHECK(yd.device() == kGpu);
  CHECK(rel_err(yd, yh) <= tol);
  Tensor w = randn(yh.shape(), 99);
  backward(sum(mul(yh, w)));
  backward(sum(mul(yd, w.copy_to(kGpu))));
  REQUIRE(xd.grad().defined());
  CHECK(xd.grad().device() == kGpu);
  CHECK(rel_err(xd.grad(), xh.grad()) <= tol);
}

}  // namespace

// ---- runs everywhere -------------------------------------------------------------------------

TEST_CASE("cuda runtime: without a GPU the backend says so and CPU keeps working") {
  if (cuda::available()) {
    MESSAGE("skipped: a GPU is visible, the no-device path cannot be exercised here");
    return;
  }
  int n = -1;
  CHECK_NOTHROW(n = cuda::device_count());
  CHECK(n == 0);
  CHECK_FALSE(cuda::available());
  CHECK_FALSE(cuda::no_device_reason().empty());
  std::string line = cuda::describe();
  CHECK(line.find("no GPU is visible") != std::string::npos);
  CHECK(line.find(cuda::compiled_architectures()) != std::string::npos);
  CHECK_FALSE(cuda::compiled_architectures().empty());
  CHECK_NOTHROW(cuda::synchronize());  // nothing was ever queued
  CHECK_NOTHROW(cuda::empty_cache());

  // Every way to a CUDA tensor gives the same clear mg::Error.
  const auto msg = doctest::Contains("built with CUDA, but no CUDA device is visible");
  CHECK_THROWS_WITH_AS(Tensor::zeros({2, 3}, DType::f32, kGpu), msg, mg::Error);
  CHECK_THROWS_WITH_AS(Tensor::ones({4}).copy_to(kGpu), msg, mg::Error);
  CHECK_THROWS_WITH_AS(memory_stats(kGpu), msg, mg::Error);
  CHECK_THROWS_WITH_AS(cuda::stream(), msg, mg::Error);
  CHECK_THROWS_AS(cuda::device_info(0), mg::Error);
  // ... and asking again gives it again (no half-initialised state).
  CHECK_THROWS_WITH_AS(Tensor::empty({1}, DType::f32, kGpu), msg, mg::Error);

  // The CPU path is untouched.
  Tensor x = Tensor::from_vector<float>({1, 2, 3}, {3});
  CHECK(sum(mul(x, x)).item() == doctest::Approx(14.0));
}

TEST_CASE("cuda runtime: a failed checked call names the call, file:line and the error") {
  // The messages MG_CUDA_CHECK / MG_CUBLAS_CHECK throw with (status 2 is cudaErrorMemoryAllocation
  // and CUBLAS_STATUS_ALLOC_FAILED is 3); the error strings come from the runtime, no GPU needed.
  std::string cuda_msg = cuda::cuda_error_message(2, "cudaMalloc(&p, size)",
                                                  "/home/me/mambagrad/cuda/allocator.cu", 112);
  CHECK(cuda_msg.find("CUDA error: cudaMalloc(&p, size) failed at cuda/allocator.cu:112: "
                      "cudaErrorMemoryAllocation (") == 0);
  std::string blas_msg = cuda::cublas_error_message(3, "cublasSgemm(h, ...)", "cuda/matmul.cu", 7);
  CHECK(blas_msg.find("cuBLAS error: cublasSgemm(h, ...) failed at cuda/matmul.cu:7: "
                      "CUBLAS_STATUS_ALLOC_FAILED (") == 0);
}

TEST_CASE("cuda runtime: switches and dispatch_device checks (no GPU needed)") {
  CHECK(settings().deterministic);  // the default
  {
    SettingsGuard off(settings_with(&Settings::deterministic, false));
    CHECK_FALSE(settings().deterministic);
  }
  CHECK(settings().precision == Precision::f32);  // the default: full f32 GEMMs
  {
    SettingsGuard on(settings_with(&Settings::precision, Precision::tf32));
    CHECK(settings().precision == Precision::tf32);
  }

  int cpu_calls = 0, cuda_calls = 0;
  auto cuda_fn = [&]<typename T>() { ++cuda_calls; };
  auto cpu_fn = [&]<typename T>() { cpu_calls += sizeof(T) == 8 ? 10 : 1; };
  dispatch_device(Device::cpu(), DType::f64, "op", cuda_fn, cpu_fn);
  CHECK(cpu_calls == 10);
  // CUDA kernels are f32 only: an f64 request is refused before any kernel runs.
  CHECK_THROWS_WITH_AS(dispatch_device(kGpu, DType::f64, "my_op", cuda_fn, cpu_fn),
                       doctest::Contains("my_op: CUDA kernels are f32 only, got f64"), mg::Error);
  CHECK(cuda_calls == 0);
}

// ---- device cases (skipped without a GPU) ------------------------------------------------------

TEST_CASE("cuda runtime: device info, describe, to(cuda)/to(cpu) round trips") {
  MG_SKIP_WITHOUT_GPU();
  cuda::DeviceInfo d = cuda::device_info(0);
  CHECK_FALSE(d.name.empty());
  CHECK(d.cc_major >= 3);
  CHECK(d.total_memory > 0);
  CHECK(cuda::describe().find(d.name) != std::string::npos);
  for (int64_t n : {0, 1, 7, 13, 33, 100003}) {
    Tensor x = randn({n}, 1 + n);
    Tensor g = x.copy_to(kGpu);
    CHECK(g.device() == kGpu);
    CHECK(bitwise_equal(g.copy_to(Device::cpu()), x));
    CHECK(bitwise_equal(g.clone().copy_to(Device::cpu()), x));
  }
  Tensor ids = Tensor::from_vector<int32_t>({3, -1, 7}, {3});
  CHECK(ids.copy_to(kGpu).to_vector<int32_t>() == std::vector<int32_t>{3, -1, 7});
  CHECK(Tensor::zeros({5}, DType::f32, kGpu).to_vector<float>() == std::vector<float>(5, 0.f));
  CHECK(Tensor::full({}, 2.5, DType::f32, kGpu).item() == 2.5);
  // Gradients flow back through the copy.
  Tensor x = randn({6}, 5).requires_grad_();
  backward(sum(mul(to(x, kGpu), 3.0)));
  REQUIRE(x.grad().defined());
  CHECK(x.grad().device() == Device::cpu());
  CHECK(x.grad().to_vector<float>() == std::vector<float>(6, 3.f));
}

TEST_CASE("cuda runtime: caching allocator statistics") {
  MG_SKIP_WITHOUT_GPU();
  cuda::synchronize();
  cuda::empty_cache();
  MemoryStats s0 = memory_stats(kGpu);
  CHECK(s0.cached_bytes == 0);
  reset_peak_memory(kGpu);
  const int64_t n = 1 << 20;  // 4 MiB
  {
    Tensor a = Tensor::empty({n}, DType::f32, kGpu);
    MemoryStats s1 = memory_stats(kGpu);
    CHECK(s1.current_bytes == s0.current_bytes + 4 * n);
    CHECK(s1.peak_bytes >= s1.current_bytes);
    CHECK(s1.num_allocs == s0.num_allocs + 1);
  }
  MemoryStats s2 = memory_stats(kGpu);
  CHECK(s2.current_bytes == s0.current_bytes);
  CHECK(s2.cached_bytes >= 4 * n);  // kept for reuse, not cudaFree'd
  CHECK(s2.peak_bytes >= s0.current_bytes + 4 * n);
  {
    Tensor b = Tensor::empty({n}, DType::f32, kGpu);  // same bucket: served from the cache
    CHECK(memory_stats(kGpu).cached_bytes == s2.cached_bytes - 4 * n);
  }
  reset_peak_memory(kGpu);
  CHECK(memory_stats(kGpu).peak_bytes == memory_stats(kGpu).current_bytes);
  cuda::empty_cache();
  CHECK(memory_stats(kGpu).cached_bytes == 0);
}

TEST_CASE("cuda ops: unary forward and backward match the CPU") {
  MG_SKIP_WITHOUT_GPU();
  for (int64_t n : {1, 7, 13, 33, 4099}) {
    Tensor x = randn({n}, 10 + n);
    Tensor pos = add(mul(x, x), 0.1);  // > 0 for log, sqrt, rsqrt, pow
    Tensor wide = mul(x, 12.0);        // crosses the softplus threshold 20
    check_op_vs_cpu("exp", [](const Tensor& t) { return exp(t); }, x, 1e-6);
    check_op_vs_cpu("log", [](const Tensor& t) { return log(t); }, pos, 1e-6);
    check_op_vs_cpu("sqrt", [](const Tensor& t) { return sqrt(t); }, pos, 1e-6);
    check_op_vs_cpu("rsqrt", [](const Tensor& t) { return rsqrt(t); }, pos, 1e-5);
    check_op_vs_cpu("pow", [](const Tensor& t) { return pow(t, 1.7); }, pos, 1e-6);
    check_op_vs_cpu("sigmoid", [](const Tensor& t) { return sigmoid(t); }, wide, 1e-6);
    check_op_vs_cpu("silu", [](const Tensor& t) { return silu(t); }, wide, 1e-6);
    check_op_vs_cpu("softplus", [](const Tensor& t) { return softplus(t); }, wide, 1e-6);
    check_op_vs_cpu("tanh", [](const Tensor& t) { return tanh(t); }, x, 1e-6);
    check_op_vs_cpu("relu", [](const Tensor& t) { return relu(t); }, x, 0.0);
  }
}

TEST_CASE("cuda ops: arithmetic with every broadcast kind matches the CPU") {
  MG_SKIP_WITHOUT_GPU();
  struct Case { Shape a, b; };
  for (const Case& c : {Case{{7, 13}, {7, 13}}, Case{{5, 7, 33}, {33}}, Case{{33}, {5, 7, 33}},
                        Case{{13, 7}, {13, 1}}, Case{{13, 1}, {13, 7}}, Case{{4099}, {1}},
                        Case{{1}, {3, 5}}}) {
    Tensor a = randn(c.a, 21), b = add(mul(randn(c.b, 22), 0.5), 2.0);  // b away from 0 for div
    for (int op = 0; op < 4; ++op) {
      auto f = [&](const Tensor& x) {
        Tensor y = x.device().is_cuda() ? b.copy_to(kGpu) : b;
        return op == 0 ? add(x, y) : op == 1 ? sub(x, y) : op == 2 ? mul(x, y) : div(x, y);
      };
      check_op_vs_cpu("binary op", f, a, 1e-6);
    }
  }
  Tensor x = randn({7, 33}, 23);
  check_op_vs_cpu("scalar ops", [](const Tensor& t) { return rdiv(2.0, add(t, 5.0)) - 3.0 * t; },
                  x, 1e-6);
  // sum_to_shape over rows (long: chunked) and columns.
  Tensor big = randn({3000, 13}, 24);
  CHECK(rel_err(sum_to_shape(big.copy_to(kGpu), {13}), sum_to_shape(big, {13})) <= 1e-6);
  CHECK(rel_err(sum_to_shape(big.copy_to(kGpu), {3000, 1}), sum_to_shape(big, {3000, 1})) <= 1e-6);
}

TEST_CASE("cuda ops: sum, mean, max match the CPU (argmax included) and are deterministic") {
  MG_SKIP_WITHOUT_GPU();
  for (const Shape& s : {Shape{7, 13, 33}, Shape{3, 40000}, Shape{2, 2000, 3}, Shape{1}}) {
    Tensor x = randn(s, 31);
    for (int64_t d = 0; d < (int64_t)s.size(); ++d) {
      check_op_vs_cpu("sum dim", [d](const Tensor& t) { return sum(t, d); }, x, 1e-6);
      check_op_vs_cpu("mean dim", [d](const Tensor& t) { return mean(t, d, true); }, x, 1e-6);
      check_op_vs_cpu("max dim", [d](const Tensor& t) { return max(t, d); }, x, 0.0);
    }
    check_op_vs_cpu("sum all", [](const Tensor& t) { return sum(t); }, x, 1e-6);
    check_op_vs_cpu("max all", [](const Tensor& t) { return max(t); }, x, 0.0);
  }
  // Ties go to the first maximum, NaN beats numbers: the gradient lands where the CPU's does.
  Tensor ties = Tensor::from_vector<float>({1, 5, 5, 2, 5, 0}, {2, 3});
  check_op_vs_cpu("max ties", [](const Tensor& t) { return max(t, 1); }, ties, 0.0);
  check_op_vs_cpu("max all ties", [](const Tensor& t) { return max(t); }, ties, 0.0);
  Tensor nan = Tensor::from_vector<float>({1, NAN, 3, NAN}, {4});
  CHECK(std::isnan(max(nan.copy_to(kGpu)).item()));
  // Deterministic: the same input gives the same bits.
  Tensor big = randn({1 << 21}, 32).copy_to(kGpu);
  CHECK(bitwise_equal(sum(big), sum(big)));
  CHECK(bitwise_equal(sum(big.view({512, 4096}), 0), sum(big.view({512, 4096}), 0)));
}

TEST_CASE("cuda ops: softmax, log_softmax and cross_entropy match the CPU") {
  MG_SKIP_WITHOUT_GPU();
  for (const Shape& s : {Shape{7, 13}, Shape{33, 1}, Shape{3, 5000}, Shape{4, 7, 33}}) {
    Tensor x = mul(randn(s, 41), 4.0);
    for (int64_t d : {(int64_t)-1, (int64_t)0}) {
      check_op_vs_cpu("softmax", [d](const Tensor& t) { return softmax(t, d); }, x, 1e-6);
      check_op_vs_cpu("log_softmax", [d](const Tensor& t) { return log_softmax(t, d); }, x, 1e-6);
    }
  }
  for (int64_t V : {1, 7, 33, 5000}) {
    int64_t N = 13;
    Tensor logits = mul(randn({N, V}, 42), 3.0);
    std::vector<int32_t> t(N);
    for (int64_t r = 0; r < N; ++r) t[r] = r % 4 == 3 ? -100 : (int32_t)((r * 7) % V);
    Tensor targets = Tensor::from_vector<int32_t>(t, {N});
    Tensor td = targets.copy_to(kGpu);
    check_op_vs_cpu("cross_entropy", [&](const Tensor& l) {
      return cross_entropy(l, l.device().is_cuda() ? td : targets);
    }, logits, 1e-6);
  }
  // All ignored: loss 0, gradient 0 (as on the CPU).
  Tensor logits = randn({3, 5}, 43).copy_to(kGpu).requires_grad_();
  Tensor ignored = Tensor::full({3}, -100, DType::i32).copy_to(kGpu);
  Tensor loss = cross_entropy(logits, ignored);
  CHECK(loss.item() == 0.0);
  backward(loss);
  CHECK(logits.grad().to_vector<float>() == std::vector<float>(15, 0.f));
  // A bad id raises mg::Error naming it and its position, as on the CPU.
  Tensor bad = Tensor::from_vector<int32_t>({0, 9, 1}, {3}).copy_to(kGpu);
  CHECK_THROWS_WITH_AS(cross_entropy(logits, bad), doctest::Contains("target id 9 at position 1"),
                       mg::Error);
}

TEST_CASE("cuda ops: fused AdamW and the sum of squares match the CPU") {
  MG_SKIP_WITHOUT_GPU();
  for (int64_t n : {1, 7, 33, 100003}) {
    Tensor p = randn({n}, 51), g = randn({n}, 52), m = mul(randn({n}, 53), 0.1);
    Tensor v0 = randn({n}, 54);
    Tensor v = mul(mul(v0, v0), 0.01);  // second moments are >= 0
    Tensor pd = p.copy_to(kGpu), gd = g.copy_to(kGpu), md = m.copy_to(kGpu), vd = v.copy_to(kGpu);
    cpu::adamw_update<float>(p.data<float>(), g.data<float>(), m.data<float>(), v.data<float>(),
                             n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 0.19f, 0.0975f, 0.5f);
    cuda::adamw_update(pd.data<float>(), gd.data<float>(), md.data<float>(), vd.data<float>(), n,
                       1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 0.19f, 0.0975f, 0.5f);
    CHECK(rel_err(pd, p) <= 1e-6);
    CHECK(rel_err(md, m) <= 1e-6);
    CHECK(rel_err(vd, v) <= 1e-6);

    double ref = 0;
    for (float x : g.to_vector<float>()) ref += (double)x * x;
    Tensor out = Tensor::full({}, 123.0, DType::f64, kGpu);  // overwritten, not added to
    cuda::sum_of_squares(gd.data<float>(), n, out.data<double>());
    CHECK(out.item() == doctest::Approx(ref).epsilon(1e-12));
    Tensor acc = Tensor::zeros({}, DType::f64, kGpu), scale = Tensor::empty({}, DType::f32, kGpu);
    cuda::accumulate_sum_of_squares(gd.data<float>(), n, acc.data<double>());
    cuda::accumulate_sum_of_squares(gd.data<float>(), n, acc.data<double>());
    CHECK(acc.item() == doctest::Approx(2 * ref).epsilon(1e-12));
    cuda::clip_scale_device(acc.data<double>(), 1.0, scale.data<float>(), nullptr);
    CHECK(scale.item() == doctest::Approx(std::min(1.0, 1.0 / (std::sqrt(2 * ref) + 1e-6))));
  }
}

#endif  // MG_WITH_CUDA
