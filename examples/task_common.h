// examples/task_common.h — what the two synthetic-task programs (selective_copying,
// induction_heads) share: the training flags, the model and trainer configuration built from
// them, the training run itself (SyntheticRun: model, data streams, trainer task, evaluation
// on a fixed held-out set, stopping at a target accuracy), the summary and error handling.
// Each program keeps only its task: its flags and defaults, its batches, its final scoring.
//
// Flag precedence: `--paper` only changes defaults. The programs look for it in argv before
// declaring their flags, so an explicit flag still wins wherever it stands on the line
// (`--paper --steps 1000` and `--steps 1000 --paper` both run the paper's setup for 1000 steps).
//
// Stopping at --target-acc: TrainTask::should_stop (train/trainer.h) returns true once an
// evaluation reaches the target; the trainer saves a checkpoint (with a run directory) and
// returns. The program then re-scores the final weights, so the summary always describes the
// model that was saved.
#pragma once
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "autograd/grad_mode.h"
#include "data/synthetic.h"
#include "examples/cli.h"
#include "examples/precision_flag.h"
#include "examples/train_flags.h"
#include "nn/mamba.h"
#include "train/interrupt.h"
#include "train/data_parallel.h"
#include "train/distributed.h"
#include "train/trainer.h"

namespace mg::examples {

// True when `name` is on the command line (used for --paper before the flags are declared).
inline bool has_switch(int argc, char** argv, const char* name) {
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], name) == 0) return true;
  return false;
}

struct TrainFlags {
  // model
  int64_t d_model = 64, n_layer = 2, d_state = 16, expand = 2;
  // optimisation
  int64_t steps = 1000, batch = 8, grad_accum = 1, warmup = 0;
  double lr = 1e-3, min_lr = 0.0, weight_decay = 0.0, grad_clip = 1.0, beta1 = 0.9, beta2 = 0.999;
  std::string schedule = "constant";
  // evaluation, logging, checkpoints
  int64_t eval_every = 100, eval_batches = 8, eval_batch = 0, log_every = 50;
  int64_t ckpt_every = 0, keep_last = 2, seed = 0;
  double target_acc = 0.0;  // 0: run all --steps
  std::string run_dir, resume;
  std::string precision = "f32";  // --precision: Settings::precision (set by check_train_flags)
  bool paper = false, overwrite = false;

  // --eval-batch, else the global batch (--batch x ranks: the held-out set of one process
  // with the same global batch).
  int64_t eval_batch_size() const { return eval_batch > 0 ? eval_batch : batch * dist::world().size(); }
};

