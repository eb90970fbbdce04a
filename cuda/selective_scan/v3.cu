// cuda/selective_scan/v3.cu — the entry points of the CUDA scan v3 (forward: walk_local ->
// combine -> walk; backward: [re-derivation] -> bwd_local -> combine -> bwd_tile -> sums), the
// argument checks and the occupancy report. The kernels are in v3_walks.cu and v3_tile.cu; the
// design in cuda/selective_scan/v3.cuh; the math in ops/selective_scan.h.
#include "cuda/selective_scan/v3.h"

#include <cuda_runtime.h>

#include "core/error.h"
#include "core/settings.h"
#include "core/tensor.h"
#include "cuda/check.cuh"
#include "cuda/runtime.h"
#include "cuda/selective_scan/v3.cuh"

namespace mg::cuda {
namespace v3 {

Tensor scratch(int64_t n) {
  int dev = 0;
  MG_CUDA_CHECK(cudaGetDevice(&dev));
  return Tensor::empty({std::max<int64_t>(n, 1)}, DType::f32, Device::cuda(dev));
}

void check_args(const ScanArgs<float>& a, const char* pass) {
  MG_CHECK(a.B >= 0 && a.L >= 0 && a.ED >= 0, "selective_scan (CUDA v3 ", pass,
           "): sizes must be >= 0, got B ", a.B, " L ", a.L, " ED ", a.ED);
  MG_CHECK(a.N >= 1, "selective_scan (CUDA v3 ", pass, "): N (d_state) must be >= 1, got ", a.N);
  MG_CHECK(a.T >= 1, "selective_scan (CUDA v3 ", pass, "): chunk T must be >= 1, got ", a.T);
  if (a.B * a.L * a.ED > 0)
    MG_CHECK(a.u && a.delta && a.A && a.Bm && a.C, "selective_scan (CUDA v3 ", pass,
             "): u, delta, A, B and C are required");
}


}  // namespace v3

using namespace v3;

// Forward: walk<kLocal> -> combine -> walk<kForward> (v3.cuh).
void selective_scan_forward_v3(const ScanArgs<float>& a) {
  check_args(a, "forward");
  MG_CHECK(a.y || a.B * a.L * a.ED == 0, "selective_scan (CUDA v3 forward): y is required");
  if (a.B == 0 || a.ED == 0) return;  // every output is empty
  if (a.L == 0) {                      // the identity on the state, as the CPU loop
    copy_or_zero(a.h_last, a.h0, a.B * a.ED * a.N);
    return;
  }
  const Plan p = v3_plan(a.B, a.L, a.ED, a.N, a.T);
  Tensor hloc = scratch(a.B * p.nseg * a.ED * a.N), sdt = scratch(a.B * p.nseg * a.ED);
  Tensor dt = scratch(a.B * a.L * a.ED);
  WalkArgs loc;
  loc.a = a;
  loc.S = p.S;
  loc.nseg = p.nseg;
  loc.hloc = hloc.data<float>();
  loc.sdt = sdt.data<float>();
  loc.dt = dt.data<float>();
  launch_walk(WalkMode::kLocal, loc);
  launch_combine(false, hloc.data<float>(), sdt.data<float>(), a.A, a.h0, nullptr, a.B, p.nseg,
                 a.ED, a.N);  // hloc now holds the state entering each segment
  WalkArgs fwd;
  fwd.a = a;
  fwd.hin = hloc.data<float>();
  fwd.dt = dt.data<float>();
  fwd.S = p.S;
  fwd.nseg = p.nseg;
  fwd.y = a.y;
  fwd.h_last = a.h_last;
  fwd.states = a.chunk_states;
  fwd.T_out = a.T;
  fwd.nc_out = p.nc;
  launch_walk(WalkMode::kForward, fwd);
}

// Backward: [walk<kRederive>] -> bwd_local -> combine<reverse> -> bwd_tile -> sums (v3.cuh).
void selective_scan_backward_v3(const ScanArgs<float>& a, const ScanGrads<float>& g) {
  check_args(a, "backward");
  const int64_t B = a.B, L = a.L, ED = a.ED, N = a.N;
  if (B * L * ED > 0) {
    MG_CHECK(a.chunk_states, "selective_scan (CUDA v3 backward): chunk_states (the forward's saved "
             "states) are required");
    MG_CHECK(g.dy && g.du && g.ddelta && g.dB && g.dC && g.dA, "selective_scan (CUDA v3 backward): "
             "dy, du, ddelta, dA, dB and dC are required");
    MG_CHECK(!a.z || g.dz, "selective_scan (CUDA v3 backward): dz is required when z is given");
  }
  if (B == 0 || L == 0) {  // sums over an empty range; the state passes through
    copy_or_zero(g.dA, nullptr, ED * N);
    copy_or_zero(g.dD, nullptr, ED);
    copy_or_zero(g.ddelta_bias, nullptr, ED);
    copy_or_zero(g.dh0, g.dh_last, B * ED * N);
    return;
  }
  if (ED == 0) {  // no channel contributes to dB, dC
    copy_or_zero(g.dB, nullptr, B * L * N);
    copy_or_zero(g.dC, nullptr, B * L * N);
    return;
  }
  const Plan p = v3_plan(B, L, ED, N, a.T);

  // The states at the tile starts: the saved ones, or re-derived every Kt = 256 steps.
  const float* st = a.chunk_states;
  int64_t T_s = a.T, nc_s = p.nc;
  Tensor rederived;
  if (p.rederive) {
    rederived = scratch(B * p.ntiles * ED * N);
    WalkArgs r;
    r.a = a;
    r.hin = a.chunk_states;
    r.S = a.T;
    r.nseg = p.nc;
    r.states = rederived.data<float>();
    r.T_out = p.Kt;
    r.nc_out = p.ntiles;
    launch_walk(WalkMode::kRederive, r);
    st = rederived.data<float>();
    T_s = p.Kt;
    nc_s = p.ntiles;
  }

  // The adjoint at every sub-segment's end (and dh0).
  Tensor mloc = scratch(B * p.nseg_a * ED * N), sdt = scratch(B * p.nseg_a * ED);
  launch_bwd_local(LocalArgs{a, g.dy, p.Kt, p.m, p.sa, p.nseg_a, mloc.data<float>(), sdt.data<float>()});
  launch_combine(true, mloc.data<float>(), sdt.data<float>(), a.A, g.dh_last, g.dh0, B, p.nseg_a, ED, N);

  // The tiles.
  Tensor parts = scratch(B * p.ntiles * ED * (N + 2));
  TileArgs t;
  t.a = a;
  t.g = g;
  t.pl = p;
  t.st = st;
  t.T_s = T_s;
  t.nc_s = nc_s;
  t.mend = mloc.data<float>();
  t.part_A = parts.data<float>();
  t.part_D = t.part_A + B * p.ntiles * ED * N;
  t.part_bias = t.part_D + B * p.ntiles * ED;
  t.vec4 = ED % 4 == 0 && aligned16(a.u) && aligned16(a.delta) && aligned16(a.z) && aligned16(g.dy) &&
           aligned16(g.du) && aligned16(g.ddelta) && aligned16(g.dz);
  const int64_t BLN = B * L * N;
  Tensor partials;
  t.atomic = false;
  t.out_stride = 0;
  t.outB = g.dB;
  t.outC = g.dC;
  if (p.G > 1 && !settings().deterministic) {  // float atomics across groups
    copy_or_zero(g.dB, nullptr, BLN);
    copy_or_zero(g.dC, nullptr, BLN);
    t.atomic = true;
  } else if (p.G > 1) {  // per-group partials, summed in group order below
    partials = scratch(2 * p.G * BLN);
    t.outB = partials.data<float>();
    t.outC = t.outB + p.G * BLN;
    t.out_stride = BLN;
  }
  launch_bwd_tile(t);
  if (partials.defined()) launch_sum_groups(t.outB, t.outC, g.dB, g.dC, p.G, BLN);
  // dD is a sum over D's uses: zero without D (as the CPU loop); the partials exist only with D.
  if (!a.D) copy_or_zero(g.dD, nullptr, ED);
  launch_param_sums(t, g.dA, a.D ? g.dD : nullptr, g.ddelta_bias);
}

std::vector<KernelOccupancy> scan_v3_occupancy() {
  backend_init();
  std::vector<KernelOccupancy> out;
  append_walk_occupancy(out);
  append_tile_occupancy(out);
  return out;
}

}  // namespace mg::cuda
