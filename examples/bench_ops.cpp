// examples/bench_ops — how fast are mambagrad's matmul and elementwise ops on this machine?
//
// matmul: GFLOP/s (2 M N K / time) of mambagrad's matmul against the same GEMM called on Eigen
// directly (the peer: mambagrad's matmul is a thin layer over Eigen, so anything it loses is
// overhead of ours). Elementwise: GB/s (bytes read + written / time) of a few ops against a
// plain memcpy of the same bytes (the bound: an elementwise op cannot beat streaming memory).
//
// --device cuda (a CUDA build with a visible GPU): matmul in TFLOP/s against cublasSgemm called
// directly on raw buffers (mambagrad's matmul is cuBLAS plus its tensor allocation), and the
// elementwise, norm and conv1d kernels in GB/s against a device-to-device cudaMemcpy of the
// same bytes (the bandwidth bound). GPU times are cudaEvent medians (cuda/bench.h). --tf32 lets
// cuBLAS use TF32 tensor cores (both for mambagrad and for the peer).
//
//   ./build/examples/bench_ops [--json] [--repeats N] [--device cpu|cuda] [--tf32]   (see --help)
#include <Eigen/Core>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "autograd/grad_mode.h"
#include "core/parallel.h"
#include "core/settings.h"
#include "core/tensor.h"
#include "examples/bench_util.h"
#include "examples/cli.h"
#include "ops/add_norm.h"
#include "ops/arith.h"
#include "ops/conv1d.h"
#include "ops/matmul.h"
#include "ops/norm.h"
#include "ops/unary.h"
#ifdef MG_WITH_CUDA
#include "cuda/bench.h"
#include "cuda/runtime.h"
#endif

using namespace mg;
using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

static bool g_json = false;

static void emit(const char* impl, const char* op, const std::string& shape, double ms,
                 const char* unit, double value) {
  if (g_json)
    std::printf("{\"impl\": \"%s\", \"op\": \"%s\", \"shape\": \"%s\", \"median_ms\": %.4f, \"%s\": %.2f}\n",
                impl, op, shape.c_str(), ms, unit, value);
  else
    std::printf("%-10s %-14s %-18s %10.3f ms %10.2f %s\n", impl, op, shape.c_str(), ms, value,
                std::strcmp(unit, "gflops") == 0   ? "GFLOP/s"
                : std::strcmp(unit, "tflops") == 0 ? "TFLOP/s"
                                                   : "GB/s");
}

static void bench_matmul(int64_t batch, int64_t n, int repeats) {
  std::string shape = (batch > 1 ? std::to_string(batch) + "x" : "") + std::to_string(n) + "^3";
  Tensor a = Tensor::randn(batch > 1 ? Shape{batch, n, n} : Shape{n, n});
  Tensor b = Tensor::randn(batch > 1 ? Shape{batch, n, n} : Shape{n, n});
  double flops = 2.0 * batch * n * n * n;
  double ms = bench::median_ms([&] { Tensor c = matmul(a, b); }, repeats);
  emit("mambagrad", batch > 1 ? "bmm" : "matmul", shape, ms, "gflops", flops / ms / 1e6);

  RowMat c(n, n);
  double ms_e = bench::median_ms([&] {
    for (int64_t i = 0; i < batch; ++i) {
      Eigen::Map<const RowMat> A(a.data<float>() + i * n * n, n, n), B(b.data<float>() + i * n * n, n, n);
      c.noalias() = A * B;
    }
  }, repeats);
  emit("eigen", batch > 1 ? "bmm" : "matmul", shape, ms_e, "gflops", flops / ms_e / 1e6);
}

