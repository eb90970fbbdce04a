// cuda/selective_scan/v3.cu — the entry points of the CUDA scan v3 (forward: walk_local ->
// combine -> walk; backward: [re-derivation] -> bwd_local -> combine -> bwd_tile -> sums), the
// argument checks and the occupancy report. The kernels are in v3_walks.cu and v3_tile.cu; the
// design in cuda/selective_scan/v3.cuh; the math in ops/selective_scan.h.
#include "cuda/selective_scan/v3.h"

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "core/error.h"
#include "core/settings.h"
#include "core/tensor.h"
#include "cuda/check.cuh"
#include "cuda/runtime.h"
#include "cuda/selective_scan/v3.cuh"
#include "ops/convert.h"

namespace mg::cuda {
namespace v3 {

Tensor scratch(int64_t n) {
  int dev = 0;
  MG_CUDA_CHECK(cudaGetDevice(&dev));
  return Tensor::empty({std::max<int64_t>(n, 1)}, DType::f32, Device::cuda(dev));
}

template <typename Act>
void check_args(const ScanArgs<Act, float>& a, const char* pass) {
  MG_CHECK(a.B >= 0 && a.L >= 0 && a.ED >= 0, "selective_scan (CUDA v3 ", pass,
           "): sizes must be >= 0, got B ", a.B, " L ", a.L, " ED ", a.ED);
  MG_CHECK(a.N >= 1, "selective_scan (CUDA v3 ", pass, "): N (d_state) must be >= 1, got ", a.N);
  MG_CHECK(a.T >= 1, "selective_scan (CUDA v3 ", pass, "): chunk T must be >= 1, got ", a.T);
  if (a.B * a.L * a.ED > 0)
    MG_CHECK(a.u && a.delta && a.A && a.Bm && a.C, "selective_scan (CUDA v3 ", pass,
             "): u, delta, A, B and C are required");
}

namespace {

// An activation tensor's n elements to zero (bf16 zero is all bits zero, as f32's).
template <typename Act>
void zero_act(Act* p, int64_t n) {
  if (p && n > 0) MG_CUDA_CHECK(cudaMemsetAsync(p, 0, n * sizeof(Act), cuda_stream()));
}
// bwd_tile's 4-channel accesses need every (B, L, ED) pointer aligned to 4 elements (16 bytes
// in f32, 8 in bf16; null is fine).
template <typename Act>
bool aligned4(const Act* p) {
  return p == nullptr || reinterpret_cast<uintptr_t>(p) % (4 * sizeof(Act)) == 0;
}

}  // namespace
}  // namespace v3

using namespace v3;

namespace {

// Forward: walk<kLocal> -> combine -> walk<kForward> (v3.cuh). Act: the activations' type.
template <typename Act>
void forward_v3(const ScanArgs<Act, float>& a) {
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
  WalkArgs<Act> loc;
  loc.a = a;
  loc.S = p.S;
  loc.nseg = p.nseg;
  loc.hloc = hloc.data<float>();
  loc.sdt = sdt.data<float>();
  loc.dt = dt.data<float>();
  launch_walk(WalkMode::kLocal, loc);
  launch_combine(false, hloc.data<float>(), sdt.data<float>(), a.A, a.h0, nullptr, a.B, p.nseg,
                 a.ED, a.N);  // hloc now holds the state entering each segment
  WalkArgs<Act> fwd;
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
  Tensor y_acc;  // bf16 with several state groups: y's f32 partial sums (v3.cuh, WalkArgs)
  if (!std::is_same_v<Act, float> && p.ngroups > 1) {
    y_acc = scratch(a.B * a.L * a.ED);
    fwd.y_acc = y_acc.data<float>();
  }
  launch_walk(WalkMode::kForward, fwd);
}

// Backward: [walk<kRederive>] -> bwd_local -> combine<reverse> -> bwd_tile -> sums (v3.cuh).
// bf16: du, ddelta, dz, dB, dC summed in f32 and rounded once (running sums over state groups
// and dB/dC in f32 scratch); dA, dD, ddelta_bias, dh0 f32 as in the f32 scan.
template <typename Act>
void backward_v3(const ScanArgs<Act, float>& a, const ScanGrads<Act, float>& g) {
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
    zero_act(g.dB, B * L * N);
    zero_act(g.dC, B * L * N);
    return;
  }
  const Plan p = v3_plan(B, L, ED, N, a.T);

