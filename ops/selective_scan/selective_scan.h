// ops/selective_scan/selective_scan.h — the selective scan (S6), the heart of Mamba, as one
// fused op. This folder is the whole op; read it in this order:
//   selective_scan.h   this file: the op and its math (forward, backward, saved set)
//   scan_args.h        the kernels' arguments, defined once (ScanArgs, ScanGrads)
//   sequential.cpp     the readable spec: the plainest loop, what every kernel is tested against
//   kernels.h          every kernel, CPU and CUDA (cuda/selective_scan/), and the choice
//   selective_scan.cpp the op: checks -> allocate -> choose_scan_kernel -> run -> record
//   fast.cpp, fixed.cpp, math.h   the fused CPU kernels (generic; f32 with N in registers)
//   step.cpp           the per-token form (recurrent inference)
//   reference.cpp      the op composed from primitive ops (tests, benchmarks)
//
//   {y, h_last} = selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, h0)
//
//   u, delta, z, y : (B, L, ED)    B, C : (B, L, N)    A : (ED, N)    D, delta_bias : (ED)
//   h0, h_last     : (B, ED, N)    D, z, delta_bias, h0 are optional (undefined Tensor).
//   (Inside formulas below, B_t and C_t are the rows B[b, t, :], C[b, t, :]; the batch index b
//   and channel index d are fixed and dropped: everything is per (b, d) except the sums.)
//
// ---- Forward (per batch b, channel d; vectors over the N states) ------------------------
//   r_t       = delta_raw_t + delta_bias_d
//   delta_t   = softplus(r_t) = ln(1 + e^r_t)      (= r_t when r_t > 20, or when !softplus)
//   A_bar_t   = exp(delta_t A_d)                    (ZOH for A; A_d is the row A[d, :])
//   h_t       = A_bar_t * h_{t-1} + delta_t u_t B_t (the "Euler" B_bar u; h_{-1} = h0 or 0)
//   y_pre_t   = <C_t, h_t> + D_d u_t
//   y_t       = y_pre_t * silu(z_t),   silu(z) = z s(z), s = sigmoid
//   h_last    = h_{L-1}
//
// ---- Backward (reverse-mode; dy_t = dL/dy_t, dh_last = dL/dh_last, both given) ----------
// Gate:      s = s(z_t);  dz_t = dy_t y_pre_t s (1 + z_t (1 - s));  g_t = dy_t z_t s = dL/dy_pre_t
// Skip:      dD_d += g_t u_t;  du_t = D_d g_t + ...
// Adjoint:   lambda_t = dL/dh_t (total) satisfies, since h_t feeds y_pre_t and h_{t+1}:
//              lambda_{L-1} = g_{L-1} C_{L-1} + dh_last
//              lambda_t     = g_t C_t + A_bar_{t+1} * lambda_{t+1}       (note: the NEXT A_bar)
//            and dh0 = dL/dh_{-1} = A_bar_0 * lambda_0.
// Then, from h_t = A_bar_t h_{t-1} + delta_t u_t B_t, with A_bar_t = exp(delta_t A):
//   dC_t   = sum_d g_t h_t                               (a sum over channels d: C is shared)
//   dB_t   = sum_d lambda_t delta_t u_t                  (likewise)
//   du_t  += delta_t <lambda_t, B_t>
//   ddelta_t = u_t <lambda_t, B_t> + sum_n lambda_t,n A_n (A_bar_t,n h_{t-1,n})
//   dA_n  += sum_{b,t} lambda_t,n delta_t (A_bar_t,n h_{t-1,n})
// Softplus chain rule: d(delta_raw_t) = ddelta_t * s(r_t) (1 when r_t > 20 or !softplus),
//   and d(delta_bias)_d = sum_{b,t} d(delta_raw_t).
// A_bar_t h_{t-1} comes from the recomputed h_{t-1} itself (the backward replays each chunk's
// states anyway); nothing is ever divided by a product of A_bar's (which underflow to 0).
//
// ---- What is saved, what is recomputed (the fast kernels, settings().scan_kernel fast) ------
// Saved: the inputs (which the caller holds anyway) and the state ENTERING each chunk of T
// steps, chunk_states (B, ceil(L/T), ED, N): h_{cT-1} for c = 0, 1, ... That is N/T values
// per (b, t, d): with the default T = 64 and N = 16 a quarter of one (B, L, ED) tensor.
// Never allocated: anything of size B*L*ED*N (the paper's h of shape (B, L, D, N)).
// Recomputed in the backward, chunk by chunk in reverse, one (b, 16-channel block) at a time:
// delta_t, A_bar_t and h_t for the T steps of the chunk (a (T+1)*N*16-value scratch), replayed
// from the saved entering state by the same code as the forward (bitwise the same states);
// then the adjoint runs backwards over the chunk and its A_bar_t lambda_t is carried into the
// previous chunk.
// The sequential spec saves nothing but the inputs; its backward replays the whole sequence
// of one (b, d) at a time ((L+1)*N values).
//
// ---- Parallel decomposition and determinism -----------------------------------------------
// Forward: parallel over (b, channel block); every output is written by one task.
// Backward: the generic kernel is parallel over b: dB[b], dC[b] (sums over channels) are owned
// by b's thread. The N-specialised f32 kernel is parallel over (b, group of 128 channels):
// each group's dB/dC sums go to their own (B, L, N) slice and the slices are added in group
// order (ED/128 slices: a few percent of the saved set), so a B = 1 backward uses every core.
// dA, dD and d(delta_bias) (sums over b and t) go to per-(b, block) partials (B*ED*(N+2)
// values) that are added in b order at the end. The groups and every sum's order depend only
// on the shapes, so forward and backward are bitwise identical across runs and thread counts.
//
// Numerics: f32 state and accumulations (f64 on the f64 path); softplus thresholded at 20 in
// both directions; exp underflow gives exactly 0 (never NaN). The fast kernel's exp and
// softplus are polynomials (core/vmath.h, max error measured in the tests), the sequential
// loop uses std::exp / std::log1p. See docs/selective_scan.md.
//
// Which kernel runs: core/settings.h (scan_kernel fast|sequential, scan_chunk T for CPU
// tensors; cuda_scan v1|v2 for CUDA ones), decided in choose_scan_kernel (kernels.h).
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace mg {

struct ScanResult {
  Tensor y;       // (B, L, ED)
  Tensor h_last;  // (B, ED, N): the state after the last step; differentiable
};

ScanResult selective_scan(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B,
                          const Tensor& C, const Tensor& D = {}, const Tensor& z = {},
                          const Tensor& delta_bias = {}, bool delta_softplus = true,
                          const Tensor& h0 = {});

// One token of the same recurrence (recurrent inference), the state updated in place:
//   u, delta, z, y : (B, ED)    B, C : (B, N)    A : (ED, N)    D, delta_bias : (ED)
//   state          : (B, ED, N) h_{t-1} in, h_t out
// Returns y (B, ED). The fast kernels' numbers: a prefill by selective_scan followed by steps
// reproduces the scan over the whole sequence. Inference only (no backward): an mg::Error when
// an input would need a gradient (grad mode on and an input requires grad).
Tensor selective_scan_step(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B,
                           const Tensor& C, const Tensor& D, const Tensor& z,
                           const Tensor& delta_bias, bool delta_softplus, const Tensor& state);

// The same function composed from primitive ops (matmul, exp, softplus, split, cat, ...),
// materialising every (B, L, ED, N) intermediate. Obviously correct and slow: for tests and
// benchmarks only. Its gradients come from the primitive ops' own backward functions.
ScanResult selective_scan_reference(const Tensor& u, const Tensor& delta, const Tensor& A,
                                    const Tensor& B, const Tensor& C, const Tensor& D = {},
                                    const Tensor& z = {}, const Tensor& delta_bias = {},
                                    bool delta_softplus = true, const Tensor& h0 = {});

}  // namespace mg
