#include "train/optimizer.h"

#include <cctype>
#include <cmath>
#include <set>
#include <sstream>

#include "core/dispatch.h"
#include "core/parallel.h"
#include "cuda/adamw.h"  // the CUDA twins (declarations only: plain C++)

namespace mg::cpu {

// p, g, m, v (n); p, m, v updated in place.
template <typename T>
void adamw_update(T* p, const T* g, T* m, T* v, int64_t n, T lr, T beta1, T beta2, T eps,
                  T weight_decay, T bias_c1, T bias_c2, T grad_scale) {
  const T decay = T(1) - lr * weight_decay;  // decoupled: p <- p - lr * wd * p
  const T step_size = lr / bias_c1;
  const T sqrt_c2 = std::sqrt(bias_c2);
  parallel_for(n, kElementwiseGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const T gi = g[i] * grad_scale;
      m[i] = beta1 * m[i] + (T(1) - beta1) * gi;
      v[i] = beta2 * v[i] + (T(1) - beta2) * gi * gi;
      const T denom = std::sqrt(v[i]) / sqrt_c2 + eps;
      p[i] = p[i] * decay - step_size * (m[i] / denom);
    }
  });
}

// p, g, buf (n); p, buf updated in place.
template <typename T>
void sgd_update(T* p, const T* g, T* buf, int64_t n, T lr, T momentum, bool nesterov,
                T weight_decay, T grad_scale) {
  parallel_for(n, kElementwiseGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const T gi = g[i] * grad_scale + weight_decay * p[i];
      T d = gi;
      if (momentum != T(0)) {
        buf[i] = momentum * buf[i] + gi;
        d = nesterov ? gi + momentum * buf[i] : buf[i];
      }
      p[i] -= lr * d;
    }
  });
}

template void adamw_update<float>(float*, const float*, float*, float*, int64_t, float, float,
                                  float, float, float, float, float, float);
template void adamw_update<double>(double*, const double*, double*, double*, int64_t, double,
                                   double, double, double, double, double, double, double);
template void sgd_update<float>(float*, const float*, float*, int64_t, float, float, bool, float,
                                float);
template void sgd_update<double>(double*, const double*, double*, int64_t, double, double, bool,
                                 double, double);

}  // namespace mg::cpu

namespace mg::train {

namespace {

// "backbone.layers.12.norm.weight" -> "backbone.layers.*.norm.weight": one line per role.
std::string fold_indices(const std::string& name) {
  std::string out;
  size_t i = 0;
  while (i < name.size()) {
    bool at_part_start = (i == 0 || name[i - 1] == '.');
    size_t j = i;
    while (j < name.size() && std::isdigit((unsigned char)name[j])) ++j;
    if (at_part_start && j > i && (j == name.size() || name[j] == '.')) {
      out += '*';
      i = j;
    } else {
      out += name[i++];
    }
  }
  return out;
}

std::string with_commas(int64_t n) {
  std::string s = std::to_string(n), out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i > 0 && (s.size() - i) % 3 == 0) out += ',';
    out += s[i];
  }
  return out;
}

// Checks a parameter's gradient before an update reads it.
void check_grad(const char* who, const nn::NamedParam& np, const Tensor& g) {
  const Tensor& p = np.tensor;
  MG_CHECK(g.dtype() == p.dtype(), who, ": gradient of '", np.name, "' is ", dtype_name(g.dtype()),
           " but the parameter is ", dtype_name(p.dtype()));
  MG_CHECK(g.shape() == p.shape(), who, ": gradient of '", np.name, "' has shape ",
           shape_str(g.shape()), " but the parameter has shape ", shape_str(p.shape()));
  MG_CHECK(g.device() == p.device(), who, ": gradient of '", np.name, "' is on ", g.device().str(),
           " but the parameter is on ", p.device().str());
}

void check_lr(const char* who, double lr, double grad_scale) {
  MG_CHECK(std::isfinite(lr) && lr >= 0, who, ": learning rate must be finite and >= 0, got ", lr);
  MG_CHECK(std::isfinite(grad_scale) && grad_scale >= 0, who,
           ": grad_scale must be finite and >= 0, got ", grad_scale);
}

std::vector<Tensor> zeros_like_params(const std::vector<nn::NamedParam>& params) {
  std::vector<Tensor> out;
  for (auto& np : params)
    out.push_back(Tensor::zeros(np.tensor.shape(), np.tensor.dtype(), np.tensor.device()));
  return out;
}

}  // namespace

// ---- shared --------------------------------------------------------------------------------

