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
#include <cstring>
#include <type_traits>

#include "core/parallel.h"
#include "ops/selective_scan/kernels.h"
#include "ops/selective_scan/math.h"

namespace mg::cpu {

// h_out[n] = exp(dt A[n]) h_in[n] + dtu B[n] for n < 16 (h_in null: 0), as one F32x16: the
// scalar loop's operations lane by lane (vexp's vector form is bitwise its scalar form), so
// the same bits, with the 16 exps of a channel in one vector instead of 16 calls (the step's
// exps were ~1/5 of a batch-1 decode step on the CPU).
[[gnu::always_inline]] inline void update_16(float dt, float dtu, const float* A, const float* B,
                                             const float* h_in, float* h_out) {
  using vmath::F32x16;
  F32x16 a, b, h{};
  std::memcpy(&a, A, sizeof a);
  std::memcpy(&b, B, sizeof b);
  if (h_in) std::memcpy(&h, h_in, sizeof h);
  const F32x16 a_bar = vmath::vexp(vmath::splat(dt) * a);
  const F32x16 h_new = vmath::fma(a_bar, h, vmath::splat(dtu) * b);
  std::memcpy(h_out, &h_new, sizeof h_new);
}

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
      if constexpr (std::is_same_v<S, float> && std::is_same_v<T, float>) {
        if (N == 16) {  // the model's N: the 16 states as one vector, the same per-lane math
          update_16(dt, dtu, A_d, B_t, h_in, h_out);
          for (int64_t n = 0; n < N; ++n) {
            S& part = (n % 2 == 0) ? y_even : y_odd;
            part = std::fma(S(C_t[n]), h_out[n], part);
          }
          S y = std::fma(a.D ? a.D[d] : S(0), u, y_even + y_odd);
          if (a.z) y *= S(a.z[i]) * vsigmoid(S(a.z[i]));
          a.y[i] = T(y);
          continue;
        }
      }
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
