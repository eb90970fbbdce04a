// ops/selective_scan/step.cpp — one token of the selective scan (recurrent inference).
//
// Decoding advances every sequence by one token at a time: L = 1, and the state h (B, ED, N)
// is carried from token to token instead of being recomputed (Mamba's O(1) cost per token).
// Per (b, d), with the vectors over the N states:
//   delta = softplus(delta_raw + bias);  A_bar = exp(delta A);  h = A_bar h + (delta u) B_t
//   y = (D u + <C_t, h>) * silu(z)
// with the fast kernels' scalar functions (core/vmath.h: vsoftplus, vexp, vsigmoid) in their
// order of operations, the <C_t, h> sum as even-n + odd-n partials (fast.cpp, fixed.cpp), so a
// prefill by the parallel scan followed by steps reproduces the scan over the whole sequence:
// bitwise for the N-specialised f32 kernel, within an ulp of the generic one (see below).
#include <cmath>

#include "core/parallel.h"
#include "ops/selective_scan/kernels.h"
#include "ops/selective_scan/math.h"

namespace mg::cpu {

// u, delta, z, y: (B, 1, ED); Bm, C: (B, 1, N); A: (ED, N); D, delta_bias: (ED);
// h0 (state in), h_last (state out): (B, ED, N), may be the same buffer. The state and every
// computation in S.
template <typename T, typename S>
void selective_scan_step_forward(const ScanArgs<T, S>& a) {
  using namespace vmath;
  const int64_t ED = a.ED, N = a.N;
  parallel_for(a.B * ED, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {  // i = (b, d)
      const int64_t b = i / ED, d = i % ED;
      const S u = a.u[i];
      const S r = S(a.delta[i]) + (a.delta_bias ? a.delta_bias[d] : S(0));
      const S dt = scan_math::vdelta(r, a.delta_softplus);
      const S dtu = dt * u;
      const S* A_d = a.A + d * N;
      const T* B_t = a.Bm + b * N;
      const T* C_t = a.C + b * N;
      const S* h_in = a.h0 ? a.h0 + i * N : nullptr;
      S* h_out = a.h_last + i * N;
      S y_even = 0, y_odd = 0;
      for (int64_t n = 0; n < N; ++n) {
        const S A_bar = vexp(dt * A_d[n]);
        h_out[n] = std::fma(A_bar, h_in ? h_in[n] : S(0), dtu * S(B_t[n]));
        S& part = (n % 2 == 0) ? y_even : y_odd;
        part = std::fma(S(C_t[n]), h_out[n], part);
      }
      // D u + <C_t, h> as one fma: what GCC makes of fixed.cpp's `D * u + <C_t, h>` (it
      // contracts a*b + c), so a step is bitwise the N-specialised kernel (the f32 model's).
      // The generic kernel adds D u, rounded, in a separate loop: within an ulp of this.
      S y = std::fma(a.D ? a.D[d] : S(0), u, y_even + y_odd);
      if (a.z) y *= S(a.z[i]) * vsigmoid(S(a.z[i]));  // silu(z)
      a.y[i] = T(y);
    }
  });
}

template void selective_scan_step_forward<float, float>(const ScanArgs<float, float>&);
template void selective_scan_step_forward<double, double>(const ScanArgs<double, double>&);

}  // namespace mg::cpu
