// The selective scan with bf16 activations on the CPU (ScanArgs<bf16, float>): the reference of
// the CUDA bf16 kernels — the sequential spec instantiated for <bf16, float> — against the widen
// path (run_scan_bf16: the f32 kernel on widened inputs, the activation outputs rounded once),
// on the shapes tests/test_cuda_scan_bf16.cpp runs on the GPU (tests/scan_bf16_cases.h); and
// the op's native bf16 path (choose_scan_kernel_bf16) against the kernels.
#include <doctest/doctest.h>

#include <cstdio>
#include <string>

#include "autograd/tape.h"
#include "core/settings.h"
#include "ops/arith.h"
#include "ops/convert.h"
#include "ops/reduce.h"
#include "ops/selective_scan/selective_scan.h"
#include "scan_bf16_cases.h"
#include "test_util.h"

using namespace mg;
using namespace mg::test::scan_bf16;

namespace {

constexpr auto* kSeqF = cpu::selective_scan_sequential_forward<float, float>;
constexpr auto* kSeqB = cpu::selective_scan_sequential_backward<float, float>;
constexpr auto* kSeqBf16F = cpu::selective_scan_sequential_forward<bf16, float>;
constexpr auto* kSeqBf16B = cpu::selective_scan_sequential_backward<bf16, float>;

ScanKernelPair<float> cpu_fast(int64_t N) {  // what the op's widen path runs on the CPU
  SettingsGuard g(test::settings_with(&Settings::scan_kernel, ScanKernel::fast));
  return choose_scan_kernel<float>(Device::cpu(), N);
}

}  // namespace

TEST_CASE("scan bf16 reference: the sequential spec on bf16 == the f32 spec on widened inputs, bit for bit") {
  // Reading bf16 widens exactly and each output is rounded once, from the same f32 arithmetic:
  // the <bf16, float> instantiation must reproduce the widen path with the same kernel exactly.
  uint64_t seed = 1;
  for (const Case& c : odd_cases()) {
    CAPTURE(c.L);
    CAPTURE(c.ED);
    CAPTURE(c.N);
    const Inputs in = make_inputs(c, seed++);
    const auto got = run<bf16>(c, in, Device::cpu(), kSeqBf16F, kSeqBf16B);
    const auto want = run<float>(c, in, Device::cpu(), kSeqF, kSeqB);
    for (int k = 0; k < (int)got.size(); ++k) {
      CAPTURE(kNames[k]);
      CHECK(same_bits(got[k], want[k]));
    }
  }
}

TEST_CASE("scan bf16 reference: within 1 bf16 ulp of the widen path with the CPU's fast kernel") {
  // The fast/fixed kernels sum in another order (f32 rounding apart from the spec), so after the
  // one rounding to bf16 an output may land on the neighbouring bf16 value: at most 1 ulp, except
  // where the f32 difference (measured < 1e-5 of the tensor's scale) exceeds a tiny result's ulp.
  double worst[12] = {};
  uint64_t seed = 11;
  for (const Case& c : odd_cases()) {
    CAPTURE(c.L);
    CAPTURE(c.ED);
    CAPTURE(c.N);
    const Inputs in = make_inputs(c, seed++);
    const ScanKernelPair<float> fast = cpu_fast(c.N);
    const auto ref = run<bf16>(c, in, Device::cpu(), kSeqBf16F, kSeqBf16B);
    const auto widened = run<float>(c, in, Device::cpu(), fast.forward, fast.backward);
    for (int k = 0; k < (int)ref.size(); ++k) {
      if (k == kStates || !ref[k].defined()) continue;  // the spec saves no states
      CAPTURE(kNames[k]);
      if (is_activation_out(k)) {
        const UlpReport r = ulp_distance(widened[k], ref[k], 1e-5);
        CHECK(r.worst_ulps <= 1.0);
        worst[k] = std::max(worst[k], r.worst_ulps);
      } else {
        const double e = rel_error(widened[k], ref[k]);
        CHECK(e < 1e-5);
        worst[k] = std::max(worst[k], e);
      }
    }
  }
  std::string msg = "worst (bf16 outputs: ulps; f32 outputs: relative):";
  for (int k = 0; k < 12; ++k)
    if (k != kStates) {
      char v[32];
      std::snprintf(v, sizeof v, " %s %.3g", kNames[k], worst[k]);
      msg += v;
    }
  MESSAGE(msg);
}

TEST_CASE("scan bf16 op: the native path (sequential spec) equals the kernels; gradients keep their dtypes") {
  // With settings().scan_kernel sequential the op runs cpu::selective_scan_sequential_*<bf16,
  // float> itself (choose_scan_kernel_bf16): the same plumbing as the CUDA v2 bf16 path. Its
  // results must equal the reference kernels bit for bit, and the widen path (fast kernel)
  // within 1 ulp; y and the activations' gradients bf16, h_last and the rest f32.
  SettingsGuard bf(test::settings_with(&Settings::precision, Precision::bf16));
  const Case c{2, 263, 11, 16, 64};
  const Inputs in = make_inputs(c, 99);
  const auto ref = run<bf16>(c, in, Device::cpu(), kSeqBf16F, kSeqBf16B);
  std::vector<Tensor> got[2];  // [0]: native (sequential), [1]: widen path (fast)
  for (int k = 0; k < 2; ++k) {
    SettingsGuard kern(test::settings_with(&Settings::scan_kernel,
                                           k == 0 ? ScanKernel::sequential : ScanKernel::fast));
    const auto native = choose_scan_kernel_bf16(Device::cpu(), c.N);
    REQUIRE(native.has_value() == (k == 0));
    if (native) CHECK(std::string(native->name) == "sequential bf16");
    std::vector<Tensor> x{in.u.clone(), in.delta.clone(), in.A.clone(), in.B.clone(),
                          in.C.clone(), in.D.clone(),     in.z.clone(), in.bias.clone(),
                          in.h0.clone()};
    for (Tensor& t : x) t.requires_grad_();
    const ScanResult r = selective_scan(x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7], true, x[8]);
    CHECK(r.y.dtype() == DType::bf16);
    CHECK(r.h_last.dtype() == DType::f32);
    // loss = <y, dy> + <h_last, dh_last>: y's gradient is dy, h_last's dh_last.
    backward(sum(to(r.y, DType::f32) * to(in.dy, DType::f32)) + sum(r.h_last * in.dh_last));
    got[k] = {r.y, r.h_last, Tensor(), x[0].grad(), x[1].grad(), x[2].grad(), x[3].grad(),
              x[4].grad(), x[5].grad(), x[6].grad(), x[7].grad(), x[8].grad()};
  }
  for (int k = 0; k < (int)ref.size(); ++k) {
    if (k == kStates) continue;
    CAPTURE(kNames[k]);
    REQUIRE(got[0][k].defined());
    CHECK(got[0][k].dtype() == (is_activation_out(k) ? DType::bf16 : DType::f32));
    CHECK(got[1][k].dtype() == got[0][k].dtype());
    CHECK(same_bits(got[0][k], ref[k]));
    if (is_activation_out(k))
      CHECK(ulp_distance(got[1][k], got[0][k], 1e-5).worst_ulps <= 1.0);
    else
      CHECK(rel_error(got[1][k], got[0][k]) < 1e-5);
  }
}
