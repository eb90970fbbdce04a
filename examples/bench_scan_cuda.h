// examples/bench_scan_cuda.h — `bench_scan --device cuda`: the CUDA selective scan
// (cuda/selective_scan/), v2 and v3 by default and any of v1, v2, v3 side by side with --versions:
// forward and forward+backward medians (cudaEvent timing on the backend's stream, after one
// warm-up) and the achieved GB/s against the bytes the op must move (scan_bytes_moved in
// ops/selective_scan/kernels.h: every input read once, every output written once), next to
// the measured device-to-device cudaMemcpy bandwidth (the ceiling for a memory-bound kernel).
//
// Settings (the paper's Fig. 8 scan benchmark): batch 1, ED 1024, N 16, L = 2^9 .. 2^17; and
// the training shape batch 8, ED 1536, N 16, L 2048. D, z and delta_bias are present (as in
// Mamba), h0 is not; deterministic mode as set by --deterministic (default on).
//
//   bench_scan --device cuda [--max-log2-len 17] [--repeats 10] [--versions v2,v3] [--json]
//
// Included by examples/bench_scan.cpp only (one program, two devices); bench_scan hands over
// its arguments without "--device cuda".
#pragma once
#include <cstdio>
#include <string>
#include <vector>

#include "cli.h"
#include "core/tensor.h"
#include "ops/arith.h"
#include "ops/convert.h"

#ifdef MG_WITH_CUDA
#include "core/settings.h"
#include "cuda/bench.h"
#include "cuda/runtime.h"
#include "cuda/selective_scan/v3.h"
#include "ops/selective_scan/kernels.h"
#endif

