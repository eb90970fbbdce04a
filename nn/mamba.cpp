#include "nn/mamba.h"

#include <charconv>
#include <cstdlib>
#include <sstream>

#include "nn/init.h"
#include "ops/arith.h"
#include "ops/conv1d.h"
#include "ops/convert.h"
#include "ops/matmul.h"
#include "ops/selective_scan/selective_scan.h"
#include "ops/shape.h"
#include "ops/softmax.h"
#include "ops/unary.h"

namespace mg::nn {

// ---- MambaConfig ------------------------------------------------------------------------------
int64_t MambaConfig::padded_vocab() const {
  if (pad_vocab_multiple <= 1) return vocab_size;
  return (vocab_size + pad_vocab_multiple - 1) / pad_vocab_multiple * pad_vocab_multiple;
}
int64_t MambaConfig::d_inner() const { return expand * d_model; }
int64_t MambaConfig::rank() const { return dt_rank > 0 ? dt_rank : (d_model + 15) / 16; }

void MambaConfig::validate() const {
  auto positive = [](const char* field, int64_t v) {
    MG_CHECK(v > 0, "MambaConfig: ", field, " must be positive, got ", v);
  };
  positive("d_model", d_model);
  positive("n_layer", n_layer);
  positive("vocab_size", vocab_size);
  positive("d_state", d_state);
  positive("d_conv", d_conv);
  positive("expand", expand);
  MG_CHECK(dt_rank >= 0, "MambaConfig: dt_rank must be >= 0 (0 = auto), got ", dt_rank);
  MG_CHECK(pad_vocab_multiple >= 0, "MambaConfig: pad_vocab_multiple must be >= 0, got ",
           pad_vocab_multiple);
  MG_CHECK(eps > 0, "MambaConfig: eps must be positive, got ", eps);
  MG_CHECK(0 < dt_min && dt_min <= dt_max, "MambaConfig: need 0 < dt_min <= dt_max, got ", dt_min,
           ", ", dt_max);
  MG_CHECK(dt_init_floor > 0, "MambaConfig: dt_init_floor must be positive, got ", dt_init_floor);
}

static std::string num_str(double v) {
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, v);  // shortest text that reads back exactly
  return std::string(buf, r.ptr);
}

std::map<std::string, std::string> MambaConfig::to_metadata() const {
  return {{"architecture", "mamba"},
          {"d_model", std::to_string(d_model)},
          {"n_layer", std::to_string(n_layer)},
          {"vocab_size", std::to_string(vocab_size)},
          {"d_state", std::to_string(d_state)},
          {"d_conv", std::to_string(d_conv)},
          {"expand", std::to_string(expand)},
          {"dt_rank", std::to_string(rank())},
          {"eps", num_str(eps)},
          {"pad_vocab_multiple", std::to_string(pad_vocab_multiple)},
          {"tie_embeddings", tie_embeddings ? "true" : "false"},
          {"dt_min", num_str(dt_min)},
          {"dt_max", num_str(dt_max)},
          {"dt_init_floor", num_str(dt_init_floor)}};
}

