// The CUDA selective scan with bf16 activations (v2's and v3's ScanArgs<bf16, float> kernels)
// against the CPU reference, cpu::selective_scan_sequential_*<bf16, float> (which
// tests/test_scan_bf16.cpp checks against the widened f32 spec on the CPU), on the shapes of
// tests/scan_bf16_cases.h: odd L, ED and N (N 33: three state groups), every optional input on
// and off, T below and above the 256-step tiles (v3's re-derivation), and one realistic size;
// each version's bf16 kernels against its f32 kernels on widened inputs bit for bit; and the op
// under precision bf16 on CUDA against the CPU op. Every case runs v2 and v3. Without a visible
// GPU every case reports itself skipped (compiled, not yet run on a GPU). The choice of the
// kernel pair (choose_scan_kernel_bf16) is checked without a GPU.
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

// A CUDA version's kernels for f32 and bf16 activations (overloads: picked by the pointer type).
struct Version {
  CudaScanVersion v;
  ScanForwardFn<float>* f32_forward;
  ScanBackwardFn<float>* f32_backward;
  ScanForwardFn<bf16, float>* forward;
  ScanBackwardFn<bf16, float>* backward;
};
const Version kVersions[] = {
    {CudaScanVersion::v2, cuda::selective_scan_forward_v2, cuda::selective_scan_backward_v2,
     cuda::selective_scan_forward_v2, cuda::selective_scan_backward_v2},
    {CudaScanVersion::v3, cuda::selective_scan_forward_v3, cuda::selective_scan_backward_v3,
     cuda::selective_scan_forward_v3, cuda::selective_scan_backward_v3}};

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

TEST_CASE("cuda scan bf16: choose_scan_kernel_bf16 runs v2's or v3's bf16 kernels, v1 widens") {
  // (No GPU needed: the choice returns function pointers.)
  CHECK(std::string(choose_scan_kernel_bf16(kGpu, 16)->name) == "cuda v2 bf16");  // the default
  for (const Version& ver : kVersions) {
    SettingsGuard version(test::settings_with(&Settings::cuda_scan, ver.v));
    const auto k = choose_scan_kernel_bf16(kGpu, 16);
    REQUIRE(k.has_value());
    CHECK(k->name == std::string("cuda ") + cuda_scan_name(ver.v) + " bf16");
    CHECK((k->forward == ver.forward));  // (parenthesized: doctest cannot print function pointers)
    CHECK((k->backward == ver.backward));
    CHECK(k->saves_chunk_states);
  }
  SettingsGuard v1(test::settings_with(&Settings::cuda_scan, CudaScanVersion::v1));
  CHECK_FALSE(choose_scan_kernel_bf16(kGpu, 16).has_value());
}

TEST_CASE("cuda scan bf16: v2, v3 == the CPU bf16 reference on odd shapes, every optional subset") {
  MG_SKIP_WITHOUT_GPU();
  for (const Version& ver : kVersions) {
    CAPTURE(cuda_scan_name(ver.v));
    for (bool deterministic : {true, false}) {
      SettingsGuard det(test::settings_with(&Settings::deterministic, deterministic));
      uint64_t seed = 21;
      for (const Case& c : odd_cases()) {
        const Inputs in = make_inputs(c, seed++);
        const auto ref = run<bf16>(c, in, Device::cpu(), cpu::selective_scan_sequential_forward<bf16, float>,
                                   cpu::selective_scan_sequential_backward<bf16, float>);
        check_against_reference(c, run<bf16>(c, in, kGpu, ver.forward, ver.backward), ref);
      }
    }
  }
}

TEST_CASE("cuda scan bf16: v2, v3 == the CPU bf16 reference at a realistic size (L 1024, ED 1536, N 16)") {
  MG_SKIP_WITHOUT_GPU();
  const Case c = realistic_case();
  const Inputs in = make_inputs(c, 5);
  const auto ref = run<bf16>(c, in, Device::cpu(), cpu::selective_scan_sequential_forward<bf16, float>,
                             cpu::selective_scan_sequential_backward<bf16, float>);
  for (const Version& ver : kVersions) {
    CAPTURE(cuda_scan_name(ver.v));
    check_against_reference(c, run<bf16>(c, in, kGpu, ver.forward, ver.backward), ref);
  }
}

TEST_CASE("cuda scan bf16: v2, v3 on bf16 == the same version's f32 on widened inputs rounded once, bit for bit") {
  // The same kernels, templated on the activation type: loads widen exactly, the f32 math is
  // the same instructions, stores round once (dB, dC after the f32 sums; v3's y, du, ddelta, dz
  // after the last state group). Deterministic mode.
  MG_SKIP_WITHOUT_GPU();
  SettingsGuard det(test::settings_with(&Settings::deterministic, true));
  for (const Version& ver : kVersions) {
    CAPTURE(cuda_scan_name(ver.v));
    uint64_t seed = 31;
    for (const Case& c : odd_cases()) {
      CAPTURE(c.L);
      CAPTURE(c.ED);
      CAPTURE(c.N);
      const Inputs in = make_inputs(c, seed++);
      const auto got = run<bf16>(c, in, kGpu, ver.forward, ver.backward);
      const auto want = run<float>(c, in, kGpu, ver.f32_forward, ver.f32_backward);
      for (int k = 0; k < (int)got.size(); ++k) {
        CAPTURE(kNames[k]);
        CHECK(same_bits(got[k], want[k]));
      }
    }
  }
}

TEST_CASE("cuda scan bf16: the op under precision bf16 runs v2 / v3 bf16 and follows the CPU op") {
  MG_SKIP_WITHOUT_GPU();
  for (const Version& ver : kVersions) {
    CAPTURE(cuda_scan_name(ver.v));
    Settings s = settings();
    s.precision = Precision::bf16;
    s.cuda_scan = ver.v;
    SettingsGuard bf(s);
    REQUIRE(choose_scan_kernel_bf16(kGpu, 16).has_value());
    const Case c{2, 300, 13, 16, 64};
    const Inputs in = make_inputs(c, 77);
    std::vector<Tensor> got[2];  // [0]: CPU op (widen path, fast kernel), [1]: CUDA op (bf16 kernels)
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
}

#endif  // MG_WITH_CUDA
