#include "core/rng.h"

#include <cmath>

namespace mg {

std::array<uint32_t, 4> philox4x32(uint64_t key, uint64_t counter) {
  // Constants from the Philox paper: multipliers M0, M1 and Weyl key increments W0, W1.
  const uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  uint32_t c0 = (uint32_t)counter, c1 = (uint32_t)(counter >> 32), c2 = 0, c3 = 0;
  uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
  for (int round = 0; round < 10; ++round) {
    uint64_t p0 = (uint64_t)M0 * c0, p1 = (uint64_t)M1 * c2;
    uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n1 = (uint32_t)p1;
    uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1, n3 = (uint32_t)p0;
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += W0; k1 += W1;
  }
  return {c0, c1, c2, c3};
}

double Generator::uniform_at(uint64_t counter) const {
  auto r = philox4x32(seed_, counter);
  uint64_t bits = ((uint64_t)r[0] << 32 | r[1]) >> 11;  // 53 bits
  return (double)bits * 0x1.0p-53;
}

float Generator::uniform_f32_at(uint64_t counter) const {
  auto r = philox4x32(seed_, counter);
  return (float)(r[0] >> 8) * 0x1.0p-24f;  // 24 bits: every value exactly representable
}

double Generator::normal_at(uint64_t counter) const {
  auto r = philox4x32(seed_, counter);
  // u1 in (0, 1] so log(u1) is finite; u2 in [0, 1).
  double u1 = ((double)(((uint64_t)r[0] << 32 | r[1]) >> 11) + 1.0) * 0x1.0p-53;
  double u2 = (double)(((uint64_t)r[2] << 32 | r[3]) >> 11) * 0x1.0p-53;
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

uint64_t Generator::next_u64() {
  auto r = philox4x32(seed_, reserve(1));
  return (uint64_t)r[0] << 32 | r[1];
}

uint64_t Generator::next_below(uint64_t n) {
  // 128-bit multiply of a 64-bit random value: floor(x * n / 2^64), unbiased enough here.
  return (uint64_t)(((unsigned __int128)next_u64() * n) >> 64);
}

Generator& default_generator() {
  static Generator g(0);
  return g;
}

void manual_seed(uint64_t seed) { default_generator().set_state(seed, 0); }

}  // namespace mg
