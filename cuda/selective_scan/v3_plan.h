// cuda/selective_scan/v3_plan.h — the CUDA scan v3's constants and plan: every
// decomposition choice (segment lengths, tiles, sub-segments, channel groups), computed from
// the shapes alone, so results are deterministic for given shapes. Plain C++ (no CUDA types):
// included by cuda/selective_scan/v3.cuh and by tests/test_cuda_scan_v3_plan.cpp, which
// checks it against tests/reference/scan_v3_model.py's plan() (the same formulas) and its
// invariants without a GPU. The design is described in cuda/selective_scan/v3.cuh.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>

#ifdef __CUDACC__
#define MG_V3_HD __host__ __device__
#else
#define MG_V3_HD
#endif

namespace mg::cuda::v3 {

// ---- constants ----------------------------------------------------------------------------
constexpr int kNG = 16;              // states per group (registers of a walk thread)
constexpr int kWalkThreads = 128;    // channels per walk block
constexpr int kWin = 32;             // steps of B/C staged per window in the walks
constexpr int kW = 8;                // warps per bwd_tile block = channels per sub-batch
constexpr int kK = 8;                // consecutive steps per lane in bwd_tile
constexpr int kTile = 32 * kK;       // 256 steps
constexpr int kTileThreads = 32 * kW;  // 256 threads
constexpr int kRow = 292;            // a tile row in shared memory (see pos())
constexpr int64_t kTargetWalkThreads = 131072;  // ~ 132 SMs x 1024 threads
constexpr int64_t kTargetTileBlocks = 264;      // 2 resident bwd_tile blocks x 132 SMs
constexpr float kLog2e = 1.4426950408889634f;
static_assert(kTileThreads == kTile, "the dB/dC sum pass gives each thread one step");

constexpr int kAccRow = kTile + 1;    // a dB/dC accumulator row (odd: the flush is conflict-free)
// Shared memory of bwd_tile, in floats: B, C (kNG rows of kRow), the dB/dC accumulators (kNG
// rows of kAccRow each), and one multi-use area: 4 channel tiles (u, delta, dy, z) or the
// double-buffered per-warp dB/dC contributions (2 x 2 x kW rows).
constexpr int kTileSmemFloats = 2 * kNG * kRow + 2 * kNG * kAccRow + 4 * kW * kRow;
constexpr size_t kTileSmemBytes = kTileSmemFloats * sizeof(float);  // 107,648
static_assert((2 * kNG * kRow + 2 * kNG * kAccRow) % 4 == 0, "the tiles must be 16-byte aligned");

// ---- the plan: every decomposition choice, from the shapes alone (deterministic) ---------
struct Plan {
  int64_t ngroups = 0;  // ceil(N / 16)
  int64_t S = 0, nseg = 0;       // forward segments
  int64_t nc = 0;                // saved chunks, ceil(L / T)
  int64_t Kt = 0, ntiles = 0;    // backward tiles
  bool rederive = false;         // T > 256: states at multiples of Kt re-derived first
  int64_t m = 0, sa = 0, nseg_a = 0;  // bwd_local: m sub-segments of sa steps per tile
  int64_t nsb = 0, spg = 0, G = 0;    // sub-batches of kW channels, per group, groups
};

MG_V3_HD inline int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// A walk segment: enough segments for kTargetWalkThreads threads, at least max(64, 4N) steps.
inline int64_t v3_segment(int64_t L, int64_t lanes, int64_t N) {
  const int64_t smin = std::max<int64_t>(64, 4 * N);
  const int64_t want = std::max<int64_t>(1, cdiv(kTargetWalkThreads, std::max<int64_t>(lanes, 1)));
  return std::min(std::max(cdiv(L, want), smin), std::max<int64_t>(L, 1));
}

inline Plan v3_plan(int64_t B, int64_t L, int64_t ED, int64_t N, int64_t T) {
  Plan p;
  p.ngroups = cdiv(N, kNG);
  const int64_t lanes = B * ED * p.ngroups;
  p.S = v3_segment(L, lanes, N);
  p.nseg = cdiv(L, p.S);
  p.nc = cdiv(L, T);
  p.rederive = T > kTile;
  p.Kt = p.rederive ? kTile : T * (kTile / T);
  p.ntiles = cdiv(L, p.Kt);
  const int64_t sa_want = v3_segment(L, lanes, N);
  // (steps past L make empty sub-segments: count only min(Kt, L) of a tile)
  p.m = std::min(std::max<int64_t>(cdiv(std::min(p.Kt, L), sa_want), 1), p.Kt);
  p.sa = cdiv(p.Kt, p.m);
  p.nseg_a = p.ntiles * p.m;
  p.nsb = cdiv(ED, kW);
  const int64_t g_want = std::max<int64_t>(1, kTargetTileBlocks / std::max<int64_t>(B * p.ntiles, 1));
  const int64_t g_cap = std::max<int64_t>(1, ED / (2 * N));  // partials <= one (B, L, ED) tensor
  const int64_t G = std::min({g_want, p.nsb, g_cap});
  p.spg = cdiv(p.nsb, G);
  p.G = cdiv(p.nsb, p.spg);  // no empty group
  return p;
}

}  // namespace mg::cuda::v3
