// train/grad_utils.h — what the training loop does with gradients between backward and step:
// the global norm, the clipping factor, and the non-finite guard. None of these modifies a
// gradient: clipping is a factor the optimizer applies as it reads (AdamW::step's grad_scale).
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "nn/module.h"

namespace mg::train {

// sqrt(sum over every defined grad of sum g^2), accumulated in double. Deterministic: each
// tensor is cut into fixed 64 Ki-element blocks whose partial sums are added in index order,
// tensors in list order, so the result does not depend on the thread count. Undefined grads
// count as zero. CPU tensors (f32 or f64) and CUDA tensors (f32).
// CUDA grads: every tensor's sum of squares is added, in list order, to one device double
// (cuda::accumulate_sum_of_squares: the same 64 Ki chunks, each summed in double), which is
// read back once — one host sync per call. That sync is the price of a plain double in the
// training loop's log line; cuda/adamw.h's clip_scale_device is the sync-free alternative.
// Device and CPU sums agree to double rounding (the order inside a chunk differs), not bitwise.
double global_grad_norm(const std::vector<nn::NamedParam>& params);

// The factor that clips the global norm to max_norm, as torch.nn.utils.clip_grad_norm_:
// min(1, max_norm / (norm + 1e-6)); 1 when max_norm <= 0 (clipping off). A non-finite norm
// gives 0 (inf) or NaN: check with find_non_finite and skip the step instead.
double clip_scale(double norm, double max_norm);

// The name of the first parameter (list order) whose grad holds a NaN or an Inf, or nullopt.
// CUDA grads: one sum of squares per tensor into one device buffer, read back once (one host
// sync). A sum of f32 squares in double cannot overflow (|g| < 2^128, so even 2^63 squares
// stay below 2^319, far from double's 2^1024): it is non-finite exactly when some element is
// NaN or Inf.
// A finite global_grad_norm already proves every grad finite: callers need this only when
// the norm is not finite (train/trainer.cpp does so).
std::optional<std::string> find_non_finite(const std::vector<nn::NamedParam>& params);

// A diagnosis for a non-finite loss: "the weight <name> is not finite" (the first in list
// order), or "the weights are finite; the largest |w| is 524 (<name>)". Copies each weight to
// the host: for error messages only.
std::string describe_weights(const std::vector<nn::NamedParam>& params);

}  // namespace mg::train
