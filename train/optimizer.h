// train/optimizer.h — AdamW (the recipe of the Mamba paper) and SGD with momentum.
//
// An optimizer holds the model's parameter handles (nn::NamedParam: name, leaf tensor, role)
// and, per parameter, its state tensors. `step(lr, grad_scale)` reads each parameter's .grad(),
// multiplied by grad_scale as it is read (the clipping factor from train/grad_utils.h; the
// gradient tensor itself is never modified), and updates the parameter VALUES in place, so
// every handle (the model's, the optimizer's) stays valid. Parameters whose grad is undefined
// are skipped: neither their values nor their state change. The learning rate is an argument
// of step because the schedule (train/schedule.h) is a pure function of the step number.
//
// ---- AdamW (Loshchilov & Hutter 2019), exactly as PyTorch's torch.optim.AdamW ------------------
// With t = the step count after incrementing (1 on the first step), g = grad_scale * grad:
//     p  <- p - lr * wd * p                       decoupled decay, only where info.weight_decay
//     m  <- beta1 * m + (1 - beta1) * g
//     v  <- beta2 * v + (1 - beta2) * g^2
//     p  <- p - (lr / c1) * m / (sqrt(v) / sqrt(c2) + eps),   c1 = 1 - beta1^t, c2 = 1 - beta2^t
// Paper recipe (App. E.2): betas (0.9, 0.95), weight decay 0.1, and no decay on biases, norm
// weights, A_log and D (nn/ marks those with info.weight_decay = false).
// One difference from PyTorch, documented: the step count t is one per optimizer, not one per
// parameter, so a parameter that had no gradient on some steps still uses the global t.
//
// ---- SGD (as torch.optim.SGD with dampening 0) --------------------------------------------------
//     g   <- grad_scale * grad + wd * p            coupled L2 decay, only where info.weight_decay
//     buf <- momentum * buf + g                    (buf starts at 0, so the first buf is g)
//     d   <- nesterov ? g + momentum * buf : buf   (d = g when momentum = 0)
//     p   <- p - lr * d
//
// ---- State, for exact resume -------------------------------------------------------------------
// state() returns shared handles: AdamW "m.<name>", "v.<name>"; SGD "momentum.<name>"; both
// "step" (a 1-element f64 tensor holding the step count, exact up to 2^53). load_state copies
// values into the existing state tensors (converting f32 <-> f64) and checks everything first:
// one mg::Error lists every missing, unexpected and mis-shaped entry, and nothing is modified.
//
// ---- Devices ------------------------------------------------------------------------------------
// All parameters of one optimizer live on one device (else the constructor throws, naming two
// parameters and their devices): move the model first (Module::to), then create the optimizer.
// CPU: f32 and f64 (cpu::adamw_update / cpu::sgd_update). CUDA: f32 only, the fused twins
// cuda::adamw_update / cuda::sgd_update (cuda/adamw.h, same formulas and arguments), enqueued
// on the stream with no host sync. Each parameter's state has its parameter's dtype and device.
// state() hands out those tensors as they are (device tensors for a CUDA model; the
// safetensors writer copies them to the host); load_state accepts them on any device, in f32
// or f64, and copies the values into the existing state (host -> device when needed), so the
// handles stay valid. Deterministic: each element's update depends only on its own values, so
// neither the thread count nor the GPU's launch shape matters.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "nn/module.h"

namespace mg::cpu {

// One AdamW step on n contiguous elements (formula above). bias_c1 = 1 - beta1^t,
// bias_c2 = 1 - beta2^t; weight_decay = 0 for parameters without decay.
template <typename T>
void adamw_update(T* p, const T* g, T* m, T* v, int64_t n, T lr, T beta1, T beta2, T eps,
                  T weight_decay, T bias_c1, T bias_c2, T grad_scale);

// One SGD step on n contiguous elements (formula above); buf is unused when momentum = 0.
template <typename T>
void sgd_update(T* p, const T* g, T* buf, int64_t n, T lr, T momentum, bool nesterov,
                T weight_decay, T grad_scale);

}  // namespace mg::cpu

namespace mg::train {

// What the training loop needs from any optimizer.
class Optimizer {
 public:
  virtual ~Optimizer() = default;
  virtual void step(double lr, double grad_scale = 1.0) = 0;
  virtual std::map<std::string, Tensor> state() const = 0;
  virtual void load_state(const std::map<std::string, Tensor>& state) = 0;
  // The parameter groups, for programs to print at start, e.g.
  //   "AdamW (betas 0.9, 0.95; eps 1e-08; weight decay 0.1): decay 11 tensors (76,800 params) |
  //    no decay 11 tensors (5,056 params): backbone.layers.*.norm.weight (x2), ...,
  //    backbone.norm_f.weight"   (one line; layer indices folded into '*', with counts)
  virtual std::string describe_groups() const = 0;
  int64_t step_count() const { return step_count_; }  // completed steps
  Device device() const;  // where the parameters (and the state) live; CPU when there are none
  const std::vector<nn::NamedParam>& params() const { return params_; }

 protected:
  explicit Optimizer(std::vector<nn::NamedParam> params, const char* who);
  std::string describe_groups_as(const std::string& title) const;
  // Shared by load_state: checks names/shapes of `state` against the expected prefixes and the
  // "step" entry, throws one error listing every problem, then copies (nothing is modified on
  // error). `slots[k][i]` is the state tensor for prefix k and parameter i.
  void load_state_into(const std::map<std::string, Tensor>& state,
                       const std::vector<std::string>& prefixes,
                       const std::vector<std::vector<Tensor>>& slots, const char* who);
  std::map<std::string, Tensor> state_from(const std::vector<std::string>& prefixes,
                                           const std::vector<std::vector<Tensor>>& slots) const;

  std::vector<nn::NamedParam> params_;
  int64_t step_count_ = 0;
};

class AdamW : public Optimizer {
 public:
  explicit AdamW(std::vector<nn::NamedParam> params, double beta1 = 0.9, double beta2 = 0.95,
                 double eps = 1e-8, double weight_decay = 0.1);

  void step(double lr, double grad_scale = 1.0) override;
  std::map<std::string, Tensor> state() const override;  // m.<name>, v.<name>, step
  void load_state(const std::map<std::string, Tensor>& state) override;
  std::string describe_groups() const override;

  double beta1() const { return beta1_; }
  double beta2() const { return beta2_; }
  double eps() const { return eps_; }
  double weight_decay() const { return weight_decay_; }

 private:
  double beta1_, beta2_, eps_, weight_decay_;
  std::vector<Tensor> m_, v_;  // first and second moments, one per parameter
};

class SGD : public Optimizer {
 public:
  explicit SGD(std::vector<nn::NamedParam> params, double momentum = 0.0, bool nesterov = false,
               double weight_decay = 0.0);

  void step(double lr, double grad_scale = 1.0) override;
  std::map<std::string, Tensor> state() const override;  // momentum.<name> (if any), step
  void load_state(const std::map<std::string, Tensor>& state) override;
  std::string describe_groups() const override;

 private:
  double momentum_, weight_decay_;
  bool nesterov_;
  std::vector<Tensor> buf_;  // momentum buffers (empty when momentum = 0)
};

}  // namespace mg::train
