// ops/selective_scan_kernels.h — the CPU kernels of the selective scan on raw pointers.
//
// The math, the saved set and the parallel decomposition are explained in ops/selective_scan.h
// and docs/selective_scan.md. A future `mg::cuda::` twin takes exactly these arguments.
//
// Layouts (all contiguous, row-major):
//   u, delta, z, y, du, ddelta, dz, dy : (batch, length, channels)        = (B, L, ED)
//   Bm, C, dB, dC                      : (batch, length, states)          = (B, L, N)
//   A, dA                              : (channels, states)               = (ED, N)
//   D, delta_bias, dD, ddelta_bias     : (channels)
//   h0, h_last, dh0, dh_last           : (batch, channels, states)        = (B, ED, N)
//   chunk_states                       : (batch, num_chunks(L, T), channels, states): the state
//                                        BEFORE each chunk of T steps (chunk 0: h0 or zeros).
// Optional inputs are nullptr: D, z, delta_bias, h0 (then h0 = 0), dh_last (then 0).
// Optional outputs are nullptr: h_last, chunk_states (forward), dz (when z is null), dh0.
// Every gradient output is written (=), never accumulated into.
#pragma once
#include <cstdint>

namespace mg::cpu {

inline int64_t scan_num_chunks(int64_t length, int64_t chunk) {
  return (length + chunk - 1) / chunk;
}

// ---- the fast fused kernel (vectorised over channels, OpenMP over batch x channel blocks) --
template <typename T>
void selective_scan_fwd(const T* u, const T* delta, const T* A, const T* Bm, const T* C,
                        const T* D, const T* z, const T* delta_bias, bool delta_softplus,
                        const T* h0, T* y, T* h_last, T* chunk_states, int64_t batch,
                        int64_t length, int64_t channels, int64_t states, int64_t chunk);

template <typename T>
void selective_scan_bwd(const T* u, const T* delta, const T* A, const T* Bm, const T* C,
                        const T* D, const T* z, const T* delta_bias, bool delta_softplus,
                        const T* chunk_states, const T* dy, const T* dh_last, T* du, T* ddelta,
                        T* dA, T* dB, T* dC, T* dD, T* dz, T* ddelta_bias, T* dh0, int64_t batch,
                        int64_t length, int64_t channels, int64_t states, int64_t chunk);

// ---- the same for f32 with N in {4, 8, 16, 32} known at compile time (the state in registers;
// ops/selective_scan_fixed.cpp). They return false and do nothing for any other N; the fast
// kernels above call them first.
bool selective_scan_fwd_fixed(const float* u, const float* delta, const float* A,
                              const float* Bm, const float* C, const float* D, const float* z,
                              const float* delta_bias, bool delta_softplus, const float* h0,
                              float* y, float* h_last, float* chunk_states, int64_t batch,
                              int64_t length, int64_t channels, int64_t states, int64_t chunk);
bool selective_scan_bwd_fixed(const float* u, const float* delta, const float* A,
                              const float* Bm, const float* C, const float* D, const float* z,
                              const float* delta_bias, bool delta_softplus,
                              const float* chunk_states, const float* dy, const float* dh_last,
                              float* du, float* ddelta, float* dA, float* dB, float* dC,
                              float* dD, float* dz, float* ddelta_bias, float* dh0,
                              int64_t batch, int64_t length, int64_t channels, int64_t states,
                              int64_t chunk);

// ---- the plain sequential loop: one (b, d) at a time, scalar std:: math, the readable spec --
// The backward keeps one channel's states h_0..h_L (L+1)*N values at a time, nothing more.
template <typename T>
void selective_scan_sequential_fwd(const T* u, const T* delta, const T* A, const T* Bm,
                                   const T* C, const T* D, const T* z, const T* delta_bias,
                                   bool delta_softplus, const T* h0, T* y, T* h_last,
                                   int64_t batch, int64_t length, int64_t channels,
                                   int64_t states);

template <typename T>
void selective_scan_sequential_bwd(const T* u, const T* delta, const T* A, const T* Bm,
                                   const T* C, const T* D, const T* z, const T* delta_bias,
                                   bool delta_softplus, const T* h0, const T* dy,
                                   const T* dh_last, T* du, T* ddelta, T* dA, T* dB, T* dC,
                                   T* dD, T* dz, T* ddelta_bias, T* dh0, int64_t batch,
                                   int64_t length, int64_t channels, int64_t states);

}  // namespace mg::cpu
