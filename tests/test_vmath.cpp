// core/vmath.h: the vectorised exp, softplus and sigmoid the fused scan kernels are built on
// (ops/selective_scan/fast.cpp, fixed.cpp, step.cpp): accuracy against double, the 16-lane
// forms bitwise the scalar algorithm, the edges.
#include <doctest/doctest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "core/vmath.h"

using namespace mg;

TEST_CASE("vmath: 16-lane softplus, sigmoid and the fused pair are bitwise the scalar algorithm") {
  // Every 997th float bit pattern of [-120, 120] (both signs), plus the edges: 0, +-20 (the
  // softplus threshold), 20.5, tiny and huge magnitudes, infinities and NaN.
  std::vector<float> xs = {0.0f, -0.0f, 20.0f, -20.0f, 20.5f, 1e-30f, -1e-30f, 88.0f, -104.0f,
                           3e38f, -3e38f, INFINITY, -INFINITY, NAN};
  for (uint32_t bits = 0; bits <= std::bit_cast<uint32_t>(120.0f); bits += 997) {
    xs.push_back(std::bit_cast<float>(bits));
    xs.push_back(-std::bit_cast<float>(bits));
  }
  int64_t mismatch = 0;
  for (size_t i = 0; i < xs.size(); i += 16) {
    alignas(64) float in[16] = {};
    for (size_t j = 0; j < 16 && i + j < xs.size(); ++j) in[j] = xs[i + j];
    vmath::F32x16 v;
    std::memcpy(&v, in, sizeof(v));
    const vmath::F32x16 sp = vmath::vsoftplus(v), sg = vmath::vsigmoid(v);
    vmath::F32x16 sp2, sg2;  // the fused form shares one exp; it must not change a bit
    vmath::vsoftplus_sigmoid(v, sp2, sg2);
    mismatch += std::memcmp(&sp, &sp2, sizeof(sp)) != 0 || std::memcmp(&sg, &sg2, sizeof(sg)) != 0;
    for (int j = 0; j < 16; ++j) {
      const float a = vmath::vsoftplus<float>(in[j]), b = vmath::vsigmoid<float>(in[j]);
      const float va = sp[j], vb = sg[j];
      mismatch += !(std::isnan(a) && std::isnan(va)) && std::memcmp(&a, &va, 4) != 0;
      mismatch += !(std::isnan(b) && std::isnan(vb)) && std::memcmp(&b, &vb, 4) != 0;
    }
  }
  CHECK(xs.size() > 1000);
  CHECK(mismatch == 0);
}

TEST_CASE("vmath: vectorised exp against exp in double, scalar and 16-lane forms agree") {
  // f32: every 61st float (by bit pattern) of [-87.3, 88.7], the normal range of the result
  // (3.5e7 points, dense near 0 as the floats are); errors in ulps of the correctly rounded
  // result, and relative.
  double worst32 = 0, worst_ulp = 0, worst64 = 0;
  int64_t count = 0, lane_mismatch = 0;
  alignas(64) float xs[16];
  int filled = 0;
  auto check_lanes = [&]() {
    vmath::F32x16 v;
    std::memcpy(&v, xs, sizeof(v));
    const vmath::F32x16 e = vmath::vexp(v);
    for (int j = 0; j < filled; ++j) {
      const float s = vmath::vexp<float>(xs[j]);
      const bool both_nan = std::isnan(s) && std::isnan(e[j]);
      if (!both_nan && std::memcmp(&s, &e[j], sizeof(float)) != 0) ++lane_mismatch;
    }
    filled = 0;
  };
  int64_t i = 0;
  for (uint32_t bits = 0; bits <= std::bit_cast<uint32_t>(88.7f) * 2; bits += 61, ++i) {
    const uint32_t mag = bits >> 1, sign = (bits & 1) << 31;  // alternate the signs
    const float x = std::bit_cast<float>(mag | sign);
    if (x < -87.3f) continue;
    const float e = vmath::vexp<float>(x);
    const double ref = std::exp(double(x));
    const float rf = float(ref);
    const double ulp = double(std::nextafter(rf, 1e30f)) - double(rf);
    worst32 = std::max(worst32, std::abs(e - ref) / ref);
    worst_ulp = std::max(worst_ulp, std::abs(e - ref) / ulp);
    ++count;
    if ((i & 63) == 0) {  // a sample for the 16-lane form
      xs[filled++] = x;
      if (filled == 16) check_lanes();
    }
  }
  for (double x = -708.3; x <= 709.7; x += 1.3e-3) {
    const double e64 = vmath::vexp<double>(x), ref64 = std::exp(x);
    worst64 = std::max(worst64, std::abs(e64 - ref64) / ref64);
  }
  MESSAGE("vexp over " << count << " floats: f32 max relative error " << worst32 << " ("
                       << worst_ulp << " ulp), f64 " << worst64);
  CHECK(worst32 < 1.0e-7);
  CHECK(worst_ulp < 1.1);
  CHECK(worst64 < 4.5e-16);
  // The edges, in both forms: underflow exactly 0, overflow +inf, NaN stays NaN, gradual
  // underflow kept.
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float edges[16] = {-104.0f, -1e30f, 89.0f, 1e30f, nan, -100.0f, -87.5f, 0.0f,
                           -0.0f,   1e-30f, 88.7f, -90.0f, -0.3465f, 0.3466f, 1.0f, -1.0f};
  std::memcpy(xs, edges, sizeof(edges));
  filled = 16;
  check_lanes();
  CHECK(lane_mismatch == 0);
  CHECK(vmath::vexp<float>(-104.0f) == 0.0f);
  CHECK(vmath::vexp<float>(-1e30f) == 0.0f);
  CHECK(vmath::vexp<double>(-1e300) == 0.0);
  CHECK(std::isinf(vmath::vexp<float>(89.0f)));
  CHECK(std::isnan(vmath::vexp<float>(nan)));
  CHECK(vmath::vexp<float>(0.0f) == 1.0f);
  CHECK(vmath::vexp<float>(-100.0f) == doctest::Approx(std::exp(-100.0f)).epsilon(1e-2));
  // softplus, sigmoid and silu, both sides of the threshold.
  for (double x : {-100.0, -20.0, -3.0, 0.0, 1e-8, 2.5, 20.0, 21.0, 100.0}) {
    double sp = x > 20 ? x : std::log1p(std::exp(x)), sg = 1 / (1 + std::exp(-x));
    CHECK(vmath::vsoftplus<double>(x) == doctest::Approx(sp).epsilon(1e-15));
    CHECK(vmath::vsoftplus<float>(float(x)) == doctest::Approx(sp).epsilon(3e-7));
    CHECK(vmath::vsigmoid<double>(x) == doctest::Approx(sg).epsilon(1e-15));
    CHECK(vmath::vsigmoid<float>(float(x)) == doctest::Approx(sg).epsilon(3e-7));
    CHECK(vmath::vsilu<double>(x) == doctest::Approx(x * sg).epsilon(1e-15));
    CHECK(vmath::vsilu<float>(float(x)) == doctest::Approx(float(x) * sg).epsilon(3e-7));
  }
}
