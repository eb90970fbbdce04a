// ops/selective_scan_math.h — the scan's own helpers on top of core/vmath.h (where the
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

template <typename T>
[[gnu::always_inline]] inline T vdelta(T raw_plus_bias, bool use_softplus) {
  return use_softplus ? vsoftplus(raw_plus_bias) : raw_plus_bias;
}
template <typename T>
[[gnu::always_inline]] inline T vdelta_grad(T raw_plus_bias, bool use_softplus) {
  if (!use_softplus) return T(1);
  return raw_plus_bias > T(kSoftplusThreshold) ? T(1) : vsigmoid(raw_plus_bias);
}

// 16 lanes at once (vdelta above serves them too: vsoftplus has a 16-lane overload).
[[gnu::always_inline]] inline vmath::F32x16 vdelta_grad(vmath::F32x16 raw_plus_bias,
                                                        bool use_softplus) {
  using vmath::splat;
  if (!use_softplus) return splat(1.0f);
  return raw_plus_bias > splat(float(kSoftplusThreshold)) ? splat(1.0f) : vsigmoid(raw_plus_bias);
}

}  // namespace mg::scan_math
