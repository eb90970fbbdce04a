#include "train/grad_utils.h"

#include <cmath>

#include "core/dispatch.h"
#include "core/parallel.h"

namespace mg::train {

namespace {

constexpr int64_t kBlock = 1 << 16;  // fixed partial-sum blocks: thread-count independent

template <typename T>
double sum_squares(const T* g, int64_t n) {
  int64_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<double> partial(blocks, 0.0);
  parallel_for(blocks, 2, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      double s = 0;
      for (int64_t i = b * kBlock, e = std::min(n, i + kBlock); i < e; ++i) s += double(g[i]) * double(g[i]);
      partial[b] = s;
    }
  });
  double total = 0;
  for (double s : partial) total += s;
  return total;
}

template <typename T>
bool all_finite(const T* g, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(g[i])) return false;
  return true;
}

}  // namespace

double global_grad_norm(const std::vector<nn::NamedParam>& params) {
  double total = 0;
  for (auto& np : params) {
    Tensor g = np.tensor.grad();
    if (!g.defined()) continue;
    check_cpu("global_grad_norm", g);
    dispatch_float(g.dtype(), "global_grad_norm",
                   [&]<typename T>() { total += sum_squares(g.data<T>(), g.numel()); });
  }
  return std::sqrt(total);
}

double clip_scale(double norm, double max_norm) {
  if (max_norm <= 0) return 1.0;
  double coef = max_norm / (norm + 1e-6);
  if (std::isnan(coef)) return coef;
  return std::min(1.0, coef);
}

std::optional<std::string> find_non_finite(const std::vector<nn::NamedParam>& params) {
  for (auto& np : params) {
    Tensor g = np.tensor.grad();
    if (!g.defined()) continue;
    check_cpu("find_non_finite", g);
    bool ok = true;
    dispatch_float(g.dtype(), "find_non_finite",
                   [&]<typename T>() { ok = all_finite(g.data<T>(), g.numel()); });
    if (!ok) return np.name;
  }
  return std::nullopt;
}

}  // namespace mg::train
