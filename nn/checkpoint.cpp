#include "nn/checkpoint.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <set>

#include "core/safetensors.h"

namespace fs = std::filesystem;

namespace mg::nn {

namespace {

const char* kEmbedHF = "backbone.embeddings.weight";
const char* kEmbedSS = "backbone.embedding.weight";  // state-spaces
const char* kHead = "lm_head.weight";
const char* kIndex = "model.safetensors.index.json";

const Tensor* find_tensor(const std::map<std::string, Tensor>& t, const std::string& name) {
  auto it = t.find(name);
  return it == t.end() ? nullptr : &it->second;
}

const Tensor* find_embedding(const std::map<std::string, Tensor>& t) {
  const Tensor* e = find_tensor(t, kEmbedHF);
  return e ? e : find_tensor(t, kEmbedSS);
}

// Exact equality of two tensors' values (both CPU; any float dtype, compared in f64).
bool same_values(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape()) return false;
  if (a.dtype() == b.dtype()) return std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0;
  const Tensor a64 = a.cast(DType::f64), b64 = b.cast(DType::f64);
  return std::equal(a64.data<double>(), a64.data<double>() + a64.numel(), b64.data<double>());
}

// ---- reading the tensors ------------------------------------------------------------------------

// The shards of a model.safetensors.index.json: {"metadata": {...}, "weight_map": {name: file}}.
// Every shard is read once; every name must be in the shard the map names, and a name found in
// two shards is an error.
void read_sharded(const fs::path& index_path, MambaCheckpoint& ck,
                  std::map<std::string, std::string>& metadata) {
  const std::string where = "load_mamba: " + index_path.string();
  const json::Value index = json::parse_file(index_path.string());
  MG_CHECK(index.is_object() && index.contains("weight_map") && index.at("weight_map").is_object(),
           where, ": expected an object with a \"weight_map\" object");
  std::map<std::string, std::vector<std::string>> names_by_shard;
  for (auto& [name, file] : index.at("weight_map").as_object()) {
    MG_CHECK(file.is_string(), where, ": weight_map[\"", name, "\"] is not a file name");
    names_by_shard[file.as_string()].push_back(name);
  }
  MG_CHECK(!names_by_shard.empty(), where, ": the weight_map is empty");
  std::vector<std::string> problems;
  for (auto& [shard, names] : names_by_shard) {
    const fs::path shard_path = index_path.parent_path() / shard;
    MG_CHECK(fs::is_regular_file(shard_path), where, ": shard '", shard_path.string(),
             "' does not exist");
    SafetensorsFile f = load_safetensors(shard_path.string());
    ck.files.push_back(shard_path.string());
    if (metadata.empty()) metadata = f.metadata;
    for (auto& name : names) {
      auto it = f.tensors.find(name);
      if (it == f.tensors.end()) {
        problems.push_back("'" + name + "' is mapped to " + shard + ", which does not hold it");
        continue;
      }
      MG_CHECK(!ck.tensors.count(name), where, ": '", name, "' is listed twice");
      ck.tensors[name] = it->second;
      f.tensors.erase(it);
    }
    for (auto& [name, t] : f.tensors)  // in a shard but not in the index: the file is ambiguous
      problems.push_back("'" + name + "' is in " + shard + " but not in the weight_map");
  }
  if (!problems.empty()) {
    std::string msg = where + ": the index does not match its shards:";
    for (auto& p : problems) msg += "\n    " + p;
    throw Error(msg);
  }
}

// ---- the config ---------------------------------------------------------------------------------

bool has_mambagrad_config(const std::map<std::string, std::string>& metadata) {
  return metadata.count("d_model") > 0 || metadata.count("architecture") > 0;
}

}  // namespace

