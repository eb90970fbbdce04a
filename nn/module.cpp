#include "nn/module.h"

#include <algorithm>
#include <set>
#include <sstream>

#include "autograd/grad_mode.h"

namespace mg::nn {

void ParamVisitor::module(const std::string& name, Module& m) {
  std::string saved = prefix_;
  prefix_ += name + ".";
  m.visit(*this);
  prefix_ = saved;
}

namespace {
// Adapts a callable to the visitor interface, handing it the full dotted name.
class FnVisitor : public ParamVisitor {
 public:
  using Fn = std::function<void(const std::string&, Tensor&, const ParamInfo&)>;
  explicit FnVisitor(const Fn& f) : f_(f) {}
  void parameter(const std::string& name, Tensor& t, ParamInfo info) override {
    f_(prefix_ + name, t, info);
  }

 private:
  const Fn& f_;
};

// A fresh leaf holding `t`'s values, requires_grad as before.
Tensor new_leaf(const Tensor& converted, bool requires_grad) {
  Tensor leaf = converted.detach();
  if (requires_grad) leaf.requires_grad_(true);
  return leaf;
}
}  // namespace

void Module::for_each_parameter(
    const std::function<void(const std::string&, Tensor&, const ParamInfo&)>& f) const {
  FnVisitor v(f);
  const_cast<Module*>(this)->visit(v);
}

std::vector<NamedParam> Module::named_parameters() const {
  std::vector<NamedParam> out;
  for_each_parameter([&](const std::string& name, Tensor& t, const ParamInfo& info) {
    out.push_back({name, t, info});
  });
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& p : named_parameters()) out.push_back(p.tensor);
  return out;
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (auto& p : named_parameters()) n += p.tensor.numel();
  return n;
}

Tensor Module::parameter(const std::string& name) const {
  for (auto& p : named_parameters())
    if (p.name == name) return p.tensor;
  std::ostringstream known;
  int shown = 0;
  for (auto& p : named_parameters())
    if (shown++ < 12) known << (shown > 1 ? ", " : "") << p.name;
  throw Error(detail::cat("Module::parameter: no parameter named '", name, "' (parameters: ",
                          known.str(), shown > 12 ? ", ..." : "", ")"));
}

Module& Module::to(Device device) {
  NoGradGuard no_grad;
  for_each_parameter([&](const std::string&, Tensor& t, const ParamInfo&) {
    if (t.device() != device) t = new_leaf(t.copy_to(device), t.requires_grad());
  });
  return *this;
}

Module& Module::to(DType dtype) {
  // bf16 parameters are refused: mixed precision keeps f32 master weights and casts copies
  // (Settings::precision, docs/mixed_precision.md).
  MG_CHECK(dtype == DType::f32 || dtype == DType::f64, "Module::to: parameters must be f32 or "
           "f64, asked for ", dtype_name(dtype), " (for bf16 compute set Settings::precision)");
  NoGradGuard no_grad;
  for_each_parameter([&](const std::string&, Tensor& t, const ParamInfo&) {
    if (t.dtype() != dtype) t = new_leaf(t.cast(dtype), t.requires_grad());
  });
  return *this;
}

void Module::zero_grad() {
  for_each_parameter([](const std::string&, Tensor& t, const ParamInfo&) { t.zero_grad(); });
}

void Module::set_parameter(const std::string& name, const Tensor& value) {
  bool found = false;
  for_each_parameter([&](const std::string& n, Tensor& t, const ParamInfo&) {
    if (n != name) return;
    MG_CHECK(value.shape() == t.shape(), "Module::set_parameter: '", name, "' has shape ",
             shape_str(t.shape()), ", given ", shape_str(value.shape()));
    t = value;
    found = true;
  });
  MG_CHECK(found, "Module::set_parameter: no parameter named '", name, "'");
}

std::map<std::string, Tensor> Module::state_dict() const {
  std::map<std::string, Tensor> out;
  for (auto& p : named_parameters()) out[p.name] = p.tensor;
  return out;
}

void Module::load_state_dict(const std::map<std::string, Tensor>& loaded, bool strict) {
  const std::map<std::string, Tensor> state = canonical_names(loaded);
  // First collect every problem, then either throw once or copy everything.
  std::vector<std::string> missing, mis_shaped, bad_dtype;
  std::set<std::string> used;
  for (auto& p : named_parameters()) {
    auto it = state.find(p.name);
    if (it == state.end()) {
      missing.push_back(p.name);
      continue;
    }
    used.insert(p.name);
    const Tensor& src = it->second;
    if (!src.defined() || src.shape() != p.tensor.shape())
      mis_shaped.push_back(detail::cat(p.name, " (expected ", shape_str(p.tensor.shape()),
                                       ", file has ",
                                       src.defined() ? shape_str(src.shape()) : "undefined", ")"));
    else if (!is_floating(src.dtype()))
      bad_dtype.push_back(detail::cat(p.name, " (", dtype_name(src.dtype()), ")"));
  }
  std::vector<std::string> unexpected;
  for (auto& [name, t] : state)
    if (!used.count(name)) unexpected.push_back(name);

  auto list = [](std::ostringstream& os, const char* what, const std::vector<std::string>& v) {
    if (v.empty()) return;
    os << "\n  " << v.size() << " " << what << ":";
    for (auto& s : v) os << "\n    " << s;
  };
  bool fail = !mis_shaped.empty() || !bad_dtype.empty() ||
              (strict && (!missing.empty() || !unexpected.empty()));
  if (fail) {
    std::ostringstream os;
    os << "load_state_dict: the state dict does not match the model";
    if (strict) list(os, "missing", missing);
    if (strict) list(os, "unexpected", unexpected);
    list(os, "mis-shaped", mis_shaped);
    list(os, "not floating point", bad_dtype);
    throw Error(os.str());
  }

  NoGradGuard no_grad;
  for_each_parameter([&](const std::string& name, Tensor& t, const ParamInfo&) {
    auto it = state.find(name);
    if (it == state.end()) return;
    t.copy_values_from(it->second);  // same handle, new values (the optimizer holds the handles)
  });
}

}  // namespace mg::nn
