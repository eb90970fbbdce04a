// examples/bench_ops — how fast are mambagrad's matmul and elementwise ops on this machine?
//
// matmul: GFLOP/s (2 M N K / time) of mambagrad's matmul against the same GEMM called on Eigen
// directly (the peer: mambagrad's matmul is a thin layer over Eigen, so anything it loses is
// overhead of ours). Elementwise: GB/s (bytes read + written / time) of a few ops against a
// plain memcpy of the same bytes (the bound: an elementwise op cannot beat streaming memory).
//
//   ./build/examples/bench_ops [--json] [--repeats N] [--device cpu]
#include <Eigen/Core>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "autograd/grad_mode.h"
#include "core/parallel.h"
#include "core/tensor.h"
#include "examples/bench_util.h"
#include "ops/arith.h"
#include "ops/matmul.h"
#include "ops/unary.h"

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
                std::strcmp(unit, "gflops") == 0 ? "GFLOP/s" : "GB/s");
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

int main(int argc, char** argv) {
  int repeats = 10;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--json") g_json = true;
    else if (a == "--repeats" && i + 1 < argc) repeats = std::stoi(argv[++i]);
    else if (a == "--device" && i + 1 < argc) {
      std::string d = argv[++i];
      if (d != "cpu") { std::fprintf(stderr, "bench_ops: --device %s: only cpu in this build\n", d.c_str()); return 2; }
    } else {
      std::printf("usage: bench_ops [--json] [--repeats N] [--device cpu]\n\n"
                  "Times f32 matmul (256..2048, and batched) through mambagrad and through Eigen\n"
                  "directly (GFLOP/s), and elementwise ops against memcpy (GB/s). Medians of N runs.\n");
      return a == "--help" || a == "-h" ? 0 : 2;
    }
  }
  NoGradGuard no_grad;
  if (!g_json) std::printf("threads: %d\n%-10s %-14s %-18s %13s %18s\n", num_threads(), "impl", "op", "shape", "median", "rate");
  for (int64_t n : {256, 512, 1024, 2048}) bench_matmul(1, n, n >= 2048 ? std::max(3, repeats / 3) : repeats);
  bench_matmul(16, 256, repeats);
  bench_matmul(8, 512, repeats);
  for (int64_t n : {int64_t(1) << 20, int64_t(1) << 24}) bench_elementwise(n, repeats);
  return 0;
}
