// tests/test_util.h — small helpers the test files share.
//
//   error_of(f)            the mg::Error message f throws ("(no error)" when it throws none)
//   has(msg, part)         msg contains part
//   rel_err(a, b)          max |a - b| / max(1, max |b|), a and b on any device
//   bitwise_equal(a, b)    the same f32 values bit for bit
//   settings_with(f, v)    the current settings with one field changed, for a SettingsGuard
//   tiny_lm_config(V, N)   a two-layer Mamba LM small enough for a test step
//   MG_SKIP_WITHOUT_GPU()  in a CUDA test case: report it skipped and return without a GPU
#pragma once
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "core/error.h"
#include "core/settings.h"
#include "core/tensor.h"
#include "nn/mamba.h"

namespace mg::test {

inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

inline bool has(const std::string& msg, const std::string& part) {
  return msg.find(part) != std::string::npos;
}

// max |a - b| / max(1, max |b|) over the values read as f32; either may live on the GPU.
// A non-finite value makes the error infinite, unless nonfinite_equal: then NaN matches NaN
// and an infinity matches the same infinity (for kernels whose inputs include them).
inline double rel_err(const Tensor& a, const Tensor& b, bool nonfinite_equal = false) {
  REQUIRE(a.shape() == b.shape());
  std::vector<float> x = a.cast(DType::f32).to_vector<float>();
  std::vector<float> y = b.cast(DType::f32).to_vector<float>();
  double err = 0, scale = 1;
  for (size_t i = 0; i < x.size(); ++i) {
    if (!std::isfinite(x[i]) || !std::isfinite(y[i])) {
      bool same = (std::isnan(x[i]) && std::isnan(y[i])) || x[i] == y[i];
      if (nonfinite_equal && same) continue;
      return std::numeric_limits<double>::infinity();
    }
    err = std::max(err, std::fabs((double)x[i] - (double)y[i]));
    scale = std::max(scale, std::fabs((double)y[i]));
  }
  return err / scale;
}

// The same number of f32 values, bit for bit equal; either may live on the GPU.
inline bool bitwise_equal(const Tensor& a, const Tensor& b) {
  std::vector<float> x = a.to_vector<float>(), y = b.to_vector<float>();
  return x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0;
}

//   SettingsGuard tf32(settings_with(&Settings::precision, Precision::tf32));
template <typename V>
Settings settings_with(V Settings::*field, V value) {
  Settings s = settings();
  s.*field = value;
  return s;
}

// D 16, two layers, vocabulary V, N states (K 4, E 2 as by default).
inline nn::MambaConfig tiny_lm_config(int64_t V = 32, int64_t N = 16) {
  nn::MambaConfig c;
  c.d_model = 16;
  c.n_layer = 2;
  c.vocab_size = V;
  c.d_state = N;
  return c;
}

// Runs f with `n` OpenMP threads (no-op without OpenMP), restoring the previous count.
template <typename F> auto with_threads(int n, F&& f) {
#ifdef _OPENMP
  int prev = omp_get_max_threads();
  omp_set_num_threads(n);
  auto r = f();
  omp_set_num_threads(prev);
  return r;
#else
  (void)n;
  return f();
#endif
}

}  // namespace mg::test

// Reports the test case as skipped (doctest has no run-time skip) and returns, when no CUDA
// device is visible. Only in CUDA builds (cuda/runtime.h's functions exist only there).
#define MG_SKIP_WITHOUT_GPU()                                                                \
  if (!mg::cuda::available()) {                                                            \
    MESSAGE("skipped: no CUDA device is visible (" << mg::cuda::no_device_reason() << ")"); \
    return;                                                                                \
  }
