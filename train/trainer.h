// train/trainer.h — the training loop: AdamW steps with schedules, clipping, accumulation,
// evaluation, checkpoints and exact resume.
//
// What "exact resume" means here: a run of 2N steps and a run of N steps, stopped, resumed
// from its checkpoint and run N more, produce bitwise-identical losses and weights (same
// machine, same thread count). A checkpoint therefore holds everything the next step reads:
// the weights, AdamW's moments and step count, the step (the schedule is a pure function of
// it), and the task's own state (data cursor, generator offsets) as integers.
//
// Layout of a run directory:
//   log.jsonl                         the config and command line, then one line per step/eval
//   ckpt-000500/model.safetensors     the model alone (readable by nn/checkpoint load_mamba)
//   ckpt-000500/trainer.safetensors   AdamW state + step + task state (metadata)
//   latest                            the name of the newest complete checkpoint
// A checkpoint is written into ckpt-000500.tmp/ and renamed when complete, and `latest` is
// replaced atomically after that: a crash at any moment leaves the previous checkpoint intact.
// Only the newest `keep_last` checkpoints are kept.
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
  std::string command_line;
  std::map<std::string, std::string> extra_config;  // shown at the head of the log
  bool quiet = false;          // no per-step lines (tests)
  bool handle_sigint = true;   // Ctrl-C saves a checkpoint and returns
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
  bool interrupted = false;      // stopped by Ctrl-C (a checkpoint was saved)
  bool stopped_early = false;    // stopped by TrainTask::should_stop (a checkpoint was saved)
  double seconds = 0;
};

TrainResult train(nn::MambaLM& model, const TrainConfig& cfg, TrainTask& task);

// Checkpoint helpers (also used by the examples): the newest complete checkpoint of a run
// directory, or "" when there is none.
std::string latest_checkpoint(const std::string& run_dir);

}  // namespace mg::train
