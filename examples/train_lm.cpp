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
#include "nn/sampling.h"
#include "train/data_parallel.h"
#include "train/distributed.h"
#include "train/trainer.h"

using namespace mg;

int main(int argc, char** argv) {
  std::string data_path, run_dir = "runs/train_lm", resume, schedule = "cosine", device = "cpu";
  std::string prompt = "The ";
  int64_t steps = 1500, batch = 16, seq_len = 128, d_model = 128, n_layer = 4, d_state = 16;
  int64_t warmup = 100, grad_accum = 1, eval_every = 250, eval_batches = 20, ckpt_every = 500;
  int64_t keep_last = 2, log_every = 25, samples = 3, sample_len = 240;
  int64_t seed = 0;
  double lr = 4e-3, min_lr = 4e-4, weight_decay = 0.1, grad_clip = 1.0, temperature = 0.8;
  double top_p = 0.95, val_fraction = 0.05;

  examples::Cli cli("train_lm", "Trains a byte-level Mamba language model on text and prints samples.");
  cli.add("--data", &data_path, "text file or directory (default: Debian's fortunes, /usr/share/games/fortunes)");
  cli.add("--val-fraction", &val_fraction, "fraction of the text held out for validation");
  cli.add("--steps", &steps, "optimizer steps");
  cli.add("--batch", &batch, "sequences per micro-batch");
  cli.add("--seq-len", &seq_len, "tokens per sequence");
  cli.add("--grad-accum", &grad_accum, "micro-batches per optimizer step");
  cli.add("--d-model", &d_model, "model width D");
  cli.add("--n-layer", &n_layer, "Mamba blocks");
  cli.add("--d-state", &d_state, "SSM state size N");
  cli.add("--lr", &lr, "peak learning rate");
  cli.add("--min-lr", &min_lr, "final learning rate (cosine / wsd)");
  cli.add("--schedule", &schedule, "learning-rate schedule: constant, cosine or wsd");
  cli.add("--warmup", &warmup, "linear warm-up steps");
  cli.add("--weight-decay", &weight_decay, "AdamW weight decay (not on A_log, D, biases, norms)");
  cli.add("--grad-clip", &grad_clip, "global gradient-norm clip (0: off)");
  cli.add("--eval-every", &eval_every, "steps between validation runs (0: only at the end)");
  cli.add("--eval-batches", &eval_batches, "validation batches (of --batch x ranks sequences) per evaluation (0: the whole split)");
  cli.add("--ckpt-every", &ckpt_every, "steps between checkpoints (0: only at the end and on Ctrl-C)");
  cli.add("--keep-last", &keep_last, "checkpoints to keep");
  cli.add("--run-dir", &run_dir, "where checkpoints and log.jsonl go");
  cli.add("--resume", &resume, "'latest' or a checkpoint directory to continue from");
  cli.add("--log-every", &log_every, "steps between printed log lines");
  cli.add("--samples", &samples, "samples printed at the end");
  cli.add("--sample-len", &sample_len, "bytes per sample");
  cli.add("--prompt", &prompt, "prompt of the samples");
  cli.add("--temperature", &temperature, "sampling temperature");
  cli.add("--top-p", &top_p, "nucleus sampling threshold");
  cli.add("--seed", &seed, "seed of initialisation, data order and sampling");
  cli.add("--device", &device, "cpu or cuda (training on the GPU; sampling stays on the CPU)");
  if (!cli.parse(argc, argv)) return cli.exit_code();

  try {
    dist::Communicator& comm = dist::init_program();  // [data parallel] only rank 0 prints
    const int rank = comm.rank(), world = comm.size();
    // No GPU (or no CUDA in this build) is one clear error now, not in the middle of the run.
    const auto [dev, gpu] = examples::open_device(device);
    if (!gpu.empty()) std::printf("%s\n", gpu.c_str());
    auto to_dev = [&](const Tensor& t) { return dev.is_cpu() ? t : t.to(dev); };
    if (data_path.empty()) data_path = data::TextDataset::default_fortunes_dir();
    data::TextDatasetOptions dopt;
    dopt.val_fraction = val_fraction;
    dopt.seed = (uint64_t)seed;
    data::TextDataset data(data_path, dopt);
    std::printf("data: %s — %zu files, %lld tokens (%lld train, %lld validation), cache %s\n",
                data_path.c_str(), data.files().size(), (long long)data.num_tokens(),
                (long long)data.num_train_tokens(), (long long)data.num_val_tokens(),
                data.cache_path().c_str());

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

    train::TrainConfig tc;
    tc.steps = steps;
    tc.grad_accum = grad_accum;
    tc.max_grad_norm = grad_clip;
    tc.schedule = train::LrSchedule::parse(schedule, lr, min_lr, warmup, steps);
    tc.weight_decay = weight_decay;
    tc.eval_every = eval_every;
    tc.ckpt_every = ckpt_every;
    tc.keep_last = (int)keep_last;
    tc.log_every = log_every;
    tc.run_dir = run_dir;
    tc.resume = resume;
    tc.command_line = cli.command_line();
    tc.extra_config = {{"data", data_path}, {"batch", std::to_string(batch)},
                       {"seq_len", std::to_string(seq_len)}, {"seed", std::to_string(seed)},
                       {"device", dev.str()}};
    train::TrainResult r = train::train(model, tc, task);

    std::printf("\ntrained %lld steps in %.1f s (%.0f tokens/s)%s\n", (long long)(r.steps_done - r.first_step),
                r.seconds, (r.steps_done - r.first_step) * grad_accum * batch * world * seq_len / std::max(r.seconds, 1e-9),
                r.interrupted ? " — interrupted, checkpoint saved" : "");
    if (r.last_eval.count("val_loss"))
      std::printf("validation loss %.4f nats/byte (%.3f bits/byte)\n", r.last_eval["val_loss"],
                  r.last_eval["val_bits_per_byte"]);

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
  } catch (const Error& e) {
    std::fprintf(stderr, "train_lm: %s\n", e.what());
    dist::abort_job_on_error();  // under mpirun the other ranks would wait for this one
    return 1;
  }
}