Optimizer::Optimizer(std::vector<nn::NamedParam> params, const char* who)
    : params_(std::move(params)) {
  std::set<std::string> seen;
  for (auto& np : params_) {
    MG_CHECK(np.tensor.defined(), who, ": parameter '", np.name, "' is an undefined tensor");
    check_float(who, np.tensor, np.name.c_str());
    MG_CHECK(seen.insert(np.name).second, who, ": parameter name '", np.name, "' appears twice");
  }
  // One device for all: the update loop runs each parameter's kernel on the parameters' device.
  for (auto& np : params_) {
    const nn::NamedParam& first = params_[0];
    MG_CHECK(np.tensor.device() == first.tensor.device(), who, ": parameters on different devices ('",
             first.name, "' on ", first.tensor.device().str(), ", '", np.name, "' on ",
             np.tensor.device().str(), "); move the whole model with Module::to(device) before "
             "creating the optimizer");
    MG_CHECK(np.tensor.device().is_cpu() || np.tensor.dtype() == DType::f32, who,
             ": parameter '", np.name, "' is ", dtype_name(np.tensor.dtype()), " on ",
             np.tensor.device().str(), ", but the CUDA optimizer kernels are f32 only");
  }
}

Device Optimizer::device() const {
  return params_.empty() ? Device::cpu() : params_[0].tensor.device();
}

std::string Optimizer::describe_groups_as(const std::string& title) const {
  int64_t n_decay = 0, n_no = 0, e_decay = 0, e_no = 0;
  std::vector<std::string> roles;  // folded no-decay names, first-seen order
  std::map<std::string, int> role_count;
  for (auto& np : params_) {
    if (np.info.weight_decay) {
      ++n_decay;
      e_decay += np.tensor.numel();
    } else {
      ++n_no;
      e_no += np.tensor.numel();
      std::string r = fold_indices(np.name);
      if (role_count[r]++ == 0) roles.push_back(r);
    }
  }
  std::ostringstream os;
  auto tensors = [](int64_t n) { return std::to_string(n) + (n == 1 ? " tensor" : " tensors"); };
  os << title << ": decay " << tensors(n_decay) << " (" << with_commas(e_decay) << " params) | no decay "
     << tensors(n_no) << " (" << with_commas(e_no) << " params)";
  for (size_t i = 0; i < roles.size(); ++i) {
    os << (i == 0 ? ": " : ", ") << roles[i];
    if (role_count[roles[i]] > 1) os << " (x" << role_count[roles[i]] << ")";
  }
  return os.str();
}

std::map<std::string, Tensor> Optimizer::state_from(
    const std::vector<std::string>& prefixes, const std::vector<std::vector<Tensor>>& slots) const {
  std::map<std::string, Tensor> out;
  for (size_t k = 0; k < prefixes.size(); ++k)
    for (size_t i = 0; i < params_.size(); ++i) out[prefixes[k] + "." + params_[i].name] = slots[k][i];
  out["step"] = Tensor::full({1}, (double)step_count_, DType::f64);
  return out;
}

void Optimizer::load_state_into(const std::map<std::string, Tensor>& state,
                                const std::vector<std::string>& prefixes,
                                const std::vector<std::vector<Tensor>>& slots, const char* who) {
  std::vector<std::string> missing, unexpected, bad;
  std::map<std::string, std::pair<size_t, size_t>> expected;  // key -> (prefix, param)
  for (size_t k = 0; k < prefixes.size(); ++k)
    for (size_t i = 0; i < params_.size(); ++i) expected[prefixes[k] + "." + params_[i].name] = {k, i};
  for (auto& [key, idx] : expected) {
    auto it = state.find(key);
    if (it == state.end()) { missing.push_back(key); continue; }
    const Tensor& t = it->second;
    const Tensor& want = slots[idx.first][idx.second];
    if (!t.defined() || (t.dtype() != DType::f32 && t.dtype() != DType::f64))
      bad.push_back(key + " (not a float tensor)");
    else if (t.shape() != want.shape())
      bad.push_back(key + " " + shape_str(t.shape()) + ", expected " + shape_str(want.shape()));
  }
  int64_t step = -1;
  auto st = state.find("step");
  if (st == state.end()) {
    missing.push_back("step");
  } else if (!st->second.defined() || st->second.numel() != 1) {
    bad.push_back("step (expected one element)");
  } else {
    double s = st->second.item();
    if (!(s >= 0 && s < 9.007199254740992e15 && s == std::floor(s)))
      bad.push_back("step (value " + std::to_string(s) + " is not a step count)");
    else
      step = (int64_t)s;
  }
  for (auto& [key, t] : state)
    if (key != "step" && !expected.count(key)) unexpected.push_back(key);

  if (!missing.empty() || !unexpected.empty() || !bad.empty()) {
    std::ostringstream os;
    os << who << ".load_state: the state does not match this optimizer's " << params_.size()
       << " parameters (nothing was loaded)";
    auto list = [&](const char* what, const std::vector<std::string>& v) {
      if (v.empty()) return;
      os << "\n  " << what << " (" << v.size() << "):";
      for (auto& s : v) os << " " << s;
    };
    list("missing", missing);
    list("unexpected", unexpected);
    list("bad", bad);
    throw Error(os.str());
  }
  // Everything checked: copy (the state may come from a file, i.e. CPU, or from a device).
  for (auto& [key, idx] : expected) slots[idx.first][idx.second].copy_values_from(state.at(key));
  step_count_ = step;
}

// ---- AdamW ----------------------------------------------------------------------------------

