// nn/checkpoint.h — saving and loading Mamba language models in the checkpoint forms people
// actually have.
//
//   save_mamba(model, "run/model.safetensors");
//   MambaLM model = load_mamba("run/model.safetensors");          // f32, CPU
//   MambaLM model = load_mamba("models/mamba-130m-hf");           // a Hugging Face directory
//   MambaLM model = load_mamba("state-spaces.safetensors", DType::f64);
//
// ---- What save_mamba writes -------------------------------------------------------------------
// One safetensors file (written atomically by core/safetensors.h): every parameter under its
// Hugging Face name (nn/mamba.h; no lm_head.weight when the embeddings are tied), in the
// parameters' dtype, and the config as MambaConfig::to_metadata() in `__metadata__`, plus
// "format" = "mambagrad".
//
// ---- What load_mamba reads --------------------------------------------------------------------
// `path` may be:
//   a safetensors file                 any of the forms below, one file
//   a directory                        model.safetensors, or the shards listed by
//                                      model.safetensors.index.json (HF's sharded layout);
//                                      config.json is read when present
//   a model.safetensors.index.json     the shards it lists, relative to its directory
// Tensor names: Hugging Face (`backbone.embeddings.weight`) or state-spaces
// (`backbone.embedding.weight`); `lm_head.weight` is optional when the embeddings are tied.
// A tied checkpoint that does store lm_head.weight must store the embedding's exact values
// there, otherwise loading fails (the file would silently mean another model).
//
// The config comes from the first of:
//   1. the safetensors `__metadata__`, when it holds a mambagrad config (key "d_model" or
//      "architecture"; then it must be complete: MambaConfig::from_metadata);
//   2. config.json in the checkpoint's directory: Hugging Face fields (hidden_size,
//      num_hidden_layers, vocab_size, state_size, conv_kernel, expand, time_step_rank,
//      layer_norm_epsilon, tie_word_embeddings; the vocabulary is used unpadded, as HF does)
//      or state-spaces fields (d_model, n_layer, vocab_size, ssm_cfg {d_state, d_conv, expand,
//      dt_rank}, pad_vocab_size_multiple, norm_epsilon, tie_embeddings);
//   3. inference from the tensors (infer_mamba_config below).
// Loading is strict: one mg::Error lists every missing, unexpected and mis-shaped tensor, and
// names the file(s) and where the config came from. Values are converted to `dtype`, f32 or f64
// (a bf16 or f16 file becomes f32, exactly; an f64 file loaded as f64 keeps every bit).
#pragma once
#include <map>
#include <string>
#include <vector>

#include "core/json.h"
#include "core/tensor.h"
#include "nn/mamba.h"

namespace mg::nn {

void save_mamba(const MambaLM& model, const std::string& path);

// Builds the model the checkpoint describes and loads its weights into it.
MambaLM load_mamba(const std::string& path, DType dtype = DType::f32,
                   Device device = Device::cpu());

// The pieces load_mamba is made of, for tools that want to look before they build.
struct MambaCheckpoint {
  MambaConfig config;
  std::map<std::string, Tensor> tensors;  // as stored (file names, file dtypes), CPU
  std::vector<std::string> files;         // the safetensors files read
  std::string config_source;  // "from the __metadata__ of X", "from X/config.json", "inferred ..."
};
MambaCheckpoint read_mamba_checkpoint(const std::string& path);

// A config.json (Hugging Face or state-spaces fields, see above). `source` names the file in
// errors. Unknown fields are ignored; features mambagrad does not implement (biases on
// in_proj/out_proj, LayerNorm instead of RMSNorm, an MLP between mixers, Mamba-2) are errors.
MambaConfig mamba_config_from_json(const json::Value& cfg, const std::string& source);

// The architecture from names and shapes alone (either embedding name):
//   V_pad, D  from the embedding (V_pad, D)     (vocab_size = V_pad, pad_vocab_multiple = 1)
//   n_layer   1 + the largest i in backbone.layers.{i}.*
//   ED        in_proj.weight (2ED, D) of layer 0; expand = ED / D (must divide)
//   N         A_log (ED, N);   K  conv1d.weight (ED, 1, K);   R  dt_proj.weight (ED, R)
//   tied      unless lm_head.weight is present with values different from the embedding
//   eps       not recorded in tensors: 1e-5 (the value of every released Mamba)
MambaConfig infer_mamba_config(const std::map<std::string, Tensor>& tensors);

}  // namespace mg::nn
