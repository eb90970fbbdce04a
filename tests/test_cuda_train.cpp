// Training on the device: the optimizers, the gradient norm and the non-finite search on CUDA
// tensors, a tiny Mamba LM trained on CUDA against the same run on the CPU (the spec), the
// optimizer state and run checkpoints of a CUDA model, and the gelu CUDA twin.
//
//   err = max |cuda - cpu| / max(1, max |cpu|)
//   optimizer steps (AdamW with decay and clipping, SGD with momentum / nesterov): err < 1e-5
//   global_grad_norm: relative 1e-12 (both sum f32 squares in double; only the order differs)
//   tiny LM (D 16, 2 layers, V 32, L 8, B 2), 6 AdamW steps through train::train: every loss
//   within 1e-4 relative of the CPU's
//   state save/load and resume on the device: bitwise (same device, deterministic mode)
//
// The first case runs everywhere (no GPU needed): asking for CUDA without a visible GPU (or in
// a build without CUDA), as `--device cuda` does in the examples, is one clear mg::Error and
// leaves the model on the CPU, working. The others skip, saying why, without a GPU.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <unistd.h>
#include <vector>

#include "autograd/grad_mode.h"
#include "autograd/tape.h"
#include "core/allocator.h"
#include "core/safetensors.h"
#include "nn/mamba.h"
#include "ops/gelu.h"
#include "ops/reduce.h"
#include "train/grad_utils.h"
#include "train/optimizer.h"
#include "train/run_checkpoint.h"
#include "train/trainer.h"
#include "test_util.h"
#ifdef MG_WITH_CUDA
#include "cuda/runtime.h"
#endif

using namespace mg;
using test::bitwise_equal;
using test::rel_err;
using test::tiny_lm_config;
namespace fs = std::filesystem;

TEST_CASE("cuda train: without a GPU, --device cuda's request is one clear error; the CPU model is untouched") {
#ifdef MG_WITH_CUDA
  if (cuda::available()) {
    MESSAGE("skipped: a GPU is visible, the no-device path cannot be exercised here");
    return;
  }
  const auto msg = doctest::Contains("built with CUDA, but no CUDA device is visible");
#else
  const auto msg = doctest::Contains("this build has no CUDA backend: configure with -DMG_CUDA=ON");
#endif
  // What the examples do at start for --device cuda.
  const Device dev = parse_device("cuda");
  CHECK(dev.is_cuda());
  CHECK_THROWS_WITH_AS(allocator_for(dev), msg, mg::Error);
  // Module::to fails on its first parameter: nothing has moved, and the model still trains.
  nn::MambaLM model(tiny_lm_config(), 3);
  CHECK_THROWS_WITH_AS(model.to(dev), msg, mg::Error);
  for (auto& np : model.named_parameters()) CHECK(np.tensor.device().is_cpu());
  train::AdamW opt(model.named_parameters());
  CHECK(opt.device().is_cpu());
  std::vector<int32_t> ids(2 * 9);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = (int32_t)(i * 7 % 32);
  Tensor loss = model.loss(Tensor::from_vector(ids, {2, 9}));
  backward(loss);
  CHECK(std::isfinite(train::global_grad_norm(model.named_parameters())));
  CHECK_NOTHROW(opt.step(1e-3));
  CHECK(std::isfinite(loss.item()));
}

#ifdef MG_WITH_CUDA

