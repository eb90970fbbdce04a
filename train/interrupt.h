// train/interrupt.h — Ctrl-C (SIGINT) and SIGTERM (what `kill`, `timeout` and job schedulers
// send) during training: the first one only sets a flag, which the loop reads after each step
// to save a checkpoint and return; a second one of either kind ends the process at once, as
// if no handler were installed (for a run that does not stop).
#pragma once

namespace mg::train {

class InterruptGuard {
 public:
  explicit InterruptGuard(bool install);  // false: nothing is installed (tests, embedders)
  ~InterruptGuard();                      // restores the previous handlers
  InterruptGuard(const InterruptGuard&) = delete;
  InterruptGuard& operator=(const InterruptGuard&) = delete;

  // The signal received since construction (SIGINT or SIGTERM), or 0.
  int signal() const;

 private:
  bool installed_;
  void (*old_int_)(int) = nullptr;
  void (*old_term_)(int) = nullptr;
};

// "SIGINT (Ctrl-C)" / "SIGTERM"; the exit status a program should return after it: 128 + sig.
const char* signal_name(int sig);

}  // namespace mg::train
