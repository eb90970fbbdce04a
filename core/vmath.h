// core/vmath.h — vectorisable elementwise math: exp, log1p on [0, 1], softplus, sigmoid, silu.
//
// Two forms of the same arithmetic:
//   * scalar templates over float / double, written so that GCC vectorises them inside
//     `#pragma omp simd` loops (no libm calls except std::fma, which is one instruction; no
//     branches: selects only);
//   * `vexp(F32x16)`: 16 f32 lanes as one GCC vector (one AVX-512 register), for kernels that
//     keep their state in registers (ops/selective_scan/fixed.cpp). It performs exactly the
//     scalar float algorithm lane by lane, so both give bitwise the same results (tested).
// Multiply-adds are explicit fma (GCC does not contract a*b+c in ISO C++ mode), so every
// caller that evaluates the same expression rounds identically.
//
//   vexp(x)          e^x by range reduction: k = round(x / ln2) (one fma against 1.5*2^mant),
//                    r = x - k ln2 (Cody-Waite, two fmas), |r| <= ln2/2, e^r by a polynomial in
//                    Horner form, then e^x = p * 2^k with ONE rounding (f32 lanes: AVX-512
//                    vscalefps; scalar: p * 2^(k - k/2) * 2^(k/2), the first product exact), so
//                    results that underflow go through IEEE gradual underflow to exactly 0 and
//                    results that overflow become +inf. Arguments are clamped to [-104, 89]
//                    (f32) / [-746, 710] (f64) first, beyond which e^x is 0 / inf anyway; NaN
//                    stays NaN.
//                    Polynomial: f32, degree-6 minimax for the relative error on
//                    [-ln2/2, ln2/2] (Lawson/IRLS fit, 1.9e-9 before f32 rounding); f64, Taylor
//                    degree 13. Measured max error against exp in double over [-87.3, 88.7]
//                    (tests/test_selective_scan.cpp): f32 8.8e-8 relative = 1.04 ulp of the
//                    result (every float in [-1, 1], every 8th float elsewhere); f64 2.2e-16.
//   vlog1p_unit(e)   ln(1 + e) for e in [0, 1]: with s = e / (2 + e) in [0, 1/3],
//                    ln(1 + e) = 2 atanh(s) = 2 s (1 + s^2/3 + s^4/5 + ...), 8 terms in f32 and
//                    18 in f64 (truncation < 1e-9 resp. 1e-17 relative). No cancellation for tiny
//                    e (s is computed from e directly, never from 1 + e).
//   vsoftplus(x)     ln(1 + e^x) = max(x, 0) + ln(1 + e^-|x|), and x itself above 20 (the
//                    threshold of PyTorch's softplus, used in both directions of the scan).
//   vsigmoid(x)      1 / (1 + e^-x) from e = e^-|x| <= 1: 1/(1+e) for x >= 0, e/(1+e) otherwise;
//                    never overflows.
//   vsilu(x)         x * vsigmoid(x).
#pragma once
#include <bit>
#include <cmath>
#include <cstdint>

#ifdef __AVX512F__
#include <immintrin.h>
#endif

