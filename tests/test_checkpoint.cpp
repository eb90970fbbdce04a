// Checkpoint interop (nn/checkpoint.h) and the JSON reader/writer it uses (core/json.h).
//
// Every load is checked against the model that was saved: parameters bit for bit, and the
// logits of a forward pass bit for bit (same weights, same code -> same bits).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>

#include "autograd/grad_mode.h"
#include "core/json.h"
#include "core/safetensors.h"
#include "nn/checkpoint.h"
#include "test_util.h"

using namespace mg;
using test::error_of;
using test::has;
using namespace mg::nn;
namespace fs = std::filesystem;

namespace {

// A fresh directory under the system temp dir, removed with everything in it at scope exit.
struct CkptTmpDir {
  fs::path path;
  CkptTmpDir() {
    std::string tmpl = (fs::temp_directory_path() / "mg_ckpt_XXXXXX").string();
    REQUIRE(mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~CkptTmpDir() { fs::remove_all(path); }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

void write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  f << text;
}

// V 61 (padded to 64), D 8, 2 layers, N 4, K 3, E 2, R 1.
MambaConfig small_config(bool tied = true) {
  MambaConfig c;
  c.d_model = 8;
  c.n_layer = 2;
  c.vocab_size = 61;
  c.d_state = 4;
  c.d_conv = 3;
  c.expand = 2;
  c.tie_embeddings = tied;
  return c;
}

Tensor test_ids() {
  return Tensor::from_vector<int32_t>({1, 5, 60, 63, 2, 9, 0, 33, 17, 4}, {2, 5});
}

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0;
}

// Same parameter names, every one bitwise equal, and bitwise equal logits.
void check_same_model(const MambaLM& got, const MambaLM& want) {
  auto g = got.state_dict(), w = want.state_dict();
  REQUIRE(g.size() == w.size());
  for (auto& [name, t] : w) {
    REQUIRE_MESSAGE(g.count(name), "missing ", name);
    CHECK_MESSAGE(bitwise_equal(g.at(name), t), name);
  }
  NoGradGuard no_grad;
  CHECK(bitwise_equal(got.forward(test_ids()), want.forward(test_ids())));
}


}  // namespace

// ---- JSON ---------------------------------------------------------------------------------------

TEST_CASE("json: parses every kind of value") {
  json::Value v = json::parse(R"( {"a": [1, -2, 3.5, 1e3, -0.25E-2, 0], "s": "x\"\\\/\b\f\n\r\t",
      "u": "\u00e9\u20ac\ud83d\ude00", "t": true, "f": false, "n": null, "o": {}, "e": [],
      "big": 12345678901234567890} )");
  REQUIRE(v.is_object());
  CHECK(v.size() == 9);
  const auto& a = v.at("a").as_array();
  REQUIRE(a.size() == 6);
  CHECK(a[0].is_int());
  CHECK(a[0].as_int() == 1);
  CHECK(a[1].as_int() == -2);
  CHECK(!a[2].is_int());
  CHECK(a[2].as_double() == 3.5);
  CHECK(a[3].as_int() == 1000);  // an integral double is accepted as an integer
  CHECK(a[4].as_double() == -0.0025);
  CHECK(v.at("s").as_string() == "x\"\\/\b\f\n\r\t");
  CHECK(v.at("u").as_string() == "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");  // é € 😀 in UTF-8
  CHECK(v.at("t").as_bool());
  CHECK(!v.at("f").as_bool());
  CHECK(v.at("n").is_null());
  CHECK(v.at("o").size() == 0);
  CHECK(v.at("e").size() == 0);
  CHECK(v.at("big").as_double() == 12345678901234567890.0);  // beyond int64: a double
  CHECK(v.find("missing") == nullptr);
  CHECK(has(error_of([&] { v.at("missing"); }), "'missing'"));
  CHECK(has(error_of([&] { v.at("s").as_int(); }), "expected a number, got a string"));
  CHECK(has(error_of([&] { a[2].as_int(); }), "expected an integer"));
}

TEST_CASE("json: dump then parse gives the same value; keys keep their order") {
  json::Value v = json::Value::object();
  v.set("zeta", 1);
  v.set("alpha", json::Value::array());
  v.set("pi", 3.141592653589793);
  v.set("two", 2.0);
  v.set("text", "tab\there \"quoted\" \x01");
  v.set("nested", json::Value::object()).set("k", nullptr);
  json::Value arr = json::Value::array();
  arr.push_back(true);
  arr.push_back(-7);
  v.set("alpha", arr);  // replaces, keeps the position
  const std::string compact = json::dump(v);
  CHECK(compact ==
        "{\"zeta\": 1, \"alpha\": [true, -7], \"pi\": 3.141592653589793, \"two\": 2.0, "
        "\"text\": \"tab\\there \\\"quoted\\\" \\u0001\", \"nested\": {\"k\": null}}");
  CHECK(json::parse(compact) == v);
  CHECK(json::parse(json::dump(v, 2)) == v);
  CHECK(!json::parse(json::dump(v)).at("two").is_int());  // a double stays a double
}