MambaConfig mamba_config_from_json(const json::Value& j, const std::string& source) {
  const std::string where = "load_mamba: " + source;
  MG_CHECK(j.is_object(), where, ": the config must be a JSON object");
  auto get = [&](const json::Value& obj, const char* key) { return obj.find(key); };
  auto get_int = [&](const json::Value& obj, const char* key, int64_t& out) {
    if (const json::Value* v = get(obj, key)) {
      MG_CHECK(v->is_number(), where, ": '", key, "' must be a number, got a ", json::kind_name(v->kind()));
      out = v->as_int();
    }
  };
  auto get_double = [&](const json::Value& obj, const char* key, double& out) {
    if (const json::Value* v = get(obj, key)) {
      MG_CHECK(v->is_number(), where, ": '", key, "' must be a number");
      out = v->as_double();
    }
  };
  auto get_bool = [&](const json::Value& obj, const char* key, bool& out) {
    if (const json::Value* v = get(obj, key)) {
      MG_CHECK(v->is_bool(), where, ": '", key, "' must be true or false");
      out = v->as_bool();
    }
  };
  auto require = [&](const char* key) {
    MG_CHECK(j.contains(key), where, ": missing '", key, "'");
  };
  auto flag_is = [&](const json::Value& obj, const char* key, bool value) {
    const json::Value* v = get(obj, key);
    return v && v->is_bool() && v->as_bool() == value;
  };
  if (const json::Value* t = get(j, "model_type"))
    MG_CHECK(t->is_string() && t->as_string() == "mamba", where, ": model_type is ",
             json::dump(*t), ", only \"mamba\" (Mamba-1) is supported");

  MambaConfig c;
  if (j.contains("hidden_size")) {  // Hugging Face MambaConfig
    for (const char* k : {"hidden_size", "num_hidden_layers", "vocab_size"}) require(k);
    get_int(j, "hidden_size", c.d_model);
    get_int(j, "num_hidden_layers", c.n_layer);
    get_int(j, "vocab_size", c.vocab_size);
    get_int(j, "state_size", c.d_state);
    get_int(j, "conv_kernel", c.d_conv);
    get_int(j, "expand", c.expand);
    if (const json::Value* r = get(j, "time_step_rank"); r && !r->is_string())
      get_int(j, "time_step_rank", c.dt_rank);  // "auto" -> 0 (ceil(D / 16))
    get_double(j, "layer_norm_epsilon", c.eps);
    get_bool(j, "tie_word_embeddings", c.tie_embeddings);
    c.pad_vocab_multiple = 1;  // HF stores the embedding with exactly vocab_size rows
    MG_CHECK(!flag_is(j, "use_bias", true), where,
             ": use_bias = true (biases on in_proj/out_proj) is not supported");
    MG_CHECK(!flag_is(j, "use_conv_bias", false), where,
             ": use_conv_bias = false is not supported (conv1d always has a bias here)");
    if (const json::Value* isz = get(j, "intermediate_size"); isz && isz->is_number())
      MG_CHECK(isz->as_int() == c.expand * c.d_model, where, ": intermediate_size ",
               isz->as_int(), " != expand * hidden_size = ", c.expand * c.d_model);
  } else if (j.contains("d_model")) {  // state-spaces MambaConfig
    for (const char* k : {"d_model", "n_layer", "vocab_size"}) require(k);
    get_int(j, "d_model", c.d_model);
    get_int(j, "n_layer", c.n_layer);
    get_int(j, "vocab_size", c.vocab_size);
    get_int(j, "pad_vocab_size_multiple", c.pad_vocab_multiple);
    get_double(j, "norm_epsilon", c.eps);
    get_bool(j, "tie_embeddings", c.tie_embeddings);
    MG_CHECK(!flag_is(j, "rms_norm", false), where,
             ": rms_norm = false (LayerNorm blocks) is not supported");
    if (const json::Value* di = get(j, "d_intermediate"); di && di->is_number())
      MG_CHECK(di->as_int() == 0, where, ": d_intermediate = ", di->as_int(),
               " (an MLP after each mixer) is not supported");
    if (const json::Value* ssm = get(j, "ssm_cfg"); ssm && ssm->is_object()) {
      if (const json::Value* layer = get(*ssm, "layer"))
        MG_CHECK(layer->is_string() && layer->as_string() == "Mamba1", where, ": ssm_cfg.layer ",
                 json::dump(*layer), " is not supported (only Mamba1)");
      get_int(*ssm, "d_state", c.d_state);
      get_int(*ssm, "d_conv", c.d_conv);
      get_int(*ssm, "expand", c.expand);
      if (const json::Value* r = get(*ssm, "dt_rank"); r && !r->is_string())
        get_int(*ssm, "dt_rank", c.dt_rank);
      MG_CHECK(!flag_is(*ssm, "bias", true), where, ": ssm_cfg.bias = true is not supported");
      MG_CHECK(!flag_is(*ssm, "conv_bias", false), where,
               ": ssm_cfg.conv_bias = false is not supported");
    }
  } else {
    throw Error(where + ": not a Mamba config (neither 'hidden_size' (Hugging Face) nor "
                "'d_model' (state-spaces) is present)");
  }
  try {
    c.validate();
  } catch (const Error& e) {
    throw Error(where + ": " + e.what());
  }
  return c;
}

