// examples/bench_generate — prefill and decode tokens/s of a Mamba LM (random weights) of
// mamba-130m's shape (V 50280, D 768, 24 layers, N 16, expand 2, d_conv 4), at batch 1 and 64,
// with the memory-bandwidth bound beside each decode number.
//
//   ./build/examples/bench_generate [--device cpu|cuda] [--batch 1,64] [--prompt-len L]
//                                   [--steps S] [--bandwidth GBPS] [--json]
//
// Prefill: B prompts of L random tokens through the parallel path (MambaLM::prefill, the last
// position's logits), median of --repeats. Decode: what generate does per token after the
// prefill — greedy sample_tokens on the device, the B ids back to the host, Decoder::step (a
// CUDA graph on the GPU) — S steps timed one by one; the median step gives B / step tokens/s.
//
// The bound: a decode step must read every weight once (the tied embedding as the LM head:
// V_pad x D) and read and write the recurrent state (B x layers x ED x (N + K) floats each
// way). bound tokens/s = B x bandwidth / (weight bytes + state bytes). The bandwidth is
// measured here unless --bandwidth is given: CPU, a parallel sum over a 1 GiB buffer (read
// bandwidth, the weights' access pattern, all threads, 64-byte vector loads); CUDA, a 1 GiB device-to-device
// cudaMemcpyAsync (2 x bytes / time). Prefill is compute bound (2 x parameters FLOPs per token),
// so beside it stands its GFLOP/s.
#include <chrono>
#include <cstdio>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "autograd/grad_mode.h"
#include "core/allocator.h"
#include "core/dispatch.h"
#include "core/parallel.h"
#include "core/settings.h"
#include "cuda/bench.h"    // plain C++: defined in a CUDA build
#include "cuda/runtime.h"  // plain C++: cuda::synchronize
#include "examples/cli.h"
#include "examples/device_flag.h"
#include "nn/decoder.h"
#include "nn/mamba.h"
#include "ops/sampling.h"

using namespace mg;
using namespace mg::nn;

namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

void sync(Device dev) {
  if constexpr (kWithCuda)
    if (dev.is_cuda()) cuda::synchronize();
}

// Read bandwidth of this machine's CPU threads: a parallel sum over 1 GiB in 64-byte vectors
// (so the loop is bound by memory, not by adds), median of 5, GB/s.
double cpu_read_gbps() {
  typedef float F16 __attribute__((vector_size(64)));
  const int64_t n = int64_t(1) << 24;  // vectors of 16 floats: 1 GiB
  std::vector<F16> buf(n);
  parallel_for(n, 1 << 14, [&](int64_t b, int64_t e) {  // first touch by the reading threads
    for (int64_t i = b; i < e; ++i) buf[i] = F16{} + 1.0f;
  });
  std::vector<float> parts(n / (1 << 14) + 1, 0.f);
  auto run = [&] {
    parallel_for(n, 1 << 14, [&](int64_t b, int64_t e) {
      F16 s0{}, s1{}, s2{}, s3{};
      int64_t i = b;
      for (; i + 4 <= e; i += 4) {
        s0 += buf[i]; s1 += buf[i + 1]; s2 += buf[i + 2]; s3 += buf[i + 3];
      }
      for (; i < e; ++i) s0 += buf[i];
      const F16 s = s0 + s1 + s2 + s3;
      parts[b >> 14] = s[0] + s[15];  // keep the loads
    });
  };
  run();
  std::vector<double> t;
  for (int r = 0; r < 5; ++r) {
    auto t0 = Clock::now();
    run();
    t.push_back(since(t0));
  }
  volatile float keep = parts[0];
  (void)keep;
  return n * 64.0 / median(t) / 1e9;
}

double cuda_copy_gbps() {
  if constexpr (kWithCuda) {
    const int64_t bytes = int64_t(1) << 30;
    return 2.0 * bytes / (cuda::bench::memcpy_d2d_ms(bytes, 10) * 1e-3) / 1e9;
  }
  return 0;
}

