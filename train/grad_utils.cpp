#include "train/grad_utils.h"

#include <cmath>
#include <cstdio>

#include "core/dispatch.h"
#include "core/parallel.h"
#include "ops/convert.h"
#include "cuda/adamw.h"  // the CUDA twins (declarations only: plain C++)

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
  double total = 0;  // CPU grads, added in list order
  Tensor acc;        // CUDA grads: one f64 on the device, made at the first CUDA grad
  for (auto& np : params) {
    Tensor g = np.tensor.grad();
    if (!g.defined()) continue;
    dispatch_device(g.device(), g.dtype(), "global_grad_norm",
        [&]<typename T>() {
          if (!acc.defined()) acc = Tensor::zeros({1}, DType::f64, g.device());
          cuda::accumulate_sum_of_squares(g.data<T>(), g.numel(), acc.data<double>());
        },
        [&]<typename T>() { total += sum_squares(g.data<T>(), g.numel()); });
  }
  if (acc.defined()) total += acc.item();  // the one host sync (waits for the sums)
  return std::sqrt(total);
}

double clip_scale(double norm, double max_norm) {
  if (max_norm <= 0) return 1.0;
  double coef = max_norm / (norm + 1e-6);
  if (std::isnan(coef)) return coef;
  return std::min(1.0, coef);
}

std::optional<std::string> find_non_finite(const std::vector<nn::NamedParam>& params) {
  // CUDA grads first: sums[k] = sum of squares of the k-th CUDA grad, all read back at once.
  std::vector<double> dev_sums;
  if constexpr (kWithCuda) {  // (a discarded statement: no cuda:: symbol needed without CUDA)
    std::vector<Tensor> dev_grads;
    for (auto& np : params) {
      Tensor g = np.tensor.grad();
      if (g.defined() && g.device().is_cuda()) {
        check_cuda_f32("find_non_finite", g.dtype(), g.device());
        dev_grads.push_back(g);
      }
    }
    if (!dev_grads.empty()) {
      Tensor sums = Tensor::empty({(int64_t)dev_grads.size()}, DType::f64, dev_grads[0].device());
      for (size_t k = 0; k < dev_grads.size(); ++k)
        cuda::sum_of_squares(dev_grads[k].data<float>(), dev_grads[k].numel(), sums.data<double>() + k);
      dev_sums = sums.to_vector<double>();  // the one host sync
    }
  }
  size_t k = 0;  // index into dev_sums
  for (auto& np : params) {
    Tensor g = np.tensor.grad();
    if (!g.defined()) continue;
    bool ok = true;
    dispatch_device(g.device(), g.dtype(), "find_non_finite",
        [&]<typename T>() { ok = std::isfinite(dev_sums.at(k++)); },
        [&]<typename T>() { ok = all_finite(g.data<T>(), g.numel()); });
    if (!ok) return np.name;
  }
  return std::nullopt;
}

}  // namespace mg::train

namespace mg::train {

std::string describe_weights(const std::vector<nn::NamedParam>& params) {
  std::string largest_name;
  double largest = -1;
  for (auto& np : params) {
    Tensor w = np.tensor.detach();
    if (!w.device().is_cpu()) w = to(w, Device::cpu());  // a diagnosis after a failure: no hurry
    if (w.dtype() != DType::f64) w = to(w, DType::f64);
    const double* p = w.data<double>();
    for (int64_t i = 0; i < w.numel(); ++i) {
      if (!std::isfinite(p[i])) return detail::cat("the weight ", np.name, " is not finite");
      if (std::fabs(p[i]) > largest) {
        largest = std::fabs(p[i]);
        largest_name = np.name;
      }
    }
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3g", largest);
  return detail::cat("the weights are finite; the largest |w| is ", buf, " (", largest_name, ")");
}

}  // namespace mg::train
