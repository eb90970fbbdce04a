// train/run_checkpoint.h — saving and restoring a training run (see train/trainer.h for the
// directory layout and the crash-safety argument).
#pragma once
#include <cstdint>
#include <map>
#include <string>

#include "nn/mamba.h"
#include "train/optimizer.h"

namespace mg::train {

struct RunState {
  int64_t step = 0;
  std::map<std::string, uint64_t> task_state;
  std::string run_id;  // train/run_dir.h; "" when loaded from a checkpoint written before ids
  // Data-parallel runs (train/data_parallel.h): world_size, tokens_per_step and every rank's
  // task state as rank<r>.<key>; saved as metadata "dist.<key>". Empty for one process.
  std::map<std::string, uint64_t> dist_state;
};

// Writes <run_dir>/ckpt-<step>/ atomically (recording st.run_id), points `latest` at it, and
// deletes this run's checkpoints beyond the newest keep_last (train/run_dir.h: never another
// run's, never the new one). Returns the checkpoint directory.
std::string save_run_checkpoint(const std::string& run_dir, const nn::MambaLM& model,
                                const AdamW& opt, const RunState& st, int keep_last);

// Restores the weights (into the existing tensors), the optimizer state and the run state.
RunState load_run_checkpoint(const std::string& ckpt_dir, nn::MambaLM& model, AdamW& opt);

}  // namespace mg::train
