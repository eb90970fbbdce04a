// train/schedule.h — learning-rate schedules: a pure function of the step number, so a resumed
// run needs nothing but the step to continue the schedule exactly.
//
// Steps are 0-based: lr_at(s) is the rate used by the update that completes step s + 1.
// With P = peak_lr, m = min_lr, W = warmup_steps, S = total_steps:
//
//   warm-up (all kinds), s < W:   lr = P * (s + 1) / W        (linear; the first step is not 0)
//   constant:                     lr = P                                        after warm-up
//   cosine:                       lr = m + (P - m) * (1 + cos(pi * q)) / 2,
//                                 q = min(1, (s - W) / (S - W))                 (paper, App. E.2)
//                                 so lr_at(W) = P and lr_at(S) = m (m for every s >= S)
//   wsd (warm-up, stable, decay): lr = P until the decay starts at D0 = S - round(f * S),
//                                 f = decay_fraction, then linear from P down to m:
//                                 lr = P + (m - P) * min(1, (s - D0) / (S - D0))
//
// The paper's LM recipe: cosine, peak 5x the GPT-3 LR, min 1e-5; the synthetic tasks use a
// constant LR (1e-3 for induction heads, 1e-4 for selective copying).
#pragma once
#include <cstdint>
#include <string>

namespace mg::train {

struct LrSchedule {
  enum class Kind { constant, cosine, wsd };

  Kind kind = Kind::constant;
  double peak_lr = 1e-3;
  double min_lr = 0.0;
  int64_t warmup_steps = 0;
  int64_t total_steps = 0;      // needed by cosine and wsd
  double decay_fraction = 0.2;  // wsd only: the last fraction of the steps decays

  double lr_at(int64_t step) const;  // throws mg::Error for step < 0
  std::string describe() const;      // "cosine(peak=0.003, min=1e-05, warmup=100, total=5000)"
  void validate() const;             // throws mg::Error naming the bad field

  // kind_name: "constant", "cosine" or "wsd" (an unknown name lists the known ones).
  static LrSchedule parse(const std::string& kind_name, double peak_lr, double min_lr = 0.0,
                          int64_t warmup_steps = 0, int64_t total_steps = 0,
                          double decay_fraction = 0.2);
  static const char* kind_name(Kind kind);
};

}  // namespace mg::train
