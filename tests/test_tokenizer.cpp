// Tokenizers: Hugging Face tokenizer.json byte-level BPE against HF's own ids and decodes
// (fixtures made by tests/reference/make_tokenizer_fixtures.js with HF tokenizers 0.22.2), the
// streaming decoder, the byte tokenizer through the interface, load_tokenizer, and the errors.
#include <doctest/doctest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/json.h"
#include "data/bpe_tokenizer.h"
#include "data/byte_tokenizer.h"
#include "data/tokenizer.h"
#include "data/unicode.h"

using namespace mg;
using data::BpeTokenizer;
namespace fs = std::filesystem;

namespace {

const std::string kDir = MG_TEST_DATA_DIR;

const json::Value& fixtures() {
  static const json::Value f = json::parse_file(kDir + "/tokenizer_fixtures.json");
  return f;
}

std::string from_hex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) out += (char)std::stoi(hex.substr(i, 2), nullptr, 16);
  return out;
}

std::vector<int32_t> ids_of(const json::Value& arr) {
  std::vector<int32_t> ids;
  for (const json::Value& v : arr.as_array()) ids.push_back((int32_t)v.as_int());
  return ids;
}

std::string show(const std::vector<int32_t>& ids) {
  std::string s = "[";
  for (size_t i = 0; i < ids.size(); ++i) s += (i ? " " : "") + std::to_string(ids[i]);
  return s + "]";
}

std::string stream_decode(const data::Tokenizer& tok, const std::vector<int32_t>& ids, bool* pieces_valid) {
  data::DecodeStream ds(tok);
  std::string out;
  for (int32_t id : ids) {
    std::string piece = ds.push(id);
    *pieces_valid &= !tok.decode_repairs_utf8() || data::unicode::is_valid_utf8(piece);
    out += piece;
  }
  return out + ds.finish();
}

