// ops/selective_scan/scan_args.h — the selective scan's arguments, defined once.
//
// Every scan kernel — the CPU sequential spec, the fast and N-specialised CPU kernels, the
// per-token step, every CUDA version — takes these two structs and nothing else:
//
//   selective_scan_forward(const ScanArgs<T, S>& a)
//   selective_scan_backward(const ScanArgs<T, S>& a, const ScanGrads<T, S>& g)
//
// so the parameter list is written here and nowhere else (ops/selective_scan/kernels.h
// declares the kernels). The op (ops/selective_scan/selective_scan.cpp) fills one ScanArgs
// from its tensors, runs the forward with it, and fills it again from the same tensors for the
// backward. Pointers are host or device pointers, as the kernel's device requires.
//
// Two element types: T for the activations that stream through the scan (u, delta, z, B, C,
// y and their gradients), S for the parameters and the state (A, D, delta_bias, h0, h_last,
// the saved chunk states and their gradients). S = T on the f32 and f64 paths; mixed
// precision reads and writes bf16 activations while the state and every accumulation stay
// f32 (T = bf16, S = float).
//
// Layouts (contiguous, row-major; the glossary's letters):
//   u, delta, z, y, du, ddelta, dz, dy : (B, L, ED)
//   Bm, C, dB, dC                      : (B, L, N)       (Bm: the matrix B, not the batch)
//   A, dA                              : (ED, N)
//   D, delta_bias, dD, ddelta_bias     : (ED)
//   h0, h_last, dh0, dh_last           : (B, ED, N)
//   chunk_states                       : (B, ceil(L / T), ED, N): the state ENTERING each
//                                        chunk of T steps (chunk 0: h0, or zeros)
// Optional inputs are nullptr: D, z, delta_bias, h0 (then h0 = 0), dh_last (then 0).
// Optional outputs are nullptr: h_last, chunk_states (forward: nothing is saved), dz (when z
// is null), dD, ddelta_bias, dh0. The backward reads chunk_states (the forward's output) and
// h0; every gradient output is written (=), never accumulated into.
//
// (In the structs below the element types are spelled Act and State, because the chunk
// length is the member T: C++ forbids a member named like a template parameter.)
#pragma once
#include <cstdint>

namespace mg {

template <typename Act, typename State = Act>
struct ScanArgs {
  // ---- sizes -------------------------------------------------------------------------
  int64_t B = 0;   // batch
  int64_t L = 0;   // length (time steps)
  int64_t ED = 0;  // channels (d_inner = expand * d_model)
  int64_t N = 0;   // states per channel (d_state)
  int64_t T = 64;  // chunk: steps between saved states (the backward's recomputation unit)
  // ---- inputs ------------------------------------------------------------------------
  const Act* u = nullptr;             // (B, L, ED)
  const Act* delta = nullptr;         // (B, L, ED) raw: softplus(delta + delta_bias) is the step
  const State* A = nullptr;           // (ED, N)    (A = -exp(A_log): negative)
  const Act* Bm = nullptr;            // (B, L, N)
  const Act* C = nullptr;             // (B, L, N)
  const State* D = nullptr;           // (ED)       optional skip
  const Act* z = nullptr;             // (B, L, ED) optional gate: y *= silu(z)
  const State* delta_bias = nullptr;  // (ED)       optional
  bool delta_softplus = true;
  const State* h0 = nullptr;          // (B, ED, N) optional initial state
  // ---- forward outputs (the backward reads chunk_states) -------------------------------
  Act* y = nullptr;                   // (B, L, ED)
  State* h_last = nullptr;            // (B, ED, N) optional
  State* chunk_states = nullptr;      // (B, ceil(L/T), ED, N) optional: saved for the backward
};

template <typename Act, typename State = Act>
struct ScanGrads {
  const Act* dy = nullptr;            // (B, L, ED)
  const State* dh_last = nullptr;     // (B, ED, N) optional (0)
  Act* du = nullptr;                  // (B, L, ED)
  Act* ddelta = nullptr;              // (B, L, ED) gradient of the RAW delta
  State* dA = nullptr;                // (ED, N)
  Act* dB = nullptr;                  // (B, L, N)
  Act* dC = nullptr;                  // (B, L, N)
  State* dD = nullptr;                // (ED)       when D is given
  Act* dz = nullptr;                  // (B, L, ED) when z is given
  State* ddelta_bias = nullptr;       // (ED)       when delta_bias is given
  State* dh0 = nullptr;               // (B, ED, N) when h0 is given
};

// Number of saved chunk states per (b, d): ceil(L / T).
// (constexpr: CUDA device code may call it too.)
constexpr int64_t scan_num_chunks(int64_t L, int64_t T) { return (L + T - 1) / T; }

}  // namespace mg