TEST_CASE("json: malformed documents throw mg::Error with the byte offset") {
  struct Bad {
    const char* text;
    const char* what;
  };
  const Bad cases[] = {
      {"", "byte 0: unexpected end of input"},
      {"  ", "byte 2: unexpected end of input"},
      {"{\"a\":1,}", "byte 7: expected a string key"},
      {"[1,2", "byte 4: unexpected end of input in the array"},
      {"[1 2]", "byte 3: expected ',' or ']'"},
      {"{\"a\" 1}", "byte 5: expected ':'"},
      {"01", "byte 0: numbers may not have leading zeros"},
      {"1.", "byte 2: expected a digit after the decimal point"},
      {"-", "byte 1: expected a digit"},
      {"1e", "byte 2: expected a digit in the exponent"},
      {"1e999", "byte 0: number '1e999' is out of the range"},
      {"NaN", "byte 0: unexpected 'N'"},
      {"tru", "byte 0: invalid literal"},
      {"\"abc", "byte 0: unterminated string"},
      {"\"a\\x\"", "byte 2: invalid escape"},
      {"\"a\tb\"", "byte 2: raw control character"},
      {"\"\\ud800\"", "byte 1: unpaired high surrogate"},
      {"\"\\udc00\"", "byte 1: unpaired low surrogate"},
      {"\"\\u12g4\"", "byte 5: expected 4 hex digits"},
      {"{\"a\":1,\"a\":2}", "byte 7: duplicate key 'a'"},
      {"[1] x", "byte 4: unexpected 'x' after the JSON value"},
      {"{'a': 1}", "byte 1: expected a string key"},
  };
  for (const Bad& b : cases) {
    const std::string err = error_of([&] { json::parse(b.text, "test.json"); });
    CHECK_MESSAGE(has(err, std::string("test.json: ") + b.what), "input ", b.text, " -> ", err);
  }
  const std::string deep(300, '[');
  CHECK(has(error_of([&] { json::parse(deep); }), "nesting deeper than 256"));
  CHECK(has(error_of([] { json::parse_file("/nonexistent/config.json"); }),
                 "cannot open '/nonexistent/config.json'"));
  CHECK(has(error_of([] { json::Value(std::nan("")); }), "finite"));
}

// ---- checkpoints --------------------------------------------------------------------------------

TEST_CASE("checkpoint: save_mamba -> load_mamba is exact (tied and untied, f32 and f64)") {
  CkptTmpDir dir;
  for (bool tied : {true, false}) {
    MambaLM model(small_config(tied), 7);
    save_mamba(model, dir / "m.safetensors");
    SafetensorsFile raw = load_safetensors(dir / "m.safetensors");
    CHECK(raw.tensors.count("lm_head.weight") == (tied ? 0u : 1u));
    CHECK(raw.metadata.at("format") == "mambagrad");
    MambaLM loaded = load_mamba(dir / "m.safetensors");
    CHECK(loaded.config().tie_embeddings == tied);
    CHECK(loaded.config().padded_vocab() == 64);
    check_same_model(loaded, model);

    model.to(DType::f64);
    save_mamba(model, dir / "m64.safetensors");
    MambaLM loaded64 = load_mamba(dir / "m64.safetensors", DType::f64);
    check_same_model(loaded64, model);
  }
}

TEST_CASE("checkpoint: a Hugging Face directory (config.json + model.safetensors)") {
  CkptTmpDir dir;
  MambaLM model(small_config(), 3);
  auto state = model.state_dict();
  state["lm_head.weight"] = state.at("backbone.embeddings.weight").clone();  // HF may store it
  save_safetensors(dir / "model.safetensors", state, {{"format", "pt"}});
  write_text(dir / "config.json", R"({"architectures": ["MambaForCausalLM"], "model_type": "mamba",
    "hidden_size": 8, "num_hidden_layers": 2, "vocab_size": 64, "state_size": 4,
    "conv_kernel": 3, "expand": 2, "time_step_rank": 1, "layer_norm_epsilon": 1e-05,
    "intermediate_size": 16, "use_bias": false, "use_conv_bias": true,
    "tie_word_embeddings": true, "torch_dtype": "float32"})");
  MambaLM loaded = load_mamba(dir.path.string());
  CHECK(loaded.config().vocab_size == 64);
  CHECK(loaded.config().pad_vocab_multiple == 1);
  check_same_model(loaded, model);
  // Pointing at the file in the directory finds the same config.json.
  check_same_model(load_mamba(dir / "model.safetensors"), model);

  // A tied lm_head that is not the embedding is refused.
  state["lm_head.weight"] = Tensor::zeros(state.at("backbone.embeddings.weight").shape());
  save_safetensors(dir / "model.safetensors", state);
  CHECK(has(error_of([&] { load_mamba(dir.path.string()); }),
                 "lm_head.weight differs from the embedding"));
}