MambaConfig infer_mamba_config(const std::map<std::string, Tensor>& t) {
  const char* where = "load_mamba: inferring the architecture from tensor shapes";
  auto need = [&](const std::string& name, int64_t ndim) -> const Tensor& {
    const Tensor* p = find_tensor(t, name);
    MG_CHECK(p != nullptr, where, ": no tensor '", name, "'");
    MG_CHECK(p->dim() == ndim, where, ": '", name, "' has shape ", shape_str(p->shape()),
             ", expected ", ndim, " dimensions");
    return *p;
  };
  const Tensor* embed = find_embedding(t);
  const Tensor* head = find_tensor(t, kHead);
  MG_CHECK(embed || head, where, ": no embedding ('", kEmbedHF, "', '", kEmbedSS, "' or '",
           kHead, "')");
  const Tensor& E = embed ? *embed : *head;
  MG_CHECK(E.dim() == 2, where, ": the embedding has shape ", shape_str(E.shape()),
           ", expected (V, D)");

  MambaConfig c;
  c.vocab_size = E.size(0);
  c.pad_vocab_multiple = 1;
  c.d_model = E.size(1);
  int64_t max_layer = -1;
  const std::string prefix = "backbone.layers.";
  for (auto& [name, tensor] : t) {
    if (name.rfind(prefix, 0) != 0) continue;
    size_t end = name.find('.', prefix.size());
    const std::string idx = name.substr(prefix.size(), end - prefix.size());
    MG_CHECK(!idx.empty() && idx.size() < 9 && std::all_of(idx.begin(), idx.end(), [](char ch) { return ch >= '0' && ch <= '9'; }),
             where, ": cannot read a layer index in '", name, "'");
    max_layer = std::max<int64_t>(max_layer, std::stoll(idx));
  }
  MG_CHECK(max_layer >= 0, where, ": no tensor named backbone.layers.{i}.*");
  c.n_layer = max_layer + 1;

  const std::string m = "backbone.layers.0.mixer.";
  const int64_t two_ED = need(m + "in_proj.weight", 2).size(0);
  MG_CHECK(two_ED % 2 == 0 && (two_ED / 2) % c.d_model == 0, where, ": in_proj.weight has ",
           two_ED, " rows, expected 2 * expand * d_model with d_model = ", c.d_model);
  c.expand = two_ED / 2 / c.d_model;
  c.d_state = need(m + "A_log", 2).size(1);
  c.d_conv = need(m + "conv1d.weight", 3).size(2);
  c.dt_rank = need(m + "dt_proj.weight", 2).size(1);
  c.tie_embeddings = !(head && embed && !same_values(*head, *embed));
  c.validate();
  return c;
}

