// The CUDA selective scan with bf16 activations (v2's ScanArgs<bf16, float> kernels) against
// the CPU reference, cpu::selective_scan_sequential_*<bf16, float> (which tests/test_scan_bf16.cpp
// checks against the widened f32 spec on the CPU), on the shapes of tests/scan_bf16_cases.h:
// odd L, ED and N, every optional input on and off, T below and above v2's 256-step tile, and one
// realistic size; v2 bf16 against v2 f32 on widened inputs bit for bit; and the op under
// precision bf16 on CUDA against the CPU op. Without a visible GPU every case reports itself
// skipped (compiled, not yet run on a GPU).
#ifdef MG_WITH_CUDA
#include <doctest/doctest.h>

#include <string>

#include "autograd/tape.h"
#include "core/settings.h"
#include "cuda/runtime.h"
#include "ops/arith.h"
#include "ops/convert.h"
#include "ops/reduce.h"
#include "ops/selective_scan/selective_scan.h"
#include "scan_bf16_cases.h"
#include "test_util.h"

using namespace mg;
using namespace mg::test::scan_bf16;

namespace {

const Device kGpu = Device::cuda(0);

// The CUDA v2 kernels for f32 and bf16 activations (overloads: picked by the pointer type).
constexpr ScanForwardFn<float>* kV2F = cuda::selective_scan_forward_v2;
constexpr ScanBackwardFn<float>* kV2B = cuda::selective_scan_backward_v2;
constexpr ScanForwardFn<bf16, float>* kV2Bf16F = cuda::selective_scan_forward_v2;
constexpr ScanBackwardFn<bf16, float>* kV2Bf16B = cuda::selective_scan_backward_v2;

// The GPU's bf16 outputs within 1 ulp of the reference's (both round the same f32 math once;
// the f32 values differ by summation order), differences under 1e-4 of the scale not counted
// (the f32 CUDA tests' gradient tolerance); f32 outputs within 1e-4 relative.
void check_against_reference(const Case& c, const std::vector<Tensor>& got,
                             const std::vector<Tensor>& ref) {
  for (int k = 0; k < (int)ref.size(); ++k) {
    if (k == kStates || !ref[k].defined()) continue;  // the sequential spec saves no states
    CAPTURE(kNames[k]);
    CAPTURE(c.L);
    CAPTURE(c.ED);
    CAPTURE(c.N);
    REQUIRE(got[k].defined());
    if (is_activation_out(k))
      CHECK(ulp_distance(got[k], ref[k], 1e-4).worst_ulps <= 1.0);
    else
      CHECK(rel_error(got[k], ref[k]) < 1e-4);
  }
}

}  // namespace

TEST_CASE("cuda scan bf16: v2 == the CPU bf16 reference on odd shapes, every optional subset") {
  MG_SKIP_WITHOUT_GPU();
  for (bool deterministic : {true, false}) {
    SettingsGuard det(test::settings_with(&Settings::deterministic, deterministic));
    uint64_t seed = 21;
    for (const Case& c : odd_cases()) {
      const Inputs in = make_inputs(c, seed++);
      const auto ref = run<bf16>(c, in, Device::cpu(), cpu::selective_scan_sequential_forward<bf16, float>,
                                 cpu::selective_scan_sequential_backward<bf16, float>);
      check_against_reference(c, run<bf16>(c, in, kGpu, kV2Bf16F, kV2Bf16B), ref);
    }
  }
}

TEST_CASE("cuda scan bf16: v2 == the CPU bf16 reference at a realistic size (L 1024, ED 1536, N 16)") {
  MG_SKIP_WITHOUT_GPU();
  const Case c = realistic_case();
  const Inputs in = make_inputs(c, 5);
  const auto ref = run<bf16>(c, in, Device::cpu(), cpu::selective_scan_sequential_forward<bf16, float>,
                             cpu::selective_scan_sequential_backward<bf16, float>);
  check_against_reference(c, run<bf16>(c, in, kGpu, kV2Bf16F, kV2Bf16B), ref);
}

TEST_CASE("cuda scan bf16: v2 on bf16 == v2 f32 on widened inputs rounded once, bit for bit") {
  // The same kernels, templated on the activation type: loads widen exactly, the f32 math is
  // the same instructions, stores round once (dB, dC after the f32 sums). Deterministic mode.
  MG_SKIP_WITHOUT_GPU();
  SettingsGuard det(test::settings_with(&Settings::deterministic, true));
  uint64_t seed = 31;
  for (const Case& c : odd_cases()) {
    CAPTURE(c.L);
    CAPTURE(c.ED);
    CAPTURE(c.N);
    const Inputs in = make_inputs(c, seed++);
    const auto got = run<bf16>(c, in, kGpu, kV2Bf16F, kV2Bf16B);
    const auto want = run<float>(c, in, kGpu, kV2F, kV2B);
    for (int k = 0; k < (int)got.size(); ++k) {
      CAPTURE(kNames[k]);
      CHECK(same_bits(got[k], want[k]));
    }
  }
}

TEST_CASE("cuda scan bf16: the op under precision bf16 runs v2 bf16 and follows the CPU op") {
  MG_SKIP_WITHOUT_GPU();
  SettingsGuard bf(test::settings_with(&Settings::precision, Precision::bf16));
  REQUIRE(choose_scan_kernel_bf16(kGpu, 16).has_value());  // v2 is the default CUDA scan
  const Case c{2, 300, 13, 16, 64};
  const Inputs in = make_inputs(c, 77);
  std::vector<Tensor> got[2];  // [0]: CPU op (widen path, fast kernel), [1]: CUDA op (v2 bf16)
  for (int k = 0; k < 2; ++k) {
    const Device dev = k ? kGpu : Device::cpu();
    std::vector<Tensor> x{in.u, in.delta, in.A, in.B, in.C, in.D, in.z, in.bias, in.h0};
    for (Tensor& t : x) t = t.copy_to(dev).requires_grad_();
    const ScanResult r = selective_scan(x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7], true, x[8]);
    CHECK(r.y.dtype() == DType::bf16);
    CHECK(r.h_last.dtype() == DType::f32);
    backward(sum(to(r.y, DType::f32) * to(in.dy, DType::f32).copy_to(dev)) +
             sum(r.h_last * in.dh_last.copy_to(dev)));
    got[k] = {r.y, r.h_last, Tensor(), x[0].grad(), x[1].grad(), x[2].grad(), x[3].grad(),
              x[4].grad(), x[5].grad(), x[6].grad(), x[7].grad(), x[8].grad()};
    for (Tensor& t : got[k])
      if (t.defined()) t = t.copy_to(Device::cpu());
  }
  for (int k = 0; k < (int)got[0].size(); ++k) {
    if (k == kStates) continue;
    CAPTURE(kNames[k]);
    CHECK(got[1][k].dtype() == got[0][k].dtype());
    if (is_activation_out(k))
      CHECK(ulp_distance(got[1][k], got[0][k], 1e-4).worst_ulps <= 1.0);
    else
      CHECK(rel_error(got[1][k], got[0][k]) < 1e-4);
  }
}

#endif  // MG_WITH_CUDA