namespace mg::vmath {

constexpr double kSoftplusThreshold = 20.0;

template <typename T> struct ExpTraits;
template <> struct ExpTraits<float> {
  using Int = int32_t;
  static constexpr int kMantissaBits = 23, kBias = 127, kDegree = 6, kAtanhTerms = 8;
  static constexpr float kLo = -104.0f, kHi = 89.0f;
  static constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: fma(x, log2e, kRound) - kRound
  static constexpr float kLn2Hi = 0.693145751953125f;   // ln2 split so that k*kLn2Hi is exact
  static constexpr float kLn2Lo = 1.428606765330187e-06f;
  // Minimax (relative error) polynomial of e^r on [-ln2/2, ln2/2], coefficients of r^0..r^6.
  static constexpr float kPoly[kDegree + 1] = {
      1.0f, 1.0f, 0.49999991059303284f, 0.16666419804096222f, 0.04166822507977486f,
      0.008374815806746483f, 0.0013836846919730306f};
};
template <> struct ExpTraits<double> {
  using Int = int64_t;
  static constexpr int kMantissaBits = 52, kBias = 1023, kDegree = 13, kAtanhTerms = 18;
  static constexpr double kLo = -746.0, kHi = 710.0;
  static constexpr double kRound = 6755399441055744.0;  // 1.5 * 2^52
  static constexpr double kLn2Hi = 6.93147180369123816490e-01;
  static constexpr double kLn2Lo = 1.90821492927058770002e-10;
  static constexpr double kPoly[kDegree + 1] = {  // Taylor: 1 / i!
      1.0, 1.0, 1.0 / 2, 1.0 / 6, 1.0 / 24, 1.0 / 120, 1.0 / 720, 1.0 / 5040, 1.0 / 40320,
      1.0 / 362880, 1.0 / 3628800, 1.0 / 39916800, 1.0 / 479001600, 1.0 / 6227020800};
};

// 2^i as a T, for i within the normal exponent range.
template <typename T>
[[gnu::always_inline]] inline T pow2i(typename ExpTraits<T>::Int i) {
  using Tr = ExpTraits<T>;
  return std::bit_cast<T>(static_cast<typename Tr::Int>((i + Tr::kBias)) << Tr::kMantissaBits);
}

template <typename T>
[[gnu::always_inline]] inline T vexp(T x) {
  using Tr = ExpTraits<T>;
  x = x < Tr::kLo ? Tr::kLo : x;
  x = x > Tr::kHi ? Tr::kHi : x;
  const T kf = std::fma(x, T(1.4426950408889634), Tr::kRound) - Tr::kRound;  // round(x/ln2)
  T r = std::fma(-kf, Tr::kLn2Hi, x);  // exact (Cody-Waite): kf * kLn2Hi has few bits
  r = std::fma(-kf, Tr::kLn2Lo, r);
  T p = Tr::kPoly[Tr::kDegree];
#pragma GCC unroll 16
  for (int i = Tr::kDegree - 1; i >= 0; --i) p = std::fma(p, r, Tr::kPoly[i]);
  const auto k = static_cast<typename Tr::Int>(kf);
  const auto k_half = k >> 1;
  return p * pow2i<T>(k - k_half) * pow2i<T>(k_half);
}

template <typename T>
[[gnu::always_inline]] inline T vlog1p_unit(T e) {
  using Tr = ExpTraits<T>;
  const T s = e / (T(2) + e);
  const T s2 = s * s;
  T p = T(1) / T(2 * Tr::kAtanhTerms - 1);
#pragma GCC unroll 20
  for (int i = Tr::kAtanhTerms - 2; i >= 0; --i) p = std::fma(s2, p, T(1) / T(2 * i + 1));
  return T(2) * s * p;
}

template <typename T>
[[gnu::always_inline]] inline T vsoftplus(T x) {
  const T ax = x < T(0) ? -x : x;
  const T sp = (x > T(0) ? x : T(0)) + vlog1p_unit(vexp(-ax));
  return x > T(kSoftplusThreshold) ? x : sp;
}

template <typename T>
[[gnu::always_inline]] inline T vsigmoid(T x) {
  const T e = vexp(x < T(0) ? x : -x);  // e^-|x|
  const T inv = T(1) / (T(1) + e);
  return x >= T(0) ? inv : e * inv;
}

template <typename T>
[[gnu::always_inline]] inline T vsilu(T x) {
  return x * vsigmoid(x);
}

// ---- 16 f32 lanes as one GCC vector ------------------------------------------------------
// Without AVX-512 the same code compiles to narrower vectors (GCC splits the operations);
// the fallbacks below compute the identical per-lane results.
using F32x16 = float __attribute__((vector_size(64)));  // 64-byte aligned by nature

[[gnu::always_inline]] inline F32x16 splat(float v) {
#ifdef __AVX512F__
  return _mm512_set1_ps(v);  // (F32x16{} + v would add 0 + v in scalar first)
#else
  return F32x16{v, v, v, v, v, v, v, v, v, v, v, v, v, v, v, v};
#endif
}
[[gnu::always_inline]] inline F32x16 fma(F32x16 a, F32x16 b, F32x16 c) {
#ifdef __AVX512F__
  return _mm512_fmadd_ps(a, b, c);
#else
  F32x16 r;
  for (int j = 0; j < 16; ++j) r[j] = std::fma(a[j], b[j], c[j]);
  return r;
#endif
}
// p * 2^kf (kf integral) with one rounding, like the scalar two-factor form.
[[gnu::always_inline]] inline F32x16 scale_pow2(F32x16 p, F32x16 kf) {
#ifdef __AVX512F__
  return _mm512_mask_scalef_ps(p, __mmask16(0xFFFF), p, kf);  // (the unmasked form warns)
#else
  F32x16 r;
  for (int j = 0; j < 16; ++j) {
    const int32_t k = int32_t(kf[j]), k_half = k >> 1;
    r[j] = p[j] * pow2i<float>(k - k_half) * pow2i<float>(k_half);
  }
  return r;
#endif
}

[[gnu::always_inline]] inline F32x16 vexp(F32x16 x) {
  using Tr = ExpTraits<float>;
#ifdef __AVX512F__
  // Clamp with NaN passing through: vmaxps / vminps return their SECOND operand when either
  // is NaN (one instruction each, where the selects below cost a compare and a blend).
  x = _mm512_mask_max_ps(x, __mmask16(0xFFFF), splat(Tr::kLo), x);  // (the unmasked forms warn)
  x = _mm512_mask_min_ps(x, __mmask16(0xFFFF), splat(Tr::kHi), x);
  const F32x16 kf = fma(x, splat(1.4426950408889634f), splat(Tr::kRound)) - Tr::kRound;
  F32x16 r = _mm512_fnmadd_ps(kf, splat(Tr::kLn2Hi), x);  // x - kf ln2_hi, exactly fma(-kf, ..)
  r = _mm512_fnmadd_ps(kf, splat(Tr::kLn2Lo), r);
#else
  // Clamp with NaN passing through: (x < lo) is false for NaN.
  x = x < splat(Tr::kLo) ? splat(Tr::kLo) : x;
  x = x > splat(Tr::kHi) ? splat(Tr::kHi) : x;
  const F32x16 kf = fma(x, splat(1.4426950408889634f), splat(Tr::kRound)) - Tr::kRound;
  F32x16 r = fma(-kf, splat(Tr::kLn2Hi), x);
  r = fma(-kf, splat(Tr::kLn2Lo), r);
#endif
  F32x16 p = splat(Tr::kPoly[Tr::kDegree]);
#pragma GCC unroll 16
  for (int i = Tr::kDegree - 1; i >= 0; --i) p = fma(p, r, splat(Tr::kPoly[i]));
  return scale_pow2(p, kf);
}

// The 16-lane forms of vlog1p_unit, vsoftplus and vsigmoid: the scalar templates' operations in
// the same order (so bitwise the same results, tested), written on whole vectors so that the
// compiler needs no per-lane masks (the scan kernels call these once per step and channel
// block, where the masked `omp simd` form of the scalar template was ~half the forward's time).
[[gnu::always_inline]] inline F32x16 vlog1p_unit(F32x16 e) {
  using Tr = ExpTraits<float>;
  const F32x16 s = e / (splat(2.0f) + e);
  const F32x16 s2 = s * s;
  F32x16 p = splat(1.0f / float(2 * Tr::kAtanhTerms - 1));
#pragma GCC unroll 20
  for (int i = Tr::kAtanhTerms - 2; i >= 0; --i) p = fma(s2, p, splat(1.0f / float(2 * i + 1)));
  return splat(2.0f) * s * p;
}
[[gnu::always_inline]] inline F32x16 vsoftplus(F32x16 x) {
  const F32x16 zero{};
  const F32x16 ax = x < zero ? -x : x;
  const F32x16 sp = (x > zero ? x : zero) + vlog1p_unit(vexp(-ax));
  return x > splat(float(kSoftplusThreshold)) ? x : sp;
}
[[gnu::always_inline]] inline F32x16 vsigmoid(F32x16 x) {
  const F32x16 zero{};
  const F32x16 e = vexp(x < zero ? x : -x);  // e^-|x|
  const F32x16 inv = splat(1.0f) / (splat(1.0f) + e);
  return x >= zero ? inv : e * inv;
}
// softplus(x) and sigmoid(x) (its derivative) sharing one exp: bitwise vsoftplus(x) and
// vsigmoid(x), which compute the same e = e^-|x|.
[[gnu::always_inline]] inline void vsoftplus_sigmoid(F32x16 x, F32x16& softplus, F32x16& sigmoid) {
  const F32x16 zero{};
  const F32x16 e = vexp(x < zero ? x : -x);  // e^-|x|
  const F32x16 sp = (x > zero ? x : zero) + vlog1p_unit(e);
  softplus = x > splat(float(kSoftplusThreshold)) ? x : sp;
  const F32x16 inv = splat(1.0f) / (splat(1.0f) + e);
  sigmoid = x >= zero ? inv : e * inv;
}

}  // namespace mg::vmath
