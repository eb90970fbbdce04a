// The whole Mamba language model against an independent PyTorch implementation.
//
// tests/reference/make_model_fixtures.py builds a tiny Mamba LM (V 64, D 16, 2 layers, N 16,
// K 4, E 2, R 1) in float64 from the math, with random non-default weights, and stores the
// weights, input ids (B 2, L 13), logits, the mean next-token loss and d loss / d parameter for
// every parameter. Here the same weights go into nn::MambaLM and we compare
//     error = max |ours - ref| / max |ref|
// for logits, loss and every gradient: < 1e-9 in f64 and < 1e-4 in f32 (weights rounded to
// f32). A failure prints the error of every tensor.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <sstream>

#include <unistd.h>

#include "autograd/tape.h"
#include "core/safetensors.h"
#include "nn/checkpoint.h"
#include "nn/mamba.h"

using namespace mg;
using namespace mg::nn;

namespace {

const char* kFixture = MG_TEST_DATA_DIR "/model_fixtures.safetensors";

double max_abs(const Tensor& t) {
  const Tensor h = t.cast(DType::f64);
  double m = 0;
  for (int64_t i = 0; i < h.numel(); ++i) m = std::max(m, std::fabs(h.data<double>()[i]));
  return m;
}

// max |ours - ref| / max |ref|, in f64 (ours may be f32).
double rel_error(const Tensor& ours, const Tensor& ref) {
  REQUIRE_MESSAGE(ours.shape() == ref.shape(), "shape ", shape_str(ours.shape()), " vs ", shape_str(ref.shape()));
  const Tensor a = ours.cast(DType::f64), b = ref.cast(DType::f64);
  double diff = 0;
  for (int64_t i = 0; i < a.numel(); ++i)
    diff = std::max(diff, std::fabs(a.data<double>()[i] - b.data<double>()[i]));
  const double scale = max_abs(b);
  return scale > 0 ? diff / scale : diff;
}

struct Fixture {
  SafetensorsFile file;
  MambaConfig config;
  std::map<std::string, Tensor> params;  // the weights alone, HF names, f64
  Tensor ids;
};

Fixture load_fixture() {
  Fixture f;
  f.file = load_safetensors(kFixture);
  f.config = MambaConfig::from_metadata(f.file.metadata);
  for (auto& [name, t] : f.file.tensors)
    if (name.rfind("grad.", 0) != 0 && name != "input_ids" && name != "logits" && name != "loss")
      f.params[name] = t;
  f.ids = f.file.tensors.at("input_ids");
  return f;
}

// Runs forward, loss and backward in `dtype` and returns (name, error) for every tensor compared.
std::vector<std::pair<std::string, double>> compare(const Fixture& fx, DType dtype) {
  MambaLM model(fx.config, /*seed=*/1);
  model.to(dtype);
  model.load_state_dict(fx.params);  // strict: the fixture names every parameter exactly
  std::vector<std::pair<std::string, double>> errors;
  {
    NoGradGuard no_grad;
    errors.emplace_back("logits", rel_error(model.forward(fx.ids), fx.file.tensors.at("logits")));
  }
  Tensor loss = model.loss(fx.ids);
  errors.emplace_back("loss", rel_error(loss, fx.file.tensors.at("loss")));
  backward(loss);
  for (const NamedParam& p : model.named_parameters()) {
    const std::string ref = "grad." + p.name;
    REQUIRE_MESSAGE(fx.file.tensors.count(ref), "the fixture lacks ", ref);
    REQUIRE_MESSAGE(p.tensor.grad().defined(), p.name, " received no gradient");
    errors.emplace_back(ref, rel_error(p.tensor.grad(), fx.file.tensors.at(ref)));
  }
  return errors;
}

void check_errors(const std::vector<std::pair<std::string, double>>& errors, double tol,
                  const char* label) {
  std::ostringstream table;
  double worst = 0;
  std::string worst_name;
  for (auto& [name, e] : errors) {
    char line[160];
    std::snprintf(line, sizeof line, "\n  %-52s %.3e", name.c_str(), e);
    table << line;
    if (!(e <= worst)) worst = e, worst_name = name;  // also catches NaN
  }
  INFO(std::string(label), ": relative error per tensor (tolerance ", tol, "):", table.str());
  CHECK(worst < tol);
  MESSAGE(std::string(label), ": worst relative error ", worst, " (", worst_name, ") over ", errors.size(),
          " tensors");
}

}  // namespace

TEST_CASE("model reference: the fixture is complete") {
  Fixture fx = load_fixture();
  MambaLM model(fx.config, 0);
  CHECK(fx.config.padded_vocab() == 64);
  CHECK(fx.params.size() == model.named_parameters().size());  // nothing extra, nothing missing
  CHECK(fx.ids.shape() == Shape{2, 13});
  CHECK(fx.file.tensors.at("logits").shape() == Shape{2, 13, 64});
  // The gradients are not trivially small: a wrong backward cannot hide under the tolerance.
  for (const NamedParam& p : model.named_parameters())
    CHECK_MESSAGE(max_abs(fx.file.tensors.at("grad." + p.name)) > 1e-3, p.name);
}

TEST_CASE("model reference: logits, loss and every gradient match PyTorch in f64") {
  check_errors(compare(load_fixture(), DType::f64), 1e-9, "f64");
}

TEST_CASE("model reference: logits, loss and every gradient match PyTorch in f32") {
  check_errors(compare(load_fixture(), DType::f32), 1e-4, "f32");
}

TEST_CASE("model reference: load_mamba reads the fixture's weights with their config") {
  // The weights alone, saved the way a user would have them (config in __metadata__), load
  // through the checkpoint loader into the same logits, bit for bit, as load_state_dict.
  Fixture fx = load_fixture();
  const std::string tmp = (std::filesystem::temp_directory_path() /
                           ("mg_model_ref_" + std::to_string(::getpid()) + ".safetensors")).string();
  save_safetensors(tmp, fx.params, fx.file.metadata);
  MambaLM loaded = load_mamba(tmp, DType::f64);
  std::filesystem::remove(tmp);
  MambaLM direct(fx.config, 1);
  direct.to(DType::f64);
  direct.load_state_dict(fx.params);
  NoGradGuard no_grad;
  const Tensor a = loaded.forward(fx.ids), b = direct.forward(fx.ids);
  CHECK(std::equal(a.data<double>(), a.data<double>() + a.numel(), b.data<double>()));
  CHECK(rel_error(a, fx.file.tensors.at("logits")) < 1e-9);
}
