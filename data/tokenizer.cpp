#include "data/tokenizer.h"

#include <filesystem>

#include "core/error.h"
#include "data/bpe_tokenizer.h"
#include "data/byte_tokenizer.h"
#include "data/unicode.h"

namespace mg::data {

std::string DecodeStream::push(int32_t id) {
  pending_ += tok_->token_bytes(id);
  if (!tok_->decode_repairs_utf8()) return std::exchange(pending_, {});
  // Everything but an unfinished last character is final: a lead byte always starts a new
  // sequence, so what precedes it decodes the same whatever bytes come next.
  size_t hold = unicode::incomplete_utf8_tail(pending_);
  std::string out = unicode::to_valid_utf8(std::string_view(pending_).substr(0, pending_.size() - hold));
  pending_.erase(0, pending_.size() - hold);
  return out;
}

std::string DecodeStream::finish() {
  std::string rest = std::exchange(pending_, {});
  return tok_->decode_repairs_utf8() ? unicode::to_valid_utf8(rest) : rest;
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& spec) {
  namespace fs = std::filesystem;
  MG_CHECK(!spec.empty(), "tokenizer path is empty (give a tokenizer.json, a model directory, or \"byte\")");
  if (spec == "byte") return std::make_unique<ByteTokenizer>();
  fs::path p(spec);
  std::error_code ec;
  if (fs::is_directory(p, ec)) {
    fs::path file = p / "tokenizer.json";
    MG_CHECK(fs::is_regular_file(file, ec), "tokenizer directory ", spec, " has no tokenizer.json (looked for ",
             file.string(), "); give a tokenizer.json file, a model directory holding one, or \"byte\"");
    p = file;
  }
  MG_CHECK(fs::exists(p, ec), "tokenizer path ", spec,
           " does not exist (give a tokenizer.json file, a model directory holding one, or \"byte\")");
  return std::make_unique<BpeTokenizer>(BpeTokenizer::from_file(p.string()));
}

}  // namespace mg::data
