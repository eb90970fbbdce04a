// core/parallel.h — the one parallel loop the CPU kernels use (OpenMP underneath).
//
// parallel_for(n, grain, f) calls f(begin, end) on disjoint blocks covering [0, n). Blocks are
// a pure function of n and the thread count, so a kernel must not let them change what it
// computes: each index writes its own outputs, and every sum across indices is taken over
// partitions fixed by the sizes alone (fixed row blocks, GEMM tiles: ops/matmul.h) and added
// in a fixed order. Hence every CPU result is bitwise the same at any thread count
// (tests/test_thread_determinism.cpp checks a model's gradients and 20 training steps at 1, 2
// and 3 threads). Below `grain` items it runs inline: waking threads costs more than a small loop.
#pragma once
#include <algorithm>
#include <cstdint>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace mg {

constexpr int64_t kElementwiseGrain = 1 << 15;

inline int num_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

template <typename F>
void parallel_for(int64_t n, int64_t grain, F&& f) {
  if (n <= 0) return;
#ifdef _OPENMP
  if (n > grain && omp_get_max_threads() > 1 && !omp_in_parallel()) {
#pragma omp parallel
    {
      int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
      int64_t chunk = (n + nt - 1) / nt;
      int64_t b = t * chunk, e = std::min(n, b + chunk);
      if (b < e) f(b, e);
    }
    return;
  }
#endif
  (void)grain;
  f(int64_t(0), n);
}

}  // namespace mg