AdamW::AdamW(std::vector<nn::NamedParam> params, double beta1, double beta2, double eps,
             double weight_decay)
    : Optimizer(std::move(params), "AdamW"),
      beta1_(beta1), beta2_(beta2), eps_(eps), weight_decay_(weight_decay) {
  MG_CHECK(beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1,
           "AdamW: betas must be in [0, 1), got (", beta1, ", ", beta2, ")");
  MG_CHECK(eps > 0, "AdamW: eps must be > 0, got ", eps);
  MG_CHECK(weight_decay >= 0, "AdamW: weight_decay must be >= 0, got ", weight_decay);
  m_ = zeros_like_params(params_);
  v_ = zeros_like_params(params_);
}

void AdamW::step(double lr, double grad_scale) {
  check_lr("AdamW.step", lr, grad_scale);
  ++step_count_;
  const double t = (double)step_count_;
  const double bias_c1 = 1.0 - std::pow(beta1_, t), bias_c2 = 1.0 - std::pow(beta2_, t);
  for (size_t i = 0; i < params_.size(); ++i) {
    const nn::NamedParam& np = params_[i];
    Tensor g = np.tensor.grad();
    if (!g.defined()) continue;
    check_grad("AdamW.step", np, g);
    const double wd = np.info.weight_decay ? weight_decay_ : 0.0;
    dispatch_device(np.tensor.device(), np.tensor.dtype(), "AdamW.step",
        [&]<typename T>() {
          cuda::adamw_update(np.tensor.data<T>(), g.data<T>(), m_[i].data<T>(), v_[i].data<T>(),
                             np.tensor.numel(), (T)lr, (T)beta1_, (T)beta2_, (T)eps_, (T)wd,
                             (T)bias_c1, (T)bias_c2, (T)grad_scale);
        },
        [&]<typename T>() {
          cpu::adamw_update<T>(np.tensor.data<T>(), g.data<T>(), m_[i].data<T>(), v_[i].data<T>(),
                               np.tensor.numel(), (T)lr, (T)beta1_, (T)beta2_, (T)eps_, (T)wd,
                               (T)bias_c1, (T)bias_c2, (T)grad_scale);
        });
  }
}

std::map<std::string, Tensor> AdamW::state() const { return state_from({"m", "v"}, {m_, v_}); }

void AdamW::load_state(const std::map<std::string, Tensor>& state) {
  load_state_into(state, {"m", "v"}, {m_, v_}, "AdamW");
}

std::string AdamW::describe_groups() const {
  std::ostringstream title;
  title << "AdamW (betas " << beta1_ << ", " << beta2_ << "; eps " << eps_ << "; weight decay "
        << weight_decay_ << ")";
  return describe_groups_as(title.str());
}

// ---- SGD ------------------------------------------------------------------------------------

SGD::SGD(std::vector<nn::NamedParam> params, double momentum, bool nesterov, double weight_decay)
    : Optimizer(std::move(params), "SGD"),
      momentum_(momentum), weight_decay_(weight_decay), nesterov_(nesterov) {
  MG_CHECK(momentum >= 0 && momentum < 1, "SGD: momentum must be in [0, 1), got ", momentum);
  MG_CHECK(!nesterov || momentum > 0, "SGD: nesterov needs momentum > 0");
  MG_CHECK(weight_decay >= 0, "SGD: weight_decay must be >= 0, got ", weight_decay);
  if (momentum_ > 0) buf_ = zeros_like_params(params_);
}

void SGD::step(double lr, double grad_scale) {
  check_lr("SGD.step", lr, grad_scale);
  ++step_count_;
  for (size_t i = 0; i < params_.size(); ++i) {
    const nn::NamedParam& np = params_[i];
    Tensor g = np.tensor.grad();
    if (!g.defined()) continue;
    check_grad("SGD.step", np, g);
    const double wd = np.info.weight_decay ? weight_decay_ : 0.0;
    dispatch_device(np.tensor.device(), np.tensor.dtype(), "SGD.step",
        [&]<typename T>() {
          cuda::sgd_update(np.tensor.data<T>(), g.data<T>(),
                           buf_.empty() ? nullptr : buf_[i].data<T>(), np.tensor.numel(), (T)lr,
                           (T)momentum_, nesterov_, (T)wd, (T)grad_scale);
        },
        [&]<typename T>() {
          cpu::sgd_update<T>(np.tensor.data<T>(), g.data<T>(),
                             buf_.empty() ? nullptr : buf_[i].data<T>(), np.tensor.numel(), (T)lr,
                             (T)momentum_, nesterov_, (T)wd, (T)grad_scale);
        });
  }
}

std::map<std::string, Tensor> SGD::state() const {
  if (buf_.empty()) return state_from({}, {});
  return state_from({"momentum"}, {buf_});
}

void SGD::load_state(const std::map<std::string, Tensor>& state) {
  if (buf_.empty()) return load_state_into(state, {}, {}, "SGD");
  load_state_into(state, {"momentum"}, {buf_}, "SGD");
}

std::string SGD::describe_groups() const {
  std::ostringstream title;
  title << "SGD (momentum " << momentum_ << (nesterov_ ? ", nesterov" : "") << "; weight decay "
        << weight_decay_ << ")";
  return describe_groups_as(title.str());
}

}  // namespace mg::train
