// examples/train_lm — train a character-level (byte-level) Mamba language model on text.
//
// Default data: the English text of Debian's `fortunes` package (scripts/setup.sh --data
// installs it); --data PATH trains on any text file or directory. The defaults are chosen to
// produce recognisable English within a few minutes on 2 CPU cores; docs/training.md shows
// what a good run looks like. At the end (and every --sample-every steps) it prints samples
// and the validation loss.
//
//   ./build/examples/train_lm                          # the default run
//   ./build/examples/train_lm --data my.txt --steps 5000 --run-dir runs/mine
//   ./build/examples/train_lm --run-dir runs/mine --resume latest
//   ./build/examples/train_lm --device cuda            # train on the GPU (a CUDA build)
//
// --device cuda: the model is moved to the GPU before the optimizer exists (AdamW's state is
// created there), each token batch is copied over as it is drawn, and only the loss (and the
// gradient norm) come back to the host for the log. Data and tokenizer stay on the CPU, and
// so does sampling (the recurrent step is CPU-only for now): the trained model is moved back
// to the CPU before the samples. Without a GPU, or in a build without CUDA, the program stops
// at start with the reason.
//
// Under mpirun (docs/distributed.md) every rank draws the same global micro-batch of
// --batch x ranks windows and trains on its own rows of it; only rank 0 prints and writes.
//   mpirun -np 2 ./build/examples/train_lm --batch 8    # global batch 16
#include <cmath>
#include <cstdio>
#include <string>

#include "autograd/grad_mode.h"
#include "core/allocator.h"
#include "data/byte_tokenizer.h"
#include "data/text_dataset.h"
#include "examples/cli.h"
#include "examples/device_flag.h"
#include "examples/cuda_scan_flag.h"
#include "examples/precision_flag.h"
#include "examples/train_flags.h"
#include "nn/sampling.h"
#include "train/interrupt.h"
#include "train/data_parallel.h"
#include "train/distributed.h"
#include "train/trainer.h"

using namespace mg;

