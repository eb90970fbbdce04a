#include "train/schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <sstream>

#include "core/error.h"

namespace mg::train {

const char* LrSchedule::kind_name(Kind kind) {
  switch (kind) {
    case Kind::constant: return "constant";
    case Kind::cosine: return "cosine";
    case Kind::wsd: return "wsd";
  }
  return "?";
}

void LrSchedule::validate() const {
  MG_CHECK(std::isfinite(peak_lr) && peak_lr > 0, "LrSchedule: peak_lr must be > 0, got ", peak_lr);
  MG_CHECK(min_lr >= 0 && min_lr <= peak_lr, "LrSchedule: min_lr must be in [0, peak_lr = ",
           peak_lr, "], got ", min_lr);
  MG_CHECK(warmup_steps >= 0, "LrSchedule: warmup_steps must be >= 0, got ", warmup_steps);
  if (kind == Kind::constant) return;
  MG_CHECK(total_steps > warmup_steps, "LrSchedule (", kind_name(kind),
           "): total_steps must exceed warmup_steps, got total_steps = ", total_steps,
           ", warmup_steps = ", warmup_steps);
  if (kind == Kind::wsd) {
    MG_CHECK(decay_fraction > 0 && decay_fraction <= 1,
             "LrSchedule (wsd): decay_fraction must be in (0, 1], got ", decay_fraction);
  }
}

double LrSchedule::lr_at(int64_t step) const {
  MG_CHECK(step >= 0, "LrSchedule::lr_at: step must be >= 0, got ", step);
  if (step < warmup_steps) return peak_lr * double(step + 1) / double(warmup_steps);
  switch (kind) {
    case Kind::constant: return peak_lr;
    case Kind::cosine: {
      double q = std::min(1.0, double(step - warmup_steps) / double(total_steps - warmup_steps));
      return min_lr + (peak_lr - min_lr) * 0.5 * (1.0 + std::cos(std::numbers::pi * q));
    }
    case Kind::wsd: {
      int64_t decay_steps = std::max<int64_t>(1, std::llround(decay_fraction * double(total_steps)));
      int64_t decay_start = std::max(warmup_steps, total_steps - decay_steps);
      if (step < decay_start) return peak_lr;
      double q = std::min(1.0, double(step - decay_start) / double(total_steps - decay_start));
      return peak_lr + (min_lr - peak_lr) * q;
    }
  }
  return peak_lr;
}

std::string LrSchedule::describe() const {
  std::ostringstream os;
  os << kind_name(kind) << "(peak=" << peak_lr;
  if (kind != Kind::constant) os << ", min=" << min_lr;
  os << ", warmup=" << warmup_steps;
  if (kind != Kind::constant) os << ", total=" << total_steps;
  if (kind == Kind::wsd) os << ", decay_fraction=" << decay_fraction;
  os << ")";
  return os.str();
}

LrSchedule LrSchedule::parse(const std::string& name, double peak_lr, double min_lr,
                             int64_t warmup_steps, int64_t total_steps, double decay_fraction) {
  LrSchedule s;
  if (name == "constant") s.kind = Kind::constant;
  else if (name == "cosine") s.kind = Kind::cosine;
  else if (name == "wsd") s.kind = Kind::wsd;
  else throw Error("LrSchedule: unknown schedule '" + name + "' (known: constant, cosine, wsd)");
  s.peak_lr = peak_lr;
  s.min_lr = min_lr;
  s.warmup_steps = warmup_steps;
  s.total_steps = total_steps;
  s.decay_fraction = decay_fraction;
  s.validate();
  return s;
}

}  // namespace mg::train
