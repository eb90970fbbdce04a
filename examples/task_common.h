// examples/task_common.h — what the two synthetic-task programs (selective_copying,
// induction_heads) share: the training flags, the model and trainer configuration built from
// them, scoring on a fixed evaluation set, stopping at a target accuracy, and the summary.
//
// Flag precedence: `--paper` only changes defaults. The programs look for it in argv before
// declaring their flags, so an explicit flag still wins wherever it stands on the line
// (`--paper --steps 1000` and `--steps 1000 --paper` both run the paper's setup for 1000 steps).
//
// Stopping at --target-acc: the trainer (train/trainer.h) has no early-stop hook, but its
// Ctrl-C path is exactly "save a checkpoint and return". When an evaluation reaches the target,
// TargetStop raises SIGINT as the next step starts; the trainer finishes that step, saves a
// checkpoint (with a run directory) and returns. The program then re-scores the final
// weights, so the summary always describes the model that was saved.
#pragma once
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "autograd/grad_mode.h"
#include "data/synthetic.h"
#include "examples/cli.h"
#include "nn/mamba.h"
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
  bool paper = false;
};

inline void add_train_flags(Cli& cli, TrainFlags& f) {
  cli.add("--paper", &f.paper, "use the paper's configuration (App. E.1) as the defaults");
  cli.add("--d-model", &f.d_model, "model width D");
  cli.add("--n-layer", &f.n_layer, "Mamba blocks");
  cli.add("--d-state", &f.d_state, "SSM state size N");
  cli.add("--expand", &f.expand, "inner width factor E (d_inner = E * D)");
  cli.add("--steps", &f.steps, "optimizer steps (a resumed run continues up to this)");
  cli.add("--batch", &f.batch, "sequences per micro-batch (fresh random data every step)");
  cli.add("--grad-accum", &f.grad_accum, "micro-batches per optimizer step");
  cli.add("--lr", &f.lr, "peak learning rate");
  cli.add("--min-lr", &f.min_lr, "final learning rate of cosine / wsd");
  cli.add("--schedule", &f.schedule, "learning-rate schedule: constant, cosine or wsd");
  cli.add("--warmup", &f.warmup, "linear warm-up steps");
  cli.add("--weight-decay", &f.weight_decay, "AdamW decoupled weight decay (0: plain Adam)");
  cli.add("--grad-clip", &f.grad_clip, "global gradient-norm clip (0: off)");
  cli.add("--beta1", &f.beta1, "Adam beta1");
  cli.add("--beta2", &f.beta2, "Adam beta2");
  cli.add("--seed", &f.seed, "seed of the initialisation and of the training data");
  cli.add("--eval-every", &f.eval_every, "steps between evaluations (0: only at the end)");
  cli.add("--eval-batches", &f.eval_batches, "held-out batches per evaluation (fixed set)");
  cli.add("--eval-batch", &f.eval_batch, "sequences per evaluation batch (0: --batch)");
  cli.add("--target-acc", &f.target_acc, "stop once an evaluation reaches this accuracy, in % (0: off)");
  cli.add("--log-every", &f.log_every, "steps between printed training lines");
  cli.add("--run-dir", &f.run_dir, "checkpoints and log.jsonl go here (empty: none)");
  cli.add("--resume", &f.resume, "'latest' or a checkpoint directory to continue from");
  cli.add("--ckpt-every", &f.ckpt_every, "steps between checkpoints (0: at the end and on Ctrl-C)");
  cli.add("--keep-last", &f.keep_last, "checkpoints to keep");
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

// Stops training (through the trainer's Ctrl-C path) once an evaluation reaches the target.
// check() runs inside the evaluation; the SIGINT is raised at the start of the next
// micro-batch, where the trainer's handler is installed for sure (the final evaluation runs
// after the trainer has restored the previous handler, and there is no next micro-batch).
struct TargetStop {
  double target_pct = 0;  // 0: never
  bool reached = false, raised = false;
  void check(double acc_pct) {
    if (target_pct > 0 && !reached && acc_pct >= target_pct) {
      reached = true;
      std::printf("target accuracy %.2f%% reached (%.2f%%)\n", target_pct, acc_pct);
      std::fflush(stdout);
    }
  }
  void before_micro_batch() {
    if (reached && !raised) {
      raised = true;
      std::printf("stopping at the target: this step completes, then the trainer saves and returns\n");
      std::fflush(stdout);
      std::raise(SIGINT);  // the trainer finishes this step, saves a checkpoint and returns
    }
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

}  // namespace mg::examples
