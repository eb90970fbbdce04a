// examples/bench_allreduce — the cost of the data-parallel all-reduce (train/distributed.h),
// run under the launcher:
//
//   mpirun -np 2 ./build/examples/bench_allreduce [--device cpu|cuda] [--repeats N] [--json]
//
// Part 1, buffers: one f32 buffer of each size from 4 KiB to 64 MiB, averaged over the ranks
// (ReduceOp::mean, what the gradient buckets use). Per size: the median over repeats of the
// slowest rank's time (each repeat starts after a barrier), the algorithm bandwidth
// (bytes / time) and the bus bandwidth (2 (W - 1) / W x bytes / time: what each rank's link
// carries in a ring all-reduce; nccl-tests report the same), comparable across world sizes.
// Part 2, a training step's synchronisation: train::DataParallel::synchronize on the gradients
// of the bench_train configurations (tiny, small): the time the gradient averaging adds to each
// step, to set against bench_train's step time.
// Without a launcher it runs as one process (every collective is the identity): nothing to time.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "examples/cli.h"
#include "examples/device_flag.h"
#include "nn/mamba.h"
#include "train/data_parallel.h"
#include "train/distributed.h"

using namespace mg;

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Times f over `repeats` runs (after one warm-up); returns the median over runs of the slowest
// rank's time in seconds.
template <typename F>
double median_slowest(dist::Communicator& w, int64_t repeats, F&& f) {
  f();
  std::vector<double> t((size_t)repeats);
  for (auto& x : t) {
    w.barrier("the benchmark's barrier");
    double s = now_s();
    f();
    x = now_s() - s;
  }
  w.all_reduce(t.data(), (int64_t)t.size(), dist::ReduceOp::max, "the benchmark's timings");
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  std::string device = "cpu";
  int64_t repeats = 20;
  bool json = false;
  examples::Cli cli("bench_allreduce", "Times the data-parallel all-reduce (run it under mpirun).");
  cli.add("--device", &device, "cpu or cuda (GPU buffers: NCCL where the build has it)");
  cli.add("--repeats", &repeats, "timed repeats per size (the median is reported)");
  cli.add("--json", &json, "one JSON object per line");
  if (!cli.parse(argc, argv)) return cli.exit_code();
  try {
    dist::Communicator& w = dist::init_program();
    const auto [dev, gpu] = examples::open_device(device);
    const int W = w.size();
    if (!json) {
      std::printf("%s, %d rank(s)%s%s\n", w.backend().c_str(), W, gpu.empty() ? "" : "; ", gpu.c_str());
      if (!w.distributed()) std::printf("(one process: start it with mpirun -np N to time anything)\n");
      std::printf("%10s %12s %12s %14s\n", "bytes", "median us", "algo MB/s", "bus MB/s");
    }
    for (int64_t bytes = 4 << 10; bytes <= (int64_t)64 << 20; bytes *= 4) {
      const int64_t n = bytes / 4;
      Tensor buf = Tensor::full({n}, 1.0, DType::f32, dev);
      dist::Buffer b{buf.raw_data(), n, DType::f32, dev};
      const int64_t reps = bytes >= (16 << 20) ? std::max<int64_t>(3, repeats / 4) : repeats;
      double s = median_slowest(w, reps, [&] { w.all_reduce(std::span<const dist::Buffer>(&b, 1), dist::ReduceOp::mean, "bench"); });
      double algo = bytes / s / 1e6, bus = algo * 2.0 * (W - 1) / std::max(W, 1);
      if (json)
        std::printf("{\"part\": \"buffer\", \"ranks\": %d, \"device\": \"%s\", \"bytes\": %lld, "
                    "\"median_us\": %.2f, \"algo_MBps\": %.1f, \"bus_MBps\": %.1f}\n",
                    W, dev.str().c_str(), (long long)bytes, s * 1e6, algo, bus);
      else
        std::printf("%10lld %12.1f %12.1f %14.1f\n", (long long)bytes, s * 1e6, algo, bus);
    }

    struct Config { const char* name; int64_t d_model, n_layer; };
    if (!json) std::printf("\ngradient synchronisation of one step (DataParallel::synchronize, buckets of %lld MiB)\n"
                           "%-6s %10s %12s %12s\n", (long long)(train::DataParallel::kBucketBytes >> 20),
                           "config", "params", "grad MB", "median ms");
    for (Config c : {Config{"tiny", 128, 2}, Config{"small", 256, 4}}) {
      nn::MambaConfig cfg;
      cfg.d_model = c.d_model;
      cfg.n_layer = c.n_layer;
      cfg.vocab_size = 256;
      nn::MambaLM model(cfg, 0);
      model.to(dev);
      auto params = model.named_parameters();
      for (auto& p : params) p.tensor.set_grad(Tensor::full(p.tensor.shape(), 0.5, DType::f32, dev));
      train::DataParallel dp(w, params);
      int64_t step = 0;
      double s = median_slowest(w, repeats, [&] { dp.synchronize(1.0, false, ++step); });
      const double mb = model.num_parameters() * 4 / 1048576.0;
      if (json)
        std::printf("{\"part\": \"step\", \"ranks\": %d, \"device\": \"%s\", \"config\": \"%s\", "
                    "\"params\": %lld, \"median_ms\": %.3f}\n", W, dev.str().c_str(), c.name,
                    (long long)model.num_parameters(), s * 1e3);
      else
        std::printf("%-6s %10lld %12.2f %12.3f\n", c.name, (long long)model.num_parameters(), mb, s * 1e3);
    }
    return 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "bench_allreduce: %s\n", e.what());
    dist::abort_job_on_error();
    return 1;
  }
}