inline void add_train_flags(Cli& cli, TrainFlags& f) {
  cli.section("model");
  cli.add("--paper", &f.paper, "use the paper's configuration (App. E.1) as the defaults");
  cli.add("--d-model", &f.d_model, "model width D", {.min = 1, .max = 65536});
  cli.add("--n-layer", &f.n_layer, "Mamba blocks", {.min = 1, .max = 1024});
  cli.add("--d-state", &f.d_state, "SSM state size N", {.min = 1, .max = 1024});
  cli.add("--expand", &f.expand, "inner width factor E (d_inner = E * D)", {.min = 1, .max = 64});
  cli.section("optimisation");
  cli.add("--steps", &f.steps, "optimizer steps (a resumed run continues up to this)", {.min = 1});
  cli.add("--batch", &f.batch, "sequences per micro-batch (fresh random data every step)", {.min = 1, .max = 1 << 20});
  cli.add("--grad-accum", &f.grad_accum, "micro-batches per optimizer step", {.min = 1, .max = 1 << 20});
  cli.add("--lr", &f.lr, "peak learning rate", {.min = 0, .min_open = true});
  cli.add("--min-lr", &f.min_lr, "final learning rate of cosine / wsd", {.min = 0});
  cli.add("--schedule", &f.schedule, "learning-rate schedule", {.choices = {"constant", "cosine", "wsd"}});
  cli.add("--warmup", &f.warmup, "linear warm-up steps", {.min = 0});
  cli.add("--weight-decay", &f.weight_decay, "AdamW decoupled weight decay (0: plain Adam)", {.min = 0});
  cli.add("--grad-clip", &f.grad_clip, "global gradient-norm clip (0: off)", {.min = 0});
  cli.add("--beta1", &f.beta1, "Adam beta1", {.min = 0, .max = 1, .max_open = true});
  cli.add("--beta2", &f.beta2, "Adam beta2", {.min = 0, .max = 1, .max_open = true});
  cli.add("--seed", &f.seed, "seed of the initialisation and of the training data", {.min = 0});
  add_precision_flag(cli, &f.precision);
  cli.section("evaluation, checkpoints, log");
  cli.add("--eval-every", &f.eval_every, "steps between evaluations (0: only at the end)", {.min = 0});
  cli.add("--eval-batches", &f.eval_batches, "held-out batches per evaluation (fixed set)", {.min = 1, .max = 1 << 20});
  cli.add("--eval-batch", &f.eval_batch, "sequences per evaluation batch (0: --batch x ranks)", {.min = 0, .max = 1 << 20});
  cli.add("--target-acc", &f.target_acc, "stop once an evaluation reaches this accuracy, in % (0: off)",
          {.min = 0, .max = 100});
  cli.add("--log-every", &f.log_every, "steps between printed training lines", {.min = 1});
  cli.add("--run-dir", &f.run_dir, "checkpoints, log.jsonl and loss_curve.svg go here (empty: none)",
          {.placeholder = "DIR"});
  cli.add("--resume", &f.resume, "'latest' or a checkpoint directory to continue from", {.placeholder = "CKPT"});
  cli.add("--overwrite", &f.overwrite, "replace another run in --run-dir (docs/training.md)");
  cli.add("--ckpt-every", &f.ckpt_every, "steps between checkpoints (0: at the end and on a signal)", {.min = 0});
  cli.add("--keep-last", &f.keep_last, "checkpoints of this run to keep", {.min = 1, .max = 1000000});
  cli.note("Ctrl-C or SIGTERM saves a checkpoint (with --run-dir) and exits with 130 / 143.\n"
           "Exit status 1: an error (named on stderr); 2: a bad flag.");
}

