// ops/selective_scan/fixed.cpp — the fast scan for f32 with the state count N a compile-time
// constant (N = 4, 8, 16, 32): the block's state h (N vectors of 16 lanes) lives in registers.
//
// Same math and saved set as fast.cpp (read that file's header first), and the same forward
// decomposition; the backward's tasks are (b, group of kGroupBlocks channel blocks) instead of
// b alone (selective_scan.h, "Parallel decomposition"). The code shape:
//   * the channel block's 16 lanes are one GCC vector (vmath::F32x16, an AVX-512 register),
//     the N-loop is unrolled at compile time, so h[n] never goes to memory in the forward;
//   * exp is vmath::vexp(F32x16) (vscalefps for the power of two: 13 instructions);
//   * the backward runs the adjoint over a chunk one group of G states at a time (the states
//     are independent given the step's g_t): the group's lambda carry and dA accumulators stay
//     in registers for the whole chunk, and h_t is carried from one step to the next, so each
//     state update reads h_{t-1} and A_bar_t and updates the dB/dC lane buffers. The per-step
//     sums over n (<lambda, B_t> and the ddelta term) are accumulated group by group in a
//     (T, 16) buffer, always in group order.
// The forward and the backward's replay call the same `scan_step`, so the replayed states
// are bitwise the forward's; every sum's order depends on the shapes only.
#include <algorithm>
#include <cstring>
#include <memory>
#include <new>
#include <vector>

#include "core/parallel.h"
#include "core/tensor.h"
#include "ops/selective_scan/kernels.h"
#include "ops/selective_scan/math.h"