std::vector<int64_t> parse_list(const std::string& s) {
  std::vector<int64_t> v;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    char* end = nullptr;
    long long x = std::strtoll(item.c_str(), &end, 10);
    MG_CHECK(!item.empty() && *end == 0 && x >= 1 && x <= 4096, "--batch: '", item,
             "' is not a batch size in [1, 4096]");
    v.push_back(x);
  }
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  std::string device = "cpu", batches = "1,64";
  int64_t prompt_len = 0, steps = 0, repeats = 3, vocab = 50280, d_model = 768, n_layer = 24;
  double bandwidth = 0;
  bool json = false, no_graph = false;
  examples::Cli cli("bench_generate", "Prefill and decode tokens/s of a random mamba-130m-shaped LM, "
                    "with the memory-bandwidth bound of decode.");
  cli.add("--device", &device, "where to run", {.choices = {"cpu", "cuda"}});
  cli.add("--batch", &batches, "comma-separated batch sizes", {.default_text = "1,64", .placeholder = "LIST"});
  cli.add("--prompt-len", &prompt_len, "prompt tokens per sequence (0: 32 on cpu, 512 on cuda)", {.min = 0, .max = 1 << 20});
  cli.add("--steps", &steps, "decode steps timed (0: 16 on cpu, 256 on cuda)", {.min = 0, .max = 1 << 20});
  cli.add("--repeats", &repeats, "timed prefills (median)", {.min = 1, .max = 1000});
  cli.add("--bandwidth", &bandwidth, "memory bandwidth in GB/s for the bound (0: measure it)", {.min = 0});
  cli.add("--vocab", &vocab, "vocabulary V", {.min = 1, .max = 1 << 24});
  cli.add("--d-model", &d_model, "width D", {.min = 1, .max = 65536});
  cli.add("--n-layer", &n_layer, "layers", {.min = 1, .max = 1024});
  cli.add("--no-graph", &no_graph, "cuda: eager steps instead of a CUDA graph");
  cli.add("--json", &json, "one JSON object per line instead of the table");
  if (!cli.parse(argc, argv)) return cli.exit_code();
  Device dev;
  std::vector<int64_t> Bs;
  try {
    Bs = parse_list(batches);
    std::string gpu;
    std::tie(dev, gpu) = examples::open_device(device);
    if (!gpu.empty() && !json) std::printf("%s\n", gpu.c_str());
  } catch (const Error& e) {
    std::fprintf(stderr, "bench_generate: %s\n", e.what());
    return 2;
  }
  if (prompt_len == 0) prompt_len = dev.is_cuda() ? 512 : 32;
  if (steps == 0) steps = dev.is_cuda() ? 256 : 16;
  try {
    MambaConfig c;
    c.d_model = d_model;
    c.n_layer = n_layer;
    c.vocab_size = vocab;
    if (!json) std::fprintf(stderr, "building %s ...\n", c.str().c_str());
    MambaLM model(c, 0);
    if (dev.is_cuda()) model.to(dev);
    NoGradGuard no_grad;
    const double weight_bytes = 4.0 * model.num_parameters();
    if (bandwidth == 0) {
      if (!json) std::fprintf(stderr, "measuring memory bandwidth ...\n");
      bandwidth = dev.is_cuda() ? cuda_copy_gbps() : cpu_read_gbps();
    }
    const char* bw_how = cli.given("--bandwidth") ? "given" : dev.is_cuda() ? "measured: 1 GiB D2D copy"
                                                                             : "measured: 1 GiB parallel read";
    if (!json)
      std::printf("bench_generate: %s on %s, %d CPU thread(s), %ld parameters (%.1f MB f32), "
                  "bandwidth %.1f GB/s (%s)\n%s\n%6s %8s %14s %10s | %14s %12s %14s %8s\n",
                  c.str().c_str(), dev.str().c_str(), num_threads(), (long)model.num_parameters(),
                  weight_bytes / 1e6, bandwidth, bw_how, describe_settings().c_str(), "batch",
                  "prompt", "prefill tok/s", "GFLOP/s", "decode tok/s", "ms/step", "bound tok/s",
                  "% bound");
    const int64_t ED = c.d_inner(), N = c.d_state, K = c.d_conv, V = c.padded_vocab();
    for (int64_t B : Bs) {
      Generator g(B);
      std::vector<std::vector<int32_t>> prompts(B, std::vector<int32_t>(prompt_len));
      for (auto& p : prompts)
        for (auto& t : p) t = (int32_t)g.next_below(vocab);
      // Prefill (the same prompts every repeat; the state is rebuilt each time).
      std::vector<double> pre;
      InferenceState state;
      Tensor logits;
      for (int64_t r = 0; r < repeats + (dev.is_cuda() ? 1 : 0); ++r) {  // cuda: one warm-up
        if (!json) std::fprintf(stderr, "batch %ld: prefill %ld/%ld ...\r", (long)B, (long)r + 1, (long)repeats);
        state = InferenceState{};
        auto t0 = Clock::now();
        logits = prefill_batch(model, prompts, state);
        sync(dev);
        if (!dev.is_cuda() || r > 0) pre.push_back(since(t0));
      }
      const double prefill_s = median(pre);
      const double prefill_tps = B * prompt_len / prefill_s;
      // Decode: greedy sample on the device, B ids back, one step.
      Decoder dec(model, std::move(state), !no_graph);
      SampleParams greedy{.temperature = 0, .vocab_limit = vocab};
      std::vector<double> step_s;
      for (int64_t s = 0; s < steps + 2; ++s) {  // two warm-up steps (the first captures the graph)
        if (!json && s % 8 == 0) std::fprintf(stderr, "batch %ld: decode step %ld/%ld ...   \r", (long)B, (long)s, (long)steps + 2);
        auto t0 = Clock::now();
        Tensor ids = sample_tokens(logits, greedy, Tensor());
        (void)ids.to_vector<int32_t>();  // the B ids to the host, as generate does
        logits = dec.step(ids);
        sync(dev);
        if (s >= 2) step_s.push_back(since(t0));
      }
      const double step = median(step_s);
      const double decode_tps = B / step;
      const double state_bytes = 2.0 * 4.0 * B * c.n_layer * ED * (N + K);  // read + write
      const double bound_tps = B * bandwidth * 1e9 / (weight_bytes + state_bytes);
      const double gflops = 2.0 * model.num_parameters() * prefill_tps / 1e9;
      if (json)
        std::printf("{\"bench\": \"generate\", \"device\": \"%s\", \"batch\": %ld, \"prompt\": %ld, "
                    "\"prefill_tok_s\": %.1f, \"prefill_gflops\": %.1f, \"decode_tok_s\": %.2f, "
                    "\"ms_per_step\": %.3f, \"bound_tok_s\": %.2f, \"pct_of_bound\": %.1f, "
                    "\"bandwidth_gbps\": %.1f, \"weight_bytes\": %.0f, \"state_bytes\": %.0f, "
                    "\"graph\": %s, \"V_pad\": %ld}\n",
                    dev.str().c_str(), (long)B, (long)prompt_len, prefill_tps, gflops, decode_tps,
                    step * 1e3, bound_tps, 100 * decode_tps / bound_tps, bandwidth, weight_bytes,
                    state_bytes, dec.graph_used() ? "true" : "false", (long)V);
      else
        std::printf("%6ld %8ld %14.1f %10.1f | %14.2f %12.3f %14.2f %7.1f%%\n", (long)B,
                    (long)prompt_len, prefill_tps, gflops, decode_tps, step * 1e3, bound_tps,
                    100 * decode_tps / bound_tps);
      if (!json && dev.is_cuda())
        std::printf("       cuda graph: %s\n", dec.graph_used() ? "used" : dec.graph_note().c_str());
      std::fflush(stdout);
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_generate: %s\n", e.what());
    return 1;
  }
}
