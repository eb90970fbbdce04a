// ops/selective_scan_math.h — the scalar functions of the selective scan, written so that GCC
// vectorises them inside `#pragma omp simd` loops (no libm calls except std::fma, which is one
// instruction; no branches: selects only). Multiply-adds are explicit std::fma, so the forward
// and the backward's replay of it round identically (GCC does not contract a*b+c in ISO mode).
//
//   vexp(x)          e^x by range reduction: x = k ln2 + r with k = round(x / ln2), |r| <= ln2/2,
//                    e^r by its Taylor polynomial (degree 7 in f32, 13 in f64, Horner form),
//                    then e^x = e^r * 2^(k - k/2) * 2^(k/2): two exact power-of-two factors built
//                    from exponent bits, so results that underflow go through IEEE gradual
//                    underflow to exactly 0 and results that overflow become +inf. Arguments are
//                    clamped to [-104, 89] (f32) / [-746, 710] (f64) first, beyond which e^x is
//                    0 / inf anyway. NaN stays NaN.
//                    Accuracy (tests/test_selective_scan.cpp measures it against std::exp on a
//                    grid of 1e6 points over [-87.3, 88.7]): f32 max relative error 7.8e-8
//                    (under 1 ulp), f64 2.2e-16 (1 ulp); the test bounds them by 1.2e-7 and
//                    4.5e-16. Below the normal range (x < -87.3 in f32) results are IEEE
//                    subnormals, then exactly 0.
//   vlog1p_unit(e)   ln(1 + e) for e in [0, 1]: with s = e / (2 + e) in [0, 1/3],
//                    ln(1 + e) = 2 atanh(s) = 2 s (1 + s^2/3 + s^4/5 + ...), 8 terms in f32 and
//                    18 in f64 (truncation < 1e-9 resp. 1e-17 relative). No cancellation for tiny
//                    e (s is computed from e directly, never from 1 + e).
//   vsoftplus(x)     ln(1 + e^x) = max(x, 0) + ln(1 + e^-|x|), and x itself above 20 (the
//                    reference kernel's threshold, in both directions of the scan).
//   vsigmoid(x)      1 / (1 + e^-x) from e = e^-|x| <= 1: 1/(1+e) for x >= 0, e/(1+e) otherwise;
//                    never overflows. It is softplus' derivative (1 above the threshold).
#pragma once
#include <bit>
#include <cmath>
#include <cstdint>

namespace mg::scan_math {

constexpr double kSoftplusThreshold = 20.0;

template <typename T> struct ExpTraits;
template <> struct ExpTraits<float> {
  using Int = int32_t;
  static constexpr int kMantissaBits = 23, kBias = 127, kDegree = 7, kAtanhTerms = 8;
  static constexpr float kLo = -104.0f, kHi = 89.0f;
  static constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: x + kRound - kRound rounds x
  static constexpr float kLn2Hi = 0.693145751953125f;   // ln2 split so that k*kLn2Hi is exact
  static constexpr float kLn2Lo = 1.428606765330187e-06f;
};
template <> struct ExpTraits<double> {
  using Int = int64_t;
  static constexpr int kMantissaBits = 52, kBias = 1023, kDegree = 13, kAtanhTerms = 18;
  static constexpr double kLo = -746.0, kHi = 710.0;
  static constexpr double kRound = 6755399441055744.0;  // 1.5 * 2^52
  static constexpr double kLn2Hi = 6.93147180369123816490e-01;
  static constexpr double kLn2Lo = 1.90821492927058770002e-10;
};

// 1/i! for i = 0..kDegree, computed at compile time.
template <typename T> struct InvFactorials {
  T c[ExpTraits<T>::kDegree + 1];
  constexpr InvFactorials() : c() {
    double f = 1;
    for (int i = 0; i <= ExpTraits<T>::kDegree; ++i) {
      if (i > 1) f *= i;
      c[i] = T(1.0 / f);
    }
  }
};
template <typename T> inline constexpr InvFactorials<T> kInvFactorials{};

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
  const T kf = (x * T(1.4426950408889634) + Tr::kRound) - Tr::kRound;  // round(x / ln2)
  T r = std::fma(-kf, Tr::kLn2Hi, x);  // exact (Cody-Waite): kf * kLn2Hi has few bits
  r = std::fma(-kf, Tr::kLn2Lo, r);
  // Taylor polynomial of e^r in Horner form: sum_i r^i / i!.
  T p = kInvFactorials<T>.c[Tr::kDegree];
#pragma GCC unroll 16
  for (int i = Tr::kDegree - 1; i >= 0; --i) p = std::fma(p, r, kInvFactorials<T>.c[i]);
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

// delta_t = softplus(raw + bias) or raw + bias, and d(delta_t)/d(raw) (1 above the threshold).
template <typename T>
[[gnu::always_inline]] inline T vdelta(T raw_plus_bias, bool use_softplus) {
  return use_softplus ? vsoftplus(raw_plus_bias) : raw_plus_bias;
}
template <typename T>
[[gnu::always_inline]] inline T vdelta_grad(T raw_plus_bias, bool use_softplus) {
  if (!use_softplus) return T(1);
  return raw_plus_bias > T(kSoftplusThreshold) ? T(1) : vsigmoid(raw_plus_bias);
}

}  // namespace mg::scan_math