namespace mg::cpu {

namespace {

using V = vmath::F32x16;
using vmath::fma;
using vmath::splat;
constexpr int W = 16;

// A 64-byte aligned, zero-initialised array of n vectors.
struct VecScratch {
  explicit VecScratch(size_t n) : p(new V[n]()) {}
  ~VecScratch() { delete[] p; }
  VecScratch(const VecScratch&) = delete;
  VecScratch& operator=(const VecScratch&) = delete;
  V* p;
};

// The lanes src[0..w) as a vector, zeros beyond.
inline V load_lanes(const float* src, int64_t w) {
  V v{};
  if (w == W) std::memcpy(&v, src, sizeof(V));
  else std::memcpy(&v, src, size_t(w) * sizeof(float));
  return v;
}
inline void store_lanes(V v, int64_t w, float* dst) {
  if (w == W) std::memcpy(dst, &v, sizeof(V));  // one vector store (a variable size calls libc)
  else std::memcpy(dst, &v, size_t(w) * sizeof(float));
}

// Per-step inputs of one block: u, raw = delta_raw + bias, delta = softplus(raw) or raw,
// delta*u (vmath's 16-lane softplus: the scalar algorithm on whole vectors).
// With kGrad (the backward's replay), also d(delta)/d(raw) = sigmoid(raw) (1 above the
// softplus threshold, or without softplus), from the same exp as the softplus.
struct Step { V u, raw, dt, dtu, dfac; };
template <bool kGrad = false>
inline Step prep_step(const float* u_row, const float* delta_row, V bias, bool softplus,
                      int64_t w) {
  Step s;
  s.u = load_lanes(u_row, w);
  s.raw = load_lanes(delta_row, w) + bias;
  if (!kGrad) {
    s.dt = scan_math::vdelta(s.raw, softplus);
  } else if (!softplus) {
    s.dt = s.raw;
    s.dfac = splat(1.0f);
  } else {  // bitwise scan_math::vdelta and vdelta_grad
    V sig;
    vmath::vsoftplus_sigmoid(s.raw, s.dt, sig);
    s.dfac = s.raw > splat(float(vmath::kSoftplusThreshold)) ? splat(1.0f) : sig;
  }
  s.dtu = s.dt * s.u;
  return s;
}

// One step for all NS states: A_bar = exp(dt A); h = A_bar h + (dt u) B_t[n]; returns
// <C_t, h> as even-n + odd-n partial sums: the order of the generic kernel and of the
// per-token step (step.cpp), which reproduces these numbers. Abar_out: keep A_bar.
template <int NS, bool kKeepAbar>
[[gnu::always_inline]] inline V scan_step(const Step& s, const V* a, const float* B_t,
                                          const float* C_t, V* h, V* Abar_out) {
  constexpr int P = 2;
  V y[P];
#pragma GCC unroll 4
  for (int p = 0; p < P; ++p) y[p] = V{};
#pragma GCC unroll 64
  for (int n = 0; n < NS; ++n) {
    const V A_bar = vmath::vexp(s.dt * a[n]);
    h[n] = fma(A_bar, h[n], s.dtu * B_t[n]);
    y[n % P] = fma(splat(C_t[n]), h[n], y[n % P]);
    if constexpr (kKeepAbar) Abar_out[n] = A_bar;
  }
  V sum = y[0];
#pragma GCC unroll 4
  for (int p = 1; p < P; ++p) sum += y[p];
  return sum;
}

// (.., ED, N) state slab <-> NS vectors for channels d0..d0+w (zeros for padded lanes).
template <int NS>
void state_to_vecs(const float* src, int64_t d0, int64_t w, V* v) {
  alignas(64) float lanes[NS][W] = {};
  if (src)
    for (int64_t j = 0; j < w; ++j)
      for (int n = 0; n < NS; ++n) lanes[n][j] = src[(d0 + j) * NS + n];
  std::memcpy(v, lanes, sizeof(lanes));
}
template <int NS>
void vecs_to_state(const V* v, int64_t d0, int64_t w, float* dst) {
  alignas(64) float lanes[NS][W];
  std::memcpy(lanes, v, sizeof(lanes));
  for (int64_t j = 0; j < w; ++j)
    for (int n = 0; n < NS; ++n) dst[(d0 + j) * NS + n] = lanes[n][j];
}
inline V param_lanes(const float* p, int64_t d0, int64_t w) {
  return p ? load_lanes(p + d0, w) : V{};
}
inline V gate(V y_pre, V z) { return y_pre * (z * vmath::vsigmoid(z)); }  // y_pre * silu(z)

constexpr int64_t kParallelWork = 1 << 16;
// Channel blocks per backward task (128 channels): fixed, so sums do not depend on threads.
constexpr int64_t kGroupBlocks = 8;
// A block reads one 64-byte line per (B, L, ED) stream per step, ED*4 bytes apart: fetch the
// line kAhead steps ahead (the hardware prefetcher alone left ~20% of the forward waiting).
constexpr int64_t kAhead = 16;
inline void prefetch_rows(const float* p, int64_t stride) { __builtin_prefetch(p + kAhead * stride); }

// u, delta, z, y: (B, L, ED); Bm, C: (B, L, NS); A: (ED, NS); D, delta_bias: (ED);
// h0, h_last: (B, ED, NS); chunk_states: (B, ceil(L/T), ED, NS).
template <int NS>
void fwd_fixed(const ScanArgs<float>& args) {
  const int64_t L = args.L, ED = args.ED, T_chunk = args.T;
  const int64_t num_blocks = (ED + W - 1) / W, num_chunks = scan_num_chunks(L, T_chunk);
  const int64_t tasks = args.B * num_blocks;
  const bool small = args.B * L * ED * NS < kParallelWork;
  parallel_for(tasks, small ? tasks : 0, [&](int64_t task_begin, int64_t task_end) {
    for (int64_t task = task_begin; task < task_end; ++task) {
      const int64_t b = task / num_blocks, d0 = (task % num_blocks) * W;
      const int64_t w = std::min<int64_t>(W, ED - d0);
      V a[NS], h[NS];
      state_to_vecs<NS>(args.A, d0, w, a);
      state_to_vecs<NS>(args.h0 ? args.h0 + b * ED * NS : nullptr, d0, w, h);
      const V bias = param_lanes(args.delta_bias, d0, w), Dl = param_lanes(args.D, d0, w);
      for (int64_t t = 0; t < L; ++t) {
        if (args.chunk_states && t % T_chunk == 0)  // the state entering chunk t / T
          vecs_to_state<NS>(h, d0, w,
                            args.chunk_states + (b * num_chunks + t / T_chunk) * ED * NS);
        const int64_t row = (b * L + t) * ED + d0;
        prefetch_rows(args.u + row, ED);
        prefetch_rows(args.delta + row, ED);
        if (args.z) prefetch_rows(args.z + row, ED);
        const Step s = prep_step(args.u + row, args.delta + row, bias, args.delta_softplus, w);
        const float* B_t = args.Bm + (b * L + t) * NS;
        const float* C_t = args.C + (b * L + t) * NS;
        // y_pre = D u + <C_t, h> as one explicit fma: what GCC made of `Dl * s.u + ...` here
        // in optimised builds (it contracts a*b + c), now the same in every build, in the
        // backward's replay (which had rounded D u first) and in the per-token step.
        V y_pre = fma(Dl, s.u, scan_step<NS, false>(s, a, B_t, C_t, h, nullptr));
        if (args.z) y_pre = gate(y_pre, load_lanes(args.z + row, w));
        store_lanes(y_pre, w, args.y + row);
      }
      if (args.h_last) vecs_to_state<NS>(h, d0, w, args.h_last + b * ED * NS);
    }
  });
}

// The adjoint over one chunk for states [n0, n0 + G) of one block (see the file header).
//   lambda = g C_t[n] + carry;  dC_t[n] += g h_t;  dB_t[n] += lambda dt u;  sum_lB += lambda B_t[n]
//   ddt += lambda A_n (A_bar h_{t-1});  dA_n += lambda dt (A_bar h_{t-1});  carry = A_bar lambda
template <int NS, int G>
[[gnu::always_inline]] inline void adjoint_group(
    int n0, int64_t len, const float* Bc, const float* Cc, const V* a, const V* hbuf,
    const V* abar, const V* g, const V* dt, const V* dtu, V* carry, V* dA, V* dB_l, V* dC_l,
    V* sum_lB, V* ddt) {
  V lam_c[G], dA_acc[G], h_t[G];
#pragma GCC unroll 64
  for (int k = 0; k < G; ++k) {
    lam_c[k] = carry[n0 + k];
    dA_acc[k] = dA[n0 + k];
    h_t[k] = hbuf[len * NS + n0 + k];
  }
  for (int64_t i = len - 1; i >= 0; --i) {
    const V gi = g[i], dti = dt[i], dtui = dtu[i];
    const float* B_t = Bc + i * NS;
    const float* C_t = Cc + i * NS;
    V slb[2] = {V{}, V{}}, dd[2] = {V{}, V{}};
#pragma GCC unroll 64
    for (int k = 0; k < G; ++k) {
      const int n = n0 + k;
      const V hp = hbuf[i * NS + n], Ab = abar[i * NS + n];
      const V lam = fma(gi, splat(C_t[n]), lam_c[k]);
      dC_l[i * NS + n] = fma(gi, h_t[k], dC_l[i * NS + n]);
      dB_l[i * NS + n] = fma(lam, dtui, dB_l[i * NS + n]);
      slb[k & 1] = fma(lam, splat(B_t[n]), slb[k & 1]);
      const V lah = lam * (Ab * hp);
      dd[k & 1] = fma(lah, a[n], dd[k & 1]);
      dA_acc[k] = fma(lah, dti, dA_acc[k]);
      lam_c[k] = Ab * lam;
      h_t[k] = hp;
    }
    if (n0 == 0) {
      sum_lB[i] = slb[0] + slb[1];
      ddt[i] = dd[0] + dd[1];
    } else {
      sum_lB[i] += slb[0] + slb[1];
      ddt[i] += dd[0] + dd[1];
    }
  }
#pragma GCC unroll 64
  for (int k = 0; k < G; ++k) {
    carry[n0 + k] = lam_c[k];
    dA[n0 + k] = dA_acc[k];
  }
}

// The forward's layouts; dy, du, ddelta, dz: (B, L, ED); dB, dC: (B, L, NS); dA: (ED, NS);
// dD, ddelta_bias: (ED); dh_last, dh0: (B, ED, NS). (`args`: `a` names A's vectors here.)
template <int NS>
void bwd_fixed(const ScanArgs<float>& args, const ScanGrads<float>& grads) {
  const int64_t B = args.B, L = args.L, ED = args.ED, T_chunk = args.T;
  constexpr int G = NS < 8 ? NS : 8;  // states per adjoint group
  const int64_t num_blocks = (ED + W - 1) / W, num_chunks = scan_num_chunks(L, T_chunk);
  // Tasks: (b, channel group of kGroupBlocks blocks), so a batch of 1 still uses every core.
  // The groups are fixed by ED alone, and each group's dB/dC sums go to their own slice of
  // dBC_part, added in group order at the end: results do not depend on the thread count.
  const int64_t groups = (num_blocks + kGroupBlocks - 1) / kGroupBlocks;
  // (A tensor, so the allocator's statistics count it: 2*ED/128*B*L*N floats.)
  Tensor dBC_tensor = groups > 1 ? Tensor::empty({2 * groups * B * L * NS}, DType::f32) : Tensor();
  float* dBC_part = groups > 1 ? dBC_tensor.data<float>() : nullptr;
  // Per-b partials of the parameter gradients (vectors: [b][block][n], [b][block]).
  std::vector<V> dA_part(B * num_blocks * NS), dD_part(B * num_blocks),
      dbias_part(B * num_blocks);
  const bool small = B * L * ED * NS < kParallelWork;
  const int64_t tasks = B * groups;
  parallel_for(tasks, small ? tasks : 0, [&](int64_t task_begin, int64_t task_end) {
    VecScratch a_grp(kGroupBlocks * NS), carry(kGroupBlocks * NS);
    VecScratch hbuf((T_chunk + 1) * NS), abar(T_chunk * NS), dB_l(T_chunk * NS),
        dC_l(T_chunk * NS);
    VecScratch st(T_chunk * 8);  // per-step vectors, 8 kinds (see the pointers below)
    V* u_c = st.p;
    V* dt_c = u_c + T_chunk;
    V* dtu_c = dt_c + T_chunk;
    V* dfac_c = dtu_c + T_chunk;  // d(delta)/d(raw)
    V* ypre_c = dfac_c + T_chunk;
    V* g_c = ypre_c + T_chunk;
    V* slb_c = g_c + T_chunk;
    V* ddt_c = slb_c + T_chunk;
    for (int64_t task = task_begin; task < task_end; ++task) {
      const int64_t b = task / groups, grp = task % groups;
      const int64_t kb0 = grp * kGroupBlocks, kb1 = std::min(num_blocks, kb0 + kGroupBlocks);
      V* dA_b = dA_part.data() + b * num_blocks * NS;
      for (int64_t kb = kb0; kb < kb1; ++kb) {
        const int64_t w = std::min<int64_t>(W, ED - kb * W);
        state_to_vecs<NS>(args.A, kb * W, w, a_grp.p + (kb - kb0) * NS);
        state_to_vecs<NS>(grads.dh_last ? grads.dh_last + b * ED * NS : nullptr, kb * W, w,
                          carry.p + (kb - kb0) * NS);
      }
      // This task's dB/dC rows: the outputs themselves when there is one group.
      float* dB_dst = groups == 1 ? grads.dB + b * L * NS : dBC_part + (grp * B + b) * L * NS;
      float* dC_dst =
          groups == 1 ? grads.dC + b * L * NS : dBC_part + ((groups + grp) * B + b) * L * NS;
      for (int64_t c = num_chunks - 1; c >= 0; --c) {
        const int64_t t0 = c * T_chunk, len = std::min(T_chunk, L - t0);
        std::fill(dB_l.p, dB_l.p + len * NS, V{});
        std::fill(dC_l.p, dC_l.p + len * NS, V{});
        const float* Bc = args.Bm + (b * L + t0) * NS;
        const float* Cc = args.C + (b * L + t0) * NS;
        for (int64_t kb = kb0; kb < kb1; ++kb) {
          const int64_t d0 = kb * W, w = std::min<int64_t>(W, ED - d0);
          const V* a = a_grp.p + (kb - kb0) * NS;
          const V bias = param_lanes(args.delta_bias, d0, w), Dl = param_lanes(args.D, d0, w);
          // (1) Replay the chunk's forward from its saved entering state.
          V h[NS];
          state_to_vecs<NS>(args.chunk_states + (b * num_chunks + c) * ED * NS, d0, w, h);
#pragma GCC unroll 64
          for (int n = 0; n < NS; ++n) hbuf.p[n] = h[n];
          for (int64_t i = 0; i < len; ++i) {
            const int64_t row = (b * L + t0 + i) * ED + d0;
            prefetch_rows(args.u + row, ED);
            prefetch_rows(args.delta + row, ED);
            const Step s =
                prep_step<true>(args.u + row, args.delta + row, bias, args.delta_softplus, w);
            ypre_c[i] = fma(Dl, s.u, scan_step<NS, true>(s, a, Bc + i * NS, Cc + i * NS, h,
                                                         abar.p + i * NS));
#pragma GCC unroll 64
            for (int n = 0; n < NS; ++n) hbuf.p[(i + 1) * NS + n] = h[n];
            u_c[i] = s.u;
            dt_c[i] = s.dt;
            dtu_c[i] = s.dtu;
            dfac_c[i] = s.dfac;
          }
          // (2) The gate: g = dL/dy_pre, dz, dD.
          V dD_acc = dD_part[b * num_blocks + kb];
          for (int64_t i = 0; i < len; ++i) {
            const int64_t row = (b * L + t0 + i) * ED + d0;
            prefetch_rows(grads.dy + row, ED);
            if (args.z) prefetch_rows(args.z + row, ED);
            const V dyl = load_lanes(grads.dy + row, w);
            if (args.z) {  // y = y_pre silu(z): g = dy silu(z), dz = dy y_pre silu'(z)
              const V zv = load_lanes(args.z + row, w), sg = vmath::vsigmoid(zv);
              store_lanes(dyl * ypre_c[i] * sg * (splat(1.0f) + zv * (splat(1.0f) - sg)), w,
                          grads.dz + row);
              g_c[i] = dyl * zv * sg;
            } else {
              g_c[i] = dyl;
            }
            dD_acc = fma(g_c[i], u_c[i], dD_acc);
          }
          dD_part[b * num_blocks + kb] = dD_acc;
          // (3) The adjoint, G states at a time.
#pragma GCC unroll 8
          for (int n0 = 0; n0 < NS; n0 += G)
            adjoint_group<NS, G>(n0, len, Bc, Cc, a, hbuf.p, abar.p, g_c, dt_c, dtu_c,
                                 carry.p + (kb - kb0) * NS, dA_b + kb * NS, dB_l.p, dC_l.p,
                                 slb_c, ddt_c);
          // (4) du, d(delta_raw), d(delta_bias).
          V dbias_acc = dbias_part[b * num_blocks + kb];
          for (int64_t i = 0; i < len; ++i) {
            const int64_t row = (b * L + t0 + i) * ED + d0;
            store_lanes(fma(dt_c[i], slb_c[i], Dl * g_c[i]), w, grads.du + row);
            const V draw = fma(u_c[i], slb_c[i], ddt_c[i]) * dfac_c[i];
            dbias_acc += draw;
            store_lanes(draw, w, grads.ddelta + row);
          }
          dbias_part[b * num_blocks + kb] = dbias_acc;
        }
        // dB[b, t, n], dC[b, t, n] (this group's part): the lanes' sums (padded lanes hold 0).
        for (int64_t i = 0; i < len; ++i)
          for (int n = 0; n < NS; ++n) {
            alignas(64) float lb[W], lc[W];
            std::memcpy(lb, &dB_l.p[i * NS + n], sizeof(V));
            std::memcpy(lc, &dC_l.p[i * NS + n], sizeof(V));
            float sb = 0, sc = 0;
            for (int j = 0; j < W; ++j) {
              sb += lb[j];
              sc += lc[j];
            }
            dB_dst[(t0 + i) * NS + n] = sb;
            dC_dst[(t0 + i) * NS + n] = sc;
          }
      }
      if (grads.dh0)
        for (int64_t kb = kb0; kb < kb1; ++kb)
          vecs_to_state<NS>(carry.p + (kb - kb0) * NS, kb * W, std::min<int64_t>(W, ED - kb * W),
                            grads.dh0 + b * ED * NS);
    }
  });
  if (groups > 1)  // dB, dC = the groups' parts, added in group order
    parallel_for(B * L, small ? B * L : 0, [&](int64_t r_begin, int64_t r_end) {
      for (int64_t r = r_begin; r < r_end; ++r)
        for (int n = 0; n < NS; ++n) {
          float sb = 0, sc = 0;
          for (int64_t grp = 0; grp < groups; ++grp) {
            sb += dBC_part[(grp * B * L + r) * NS + n];
            sc += dBC_part[((groups + grp) * B * L + r) * NS + n];
          }
          grads.dB[r * NS + n] = sb;
          grads.dC[r * NS + n] = sc;
        }
    });
  // Parameter gradients: per-b partials summed in b order (independent of the thread count).
  for (int64_t kb = 0; kb < num_blocks; ++kb) {
    const int64_t d0 = kb * W, w = std::min<int64_t>(W, ED - d0);
    V sA[NS] = {}, sD{}, sbias{};
    for (int64_t b = 0; b < B; ++b) {
      for (int n = 0; n < NS; ++n) sA[n] += dA_part[(b * num_blocks + kb) * NS + n];
      sD += dD_part[b * num_blocks + kb];
      sbias += dbias_part[b * num_blocks + kb];
    }
    vecs_to_state<NS>(sA, d0, w, grads.dA);
    if (grads.dD) store_lanes(sD, w, grads.dD + d0);
    if (grads.ddelta_bias) store_lanes(sbias, w, grads.ddelta_bias + d0);
  }
}

}  // namespace

// N is a template argument: one instantiation per N of kernels.h's fixed_kernel_supports;
// choose_scan_kernel never sends another N here.
[[noreturn]] static void unsupported(int64_t N) {
  throw Error(detail::cat("selective_scan (fixed CPU kernel): N must be 4, 8, 16 or 32, got ", N,
                          " (the generic fast kernel takes any N)"));
}

void selective_scan_fixed_forward(const ScanArgs<float>& a) {
  switch (a.N) {
    case 4: return fwd_fixed<4>(a);
    case 8: return fwd_fixed<8>(a);
    case 16: return fwd_fixed<16>(a);
    case 32: return fwd_fixed<32>(a);
  }
  unsupported(a.N);
}

void selective_scan_fixed_backward(const ScanArgs<float>& a, const ScanGrads<float>& g) {
  switch (a.N) {
    case 4: return bwd_fixed<4>(a, g);
    case 8: return bwd_fixed<8>(a, g);
    case 16: return bwd_fixed<16>(a, g);
    case 32: return bwd_fixed<32>(a, g);
  }
  unsupported(a.N);
}

}  // namespace mg::cpu