  // The states at the tile starts: the saved ones, or re-derived every Kt = 256 steps.
  const float* st = a.chunk_states;
  int64_t T_s = a.T, nc_s = p.nc;
  Tensor rederived;
  if (p.rederive) {
    rederived = scratch(B * p.ntiles * ED * N);
    WalkArgs<Act> r;
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
  launch_bwd_local(LocalArgs<Act>{a, g.dy, p.Kt, p.m, p.sa, p.nseg_a, mloc.data<float>(), sdt.data<float>()});
  launch_combine(true, mloc.data<float>(), sdt.data<float>(), a.A, g.dh_last, g.dh0, B, p.nseg_a, ED, N);

  // The tiles.
  Tensor parts = scratch(B * p.ntiles * ED * (N + 2));
  TileArgs<Act> t;
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
  t.vec4 = ED % 4 == 0 && aligned4(a.u) && aligned4(a.delta) && aligned4(a.z) && aligned4(g.dy) &&
           aligned4(g.du) && aligned4(g.ddelta) && aligned4(g.dz);
  const int64_t BLN = B * L * N;
  // dB, dC: f32 sums. f32 activations: straight into the outputs; bf16: into an f32 scratch
  // (B L N floats each) rounded to bf16 once at the end. Likewise (bf16, N > kNG) du, ddelta,
  // dz's running sums over the state groups (the scratch is 16-byte aligned: vec4 holds).
  float *dB32, *dC32;
  Tensor dBC32, run;
  if constexpr (std::is_same_v<Act, float>) {
    dB32 = g.dB;
    dC32 = g.dC;
  } else {
    dBC32 = scratch(2 * BLN);
    dB32 = dBC32.data<float>();
    dC32 = dB32 + BLN;
    if (p.ngroups > 1) {
      const int64_t BLE = B * L * ED;
      run = scratch(3 * BLE);
      t.run_du = run.data<float>();
      t.run_ddelta = t.run_du + BLE;
      t.run_dz = t.run_ddelta + BLE;
    }
  }
  Tensor partials;
  t.atomic = false;
  t.out_stride = 0;
  t.outB = dB32;
  t.outC = dC32;
  if (p.G > 1 && !settings().deterministic) {  // float atomics across groups
    copy_or_zero(dB32, nullptr, BLN);
    copy_or_zero(dC32, nullptr, BLN);
    t.atomic = true;
  } else if (p.G > 1) {  // per-group partials, summed in group order below
    partials = scratch(2 * p.G * BLN);
    t.outB = partials.data<float>();
    t.outC = t.outB + p.G * BLN;
    t.out_stride = BLN;
  }
  launch_bwd_tile(t);
  if (partials.defined()) launch_sum_groups(t.outB, t.outC, dB32, dC32, p.G, BLN);
  if constexpr (!std::is_same_v<Act, float>) {  // the one rounding of dB and dC
    mg::cuda::f32_to_bf16(dB32, g.dB, BLN);  // (qualified: ADL would find the CPU one)
    mg::cuda::f32_to_bf16(dC32, g.dC, BLN);
  }
  // dD is a sum over D's uses: zero without D (as the CPU loop); the partials exist only with D.
  if (!a.D) copy_or_zero(g.dD, nullptr, ED);
  launch_param_sums(t.part_A, t.part_D, t.part_bias, B * p.ntiles, ED, N, g.dA,
                    a.D ? g.dD : nullptr, g.ddelta_bias);
}

}  // namespace

void selective_scan_forward_v3(const ScanArgs<float>& a) { forward_v3(a); }
void selective_scan_backward_v3(const ScanArgs<float>& a, const ScanGrads<float>& g) {
  backward_v3(a, g);
}
// bf16 activations and their gradients (y, du, ddelta, dz, dB, dC rounded once); A, D,
// delta_bias, h0, h_last, the chunk states, dA, dD, ddelta_bias, dh0, dh_last f32.
void selective_scan_forward_v3(const ScanArgs<bf16, float>& a) { forward_v3(a); }
void selective_scan_backward_v3(const ScanArgs<bf16, float>& a, const ScanGrads<bf16, float>& g) {
  backward_v3(a, g);
}

std::vector<KernelOccupancy> scan_v3_occupancy() {
  backend_init();
  std::vector<KernelOccupancy> out;
  append_walk_occupancy(out);
  append_tile_occupancy(out);
  return out;
}

}  // namespace mg::cuda
