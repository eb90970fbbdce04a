// The CUDA scan v3's plan (cuda/selective_scan/v3_plan.h): the decomposition every v3 kernel
// and the float64 model tests/reference/scan_v3_model.py share. Plain C++, so it runs without
// a GPU (and in builds without CUDA). Checked: (1) at the benchmark and test shapes, the plan
// equals the model's plan() (the values below are its output: the model's checks against the
// sequential scan were made under these formulas); (2) on a sweep of shapes, the invariants
// the kernels rely on (segments and tiles cover L with none empty, every backward tile starts
// on a saved state, channel groups cover the sub-batches with none empty, bounded scratch).
#include <doctest/doctest.h>

#include <cstdint>
#include <vector>

#include "cuda/selective_scan/v3_plan.h"

using mg::cuda::v3::Plan;
using mg::cuda::v3::v3_plan;

namespace {

struct Shape {
  int64_t B, L, ED, N, T;
};
struct Want {
  int64_t ngroups, S, nseg, nc, Kt, ntiles;
  bool rederive;
  int64_t m, sa, nseg_a, nsb, spg, G;
};

}  // namespace

TEST_CASE("cuda scan v3 plan == the float64 model's plan at the benchmark and test shapes") {
  // /usr/bin/python3 -c "import scan_v3_model as m; print(m.plan(B, L, ED, N, T))" (tests/reference)
  const std::vector<std::pair<Shape, Want>> cases = {
      {{1, 4096, 1024, 16, 64}, {1, 64, 64, 64, 256, 16, false, 4, 64, 64, 128, 8, 16}},
      {{1, 32768, 1024, 16, 64}, {1, 256, 128, 512, 256, 128, false, 1, 256, 128, 128, 64, 2}},
      {{8, 2048, 1536, 16, 64}, {1, 187, 11, 32, 256, 8, false, 2, 128, 16, 192, 48, 4}},
      {{1, 131072, 1024, 16, 64}, {1, 1024, 128, 2048, 256, 512, false, 1, 256, 512, 128, 128, 1}},
      {{2, 1000, 19, 16, 100}, {1, 64, 16, 10, 200, 5, false, 4, 50, 20, 3, 3, 1}},
      {{2, 1000, 19, 16, 300}, {1, 64, 16, 4, 256, 4, true, 4, 64, 16, 3, 3, 1}},
      {{1, 600, 9, 100, 1000}, {7, 400, 2, 1, 256, 3, true, 1, 256, 3, 2, 2, 1}},
      {{2, 513, 1536, 16, 64}, {1, 64, 9, 9, 256, 3, false, 4, 64, 12, 192, 5, 39}},
      {{3, 1000, 200, 16, 64}, {1, 64, 16, 16, 256, 4, false, 4, 64, 16, 25, 5, 5}},
      {{2, 4096, 64, 64, 64}, {4, 256, 16, 64, 256, 16, false, 1, 256, 16, 8, 8, 1}},
      {{1, 7, 5, 4, 4}, {1, 7, 1, 2, 256, 1, false, 1, 256, 1, 1, 1, 1}},
      {{3, 300, 64, 64, 64}, {4, 256, 2, 5, 256, 2, false, 1, 256, 2, 8, 8, 1}},
      {{1, 1, 1, 1, 1}, {1, 1, 1, 1, 256, 1, false, 1, 256, 1, 1, 1, 1}},
      {{3, 77, 13, 17, 5}, {2, 68, 2, 16, 255, 1, false, 2, 128, 2, 2, 2, 1}},
  };
  for (const auto& [s, w] : cases) {
    CAPTURE(s.B); CAPTURE(s.L); CAPTURE(s.ED); CAPTURE(s.N); CAPTURE(s.T);
    const Plan p = v3_plan(s.B, s.L, s.ED, s.N, s.T);
    CHECK(p.ngroups == w.ngroups);
    CHECK(p.S == w.S);
    CHECK(p.nseg == w.nseg);
    CHECK(p.nc == w.nc);
    CHECK(p.Kt == w.Kt);
    CHECK(p.ntiles == w.ntiles);
    CHECK(p.rederive == w.rederive);
    CHECK(p.m == w.m);
    CHECK(p.sa == w.sa);
    CHECK(p.nseg_a == w.nseg_a);
    CHECK(p.nsb == w.nsb);
    CHECK(p.spg == w.spg);
    CHECK(p.G == w.G);
  }
}

TEST_CASE("cuda scan v3 plan: the kernels' invariants hold on a sweep of shapes") {
  using mg::cuda::v3::kTile;
  using mg::cuda::v3::kW;
  int64_t checked = 0;
  for (int64_t B : {1, 2, 3, 8})
    for (int64_t L : {1, 2, 7, 63, 64, 65, 255, 256, 257, 1000, 4096, 32768, 131072})
      for (int64_t ED : {1, 5, 7, 33, 37, 64, 1024, 1536})
        for (int64_t N : {1, 4, 16, 17, 64, 100, 256})
          for (int64_t T : {1, 3, 4, 64, 100, 129, 256, 257, 300, 1000}) {
            const Plan p = v3_plan(B, L, ED, N, T);
            CAPTURE(B); CAPTURE(L); CAPTURE(ED); CAPTURE(N); CAPTURE(T);
            // Forward segments cover [0, L), none empty, at least max(64, 4N) steps (or all
            // of L): the hloc / h_in round trip stays under a quarter of a (B, L, ED) tensor.
            REQUIRE(p.S >= 1);
            REQUIRE(p.nseg * p.S >= L);
            REQUIRE((p.nseg - 1) * p.S < L);
            REQUIRE(p.S >= std::min<int64_t>(L, std::max<int64_t>(64, 4 * N)));
            REQUIRE(p.nseg * N <= L / 4 + N);
            REQUIRE(p.ngroups * 16 >= N);
            REQUIRE((p.ngroups - 1) * 16 < N);
            REQUIRE(p.nc == (L + T - 1) / T);
            // Backward tiles: each starts on a saved state (or on a re-derived one, T > 256).
            REQUIRE(p.rederive == (T > kTile));
            if (p.rederive) {
              REQUIRE(p.Kt == kTile);
            } else {
              REQUIRE(p.Kt % T == 0);
              REQUIRE(p.Kt <= kTile);
              REQUIRE(p.Kt + T > kTile);
            }
            REQUIRE(p.ntiles * p.Kt >= L);
            REQUIRE((p.ntiles - 1) * p.Kt < L);
            // bwd_local's sub-segments cover each tile.
            REQUIRE(p.m >= 1);
            REQUIRE(p.sa >= 1);
            REQUIRE(p.m * p.sa >= p.Kt);
            REQUIRE(p.nseg_a == p.ntiles * p.m);
            // Channel groups: every group has a sub-batch; the dB/dC partials of G > 1 groups
            // (2 G B L N floats) stay within one (B, L, ED) tensor.
            REQUIRE(p.nsb == (ED + kW - 1) / kW);
            REQUIRE(p.G >= 1);
            REQUIRE(p.G * p.spg >= p.nsb);
            REQUIRE((p.G - 1) * p.spg < p.nsb);
            REQUIRE((p.G == 1 || 2 * p.G * N <= ED));
            // 1-D grids.
            REQUIRE(B * p.ntiles * p.G < (int64_t(1) << 31));
            REQUIRE(B * p.nseg_a * ((ED + 127) / 128) < (int64_t(1) << 31));
            ++checked;
          }
  CHECK(checked == 4 * 13 * 8 * 7 * 10);
}
