// examples/bench_scan.cpp — the selective scan: fast kernel vs sequential loop vs composed
// reference, forward and forward+backward, time, state updates per second and peak memory.
//
//   ./build/examples/bench_scan                         the whole sweep (B=8, ED x N x L)
//   ./build/examples/bench_scan --ED 512 --N 16 --L 1024 --pass fwd+bwd
//   ./build/examples/bench_scan --bound                 this CPU's register-only bounds (fwd, bwd,
//                                                       fwd+bwd; see bound_updates_per_s)
//   ./build/examples/bench_scan --json                  one JSON object per line
//   ./build/examples/bench_scan --device cuda           the CUDA kernels (v2; --versions v1,v2) (bench_scan_cuda.h)
//
// "fwd" is an inference forward (no input requires grad: nothing is saved). "fwd+bwd" makes
// every input require grad, runs the forward and backward(y, dy). peak_bytes is the allocator's
// peak during the pass minus what was live before it (inputs and dy are excluded, outputs,
// saved tensors and gradients included). A state update is one (b, t, d, n): B*L*ED*N per pass.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "autograd/tape.h"
#include "bench_scan_cuda.h"
#include "bench_util.h"
#include "core/allocator.h"
#include "core/parallel.h"
#include "core/settings.h"
#include "ops/arith.h"
#include "ops/selective_scan/selective_scan.h"
#include "core/vmath.h"

using namespace mg;

