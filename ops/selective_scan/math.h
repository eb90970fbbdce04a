// ops/selective_scan/math.h — the scan's own helpers on top of core/vmath.h (where the
// vectorised exp, log1p, softplus and sigmoid live, with their accuracy).
//
//   vdelta(r, sp)       delta_t = softplus(r) (r = delta_raw + delta_bias), or r when !sp
//   vdelta_grad(r, sp)  d(delta_t)/d(r): sigmoid(r), 1 above the softplus threshold or when !sp
#pragma once
#include "core/vmath.h"

namespace mg::scan_math {

using vmath::kSoftplusThreshold;
using vmath::vsigmoid;
using vmath::vsoftplus;

// T: float, double, or vmath::F32x16 (vsoftplus has a 16-lane overload).
template <typename T>
[[gnu::always_inline]] inline T vdelta(T raw_plus_bias, bool use_softplus) {
  return use_softplus ? vsoftplus(raw_plus_bias) : raw_plus_bias;
}
template <typename T>
[[gnu::always_inline]] inline T vdelta_grad(T raw_plus_bias, bool use_softplus) {
  if (!use_softplus) return T(1);
  return raw_plus_bias > T(kSoftplusThreshold) ? T(1) : vsigmoid(raw_plus_bias);
}

}  // namespace mg::scan_math
