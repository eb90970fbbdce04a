// ops/selective_scan/fast.cpp — the fused CPU selective scan (forward and chunked backward).
//
// Vectorised over channels: a "block" is W = 64 bytes / sizeof(T) consecutive channels
// (16 f32 / 8 f64: one AVX-512 register), and every inner loop runs over the W lanes of a
// block with `#pragma omp simd`. u, delta, z are (B, L, ED), so a block's W values at one time
// step are contiguous; B_t[n], C_t[n] are the same for every lane (a broadcast). The block's
// state h[n][lane] (N*W values: 1 KB at N=16) stays in L1/registers for the whole sequence.
// The last block of a row is padded with lanes whose A = u = 0: their state stays 0 and they
// are never written out.
//
// Forward: parallel over (b, block) tasks; each writes disjoint outputs.
// Backward: parallel over b. For one b, chunks of T steps are walked in reverse; inside a
// chunk, every block (1) replays the chunk's forward from the saved boundary state, keeping the
// chunk's states and A_bar = exp(delta A) in a (T+1)*N*W scratch, then (2) runs the adjoint
// recurrence backwards over the chunk. dB[b, t, :] and dC[b, t, :] are sums over channels: each
// block adds its lanes into a (T, N, W) lane buffer, reduced across lanes once per chunk.
// dA, dD, d(delta_bias) are accumulated per b (B*ED*N values) and summed in b order at the
// end. All sums run in an order fixed by the shapes only: bitwise identical for any thread count.
//
// For f32 with N in {4, 8, 16, 32}, choose_scan_kernel (selective_scan.cpp) runs fixed.cpp
// instead (the same algorithm with N a compile-time constant, so the state lives in
// registers); this generic code serves every other N and f64.
#include <algorithm>
#include <memory>
#include <new>
#include <vector>

#include "core/parallel.h"
#include "ops/selective_scan/kernels.h"
#include "ops/selective_scan/math.h"

