// train/logger.h — what a training run prints and records.
//
// One line per step on stdout (step, loss, lr, pre-clip grad norm, tokens/s, ms/step, peak
// memory) — rewritten in place as a progress bar with an ETA when stdout is a terminal — and
// the same as JSON lines in <run_dir>/log.jsonl, whose first line holds the command line and
// the full configuration, so a run can be plotted and reproduced from its directory alone.
#pragma once
#include <cstdint>
#include <cstdio>
#include <map>
#include <string>

namespace mg::train {

struct StepRecord {
  int64_t step = 0, total_steps = 0;
  int64_t tokens = 0;  // tokens trained on after this step (skipped steps included)
  double loss = 0, lr = 0, grad_norm = 0;
  double tokens_per_s = 0, ms = 0;
  int64_t peak_bytes = 0;
  bool skipped = false;  // non-finite loss or gradient
};

// Every write to the file is checked (the line, then a flush): a failure throws mg::Error
// naming the file and the reason (e.g. "No space left on device"), like a failed checkpoint.
class Logger {
 public:
  // `jsonl_path` empty: no file. `log_every`: print every k-th step (the file gets all).
  Logger(const std::string& jsonl_path, int64_t log_every);
  ~Logger();
  void start(const std::string& command_line, const std::map<std::string, std::string>& config);
  void step(const StepRecord& r, double elapsed_s);
  // `tokens` >= 0 is recorded as "tokens" (the loss curve's x axis).
  void event(const std::string& kind, int64_t step, const std::map<std::string, double>& values,
             const std::string& text = "", int64_t tokens = -1);
  void message(const std::string& text);  // a plain line (ends any progress bar first)

 private:
  void end_bar();
  void write_line(const std::string& line);  // one line + '\n' to the file, checked
  std::string path_;
  std::FILE* file_ = nullptr;
  int64_t log_every_;
  bool tty_;
  bool bar_open_ = false;
};

std::string json_escape(const std::string& s);
std::string format_bytes(int64_t bytes);  // "123.4 MB"

}  // namespace mg::train
