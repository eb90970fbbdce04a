// examples/bench_util.h — timing helpers shared by the bench_* programs.
#pragma once
#include <algorithm>
#include <chrono>
#include <functional>
#include <vector>

namespace mg::bench {

// Runs f once to warm up, then `repeats` times; returns the median wall time in ms.
inline double median_ms(const std::function<void()>& f, int repeats) {
  f();
  std::vector<double> t;
  for (int i = 0; i < repeats; ++i) {
    auto s = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - s).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace mg::bench
