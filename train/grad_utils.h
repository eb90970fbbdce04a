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
// count as zero. CPU tensors (f32 or f64).
double global_grad_norm(const std::vector<nn::NamedParam>& params);

// The factor that clips the global norm to max_norm, as torch.nn.utils.clip_grad_norm_:
// min(1, max_norm / (norm + 1e-6)); 1 when max_norm <= 0 (clipping off). A non-finite norm
// gives 0 (inf) or NaN: check with find_non_finite and skip the step instead.
double clip_scale(double norm, double max_norm);

// The name of the first parameter (list order) whose grad holds a NaN or an Inf, or nullopt.
std::optional<std::string> find_non_finite(const std::vector<nn::NamedParam>& params);

}  // namespace mg::train
