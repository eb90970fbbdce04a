// nn/decoder.cpp — Decoder (the per-token step, graph-captured on CUDA), prefill_batch and
// generate_batch; nn/decoder.h says what each does and why.
#include "nn/decoder.h"

#include <algorithm>
#include <chrono>

#include "autograd/grad_mode.h"
#include "core/allocator.h"
#include "nn/mamba.h"
#include "ops/graph.h"
#include "ops/sampling.h"
#include "ops/shape.h"

namespace mg::nn {

namespace {

InferenceState clone_state(const InferenceState& s) {
  InferenceState c;
  c.seqlen = s.seqlen;
  for (const LayerState& l : s.layers) c.layers.push_back({l.conv_state.clone(), l.ssm_state.clone()});
  return c;
}

// Waits for the device by reading one value of t back (a host sync on CUDA; free on the CPU).
void wait_for(const Tensor& t) {
  if (t.device().is_cuda()) (void)slice(reshape(t, {t.numel()}), 0, 0, 1).item();
}

}  // namespace

Decoder::Decoder(const MambaLM& model, InferenceState state, bool use_graph)
    : model_(model), state_(std::move(state)), use_graph_(use_graph) {
  MG_CHECK(state_.layers.size() == model.layers.size(), "Decoder: the state has ",
           state_.layers.size(), " layers, the model ", model.layers.size(),
           " (prefill first)");
  MG_CHECK(state_.layers[0].ssm_state.device() == model.embeddings.weight.device(),
           "Decoder: the state is on ", state_.layers[0].ssm_state.device().str(),
           ", the model on ", model.embeddings.weight.device().str());
  if (!model.embeddings.weight.device().is_cuda()) note_ = "CPU: steps run eagerly";
  else if (!use_graph_) note_ = "CUDA graph off (eager steps)";
}

Decoder::~Decoder() = default;

bool Decoder::graph_used() const { return graph_ && graph_->captured(); }

Tensor Decoder::step(const Tensor& ids) {
  const Device dev = model_.embeddings.weight.device();
  const int64_t B = batch();
  check_dtype("Decoder::step", ids, DType::i32, "ids");
  check_shape("Decoder::step", ids, {B}, "ids");
  if (ids.device().is_cpu()) {  // cheap here; ids on the GPU come from the sampler (in range)
    const int32_t* id = ids.data<int32_t>();
    const int64_t V = model_.config().padded_vocab();
    for (int64_t b = 0; b < B; ++b)
      MG_CHECK(id[b] >= 0 && id[b] < V, "Decoder::step: token id ", id[b], " of row ", b,
               " is outside this model's vocabulary [0, ", V, ")");
  }
  NoGradGuard no_grad;
  if (!ids_.defined()) ids_ = Tensor::empty({B}, DType::i32, dev);
  // Into the fixed input tensor the graph reads (stream-ordered, no host sync on the GPU).
  if (ids.device() == dev) allocator_for(dev).copy_on_device(ids_.raw_data(), ids.raw_data(), ids.nbytes());
  else allocator_for(dev).copy_from_host(ids_.raw_data(), ids.raw_data(), ids.nbytes());

  if (!dev.is_cuda() || !use_graph_) {
    logits_ = model_.step_trusted(ids_, state_);
  } else {
    if (!graph_) {
      {  // warm-up on a copy: caches the step's blocks and starts cuBLAS before the capture
        InferenceState scratch = clone_state(state_);
        (void)model_.step_trusted(ids_, scratch);
      }
      graph_ = std::make_unique<CapturedGraph>(
          dev, [this] { logits_ = model_.step_trusted(ids_, state_); });
      if (!graph_->captured()) note_ = "CUDA graph capture failed, steps run eagerly: " + graph_->why_not();
    }
    graph_->replay();
  }
  ++state_.seqlen;
  return logits_;
}

Tensor prefill_batch(const MambaLM& model, const std::vector<std::vector<int32_t>>& prompts,
                     InferenceState& state) {
  NoGradGuard no_grad;
  const Device dev = model.embeddings.weight.device();
  const int64_t B = (int64_t)prompts.size(), V = model.config().padded_vocab();
  MG_CHECK(B > 0, "prefill_batch: no prompts");
  for (int64_t b = 0; b < B; ++b)
    MG_CHECK(!prompts[b].empty(), "prefill_batch: prompt ", b, " is empty (it needs a token)");
  const bool same_length = std::all_of(prompts.begin(), prompts.end(), [&](const auto& p) {
    return p.size() == prompts[0].size();
  });
  if (same_length) {  // one parallel forward over the batch
    const int64_t L = (int64_t)prompts[0].size();
    std::vector<int32_t> flat;
    for (const auto& p : prompts) flat.insert(flat.end(), p.begin(), p.end());
    Tensor ids = Tensor::from_vector(flat, {B, L}).copy_to(dev);
    return reshape(model.prefill(ids, state, 1), {B, V});  // (B, V_pad)
  }
  // Ragged: one prefill per prompt, then the states and logits stacked along the batch.
  std::vector<InferenceState> states(B);
  std::vector<Tensor> logits;
  int64_t longest = 0;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t L = (int64_t)prompts[b].size();
    longest = std::max(longest, L);
    Tensor ids = Tensor::from_vector(prompts[b], {1, L}).copy_to(dev);
    logits.push_back(reshape(model.prefill(ids, states[b], 1), {1, V}));
  }
  state = InferenceState{};
  state.seqlen = longest;
  for (size_t i = 0; i < model.layers.size(); ++i) {
    std::vector<Tensor> conv, ssm;
    for (const InferenceState& s : states) {
      conv.push_back(s.layers[i].conv_state);
      ssm.push_back(s.layers[i].ssm_state);
    }
    state.layers.push_back({cat(conv, 0), cat(ssm, 0)});
  }
  return cat(logits, 0);  // (B, V_pad)
}