TEST_CASE("checkpoint: sharded safetensors with model.safetensors.index.json") {
  CkptTmpDir dir;
  MambaLM model(small_config(/*tied=*/false), 5);
  std::map<std::string, Tensor> shard[2];
  json::Value weight_map = json::Value::object();
  int i = 0;
  for (auto& [name, t] : model.state_dict()) {
    const int s = (i++ % 2);
    shard[s][name] = t;
    weight_map.set(name, s == 0 ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors");
  }
  save_safetensors(dir / "model-00001-of-00002.safetensors", shard[0]);
  save_safetensors(dir / "model-00002-of-00002.safetensors", shard[1]);
  json::Value index = json::Value::object();
  index.set("metadata", json::Value::object()).set("total_size", 1234);
  index.set("weight_map", weight_map);
  write_text(dir / "model.safetensors.index.json", json::dump(index, 2));
  write_text(dir / "config.json", R"({"hidden_size": 8, "num_hidden_layers": 2, "vocab_size": 64,
    "state_size": 4, "conv_kernel": 3, "expand": 2, "time_step_rank": 1,
    "tie_word_embeddings": false})");
  check_same_model(load_mamba(dir.path.string()), model);
  check_same_model(load_mamba(dir / "model.safetensors.index.json"), model);

  // An index that sends a tensor to the wrong shard names both.
  weight_map.set("backbone.norm_f.weight", shard[0].count("backbone.norm_f.weight")
                                               ? "model-00002-of-00002.safetensors"
                                               : "model-00001-of-00002.safetensors");
  index.set("weight_map", weight_map);
  write_text(dir / "model.safetensors.index.json", json::dump(index));
  const std::string err = error_of([&] { load_mamba(dir.path.string()); });
  CHECK(has(err, "the index does not match its shards"));
  CHECK(has(err, "'backbone.norm_f.weight' is mapped to"));
  CHECK(has(err, "'backbone.norm_f.weight' is in"));
}

TEST_CASE("checkpoint: state-spaces names, with and without a state-spaces config.json") {
  CkptTmpDir dir;
  MambaLM model(small_config(), 11);
  auto state = model.state_dict();
  state["backbone.embedding.weight"] = state.at("backbone.embeddings.weight");
  state.erase("backbone.embeddings.weight");
  state["lm_head.weight"] = state.at("backbone.embedding.weight");  // tied copy, as torch saves
  save_safetensors(dir / "model.safetensors", state);

  // No config anywhere: inferred from shapes (vocabulary = the 64 embedding rows).
  MambaCheckpoint ck = read_mamba_checkpoint(dir / "model.safetensors");
  CHECK(has(ck.config_source, "inferred"));
  CHECK(ck.config.d_model == 8);
  CHECK(ck.config.n_layer == 2);
  CHECK(ck.config.padded_vocab() == 64);
  CHECK(ck.config.d_state == 4);
  CHECK(ck.config.d_conv == 3);
  CHECK(ck.config.expand == 2);
  CHECK(ck.config.rank() == 1);
  CHECK(ck.config.tie_embeddings);
  check_same_model(load_mamba(dir / "model.safetensors"), model);

  // With the state-spaces config.json: the vocabulary 61 is padded to a multiple of 8.
  write_text(dir / "config.json", R"({"d_model": 8, "n_layer": 2, "vocab_size": 61,
    "ssm_cfg": {"d_state": 4, "d_conv": 3, "expand": 2}, "rms_norm": true,
    "residual_in_fp32": true, "fused_add_norm": true, "pad_vocab_size_multiple": 8,
    "tie_embeddings": true})");
  MambaLM loaded = load_mamba(dir.path.string());
  CHECK(loaded.config().vocab_size == 61);
  CHECK(loaded.config().padded_vocab() == 64);
  check_same_model(loaded, model);
}