MambaConfig MambaConfig::from_metadata(const std::map<std::string, std::string>& meta) {
  MambaConfig c;
  auto find = [&](const char* key, bool required) -> const std::string* {
    auto it = meta.find(key);
    MG_CHECK(it != meta.end() || !required, "MambaConfig::from_metadata: missing key '", key, "'");
    return it == meta.end() ? nullptr : &it->second;
  };
  auto get_int = [&](const char* key, int64_t& out, bool required = false) {
    if (const std::string* s = find(key, required)) {
      auto r = std::from_chars(s->data(), s->data() + s->size(), out);
      MG_CHECK(r.ec == std::errc() && r.ptr == s->data() + s->size(),
               "MambaConfig::from_metadata: '", key, "' is not an integer: '", *s, "'");
    }
  };
  auto get_double = [&](const char* key, double& out) {
    if (const std::string* s = find(key, false)) {
      char* end = nullptr;
      out = std::strtod(s->c_str(), &end);
      MG_CHECK(!s->empty() && end == s->c_str() + s->size(), "MambaConfig::from_metadata: '", key,
               "' is not a number: '", *s, "'");
    }
  };
  if (const std::string* a = find("architecture", false))
    MG_CHECK(*a == "mamba", "MambaConfig::from_metadata: architecture is '", *a,
             "', expected 'mamba'");
  get_int("d_model", c.d_model, true);
  get_int("n_layer", c.n_layer, true);
  get_int("vocab_size", c.vocab_size, true);
  get_int("d_state", c.d_state);
  get_int("d_conv", c.d_conv);
  get_int("expand", c.expand);
  get_int("dt_rank", c.dt_rank);
  get_int("pad_vocab_multiple", c.pad_vocab_multiple);
  get_double("eps", c.eps);
  get_double("dt_min", c.dt_min);
  get_double("dt_max", c.dt_max);
  get_double("dt_init_floor", c.dt_init_floor);
  if (const std::string* t = find("tie_embeddings", false)) {
    MG_CHECK(*t == "true" || *t == "false" || *t == "1" || *t == "0",
             "MambaConfig::from_metadata: 'tie_embeddings' must be true or false, got '", *t, "'");
    c.tie_embeddings = (*t == "true" || *t == "1");
  }
  c.validate();
  return c;
}

std::string MambaConfig::str() const {
  std::ostringstream os;
  os << "Mamba(d_model " << d_model << ", n_layer " << n_layer << ", vocab " << vocab_size
     << " -> " << padded_vocab() << ", d_state " << d_state << ", d_conv " << d_conv
     << ", expand " << expand << ", dt_rank " << rank() << (tie_embeddings ? ", tied" : ", untied")
     << ")";
  return os.str();
}

// ---- MambaMixer -----------------------------------------------------------------------------
MambaMixer::MambaMixer(const MambaConfig& cfg)
    : d_inner(cfg.d_inner()), d_state(cfg.d_state), dt_rank(cfg.rank()), d_conv(cfg.d_conv) {
  const int64_t Dm = cfg.d_model, ED = d_inner, N = d_state, R = dt_rank, K = d_conv;
  in_proj = Linear(Tensor::zeros({2 * ED, Dm}));
  conv1d = CausalConv1d(Tensor::zeros({ED, 1, K}), Tensor::zeros({ED}));
  x_proj = Linear(Tensor::zeros({R + 2 * N, ED}));
  dt_proj = Linear(Tensor::zeros({ED, R}), Tensor::zeros({ED}));
  A_log = Tensor::zeros({ED, N}).requires_grad_(true);
  D = Tensor::ones({ED}).requires_grad_(true);
  out_proj = Linear(Tensor::zeros({Dm, ED}));
}

Tensor MambaMixer::forward(const Tensor& h, LayerState* state) const {
  const int64_t ED = d_inner, N = d_state, R = dt_rank;
  Tensor xz = in_proj.forward(h);                           // (B, L, 2ED)
  std::vector<Tensor> x_z = split(xz, {ED, ED}, -1);
  const Tensor& x = x_z[0];                                 // (B, L, ED)  SSM branch
  const Tensor& z = x_z[1];                                 // (B, L, ED)  gate
  Tensor u = silu(conv1d.forward(x));                       // (B, L, ED)
  Tensor x_dbl = x_proj.forward(u);                         // (B, L, R+2N)
  std::vector<Tensor> dt_B_C = split(x_dbl, {R, N, N}, -1);
  const Tensor& dt = dt_B_C[0];                             // (B, L, R)
  const Tensor& Bm = dt_B_C[1];                             // (B, L, N)
  const Tensor& C = dt_B_C[2];                              // (B, L, N)
  Tensor delta = linear(dt, dt_proj.weight);                // (B, L, ED)  no bias: the scan adds it
  Tensor A = -exp(A_log);                                   // (ED, N)
  ScanResult scan = selective_scan(u, delta, A, Bm, C, D, z, dt_proj.bias,
                                   /*delta_softplus=*/true);  // y (B, L, ED)
  if (state) {
    state->conv_state = causal_conv1d_state(x.detach(), d_conv);    // (B, ED, K)
    state->ssm_state = scan.h_last.detach();                         // (B, ED, N)
  }
  return out_proj.forward(scan.y);                          // (B, L, D)
}