int main(int argc, char** argv) {
  std::string data_path, run_dir = "runs/train_lm", resume, schedule = "cosine", device = "cpu";
  std::string precision = "f32", cuda_scan = "v2";
  std::string prompt = "The ";
  int64_t steps = 1500, batch = 16, seq_len = 128, d_model = 128, n_layer = 4, d_state = 16;
  int64_t warmup = 100, grad_accum = 1, eval_every = 250, eval_batches = 20, ckpt_every = 500;
  int64_t keep_last = 2, log_every = 25, samples = 3, sample_len = 240;
  int64_t seed = 0;
  double lr = 4e-3, min_lr = 4e-4, weight_decay = 0.1, grad_clip = 1.0, temperature = 0.8;
  double top_p = 0.95, val_fraction = 0.05;

  bool data_binary = false, overwrite = false;
  examples::Cli cli("train_lm", "Trains a byte-level Mamba language model on text and prints samples.");
  cli.section("data");
  cli.add("--data", &data_path, "text file or directory",
          {.default_text = "Debian's fortunes, /usr/share/games/fortunes", .placeholder = "PATH"});
  cli.add("--data-binary", &data_binary, "train on files that do not look like text (NUL bytes, "
          "control characters or mostly non-UTF-8), which are otherwise refused or skipped");
  cli.add("--val-fraction", &val_fraction, "fraction of the text held out for validation (0: none)",
          {.min = 0, .max = 1, .max_open = true});
  cli.section("model");
  cli.add("--d-model", &d_model, "model width D", {.min = 1, .max = 65536});
  cli.add("--n-layer", &n_layer, "Mamba blocks", {.min = 1, .max = 1024});
  cli.add("--d-state", &d_state, "SSM state size N", {.min = 1, .max = 1024});
  cli.section("optimisation");
  cli.add("--steps", &steps, "optimizer steps (a resumed run continues up to this)", {.min = 1});
  cli.add("--batch", &batch, "sequences per micro-batch", {.min = 1, .max = 1 << 20});
  cli.add("--seq-len", &seq_len, "tokens per sequence", {.min = 1, .max = 1 << 24});
  cli.add("--grad-accum", &grad_accum, "micro-batches per optimizer step", {.min = 1, .max = 1 << 20});
  cli.add("--lr", &lr, "peak learning rate", {.min = 0, .min_open = true});
  cli.add("--min-lr", &min_lr, "final learning rate (cosine / wsd)", {.min = 0});
  cli.add("--schedule", &schedule, "learning-rate schedule", {.choices = {"constant", "cosine", "wsd"}});
  cli.add("--warmup", &warmup, "linear warm-up steps (when not given: at most --steps / 10)", {.min = 0});
  cli.add("--weight-decay", &weight_decay, "AdamW weight decay (not on A_log, D, biases, norms)", {.min = 0});
  cli.add("--grad-clip", &grad_clip, "global gradient-norm clip (0: off)", {.min = 0});
  cli.add("--seed", &seed, "seed of initialisation, data order and sampling", {.min = 0});
  cli.add("--device", &device, "cuda: train on the GPU (sampling stays on the CPU)",
          {.choices = {"cpu", "cuda"}});
  examples::add_precision_flag(cli, &precision);
  examples::add_cuda_scan_flag(cli, &cuda_scan);
  cli.section("evaluation, checkpoints, log");
  cli.add("--eval-every", &eval_every, "steps between validation runs (0: only at the end)", {.min = 0});
  cli.add("--eval-batches", &eval_batches, "validation batches (of --batch x ranks sequences) per evaluation (0: the whole split)", {.min = 0});
  cli.add("--run-dir", &run_dir, "where checkpoints, log.jsonl and loss_curve.svg go",
          {.placeholder = "DIR"});
  cli.add("--resume", &resume, "'latest' or a checkpoint directory to continue from",
          {.placeholder = "CKPT"});
  cli.add("--overwrite", &overwrite, "replace another run in --run-dir (its checkpoints are "
          "deleted after this run's first checkpoint; docs/training.md)");
  cli.add("--ckpt-every", &ckpt_every, "steps between checkpoints (0: only at the end and on a signal)", {.min = 0});
  cli.add("--keep-last", &keep_last, "checkpoints of this run to keep", {.min = 1, .max = 1000000});
  cli.add("--log-every", &log_every, "steps between printed log lines", {.min = 1});
  cli.section("samples (printed at the end)");
  cli.add("--samples", &samples, "how many", {.min = 0, .max = 1000});
  cli.add("--sample-len", &sample_len, "bytes per sample", {.min = 0, .max = 1 << 24});
  cli.add("--prompt", &prompt, "prompt of the samples");
  cli.add("--temperature", &temperature, "sampling temperature (0: greedy)", {.min = 0, .max = 100});
  cli.add("--top-p", &top_p, "nucleus sampling threshold", {.min = 0, .min_open = true, .max = 1});
  cli.note("Ctrl-C or SIGTERM saves a checkpoint and exits with 130 / 143; continue with\n"
           "--resume latest. Exit status 1: an error (named on stderr); 2: a bad flag.");
  if (!cli.parse(argc, argv)) return cli.exit_code();
  examples::apply_precision(precision);
  examples::apply_cuda_scan(cuda_scan);
  // Every flag is checked before any data is read or any work is done.
  if (!cli.given("--warmup")) warmup = std::min(warmup, steps / 10);  // short runs: --steps 50 works
  train::LrSchedule lr_schedule;
  if (int rc = examples::check_schedule_flags(cli, schedule, lr, min_lr, warmup, steps, &lr_schedule))
    return rc;
  if (samples > 0 && prompt.empty())
    return cli.error("--prompt", "empty, but --samples " + std::to_string(samples) +
                                     " asks for samples (give a prompt, or --samples 0)");
  if (!resume.empty() && run_dir.empty() && resume == "latest")
    return cli.error("--resume", "latest needs a --run-dir");

  try {
    train::TrainConfig tc;  // the run directory is checked now, before any data is read
    tc.run_dir = run_dir;
    tc.resume = resume;
    tc.overwrite = overwrite;
    train::check_run_dir(tc);
    dist::Communicator& comm = dist::init_program();  // [data parallel] only rank 0 prints
    const int rank = comm.rank(), world = comm.size();
    // No GPU (or no CUDA in this build) is one clear error now, not in the middle of the run.
    const auto [dev, gpu] = examples::open_device(device);
    if (!gpu.empty()) std::printf("%s\n", gpu.c_str());
    auto to_dev = [&](const Tensor& t) { return dev.is_cpu() ? t : t.copy_to(dev); };
    if (data_path.empty()) data_path = data::TextDataset::default_fortunes_dir();
    data::TextDatasetOptions dopt;
    dopt.val_fraction = val_fraction;
    dopt.seed = (uint64_t)seed;
    dopt.allow_binary = data_binary;
    data::TextDataset data(data_path, dopt);
    std::printf("data: %s — %zu files, %lld tokens (%lld train, %lld validation), cache %s\n",
                data_path.c_str(), data.files().size(), (long long)data.num_tokens(),
                (long long)data.num_train_tokens(), (long long)data.num_val_tokens(),
                data.cache_path().c_str());
    // --seq-len against the data: a window is L + 1 tokens inside one segment of a split.
    auto longest = [](const std::vector<data::TextDataset::Segment>& segs) {
      int64_t m = 0;
      for (auto& g : segs) m = std::max(m, g.end - g.begin);
      return m;
    };
    if (longest(data.train_segments()) < seq_len + 1)
      return cli.error("--seq-len " + std::to_string(seq_len), "windows of " +
                                        std::to_string(seq_len + 1) + " tokens do not fit in the "
                                        "training text (longest training segment: " +
                                        std::to_string(longest(data.train_segments())) +
                                        " tokens); use a smaller --seq-len or more --data");
    if (val_fraction > 0 && longest(data.val_segments()) < seq_len + 1)
      return cli.error("--seq-len " + std::to_string(seq_len), "windows of " +
                                        std::to_string(seq_len + 1) + " tokens do not fit in the "
                                        "validation text (longest segment: " +
                                        std::to_string(longest(data.val_segments())) +
                                        " tokens); use a smaller --seq-len, a larger "
                                        "--val-fraction, or --val-fraction 0");

    nn::MambaConfig cfg;
    cfg.d_model = d_model;
    cfg.n_layer = n_layer;
    cfg.vocab_size = 256;
    cfg.d_state = d_state;
    nn::MambaLM model(cfg, (uint64_t)seed);  // initialised on the CPU
    model.to(dev);                           // before train() creates AdamW
    std::printf("model: %s, %lld parameters\n", cfg.str().c_str(), (long long)model.num_parameters());

    // On the training device, copied once. --eval-batches counts global batches: with W ranks
    // the same windows as one process with batch B W (every rank evaluates all of them).
    std::vector<Tensor> val;
    if (val_fraction > 0)
      for (const Tensor& w : data.validation_batches(batch, seq_len, eval_batches * world)) val.push_back(to_dev(w));
    train::TrainTask task;
    task.tokens_per_micro_batch = batch * seq_len;
    task.sequences_per_micro_batch = batch;
    task.micro_batch_loss = [&](const nn::MambaLM& m) {
      // Every rank draws the global micro-batch (B x world windows: the same stream as one
      // process with batch B x world) and keeps its own B rows.
      Tensor global = data.next_batch(batch * world, seq_len);              // (B W, L+1)
      Tensor window = to_dev(train::shard_rows(global, rank, world));       // (B, L+1)
      return m.loss(window);  // next-token CE over L positions
    };
    if (!val.empty())
      task.evaluate = [&](const nn::MambaLM& m) {
        double total = 0;
        int64_t n = 0;
        for (const Tensor& w : val) {
          total += m.loss(w).item() * w.size(0);
          n += w.size(0);
        }
        double v = n ? total / n : NAN;
        return std::map<std::string, double>{{"val_loss", v}, {"val_bits_per_byte", v / std::log(2.0)}};
      };
    task.save_state = [&] { return std::map<std::string, uint64_t>{{"data_cursor", data.cursor()}}; };
    task.load_state = [&](const std::map<std::string, uint64_t>& s) {
      MG_CHECK(s.count("data_cursor"), "train_lm: the checkpoint has no data cursor");
      data.set_cursor(s.at("data_cursor"));
    };

    tc.steps = steps;
    tc.grad_accum = grad_accum;
    tc.max_grad_norm = grad_clip;
    tc.schedule = lr_schedule;
    tc.weight_decay = weight_decay;
    tc.eval_every = eval_every;
    tc.ckpt_every = ckpt_every;
    tc.keep_last = (int)keep_last;
    tc.log_every = log_every;
    tc.command_line = cli.command_line();
    tc.extra_config = {{"data", data_path}, {"batch", std::to_string(batch)},
                       {"seq_len", std::to_string(seq_len)}, {"seed", std::to_string(seed)},
                       {"device", dev.str()}};
    train::TrainResult r = train::train(model, tc, task);

    std::printf("\ntrained %lld steps in %.1f s (%.0f tokens/s)\n", (long long)(r.steps_done - r.first_step),
                r.seconds, (r.steps_done - r.first_step) * grad_accum * batch * world * seq_len / std::max(r.seconds, 1e-9));
    if (r.last_eval.count("val_loss"))
      std::printf("validation loss %.4f nats/byte (%.3f bits/byte)\n", r.last_eval["val_loss"],
                  r.last_eval["val_bits_per_byte"]);
    if (!run_dir.empty()) std::printf("log: %s/log.jsonl, loss curve: %s/loss_curve.svg\n", run_dir.c_str(), run_dir.c_str());
    if (r.interrupted) {  // no samples: whoever sent the signal wants the program to end
      std::printf("interrupted by %s: %s; continue with --resume latest\n",
                  train::signal_name(r.signal),
                  r.last_checkpoint.empty() ? "no checkpoint" : ("checkpoint " + r.last_checkpoint).c_str());
      return 128 + r.signal;
    }

    // Samples, with the recurrent O(1)-per-token state (CPU only for now). Rank 0 only.
    if (rank != 0) samples = 0;
    if (samples > 0 && dev.is_cuda()) {
      std::printf("\nsampling on the CPU (the recurrent step runs on the CPU in this version)\n");
      model.to(Device::cpu());
    }
    data::ByteTokenizer tok;
    nn::SamplingOptions so;
    so.temperature = temperature;
    so.top_p = top_p;
    so.vocab_limit = 256;
    Generator gen((uint64_t)seed + 1);
    for (int64_t i = 0; i < samples; ++i) {
      std::printf("\n--- sample %lld ---\n%s", (long long)(i + 1), prompt.c_str());
      nn::generate(model, tok.encode(prompt), sample_len, so, gen, [&](int32_t id) {
        std::string s = tok.decode_one(id);
        std::fwrite(s.data(), 1, s.size(), stdout);
        std::fflush(stdout);
        return true;
      });
      std::printf("\n");
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "train_lm: %s\n", e.what());
    dist::abort_job_on_error();  // under mpirun the other ranks would wait for this one
    return 1;
  }
}