// The checks across flags, after parsing and before any work: 0, or 2 after printing the error.
// Also puts --precision in force (Settings::precision) once every flag has passed.
inline int check_train_flags(Cli& cli, const TrainFlags& f) {
  train::LrSchedule unused;
  if (int rc = check_schedule_flags(cli, f.schedule, f.lr, f.min_lr, f.warmup, f.steps, &unused)) return rc;
  if (f.resume == "latest" && f.run_dir.empty()) return cli.error("--resume", "latest needs a --run-dir");
  if (f.overwrite && f.run_dir.empty()) return cli.error("--overwrite", "needs a --run-dir");
  try {  // the run directory, before any work
    train::TrainConfig c;
    c.run_dir = f.run_dir;
    c.resume = f.resume;
    c.overwrite = f.overwrite;
    train::check_run_dir(c);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  apply_precision(f.precision);
  return 0;
}

inline nn::MambaConfig model_config(const TrainFlags& f, int64_t vocab) {
  nn::MambaConfig c;
  c.d_model = f.d_model;
  c.n_layer = f.n_layer;
  c.d_state = f.d_state;
  c.expand = f.expand;
  c.vocab_size = vocab;
  return c;
}

inline train::TrainConfig train_config(const TrainFlags& f, const Cli& cli,
                                       std::map<std::string, std::string> extra) {
  train::TrainConfig tc;
  tc.steps = f.steps;
  tc.grad_accum = f.grad_accum;
  tc.max_grad_norm = f.grad_clip;
  tc.schedule = train::LrSchedule::parse(f.schedule, f.lr, f.min_lr, f.warmup, f.steps);
  tc.beta1 = f.beta1;
  tc.beta2 = f.beta2;
  tc.weight_decay = f.weight_decay;
  tc.eval_every = f.eval_every;
  tc.ckpt_every = f.ckpt_every;
  tc.keep_last = (int)f.keep_last;
  tc.log_every = f.log_every;
  tc.run_dir = f.run_dir;
  tc.resume = f.resume;
  tc.overwrite = f.overwrite;
  tc.command_line = cli.command_line();
  extra["batch"] = std::to_string(f.batch);
  extra["seed"] = std::to_string(f.seed);
  extra["target_acc"] = std::to_string(f.target_acc);
  tc.extra_config = std::move(extra);
  return tc;
}

// Accuracy over the answer positions of a fixed list of batches (no-grad forward), plus the
// mean cross-entropy over those positions.
struct EvalResult {
  data::AnswerScore score;
  double loss = 0;
};
inline EvalResult score_batches(const nn::MambaLM& model, const std::vector<data::SyntheticBatch>& set) {
  NoGradGuard no_grad;
  EvalResult r;
  for (const auto& b : set) {
    nn::LMOutput out = model.forward(b.inputs, b.targets, -100);
    r.score += data::score_answers(out.logits, b.targets);
    r.loss += out.loss.item() / (double)set.size();
  }
  return r;
}

inline std::map<std::string, double> eval_metrics(const EvalResult& r) {
  return {{"acc_pct", 100.0 * r.score.accuracy()},
          {"exact_match_pct", 100.0 * r.score.exact_match_rate()},
          {"answer_loss", r.loss}};
}

// The --target-acc rule: reached once an evaluation's accuracy is at least the target.
struct TargetStop {
  double target_pct = 0;  // 0: never
  bool reached = false;
  bool check(double acc_pct) {
    if (target_pct > 0 && !reached && acc_pct >= target_pct) {
      reached = true;
      std::printf("target accuracy %.2f%% reached (%.2f%%): stopping\n", target_pct, acc_pct);
      std::fflush(stdout);
    }
    return reached;
  }
};

using Clock = std::chrono::steady_clock;
inline double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

inline std::string fmt_duration(double s) {
  char buf[64];
  if (s < 60) std::snprintf(buf, sizeof buf, "%.1f s", s);
  else std::snprintf(buf, sizeof buf, "%dm%04.1fs (%.0f s)", (int)(s / 60), s - 60 * (int)(s / 60), s);
  return buf;
}

// printf into a std::string.
[[gnu::format(printf, 1, 2)]] inline std::string strf(const char* fmt, ...) {
  va_list args, again;
  va_start(args, fmt);
  va_copy(again, args);
  const int n = std::vsnprintf(nullptr, 0, fmt, args);
  va_end(args);
  std::string out(n > 0 ? (size_t)n : 0, '\0');
  if (n > 0) std::vsnprintf(out.data(), out.size() + 1, fmt, again);
  va_end(again);
  return out;
}

// Runs a program's body; an mg::Error becomes "<program>: <message>" on stderr and exit code 1.
// Under mpirun (docs/distributed.md): only rank 0 prints, and an error ends the whole job.
template <typename F>
int run_main(const char* program, F&& body) {
  try {
    dist::init_program();
    return body();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", program, e.what());
    dist::abort_job_on_error();
    return 1;
  }
}

// False on every rank but 0 of a data-parallel run: the programs score and summarise there only.
inline bool lead_rank() { return dist::world().rank() == 0; }

// Draws a batch of `n` sequences of the task from `gen`.
using MakeBatch = std::function<data::SyntheticBatch(int64_t n, Generator& gen)>;

// One training run of a synthetic task, as both programs do it.
//
// The constructor builds the model from the flags, prints `headline` and the model, and draws
// the fixed held-out set (--eval-batches batches of the evaluation batch size). train() runs the
// trainer (train/trainer.h) with a fresh batch every micro-batch and the cross-entropy over the
// answer positions only (targets elsewhere are -100), scores the held-out set at every
// evaluation, and stops at --target-acc (TargetStop).
//
// Data streams: generator k is seeded seed * 7919 + k. Stream `first_stream` draws the training
// batches; its (seed, offset) is the task state saved in every checkpoint, so a resumed run
// continues the same stream. Stream first_stream + 1 draws the held-out set; the programs use
// further streams for their own final sets (stream()).
class SyntheticRun {
 public:
  nn::MambaConfig mcfg;
  nn::MambaLM model;
  std::vector<data::SyntheticBatch> eval_set;  // the fixed held-out set
  TargetStop stop;
  train::TrainConfig config;                   // set by train()
  train::TrainResult result;                   // set by train()

  SyntheticRun(const char* program, const TrainFlags& flags, int64_t vocab, uint64_t first_stream,
               MakeBatch make, const std::string& headline)
      : mcfg(model_config(flags, vocab)), model(mcfg, (uint64_t)flags.seed), program_(program),
        f_(flags), make_(std::move(make)), train_gen_(stream(first_stream)) {
    std::printf("%s\n", headline.c_str());
    std::printf("model: %s, %lld parameters\n", mcfg.str().c_str(), (long long)model.num_parameters());
    Generator eval_gen = stream(first_stream + 1);
    for (int64_t i = 0; i < f_.eval_batches; ++i) eval_set.push_back(make_(f_.eval_batch_size(), eval_gen));
    stop.target_pct = f_.target_acc;
  }
  SyntheticRun(const SyntheticRun&) = delete;  // the trainer's callbacks point at this run
  SyntheticRun& operator=(const SyntheticRun&) = delete;

  Generator stream(uint64_t k) const { return Generator((uint64_t)f_.seed * 7919 + k); }

  // Trains up to --steps (or the target); `extra` goes into the run's recorded config.
  // one_answer: a sequence has a single answer, so exact_match_pct (equal to acc_pct) is dropped
  // from the evaluations.
  const train::TrainResult& train(const Cli& cli, int64_t seq_len,
                                  std::map<std::string, std::string> extra, bool one_answer) {
    train::TrainTask task;
    task.tokens_per_micro_batch = f_.batch * seq_len;
    task.sequences_per_micro_batch = f_.batch;
    task.micro_batch_loss = [this](const nn::MambaLM& m) {
      // Every rank draws the global micro-batch (batch x world sequences, the stream of one
      // process with that batch) and keeps its rows; every sequence has the same answer count.
      const int rank = dist::world().rank(), world = dist::world().size();
      data::SyntheticBatch b = make_(f_.batch * world, train_gen_);
      return m.loss(train::shard_rows(b.inputs, rank, world), train::shard_rows(b.targets, rank, world),
                    -100);  // CE over the answer positions only
    };
    task.evaluate = [this, one_answer](const nn::MambaLM& m) {
      auto metrics = eval_metrics(score_batches(m, eval_set));
      if (one_answer) metrics.erase("exact_match_pct");
      return metrics;
    };
    task.should_stop = [this](const std::map<std::string, double>& metrics) {
      return stop.check(metrics.at("acc_pct"));
    };
    task.save_state = [this] {
      return std::map<std::string, uint64_t>{{"data_seed", train_gen_.seed()},
                                             {"data_offset", train_gen_.offset()}};
    };
    task.load_state = [this](const std::map<std::string, uint64_t>& s) {
      MG_CHECK(s.count("data_seed") && s.count("data_offset"), program_,
               ": the checkpoint has no data state");
      train_gen_.set_state(s.at("data_seed"), s.at("data_offset"));
    };
    config = train_config(f_, cli, std::move(extra));
    result = train::train(model, config, task);
    return result;
  }

  // After SIGINT / SIGTERM: one line, and the exit status 128 + signal (no final evaluation:
  // whoever sent the signal wants the program to end).
  int exit_after_signal() const {
    std::printf("interrupted by %s at step %lld: %s\n", train::signal_name(result.signal),
                (long long)result.steps_done,
                result.last_checkpoint.empty()
                    ? "no checkpoint saved"
                    : ("checkpoint " + result.last_checkpoint + "; continue with --resume latest").c_str());
    return 128 + result.signal;
  }

  // The summary lines both programs print after their "config" line.
  void print_training_summary() const {
    std::printf("training    batch %lld, %s, weight decay %g, clip %g\n", (long long)f_.batch,
                config.schedule.describe().c_str(), f_.weight_decay, f_.grad_clip);
    std::printf("steps       %lld (this run: %lld)%s\n", (long long)result.steps_done,
                (long long)(result.steps_done - result.first_step),
                result.stopped_early ? " — stopped at the target accuracy"
                            : (result.interrupted ? " — interrupted, checkpoint saved" : ""));
  }

 private:
  const char* program_;
  TrainFlags f_;
  MakeBatch make_;
  Generator train_gen_;  // after f_: stream() reads the seed
};

}  // namespace mg::examples