namespace {

struct Flags {
  bool json = false, bound = false;
  int64_t repeats = 5;
  int64_t B = 8, L = -1, ED = -1, N = -1, chunk = kDefaultScanChunk;
  std::string impl, pass;
  double max_reference = 1 << 26;  // state updates above which the reference is skipped
  double max_sequential = 1 << 28;
};

// The CPU benchmark's flags; --device is taken off the line before (see main).
int parse(int argc, char** argv, Flags& f) {
  examples::Cli cli("bench_scan",
                    "Selective scan on the CPU: the fast kernel, the sequential loop and the composed "
                    "reference, forward and forward+backward (medians after one warm-up). Without "
                    "--B/--L/--ED/--N it sweeps B = 8, ED in {512, 1536}, N in {16, 64}, L in "
                    "{256, 1024, 4096}.");
  cli.usage({"bench_scan [options]", "bench_scan --device cuda [options]   (`bench_scan --device cuda --help`)"});
  cli.add("--B", &f.B, "batch", {.min = 1, .max = 1 << 20});
  cli.add("--L", &f.L, "run only this length (-1: the sweep)", {.min = -1, .max = 1 << 24});
  cli.add("--ED", &f.ED, "run only this d_inner (-1: the sweep)", {.min = -1, .max = 1 << 20});
  cli.add("--N", &f.N, "run only this d_state (-1: the sweep)", {.min = -1, .max = 1024});
  cli.add("--impl", &f.impl, "run only this implementation", {.choices = {"fast", "sequential", "reference"}});
  cli.add("--pass", &f.pass, "run only this pass", {.choices = {"fwd", "fwd+bwd"}});
  cli.add("--repeats", &f.repeats, "timed runs after one warm-up (the median is reported)", {.min = 1, .max = 100000});
  cli.add("--chunk", &f.chunk, "T: the fast kernel's chunk length", {.min = 1, .max = 1 << 20});
  cli.add("--max-reference", &f.max_reference, "skip the reference above this many state updates", {.min = 0});
  cli.add("--max-sequential", &f.max_sequential, "skip the sequential loop above this many", {.min = 0});
  cli.add("--bound", &f.bound, "measure the register-only fwd / bwd / fwd+bwd bounds and exit");
  cli.add("--json", &f.json, "one JSON object per line");
  cli.note("--device cpu|cuda (default: cpu): cuda runs the CUDA scan kernels (v2; --versions) on the GPU.");
  return cli.parse(argc, argv) ? -1 : cli.exit_code();
}

// Realistic inputs: A = -(n+1) (S4D-real), softplus(bias) ~ 0.01, delta_raw ~ N(0, 0.25).
struct Inputs { Tensor u, delta, A, B, C, D, z, bias; };
Inputs make_inputs(int64_t B, int64_t L, int64_t ED, int64_t N) {
  Generator g(1);
  Inputs x;
  x.u = Tensor::randn({B, L, ED}, DType::f32, &g);
  x.delta = Tensor::randn({B, L, ED}, DType::f32, &g) * 0.5;
  std::vector<float> A(ED * N);
  for (int64_t i = 0; i < ED * N; ++i) A[i] = -float(i % N + 1);
  x.A = Tensor::from_vector<float>(A, {ED, N});
  x.B = Tensor::randn({B, L, N}, DType::f32, &g);
  x.C = Tensor::randn({B, L, N}, DType::f32, &g);
  x.D = Tensor::ones({ED});
  x.z = Tensor::randn({B, L, ED}, DType::f32, &g);
  x.bias = Tensor::full({ED}, -4.6);  // softplus(-4.6) = 0.01
  return x;
}

ScanResult call(const std::string& impl, const Inputs& x, int64_t chunk) {
  if (impl == "reference")
    return selective_scan_reference(x.u, x.delta, x.A, x.B, x.C, x.D, x.z, x.bias, true);
  Settings s = settings();  // for this call (the backward runs the kernels the forward chose)
  s.scan_kernel = parse_scan_kernel(impl);
  s.scan_chunk = chunk;
  SettingsGuard guard(s);
  return selective_scan(x.u, x.delta, x.A, x.B, x.C, x.D, x.z, x.bias, true);
}

struct Measure { double ms; int64_t peak; };
Measure measure(const std::string& impl, const std::string& pass, Inputs x, int64_t chunk,
                int repeats) {
  const bool grad = pass == "fwd+bwd";
  if (grad)
    for (Tensor* t : {&x.u, &x.delta, &x.A, &x.B, &x.C, &x.D, &x.z, &x.bias}) t->requires_grad_();
  Tensor dy = Tensor::randn(x.u.shape());
  int64_t peak = 0;
  auto once = [&]() {
    tape().clear();
    for (Tensor* t : {&x.u, &x.delta, &x.A, &x.B, &x.C, &x.D, &x.z, &x.bias}) t->zero_grad();
    const int64_t before = memory_stats().current_bytes;
    reset_peak_memory();
    {
      ScanResult r = call(impl, x, chunk);
      if (grad) backward(r.y, dy);
    }
    peak = std::max(peak, memory_stats().peak_bytes - before);
  };
  double ms = bench::median_ms(once, repeats);
  tape().clear();
  return {ms, peak};
}

// Register-only bounds: the kernel's per-state arithmetic with no memory traffic at all, for
// NV independent state vectors of 16 lanes (vmath::F32x16, as in the N-specialised kernel;
// NV = 8 forward, 4 backward so that everything fits the 32 registers),
// delta changing every step so that the exp cannot be hoisted. Returns state updates per
// second over all threads.
//   forward  (per state): A_bar = exp(dt A); h = A_bar h + (dt u) B; y += C h
//   backward (per state): the replay (the forward's three lines, and A_bar h_{t-1} kept), then
//            the adjoint: lambda = g C + carry; dC += g h; dB += lambda dt u;
//            sum_lB += lambda B; ddt += lambda A (A_bar h_{t-1}); dA += lambda dt (A_bar h_{t-1});
//            carry = A_bar lambda.
// A fwd+bwd pass does both per state update, so its bound is 1 / (1/fwd + 1/bwd).
using vmath::F32x16;
template <bool kBackward>
double bound_updates_per_s() {
  constexpr int NV = kBackward ? 4 : 8;
  const int64_t iters = 8'000'000;
  float sink = 0;
  auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel reduction(+ : sink)
  {
    F32x16 h[NV], a[NV], carry[NV], dA[NV], dt, dtu, y{}, slb{}, ddt{}, dB{}, dC{};
    for (int j = 0; j < 16; ++j) {
      dt[j] = 0.01f + 0.001f * j;
      dtu[j] = 0.5f * dt[j];
    }
    for (int v = 0; v < NV; ++v) {
      h[v] = carry[v] = dA[v] = F32x16{};
      a[v] = vmath::splat(-float(v + 1));
    }
    const F32x16 g = vmath::splat(0.9f);
    const float b = 0.3f, c = 0.7f;
    for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) {
        const F32x16 A_bar = vmath::vexp(dt * a[v]);
        const F32x16 Abar_h = A_bar * h[v];
        h[v] = vmath::fma(A_bar, h[v], dtu * b);
        y = vmath::fma(vmath::splat(c), h[v], y);
        if constexpr (kBackward) {
          const F32x16 lam = vmath::fma(g, vmath::splat(c), carry[v]);
          dC = vmath::fma(g, h[v], dC);  // (the kernel: one lane buffer per (t, n))
          dB = vmath::fma(lam, dtu, dB);
          slb = vmath::fma(lam, vmath::splat(b), slb);
          const F32x16 lah = lam * Abar_h;
          ddt = vmath::fma(lah, a[v], ddt);
          dA[v] = vmath::fma(lah, dt, dA[v]);
          carry[v] = A_bar * lam;
        }
      }
      dt = vmath::fma(dt, vmath::splat(0.99999f), vmath::splat(1e-7f));
    }
    F32x16 acc = y + slb + ddt + dB + dC;
    for (int v = 0; v < NV; ++v) acc += carry[v] + dA[v];
    for (int j = 0; j < 16; ++j) sink += acc[j];
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (sink == 12345.0f) std::printf("(sink)\n");
  return double(num_threads()) * iters * NV * 16 / seconds;
}

}  // namespace

