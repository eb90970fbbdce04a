// train/data_parallel.h — what train::train does with a communicator (train/distributed.h):
// the same model on every rank, a shard of every global batch, averaged gradients.
//
// The step, on every rank r of W (docs/distributed.md):
//   1. micro_batch_loss draws the rows [r B, (r+1) B) of a global micro-batch of W B rows
//      (shard_rows), K times; backward accumulates each loss / K (train/trainer.cpp).
//   2. synchronize(): one small f64 all-reduce carries the loss sums, the interrupt flags and
//      which gradients exist; then the gradients are averaged (ReduceOp::mean) in buckets of
//      ~4 MB, parameters in list order (grads of a bucket's size or more go alone, in place).
//   3. clipping and AdamW run on identical gradients, so every rank takes the same step.
// Why a plain mean is the global mean: every rank's loss is the mean over its own n tokens
// (the same n on every rank: DataParallel checks tokens_per_micro_batch at start), so
//   (1/W) sum_r (1/n) sum_{i in rank r} l_i = (1/(W n)) sum_{all i} l_i,
// the mean over the global batch; the same holds for the gradients (linear in the losses).
// With unequal counts the mean would weight tokens unequally: TrainTask documents the rule.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "nn/module.h"
#include "train/distributed.h"
#include "train/optimizer.h"

namespace mg::train {

// Rows [rank * B, (rank + 1) * B) of `global` (dim 0 of size B * world): this rank's shard of a
// global batch. world == 1 returns `global` itself.
Tensor shard_rows(const Tensor& global, int rank, int world);

class DataParallel {
 public:
  static constexpr int64_t kBucketBytes = 4 << 20;

  DataParallel(dist::Communicator& comm, std::vector<nn::NamedParam> params,
               int64_t bucket_bytes = kBucketBytes);

  // False for the plain single process: the trainer then skips every call below.
  bool active() const { return comm_.distributed(); }
  bool lead() const { return comm_.rank() == 0; }  // prints, logs, writes checkpoints
  int world_size() const { return comm_.size(); }
  dist::Communicator& comm() const { return comm_; }

  // Start of training: the same parameter list (names, shapes, dtypes) and tokens per
  // micro-batch on every rank, or an mg::Error (on every rank) naming the first difference;
  // then rank 0's parameter values everywhere, checked bitwise. Returns the start-up lines
  // (backend, every rank's host and device, batch x grad-accum x world = global batch).
  std::string start(int64_t tokens_per_micro_batch, int64_t sequences_per_micro_batch,
                    int64_t grad_accum);

  struct StepSync {
    double loss_sum = 0;       // the mean over ranks of their loss sums over the micro-batches
    bool interrupted = false;  // some rank was interrupted: every rank stops after this step
  };
  // After the micro-batches' backward: see the header comment. `step` names the collective.
  StepSync synchronize(double local_loss_sum, bool local_interrupted, int64_t step);

  // Every rank's parameters equal rank 0's bitwise, or an mg::Error on every rank naming the
  // ranks that differ. A 64-bit hash of all parameter bytes is compared.
  void check_identical(const std::string& when);
  uint64_t parameter_fingerprint() const;

  // Runs `fn` on rank 0 only; an mg::Error there is thrown on every rank (with "rank 0: ").
  void on_lead(const std::function<void()>& fn, const std::string& what);
  // Rank 0's `flag` on every rank.
  bool from_lead(bool flag, const std::string& what);

  // ---- checkpoints -------------------------------------------------------------------------
  // What a checkpoint records besides the task state of rank 0 (collective; rank 0 uses it):
  //   world_size, tokens_per_step (global), and rank<r>.<key> for every rank's task state.
  std::map<std::string, uint64_t> checkpoint_state(const std::map<std::string, uint64_t>& mine,
                                                   int64_t tokens_per_step);
  // Resume (collective). On rank 0: the loaded weights and optimizer state are broadcast;
  // `task_state` and `dist_state` are what the checkpoint holds. Returns this rank's task
  // state and, on rank 0, a note on how a different world size was handled (else "").
  //   same world size                 every rank gets its own recorded state
  //   another world size (or none)    every rank gets rank 0's state, if every recorded rank's
  //                                   state is the same (our tasks walk one global stream, so
  //                                   it is); the global batch changes. Else an error.
  struct Resumed {
    std::map<std::string, uint64_t> task_state;
    std::string note;
  };
  Resumed resume(Optimizer& opt, int64_t* step, const std::map<std::string, uint64_t>& task_state,
                 const std::map<std::string, uint64_t>& dist_state, int64_t tokens_per_step);

 private:
  void broadcast_tensor(const Tensor& t, const std::string& what);

  dist::Communicator& comm_;
  std::vector<nn::NamedParam> params_;
  int64_t bucket_bytes_;
  std::vector<std::vector<char>> host_buckets_;  // reused across steps
  std::vector<Tensor> device_buckets_;
};

}  // namespace mg::train