void MambaMixer::visit(ParamVisitor& v) {
  // Listed here (not through the sub-layers) so that each parameter's role sits in one place.
  const ParamInfo no_decay{.weight_decay = false}, custom{.custom_init = true};
  const ParamInfo no_decay_custom{.weight_decay = false, .custom_init = true};
  v.parameter("in_proj.weight", in_proj.weight);
  v.parameter("conv1d.weight", conv1d.weight);
  v.parameter("conv1d.bias", conv1d.bias, no_decay);
  v.parameter("x_proj.weight", x_proj.weight);
  v.parameter("dt_proj.weight", dt_proj.weight);
  v.parameter("dt_proj.bias", dt_proj.bias, no_decay_custom);
  v.parameter("A_log", A_log, no_decay_custom);
  v.parameter("D", D, no_decay_custom);
  v.parameter("out_proj.weight", out_proj.weight, custom);
}

// ---- MambaBlock -----------------------------------------------------------------------------
MambaBlock::MambaBlock(const MambaConfig& cfg) : norm(cfg.d_model, cfg.eps), mixer(cfg) {}

HiddenResidual MambaBlock::forward(const HiddenResidual& in, LayerState* state) const {
  // residual = hidden + residual (f32; under bf16 precision the mixer's bf16 output is widened
  // on load), normed in the same pass and written in in_proj's GEMM dtype (bf16 or f32).
  const DType gemm = linear_input_dtype(norm.weight.dtype(), mixer.in_proj.weight.dtype());
  AddNormResult n = norm.forward(in.hidden, in.residual, gemm);  // (B, L, D) each
  return {mixer.forward(n.y, state), n.residual};
}

void MambaBlock::visit(ParamVisitor& v) {
  v.module("norm", norm);
  v.module("mixer", mixer);
}

// ---- MambaLM --------------------------------------------------------------------------------
MambaLM::MambaLM(const MambaConfig& cfg, Generator& gen) : cfg_(cfg) { build(gen); }

MambaLM::MambaLM(const MambaConfig& cfg, uint64_t seed) : cfg_(cfg) {
  Generator gen(seed);
  build(gen);
}

void MambaLM::build(Generator& gen) {
  cfg_.validate();
  embeddings = Embedding(Tensor::zeros({cfg_.padded_vocab(), cfg_.d_model}));
  layers.reserve(cfg_.n_layer);
  for (int64_t i = 0; i < cfg_.n_layer; ++i) layers.emplace_back(cfg_);
  norm_f = RMSNorm(cfg_.d_model, cfg_.eps);
  if (!cfg_.tie_embeddings)
    lm_head = Tensor::zeros({cfg_.padded_vocab(), cfg_.d_model}).requires_grad_(true);
  init_mamba(*this, gen);
}

void MambaLM::check_ids(const char* op, const Tensor& ids, int64_t want_dim) const {
  check_defined(op, ids, "ids");
  MG_CHECK(ids.dtype() == DType::i32, op, ": ids must be i32 token ids, got ",
           dtype_name(ids.dtype()));
  MG_CHECK(ids.dim() == want_dim, op, ": ids must have ", want_dim == 2 ? "shape (B, L)" : "shape (B)",
           ", got ", shape_str(ids.shape()));
  MG_CHECK(ids.numel() > 0, op, ": ids are empty (shape ", shape_str(ids.shape()), ")");
  const Tensor host = ids.device().is_cpu() ? ids : ids.copy_to(Device::cpu());
  const int32_t* id = host.data<int32_t>();
  const int64_t V = cfg_.padded_vocab(), L = want_dim == 2 ? ids.size(1) : 1;
  for (int64_t i = 0; i < ids.numel(); ++i)
    MG_CHECK(id[i] >= 0 && id[i] < V, op, ": token id ", id[i], " at (b ", i / L, ", t ", i % L,
             ") of ids ", shape_str(ids.shape()), " is outside this model's vocabulary [0, ", V,
             ")");
}