fs::path temp_dir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("mg_tok_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

// The neox_like tokenizer.json with one field replaced (for the error tests).
std::string neox_with(const std::string& key, json::Value v) {
  json::Value doc = json::parse_file(kDir + "/tokenizers/neox_like.json");
  doc.set(key, std::move(v));
  return json::dump(doc);
}

std::string error_of(const std::string& json_text) {
  try {
    BpeTokenizer::from_json(json_text, "tok.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("tokenizer fixtures: every string's ids and decode equal Hugging Face's") {
  const json::Value& f = fixtures();
  const auto& strings = f.at("strings").as_array();
  int checked = 0;
  for (const json::Value& t : f.at("tokenizers").as_array()) {
    const std::string name = t.at("name").as_string();
    BpeTokenizer tok = BpeTokenizer::from_file(kDir + "/" + t.at("file").as_string());
    const auto& enc = t.at("encode").as_array();
    REQUIRE(enc.size() == strings.size());
    for (size_t i = 0; i < enc.size(); ++i) {
      const std::string label = name + " / " + enc[i].at("name").as_string();
      const std::vector<int32_t> want = ids_of(enc[i].at("ids"));
      const std::vector<int32_t> got = tok.encode(from_hex(strings[i].at("hex").as_string()));
      CHECK_MESSAGE(got == want, label, ": ids ", show(got), " != HF ", show(want));
      CHECK_MESSAGE(tok.decode(want) == enc[i].at("decoded").as_string(), label, ": decode differs from HF");
      ++checked;
    }
  }
  CHECK(checked == 8 * (int)strings.size());
}

TEST_CASE("tokenizer fixtures: decode of any id sequence (out of range, broken UTF-8) equals HF's") {
  for (const json::Value& t : fixtures().at("tokenizers").as_array()) {
    const std::string name = t.at("name").as_string();
    BpeTokenizer tok = BpeTokenizer::from_file(kDir + "/" + t.at("file").as_string());
    CHECK_MESSAGE(tok.vocab_size() == t.at("hf_vocab_size").as_int(), name);
    for (const json::Value& a : t.at("added").as_array())
      CHECK_MESSAGE(tok.token_to_id(a.at("content").as_string()) == (int32_t)a.at("id").as_int(), name, ": added token \"",
                    a.at("content").as_string(), "\"");
    for (const json::Value& d : t.at("decode").as_array()) {
      std::vector<int32_t> ids = ids_of(d.at("ids"));
      CHECK_MESSAGE(tok.decode(ids) == d.at("decoded").as_string(), name, ": decode ", show(ids).substr(0, 80));
    }
  }
}

TEST_CASE("tokenizer: streaming decode equals whole decode, and never splits a character") {
  for (const json::Value& t : fixtures().at("tokenizers").as_array()) {
    BpeTokenizer tok = BpeTokenizer::from_file(kDir + "/" + t.at("file").as_string());
    std::vector<std::vector<int32_t>> seqs;
    for (const json::Value& e : t.at("encode").as_array()) seqs.push_back(ids_of(e.at("ids")));
    for (const json::Value& d : t.at("decode").as_array()) seqs.push_back(ids_of(d.at("ids")));
    for (const auto& ids : seqs) {
      bool valid = true;
      CHECK_MESSAGE(stream_decode(tok, ids, &valid) == tok.decode(ids), t.at("name").as_string(), " ", show(ids).substr(0, 80));
      CHECK(valid);
    }
  }
  // An emoji arriving byte token by byte token: nothing until its last byte.
  BpeTokenizer tok = BpeTokenizer::from_file(kDir + "/tokenizers/neox_like.json");
  std::vector<int32_t> ids = tok.encode("\xF0\x9F\x98\x80");  // U+1F600, four byte tokens here
  REQUIRE(ids.size() == 4);
  data::DecodeStream ds(tok);
  CHECK(ds.push(ids[0]) == "");
  CHECK(ds.push(ids[1]) == "");
  CHECK(ds.push(ids[2]) == "");
  CHECK(ds.push(ids[3]) == "\xF0\x9F\x98\x80");
  CHECK(ds.push(ids[0]) == "");
  CHECK(ds.finish() == "\xEF\xBF\xBD");  // an unfinished character renders as decode does
}

TEST_CASE("tokenizer: UTF-8 repair replaces maximal subparts, as HF's from_utf8_lossy") {
  using data::unicode::incomplete_utf8_tail;
  using data::unicode::to_valid_utf8;
  const std::string R = "\xEF\xBF\xBD";
  CHECK(to_valid_utf8("a\xE2\x82" "A") == "a" + R + "A");   // one: E2 82 starts a valid sequence
  CHECK(to_valid_utf8("\xC0\xAF") == R + R);                // C0 never starts one
  CHECK(to_valid_utf8("\xED\xA0\x80") == R + R + R);        // a surrogate: ED A0 is already wrong
  CHECK(to_valid_utf8("\xF0\x9F\x98") == R);
  CHECK(to_valid_utf8("\xF4\x90\x80\x80") == R + R + R + R);
  CHECK(incomplete_utf8_tail("ab\xF0\x9F\x98") == 3);
  CHECK(incomplete_utf8_tail("ab\xE2\x82") == 2);
  CHECK(incomplete_utf8_tail("ab\xC3") == 1);
  CHECK(incomplete_utf8_tail("ab\xC3\xA9") == 0);
  CHECK(incomplete_utf8_tail("ab\xED\xA0") == 0);  // can never complete: not held back
  CHECK(incomplete_utf8_tail("\x80\x80") == 0);
}

TEST_CASE("tokenizer: the byte tokenizer through the interface and load_tokenizer(\"byte\")") {
  std::unique_ptr<data::Tokenizer> tok = data::load_tokenizer("byte");
  CHECK(tok->vocab_size() == 256);
  CHECK(!tok->eos_id().has_value());
  const std::string text = "h\xC3\xA9\xFF\n";
  std::vector<int32_t> ids = tok->encode(text);
  CHECK(ids == std::vector<int32_t>{104, 0xC3, 0xA9, 0xFF, 10});
  CHECK(tok->decode(ids) == text);  // bytes pass through unrepaired
  bool valid = true;
  CHECK(stream_decode(*tok, ids, &valid) == text);
  std::vector<int32_t> odd = {72, 300};
  CHECK(stream_decode(*tok, odd, &valid) == tok->decode(odd));
  CHECK(tok->decode(odd) == "H\xEF\xBF\xBD");
}

TEST_CASE("tokenizer: load_tokenizer takes a file or a model directory, EOS from tokenizer_config.json") {
  const std::string file = kDir + "/tokenizers/neox_like.json";
  std::unique_ptr<data::Tokenizer> a = data::load_tokenizer(file);
  CHECK(a->eos_id() == 0);  // the special <|endoftext|>
  CHECK(a->bos_id() == 0);
  CHECK(a->describe().find("vocab 2023") != std::string::npos);

  fs::path dir = temp_dir("model");
  fs::copy_file(file, dir / "tokenizer.json");
  std::unique_ptr<data::Tokenizer> b = data::load_tokenizer(dir.string());
  CHECK(b->encode("Hello there") == a->encode("Hello there"));
  std::ofstream(dir / "tokenizer_config.json") << R"({"eos_token": {"content": "<|padding|>"}, "bos_token": null})";
  std::unique_ptr<data::Tokenizer> c = data::load_tokenizer(dir.string());
  CHECK(c->eos_id() == 1);
  CHECK(!c->bos_id().has_value());

  fs::path empty = temp_dir("empty");
  CHECK_THROWS_WITH_AS(data::load_tokenizer(empty.string()),
                       doctest::Contains((empty / "tokenizer.json").string().c_str()), Error);
  CHECK_THROWS_WITH_AS(data::load_tokenizer((empty / "nope.json").string()), doctest::Contains("does not exist"), Error);
  fs::remove_all(dir);
  fs::remove_all(empty);
}

TEST_CASE("tokenizer: transformers' \"$A:0\" template (GPT-NeoX files saved by transformers) adds no ids") {
  json::Value pp = json::parse(R"({"type": "TemplateProcessing",
      "single": [{"Sequence": {"id": "A", "type_id": 0}}],
      "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
      "special_tokens": {}})");
  BpeTokenizer with = BpeTokenizer::from_json(neox_with("post_processor", pp));
  BpeTokenizer without = BpeTokenizer::from_file(kDir + "/tokenizers/neox_like.json");
  const std::string text = "Hello, world!\n  <|endoftext|>";
  CHECK(with.encode(text) == without.encode(text));
  CHECK(with.encode("").empty());
  CHECK(with.describe().find("template adds 0 + 0 ids") != std::string::npos);
}

TEST_CASE("tokenizer: unsupported or malformed tokenizer.json is an error naming the field") {
  using json::Value;
  auto typed = [](const char* t) {
    Value v = Value::object();
    v.set("type", t);
    return v;
  };
  CHECK(error_of(neox_with("normalizer", typed("BertNormalizer"))) ==
        "tok.json: normalizer.type \"BertNormalizer\" is not supported (supported: NFC, null, Sequence of those)");
  Value seq = typed("Sequence");
  Value list = Value::array();
  list.push_back(typed("NFC"));
  list.push_back(typed("Lowercase"));
  seq.set("normalizers", list);
  CHECK(error_of(neox_with("normalizer", seq)).find("normalizer.normalizers[1].type \"Lowercase\"") != std::string::npos);
  CHECK(error_of(neox_with("pre_tokenizer", typed("Whitespace"))).find("pre_tokenizer.type \"Whitespace\" is not supported") !=
        std::string::npos);
  CHECK(error_of(neox_with("pre_tokenizer", Value())).find("pre_tokenizer is null") != std::string::npos);
  CHECK(error_of(neox_with("decoder", typed("WordPiece"))).find("decoder.type \"WordPiece\"") != std::string::npos);
  CHECK(error_of(neox_with("post_processor", typed("RobertaProcessing"))).find("post_processor.type \"RobertaProcessing\"") !=
        std::string::npos);
  CHECK(error_of(neox_with("post_processor", typed("TemplateProcessing"))).find("post_processor.single is missing") !=
        std::string::npos);
  Value trunc = Value::object();
  trunc.set("max_length", 8);
  CHECK(error_of(neox_with("truncation", trunc)).find("tok.json: truncation is set") != std::string::npos);
  CHECK(error_of(neox_with("model", typed("WordPiece"))) == "tok.json: model.type \"WordPiece\" is not supported (supported: BPE)");

  json::Value doc = json::parse_file(kDir + "/tokenizers/neox_like.json");
  Value model = doc.at("model");
  model.set("dropout", 0.1);
  CHECK(error_of(neox_with("model", model)).find("model.dropout must be null or 0") != std::string::npos);
  model = doc.at("model");
  Value merges = model.at("merges");
  Value bad = Value::array();
  bad.push_back("q");
  bad.push_back("zz");
  merges.push_back(bad);
  model.set("merges", merges);
  CHECK(error_of(neox_with("model", model)).find("\"zz\" is not in model.vocab") != std::string::npos);

  // Malformed JSON: the byte offset of the problem.
  CHECK(error_of(R"({"version": "1.0", "model": {"vocab": {"a": 0,}}})") ==
        "tok.json: byte 46: expected a string key, got '}'");
  std::string text = read_file(kDir + "/tokenizers/gpt2_like.json");
  CHECK(error_of(text.substr(0, text.size() / 2)).find("tok.json: byte ") != std::string::npos);
  CHECK_THROWS_WITH_AS(BpeTokenizer::from_file(kDir + "/tokenizers/missing.json"), doctest::Contains("missing.json"), Error);
}