int64_t BatchGeneration::generated() const {
  int64_t n = 0;
  for (const auto& t : tokens) n += (int64_t)t.size();
  return n;
}

BatchGeneration generate_batch(const MambaLM& model,
                               const std::vector<std::vector<int32_t>>& prompts,
                               const BatchOptions& options, Generator& gen,
                               const BatchTokenCallback& on_token) {
  using Clock = std::chrono::steady_clock;
  auto seconds = [](Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double>(b - a).count();
  };
  MG_CHECK(options.max_new_tokens >= 0, "generate: max_new_tokens must be >= 0, got ",
           options.max_new_tokens);
  SamplingOptions so = options.sampling;
  if (so.vocab_limit == 0) so.vocab_limit = model.config().vocab_size;  // drop padding rows
  so.validate();
  NoGradGuard no_grad;
  const Device dev = model.embeddings.weight.device();
  const int64_t B = (int64_t)prompts.size(), V = model.config().padded_vocab();
  // On the GPU: sample there, unless the repetition penalty needs the context (host).
  const bool sample_on_device = dev.is_cuda() && so.repetition_penalty == 1.0;
  SampleParams sp{.temperature = (float)so.temperature, .top_k = so.top_k,
                  .top_p = (float)so.top_p, .min_p = (float)so.min_p,
                  .vocab_limit = so.vocab_limit};

  BatchGeneration res;
  res.tokens.resize(B);
  for (const auto& p : prompts) res.prompt_tokens += (int64_t)p.size();
  std::vector<std::vector<int32_t>> context = prompts;
  std::vector<bool> done(B, false);

  auto t0 = Clock::now();
  InferenceState state;
  Tensor logits = prefill_batch(model, prompts, state);  // (B, V_pad)
  wait_for(logits);
  auto t1 = Clock::now();
  res.prefill_seconds = seconds(t0, t1);
  Decoder decoder(model, std::move(state), options.use_graph);

  std::vector<int32_t> next(B);
  for (int64_t i = 0; i < options.max_new_tokens; ++i) {
    Tensor next_dev;  // the step's input where it already is on the device
    if (sample_on_device) {
      Tensor u;
      if (!sp.greedy()) {
        std::vector<float> draws(B);
        for (auto& x : draws) x = gen.uniform_f32_at(gen.reserve(1));
        u = Tensor::from_vector(draws, {B}).copy_to(dev);
      }
      next_dev = sample_tokens(logits, sp, u);
      next = next_dev.to_vector<int32_t>();  // B ints back to the host
    } else {
      Tensor host = logits.device().is_cpu() ? logits : logits.copy_to(Device::cpu());
      if (host.dtype() != DType::f32) host = host.cast(DType::f32);
      const float* row = host.data<float>();
      for (int64_t b = 0; b < B; ++b)
        next[b] = sample_next(std::span<const float>(row + b * V, V), so, context[b], gen);
    }
    bool stop = false;
    for (int64_t b = 0; b < B; ++b) {
      if (done[b]) continue;
      res.tokens[b].push_back(next[b]);
      context[b].push_back(next[b]);
      if (on_token && !on_token(b, next[b])) stop = true;
      if (std::find(options.eos.begin(), options.eos.end(), next[b]) != options.eos.end())
        done[b] = true;
    }
    if (stop || i + 1 == options.max_new_tokens ||
        std::all_of(done.begin(), done.end(), [](bool d) { return d; }))
      break;
    logits = decoder.step(next_dev.defined() ? next_dev
                                             : Tensor::from_vector(next, {B}));
    ++res.decode_steps;
  }
  wait_for(logits);
  res.decode_seconds = seconds(t1, Clock::now());
  res.graph_used = decoder.graph_used();
  res.graph_note = decoder.graph_note();
  return res;
}

}  // namespace mg::nn
