// nn/layers.h — the thin layers a Mamba model is assembled from. Each one holds its
// parameters as plain Tensor members and calls exactly one op (names run straight through:
// nn::RMSNorm -> mg::rms_norm -> cpu::rms_norm_forward; the fused form nn::RMSNorm::forward(x,
// residual) -> mg::add_rms_norm -> cpu::add_rms_norm_forward).
//
//   layer          parameters (shapes)                         forward
//   Linear         weight (out, in), bias (out) optional       y = x W^T + b       (..., in) -> (..., out)
//   Embedding      weight (V, D)                               y = W[ids]          ids (...) i32 -> (..., D)
//   CausalConv1d   weight (C, 1, K), bias (C)                  y[t] = b + sum_k w[k] x[t-K+1+k]   (B, L, C)
//   RMSNorm        weight (D)                                  y = x / sqrt(mean(x^2) + eps) * w  (..., D)
//                                                              or s = residual + x, y = norm(s)   (fused)
//   LayerNorm      weight (D), bias (D)                        y = (x - mu) / sqrt(var + eps) * w + b
//
// Constructors make correctly shaped parameters with PyTorch's default initialisation (Linear
// and conv: U(+-1/sqrt(fan_in)); Embedding: N(0, 1); norms: weight 1, bias 0), drawn from `gen`.
// The Mamba model re-initialises everything its own way (nn/init.h).
#pragma once
#include <cstdint>

#include "core/rng.h"
#include "ops/add_norm.h"
#include "nn/module.h"

namespace mg::nn {

class Linear : public Module {
 public:
  Linear() = default;
  Linear(int64_t in_features, int64_t out_features, bool bias, Generator& gen);
  explicit Linear(Tensor weight, Tensor bias = {});  // adopts the tensors as parameters
  Tensor forward(const Tensor& x) const;  // (..., in) -> (..., out)
  void visit(ParamVisitor& v) override;

  Tensor weight;  // (out, in)
  Tensor bias;    // (out) or undefined
};

class Embedding : public Module {
 public:
  Embedding() = default;
  Embedding(int64_t num_embeddings, int64_t dim, Generator& gen);
  explicit Embedding(Tensor weight);
  Tensor forward(const Tensor& ids) const;  // ids (...) i32 -> (..., D)
  void visit(ParamVisitor& v) override;

  Tensor weight;  // (V, D)
};

class CausalConv1d : public Module {
 public:
  CausalConv1d() = default;
  CausalConv1d(int64_t channels, int64_t kernel_size, Generator& gen);
  CausalConv1d(Tensor weight, Tensor bias);
  Tensor forward(const Tensor& x) const;  // (B, L, C) -> (B, L, C), channel-last
  void visit(ParamVisitor& v) override;

  Tensor weight;  // (C, 1, K): tap K-1 multiplies the current step
  Tensor bias;    // (C)
};

class RMSNorm : public Module {
 public:
  RMSNorm() = default;
  explicit RMSNorm(int64_t dim, double eps = 1e-5);
  Tensor forward(const Tensor& x) const;  // (..., D) -> (..., D)
  // The pre-norm of a residual block, fused (mg::add_rms_norm, ops/add_norm.h): s = residual
  // + x (residual undefined: zero), y = norm(s) in out_dtype (default: the weight's); returns
  // {y, s}, or {y} without return_residual (a final norm).
  AddNormResult forward(const Tensor& x, const Tensor& residual,
                        std::optional<DType> out_dtype = std::nullopt,
                        bool return_residual = true) const;
  void visit(ParamVisitor& v) override;

  Tensor weight;  // (D)
  double eps = 1e-5;
};

class LayerNorm : public Module {
 public:
  LayerNorm() = default;
  explicit LayerNorm(int64_t dim, double eps = 1e-5, bool bias = true);
  Tensor forward(const Tensor& x) const;  // (..., D) -> (..., D)
  void visit(ParamVisitor& v) override;

  Tensor weight;  // (D)
  Tensor bias;    // (D) or undefined
  double eps = 1e-5;
};

}  // namespace mg::nn
