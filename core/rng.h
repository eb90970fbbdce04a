// core/rng.h — a counter-based random number generator (Philox4x32-10).
//
// Why counter-based: element i of a random tensor is a pure function of (seed, counter + i),
// so the same seed gives the same numbers on every machine, every thread count, and (later)
// on the GPU. A Generator's whole state is two integers, which makes exact resume trivial.
//
// Reference: Salmon et al., "Parallel random numbers: as easy as 1, 2, 3" (SC'11).
#pragma once
#include <array>
#include <cstdint>

namespace mg {

// One Philox4x32-10 block: 128 random bits from a 64-bit key and a 64-bit counter.
std::array<uint32_t, 4> philox4x32(uint64_t key, uint64_t counter);

class Generator {
 public:
  explicit Generator(uint64_t seed = 0) : seed_(seed) {}

  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return offset_; }  // counters consumed so far
  void set_state(uint64_t seed, uint64_t offset) { seed_ = seed; offset_ = offset; }

  // Reserves n counters and returns the first; element i of a draw uses counter base + i.
  uint64_t reserve(uint64_t n) { uint64_t b = offset_; offset_ += n; return b; }

  // Pure functions of a counter:
  double uniform_at(uint64_t counter) const;  // [0, 1) with 53 random bits
  float uniform_f32_at(uint64_t counter) const;  // [0, 1) with 24 random bits
  double normal_at(uint64_t counter) const;   // N(0, 1), Box–Muller

  // Sequential draws (for shuffles and samplers).
  uint64_t next_u64();
  double next_uniform() { return uniform_at(reserve(1)); }
  // Uniform integer in [0, n), n > 0 (rejection-free multiply-shift; bias < 2^-32 for n < 2^32).
  uint64_t next_below(uint64_t n);

 private:
  uint64_t seed_ = 0;
  uint64_t offset_ = 0;
};

// The process-wide generator used when a factory is given none.
Generator& default_generator();
void manual_seed(uint64_t seed);

}  // namespace mg