static void bench_elementwise(int64_t n, int repeats) {
  std::string shape = std::to_string(n);
  Tensor x = Tensor::randn({n}), y = Tensor::randn({n});
  double f = sizeof(float);
  struct Case { const char* name; double bytes; std::function<void()> run; };
  std::vector<Case> cases = {
      {"add", 3 * n * f, [&] { Tensor z = add(x, y); }},
      {"mul", 3 * n * f, [&] { Tensor z = mul(x, y); }},
      {"add_scalar", 2 * n * f, [&] { Tensor z = add(x, 1.0); }},
      {"relu", 2 * n * f, [&] { Tensor z = relu(x); }},
      {"silu", 2 * n * f, [&] { Tensor z = silu(x); }},
      {"exp", 2 * n * f, [&] { Tensor z = exp(x); }},
  };
  for (auto& c : cases) {
    double ms = bench::median_ms(c.run, repeats);
    emit("mambagrad", c.name, shape, ms, "gbps", c.bytes / ms / 1e6);
  }
  // The bound: memcpy of n floats (read n, write n) into a buffer that is already mapped,
  // split over the same threads as the ops.
  std::vector<float> dst(n);
  const float* src = x.data<float>();
  double ms = bench::median_ms([&] {
    parallel_for(n, kElementwiseGrain, [&](int64_t s, int64_t e) {
      std::memcpy(dst.data() + s, src + s, (e - s) * sizeof(float));
    });
  }, repeats);
  emit("memcpy", "copy", shape, ms, "gbps", 2 * n * f / ms / 1e6);
}


#ifdef MG_WITH_CUDA
// ---- --device cuda ------------------------------------------------------------------------

static void bench_matmul_cuda(int64_t batch, int64_t n, int repeats) {
  std::string shape = (batch > 1 ? std::to_string(batch) + "x" : "") + std::to_string(n) + "^3";
  Device gpu = Device::cuda(0);
  Tensor a = Tensor::randn(batch > 1 ? Shape{batch, n, n} : Shape{n, n}).copy_to(gpu);
  Tensor b = Tensor::randn(batch > 1 ? Shape{batch, n, n} : Shape{n, n}).copy_to(gpu);
  double tflop = 2.0 * batch * n * n * n / 1e12;
  const char* op = batch > 1 ? "bmm" : "matmul";
  double ms = cuda::bench::median_ms([&] { Tensor c = matmul(a, b); }, repeats);
  emit("mambagrad", op, shape, ms, "tflops", tflop / (ms / 1e3));
  double ms_c = cuda::bench::cublas_sgemm_ms(batch, n, n, n, repeats);
  emit("cublas", op, shape, ms_c, "tflops", tflop / (ms_c / 1e3));
}

// One memory-bound case: `bytes` = bytes read + written by the kernel.
struct GpuCase { const char* name; std::string shape; double bytes; std::function<void()> run; };

static void run_gpu_cases(const std::vector<GpuCase>& cases, int repeats) {
  for (const GpuCase& c : cases) {
    try {
      double ms = cuda::bench::median_ms(c.run, repeats);
      emit("mambagrad", c.name, c.shape, ms, "gbps", c.bytes / ms / 1e6);
    } catch (const Error& e) {  // an op without a CUDA kernel yet
      std::fprintf(stderr, "bench_ops: %s skipped: %s\n", c.name, e.what());
    }
  }
}

static void bench_memory_bound_cuda(int repeats) {
  Device gpu = Device::cuda(0);
  double f = sizeof(float);
  int64_t n = int64_t(1) << 26;  // 256 MiB per f32 tensor: far beyond L2
  std::string ns = std::to_string(n);
  Tensor x = Tensor::randn({n}).copy_to(gpu), y = Tensor::randn({n}).copy_to(gpu);
  int64_t rows = 16384, D = 2048;
  std::string nd = std::to_string(rows) + "x" + std::to_string(D);
  Tensor h = Tensor::randn({rows, D}).copy_to(gpu), w = Tensor::randn({D}).copy_to(gpu);
  Tensor h2 = Tensor::randn({rows, D}).copy_to(gpu), h16 = h.cast(DType::bf16);
  int64_t B = 8, L = 2048, C = 2048, K = 4;
  std::string cs = std::to_string(B) + "x" + std::to_string(L) + "x" + std::to_string(C);
  Tensor xc = Tensor::randn({B, L, C}).copy_to(gpu), wc = Tensor::randn({C, 1, K}).copy_to(gpu);
  Tensor bc = Tensor::randn({C}).copy_to(gpu);
  double hb = (double)rows * D * f, cb = (double)B * L * C * f;
  std::vector<GpuCase> cases = {
      {"add", ns, 3 * n * f, [&] { Tensor z = add(x, y); }},
      {"mul", ns, 3 * n * f, [&] { Tensor z = mul(x, y); }},
      {"silu", ns, 2 * n * f, [&] { Tensor z = silu(x); }},
      {"exp", ns, 2 * n * f, [&] { Tensor z = exp(x); }},
      {"rms_norm", nd, 2 * hb, [&] { Tensor z = rms_norm(h, w); }},
      {"layer_norm", nd, 2 * hb, [&] { Tensor z = layer_norm(h, w, w); }},
      // The Mamba block's residual add + norm: fused (reads x, residual; writes s, y), the
      // same with bf16 x and y (mixed precision), and the unfused pair, rated by the fused
      // op's bytes (so the rates compare as speed).
      {"add_rms_norm", nd, 4 * hb, [&] { AddNormResult r = add_rms_norm(h, h2, w); }},
      {"add_rms_bf16", nd, 3 * hb, [&] { AddNormResult r = add_rms_norm(h16, h2, w, 1e-5, DType::bf16); }},
      {"add,rms_norm", nd, 4 * hb, [&] { Tensor z = rms_norm(add(h2, h), w); }},
      {"conv1d", cs, 2 * cb, [&] { Tensor z = causal_conv1d(xc, wc, bc); }},
  };
  run_gpu_cases(cases, repeats);
  // The bound: a device-to-device copy (reads and writes the bytes once each).
  double ms = cuda::bench::memcpy_d2d_ms(n * (int64_t)f, repeats);
  emit("cudaMemcpy", "copy", ns, ms, "gbps", 2 * n * f / ms / 1e6);
}

