// data/tokenizer.h — text <-> token ids, one interface for every tokenizer mambagrad speaks:
//
//   ByteTokenizer (data/byte_tokenizer.h)  one id per byte, V = 256 (our own models)
//   BpeTokenizer  (data/bpe_tokenizer.h)   Hugging Face tokenizer.json byte-level BPE, exact to
//                                          HF's ids (GPT-2, GPT-NeoX and so the Mamba checkpoints)
//
//   std::unique_ptr<Tokenizer> tok = data::load_tokenizer("models/mamba-130m-hf");
//   std::vector<int32_t> ids = tok->encode("Hello world");
//   data::DecodeStream out(*tok);                 // generation: one id at a time
//   for (int32_t id : generated) std::cout << out.push(id);
//   std::cout << out.finish();                     // == tok->decode(generated)
//
// load_tokenizer(spec) — what `--tokenizer` means in every program:
//   "byte"                the byte tokenizer (a file or directory named "byte" is ./byte)
//   a directory           <dir>/tokenizer.json (a Hugging Face model directory); a directory
//                         without one is an mg::Error naming the path it looked for
//   a file                a tokenizer.json
// EOS/BOS ids of a tokenizer.json come from tokenizer_config.json beside it ("eos_token",
// "bos_token": a string or {"content": ...}) when that file exists; otherwise a special added
// token "<|endoftext|>" is both (the GPT-2 / GPT-NeoX convention the Mamba checkpoints follow).
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace mg::data {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Ids run over [0, vocab_size()): the number of embedding rows a model needs.
  virtual int32_t vocab_size() const = 0;
  // Any bytes; each implementation documents what it does with invalid UTF-8.
  virtual std::vector<int32_t> encode(const std::string& text) const = 0;
  virtual std::string decode(std::span<const int32_t> ids) const = 0;

  // What decode is made of, for DecodeStream: decode(ids) == F(token_bytes(ids[0]) + ...),
  // where F replaces invalid UTF-8 by U+FFFD (unicode::to_valid_utf8) when
  // decode_repairs_utf8(), and is the identity otherwise.
  virtual std::string token_bytes(int32_t id) const = 0;
  virtual bool decode_repairs_utf8() const = 0;

  // Where the tokenizer defines them (see load_tokenizer above).
  virtual std::optional<int32_t> eos_id() const { return std::nullopt; }
  virtual std::optional<int32_t> bos_id() const { return std::nullopt; }

  // One line for logs: kind, vocabulary, source, options.
  virtual std::string describe() const = 0;
};

// Incremental decode for generation. A byte-level BPE token can end in the middle of a UTF-8
// character (an emoji is often 2-4 tokens): push() returns only the text that became complete
// and holds back the bytes of a character still arriving; finish() returns what is held
// (as decode would render it: U+FFFD for an unfinished character). The concatenation of every
// push() and finish() equals tok.decode(all ids).
class DecodeStream {
 public:
  explicit DecodeStream(const Tokenizer& tok) : tok_(&tok) {}
  std::string push(int32_t id);
  std::string finish();

 private:
  const Tokenizer* tok_;
  std::string pending_;  // bytes of an unfinished UTF-8 character
};

// See the top of this file. Errors (mg::Error) name the path and what was expected.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& spec);

}  // namespace mg::data
