#include "nn/layers.h"

#include <cmath>

#include "ops/conv1d.h"
#include "ops/embedding.h"
#include "ops/matmul.h"
#include "ops/norm.h"

namespace mg::nn {

namespace {
Tensor leaf(Tensor t) { return t.requires_grad_(true); }
Tensor uniform_leaf(const Shape& shape, double bound, Generator& gen) {
  return leaf(Tensor::uniform(shape, -bound, bound, DType::f32, &gen));
}
}  // namespace

// ---- Linear -------------------------------------------------------------------------------
Linear::Linear(int64_t in, int64_t out, bool with_bias, Generator& gen) {
  MG_CHECK(in > 0 && out > 0, "nn::Linear: sizes must be positive, got in ", in, ", out ", out);
  double bound = 1.0 / std::sqrt((double)in);
  weight = uniform_leaf({out, in}, bound, gen);
  if (with_bias) bias = uniform_leaf({out}, bound, gen);
}
Linear::Linear(Tensor w, Tensor b) : weight(leaf(std::move(w))) {
  MG_CHECK(weight.dim() == 2, "nn::Linear: weight must be (out, in), got ", shape_str(weight.shape()));
  if (b.defined()) bias = leaf(std::move(b));
}
Tensor Linear::forward(const Tensor& x) const { return linear(x, weight, bias); }
void Linear::visit(ParamVisitor& v) {
  v.parameter("weight", weight);
  if (bias.defined()) v.parameter("bias", bias, {.weight_decay = false});
}

// ---- Embedding ----------------------------------------------------------------------------
Embedding::Embedding(int64_t V, int64_t D, Generator& gen) {
  MG_CHECK(V > 0 && D > 0, "nn::Embedding: sizes must be positive, got V ", V, ", D ", D);
  weight = leaf(Tensor::randn({V, D}, DType::f32, &gen));
}
Embedding::Embedding(Tensor w) : weight(leaf(std::move(w))) {
  MG_CHECK(weight.dim() == 2, "nn::Embedding: weight must be (V, D), got ", shape_str(weight.shape()));
}
Tensor Embedding::forward(const Tensor& ids) const { return embedding(ids, weight); }
void Embedding::visit(ParamVisitor& v) { v.parameter("weight", weight); }

// ---- CausalConv1d -------------------------------------------------------------------------
CausalConv1d::CausalConv1d(int64_t C, int64_t K, Generator& gen) {
  MG_CHECK(C > 0 && K > 0, "nn::CausalConv1d: sizes must be positive, got C ", C, ", K ", K);
  double bound = 1.0 / std::sqrt((double)K);  // fan_in = (in_channels / groups) * K = K
  weight = uniform_leaf({C, 1, K}, bound, gen);
  bias = uniform_leaf({C}, bound, gen);
}
CausalConv1d::CausalConv1d(Tensor w, Tensor b) : weight(leaf(std::move(w))), bias(leaf(std::move(b))) {
  MG_CHECK(weight.dim() == 3 && weight.size(1) == 1, "nn::CausalConv1d: weight must be (C, 1, K), got ",
           shape_str(weight.shape()));
}
Tensor CausalConv1d::forward(const Tensor& x) const { return causal_conv1d(x, weight, bias); }
void CausalConv1d::visit(ParamVisitor& v) {
  v.parameter("weight", weight);
  v.parameter("bias", bias, {.weight_decay = false});
}

// ---- RMSNorm ------------------------------------------------------------------------------
RMSNorm::RMSNorm(int64_t D, double eps_) : eps(eps_) {
  MG_CHECK(D > 0, "nn::RMSNorm: dim must be positive, got ", D);
  weight = leaf(Tensor::ones({D}));
}
Tensor RMSNorm::forward(const Tensor& x) const { return rms_norm(x, weight, eps); }
AddNormResult RMSNorm::forward(const Tensor& x, const Tensor& residual,
                               std::optional<DType> out_dtype, bool return_residual) const {
  return add_rms_norm(x, residual, weight, eps, out_dtype, return_residual);
}
void RMSNorm::visit(ParamVisitor& v) { v.parameter("weight", weight, {.weight_decay = false}); }

// ---- LayerNorm ----------------------------------------------------------------------------
LayerNorm::LayerNorm(int64_t D, double eps_, bool with_bias) : eps(eps_) {
  MG_CHECK(D > 0, "nn::LayerNorm: dim must be positive, got ", D);
  weight = leaf(Tensor::ones({D}));
  if (with_bias) bias = leaf(Tensor::zeros({D}));
}
Tensor LayerNorm::forward(const Tensor& x) const { return layer_norm(x, weight, bias, eps); }
void LayerNorm::visit(ParamVisitor& v) {
  v.parameter("weight", weight, {.weight_decay = false});
  if (bias.defined()) v.parameter("bias", bias, {.weight_decay = false});
}

}  // namespace mg::nn