static int run_cuda(int repeats, bool tf32) {
  if (!cuda::available()) {
    std::fprintf(stderr, "bench_ops: --device cuda: no CUDA device is visible\n");
    return 2;
  }
  cuda::backend_init();
  Settings s = settings();
  s.precision = tf32 ? Precision::tf32 : Precision::f32;
  SettingsGuard tf32_for_this_run(s);
  if (!g_json)  // cuda::describe() ends with describe_settings(): "..., tf32 on|off"
    std::printf("%s\n%-10s %-14s %-18s %13s %18s\n", cuda::describe().c_str(), "impl", "op",
                "shape", "median", "rate");
  for (int64_t n : {1024, 2048, 4096, 8192}) bench_matmul_cuda(1, n, repeats);
  bench_matmul_cuda(64, 256, repeats);
  bench_matmul_cuda(16, 1024, repeats);
  bench_memory_bound_cuda(repeats);
  return 0;
}
#endif  // MG_WITH_CUDA

int main(int argc, char** argv) {
  int64_t repeats = 10;
  bool tf32 = false;
  std::string device = "cpu";
  examples::Cli cli("bench_ops",
                    "cpu: f32 matmul (256..2048, and batched) through mambagrad and through Eigen "
                    "directly (GFLOP/s), and elementwise ops against memcpy (GB/s). cuda: f32 matmul "
                    "(1024..8192, and batched) through mambagrad and through cuBLAS directly (TFLOP/s), "
                    "elementwise, norm and conv1d kernels against a device-to-device cudaMemcpy (GB/s). "
                    "Medians of --repeats runs.");
  cli.add("--json", &g_json, "one JSON object per line");
  cli.add("--repeats", &repeats, "timed runs per measurement", {.min = 1, .max = 100000});
  cli.add("--device", &device, "where to run", {.choices = {"cpu", "cuda"}});
  cli.add("--tf32", &tf32, "cuda: allow TF32 tensor cores");
  if (!cli.parse(argc, argv)) return cli.exit_code();
  const bool on_cuda = device == "cuda";
  if (on_cuda && !cuda_compiled())
    return cli.error("--device cuda", "this build has no CUDA backend (configure with -DMG_CUDA=ON)");
  NoGradGuard no_grad;
  if (on_cuda) {
#ifdef MG_WITH_CUDA
    return run_cuda(repeats, tf32);
#endif
  }
  (void)tf32;  // only --device cuda uses it
  if (!g_json) std::printf("threads: %d; %s\n%-10s %-14s %-18s %13s %18s\n", num_threads(), describe_settings().c_str(), "impl", "op", "shape", "median", "rate");
  for (int64_t n : {256, 512, 1024, 2048}) bench_matmul(1, n, (int)(n >= 2048 ? std::max<int64_t>(3, repeats / 3) : repeats));
  bench_matmul(16, 256, repeats);
  bench_matmul(8, 512, repeats);
  for (int64_t n : {int64_t(1) << 20, int64_t(1) << 24}) bench_elementwise(n, repeats);
  return 0;
}