namespace mg::cpu {

namespace {

using scan_math::vdelta;
using scan_math::vdelta_grad;
using vmath::vexp;
using vmath::vsigmoid;

template <typename T> constexpr int kLanes = 64 / sizeof(T);

// A 64-byte aligned, zero-initialised scratch array.
template <typename T> struct Scratch {
  explicit Scratch(size_t n) : p(new (std::align_val_t(64)) T[n]()) {}
  ~Scratch() { ::operator delete[](p, std::align_val_t(64)); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  T* p;
};

// dst[0..W) = src[0..w), zero beyond.
template <typename T> inline void load_lanes(const T* src, int64_t w, T* dst) {
  constexpr int W = kLanes<T>;
  if (w == W) {
#pragma omp simd
    for (int j = 0; j < W; ++j) dst[j] = src[j];
  } else {
    for (int j = 0; j < W; ++j) dst[j] = j < w ? src[j] : T(0);
  }
}
template <typename T> inline void store_lanes(const T* src, int64_t w, T* dst) {
  for (int64_t j = 0; j < w; ++j) dst[j] = src[j];
}

// Per time step, per block: delta_t, delta_t u_t, u_t for the W lanes.
template <typename T> struct StepInputs {
  alignas(64) T u[kLanes<T>];
  alignas(64) T raw[kLanes<T>];  // delta_raw + bias
  alignas(64) T dt[kLanes<T>];
  alignas(64) T dtu[kLanes<T>];
};
template <typename T>
inline void load_step(const T* u_row, const T* delta_row, const T* bias_lanes, bool softplus,
                      int64_t w, StepInputs<T>& s) {
  constexpr int W = kLanes<T>;
  load_lanes(u_row, w, s.u);
  load_lanes(delta_row, w, s.raw);
#pragma omp simd
  for (int j = 0; j < W; ++j) {
    s.raw[j] += bias_lanes[j];
    s.dt[j] = vdelta(s.raw[j], softplus);
    s.dtu[j] = s.dt[j] * s.u[j];
  }
}

// One step of the recurrence for one block over all N states; the forward and the backward's
// replay both call this, so the replayed states are bitwise the forward's.
//   A_bar = exp(dt A);  h = A_bar h + (dt u) B_t[n];  y_acc += C_t[n] h.
// kKeepAbar: also write A_bar to A_bar_out (N*W). h_in and h_out may alias.
template <bool kKeepAbar, typename T>
inline void scan_step(const StepInputs<T>& s, const T* A_lanes, const T* B_t, const T* C_t,
                      int64_t N, const T* h_in, T* h_out, T* A_bar_out, T* y_acc) {
  constexpr int W = kLanes<T>;
  // Two partial sums of <C_t, h_t> (even and odd n) halve the FMA dependency chain; both are
  // local arrays, which GCC keeps in registers across the n loop.
  alignas(64) T y0[W], y1[W];
#pragma omp simd
  for (int j = 0; j < W; ++j) y0[j] = y1[j] = T(0);
  auto update = [&](int64_t n, T* y_part) {
    const T b = B_t[n], c = C_t[n];
    const T* a_n = A_lanes + n * W;
    const T* hi = h_in + n * W;
    T* ho = h_out + n * W;
#pragma omp simd
    for (int j = 0; j < W; ++j) {
      const T A_bar = vexp(s.dt[j] * a_n[j]);
      const T h = std::fma(A_bar, hi[j], s.dtu[j] * b);
      ho[j] = h;
      y_part[j] = std::fma(c, h, y_part[j]);
      if constexpr (kKeepAbar) A_bar_out[n * W + j] = A_bar;
    }
  };
  int64_t n = 0;
  for (; n + 1 < N; n += 2) {
    update(n, y0);
    update(n + 1, y1);
  }
  if (n < N) update(n, y0);
#pragma omp simd
  for (int j = 0; j < W; ++j) y_acc[j] += y0[j] + y1[j];
}

// One reverse step for one block over all N states (see selective_scan.h):
//   lambda = g_hat C_t[n] + carry;  dC_t[n] += g_hat h_t;  dB_t[n] += lambda dt u;
//   sum_lB += lambda B_t[n];  ddt += lambda A_n (A_bar h_{t-1});  dA_n += lambda dt (A_bar h_{t-1});
//   carry = A_bar lambda  (what step t-1 adds to its own lambda).
// The two W-lane sums (sum_lB, ddt) run as even/odd partials in local arrays (registers).
template <typename T>
inline void adjoint_step(const T* g_hat, const T* dt, const T* dtu, const T* A_lanes,
                         const T* B_t, const T* C_t, int64_t N, const T* h_t, const T* h_prev,
                         const T* A_bar, T* carry, T* dC_lanes, T* dB_lanes, T* dA_lanes,
                         T* sum_lB_out, T* ddt_out) {
  constexpr int W = kLanes<T>;
  alignas(64) T sum_lB[2][W], ddt[2][W];
#pragma omp simd
  for (int j = 0; j < W; ++j) sum_lB[0][j] = sum_lB[1][j] = ddt[0][j] = ddt[1][j] = T(0);
  auto update = [&](int64_t n, int p) {
    const T bn = B_t[n], cn = C_t[n];
    const int64_t o = n * W;
#pragma omp simd
    for (int j = 0; j < W; ++j) {
      const T lambda = std::fma(g_hat[j], cn, carry[o + j]);  // dL/dh_t
      dC_lanes[o + j] = std::fma(g_hat[j], h_t[o + j], dC_lanes[o + j]);
      dB_lanes[o + j] = std::fma(lambda, dtu[j], dB_lanes[o + j]);
      sum_lB[p][j] = std::fma(lambda, bn, sum_lB[p][j]);
      const T lam_Abar_h = lambda * (A_bar[o + j] * h_prev[o + j]);  // lambda A_bar h_{t-1}
      ddt[p][j] = std::fma(lam_Abar_h, A_lanes[o + j], ddt[p][j]);
      dA_lanes[o + j] = std::fma(lam_Abar_h, dt[j], dA_lanes[o + j]);
      carry[o + j] = A_bar[o + j] * lambda;
    }
  };
  int64_t n = 0;
  for (; n + 1 < N; n += 2) {
    update(n, 0);
    update(n + 1, 1);
  }
  if (n < N) update(n, 0);
#pragma omp simd
  for (int j = 0; j < W; ++j) {
    sum_lB_out[j] = sum_lB[0][j] + sum_lB[1][j];
    ddt_out[j] = ddt[0][j] + ddt[1][j];
  }
}

// A's rows d0..d0+w transposed to lanes: A_lanes[n*W + j] = A[(d0+j)*N + n] (0 when padded).
template <typename T>
inline void load_A_lanes(const T* A, int64_t d0, int64_t w, int64_t N, T* A_lanes) {
  constexpr int W = kLanes<T>;
  for (int64_t n = 0; n < N; ++n)
    for (int j = 0; j < W; ++j) A_lanes[n * W + j] = j < w ? A[(d0 + j) * N + n] : T(0);
}
// A (.., ED, N) state slab <-> lanes for channels d0..d0+w.
template <typename T>
inline void state_to_lanes(const T* src, int64_t d0, int64_t w, int64_t N, T* lanes) {
  constexpr int W = kLanes<T>;
  for (int64_t n = 0; n < N; ++n)
    for (int j = 0; j < W; ++j) lanes[n * W + j] = (src && j < w) ? src[(d0 + j) * N + n] : T(0);
}
template <typename T>
inline void lanes_to_state(const T* lanes, int64_t d0, int64_t w, int64_t N, T* dst) {
  constexpr int W = kLanes<T>;
  for (int64_t j = 0; j < w; ++j)
    for (int64_t n = 0; n < N; ++n) dst[(d0 + j) * N + n] = lanes[n * W + j];
}

// Work below this many state updates runs on one thread.
constexpr int64_t kParallelWork = 1 << 16;

}  // namespace

// u, delta, z, y: (B, L, ED); Bm, C: (B, L, N); A: (ED, N); D, delta_bias: (ED);
// h0, h_last: (B, ED, N); chunk_states: (B, ceil(L/T), ED, N).
template <typename T>
void selective_scan_forward(const ScanArgs<T>& a) {
  constexpr int W = kLanes<T>;
  const int64_t L = a.L, ED = a.ED, N = a.N, T_chunk = a.T;
  const int64_t num_blocks = (ED + W - 1) / W, num_chunks = scan_num_chunks(L, T_chunk);
  const int64_t tasks = a.B * num_blocks;
  const bool small = a.B * L * ED * N < kParallelWork;
  parallel_for(tasks, small ? tasks : 0, [&](int64_t task_begin, int64_t task_end) {
    Scratch<T> A_lanes(N * W), h(N * W);
    alignas(64) T bias[W], D_lanes[W], y_acc[W], z_lanes[W];
    StepInputs<T> s;
    for (int64_t task = task_begin; task < task_end; ++task) {
      const int64_t b = task / num_blocks, d0 = (task % num_blocks) * W;
      const int64_t w = std::min<int64_t>(W, ED - d0);
      load_A_lanes(a.A, d0, w, N, A_lanes.p);
      state_to_lanes(a.h0 ? a.h0 + b * ED * N : nullptr, d0, w, N, h.p);
      for (int j = 0; j < W; ++j) {
        bias[j] = (a.delta_bias && j < w) ? a.delta_bias[d0 + j] : T(0);
        D_lanes[j] = (a.D && j < w) ? a.D[d0 + j] : T(0);
      }
      for (int64_t t = 0; t < L; ++t) {
        if (a.chunk_states && t % T_chunk == 0)  // the state entering chunk t / T
          lanes_to_state(h.p, d0, w, N, a.chunk_states + (b * num_chunks + t / T_chunk) * ED * N);
        const int64_t row = (b * L + t) * ED + d0;
        load_step(a.u + row, a.delta + row, bias, a.delta_softplus, w, s);
#pragma omp simd
        for (int j = 0; j < W; ++j) y_acc[j] = D_lanes[j] * s.u[j];
        scan_step<false>(s, A_lanes.p, a.Bm + (b * L + t) * N, a.C + (b * L + t) * N, N, h.p, h.p,
                  (T*)nullptr, y_acc);
        if (a.z) {
          load_lanes(a.z + row, w, z_lanes);
#pragma omp simd
          for (int j = 0; j < W; ++j) y_acc[j] *= z_lanes[j] * vsigmoid(z_lanes[j]);
        }
        store_lanes(y_acc, w, a.y + row);
      }
      if (a.h_last) lanes_to_state(h.p, d0, w, N, a.h_last + b * ED * N);
    }
  });
}

// The forward's layouts; dy, du, ddelta, dz: (B, L, ED); dB, dC: (B, L, N); dA: (ED, N);
// dD, ddelta_bias: (ED); dh_last, dh0: (B, ED, N).
template <typename T>
void selective_scan_backward(const ScanArgs<T>& a, const ScanGrads<T>& g) {
  constexpr int W = kLanes<T>;
  const int64_t B = a.B, L = a.L, ED = a.ED, N = a.N, T_chunk = a.T;
  const int64_t num_blocks = (ED + W - 1) / W, num_chunks = scan_num_chunks(L, T_chunk);
  const int64_t NW = N * W, EDp = num_blocks * W;  // EDp: channels padded to whole blocks
  // Per-b partial sums of the parameter gradients, in lanes layout, summed in b order below.
  std::vector<T> dA_part(B * EDp * N), dD_part(B * EDp), dbias_part(B * EDp);
  const bool small = B * L * ED * N < kParallelWork;
  parallel_for(B, small ? B : 0, [&](int64_t b_begin, int64_t b_end) {
    Scratch<T> A_lanes(num_blocks * NW);        // all blocks' A, transposed once per b range
    Scratch<T> carry(num_blocks * NW);          // A_bar_{t+1} lambda_{t+1}, per block
    Scratch<T> h(std::max<int64_t>(T_chunk, 1) * NW + NW);  // h_{t0-1} .. h_{t0+T-1}
    Scratch<T> A_bar(T_chunk * NW);             // exp(delta_t A) over the chunk
    Scratch<T> dB_lanes(T_chunk * NW), dC_lanes(T_chunk * NW);
    Scratch<T> y_pre(T_chunk * W), ddt_factor(T_chunk * W);
    Scratch<T> dt_chunk(T_chunk * W), dtu_chunk(T_chunk * W), u_chunk(T_chunk * W);
    alignas(64) T bias[W], D_lanes[W], g_hat[W], zl[W], dyl[W], sum_lB[W], ddt[W], out[W];
    for (int64_t kb = 0; kb < num_blocks; ++kb) {
      const int64_t d0 = kb * W, w = std::min<int64_t>(W, ED - d0);
      load_A_lanes(a.A, d0, w, N, A_lanes.p + kb * NW);
    }
    StepInputs<T> s;
    for (int64_t b = b_begin; b < b_end; ++b) {
      T* dA_b = dA_part.data() + b * EDp * N;  // lanes layout: [block][n][lane]
      T* dD_b = dD_part.data() + b * EDp;
      T* dbias_b = dbias_part.data() + b * EDp;
      for (int64_t kb = 0; kb < num_blocks; ++kb)
        state_to_lanes(g.dh_last ? g.dh_last + b * ED * N : nullptr, kb * W,
                       std::min<int64_t>(W, ED - kb * W), N, carry.p + kb * NW);
      for (int64_t c = num_chunks - 1; c >= 0; --c) {
        const int64_t t0 = c * T_chunk, len = std::min(T_chunk, L - t0);
        std::fill(dB_lanes.p, dB_lanes.p + len * NW, T(0));
        std::fill(dC_lanes.p, dC_lanes.p + len * NW, T(0));
        for (int64_t kb = 0; kb < num_blocks; ++kb) {
          const int64_t d0 = kb * W, w = std::min<int64_t>(W, ED - d0);
          const T* A_k = A_lanes.p + kb * NW;
          for (int j = 0; j < W; ++j) {
            bias[j] = (a.delta_bias && j < w) ? a.delta_bias[d0 + j] : T(0);
            D_lanes[j] = (a.D && j < w) ? a.D[d0 + j] : T(0);
          }
          // (1) Replay the chunk's forward from its saved entering state.
          state_to_lanes(a.chunk_states + (b * num_chunks + c) * ED * N, d0, w, N, h.p);
          for (int64_t i = 0; i < len; ++i) {
            const int64_t t = t0 + i, row = (b * L + t) * ED + d0;
            load_step(a.u + row, a.delta + row, bias, a.delta_softplus, w, s);
            T* yp = y_pre.p + i * W;
#pragma omp simd
            for (int j = 0; j < W; ++j) {
              yp[j] = D_lanes[j] * s.u[j];
              ddt_factor.p[i * W + j] = vdelta_grad(s.raw[j], a.delta_softplus);
              dt_chunk.p[i * W + j] = s.dt[j];
              dtu_chunk.p[i * W + j] = s.dtu[j];
              u_chunk.p[i * W + j] = s.u[j];
            }
            scan_step<true>(s, A_k, a.Bm + (b * L + t) * N, a.C + (b * L + t) * N, N, h.p + i * NW,
                      h.p + (i + 1) * NW, A_bar.p + i * NW, yp);
          }
          // (2) The adjoint recurrence over the chunk, last step first.
          T* lam_next = carry.p + kb * NW;  // in: A_bar_{t+1} lambda_{t+1}
          T* dA_k = dA_b + kb * NW;
          for (int64_t i = len - 1; i >= 0; --i) {
            const int64_t t = t0 + i, row = (b * L + t) * ED + d0;
            const T* ul = u_chunk.p + i * W;
            const T* dtl = dt_chunk.p + i * W;
            const T* dtul = dtu_chunk.p + i * W;
            load_lanes(g.dy + row, w, dyl);
            if (a.z) {  // out = y_pre silu(z): dz, and g_hat = dL/dy_pre
              load_lanes(a.z + row, w, zl);
#pragma omp simd
              for (int j = 0; j < W; ++j) {
                const T sg = vsigmoid(zl[j]);
                out[j] = dyl[j] * y_pre.p[i * W + j] * sg * (T(1) + zl[j] * (T(1) - sg));
                g_hat[j] = dyl[j] * zl[j] * sg;
              }
              store_lanes(out, w, g.dz + row);
            } else {
#pragma omp simd
              for (int j = 0; j < W; ++j) g_hat[j] = dyl[j];
            }
#pragma omp simd
            for (int j = 0; j < W; ++j) dD_b[d0 + j] = std::fma(g_hat[j], ul[j], dD_b[d0 + j]);
            adjoint_step(g_hat, dtl, dtul, A_k, a.Bm + (b * L + t) * N, a.C + (b * L + t) * N, N,
                         h.p + (i + 1) * NW, h.p + i * NW, A_bar.p + i * NW, lam_next,
                         dC_lanes.p + i * NW, dB_lanes.p + i * NW, dA_k, sum_lB, ddt);
#pragma omp simd
            for (int j = 0; j < W; ++j) {
              out[j] = std::fma(dtl[j], sum_lB[j], D_lanes[j] * g_hat[j]);  // du
              const T draw = std::fma(ul[j], sum_lB[j], ddt[j]) * ddt_factor.p[i * W + j];
              ddt[j] = draw;
              dbias_b[d0 + j] += draw;
            }
            store_lanes(out, w, g.du + row);
            store_lanes(ddt, w, g.ddelta + row);
          }
        }
        // dB[b, t, n] and dC[b, t, n]: the lanes' sums (padded lanes hold zeros).
        for (int64_t i = 0; i < len; ++i)
          for (int64_t n = 0; n < N; ++n) {
            T sb = 0, sc = 0;
            for (int j = 0; j < W; ++j) {
              sb += dB_lanes.p[i * NW + n * W + j];
              sc += dC_lanes.p[i * NW + n * W + j];
            }
            g.dB[(b * L + t0 + i) * N + n] = sb;
            g.dC[(b * L + t0 + i) * N + n] = sc;
          }
      }
      if (g.dh0)
        for (int64_t kb = 0; kb < num_blocks; ++kb)
          lanes_to_state(carry.p + kb * NW, kb * W, std::min<int64_t>(W, ED - kb * W), N,
                         g.dh0 + b * ED * N);
    }
  });
  // Parameter gradients: per-b partials summed in b order (independent of the thread count).
  for (int64_t d = 0; d < ED; ++d) {
    const int64_t kb = d / W, j = d % W;
    for (int64_t n = 0; n < N; ++n) {
      T s = 0;
      for (int64_t b = 0; b < B; ++b) s += dA_part[b * EDp * N + kb * NW + n * W + j];
      g.dA[d * N + n] = s;
    }
    T sD = 0, sbias = 0;
    for (int64_t b = 0; b < B; ++b) {
      sD += dD_part[b * EDp + d];
      sbias += dbias_part[b * EDp + d];
    }
    if (g.dD) g.dD[d] = sD;
    if (g.ddelta_bias) g.ddelta_bias[d] = sbias;
  }
}

#define MG_INSTANTIATE(T)                                          \
  template void selective_scan_forward<T>(const ScanArgs<T>&); \
  template void selective_scan_backward<T>(const ScanArgs<T>&, const ScanGrads<T>&);
MG_INSTANTIATE(float)
MG_INSTANTIATE(double)
#undef MG_INSTANTIATE

}  // namespace mg::cpu