Tensor MambaLM::hidden_states(const Tensor& ids) const {
  check_ids("MambaLM::forward", ids, 2);
  HiddenResidual h{embeddings.forward(ids), Tensor()};  // (B, L, D), no residual yet
  for (const MambaBlock& layer : layers) h = layer.forward(h);
  return final_norm(h);                                  // (B, L, D)
}

Tensor MambaLM::final_norm(const HiddenResidual& h) const {
  const DType gemm = linear_input_dtype(norm_f.weight.dtype(), lm_head_weight().dtype());
  // norm_f(hidden + residual); the sum feeds nothing else (the reference's prenorm=False)
  return norm_f.forward(h.hidden, h.residual, gemm, /*return_residual=*/false).y;
}

Tensor MambaLM::forward(const Tensor& ids) const {
  // (B, L, V_pad), f32 (a bf16 product under bf16 precision is widened for the caller)
  return widen_bf16(linear(hidden_states(ids), lm_head_weight()));
}

Tensor MambaLM::loss(const Tensor& ids) const {
  check_ids("MambaLM::loss", ids, 2);
  const int64_t B = ids.size(0), L = ids.size(1), V = cfg_.padded_vocab();
  MG_CHECK(L >= 2, "MambaLM::loss: next-token loss needs L >= 2, got ids ", shape_str(ids.shape()));
  // Position L-1 predicts nothing: drop it before the (large) vocabulary projection.
  Tensor h = slice(hidden_states(ids), 1, 0, L - 1);        // (B, L-1, D)
  Tensor logits = linear(h, lm_head_weight());              // (B, L-1, V_pad)
  Tensor targets = slice(ids, 1, 1, L);                     // (B, L-1)
  return cross_entropy(reshape(logits, {B * (L - 1), V}), targets.view({B * (L - 1)}));
}

Tensor MambaLM::loss(const Tensor& ids, const Tensor& targets, int32_t ignore_index) const {
  return forward(ids, targets, ignore_index).loss;
}

LMOutput MambaLM::forward(const Tensor& ids, const Tensor& targets, int32_t ignore_index) const {
  check_defined("MambaLM::forward", targets, "targets");
  MG_CHECK(targets.dtype() == DType::i32 && targets.shape() == ids.shape(),
           "MambaLM::forward: targets must be i32 of the ids' shape ", shape_str(ids.shape()),
           ", got ", dtype_name(targets.dtype()), " ", shape_str(targets.shape()));
  LMOutput out;
  out.logits = forward(ids);  // (B, L, V_pad)
  const int64_t BL = ids.numel(), V = cfg_.padded_vocab();
  out.loss = cross_entropy(reshape(out.logits, {BL, V}), targets.view({BL}), ignore_index);
  return out;
}

void MambaLM::visit(ParamVisitor& v) {
  v.module("backbone.embeddings", embeddings);
  for (size_t i = 0; i < layers.size(); ++i)
    v.module("backbone.layers." + std::to_string(i), layers[i]);
  v.module("backbone.norm_f", norm_f);
  if (!cfg_.tie_embeddings) v.parameter("lm_head.weight", lm_head);
}

std::map<std::string, Tensor> MambaLM::canonical_names(
    const std::map<std::string, Tensor>& state) const {
  std::map<std::string, Tensor> out = state;
  const std::string hf = "backbone.embeddings.weight", ss = "backbone.embedding.weight";
  if (!out.count(hf) && out.count(ss)) {  // state-spaces name
    out[hf] = out[ss];
    out.erase(ss);
  }
  if (cfg_.tie_embeddings && out.count("lm_head.weight")) {
    const Tensor head = out["lm_head.weight"];
    if (!out.count(hf)) {
      out[hf] = head;  // a file that stores only the head of a tied model
      out.erase("lm_head.weight");
    } else if (head.defined() && out[hf].defined() && head.shape() == out[hf].shape()) {
      out.erase("lm_head.weight");  // the tied copy: the embedding is authoritative
    }
  }
  return out;
}

}  // namespace mg::nn
