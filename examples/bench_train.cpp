// examples/bench_train — tokens/s and peak memory of one full training step (forward,
// backward, AdamW update) of a Mamba LM, for two fixed configurations:
//   tiny:  V 256, d_model 128, 2 layers, L 256, B 16
//   small: V 256, d_model 256, 4 layers, L 512, B 8
// The peer is the same model and step in PyTorch (tests/reference/train_step_peer_torch.py).
//
//   ./build/examples/bench_train [--config tiny|small|all] [--repeats N] [--json]
#include <cstdio>
#include <string>

#include "autograd/tape.h"
#include "core/allocator.h"
#include "core/parallel.h"
#include "examples/bench_util.h"
#include "examples/cli.h"
#include "nn/mamba.h"
#include "train/optimizer.h"

using namespace mg;

struct BenchConfig {
  const char* name;
  int64_t d_model, n_layer, seq_len, batch;
};

int main(int argc, char** argv) {
  std::string which = "all", device = "cpu";
  int64_t repeats = 10;
  bool json = false;
  examples::Cli cli("bench_train", "Times a full Mamba LM training step (forward, backward, AdamW).");
  cli.add("--config", &which, "tiny, small or all");
  cli.add("--repeats", &repeats, "timed steps (the median is reported; one warm-up step first)");
  cli.add("--device", &device, "cpu");
  cli.add("--json", &json, "one JSON object per line");
  if (!cli.parse(argc, argv)) return cli.exit_code();
  if (device != "cpu") {
    std::fprintf(stderr, "bench_train: --device %s: the training step runs on the CPU in this version\n", device.c_str());
    return 2;
  }
  const BenchConfig configs[] = {{"tiny", 128, 2, 256, 16}, {"small", 256, 4, 512, 8}};
  if (!json) std::printf("threads: %d\n%-6s %10s %12s %12s %12s\n", num_threads(), "config", "params", "median ms", "tokens/s", "peak");
  for (const BenchConfig& bc : configs) {
    if (which != "all" && which != bc.name) continue;
    nn::MambaConfig cfg;
    cfg.d_model = bc.d_model;
    cfg.n_layer = bc.n_layer;
    cfg.vocab_size = 256;
    nn::MambaLM model(cfg, 0);
    train::AdamW opt(model.named_parameters());
    Generator gen(1);
    Tensor ids = Tensor::uniform({bc.batch, bc.seq_len + 1}, 0, 256, DType::f32, &gen).to(DType::i32);
    auto step = [&] {
      Tensor loss = model.loss(ids);
      backward(loss);
      opt.step(1e-3);
      model.zero_grad();
    };
    step();  // warm-up: first-touch of every buffer
    reset_peak_memory();
    int64_t base = memory_stats().current_bytes;
    double ms = bench::median_ms(step, (int)repeats);
    int64_t peak = memory_stats().peak_bytes;
    double tps = bc.batch * bc.seq_len / (ms / 1e3);
    if (json)
      std::printf("{\"config\": \"%s\", \"device\": \"cpu\", \"params\": %lld, \"median_ms\": %.3f, "
                  "\"tokens_per_s\": %.1f, \"peak_bytes\": %lld, \"resident_bytes\": %lld}\n",
                  bc.name, (long long)model.num_parameters(), ms, tps, (long long)peak, (long long)base);
    else
      std::printf("%-6s %10lld %12.2f %12.0f %9.1f MB\n", bc.name, (long long)model.num_parameters(), ms, tps,
                  peak / 1048576.0);
  }
  return 0;
}
