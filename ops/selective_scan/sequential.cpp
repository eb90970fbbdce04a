// ops/selective_scan_sequential.cpp — the selective scan as the plainest possible loop.
//
// One (batch b, channel d) at a time, one time step at a time, scalar std:: math. This is the
// readable spec the fast kernel (selective_scan_fast.cpp) is tested against; the formulas and
// their derivation are in ops/selective_scan.h. Single-threaded on purpose.
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

template <typename T>
void selective_scan_sequential_fwd(const T* u, const T* delta, const T* A, const T* Bm,
                                   const T* C, const T* D, const T* z, const T* delta_bias,
                                   bool delta_softplus, const T* h0, T* y, T* h_last,
                                   int64_t batch, int64_t length, int64_t channels,
                                   int64_t states) {
  const int64_t L = length, ED = channels, N = states;
  std::vector<T> h(N);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t d = 0; d < ED; ++d) {
      for (int64_t n = 0; n < N; ++n) h[n] = h0 ? h0[(b * ED + d) * N + n] : T(0);
      for (int64_t t = 0; t < L; ++t) {
        const int64_t i = (b * L + t) * ED + d;  // (b, t, d)
        const T* B_t = Bm + (b * L + t) * N;
        const T* C_t = C + (b * L + t) * N;
        const T dt = delta_of(delta[i] + (delta_bias ? delta_bias[d] : T(0)), delta_softplus);
        T y_t = 0;
        for (int64_t n = 0; n < N; ++n) {
          const T A_bar = std::exp(dt * A[d * N + n]);       // exp(delta_t A)
          h[n] = A_bar * h[n] + dt * B_t[n] * u[i];          // h_t = A_bar h_{t-1} + delta_t B_t u_t
          y_t += C_t[n] * h[n];                              // <C_t, h_t>
        }
        if (D) y_t += D[d] * u[i];
        if (z) y_t *= z[i] * sigmoid(z[i]);  // silu(z_t)
        y[i] = y_t;
      }
      if (h_last)
        for (int64_t n = 0; n < N; ++n) h_last[(b * ED + d) * N + n] = h[n];
    }
  }
}

template <typename T>
void selective_scan_sequential_bwd(const T* u, const T* delta, const T* A, const T* Bm,
                                   const T* C, const T* D, const T* z, const T* delta_bias,
                                   bool delta_softplus, const T* h0, const T* dy,
                                   const T* dh_last, T* du, T* ddelta, T* dA, T* dB, T* dC,
                                   T* dD, T* dz, T* ddelta_bias, T* dh0, int64_t batch,
                                   int64_t length, int64_t channels, int64_t states) {
  const int64_t L = length, ED = channels, N = states;
  for (int64_t i = 0; i < batch * L * N; ++i) dB[i] = dC[i] = T(0);
  for (int64_t i = 0; i < ED * N; ++i) dA[i] = T(0);
  for (int64_t d = 0; d < ED; ++d) {
    if (dD) dD[d] = T(0);
    if (ddelta_bias) ddelta_bias[d] = T(0);
  }
  std::vector<T> h((L + 1) * N);  // h[(t + 1) * N + n] = h_t[n]; row 0 = h0
  std::vector<T> lambda_next(N);  // A_bar_{t+1} * lambda_{t+1}: the adjoint carried into step t
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t d = 0; d < ED; ++d) {
      const T bias = delta_bias ? delta_bias[d] : T(0);
      // 1. Recompute this channel's states h_0 .. h_L (the forward, keeping every state).
      for (int64_t n = 0; n < N; ++n) h[n] = h0 ? h0[(b * ED + d) * N + n] : T(0);
      for (int64_t t = 0; t < L; ++t) {
        const int64_t i = (b * L + t) * ED + d;
        const T* B_t = Bm + (b * L + t) * N;
        const T dt = delta_of(delta[i] + bias, delta_softplus);
        for (int64_t n = 0; n < N; ++n)
          h[(t + 1) * N + n] = std::exp(dt * A[d * N + n]) * h[t * N + n] + dt * B_t[n] * u[i];
      }
      // 2. The adjoint recurrence, t = L-1 .. 0, starting from dL/dh_last.
      for (int64_t n = 0; n < N; ++n)
        lambda_next[n] = dh_last ? dh_last[(b * ED + d) * N + n] : T(0);
      for (int64_t t = L - 1; t >= 0; --t) {
        const int64_t i = (b * L + t) * ED + d;
        const T* B_t = Bm + (b * L + t) * N;
        const T* C_t = C + (b * L + t) * N;
        const T* h_t = &h[(t + 1) * N];
        const T* h_prev = &h[t * N];
        const T r = delta[i] + bias;
        const T dt = delta_of(r, delta_softplus);
        // The gate: out = y * silu(z). g_hat = dL/dy (pre-gate).
        T g_hat = dy[i];
        if (z) {
          T y_pre = D ? D[d] * u[i] : T(0);
          for (int64_t n = 0; n < N; ++n) y_pre += C_t[n] * h_t[n];
          const T s = sigmoid(z[i]);
          dz[i] = dy[i] * y_pre * s * (T(1) + z[i] * (T(1) - s));
          g_hat = dy[i] * z[i] * s;
        }
        T du_t = D ? D[d] * g_hat : T(0);
        if (D) dD[d] += g_hat * u[i];
        T sum_lambda_B = 0, ddt = 0;
        for (int64_t n = 0; n < N; ++n) {
          const T lambda = g_hat * C_t[n] + lambda_next[n];  // dL/dh_t
          const T A_bar = std::exp(dt * A[d * N + n]);
          const T A_bar_h_prev = A_bar * h_prev[n];
          dC[(b * L + t) * N + n] += g_hat * h_t[n];
          dB[(b * L + t) * N + n] += lambda * dt * u[i];
          sum_lambda_B += lambda * B_t[n];
          ddt += lambda * A[d * N + n] * A_bar_h_prev;
          dA[d * N + n] += lambda * dt * A_bar_h_prev;
          lambda_next[n] = A_bar * lambda;  // becomes A_bar_t lambda_t for step t-1
        }
        du[i] = du_t + dt * sum_lambda_B;
        ddt += u[i] * sum_lambda_B;
        const T draw = ddt * delta_grad_of(r, delta_softplus);  // softplus chain rule
        ddelta[i] = draw;
        if (ddelta_bias) ddelta_bias[d] += draw;
      }
      if (dh0)
        for (int64_t n = 0; n < N; ++n) dh0[(b * ED + d) * N + n] = lambda_next[n];
    }
  }
}

#define MG_INSTANTIATE(T)                                                                      \
  template void selective_scan_sequential_fwd<T>(const T*, const T*, const T*, const T*,       \
                                                 const T*, const T*, const T*, const T*, bool, \
                                                 const T*, T*, T*, int64_t, int64_t, int64_t,  \
                                                 int64_t);                                     \
  template void selective_scan_sequential_bwd<T>(                                              \
      const T*, const T*, const T*, const T*, const T*, const T*, const T*, const T*, bool,    \
      const T*, const T*, const T*, T*, T*, T*, T*, T*, T*, T*, T*, T*, int64_t, int64_t,      \
      int64_t, int64_t);
MG_INSTANTIATE(float)
MG_INSTANTIATE(double)
#undef MG_INSTANTIATE

}  // namespace mg::cpu