TEST_CASE("checkpoint: inference detects an untied head and more layers") {
  CkptTmpDir dir;
  MambaConfig cfg = small_config(/*tied=*/false);
  cfg.n_layer = 3;
  cfg.d_state = 5;
  cfg.dt_rank = 2;
  MambaLM model(cfg, 13);
  save_safetensors(dir / "bare.safetensors", model.state_dict());  // no metadata
  MambaLM loaded = load_mamba(dir / "bare.safetensors");
  CHECK(loaded.config().n_layer == 3);
  CHECK(loaded.config().d_state == 5);
  CHECK(loaded.config().rank() == 2);
  CHECK(!loaded.config().tie_embeddings);
  check_same_model(loaded, model);
}

TEST_CASE("checkpoint: strict loading lists every missing, unexpected and mis-shaped tensor") {
  CkptTmpDir dir;
  MambaLM model(small_config(), 2);
  auto state = model.state_dict();
  state.erase("backbone.layers.1.mixer.D");
  state.erase("backbone.norm_f.weight");
  state["backbone.layers.0.mixer.in_proj.bias"] = Tensor::zeros({32});
  state["backbone.layers.0.mixer.A_log"] = Tensor::zeros({16, 5});
  save_safetensors(dir / "bad.safetensors", state, model.config().to_metadata());
  const std::string err = error_of([&] { load_mamba(dir / "bad.safetensors"); });
  CHECK(has(err, dir / "bad.safetensors"));
  CHECK(has(err, "2 missing"));
  CHECK(has(err, "backbone.layers.1.mixer.D"));
  CHECK(has(err, "backbone.norm_f.weight"));
  CHECK(has(err, "1 unexpected"));
  CHECK(has(err, "backbone.layers.0.mixer.in_proj.bias"));
  CHECK(has(err, "1 mis-shaped"));
  CHECK(has(err, "backbone.layers.0.mixer.A_log (expected (16, 4), file has (16, 5))"));
}

TEST_CASE("checkpoint: missing paths, corrupt files and bad configs name the file") {
  CkptTmpDir dir;
  CHECK(has(error_of([&] { load_mamba(dir / "nope.safetensors"); }),
                 dir / "nope.safetensors' does not exist"));
  CHECK(has(error_of([&] { load_mamba(dir.path.string()); }),
                 "has neither model.safetensors nor model.safetensors.index.json"));
  write_text(dir / "junk.safetensors", "this is not a safetensors file at all");
  CHECK(has(error_of([&] { load_mamba(dir / "junk.safetensors"); }), dir / "junk.safetensors"));

  MambaLM model(small_config(), 1);
  save_safetensors(dir / "model.safetensors", model.state_dict());
  write_text(dir / "config.json", "{\"hidden_size\": 8,, }");
  std::string err = error_of([&] { load_mamba(dir.path.string()); });
  CHECK(has(err, dir / "config.json: byte 18"));
  write_text(dir / "config.json", R"({"model_type": "mamba2", "hidden_size": 8})");
  CHECK(has(error_of([&] { load_mamba(dir.path.string()); }), "only \"mamba\""));
  write_text(dir / "config.json", R"({"hidden_size": 8, "num_hidden_layers": 2})");
  CHECK(has(error_of([&] { load_mamba(dir.path.string()); }), "missing 'vocab_size'"));
  write_text(dir / "config.json", R"({"hidden_size": 8, "num_hidden_layers": 2,
    "vocab_size": 64, "use_bias": true})");
  CHECK(has(error_of([&] { load_mamba(dir.path.string()); }), "use_bias = true"));
}

TEST_CASE("checkpoint: a released Hugging Face config (mamba-130m-hf fields)") {
  json::Value j = json::parse(R"({"architectures": ["MambaForCausalLM"], "bos_token_id": 0,
    "conv_kernel": 4, "eos_token_id": 0, "expand": 2, "hidden_act": "silu", "hidden_size": 768,
    "initializer_range": 0.1, "intermediate_size": 1536, "layer_norm_epsilon": 1e-05,
    "model_type": "mamba", "n_layer": 24, "num_hidden_layers": 24, "pad_token_id": 0,
    "rescale_prenorm_residual": false, "residual_in_fp32": true, "state_size": 16,
    "time_step_floor": 0.0001, "time_step_init_scheme": "random", "time_step_max": 0.1,
    "time_step_min": 0.001, "time_step_rank": 48, "time_step_scale": 1.0, "use_bias": false,
    "use_cache": true, "use_conv_bias": true, "vocab_size": 50280})");
  MambaConfig c = mamba_config_from_json(j, "config.json");
  CHECK(c.d_model == 768);
  CHECK(c.n_layer == 24);
  CHECK(c.padded_vocab() == 50280);
  CHECK(c.d_state == 16);
  CHECK(c.d_conv == 4);
  CHECK(c.d_inner() == 1536);
  CHECK(c.rank() == 48);
  CHECK(c.eps == 1e-5);
  CHECK(c.tie_embeddings);
}
