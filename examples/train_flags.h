// examples/train_flags.h — checks of the training flags that involve more than one flag, run
// right after parsing (before any data is read), so that each error names the flag to change.
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>

#include "examples/cli.h"
#include "train/schedule.h"

namespace mg::examples {

inline std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

// --lr, --min-lr, --warmup and --steps for the --schedule; 0 when they fit (then *out is the
// schedule), else the error is printed and 2 returned.
inline int check_schedule_flags(Cli& cli, const std::string& schedule, double lr,
                                 double min_lr, int64_t warmup, int64_t steps,
                                 train::LrSchedule* out) {
  if (min_lr > lr)
    return cli.error("--min-lr " + num(min_lr), "must be at most the peak rate --lr " + num(lr));
  if (schedule != "constant" && warmup >= steps)
    return cli.error("--warmup " + std::to_string(warmup),
                     "must be less than --steps " + std::to_string(steps) + ": the " + schedule +
                         " schedule decays over the steps after the warm-up");
  try {
    *out = train::LrSchedule::parse(schedule, lr, min_lr, warmup, steps);
  } catch (const std::exception& e) {
    return cli.error("--schedule", e.what());
  }
  return 0;
}

}  // namespace mg::examples