namespace {

const Device kGpu = Device::cuda(0);

bool all_finite(const Tensor& t) {
  NoGradGuard no_grad;
  for (float v : t.to_vector<float>())
    if (!std::isfinite(v)) return false;
  return true;
}

Tensor randn(const Shape& s, uint64_t seed, double scale = 1.0) {
  Generator g(seed);
  Tensor t = Tensor::randn(s, DType::f32, &g);
  if (scale != 1.0) {
    float* p = t.data<float>();
    for (int64_t i = 0; i < t.numel(); ++i) p[i] = (float)(p[i] * scale);
  }
  return t;
}

// The same parameters on the CPU and on the GPU: odd sizes, one over two 64 Ki chunks, and
// two without weight decay (as norms and biases are).
struct ParamPair {
  std::vector<nn::NamedParam> cpu, gpu;
};
ParamPair make_params() {
  const std::vector<Shape> shapes = {{1}, {7}, {13, 3}, {33}, {70001}, {2, 65537}};
  ParamPair pp;
  for (size_t i = 0; i < shapes.size(); ++i) {
    Tensor h = randn(shapes[i], 100 + i);
    nn::ParamInfo info;
    info.weight_decay = (i % 3 != 1);
    const std::string name = "p" + std::to_string(i);
    pp.cpu.push_back({name, h, info});
    pp.gpu.push_back({name, h.copy_to(kGpu), info});
  }
  return pp;
}

// Gives both copies the same gradient for this step (large enough that clipping at 1 acts);
// the last parameter gets none on odd steps (it must then stay as it is).
void set_grads(ParamPair& pp, int step) {
  for (size_t i = 0; i < pp.cpu.size(); ++i) {
    if (i + 1 == pp.cpu.size() && step % 2 == 1) {
      pp.cpu[i].tensor.zero_grad();
      pp.gpu[i].tensor.zero_grad();
      continue;
    }
    Tensor g = randn(pp.cpu[i].tensor.shape(), 1000 * step + i, 0.5);
    pp.cpu[i].tensor.set_grad(g);
    pp.gpu[i].tensor.set_grad(g.copy_to(kGpu));
  }
}

// Runs `steps` clipped steps on both optimizers and compares every parameter and state entry.
void run_and_compare(train::Optimizer& on_cpu, train::Optimizer& on_gpu, ParamPair& pp, int steps) {
  REQUIRE(on_gpu.device() == kGpu);
  for (int s = 0; s < steps; ++s) {
    set_grads(pp, s);
    double n_cpu = train::global_grad_norm(pp.cpu), n_gpu = train::global_grad_norm(pp.gpu);
    CHECK(n_gpu == doctest::Approx(n_cpu).epsilon(1e-12));
    double lr = 1e-2 * (s + 1);
    on_cpu.step(lr, train::clip_scale(n_cpu, 1.0));
    on_gpu.step(lr, train::clip_scale(n_gpu, 1.0));
  }
  for (size_t i = 0; i < pp.cpu.size(); ++i) {
    INFO("parameter " << pp.cpu[i].name << " " << shape_str(pp.cpu[i].tensor.shape()));
    CHECK(pp.gpu[i].tensor.device() == kGpu);
    CHECK(rel_err(pp.gpu[i].tensor, pp.cpu[i].tensor) < 1e-5);
  }
  auto sc = on_cpu.state(), sg = on_gpu.state();
  REQUIRE(sc.size() == sg.size());
  for (auto& [key, t] : sc) {
    INFO("state " << key);
    REQUIRE(sg.count(key));
    if (key == "step") CHECK(sg.at(key).item() == t.item());
    else CHECK(rel_err(sg.at(key), t) < 1e-5);
  }
}

std::string temp_dir(const char* name) {
  fs::path p = fs::temp_directory_path() /
               (std::string("mg_cuda_train_") + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  return p.string();
}

}  // namespace

TEST_CASE("cuda train: AdamW (decay, clipping) and SGD (momentum, nesterov) steps match the CPU") {
  MG_SKIP_WITHOUT_GPU();
  {
    ParamPair pp = make_params();
    train::AdamW a_cpu(pp.cpu, 0.9, 0.95, 1e-8, 0.1), a_gpu(pp.gpu, 0.9, 0.95, 1e-8, 0.1);
    run_and_compare(a_cpu, a_gpu, pp, 5);
  }
  for (bool nesterov : {false, true}) {
    INFO("SGD nesterov " << nesterov);
    ParamPair pp = make_params();
    train::SGD s_cpu(pp.cpu, 0.9, nesterov, 0.01), s_gpu(pp.gpu, 0.9, nesterov, 0.01);
    run_and_compare(s_cpu, s_gpu, pp, 4);
  }
  {  // plain SGD: no momentum buffers, state is just the step
    ParamPair pp = make_params();
    train::SGD s_cpu(pp.cpu), s_gpu(pp.gpu);
    run_and_compare(s_cpu, s_gpu, pp, 2);
  }
}

TEST_CASE("cuda train: optimizer device errors: mixed devices, a gradient on the wrong device") {
  MG_SKIP_WITHOUT_GPU();
  nn::NamedParam on_cpu{"a", Tensor::zeros({3}), {}}, on_gpu{"b", Tensor::zeros({3}, DType::f32, kGpu), {}};
  CHECK_THROWS_WITH_AS(train::AdamW({on_cpu, on_gpu}),
                       doctest::Contains("AdamW: parameters on different devices ('a' on cpu, 'b' on cuda:0)"),
                       mg::Error);
  CHECK_THROWS_WITH_AS(train::SGD({on_gpu, on_cpu}, 0.9),
                       doctest::Contains("SGD: parameters on different devices"), mg::Error);
  train::AdamW opt({on_gpu});
  on_gpu.tensor.set_grad(Tensor::ones({3}));  // a CPU gradient for a CUDA parameter
  CHECK_THROWS_WITH_AS(opt.step(1e-3), doctest::Contains("gradient of 'b' is on cpu but the parameter is on cuda:0"),
                       mg::Error);
}

TEST_CASE("cuda train: global_grad_norm and find_non_finite on device gradients") {
  MG_SKIP_WITHOUT_GPU();
  ParamPair pp = make_params();
  set_grads(pp, 0);
  pp.cpu[2].tensor.zero_grad();  // an undefined grad counts as zero
  pp.gpu[2].tensor.zero_grad();
  const double n_cpu = train::global_grad_norm(pp.cpu), n_gpu = train::global_grad_norm(pp.gpu);
  CHECK(n_cpu > 1.0);
  CHECK(n_gpu == doctest::Approx(n_cpu).epsilon(1e-12));
  CHECK_FALSE(train::find_non_finite(pp.gpu).has_value());

  // A NaN in p4 and an Inf in p5 (later in the list): the first is named.
  auto poison = [&](size_t i, float value, int64_t at) {
    Tensor g = pp.cpu[i].tensor.grad().clone();
    g.data<float>()[at] = value;
    pp.gpu[i].tensor.set_grad(g.copy_to(kGpu));
  };
  poison(5, std::numeric_limits<float>::infinity(), 65536 + 3);  // in the second 64 Ki chunk
  CHECK(train::find_non_finite(pp.gpu) == std::optional<std::string>("p5"));
  CHECK(std::isinf(train::global_grad_norm(pp.gpu)));
  poison(4, std::numeric_limits<float>::quiet_NaN(), 70000);  // the last element
  CHECK(train::find_non_finite(pp.gpu) == std::optional<std::string>("p4"));
  CHECK(std::isnan(train::global_grad_norm(pp.gpu)));
}

TEST_CASE("cuda train: a tiny Mamba LM trained on CUDA follows the CPU run (train::train)") {
  MG_SKIP_WITHOUT_GPU();
  // The same seeded batch for both runs; each task copies it to its model's device.
  auto run = [](Device dev) {
    nn::MambaLM model(tiny_lm_config(), 11);
    model.to(dev);
    Generator gen(5);
    train::TrainTask task;
    task.tokens_per_micro_batch = 2 * 8;
    // One fixed batch, seen every step: a learnable stream (fresh uniform tokens each step
    // would leave nothing to learn, and the loss would wander around ln 32).
    std::vector<int32_t> ids(2 * 9);  // B 2, L 8 (+1 for the targets)
    for (auto& v : ids) v = (int32_t)gen.next_below(32);
    task.micro_batch_loss = [ids, dev](const nn::MambaLM& m) {
      return m.loss(Tensor::from_vector(ids, {2, 9}).copy_to(dev));
    };
    train::TrainConfig cfg;
    cfg.steps = 6;
    cfg.quiet = true;
    cfg.handle_sigint = false;
    cfg.max_grad_norm = 0.5;  // clipping active
    cfg.schedule = train::LrSchedule::parse("cosine", 5e-3, 5e-4, 2, cfg.steps);
    train::TrainResult r = train::train(model, cfg, task);
    for (auto& np : model.named_parameters()) CHECK(np.tensor.device() == dev);
    return std::make_pair(r.losses, model.state_dict());
  };
  auto [l_cpu, w_cpu] = run(Device::cpu());
  auto [l_gpu, w_gpu] = run(kGpu);
  REQUIRE(l_cpu.size() == 6);
  REQUIRE(l_gpu.size() == 6);
  for (size_t i = 0; i < l_cpu.size(); ++i) {
    INFO("step " << i + 1 << ": cpu " << l_cpu[i] << ", cuda " << l_gpu[i]);
    CHECK(std::isfinite(l_gpu[i]));
    CHECK(std::fabs(l_gpu[i] - l_cpu[i]) <= 1e-4 * std::fabs(l_cpu[i]));
  }
  CHECK(l_gpu.back() < l_gpu.front() - 0.2);  // it learns the batch (CPU: 3.467 -> 3.106)
  // (No elementwise weight comparison: AdamW's m / sqrt(v) turns rounding-sized gradients into
  // full-size steps of either sign, so single weights may legitimately differ by ~lr.)
  for (auto& [name, t] : w_gpu) {
    INFO(name);
    CHECK(t.device() == kGpu);
    CHECK(all_finite(t));
  }
  CHECK(w_cpu.size() == w_gpu.size());
}

TEST_CASE("cuda train: AdamW state of device parameters: save, load, resume bitwise") {
  MG_SKIP_WITHOUT_GPU();
  ParamPair a = make_params(), b = make_params();
  train::AdamW opt_a(a.gpu), opt_b(b.gpu);
  for (int s = 0; s < 3; ++s) {
    set_grads(a, s);
    opt_a.step(1e-2, 0.5);
  }
  // Through a file, as run checkpoints do: device state -> host file -> device state.
  const std::string dir = temp_dir("state");
  fs::create_directories(dir);
  const std::string path = (fs::path(dir) / "opt.safetensors").string();
  for (auto& [key, t] : opt_a.state())
    if (key != "step") CHECK(t.device() == kGpu);  // state() hands out the device tensors
  save_safetensors(path, opt_a.state());
  SafetensorsFile f = load_safetensors(path);
  for (auto& [key, t] : f.tensors) CHECK(t.device().is_cpu());
  for (size_t i = 0; i < a.gpu.size(); ++i)  // same weights in b
    allocator_for(kGpu).copy_on_device(b.gpu[i].tensor.raw_data(), a.gpu[i].tensor.raw_data(),
                                       a.gpu[i].tensor.nbytes());
  auto state_b = opt_b.state();  // handles before loading
  opt_b.load_state(f.tensors);
  CHECK(opt_b.step_count() == 3);
  for (auto& [key, t] : opt_b.state()) {
    INFO(key);
    if (key == "step") continue;
    CHECK(t.same(state_b.at(key)));  // loaded into the existing tensors
    CHECK(t.device() == kGpu);
    CHECK(bitwise_equal(t, opt_a.state().at(key)));
  }
  // One more identical step on both: identical parameters.
  set_grads(a, 3);
  for (size_t i = 0; i < a.gpu.size(); ++i) b.gpu[i].tensor.set_grad(a.gpu[i].tensor.grad());
  opt_a.step(1e-2, 0.5);
  opt_b.step(1e-2, 0.5);
  for (size_t i = 0; i < a.gpu.size(); ++i) CHECK(bitwise_equal(b.gpu[i].tensor, a.gpu[i].tensor));
  fs::remove_all(dir);
}

TEST_CASE("cuda train: a CUDA run resumed from its checkpoint equals the uninterrupted run") {
  MG_SKIP_WITHOUT_GPU();
  struct Run {
    std::vector<double> losses;
    std::map<std::string, Tensor> weights;
  };
  auto run = [](const std::string& dir, int64_t steps, const std::string& resume) {
    nn::MambaLM model(tiny_lm_config(), 4);
    model.to(kGpu);
    Generator gen(9);
    train::TrainTask task;
    task.tokens_per_micro_batch = 2 * 8;
    task.micro_batch_loss = [&](const nn::MambaLM& m) {
      std::vector<int32_t> ids(2 * 9);
      for (auto& v : ids) v = (int32_t)gen.next_below(32);
      return m.loss(Tensor::from_vector(ids, {2, 9}).copy_to(kGpu));
    };
    task.save_state = [&] { return std::map<std::string, uint64_t>{{"seed", gen.seed()}, {"offset", gen.offset()}}; };
    task.load_state = [&](const std::map<std::string, uint64_t>& s) { gen.set_state(s.at("seed"), s.at("offset")); };
    train::TrainConfig cfg;
    cfg.steps = steps;
    cfg.run_dir = dir;
    cfg.resume = resume;
    cfg.quiet = true;
    cfg.handle_sigint = false;
    cfg.schedule = train::LrSchedule::parse("cosine", 5e-3, 5e-4, 2, 6);
    train::TrainResult r = train::train(model, cfg, task);
    // After a resume the model's handles are still the ones the optimizer updated.
    Run out{r.losses, {}};
    NoGradGuard no_grad;
    for (auto& [name, t] : model.state_dict()) out.weights[name] = t.copy_to(Device::cpu());
    return out;
  };
  const std::string d1 = temp_dir("full"), d2 = temp_dir("resumed");
  Run full = run(d1, 6, "");
  Run first = run(d2, 3, "");
  Run second = run(d2, 6, "latest");
  REQUIRE(full.losses.size() == 6);
  REQUIRE(first.losses.size() == 3);
  REQUIRE(second.losses.size() == 3);
  for (int i = 0; i < 3; ++i) {
    CHECK(first.losses[i] == full.losses[i]);
    CHECK(second.losses[i] == full.losses[3 + i]);  // resumed on the device, bitwise
  }
  for (auto& [name, t] : full.weights) {
    INFO(name);
    CHECK(bitwise_equal(second.weights.at(name), t));
  }
  fs::remove_all(d1);
  fs::remove_all(d2);
}

TEST_CASE("cuda train: gelu's CUDA twin matches the CPU kernel, forward and backward") {
  MG_SKIP_WITHOUT_GPU();
  for (int64_t n : {1, 7, 13, 33, 100003}) {
    INFO("n = " << n);
    Generator g(n);
    Tensor x = Tensor::uniform({n}, -8, 8, DType::f32, &g), dy = randn({n}, n + 1);
    Tensor y = Tensor::empty({n}), dx = Tensor::empty({n});
    cpu::gelu_forward<float>(x.data<float>(), y.data<float>(), n);
    cpu::gelu_backward<float>(x.data<float>(), dy.data<float>(), dx.data<float>(), n);
    Tensor xd = x.copy_to(kGpu), dyd = dy.copy_to(kGpu);
    Tensor yd = Tensor::empty({n}, DType::f32, kGpu), dxd = Tensor::empty({n}, DType::f32, kGpu);
    cuda::gelu_forward(xd.data<float>(), yd.data<float>(), n);
    cuda::gelu_backward(xd.data<float>(), dyd.data<float>(), dxd.data<float>(), n);
    CHECK(rel_err(yd, y) < 1e-6);
    CHECK(rel_err(dxd, dx) < 1e-6);
  }
  // The public op on CUDA tensors, through the tape.
  Tensor xh = randn({5, 7}, 3).requires_grad_(), xd = xh.detach().copy_to(kGpu).requires_grad_();
  Tensor yh = gelu(xh), yd = gelu(xd);
  CHECK(yd.device() == kGpu);
  CHECK(rel_err(yd, yh) < 1e-6);
  backward(sum(yh));
  backward(sum(yd));
  REQUIRE(xd.grad().defined());
  CHECK(xd.grad().device() == kGpu);
  CHECK(rel_err(xd.grad(), xh.grad()) < 1e-6);
}

#endif  // MG_WITH_CUDA
