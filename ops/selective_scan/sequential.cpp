// ops/selective_scan/sequential.cpp — the selective scan as the plainest possible loop.
//
// One (batch b, channel d) at a time, one time step at a time, scalar std:: math. This is the
// readable spec every other kernel (fast.cpp, fixed.cpp, step.cpp, the CUDA versions) is tested
// against; the formulas and their derivation are in selective_scan.h. Single-threaded on
// purpose. Two element types: T for the activations as stored, S for the state, the
// parameters and every computation (S = T for f32 and f64; wider S for mixed precision).
#include <cmath>
#include <vector>

#include "ops/selective_scan/kernels.h"

namespace mg::cpu {

namespace {

constexpr double kThreshold = 20.0;  // softplus is linear above it (both directions)

template <typename T> T sigmoid(T x) {
  if (x >= 0) return T(1) / (T(1) + std::exp(-x));
  T e = std::exp(x);
  return e / (T(1) + e);
}
// delta_t from the raw input (plus bias), and d(delta_t)/d(raw).
template <typename T> T delta_of(T r, bool softplus) {
  if (!softplus) return r;
  return r > T(kThreshold) ? r : std::log1p(std::exp(r));
}
template <typename T> T delta_grad_of(T r, bool softplus) {
  if (!softplus || r > T(kThreshold)) return T(1);
  return sigmoid(r);
}

}  // namespace

// u, delta, z, y: (B, L, ED); Bm, C: (B, L, N); A: (ED, N); D, delta_bias: (ED);
// h0, h_last: (B, ED, N). The state and every sum in S.
template <typename T, typename S>
void selective_scan_sequential_forward(const ScanArgs<T, S>& a) {
  const int64_t L = a.L, ED = a.ED, N = a.N;
  std::vector<S> h(N);
  for (int64_t b = 0; b < a.B; ++b) {
    for (int64_t d = 0; d < ED; ++d) {
      for (int64_t n = 0; n < N; ++n) h[n] = a.h0 ? a.h0[(b * ED + d) * N + n] : S(0);
      for (int64_t t = 0; t < L; ++t) {
        const int64_t i = (b * L + t) * ED + d;  // (b, t, d)
        const T* B_t = a.Bm + (b * L + t) * N;
        const T* C_t = a.C + (b * L + t) * N;
        const S u_t = S(a.u[i]);
        const S dt = delta_of(S(a.delta[i]) + (a.delta_bias ? a.delta_bias[d] : S(0)),
                              a.delta_softplus);
        S y_t = 0;
        for (int64_t n = 0; n < N; ++n) {
          const S A_bar = std::exp(dt * a.A[d * N + n]);  // exp(delta_t A)
          h[n] = A_bar * h[n] + dt * S(B_t[n]) * u_t;  // h_t = A_bar h_{t-1} + delta_t B_t u_t
          y_t += S(C_t[n]) * h[n];                     // <C_t, h_t>
        }
        if (a.D) y_t += a.D[d] * u_t;
        if (a.z) y_t *= S(a.z[i]) * sigmoid(S(a.z[i]));  // silu(z_t)
        a.y[i] = T(y_t);
      }
      if (a.h_last)
        for (int64_t n = 0; n < N; ++n) a.h_last[(b * ED + d) * N + n] = h[n];
    }
  }
}

// The forward's layouts; dy, du, ddelta, dz: (B, L, ED); dB, dC: (B, L, N); dA: (ED, N);
// dD, ddelta_bias: (ED); dh_last, dh0: (B, ED, N). Replays each (b, d) from h0.
template <typename T, typename S>
void selective_scan_sequential_backward(const ScanArgs<T, S>& a, const ScanGrads<T, S>& g) {
  const int64_t L = a.L, ED = a.ED, N = a.N;
  const T* u = a.u;
  const T* delta = a.delta;
  const S* A = a.A;
  const S* D = a.D;
  const T* z = a.z;
  // dB and dC are sums over channels (and dA, dD, d(delta_bias) over b and t): kept in S.
  std::vector<S> dB(a.B * L * N, S(0)), dC(a.B * L * N, S(0));
  for (int64_t i = 0; i < ED * N; ++i) g.dA[i] = S(0);
  for (int64_t d = 0; d < ED; ++d) {
    if (g.dD) g.dD[d] = S(0);
    if (g.ddelta_bias) g.ddelta_bias[d] = S(0);
  }
  std::vector<S> h((L + 1) * N);  // h[(t + 1) * N + n] = h_t[n]; row 0 = h0
  std::vector<S> lambda_next(N);  // A_bar_{t+1} * lambda_{t+1}: the adjoint carried into step t
  for (int64_t b = 0; b < a.B; ++b) {
    for (int64_t d = 0; d < ED; ++d) {
      const S bias = a.delta_bias ? a.delta_bias[d] : S(0);
      // 1. Recompute this channel's states h_0 .. h_L (the forward, keeping every state).
      for (int64_t n = 0; n < N; ++n) h[n] = a.h0 ? a.h0[(b * ED + d) * N + n] : S(0);
      for (int64_t t = 0; t < L; ++t) {
        const int64_t i = (b * L + t) * ED + d;
        const T* B_t = a.Bm + (b * L + t) * N;
        const S dt = delta_of(S(delta[i]) + bias, a.delta_softplus);
        for (int64_t n = 0; n < N; ++n)
          h[(t + 1) * N + n] =
              std::exp(dt * A[d * N + n]) * h[t * N + n] + dt * S(B_t[n]) * S(u[i]);
      }
      // 2. The adjoint recurrence, t = L-1 .. 0, starting from dL/dh_last.
      for (int64_t n = 0; n < N; ++n)
        lambda_next[n] = g.dh_last ? g.dh_last[(b * ED + d) * N + n] : S(0);
      for (int64_t t = L - 1; t >= 0; --t) {
        const int64_t i = (b * L + t) * ED + d;
        const T* B_t = a.Bm + (b * L + t) * N;
        const T* C_t = a.C + (b * L + t) * N;
        const S* h_t = &h[(t + 1) * N];
        const S* h_prev = &h[t * N];
        const S u_t = S(u[i]), dy_t = S(g.dy[i]);
        const S r = S(delta[i]) + bias;
        const S dt = delta_of(r, a.delta_softplus);
        // The gate: out = y * silu(z). g_hat = dL/dy (pre-gate).
        S g_hat = dy_t;
        if (z) {
          S y_pre = D ? D[d] * u_t : S(0);
          for (int64_t n = 0; n < N; ++n) y_pre += S(C_t[n]) * h_t[n];
          const S z_t = S(z[i]), s = sigmoid(z_t);
          g.dz[i] = T(dy_t * y_pre * s * (S(1) + z_t * (S(1) - s)));
          g_hat = dy_t * z_t * s;
        }
        S du_t = D ? D[d] * g_hat : S(0);
        if (D) g.dD[d] += g_hat * u_t;
        S sum_lambda_B = 0, ddt = 0;
        for (int64_t n = 0; n < N; ++n) {
          const S lambda = g_hat * S(C_t[n]) + lambda_next[n];  // dL/dh_t
          const S A_bar = std::exp(dt * A[d * N + n]);
          const S A_bar_h_prev = A_bar * h_prev[n];
          dC[(b * L + t) * N + n] += g_hat * h_t[n];
          dB[(b * L + t) * N + n] += lambda * dt * u_t;
          sum_lambda_B += lambda * S(B_t[n]);
          ddt += lambda * A[d * N + n] * A_bar_h_prev;
          g.dA[d * N + n] += lambda * dt * A_bar_h_prev;
          lambda_next[n] = A_bar * lambda;  // becomes A_bar_t lambda_t for step t-1
        }
        g.du[i] = T(du_t + dt * sum_lambda_B);
        ddt += u_t * sum_lambda_B;
        const S draw = ddt * delta_grad_of(r, a.delta_softplus);  // softplus chain rule
        g.ddelta[i] = T(draw);
        if (g.ddelta_bias) g.ddelta_bias[d] += draw;
      }
      if (g.dh0)
        for (int64_t n = 0; n < N; ++n) g.dh0[(b * ED + d) * N + n] = lambda_next[n];
    }
  }
  for (int64_t i = 0; i < a.B * L * N; ++i) {
    g.dB[i] = T(dB[i]);
    g.dC[i] = T(dC[i]);
  }
}

#define MG_INSTANTIATE(T, S)                                                                 \
  template void selective_scan_sequential_forward<T, S>(const ScanArgs<T, S>&);              \
  template void selective_scan_sequential_backward<T, S>(const ScanArgs<T, S>&,              \
                                                         const ScanGrads<T, S>&);
MG_INSTANTIATE(float, float)
MG_INSTANTIATE(double, double)
// Mixed precision: the reference of the bf16 CUDA kernels (tests/test_scan_bf16.cpp checks it
// against the f32 spec on widened inputs, tests/test_cuda_scan_bf16.cpp the GPU against it).
MG_INSTANTIATE(bf16, float)
#undef MG_INSTANTIATE

}  // namespace mg::cpu
