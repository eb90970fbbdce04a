// core/bf16.h: f32 -> bf16 rounds to nearest even, exactly as PyTorch does (fixtures made by
// tests/reference/make_bf16_fixtures.py: 4096 values, specials and random bit patterns), and
// bf16 -> f32 is exact.
#include <doctest/doctest.h>

#include <bit>
#include <cmath>
#include <limits>

#include "core/bf16.h"
#include "core/safetensors.h"

using namespace mg;

TEST_CASE("bf16: round to nearest even at hand-picked edges") {
  auto r = [](uint32_t f32_bits) { return bf16::from_f32(std::bit_cast<float>(f32_bits)); };
  CHECK(r(0x3F800000) == 0x3F80);  // 1.0 exact
  CHECK(r(0x3F808000) == 0x3F80);  // tie, kept bit even: down
  CHECK(r(0x3F818000) == 0x3F82);  // tie, kept bit odd: up
  CHECK(r(0x3F807FFF) == 0x3F80);  // below the tie: down
  CHECK(r(0x3F808001) == 0x3F81);  // above the tie: up
  CHECK(r(0x80000000) == 0x8000);  // -0 keeps its sign
  CHECK(r(0x7F800000) == 0x7F80);  // +inf
  CHECK(r(0x7F7FFFFF) == 0x7F80);  // above the largest bf16 by more than half a step: inf
  CHECK(r(0x7F7F7FFF) == 0x7F7F);  // just below the halfway point: the largest bf16
  CHECK(std::isnan(bf16::to_f32(r(0x7F800001))));  // a signalling NaN stays NaN (not inf)
  CHECK(std::isnan(bf16::to_f32(r(0xFFC00001))));
  CHECK(bf16::to_f32(0x3F81) == 1.0078125f);  // widening is exact
  CHECK(round_to_bf16(3.14159265f) == 3.140625f);
}

TEST_CASE("bf16: f32 -> bf16 equals PyTorch on 4096 values (specials and random bit patterns)") {
  SafetensorsFile f = load_safetensors(std::string(MG_TEST_DATA_DIR) + "/bf16_fixtures.safetensors");
  const Tensor x = f.tensors.at("x"), want = f.tensors.at("bf16_bits"), nan = f.tensors.at("bf16_is_nan");
  const int64_t n = x.numel();
  REQUIRE(n == 4096);
  std::vector<bf16> got(n);
  f32_to_bf16(x.data<float>(), got.data(), n);
  std::vector<float> back(n);
  bf16_to_f32(got.data(), back.data(), n);
  int64_t mismatches = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (nan.data<int32_t>()[i]) {
      if (!std::isnan(back[i])) ++mismatches;
      continue;
    }
    if (got[i].bits != uint16_t(want.data<int32_t>()[i])) {
      ++mismatches;
      if (mismatches < 5)
        MESSAGE("x bits ", std::bit_cast<uint32_t>(x.data<float>()[i]), ": got ", got[i].bits,
                ", torch ", want.data<int32_t>()[i] & 0xFFFF);
    }
    CHECK(back[i] == bf16::to_f32(got[i].bits));  // widening is exact
  }
  CHECK(mismatches == 0);
}