// "--device cuda" hands the other arguments to the CUDA benchmark; "--device cpu" is this one.
int main(int argc, char** argv) {
  std::vector<char*> args(argv, argv + argc);
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string a = args[i];
    if (a != "--device") continue;
    const std::string dev = i + 1 < args.size() ? args[i + 1] : "";
    if (dev != "cpu" && dev != "cuda") {
      std::fprintf(stderr, "bench_scan: --device takes cpu or cuda, got '%s'\n", dev.c_str());
      return 2;
    }
    args.erase(args.begin() + i, args.begin() + i + 2);
    if (dev == "cuda") return scan_cuda_bench::run(int(args.size()), args.data());
    break;
  }
  argc = int(args.size());
  argv = args.data();
  Flags f;
  if (int rc = parse(argc, argv, f); rc >= 0) return rc;
  if (f.bound) {
    const double fwd = bound_updates_per_s<false>(), bwd = bound_updates_per_s<true>();
    const double both = 1.0 / (1.0 / fwd + 1.0 / bwd);
    if (f.json)
      std::printf("{\"bench\": \"scan_bound\", \"threads\": %d, \"fwd_updates_per_s\": %.4g, "
                  "\"bwd_updates_per_s\": %.4g, \"fwd_bwd_updates_per_s\": %.4g}\n",
                  num_threads(), fwd, bwd, both);
    else
      std::printf("register-only bounds on %d threads, state updates/s: fwd %.3g, bwd (replay + "
                  "adjoint) %.3g, fwd+bwd %.3g\n",
                  num_threads(), fwd, bwd, both);
    return 0;
  }
  std::vector<int64_t> EDs = f.ED > 0 ? std::vector<int64_t>{f.ED} : std::vector<int64_t>{512, 1536};
  std::vector<int64_t> Ns = f.N > 0 ? std::vector<int64_t>{f.N} : std::vector<int64_t>{16, 64};
  std::vector<int64_t> Ls = f.L > 0 ? std::vector<int64_t>{f.L} : std::vector<int64_t>{256, 1024, 4096};
  std::vector<std::string> impls = f.impl.empty()
      ? std::vector<std::string>{"fast", "sequential", "reference"} : std::vector<std::string>{f.impl};
  std::vector<std::string> passes = f.pass.empty()
      ? std::vector<std::string>{"fwd", "fwd+bwd"} : std::vector<std::string>{f.pass};
  if (!f.json) {
    std::printf("settings: %s; each row runs its impl with T = --chunk %lld\n",
                describe_settings().c_str(), (long long)f.chunk);
    std::printf("%-10s %-8s %3s %5s %5s %3s %11s %14s %11s\n", "impl", "pass", "B", "L", "ED",
                "N", "median_ms", "updates/s", "peak_MB");
  }
  for (int64_t ED : EDs)
    for (int64_t N : Ns)
      for (int64_t L : Ls) {
        const double updates = double(f.B) * L * ED * N;
        Inputs x = make_inputs(f.B, L, ED, N);
        for (const std::string& pass : passes)
          for (const std::string& impl : impls) {
            const double limit = impl == "reference" ? f.max_reference
                               : impl == "sequential" ? f.max_sequential : 1e300;
            if (updates > limit) {
              if (f.json)
                std::printf("{\"impl\": \"%s\", \"pass\": \"%s\", \"B\": %lld, \"L\": %lld, "
                            "\"ED\": %lld, \"N\": %lld, \"skipped\": \"above %g state updates\"}\n",
                            impl.c_str(), pass.c_str(), (long long)f.B, (long long)L,
                            (long long)ED, (long long)N, limit);
              else
                std::printf("%-10s %-8s %3lld %5lld %5lld %3lld   skipped: %.3g updates > limit %.3g\n",
                            impl.c_str(), pass.c_str(), (long long)f.B, (long long)L,
                            (long long)ED, (long long)N, updates, limit);
              std::fflush(stdout);
              continue;
            }
            Measure m = measure(impl, pass, x, f.chunk, f.repeats);
            const double rate = updates / (m.ms * 1e-3);
            if (f.json)
              std::printf("{\"impl\": \"%s\", \"pass\": \"%s\", \"B\": %lld, \"L\": %lld, "
                          "\"ED\": %lld, \"N\": %lld, \"chunk\": %lld, \"median_ms\": %.4f, "
                          "\"updates_per_s\": %.4g, \"peak_bytes\": %lld, \"threads\": %d}\n",
                          impl.c_str(), pass.c_str(), (long long)f.B, (long long)L,
                          (long long)ED, (long long)N, (long long)f.chunk, m.ms, rate,
                          (long long)m.peak, num_threads());
            else
              std::printf("%-10s %-8s %3lld %5lld %5lld %3lld %11.3f %14.4g %11.1f\n",
                          impl.c_str(), pass.c_str(), (long long)f.B, (long long)L,
                          (long long)ED, (long long)N, m.ms, rate, m.peak / 1048576.0);
            std::fflush(stdout);
          }
      }
  return 0;
}