MambaCheckpoint read_mamba_checkpoint(const std::string& path) {
  MG_CHECK(fs::exists(path), "load_mamba: '", path, "' does not exist");
  MambaCheckpoint ck;
  std::map<std::string, std::string> metadata;
  fs::path dir;
  if (fs::is_directory(path)) {
    dir = path;
    const fs::path single = dir / "model.safetensors", index = dir / kIndex;
    if (fs::is_regular_file(single)) {
      SafetensorsFile f = load_safetensors(single.string());
      ck.files.push_back(single.string());
      ck.tensors = std::move(f.tensors);
      metadata = std::move(f.metadata);
    } else if (fs::is_regular_file(index)) {
      read_sharded(index, ck, metadata);
    } else {
      const bool pickle = fs::exists(dir / "pytorch_model.bin");
      throw Error(detail::cat("load_mamba: directory '", path, "' has neither model.safetensors nor ",
                              kIndex, pickle ? " (it has pytorch_model.bin, a torch pickle: convert "
                                               "it to safetensors first)" : ""));
    }
  } else {
    const fs::path file = path;
    dir = file.parent_path().empty() ? fs::path(".") : file.parent_path();
    const std::string name = file.filename().string();
    if (name.size() >= 11 && name.compare(name.size() - 11, 11, ".index.json") == 0) {
      read_sharded(file, ck, metadata);
    } else {
      SafetensorsFile f = load_safetensors(path);
      ck.files.push_back(path);
      ck.tensors = std::move(f.tensors);
      metadata = std::move(f.metadata);
    }
  }

  const fs::path config_json = dir / "config.json";
  if (has_mambagrad_config(metadata)) {
    try {
      ck.config = MambaConfig::from_metadata(metadata);
    } catch (const Error& e) {
      throw Error(detail::cat("load_mamba: ", ck.files.front(), ": ", e.what()));
    }
    ck.config_source = "from the __metadata__ of " + ck.files.front();
  } else if (fs::is_regular_file(config_json)) {
    ck.config = mamba_config_from_json(json::parse_file(config_json.string()), config_json.string());
    ck.config_source = "from " + config_json.string();
  } else {
    ck.config = infer_mamba_config(ck.tensors);
    ck.config_source = "inferred from the tensor shapes (no config in the file, no config.json)";
  }

  // A tied model's lm_head, when stored, must be the embedding itself.
  const Tensor* head = find_tensor(ck.tensors, kHead);
  const Tensor* embed = find_embedding(ck.tensors);
  if (ck.config.tie_embeddings && head && embed)
    MG_CHECK(same_values(*head, *embed), "load_mamba: ", path, ": the config (",
             ck.config_source, ") ties the embeddings, but lm_head.weight differs from the embedding");
  return ck;
}

MambaLM load_mamba(const std::string& path, DType dtype, Device device) {
  MG_CHECK(dtype == DType::f32 || dtype == DType::f64, "load_mamba: dtype must be f32 or f64, got ",
           dtype_name(dtype), " (a bf16 file loads into f32; bf16 compute is Settings::precision)");
  MambaCheckpoint ck = read_mamba_checkpoint(path);
  MambaLM model(ck.config, /*seed=*/0);  // initialised, then every value is overwritten
  model.to(dtype);
  try {
    model.load_state_dict(ck.tensors, /*strict=*/true);
  } catch (const Error& e) {
    std::string files;
    for (auto& f : ck.files) files += (files.empty() ? "" : ", ") + f;
    throw Error(detail::cat("load_mamba: ", path, " (files: ", files, "; config ", ck.config.str(),
                            " ", ck.config_source, "):\n", e.what()));
  }
  if (!(device == Device::cpu())) model.to(device);
  return model;
}

void save_mamba(const MambaLM& model, const std::string& path) {
  std::map<std::string, std::string> meta = model.config().to_metadata();
  meta["format"] = "mambagrad";
  save_safetensors(path, model.state_dict(), meta);
}

}  // namespace mg::nn
