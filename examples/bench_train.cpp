// examples/bench_train — tokens/s and peak memory of one full training step (forward,
// backward, AdamW update) of a Mamba LM, for fixed configurations:
//   tiny:  V 256, d_model 128, 2 layers, L 256, B 16
//   small: V 256, d_model 256, 4 layers, L 512, B 8
//   130m:  V 50280, d_model 768, 24 layers, L 1024, B 8 (mamba-130m's size; a GPU benchmark,
//          not part of "all": one step on a laptop CPU takes minutes)
// The peer is the same model and step in PyTorch (tests/reference/train_step_peer_torch.py).
//
//   ./build/examples/bench_train [--config tiny|small|130m|all] [--repeats N] [--device cpu|cuda]
//                                [--precision f32|tf32|bf16] [--cuda-scan v1|v2|v3] [--json]
//
// --precision sets Settings::precision (docs/mixed_precision.md). On the CPU, bf16 is the exact
// emulation (widen, f32 kernel, round): slower than f32 there, it is the tests' reference.
//
// --device cuda: the model (and so AdamW's state) and the token batch live on the GPU; each
// timed step ends with cuda::synchronize(), so the time is the step's, not its enqueueing.
// The step syncs inside too, as training does: the embedding/target range checks and nothing
// else (the loss is not read). Peak memory is the GPU caching allocator's (bytes held by
// tensors). Without a GPU, or in a build without CUDA, it stops at start with the reason.
#include <cstdio>
#include <string>
#include <tuple>

#include "autograd/tape.h"
#include "core/allocator.h"
#include "core/dispatch.h"
#include "core/parallel.h"
#include "core/settings.h"
#include "cuda/runtime.h"  // plain C++: cuda::synchronize, defined in a CUDA build
#include "examples/bench_util.h"
#include "examples/cli.h"
#include "examples/device_flag.h"
#include "examples/cuda_scan_flag.h"
#include "examples/precision_flag.h"
#include "nn/mamba.h"
#include "train/optimizer.h"

using namespace mg;

struct BenchConfig {
  const char* name;
  int64_t d_model, n_layer, seq_len, batch, vocab;
  bool in_all;  // run by --config all
};

int main(int argc, char** argv) {
  std::string which = "all", device = "cpu", precision = "f32", cuda_scan = "v2";
  int64_t repeats = 10;
  bool json = false;
  examples::Cli cli("bench_train", "Times a full Mamba LM training step (forward, backward, AdamW).");
  cli.add("--config", &which, "which model; all = tiny and small", {.choices = {"tiny", "small", "130m", "all"}});
  cli.add("--repeats", &repeats, "timed steps (the median is reported; one warm-up step first)", {.min = 1, .max = 100000});
  cli.add("--device", &device, "where to run", {.choices = {"cpu", "cuda"}});
  cli.add("--json", &json, "one JSON object per line");
  examples::add_precision_flag(cli, &precision);
  examples::add_cuda_scan_flag(cli, &cuda_scan);
  if (!cli.parse(argc, argv)) return cli.exit_code();
  examples::apply_precision(precision);
  examples::apply_cuda_scan(cuda_scan);
  Device dev;
  try {  // no GPU (or no CUDA in this build): one clear error, now
    std::string gpu;
    std::tie(dev, gpu) = examples::open_device(device);
    if (!gpu.empty() && !json) std::printf("%s\n", gpu.c_str());
  } catch (const Error& e) {
    std::fprintf(stderr, "bench_train: %s\n", e.what());
    return 2;
  }
  const BenchConfig configs[] = {{"tiny", 128, 2, 256, 16, 256, true},
                                 {"small", 256, 4, 512, 8, 256, true},
                                 {"130m", 768, 24, 1024, 8, 50280, false}};
  bool known = which == "all";
  for (const BenchConfig& bc : configs) known = known || which == bc.name;
  if (!known) {
    std::fprintf(stderr, "bench_train: --config takes tiny, small, 130m or all, got '%s'\n", which.c_str());
    return 2;
  }
  if (!json)
    std::printf("threads: %d; %s\n%-6s %10s %12s %12s %12s\n", num_threads(),
                describe_settings().c_str(), "config", "params", "median ms", "tokens/s", "peak");
  for (const BenchConfig& bc : configs) {
    if (which == "all" ? !bc.in_all : which != bc.name) continue;
    nn::MambaConfig cfg;
    cfg.d_model = bc.d_model;
    cfg.n_layer = bc.n_layer;
    cfg.vocab_size = bc.vocab;
    nn::MambaLM model(cfg, 0);
    model.to(dev);  // before the optimizer: its state is made on the parameters' device
    train::AdamW opt(model.named_parameters());
    Generator gen(1);
    // ids in [0, V): the bound stays 0.5 below V, so f32 rounding near V cannot produce V itself
    Tensor ids = Tensor::uniform({bc.batch, bc.seq_len + 1}, 0, bc.vocab - 0.5, DType::f32, &gen)
                     .cast(DType::i32);
    if (dev.is_cuda()) ids = ids.copy_to(dev);
    auto step = [&] {
      Tensor loss = model.loss(ids);
      backward(loss);
      opt.step(1e-3);
      model.zero_grad();
      if constexpr (kWithCuda)  // (discarded without CUDA: no reference to the missing symbol)
        if (dev.is_cuda()) cuda::synchronize();  // time the work, not the queueing
    };
    step();  // warm-up: first-touch of every buffer (and the caching allocator's cudaMallocs)
    reset_peak_memory(dev);
    int64_t base = memory_stats(dev).current_bytes;
    double ms = bench::median_ms(step, (int)repeats);
    int64_t peak = memory_stats(dev).peak_bytes;
    double tps = bc.batch * bc.seq_len / (ms / 1e3);
    if (json)
      std::printf("{\"config\": \"%s\", \"device\": \"%s\", \"precision\": \"%s\", \"params\": %lld, "
                  "\"median_ms\": %.3f, \"tokens_per_s\": %.1f, \"peak_bytes\": %lld, \"resident_bytes\": %lld}\n",
                  bc.name, dev.str().c_str(), precision.c_str(), (long long)model.num_parameters(), ms, tps,
                  (long long)peak, (long long)base);
    else
      std::printf("%-6s %10lld %12.2f %12.0f %9.1f MB\n", bc.name, (long long)model.num_parameters(), ms, tps,
                  peak / 1048576.0);
  }
  return 0;
}
