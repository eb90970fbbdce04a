// train/run_dir.h — which run a run directory belongs to, and what a run may do there.
//
// Every training run has a run id (16 hex digits, drawn when a fresh run starts; a resumed run
// keeps the id of the checkpoint it resumes). Each checkpoint records it in its
// trainer.safetensors metadata ("run_id"), and the log's start line shows it. From the ids:
//
//   * A fresh run (no resume) needs a run directory that holds no other run: no checkpoint, no
//     `latest`, no log.jsonl. Otherwise it stops before any work with a message naming the
//     three ways on: `--resume latest` (continue that run), another `--run-dir`, or
//     `--overwrite` (TrainConfig::overwrite).
//   * A resumed run may share the directory only with its own checkpoints (checkpoints without
//     an id, written before ids existed, count as its own when it resumes one of them).
//   * --overwrite: this run replaces the one in the directory. At the start the earlier log is
//     renamed to log.replaced.jsonl (and loss_curve.svg removed); the earlier run's checkpoints
//     stay — `--resume latest` still continues the earlier run — until this run's first
//     checkpoint is complete: then they and log.replaced.jsonl are deleted, each named on
//     stdout.
//   * Pruning (keep_last) only ever deletes checkpoints of the current run, never the one just
//     written and never the one `latest` names.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace mg::train {

struct CheckpointEntry {
  std::string name;    // "ckpt-000200"
  int64_t step = 0;
  std::string run_id;  // "" for checkpoints written before run ids existed
};

struct RunDirContents {
  std::vector<CheckpointEntry> checkpoints;  // complete ckpt-* directories, by step
  std::string latest;                        // the name `latest` holds, or ""
  bool has_log = false;                      // log.jsonl exists
  bool holds_a_run() const { return !checkpoints.empty() || !latest.empty() || has_log; }
  std::string describe() const;  // "checkpoints ckpt-001500, ckpt-001550; latest: ...; log.jsonl"
};

// What `dir` holds (a missing directory holds nothing). Reads only the checkpoints' headers.
RunDirContents scan_run_dir(const std::string& dir);

// A fresh run id: 16 hex digits from the clock, the process id and std::random_device.
std::string new_run_id();

// The run id in <ckpt_dir>/trainer.safetensors, or "" when it has none (an older checkpoint).
std::string checkpoint_run_id(const std::string& ckpt_dir);

// The checks above, run before any work: throws mg::Error when a run may not start in `dir`.
// `resuming`: this run resumes a checkpoint whose id is `resumed_id` ("" for an id-less one).
// With `overwrite`, the earlier log is moved aside (see above) and the return value names the
// earlier run's checkpoints, to be deleted after this run's first checkpoint; otherwise it is
// empty.
std::vector<std::string> claim_run_dir(const std::string& dir, bool resuming,
                                       const std::string& resumed_id, bool overwrite);

// The checkpoints to delete after `just_written` was saved by run `run_id`: that run's oldest
// beyond the newest keep_last (at least 1), never `just_written` or `latest_name`.
std::vector<std::string> checkpoints_to_prune(const RunDirContents& contents,
                                              const std::string& run_id,
                                              const std::string& just_written,
                                              const std::string& latest_name, int keep_last);

// Cuts <dir>/log.jsonl back to `step`: the first line with a "step" above it, and everything
// after it (steps a crash left after the checkpoint being resumed), is removed, as is a last
// line without its newline. Returns the number of lines removed (0 when there is no log).
int64_t cut_log_after_step(const std::string& log_path, int64_t step);

}  // namespace mg::train
