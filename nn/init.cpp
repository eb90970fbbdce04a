#include "nn/init.h"

#include <cmath>

#include "autograd/grad_mode.h"
#include "nn/mamba.h"

namespace mg::nn {

double inverse_softplus(double y) { return y + std::log(-std::expm1(-y)); }

namespace {

// Writes `values` (same shape, any float dtype, CPU) into the parameter `param` in place.
void assign(Tensor& param, const Tensor& values) {
  MG_CHECK(values.shape() == param.shape(), "init: shape ", shape_str(values.shape()),
           " does not match parameter ", shape_str(param.shape()));
  check_cpu("nn::init (initialise on the CPU, then move the model)", param);
  param.copy_values_from(values);
}

void uniform_(Tensor& param, double bound, Generator& gen) {
  assign(param, Tensor::uniform(param.shape(), -bound, bound, param.dtype(), &gen));
}
void normal_(Tensor& param, double stddev, Generator& gen) {
  Tensor z = Tensor::randn(param.shape(), DType::f64, &gen);
  double* p = z.data<double>();
  for (int64_t i = 0; i < z.numel(); ++i) p[i] *= stddev;
  assign(param, z);
}
void fill_(Tensor& param, double value) { assign(param, Tensor::full(param.shape(), value, DType::f64)); }

}  // namespace

void init_mixer(MambaMixer& m, const MambaConfig& cfg, Generator& gen) {
  NoGradGuard no_grad;
  const int64_t ED = cfg.d_inner(), N = cfg.d_state, R = cfg.rank(), K = cfg.d_conv;
  uniform_(m.in_proj.weight, 1.0 / std::sqrt((double)cfg.d_model), gen);
  uniform_(m.conv1d.weight, 1.0 / std::sqrt((double)K), gen);
  uniform_(m.conv1d.bias, 1.0 / std::sqrt((double)K), gen);
  uniform_(m.x_proj.weight, 1.0 / std::sqrt((double)ED), gen);
  uniform_(m.dt_proj.weight, 1.0 / std::sqrt((double)R), gen);

  // dt_proj.bias: delta = softplus(bias) starts log-uniform in [dt_min, dt_max].
  std::vector<double> bias(ED);
  const double log_min = std::log(cfg.dt_min), log_max = std::log(cfg.dt_max);
  for (int64_t d = 0; d < ED; ++d) {
    double dt = std::exp(gen.next_uniform() * (log_max - log_min) + log_min);
    dt = std::max(dt, cfg.dt_init_floor);
    bias[d] = inverse_softplus(dt);
  }
  assign(m.dt_proj.bias, Tensor::from_vector(bias, {ED}));

  std::vector<double> a_log(ED * N);  // A_log[d, n] = ln(n + 1)
  for (int64_t d = 0; d < ED; ++d)
    for (int64_t n = 0; n < N; ++n) a_log[d * N + n] = std::log((double)(n + 1));
  assign(m.A_log, Tensor::from_vector(a_log, {ED, N}));
  fill_(m.D, 1.0);

  // out_proj: the default bound, divided by sqrt(n_layer) (one residual add per layer).
  uniform_(m.out_proj.weight, 1.0 / std::sqrt((double)ED) / std::sqrt((double)cfg.n_layer), gen);
}

void init_mamba(MambaLM& model, Generator& gen) {
  NoGradGuard no_grad;
  const MambaConfig& cfg = model.config();
  normal_(model.embeddings.weight, 0.02, gen);
  for (MambaBlock& layer : model.layers) {
    fill_(layer.norm.weight, 1.0);
    init_mixer(layer.mixer, cfg, gen);
  }
  fill_(model.norm_f.weight, 1.0);
  if (model.lm_head.defined()) normal_(model.lm_head, 0.02, gen);
}

}  // namespace mg::nn
