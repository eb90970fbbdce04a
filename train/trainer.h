// train/trainer.h — the training loop: AdamW steps with schedules, clipping, accumulation,
// evaluation, checkpoints and exact resume.
//
// What "exact resume" means here: a run of 2N steps and a run of N steps, stopped, resumed
// from its checkpoint and run N more, produce bitwise-identical losses and weights (same
// machine; the thread count may differ: no CPU result depends on it). A checkpoint therefore holds everything the next step reads:
// the weights, AdamW's moments and step count, the step (the schedule is a pure function of
// it), and the task's own state (data cursor, generator offsets) as integers.
//
// Layout of a run directory:
//   log.jsonl                         the config and command line, then one line per step/eval
//   loss_curve.svg                    train and validation loss against tokens (at each
//                                     checkpoint and at the end; train/loss_curve.h)
//   ckpt-000500/model.safetensors     the model alone (readable by nn/checkpoint load_mamba)
//   ckpt-000500/trainer.safetensors   AdamW state + step + task state + run id (metadata)
//   latest                            the name of the newest complete checkpoint
// A checkpoint is written into ckpt-000500.tmp/ and renamed when complete, and `latest` is
// replaced atomically after that: a crash at any moment leaves the previous checkpoint intact.
// One directory holds one run (train/run_dir.h: run ids, --overwrite); only the newest
// `keep_last` checkpoints of the current run are kept. A resume cuts log.jsonl back to the
// checkpoint's step, so the log stays one history without repeated steps.
//
// Health: a step whose loss or gradients are not finite is skipped (no update) and logged;
// while such a streak lasts no checkpoint is written (a periodic one, the final one, or one on
// a signal), so `latest` always names weights that trained normally. After max_nonfinite
// skipped steps in a row training stops with an mg::Error naming the first non-finite value
// of the streak (the loss, or the first parameter whose gradient), its step, what to try
// (--lr, --grad-clip) and the last good checkpoint, if there is one.
//
// Every write is checked: a failed log or checkpoint write throws mg::Error.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "nn/mamba.h"
#include "train/schedule.h"

namespace mg::dist {
class Communicator;
}

namespace mg::train {

struct TrainConfig {
  int64_t steps = 1000;        // optimizer steps in total (a resumed run continues to this)
  int64_t grad_accum = 1;      // micro-batches per step; each micro-loss is scaled by 1/K
  double max_grad_norm = 1.0;  // global-norm clipping; <= 0 disables it
  LrSchedule schedule;
  double beta1 = 0.9, beta2 = 0.95, adam_eps = 1e-8, weight_decay = 0.1;
  int64_t eval_every = 0;      // 0: only at the end
  int64_t ckpt_every = 0;      // 0: only at the end and on Ctrl-C (needs run_dir)
  int keep_last = 3;
  int64_t log_every = 10;
  int max_nonfinite = 5;       // consecutive skipped steps before training stops
  std::string run_dir;         // empty: no log file, no checkpoints
  std::string resume;          // "", "latest", or a checkpoint directory
  bool overwrite = false;      // a fresh run may replace another run in run_dir (run_dir.h)
  std::string command_line;
  std::map<std::string, std::string> extra_config;  // shown at the head of the log
  bool quiet = false;          // no per-step lines (tests)
  bool handle_sigint = true;   // Ctrl-C (SIGINT) and SIGTERM save a checkpoint and return
  // Data parallel (train/data_parallel.h, docs/distributed.md): nullptr uses dist::world(),
  // which is the plain single process unless the program was started by mpirun.
  dist::Communicator* comm = nullptr;
};

// What the loop trains on. The task owns its data and random state.
// Data parallel (several ranks): micro_batch_loss returns this rank's loss, the mean over the
// tokens of its shard of the global micro-batch (train::shard_rows), and every rank's shard
// must hold the same number of loss tokens (tokens_per_micro_batch, checked at start): then the
// mean of the ranks' means is the mean over the global batch (train/data_parallel.h).
struct TrainTask {
  // Draws the next micro-batch and returns its (recorded) scalar loss.
  std::function<Tensor(const nn::MambaLM&)> micro_batch_loss;
  int64_t tokens_per_micro_batch = 0;
  int64_t sequences_per_micro_batch = 0;  // --batch, for the start-up line (0: not shown)
  // Metrics on held-out data (run under no-grad), e.g. {"val_loss": 1.2}. Optional.
  std::function<std::map<std::string, double>(const nn::MambaLM&)> evaluate;
  // The task's resumable state as integers, and its restoration. Optional.
  std::function<std::map<std::string, uint64_t>()> save_state;
  std::function<void(const std::map<std::string, uint64_t>&)> load_state;
  // Early stop, asked after every periodic evaluation with its metrics: true ends training
  // there (a checkpoint is saved as at the end; TrainResult::stopped_early). Optional.
  std::function<bool(const std::map<std::string, double>&)> should_stop;
};

struct TrainResult {
  int64_t first_step = 0;        // 0, or the step a resume started from
  int64_t steps_done = 0;        // the step count reached
  std::vector<double> losses;    // per step run in this call (NaN for skipped steps)
  std::map<std::string, double> last_eval;
  bool interrupted = false;      // stopped by SIGINT / SIGTERM (a checkpoint was saved)
  int signal = 0;                // which one; a program should exit with 128 + signal
  std::string run_id;            // train/run_dir.h
  std::string last_checkpoint;   // the newest checkpoint of this run (resumed or written), or ""
  bool stopped_early = false;    // stopped by TrainTask::should_stop (a checkpoint was saved)
  double seconds = 0;
};

TrainResult train(nn::MambaLM& model, const TrainConfig& cfg, TrainTask& task);

// The checks train() starts with, alone and without side effects, for programs to run before
// they read any data: the checkpoint to resume exists, and cfg.run_dir does not hold another
// run (unless cfg.overwrite). Throws mg::Error saying what to do (train/run_dir.h).
void check_run_dir(const TrainConfig& cfg);

// Checkpoint helpers (also used by the examples): the newest complete checkpoint of a run
// directory, or "" when there is none.
std::string latest_checkpoint(const std::string& run_dir);

}  // namespace mg::train