namespace mg::scan_cuda_bench {

#ifndef MG_WITH_CUDA
inline int run(int argc, char** argv) {
  examples::Cli cli("bench_scan --device cuda", "CUDA selective-scan benchmark (needs a CUDA build).");
  if (!cli.parse(argc, argv)) return cli.exit_code();
  std::fprintf(stderr, "bench_scan --device cuda: this build has no CUDA backend (configure with -DMG_CUDA=ON)\n");
  return 1;
}
#else

struct Shape4 {
  int64_t B, L, ED, N;
};
struct Row {
  Shape4 s;
  std::string version;
  double fwd_ms, fwdbwd_ms, fwd_gbs, fwdbwd_gbs;
};

// Act: the activations' type (float, or bf16 with f32 parameters and state).
template <typename Act>
Row measure(const Shape4& s, const ScanKernelPair<Act, float>& k, const std::string& version,
            int repeats, int64_t T) {
  const Device g = Device::cuda();
  const DType act = dtype_of<Act>();
  Generator gen(1);
  auto dev = [&](const Shape& shape, double scale) {
    return to(Tensor::randn(shape, DType::f32, &gen) * scale, g);
  };
  auto dev_act = [&](const Shape& shape, double scale) { return dev(shape, scale).cast(act); };
  Tensor u = dev_act({s.B, s.L, s.ED}, 1), delta = dev_act({s.B, s.L, s.ED}, 0.5), z = dev_act({s.B, s.L, s.ED}, 1);
  Tensor A = to(Tensor::ones({s.ED, s.N}) * -1.0, g), Bm = dev_act({s.B, s.L, s.N}, 1), C = dev_act({s.B, s.L, s.N}, 1);
  Tensor D = dev({s.ED}, 1), bias = dev({s.ED}, 0.1) - 4.0, dy = dev_act({s.B, s.L, s.ED}, 1);
  const int64_t nc = scan_num_chunks(s.L, T);
  auto E = [&](const Shape& shape, DType dt = DType::f32) { return Tensor::empty(shape, dt, g); };
  Tensor y = E({s.B, s.L, s.ED}, act), h_last = E({s.B, s.ED, s.N}), st = E({s.B, nc, s.ED, s.N});
  Tensor du = E(y.shape(), act), ddelta = E(y.shape(), act), dz = E(y.shape(), act), dA = E({s.ED, s.N});
  Tensor dB = E(Bm.shape(), act), dC = E(C.shape(), act), dD = E({s.ED}), dbias = E({s.ED});
  auto f = [](const Tensor& t) { return t.data<float>(); };
  auto a = [](const Tensor& t) { return t.data<Act>(); };
  const ScanArgs<Act, float> args{.B = s.B, .L = s.L, .ED = s.ED, .N = s.N, .T = T, .u = a(u),
                                  .delta = a(delta), .A = f(A), .Bm = a(Bm), .C = a(C), .D = f(D),
                                  .z = a(z), .delta_bias = f(bias), .delta_softplus = true,
                                  .y = a(y), .h_last = f(h_last), .chunk_states = f(st)};
  const ScanGrads<Act, float> grads{.dy = a(dy), .du = a(du), .ddelta = a(ddelta), .dA = f(dA),
                                    .dB = a(dB), .dC = a(dC), .dD = f(dD), .dz = a(dz),
                                    .ddelta_bias = f(dbias)};
  Row r{s, version, 0, 0, 0, 0};
  r.fwd_ms = cuda::bench::median_ms([&] { k.forward(args); }, repeats);
  r.fwdbwd_ms = cuda::bench::median_ms([&] { k.forward(args); k.backward(args, grads); }, repeats);
  const ScanBytes bytes = scan_bytes_moved(args);
  r.fwd_gbs = bytes.forward / (r.fwd_ms * 1e6);
  r.fwdbwd_gbs = (bytes.forward + bytes.backward) / (r.fwdbwd_ms * 1e6);
  return r;
}

inline int run(int argc, char** argv) {
  examples::Cli cli("bench_scan --device cuda",
                    "CUDA selective scan, v2 and v3 (v1 on request): forward and forward+backward\n"
                    "medians and GB/s (and % of the memcpy bound)\n"
                    "against the bytes the op must move, next to measured D2D memcpy bandwidth.\n"
                    "Shapes: batch 1, ED 1024, N 16, L = 2^9 .. 2^max-log2-len; batch 8, ED 1536,\n"
                    "N 16, L 2048.");
  int64_t max_log2 = 17, repeats = 10, chunk = 64;
  // v2 and v3 by default: v2 took ~1 s in all to L 2^17 on an H200 and v3 is predicted to be
  // faster, so the default run stays well under 30 s (v1 walks each channel's sequence with
  // one thread and took over 90 s to L 2^17 there: ask for it).
  std::string versions = "v2,v3", dtype = "f32";
  bool json = false, nondeterministic = false;
  cli.add("--max-log2-len", &max_log2, "longest L of the batch-1 sweep, as log2 (9..17)");
  cli.add("--repeats", &repeats, "timed runs per measurement (the median is reported)");
  cli.add("--chunk", &chunk, "T: steps between saved states (the op's default is 64)");
  cli.add("--versions", &versions, "comma-separated list of v1, v2, v3 (v1 is slow: ask for it)");
  cli.add("--nondeterministic", &nondeterministic, "allow float atomics in the backward");
  cli.add("--dtype", &dtype, "f32 or bf16 (bf16 activations, f32 state: the op's native kernels: v2, v3)");
  cli.add("--json", &json, "print one JSON object instead of the table");
  if (!cli.parse(argc, argv)) return cli.exit_code();
  std::vector<CudaScanVersion> vs;
  for (size_t at = 0; at <= versions.size();) {
    const size_t comma = std::min(versions.find(',', at), versions.size());
    try {
      vs.push_back(parse_cuda_scan(versions.substr(at, comma - at)));
    } catch (const Error& e) {
      std::fprintf(stderr, "bench_scan --device cuda: --versions: %s\n", e.what());
      return 2;
    }
    at = comma + 1;
  }
  if (dtype != "f32" && dtype != "bf16") {
    std::fprintf(stderr, "bench_scan --device cuda: --dtype takes f32 or bf16, got '%s'\n", dtype.c_str());
    return 2;
  }
  if (!cuda::available()) {
    std::fprintf(stderr, "bench_scan --device cuda: no CUDA device is visible (%s); nothing to measure.\n",
                 cuda::no_device_reason().c_str());
    return 1;
  }
  cuda::backend_init();
  Settings run_settings = settings();
  run_settings.deterministic = !nondeterministic;
  SettingsGuard guard(run_settings);
  std::vector<Shape4> shapes;
  for (int64_t k = 9; k <= std::min<int64_t>(max_log2, 17); ++k) shapes.push_back({1, int64_t(1) << k, 1024, 16});
  shapes.push_back({8, 2048, 1536, 16});

  const int64_t copy_bytes = int64_t(256) << 20;
  const double copy_ms = cuda::bench::memcpy_d2d_ms(copy_bytes, (int)repeats);
  const double copy_gbs = 2.0 * copy_bytes / (copy_ms * 1e6);  // reads + writes
  std::vector<Row> rows;
  for (const Shape4& s : shapes)
    for (auto v : vs) {
      // What the op runs for this version (and dtype).
      Settings version = settings();
      version.cuda_scan = v;
      SettingsGuard guard_version(version);
      const std::string name = std::string(cuda_scan_name(v)) + (dtype == "bf16" ? " bf16" : "");
      if (dtype == "f32") {
        rows.push_back(measure<float>(s, choose_scan_kernel<float>(Device::cuda(), s.N), name,
                                      (int)repeats, chunk));
      } else if (const auto k = choose_scan_kernel_bf16(Device::cuda(), s.N)) {
        rows.push_back(measure<bf16>(s, *k, name, (int)repeats, chunk));
      } else {
        if (!json && &s == &shapes.front())
          std::printf("%s: no native bf16 kernel (the op widens bf16 activations to f32 for it); not timed\n",
                      cuda_scan_name(v));
        continue;
      }
      if (!json) {
        const Row& r = rows.back();
        std::printf("B %-2lld L %-7lld ED %-5lld N %-3lld %s  fwd %9.3f ms %7.1f GB/s (%4.1f%%)   "
                    "fwd+bwd %9.3f ms %7.1f GB/s (%4.1f%%)\n",
                    (long long)s.B, (long long)s.L, (long long)s.ED, (long long)s.N, r.version.c_str(),
                    r.fwd_ms, r.fwd_gbs, 100 * r.fwd_gbs / copy_gbs, r.fwdbwd_ms, r.fwdbwd_gbs,
                    100 * r.fwdbwd_gbs / copy_gbs);
        std::fflush(stdout);
      }
    }
  if (json) {
    std::printf("{\"device\": \"%s\", \"deterministic\": %s, \"chunk\": %lld, \"dtype\": \"%s\", "
                "\"memcpy_d2d_gbs\": %.1f, \"rows\": [",
                cuda::describe().c_str(), nondeterministic ? "false" : "true", (long long)chunk,
                dtype.c_str(), copy_gbs);
    for (size_t i = 0; i < rows.size(); ++i) {
      const Row& r = rows[i];
      std::printf("%s\n  {\"B\": %lld, \"L\": %lld, \"ED\": %lld, \"N\": %lld, \"version\": \"%s\", "
                  "\"fwd_ms\": %.4f, \"fwd_gbs\": %.1f, \"fwdbwd_ms\": %.4f, \"fwdbwd_gbs\": %.1f}",
                  i ? "," : "", (long long)r.s.B, (long long)r.s.L, (long long)r.s.ED, (long long)r.s.N,
                  r.version.c_str(), r.fwd_ms, r.fwd_gbs, r.fwdbwd_ms, r.fwdbwd_gbs);
    }
    std::printf("\n]}\n");
  } else {
    std::printf("device-to-device memcpy: %.1f GB/s (%lld MiB copied, reads + writes counted)\n", copy_gbs,
                (long long)(copy_bytes >> 20));
    std::printf("%s\n", cuda::describe().c_str());
    // The occupancy the driver gives v3's kernels (issue 12's resource report; the compiler's
    // side is docs/cuda_scan_resources.txt).
    std::printf("v3 occupancy (cudaOccupancyMaxActiveBlocksPerMultiprocessor):\n");
    for (const cuda::KernelOccupancy& k : cuda::scan_v3_occupancy())
      std::printf("  %-28s %4d threads %4d regs %6d B smem (+%6d dynamic) %3d B local  "
                  "%2d blocks = %2d warps / SM\n",
                  k.kernel.c_str(), k.threads, k.registers, k.static_smem, k.dynamic_smem,
                  k.local_bytes, k.blocks_per_sm, k.warps_per_sm);
  }
  return 0;
}
#endif

}  // namespace mg::scan_cuda_bench
